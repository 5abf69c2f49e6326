r"""Switchable Normalization (SN): forward and hand-derived backward, stage by stage.

Forward (SPEC §2; Luo et al., ICLR 2019, eqs. 1–3). With the normalizer set
:math:`\Omega` (default IN, LN, BN), scope statistics :math:`\mu^k, \sigma^{2,k}` from
:mod:`refnorm.ops.statistics`, and ratios from two ratio functions (softmax for SN):

.. math::

    w = \mathrm{ratio}(\lambda^\mu), \quad w' = \mathrm{ratio}(\lambda^\sigma), \quad
    \mu_{nc} = \sum_k w_k \mu^k_{nc}, \quad \sigma^2_{nc} = \sum_k w'_k \sigma^{2,k}_{nc},

.. math::

    \hat x_{nci} = \frac{x_{nci} - \mu_{nc}}{\sqrt{\sigma^2_{nc} + \epsilon}}, \qquad
    y_{nci} = \gamma_c \hat x_{nci} + \beta_c .

``eps`` is added once, to the mixed variance. In evaluation mode the BN pair is the running
statistics (constants); IN, LN and GN always come from the input.

:func:`switch_norm_forward` runs four stages, and :func:`switch_norm_backward` their VJPs in
reverse order; ``docs/sn-backward.md`` derives each VJP with the symbols used here:

1. instance moments :math:`\mu^{in}, s` and the centred input :math:`x - \mu^{in}`
   (:func:`~refnorm.ops.statistics.instance_moments_and_centered`; backward
   :func:`~refnorm.ops.statistics.instance_moments_vjp`);
2. scope moments :math:`\mu^k, \sigma^{2,k}` (:func:`~refnorm.ops.statistics.scope_moments`, then
   :func:`~refnorm.ops.running.use_running_statistics`; backward
   :func:`~refnorm.ops.statistics.scope_moments_vjp`);
3. ratios and the mixed statistics :math:`\mu, \sigma^2, r = (\sigma^2 + \epsilon)^{-1/2}`
   (:func:`mix`; backward :func:`mix_vjp`);
4. normalize and affine, :math:`\hat x = r (x - \mu^{in}) + r (\mu^{in} - \mu)` and
   :math:`y = \gamma \hat x + \beta` (:func:`~refnorm.ops.layer.normalize`, shared with EN;
   backward :func:`~refnorm.ops.layer.normalize_vjp`).

Stages 2 and 3 only touch ``(N, C)`` and ``(K,)`` arrays. The sharded-batch (SyncSN) form runs
the same stages with the instance moments of all shards pooled between stages 1 and 2
(:mod:`refnorm.ops.switchnorm_sharded`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._validation import check_shape, overflow_checked_afterwards
from .._xp import Array, namespace
from .layer import (
    LayerConfig,
    check_cache,
    check_finite_parameters,
    check_layer_call,
    check_ratio_gradient,
    check_upstream,
    normalize,
    normalize_vjp,
)
from .linearized import Linearized
from .running import BatchAverage, RunningStats, use_running_statistics
from .simplex import SOFTMAX, FixedRatios, RatioFunction
from .statistics import (
    InstanceMoments,
    Layout,
    ScopeMoments,
    instance_moments_and_centered,
    instance_moments_vjp,
    reduce_to_scope,
    scope_moments,
    scope_moments_vjp,
)

SWITCH_NORM_ARGUMENTS = ("x", "gamma", "beta", "mean_logits", "var_logits")
"""The differentiable arguments of :func:`switch_norm_forward`, in order."""


@dataclass(frozen=True)
class SwitchNormConfig(LayerConfig):
    """Everything about an SN call that is not an array: the layer options and the two ratio functions."""

    mean_ratio: RatioFunction
    var_ratio: RatioFunction


class MixedStatistics(NamedTuple):
    """Stages 1–3 of SN, all ``(N, C)`` or ``(K,)``: the statistics, the ratios and their mixture."""

    moments: InstanceMoments
    r""":math:`\mu^{in}, s` (stage 1)."""
    scopes: ScopeMoments
    """Per-normalizer statistics actually mixed (stage 2; BN = running statistics in evaluation)."""
    mean_ratios: Array
    """:math:`w`, shape ``(K,)``."""
    var_ratios: Array
    """:math:`w'`, shape ``(K,)``."""
    mean_aux: Any
    """What the mean ratio function's derivatives need (``None`` for softmax)."""
    var_aux: Any
    mean: Array
    r""":math:`\mu_{nc}`, the mixed mean."""
    var: Array
    r""":math:`\sigma^2_{nc}`, the mixed variance (without ``eps``)."""
    inv_std: Array
    r""":math:`r_{nc} = (\sigma^2_{nc} + \epsilon)^{-1/2}`."""
    shift: Array
    r""":math:`r_{nc}(\mu^{in}_{nc} - \mu_{nc})`: stage 4 computes
    :math:`\hat x = r\,(x - \mu^{in}) + \text{shift}`."""


