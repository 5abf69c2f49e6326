r"""The plain normalizers (IN, LN, BN, GN) as Switchable Normalization with one fixed ratio.

With a single normalizer :math:`k` and the ratio fixed to 1, SN's mixture is that normalizer's
statistics alone:

.. math::

    y_{nci} = \gamma_c \frac{x_{nci} - \mu^k_{nc}}{\sqrt{\sigma^{2,k}_{nc} + \epsilon}} + \beta_c ,

with the scope statistics of :mod:`refnorm.ops.statistics` in either convention: ``"paper"`` uses
biased variances (BN in training is then PyTorch's ``BatchNorm``), ``"official"`` what the
official SN code computes for that scope. This module only fixes the ratios
(:class:`refnorm.FixedRatios`, which pass no gradient to the dummy logits) and drops the logit
gradients: the stages, the backward and the running statistics are SN's, and the call is checked by
the layer check SN and EN share (:func:`refnorm.ops.layer.check_layer_call`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._xp import Array, device, namespace
from .layer import check_finite_parameters, check_layer_call
from .linearized import Linearized
from .running import BatchAverage, RunningStats
from .simplex import FixedRatios
from .switchnorm import (
    SwitchNormCache,
    SwitchNormConfig,
    SwitchNormGrads,
    check_hvp_call,
    check_jvp_call,
    hvp_stages,
    jvp_stages,
    switch_norm_backward,
    switch_norm_stages,
)

PLAIN_NORM_ARGUMENTS = ("x", "gamma", "beta")

_ONE = FixedRatios((1.0,))


class PlainNormOutput(NamedTuple):
    """``y, cache, running = plain_norm_forward(...)``; ``cache`` is SN's."""

    y: Array
    cache: SwitchNormCache
    running: RunningStats | BatchAverage | None


class PlainNormGrads(NamedTuple):
    """Gradients of the loss with respect to every input of a plain normalizer (and the container of its tangents)."""

    dx: Array
    dgamma: Array
    dbeta: Array


def plain_norm_forward(
    x: Array,
    gamma: Array,
    beta: Array,
    *,
    normalizer: str,
    groups: int | None = None,
    running: RunningStats | BatchAverage | None = None,
    training: bool = True,
    convention: str = "paper",
    eps: float = 1e-5,
    momentum: float = 0.9,
    check_finite: bool = True,
) -> PlainNormOutput:
    """IN, LN, BN or GN (``normalizer`` one of ``"in", "ln", "bn", "gn"``) with affine ``gamma, beta``.

    Arguments as in :func:`refnorm.switch_norm_forward`; ``running`` matters only for ``"bn"``.
    """
    if not isinstance(normalizer, str):
        raise TypeError(f"normalizer must be one name such as 'bn', got {normalizer!r}; for a mixture use switch_norm")
    parameters = {"gamma": gamma, "beta": beta}
    xp, layout, layer = check_layer_call(
        x, parameters,
        running=running, training=training, normalizers=(normalizer,), groups=groups, convention=convention,
        eps=eps, momentum=momentum, check_finite=check_finite,
    )  # fmt: skip
    if check_finite:  # x itself is checked through its instance moments
        check_finite_parameters(xp, parameters, running)
    config = SwitchNormConfig(**vars(layer), mean_ratio=_ONE, var_ratio=_ONE)
    # SN's stages want one logit per normalizer; the fixed ratio ignores its value and passes no gradient.
    logit = xp.zeros((1,), dtype=x.dtype, device=device(x))
    y, cache, new_running = switch_norm_stages(
        x, gamma, beta, logit, logit, running=running, layout=layout, config=config, check_finite=check_finite
    )
    return PlainNormOutput(y, cache, new_running)


def plain_norm_backward(dy: Array, cache: SwitchNormCache) -> PlainNormGrads:
    """Gradients of :func:`plain_norm_forward`: SN's backward (:func:`refnorm.switch_norm_backward`)
    with the ratio fixed to 1, so only ``dx``, ``dgamma`` and ``dbeta`` remain."""
    grads = switch_norm_backward(dy, cache)
    return PlainNormGrads(grads.dx, grads.dgamma, grads.dbeta)


def _as_switch_norm_tangents(tangents: PlainNormGrads, cache: SwitchNormCache) -> SwitchNormGrads:
    """Checked plain-normalizer tangents as SN's: the fixed ratio's dummy logits do not move."""
    zero = namespace(cache.centered).zeros_like(cache.mixture.mean_ratios)
    return SwitchNormGrads(tangents.dx, tangents.dgamma, tangents.dbeta, zero, zero)


def plain_norm_jvp(tangents: PlainNormGrads, cache: SwitchNormCache) -> Array:
    """JVP of :func:`plain_norm_forward`: SN's (:func:`refnorm.switch_norm_jvp`) with the ratio fixed to 1.

    ``tangents`` is a ``PlainNormGrads(dx=..., dgamma=..., dbeta=...)`` of tangents, each of its
    argument's shape and dtype; returns the tangent of ``y``."""
    xp = check_jvp_call(tangents, cache, function="plain_norm_jvp", forward="plain_norm_forward", container=PlainNormGrads)
    return jvp_stages(_as_switch_norm_tangents(tangents, cache), cache, xp)


def plain_norm_hvp(dy: Array, cache: SwitchNormCache, tangents: PlainNormGrads) -> PlainNormGrads:
    """Second order of :func:`plain_norm_forward`: the derivative of :func:`plain_norm_backward` ``(dy, ·)``
    along ``tangents``, SN's (:func:`refnorm.switch_norm_hvp`) with the ratio fixed to 1."""
    xp = check_hvp_call(dy, cache, tangents, function="plain_norm_hvp", forward="plain_norm_forward", container=PlainNormGrads)
    hvp = hvp_stages(dy, cache, _as_switch_norm_tangents(tangents, cache), xp)
    return PlainNormGrads(hvp.dx, hvp.dgamma, hvp.dbeta)


def plain_norm_linearize(x: Array, gamma: Array, beta: Array, **config: Any) -> Linearized:
    """A plain normalizer at a point, as :func:`refnorm.gradcheck` consumes it (pullback, pushforward, HVP)."""
    y, cache, _ = plain_norm_forward(x, gamma, beta, **config)
    return linearization(y, cache)


def linearization(y: Array, cache: SwitchNormCache) -> Linearized:
    """A plain normalizer's output with its backward, JVP and HVP."""
    return Linearized(
        out=y,
        pullback=lambda dy: tuple(plain_norm_backward(dy, cache)),
        pushforward=lambda *tangents: plain_norm_jvp(PlainNormGrads(*tangents), cache),
        hvp=lambda dy, *tangents: tuple(plain_norm_hvp(dy, cache, PlainNormGrads(*tangents))),
    )

