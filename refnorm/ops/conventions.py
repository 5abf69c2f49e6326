"""Variance conventions and the presets that bundle a convention with its defaults.

Two conventions exist for the statistics (SPEC §1, spec-notes §2.2):

``"paper"``
    Every variance is the biased (population) variance of its scope.
``"official"``
    What ``switchablenorms/Switchable-Normalization`` computes. For input with spatial axes the
    instance (IN) variance is unbiased, divided by ``M - 1``, and LN / BN / GN are assembled from
    it; for ``(N, C)`` input every scope variance is unbiased over its own scope (LN over ``C``,
    BN over ``N``, GN over ``C / G``).

A preset adds the defaults that travel with a convention. ``momentum`` always uses the official
convention: it weights the OLD running value, ``running <- momentum * running + (1 - momentum) *
batch``. PyTorch's ``BatchNorm(momentum=p)`` is ``momentum = 1 - p`` here.

=========  ==========  =====  ===========================================  ===================
preset     convention  eps    momentum                                     running stats init
=========  ==========  =====  ===========================================  ===================
paper      paper       1e-5   0.9 (PyTorch's 0.1)                          mean 0, var 1
official   official    1e-5   0.9 for 4-D input, 0.997 otherwise and SSN   mean 0, var 0
=========  ==========  =====  ===========================================  ===================

The paper preset's momentum and running-variance initialisation are refnorm's choice (the paper
does not fix them); they follow PyTorch's ``BatchNorm`` so a fresh paper-preset layer evaluates
like a fresh BN layer. The official zeros initialisation of the running variance makes early
evaluation output inflated; refnorm reproduces it because checkpoints depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._validation import check_bool, check_choice, check_int, describe

CONVENTIONS = ("paper", "official")
"""Names accepted by every ``convention=`` argument."""


@dataclass(frozen=True)
class Preset:
    """A convention together with the defaults that come with it (see the module docstring)."""

    name: str
    convention: str
    eps: float
    momentum: float
    running_mean_init: float
    running_var_init: float


def check_convention(convention: str) -> str:
    """``ValueError`` unless ``convention`` is ``"paper"`` or ``"official"``."""
    return check_choice(convention, "convention", CONVENTIONS)


def preset(name: str, *, ndim: int = 4, sparse: bool = False) -> Preset:
    """The preset ``name`` (``"paper"`` or ``"official"``) for input of rank ``ndim``.

    Parameters
    ----------
    name
        ``"paper"`` or ``"official"``.
    ndim
        Rank of the layer input, an int >= 2; the official momentum is 0.9 for 4-D input (``SwitchNorm2d``)
        and 0.997 for every other rank: ``(N, C)`` (``SwitchNorm1d``), 5-D (``SwitchNorm3d``), and
        refnorm's choice for 3-D ``(N, C, L)`` input, which no official layer accepts.
    sparse
        True for Sparse Switchable Normalization (``SSN2d`` uses 0.997).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be the name of a preset, one of {', '.join(map(repr, CONVENTIONS))}; got {describe(name)}")
    check_choice(name, "preset", CONVENTIONS)
    check_int(ndim, "ndim", 2)
    check_bool(sparse, "sparse")
    if name == "paper":
        return Preset("paper", "paper", eps=1e-5, momentum=0.9, running_mean_init=0.0, running_var_init=1.0)
    momentum = 0.9 if (ndim == 4 and not sparse) else 0.997
    return Preset("official", "official", eps=1e-5, momentum=momentum, running_mean_init=0.0, running_var_init=0.0)