class MixedStatisticsGrads(NamedTuple):
    """What :func:`mix_vjp` returns."""

    dmean_logits: Array
    dvar_logits: Array
    dmeans: tuple[Array | None, ...]
    r""":math:`\bar\mu_k`, the gradient with respect to each scope mean, in the scope's own shape
    (``None`` for a constant: BN in evaluation)."""
    dvars: tuple[Array | None, ...]
    r""":math:`\bar\sigma_k`, likewise for each scope variance."""


class SwitchNormCache(NamedTuple):
    """What :func:`switch_norm_backward` needs: the centred input, ``gamma`` and the statistics."""

    centered: Array
    r""":math:`x - \mu^{in}`, shape ``(N, C, M)`` (kept by stage 1; not ``x`` itself)."""
    gamma: Array
    mixture: MixedStatistics
    layout: Layout
    shape: tuple[int, ...]
    """The shape of ``x``."""
    config: SwitchNormConfig

    @property
    def xhat(self) -> Array:
        r"""The normalized map :math:`\hat x = r\,(x - \mu^{in}) + \text{shift}`, in the shape of ``x``
        (computed on demand: the layer keeps the centred input instead)."""
        xp = namespace(self.centered)
        return xp.reshape(self.mixture.inv_std[:, :, None] * self.centered + self.mixture.shift[:, :, None], self.shape)

    def arrays(self) -> dict[str, Array]:
        """Every intermediate as a flat ``name -> array`` mapping (for ``.npz`` dumps and golden files)."""
        return {"xhat": self.xhat, **mixture_arrays(self.mixture)}


class SwitchNormOutput(NamedTuple):
    """``y, cache, running = switch_norm_forward(...)``."""

    y: Array
    cache: SwitchNormCache
    running: RunningStats | BatchAverage | None
    """The new running state (``None`` when none was given or BN is not in the set)."""


class SwitchNormGrads(NamedTuple):
    """Gradients of the loss with respect to every SN input."""

    dx: Array
    dgamma: Array
    dbeta: Array
    dmean_logits: Array
    dvar_logits: Array


def mixture_arrays(mixture: MixedStatistics) -> dict[str, Array]:
    """The arrays of a :class:`MixedStatistics` by name: ``mean_in``, ``var_ln``, ``mean_ratios``, ..."""
    named = {"instance_mean": mixture.moments.mean, "instance_var": mixture.moments.var}
    for scope, mean, var in zip(mixture.scopes.normalizers, mixture.scopes.means, mixture.scopes.variances, strict=True):
        named[f"mean_{scope}"] = mean
        named[f"var_{scope}"] = var
    named.update(
        mean_ratios=mixture.mean_ratios,
        var_ratios=mixture.var_ratios,
        mean=mixture.mean,
        var=mixture.var,
        inv_std=mixture.inv_std,
    )
    return named


# --------------------------------------------------------------------------------------------
# The one check of an SN call
# --------------------------------------------------------------------------------------------


