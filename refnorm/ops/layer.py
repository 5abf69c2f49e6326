"""One check of a layer call, shared by SN, SSN, the plain normalizers and EN.

A layer call is an input ``x`` of shape ``(N, C, *spatial)``, the affine parameters ``gamma`` and
``beta``, the op's own parameters (SN's logits, EN's kernel, bias and temperature), a running state
and options. :func:`check_layer_call` validates what every layer has in common, once, at the public
entry point, and returns a :class:`LayerConfig`; each op adds its own checks on top (the logits'
length for SN, the kernel size for EN) and then runs its stages, which trust their inputs.

Structure is checked before values: array types, dtypes, shapes and options first, then
:func:`check_finite_parameters` (one reduction per parameter) last. ``x`` itself is checked for
NaN and infinity through its instance moments, which every layer computes anyway
(:func:`refnorm.ops.statistics.instance_moments_and_centered`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._validation import (
    check_finite,
    check_floating,
    check_positive_number,
    check_same_dtype,
    check_shape,
    check_unit_interval,
    namespace_of,
)
from .._xp import Array, namespace
from .conventions import check_convention
from .running import check_running_for_layer
from .statistics import Layout, check_convention_defined, check_normalizers, default_normalizers


@dataclass(frozen=True)
class LayerConfig:
    """Everything about a layer call that is not an array, as far as SN and EN share it."""

    normalizers: tuple[str, ...]
    """The ordered normalizer set, ``("in", "ln", "bn")`` by default."""
    groups: int | None
    """GN's group count (``None`` without GN)."""
    convention: str
    """``"paper"`` or ``"official"`` (:mod:`refnorm.ops.conventions`)."""
    eps: float
    momentum: float
    """EMA weight of the OLD running value."""
    training: bool
    """Batch BN statistics (True) or the running ones (False)."""


def check_layer_input(xp: Any, x: Array, name: str = "x") -> Layout:
    """``TypeError`` unless ``x`` is a real floating array; its :class:`~refnorm.ops.statistics.Layout`."""
    check_floating(xp, x, name)
    return Layout.of(x.shape, name)


def check_layer_arguments(
    xp: Any,
    layout: Layout,
    like: Array,
    parameters: Mapping[str, Array],
    *,
    running: Any,
    training: Any,
    normalizers: Any,
    groups: Any,
    convention: Any,
    eps: Any,
    momentum: Any,
    like_name: str = "x",
) -> LayerConfig:
    """Validate the options, the parameters and the running state of a layer whose input has
    ``layout`` and the dtype of ``like``; return the :class:`LayerConfig`.

    ``parameters`` maps every array argument besides the input by name; each must be a real
    floating array of ``like``'s dtype, and ``gamma`` and ``beta`` (which every layer has; a
    stage checked on its own may have none) must have shape ``(C,)``. The op checks the shapes
    of its other parameters. Values are not checked here (:func:`check_finite_parameters`).
    """
    check_convention(convention)
    normalizers = check_normalizers(default_normalizers(layout) if normalizers is None else normalizers, groups, layout)
    check_convention_defined(convention, normalizers, layout, groups)
    eps = check_positive_number(eps, "eps")
    momentum = check_unit_interval(momentum, "momentum")
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    for name, array in parameters.items():
        check_floating(xp, array, name)
    check_same_dtype(like_name, like, list(parameters.items()))
    for name in ("gamma", "beta"):
        if name in parameters:
            check_shape(parameters[name], name, (layout.C,), "(C,)")
    check_running_for_layer(running, normalizers, training=training, channels=layout.C, like=like)
    return LayerConfig(normalizers, groups, convention, eps, momentum, training)


def check_layer_call(
    x: Any,
    parameters: Mapping[str, Any],
    *,
    running: Any,
    training: Any,
    normalizers: Any,
    groups: Any,
    convention: Any,
    eps: Any,
    momentum: Any,
) -> tuple[Any, Layout, LayerConfig]:
    """Validate a layer call on one input ``x``: the array namespace of ``x`` and ``parameters``
    (a ``TypeError`` naming any non-array or a second array library), ``x``'s dtype and shape, then
    :func:`check_layer_arguments`. Returns ``(xp, layout, config)``."""
    xp = namespace_of({"x": x, **parameters})
    layout = check_layer_input(xp, x, "x")
    config = check_layer_arguments(
        xp, layout, x, parameters,
        running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=momentum,
    )  # fmt: skip
    return xp, layout, config


def check_finite_parameters(xp: Any, parameters: Mapping[str, Array]) -> None:
    """``ValueError`` naming the first parameter that holds NaN or infinity (the last check of a call)."""
    for name, array in parameters.items():
        check_finite(xp, array, name)


def check_cache(cache: Any, expected: type, forward: str) -> None:
    """``TypeError`` unless ``cache`` is the cache ``forward`` returns (a backward fed another op's cache)."""
    if not isinstance(cache, expected):
        raise TypeError(f"cache must be the {expected.__name__} that {forward} returns, got {type(cache).__name__}")