def check_switch_norm_call(
    x: Any,
    gamma: Any,
    beta: Any,
    mean_logits: Any,
    var_logits: Any,
    *,
    running: Any,
    training: Any,
    normalizers: Any,
    groups: Any,
    convention: Any,
    eps: Any,
    momentum: Any,
    check_finite: bool,
) -> tuple[Any, Layout, LayerConfig]:
    """Validate an SN call (SSN's and the plain normalizers' too): the shared layer check
    (:func:`refnorm.ops.layer.check_layer_call`), one logit per normalizer, finite parameters.
    Returns ``(xp, layout, config)``; the ratio functions are the caller's to check."""
    parameters = {"gamma": gamma, "beta": beta, "mean_logits": mean_logits, "var_logits": var_logits}
    xp, layout, config = check_layer_call(
        x, parameters,
        running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=momentum, check_finite=check_finite,
    )  # fmt: skip
    check_logits(mean_logits, var_logits, config.normalizers)
    if check_finite:  # x itself is checked through its instance moments (stage 1)
        check_finite_parameters(xp, parameters, running)
    return xp, layout, config


def check_logits(mean_logits: Array, var_logits: Array, normalizers: tuple[str, ...]) -> None:
    """``ValueError`` unless both logit vectors have shape ``(K,)``, one logit per normalizer."""
    for name, logits in (("mean_logits", mean_logits), ("var_logits", var_logits)):
        if logits.ndim != 1:
            raise ValueError(f"{name} has shape {tuple(logits.shape)}, expected (K,), one logit per normalizer")
        check_shape(logits, name, (len(normalizers),), f"one logit per normalizer {normalizers}")


def check_ratio_functions(mean_ratio: Any, var_ratio: Any, K: int) -> None:
    """``TypeError`` unless both are ratio functions; ``ValueError`` for fixed ratios of another length than ``K``."""
    for name, ratio in (("mean_ratio", mean_ratio), ("var_ratio", var_ratio)):
        if not isinstance(ratio, RatioFunction):
            raise TypeError(f"{name} must be a ratio function (forward/vjp/jvp/active_set), got {type(ratio).__name__}")
        if isinstance(ratio, FixedRatios) and len(ratio.ratios) != K:
            raise ValueError(f"logits have {K} entries, expected {len(ratio.ratios)} for {name} = {ratio}")


# --------------------------------------------------------------------------------------------
# Stage 3: ratios and the mixed statistics
# --------------------------------------------------------------------------------------------


def mix(moments: InstanceMoments, scopes: ScopeMoments, mean_logits: Array, var_logits: Array, config: SwitchNormConfig) -> MixedStatistics:
    r"""The ratios :math:`w, w'` and the mixed statistics (stage 3).

    .. math::

        w = \mathrm{ratio}(\lambda^\mu), \quad w' = \mathrm{ratio}(\lambda^\sigma), \quad
        \mu = \sum_k w_k \mu^k, \quad \sigma^2 = \sum_k w'_k \sigma^{2,k}, \quad
        r = (\sigma^2 + \epsilon)^{-1/2},

    each scope statistic broadcast to ``(N, C)``; and :math:`\text{shift} = r(\mu^{in} - \mu)`,
    which stage 4 needs. ``moments`` and ``scopes`` are kept in the result for the backward.
    """
    xp = namespace(moments.mean)
    mean_ratios, mean_aux = config.mean_ratio.forward(mean_logits)
    var_ratios, var_aux = config.var_ratio.forward(var_logits)
    mean = xp.zeros_like(moments.mean)
    var = xp.zeros_like(moments.mean)
    for k in range(len(scopes.normalizers)):
        mean = mean + mean_ratios[k] * scopes.means[k]
        var = var + var_ratios[k] * scopes.variances[k]
    inv_std = 1.0 / xp.sqrt(var + config.eps)
    shift = inv_std * (moments.mean - mean)
    return MixedStatistics(moments, scopes, mean_ratios, var_ratios, mean_aux, var_aux, mean, var, inv_std, shift)


def mix_vjp(sum_dxhat: Array, sum_dxhat_centered: Array, mixture: MixedStatistics, config: SwitchNormConfig) -> MixedStatisticsGrads:
    r"""VJP of stage 3 (and of the mixed statistics' place in stage 4): from the per-instance sums of
    :func:`~refnorm.ops.layer.normalize_vjp` to the logit gradients and each scope's :math:`\bar\mu_k, \bar\sigma_k`.

    With :math:`\hat x = (x - \mu) r`, so that
    :math:`\sum_i \partial L/\partial\hat x\,\hat x = r \sum_i \partial L/\partial\hat x\,(x - \mu^{in}) + \text{shift}\sum_i \partial L/\partial\hat x`:

    .. math::

        A = \frac{\partial L}{\partial \mu} = -r \sum_i \frac{\partial L}{\partial \hat x}, \qquad
        B = \frac{\partial L}{\partial \sigma^2} = -\tfrac12 r^2 \sum_i \frac{\partial L}{\partial \hat x}\hat x,

    .. math::

        \frac{\partial L}{\partial w_k} = \sum_{n,c} A_{nc}\mu^k_{nc}, \qquad
        \frac{\partial L}{\partial w'_k} = \sum_{n,c} B_{nc}\sigma^{2,k}_{nc}, \qquad
        \bar\mu_k = w_k \sum A, \qquad \bar\sigma_k = w'_k \sum B,

    the ratio functions' VJPs giving the logit gradients, and each sum running over the axes the
    scope's statistic is broadcast along (:func:`~refnorm.ops.statistics.reduce_to_scope`). In
    evaluation the BN statistics are constants: ``None`` for BN.
    """
    xp = namespace(sum_dxhat, sum_dxhat_centered)
    r = mixture.inv_std
    A = -r * sum_dxhat
    B = -0.5 * r * r * (r * sum_dxhat_centered + mixture.shift * sum_dxhat)

    scopes = mixture.scopes
    with overflow_checked_afterwards():
        dmean_ratios = xp.stack([xp.sum(A * mean) for mean in scopes.means])
        dvar_ratios = xp.stack([xp.sum(B * var) for var in scopes.variances])
    check_ratio_gradient(xp, dmean_ratios, "mean ratios")
    check_ratio_gradient(xp, dvar_ratios, "variance ratios")
    dmean_logits = config.mean_ratio.vjp(dmean_ratios, mixture.mean_ratios, mixture.mean_aux)
    dvar_logits = config.var_ratio.vjp(dvar_ratios, mixture.var_ratios, mixture.var_aux)

    dmeans: list[Array | None] = []
    dvars: list[Array | None] = []
    for k, scope in enumerate(scopes.normalizers):
        if scope == "bn" and not config.training:  # the running statistics: constants
            dmeans.append(None)
            dvars.append(None)
            continue
        dmeans.append(mixture.mean_ratios[k] * reduce_to_scope(A, scope, config.groups, xp))
        dvars.append(mixture.var_ratios[k] * reduce_to_scope(B, scope, config.groups, xp))
    return MixedStatisticsGrads(dmean_logits, dvar_logits, tuple(dmeans), tuple(dvars))


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------