def check_upstream(dy: Any, like: Array, shape: tuple[int, ...], name: str = "dy") -> Any:
    """The one check of a backward: ``dy`` is a real floating array of the output's ``shape``, of the
    library and dtype of ``like`` (an array of the forward's cache). Returns the array namespace."""
    xp = namespace_of({name: dy, "the forward's cache": like})
    check_floating(xp, dy, name)
    check_shape(dy, name, shape, "the output's shape")
    check_same_dtype("the output", like, [(name, dy)])
    return xp


# --------------------------------------------------------------------------------------------
# The last stage of every layer: normalize with one scale and shift per instance, then the affine
# --------------------------------------------------------------------------------------------


def normalize(centered: Array, gamma: Array, beta: Array, scale: Array, shift: Array) -> Array:
    r"""The normalized map :math:`\hat x = \text{scale}\,(x - \mu^{in}) + \text{shift}` and the
    output :math:`y = \gamma \hat x + \beta`, shape ``(N, C, M)``.

    Every layer's normalized map is an affine function of the centred input
    :math:`x - \mu^{in}` (``centered``, kept by the instance moments) with one ``scale`` and one
    ``shift`` per instance ``(N, C)``, because every statistic is constant over space: SN's
    :math:`\hat x = (x - \mu) r` has :math:`\text{scale} = r`, :math:`\text{shift} = r(\mu^{in} - \mu)`.
    The two affine maps are folded into one,
    :math:`y = (\gamma\,\text{scale})(x - \mu^{in}) + (\gamma\,\text{shift} + \beta)`: one pass.
    """
    return (gamma[None, :] * scale)[:, :, None] * centered + (gamma[None, :] * shift + beta[None, :])[:, :, None]


class NormalizeGrads(NamedTuple):
    """What :func:`normalize_vjp` returns."""

    dgamma: Array
    r""":math:`\partial L/\partial\gamma_c = \sum_{n,i} dy_{nci}\,\hat x_{nci}`."""
    dbeta: Array
    r""":math:`\partial L/\partial\beta_c = \sum_{n,i} dy_{nci}`."""
    sum_dxhat: Array
    r""":math:`G_{nc} = \sum_i \partial L/\partial \hat x_{nci} = \gamma_c \sum_i dy_{nci}`, shape ``(N, C)``."""
    sum_dxhat_centered: Array
    r""":math:`P_{nc} = \sum_i \partial L/\partial \hat x_{nci}\,(x_{nci} - \mu^{in}_{nc})`, shape ``(N, C)``."""
    direct_scale: Array
    r""":math:`\gamma_c\,\text{scale}_{nc}`, shape ``(N, C)``: the *direct term* of the input gradient,
    the gradient with respect to ``x`` with every statistic held fixed, is ``direct_scale * dy``
    (per instance). The layer's backward adds it to the paths through the statistics in its
    last line."""


def normalize_vjp(dy: Array, centered: Array, gamma: Array, scale: Array, shift: Array) -> NormalizeGrads:
    r"""VJP of :func:`normalize`. With :math:`\partial L/\partial \hat x = \gamma\, dy`:

    .. math::

        \frac{\partial L}{\partial\beta_c} = \sum_{n,i} dy_{nci}, \qquad
        \frac{\partial L}{\partial\gamma_c} = \sum_{n,i} dy_{nci}\hat x_{nci}
        = \sum_n \Big(\text{scale}_{nc} \sum_i dy_{nci}(x_{nci} - \mu^{in}_{nc})
        + \text{shift}_{nc} \sum_i dy_{nci}\Big),

    the two per-instance sums :math:`G = \sum_i \partial L/\partial\hat x` and
    :math:`P = \sum_i \partial L/\partial\hat x\,(x - \mu^{in})`, through which the statistics get
    their gradient (each layer's ``mix_vjp`` takes them), and the direct term's factor
    :math:`\gamma\,\text{scale}`: with the statistics held fixed,
    :math:`\partial \hat x_{nci}/\partial x_{nci} = \text{scale}_{nc}`. Two passes over full-size
    arrays: :math:`\sum_i dy` and the contraction :math:`\sum_i dy\,(x - \mu^{in})` (``vecdot``:
    no product array). ``dy`` has shape ``(N, C, M)``.
    """
    xp = namespace(dy, centered)
    sum_dy = xp.sum(dy, axis=2)
    sum_dy_centered = xp.vecdot(dy, centered, axis=-1)
    return NormalizeGrads(
        dgamma=xp.sum(scale * sum_dy_centered + shift * sum_dy, axis=0),
        dbeta=xp.sum(sum_dy, axis=0),
        sum_dxhat=gamma[None, :] * sum_dy,
        sum_dxhat_centered=gamma[None, :] * sum_dy_centered,
        direct_scale=gamma[None, :] * scale,
    )