def switch_norm_forward(
    x: Array,
    gamma: Array,
    beta: Array,
    mean_logits: Array,
    var_logits: Array,
    *,
    running: RunningStats | BatchAverage | None = None,
    training: bool = True,
    normalizers: Sequence[str] | None = None,
    groups: int | None = None,
    convention: str = "paper",
    eps: float = 1e-5,
    momentum: float = 0.9,
    mean_ratio: RatioFunction = SOFTMAX,
    var_ratio: RatioFunction = SOFTMAX,
    check_finite: bool = True,
) -> SwitchNormOutput:
    r"""Switchable Normalization forward (see the module docstring for the equations and stages).

    Parameters
    ----------
    x
        Input ``(N, C, *spatial)``, any rank >= 2, float32 or float64.
    gamma, beta
        Affine parameters, shape ``(C,)``.
    mean_logits, var_logits
        Importance logits :math:`\lambda^\mu, \lambda^\sigma`, shape ``(K,)``, one per normalizer,
        in the order of ``normalizers`` (pre-softmax, as stored in official checkpoints).
    running
        Running BN statistics. Training: updated and returned (:class:`RunningStats` by the EMA,
        :class:`BatchAverage` by accumulation). Evaluation: used as the BN statistics (required
        when ``"bn"`` is in the set).
    training
        Batch BN statistics (True) or running ones (False).
    normalizers
        Ordered subset of ``("in", "ln", "bn", "gn")``; default ``("in", "ln", "bn")``, or
        ``("ln", "bn")`` for ``(N, C)`` input.
    groups
        GN group count (required with ``"gn"``); must divide ``C``.
    convention
        ``"paper"`` (biased variances) or ``"official"`` (the official code's; see
        :mod:`refnorm.ops.conventions`).
    eps
        Added once to the mixed variance; must be > 0.
    momentum
        EMA weight of the OLD running value (official convention; PyTorch's ``p`` is ``1 - p``).
    mean_ratio, var_ratio
        Ratio functions for the two logit vectors (softmax for SN; SparsestMax for SSN).
    check_finite
        Reject NaN/inf in the inputs; switch off only for trusted data. ``x`` is checked through its
        instance moments, which the forward computes anyway (no extra pass over ``x``; this also
        rejects values so large that a moment overflows), the parameters elementwise.

    Returns
    -------
    SwitchNormOutput
        ``(y, cache, running)``: the output, the intermediates the backward needs (and a port
        compares stage by stage), and the new running state.
    """
    _, layout, layer = check_switch_norm_call(
        x, gamma, beta, mean_logits, var_logits,
        running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=momentum, check_finite=check_finite,
    )  # fmt: skip
    check_ratio_functions(mean_ratio, var_ratio, len(layer.normalizers))
    config = SwitchNormConfig(**vars(layer), mean_ratio=mean_ratio, var_ratio=var_ratio)
    return switch_norm_stages(x, gamma, beta, mean_logits, var_logits, running=running, layout=layout, config=config, check_finite=check_finite)


def switch_norm_stages(
    x: Array,
    gamma: Array,
    beta: Array,
    mean_logits: Array,
    var_logits: Array,
    *,
    running: RunningStats | BatchAverage | None,
    layout: Layout,
    config: SwitchNormConfig,
    check_finite: bool,
) -> SwitchNormOutput:
    """The four stages of :func:`switch_norm_forward`, on arguments already checked
    (:func:`check_switch_norm_call`; SSN and the plain normalizers call this after their own checks)."""
    xp = namespace(x)
    # Stage 1: instance moments, and the centred input the variance is computed from.
    moments, centered = instance_moments_and_centered(x, convention=config.convention, check_finite=check_finite)
    # Stage 2: scope moments (BN from the running statistics in evaluation), the new running state.
    scopes = scope_moments(moments, config.normalizers, convention=config.convention, layout=layout, groups=config.groups, check_finite=False)
    scopes, new_running = use_running_statistics(
        scopes, running, training=config.training, momentum=config.momentum, channels=layout.C, check_finite=check_finite
    )
    # Stage 3: ratios and mixed statistics.
    mixture = mix(moments, scopes, mean_logits, var_logits, config)
    # Stage 4: xhat = r (x - mu_in) + r (mu_in - mu), y = gamma xhat + beta.
    y = normalize(centered, gamma, beta, mixture.inv_std, mixture.shift)
    return SwitchNormOutput(xp.reshape(y, x.shape), SwitchNormCache(centered, gamma, mixture, layout, tuple(x.shape), config), new_running)


def switch_norm_backward(dy: Array, cache: SwitchNormCache) -> SwitchNormGrads:
    r"""Hand-derived backward of :func:`switch_norm_forward`: the stages' VJPs in reverse order
    (spec-notes §2.5; ``docs/sn-backward.md`` derives each step).

    * stage 4, :func:`~refnorm.ops.layer.normalize_vjp`: :math:`\partial L/\partial\beta`,
      :math:`\partial L/\partial\gamma`, the per-instance sums
      :math:`\sum_i \partial L/\partial\hat x` and :math:`\sum_i \partial L/\partial\hat x\,(x - \mu^{in})`,
      and the direct term's factor :math:`r\gamma`;
    * stage 3, :func:`mix_vjp`: :math:`A = \partial L/\partial\mu`, :math:`B = \partial L/\partial\sigma^2`,
      the logit gradients, and :math:`\bar\mu_k, \bar\sigma_k` for every scope;
    * stage 2, :func:`~refnorm.ops.statistics.scope_moments_vjp`: the gradients with respect to the
      instance moments :math:`\mu^{in}, s`;
    * stage 1, :func:`~refnorm.ops.statistics.instance_moments_vjp`: their path to ``x``, to which
      the direct term :math:`r\gamma\, dy` (every statistic held fixed) is added:

    .. math::

        \frac{\partial L}{\partial x_{nci}} = r_{nc}\gamma_c\, dy_{nci}
        + \frac{1}{M}\frac{\partial L}{\partial \mu^{in}_{nc}}
        + \frac{2(x_{nci} - \mu^{in}_{nc})}{M - d}\frac{\partial L}{\partial s_{nc}} .
    """
    check_cache(cache, SwitchNormCache, "switch_norm_forward")
    layout, config, mixture = cache.layout, cache.config, cache.mixture
    xp = check_upstream(dy, cache.centered, cache.shape)
    dy3 = xp.reshape(dy, (layout.N, layout.C, layout.M))
    normalized = normalize_vjp(dy3, cache.centered, cache.gamma, mixture.inv_std, mixture.shift)
    mixed = mix_vjp(normalized.sum_dxhat, normalized.sum_dxhat_centered, mixture, config)
    dmean_in, dvar_in = scope_moments_vjp(
        mixed.dmeans, mixed.dvars, mixture.moments, mixture.scopes,
        convention=config.convention, layout=layout, groups=config.groups,
    )  # fmt: skip
    # Stage 1 backwards, plus the direct term r gamma dy (every statistic held fixed).
    dx = instance_moments_vjp(dmean_in, dvar_in, cache.centered, convention=config.convention, layout=layout)
    dx = dx + normalized.direct_scale[:, :, None] * dy3
    return SwitchNormGrads(
        dx=xp.reshape(dx, dy.shape),
        dgamma=normalized.dgamma,
        dbeta=normalized.dbeta,
        dmean_logits=mixed.dmean_logits,
        dvar_logits=mixed.dvar_logits,
    )


# --------------------------------------------------------------------------------------------
# For the gradient checker
# --------------------------------------------------------------------------------------------


def switch_norm_linearize(x: Array, gamma: Array, beta: Array, mean_logits: Array, var_logits: Array, **config: Any) -> Linearized:
    """SN at a point, as :func:`refnorm.gradcheck` consumes it (``config`` as in the forward)."""
    y, cache, _ = switch_norm_forward(x, gamma, beta, mean_logits, var_logits, **config)
    return linearization(y, cache)


def linearization(y: Array, cache: SwitchNormCache) -> Linearized:
    """An SN forward's output with its backward, and the ratio functions' active sets (a
    piecewise-smooth ratio function such as SparsestMax reports which piece the point lies on)."""
    mixture = cache.mixture
    active = (cache.config.mean_ratio.active_set(mixture.mean_aux), cache.config.var_ratio.active_set(mixture.var_aux))
    return Linearized(
        out=y,
        pullback=lambda dy: tuple(switch_norm_backward(dy, cache)),
        active_set=None if active == (None, None) else active,
    )
