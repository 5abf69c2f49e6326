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
from .exemplarnorm import ExemplarNormCache  # only to tell an HVP given EN's cache that EN has no second order
from .layer import (
    LayerConfig,
    NormalizeGrads,
    check_cache,
    check_finite_parameters,
    check_layer_call,
    check_ratio_gradient,
    check_tangents,
    check_upstream,
    check_upstream_sum,
    constant_scopes,
    normalize,
    normalize_jvp,
    normalize_vjp,
    normalize_vjp_jvp,
)
from .linearized import Linearized
from .running import BatchAverage, RunningStats, use_running_statistics
from .simplex import SOFTMAX, FixedRatios, RatioFunction
from .statistics import (
    InstanceMoments,
    Layout,
    ScopeMoments,
    instance_moments_and_centered,
    instance_moments_jvp,
    instance_moments_vjp,
    instance_moments_vjp_jvp,
    reduce_to_scope,
    scope_moments,
    scope_moments_jvp,
    scope_moments_vjp,
    scope_moments_vjp_jvp,
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
            raise TypeError(f"{name} must be a ratio function (forward/vjp/jvp/hvp/active_set), got {type(ratio).__name__}")
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
    # The mixed mean as the instance mean plus the ratios' mix of each mean about it (equal, as the
    # ratios sum to 1): a statistic equal to the instance mean adds exactly 0, so an offset
    # |mu^in| >> sigma is not multiplied by the rounding of sum_k w_k.
    mean_offset = xp.zeros_like(moments.mean)
    var = xp.zeros_like(moments.mean)
    for k in range(len(scopes.normalizers)):
        mean_offset = mean_offset + mean_ratios[k] * (scopes.means[k] - moments.mean)
        var = var + var_ratios[k] * scopes.variances[k]
    mean = moments.mean + mean_offset
    inv_std = 1.0 / xp.sqrt(var + config.eps)
    shift = -inv_std * mean_offset
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

    the ratio functions' VJPs giving the logit gradients (computed as
    :math:`\sum_{n,c} A_{nc}(\mu^k_{nc} - \mu^{in}_{nc})`: the same logit gradients, since a ratio
    function's VJP maps a gradient equal for every :math:`k` to zero, without an offset's
    cancellation), and each sum running over the axes the
    scope's statistic is broadcast along (:func:`~refnorm.ops.statistics.reduce_to_scope`). In
    evaluation the BN statistics are constants: ``None`` for BN.
    """
    xp = namespace(sum_dxhat, sum_dxhat_centered)
    r = mixture.inv_std
    A = -r * sum_dxhat
    B = -0.5 * r * r * (r * sum_dxhat_centered + mixture.shift * sum_dxhat)

    scopes = mixture.scopes
    # Each mean about the instance mean: the ratios' VJP is blind to a gradient that is the same
    # for every k (the ratios sum to 1), and sum(A mu^in) is one, so this is exact; it keeps the
    # digits an offset |mu^in| >> sigma would take (y = beta on constant input at 1e150: 0, not 1e136).
    with overflow_checked_afterwards():
        dmean_ratios = xp.stack([xp.sum(A * (mean - mixture.moments.mean)) for mean in scopes.means])
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


def mix_jvp(
    moments_dot: InstanceMoments,
    scopes_dot: ScopeMoments,
    mean_logits_dot: Array,
    var_logits_dot: Array,
    mixture: MixedStatistics,
    config: SwitchNormConfig,
) -> MixedStatistics:
    r"""JVP of :func:`mix` (stage 3): the tangents of the ratios and the mixed statistics.

    From the tangents of the instance moments, of every scope statistic (``None`` for a constant:
    BN in evaluation) and of the logits:

    .. math::

        \dot w = J_w \dot\lambda^\mu, \quad \dot w' = J_{w'} \dot\lambda^\sigma, \quad
        \dot\mu = \sum_k (\dot w_k \mu^k + w_k \dot\mu^k), \quad
        \dot\sigma^2 = \sum_k (\dot w'_k \sigma^{2,k} + w'_k \dot\sigma^{2,k}),

    .. math::

        \dot r = -\tfrac12 r^3 \dot\sigma^2, \qquad
        \dot{\text{shift}} = \dot r\,(\mu^{in} - \mu) + r\,(\dot\mu^{in} - \dot\mu),

    the ratio functions' JVPs giving :math:`\dot w, \dot w'`. A tangent has the type of its primal:
    the result is a :class:`MixedStatistics` of tangents (``moments_dot`` and ``scopes_dot`` kept in
    it for :func:`mix_vjp_jvp`; no auxiliary values).
    """
    xp = namespace(mixture.mean)
    mean_ratios_dot = config.mean_ratio.jvp(mean_logits_dot, mixture.mean_ratios, mixture.mean_aux)
    var_ratios_dot = config.var_ratio.jvp(var_logits_dot, mixture.var_ratios, mixture.var_aux)
    scopes = mixture.scopes
    mean_dot = xp.zeros_like(mixture.mean)
    var_dot = xp.zeros_like(mixture.mean)
    for k in range(len(scopes.normalizers)):
        # mean_ratios_dot sums to 0: each mean about the instance mean, exactly, as in mix_vjp.
        mean_dot = mean_dot + mean_ratios_dot[k] * (scopes.means[k] - mixture.moments.mean)
        var_dot = var_dot + var_ratios_dot[k] * scopes.variances[k]
        if scopes_dot.means[k] is not None:  # None: a constant (BN in evaluation)
            mean_dot = mean_dot + mixture.mean_ratios[k] * scopes_dot.means[k]
            var_dot = var_dot + mixture.var_ratios[k] * scopes_dot.variances[k]
    r = mixture.inv_std
    # r^3 var_dot as r (r^2 var_dot): r^3 is subnormal, and loses its digits, for variances beyond
    # about 1e205 (x around 1e103), while r^2 var_dot is the variance's relative change, of order 1.
    inv_std_dot = -0.5 * r * (var_dot * (r * r))
    shift_dot = inv_std_dot * (mixture.moments.mean - mixture.mean) + r * (moments_dot.mean - mean_dot)
    return MixedStatistics(moments_dot, scopes_dot, mean_ratios_dot, var_ratios_dot, None, None, mean_dot, var_dot, inv_std_dot, shift_dot)


def mix_vjp_jvp(
    normalized: NormalizeGrads,
    normalized_dot: NormalizeGrads,
    mixture: MixedStatistics,
    mixture_dot: MixedStatistics,
    mean_logits_dot: Array,
    var_logits_dot: Array,
    config: SwitchNormConfig,
) -> MixedStatisticsGrads:
    r"""The derivative of :func:`mix_vjp` along a tangent (forward-over-reverse), in a
    :class:`MixedStatisticsGrads` of tangents.

    ``normalized`` and ``normalized_dot`` are :func:`~refnorm.ops.layer.normalize_vjp`'s sums
    :math:`G, P` and their tangents :math:`\dot G, \dot P`; ``mixture_dot`` is :func:`mix_jvp`'s.
    With :math:`S = \sum_i \partial L/\partial\hat x\,\hat x = r P + \text{shift}\,G`, the derivatives
    of :math:`A = -r G` and :math:`B = -\tfrac12 r^2 S` are

    .. math::

        \dot A = -\dot r\, G - r\, \dot G, \qquad
        \dot S = \dot r P + r \dot P + \dot{\text{shift}}\, G + \text{shift}\, \dot G, \qquad
        \dot B = -r \dot r\, S - \tfrac12 r^2 \dot S,

    and then, each sum over the scope's broadcast axes as in the VJP,

    .. math::

        \Big(\frac{\partial L}{\partial w_k}\Big)^{\!\cdot} = \sum_{n,c} (\dot A\,\mu^k + A\,\dot\mu^k), \qquad
        \dot{\bar\mu}_k = \dot w_k \sum A + w_k \sum \dot A

    (likewise with :math:`B, \sigma^{2,k}, w'` for the variances), and the logits' cotangents'
    tangent is the ratio function's VJP of the ratios' cotangents' tangent plus its second-order
    term along the logit tangent (:meth:`RatioFunction.hvp <refnorm.ops.simplex.RatioFunction.hvp>`:
    softmax's, SparsestMax's within its piece, 0 for fixed ratios):

    .. math::

        \dot{\bar\lambda}^\mu = J_w^\top \Big(\frac{\partial L}{\partial w}\Big)^{\!\cdot}
        + H_w\Big[\frac{\partial L}{\partial w}\Big] \dot\lambda^\mu .

    BN in evaluation is a constant: ``None``, as in the VJP.
    """
    xp = namespace(normalized.sum_dxhat, normalized_dot.sum_dxhat)
    G, P = normalized.sum_dxhat, normalized.sum_dxhat_centered
    G_dot, P_dot = normalized_dot.sum_dxhat, normalized_dot.sum_dxhat_centered
    r, r_dot = mixture.inv_std, mixture_dot.inv_std
    shift, shift_dot = mixture.shift, mixture_dot.shift
    A = -r * G
    A_dot = -r_dot * G - r * G_dot
    S = r * P + shift * G
    S_dot = r_dot * P + r * P_dot + shift_dot * G + shift * G_dot
    B = -0.5 * r * r * S
    B_dot = -r * r_dot * S - 0.5 * r * r * S_dot

    scopes, scopes_dot = mixture.scopes, mixture_dot.scopes
    # The means about the instance mean (and their tangents about its tangent), as in mix_vjp:
    # what that drops is the same for every k, which the ratio functions' VJP and HVP map to zero.
    mean_in, mean_in_dot = mixture.moments.mean, mixture_dot.moments.mean
    dmean_ratios = xp.stack([xp.sum(A * (mean - mean_in)) for mean in scopes.means])
    dvar_ratios = xp.stack([xp.sum(B * var) for var in scopes.variances])
    dmean_ratios_dot, dvar_ratios_dot = [], []
    with overflow_checked_afterwards():  # the sums against the statistics, as in mix_vjp
        for mean, var, mean_dot, var_dot in zip(scopes.means, scopes.variances, scopes_dot.means, scopes_dot.variances, strict=True):
            constant = mean_dot is None  # BN in evaluation: the statistics do not move
            centered = mean - mean_in
            dmean_ratios_dot.append(xp.sum(A_dot * centered - A * mean_in_dot) if constant else xp.sum(A_dot * centered + A * (mean_dot - mean_in_dot)))
            dvar_ratios_dot.append(xp.sum(B_dot * var) if constant else xp.sum(B_dot * var + B * var_dot))
    dmean_ratios_dot, dvar_ratios_dot = xp.stack(dmean_ratios_dot), xp.stack(dvar_ratios_dot)
    check_ratio_gradient(xp, dmean_ratios_dot, "mean ratios", along="dy, tangents")
    check_ratio_gradient(xp, dvar_ratios_dot, "variance ratios", along="dy, tangents")
    dmean_logits_dot = config.mean_ratio.vjp(dmean_ratios_dot, mixture.mean_ratios, mixture.mean_aux) + config.mean_ratio.hvp(
        dmean_ratios, mixture.mean_ratios, mixture.mean_aux, mean_logits_dot
    )
    dvar_logits_dot = config.var_ratio.vjp(dvar_ratios_dot, mixture.var_ratios, mixture.var_aux) + config.var_ratio.hvp(
        dvar_ratios, mixture.var_ratios, mixture.var_aux, var_logits_dot
    )

    dmeans_dot: list[Array | None] = []
    dvars_dot: list[Array | None] = []
    for k, scope in enumerate(scopes.normalizers):
        if scope in constant_scopes(config):
            dmeans_dot.append(None)
            dvars_dot.append(None)
            continue
        groups = config.groups
        dmeans_dot.append(mixture_dot.mean_ratios[k] * reduce_to_scope(A, scope, groups, xp) + mixture.mean_ratios[k] * reduce_to_scope(A_dot, scope, groups, xp))
        dvars_dot.append(mixture_dot.var_ratios[k] * reduce_to_scope(B, scope, groups, xp) + mixture.var_ratios[k] * reduce_to_scope(B_dot, scope, groups, xp))
    return MixedStatisticsGrads(dmean_logits_dot, dvar_logits_dot, tuple(dmeans_dot), tuple(dvars_dot))


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
    xp = check_upstream(dy, cache.centered, cache.shape, values=False)
    dy3 = xp.reshape(dy, (layout.N, layout.C, layout.M))
    with overflow_checked_afterwards():  # dy is checked through its sums, right after
        normalized = normalize_vjp(dy3, cache.centered, cache.gamma, mixture.inv_std, mixture.shift)
    check_upstream_sum(xp, normalized.dbeta)
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
# Forward mode and second order (docs/sn-jvp-hvp.md)
# --------------------------------------------------------------------------------------------


def check_switch_norm_tangents(tangents: Any, cache: SwitchNormCache, function: str, container: type = SwitchNormGrads) -> Any:
    """The one check of an SN JVP's or HVP's tangents (:func:`refnorm.ops.layer.check_tangents`): a
    ``container`` (:class:`SwitchNormGrads`; the plain normalizers' has only ``dx, dgamma, dbeta``) of
    finite arrays shaped like the arguments. Returns the array namespace."""
    K = len(cache.config.normalizers)
    shapes = {"dx": cache.shape, "dgamma": (cache.layout.C,), "dbeta": (cache.layout.C,), "dmean_logits": (K,), "dvar_logits": (K,)}
    return check_tangents(tangents, container, shapes, cache.centered, function)


def check_jvp_call(tangents: Any, cache: Any, *, function: str, forward: str, container: type = SwitchNormGrads) -> Any:
    """The checks of a JVP of the SN family (SN, SSN, the plain normalizers), run once at its public
    entry point: the cache's type (:func:`refnorm.ops.layer.check_cache`), then the tangents
    (:func:`check_switch_norm_tangents`). ``function`` and ``forward`` name the public JVP and the
    forward whose cache it takes, in messages. Returns the array namespace."""
    check_cache(cache, SwitchNormCache, forward)
    return check_switch_norm_tangents(tangents, cache, function, container)


def check_hvp_call(dy: Any, cache: Any, tangents: Any, *, function: str, forward: str, container: type = SwitchNormGrads) -> Any:
    """The checks of an HVP of the SN family, run once: the cache's type (EN's is told that refnorm
    has no second order for EN), ``dy`` as the backward checks it
    (:func:`refnorm.ops.layer.check_upstream`), then the tangents. Returns the array namespace."""
    if isinstance(cache, ExemplarNormCache):
        raise TypeError(
            f"cache must be the SwitchNormCache that {forward} returns, got ExemplarNormCache: refnorm defines no second "
            "order for EN (docs/sn-jvp-hvp.md says why); EN's forward mode is exemplar_norm_jvp"
        )
    check_cache(cache, SwitchNormCache, forward)
    xp = check_upstream(dy, cache.centered, cache.shape)
    check_switch_norm_tangents(tangents, cache, function, container)
    return xp


def _point_tangents(tangents: SwitchNormGrads, cache: SwitchNormCache, xp: Any) -> tuple[Array, Array, MixedStatistics]:
    """Stages 1–3 along ``tangents``: ``x_dot`` as ``(N, C, M)``, the centred input's tangent and :func:`mix_jvp`'s."""
    layout, config, mixture = cache.layout, cache.config, cache.mixture
    x_dot = xp.reshape(tangents.dx, (layout.N, layout.C, layout.M))
    moments_dot, centered_dot = instance_moments_jvp(x_dot, cache.centered, convention=config.convention, layout=layout)
    scopes_dot = scope_moments_jvp(
        moments_dot, mixture.moments, mixture.scopes,
        convention=config.convention, layout=layout, groups=config.groups, constant=constant_scopes(config),
    )  # fmt: skip
    return x_dot, centered_dot, mix_jvp(moments_dot, scopes_dot, tangents.dmean_logits, tangents.dvar_logits, mixture, config)


def switch_norm_jvp(tangents: SwitchNormGrads, cache: SwitchNormCache) -> Array:
    r"""Hand-derived JVP of :func:`switch_norm_forward`: the tangent :math:`\dot y` of the output along
    ``tangents``, the stages' JVPs in forward order (``docs/sn-jvp-hvp.md`` derives each).

    ``tangents`` holds one tangent per differentiable argument, in the gradient container:
    ``SwitchNormGrads(dx=..., dgamma=..., dbeta=..., dmean_logits=..., dvar_logits=...)``, each of
    its argument's shape and dtype (and finite). The stages:

    * stage 1, :func:`~refnorm.ops.statistics.instance_moments_jvp`: :math:`\dot\mu^{in}, \dot s`
      and the centred input's tangent :math:`\dot x - \dot\mu^{in}`;
    * stage 2, :func:`~refnorm.ops.statistics.scope_moments_jvp`: :math:`\dot\mu^k, \dot\sigma^{2,k}`
      (none for BN in evaluation: the running statistics are constants);
    * stage 3, :func:`mix_jvp`: :math:`\dot w, \dot w'` (the ratio functions' JVPs),
      :math:`\dot\mu, \dot\sigma^2, \dot r` and :math:`\dot{\text{shift}}`;
    * stage 4, :func:`~refnorm.ops.layer.normalize_jvp`:

    .. math::

        \dot y = (\dot\gamma r + \gamma \dot r)(x - \mu^{in}) + \gamma r\,(\dot x - \dot\mu^{in})
        + \dot\gamma\,\text{shift} + \gamma\,\dot{\text{shift}} + \dot\beta .

    The transpose of :func:`switch_norm_backward`:
    :math:`\langle dy, \dot y \rangle = \sum_a \langle \bar a, \dot a \rangle` over the arguments.
    """
    xp = check_jvp_call(tangents, cache, function="switch_norm_jvp", forward="switch_norm_forward")
    return jvp_stages(tangents, cache, xp)


def jvp_stages(tangents: SwitchNormGrads, cache: SwitchNormCache, xp: Any) -> Array:
    """:func:`switch_norm_jvp` on arguments its caller has checked (:func:`check_jvp_call`): the
    stages' JVPs, shared by SN, SSN and the plain normalizers."""
    mixture = cache.mixture
    _, centered_dot, mixture_dot = _point_tangents(tangents, cache, xp)
    y_dot = normalize_jvp(
        cache.centered, cache.gamma, mixture.inv_std, mixture.shift,
        centered_dot, tangents.dgamma, tangents.dbeta, mixture_dot.inv_std, mixture_dot.shift,
    )  # fmt: skip
    return xp.reshape(y_dot, cache.shape)


def switch_norm_hvp(dy: Array, cache: SwitchNormCache, tangents: SwitchNormGrads) -> SwitchNormGrads:
    r"""Hand-derived second order of :func:`switch_norm_forward`: the derivative of
    :func:`switch_norm_backward` ``(dy, ·)`` at the cache's point along ``tangents``, ``dy`` held fixed.

    That is the Hessian-vector product of the loss :math:`L = \langle dy, y \rangle` with the
    tangent (every argument's Hessian block at once), returned in the gradient container, like the
    backward. Forward-over-reverse, stage by stage (``docs/sn-jvp-hvp.md``): the point's tangents
    come from the JVP's stages 1–3 (:func:`switch_norm_jvp`); then each stage of the backward runs
    next to its derivative along them:

    * stage 4, :func:`~refnorm.ops.layer.normalize_vjp` and
      :func:`~refnorm.ops.layer.normalize_vjp_jvp`: :math:`\dot{\bar\gamma}`, :math:`\dot{\bar\beta} = 0`,
      :math:`\dot G, \dot P` and the direct term's :math:`(\gamma r)^\cdot`;
    * stage 3, :func:`mix_vjp` and :func:`mix_vjp_jvp`: :math:`\dot A, \dot B`, the logits' (with the
      ratio function's second derivative, :meth:`RatioFunction.hvp <refnorm.ops.simplex.RatioFunction.hvp>`)
      and every scope's :math:`\dot{\bar\mu}_k, \dot{\bar\sigma}_k`;
    * stage 2, :func:`~refnorm.ops.statistics.scope_moments_vjp` and
      :func:`~refnorm.ops.statistics.scope_moments_vjp_jvp`;
    * stage 1, :func:`~refnorm.ops.statistics.instance_moments_vjp_jvp`, plus the direct term's
      derivative :math:`(\gamma r)^\cdot\, dy`.

    ``dy`` is checked as the backward checks it; ``tangents`` as :func:`switch_norm_jvp` checks them.
    SSN's SparsestMax is differentiated within the smooth piece of the point (its recorded stages).
    """
    xp = check_hvp_call(dy, cache, tangents, function="switch_norm_hvp", forward="switch_norm_forward")
    return hvp_stages(dy, cache, tangents, xp)


def hvp_stages(dy: Array, cache: SwitchNormCache, tangents: SwitchNormGrads, xp: Any) -> SwitchNormGrads:
    """:func:`switch_norm_hvp` on arguments its caller has checked (:func:`check_hvp_call`): the
    backward's stages and their derivatives, shared by SN, SSN and the plain normalizers."""
    layout, config, mixture = cache.layout, cache.config, cache.mixture
    dy3 = xp.reshape(dy, (layout.N, layout.C, layout.M))
    # The point's tangents: the JVP's stages 1-3.
    _, centered_dot, mixture_dot = _point_tangents(tangents, cache, xp)
    # The backward's stages, each followed by its derivative along the tangents.
    normalized = normalize_vjp(dy3, cache.centered, cache.gamma, mixture.inv_std, mixture.shift)
    normalized_dot = normalize_vjp_jvp(
        dy3, cache.centered, cache.gamma, mixture.inv_std, mixture.shift,
        centered_dot, tangents.dgamma, mixture_dot.inv_std, mixture_dot.shift,
    )  # fmt: skip
    mixed = mix_vjp(normalized.sum_dxhat, normalized.sum_dxhat_centered, mixture, config)
    mixed_dot = mix_vjp_jvp(normalized, normalized_dot, mixture, mixture_dot, tangents.dmean_logits, tangents.dvar_logits, config)
    dmean_in, dvar_in = scope_moments_vjp(
        mixed.dmeans, mixed.dvars, mixture.moments, mixture.scopes,
        convention=config.convention, layout=layout, groups=config.groups,
    )  # fmt: skip
    dmean_in_dot, dvar_in_dot = scope_moments_vjp_jvp(
        mixed.dvars, mixed_dot.dmeans, mixed_dot.dvars, mixture.moments, mixture.scopes, mixture_dot.moments, mixture_dot.scopes,
        convention=config.convention, layout=layout, groups=config.groups,
    )  # fmt: skip
    dx_dot = instance_moments_vjp_jvp(
        dvar_in, dmean_in_dot, dvar_in_dot, cache.centered, centered_dot, convention=config.convention, layout=layout
    )
    # The direct term r gamma dy, differentiated: (gamma r)' dy.
    dx_dot = dx_dot + normalized_dot.direct_scale[:, :, None] * dy3
    return SwitchNormGrads(
        dx=xp.reshape(dx_dot, dy.shape),
        dgamma=normalized_dot.dgamma,
        dbeta=normalized_dot.dbeta,
        dmean_logits=mixed_dot.dmean_logits,
        dvar_logits=mixed_dot.dvar_logits,
    )


# --------------------------------------------------------------------------------------------
# For the gradient checker
# --------------------------------------------------------------------------------------------


def switch_norm_linearize(x: Array, gamma: Array, beta: Array, mean_logits: Array, var_logits: Array, **config: Any) -> Linearized:
    """SN at a point, as :func:`refnorm.gradcheck` consumes it (``config`` as in the forward)."""
    y, cache, _ = switch_norm_forward(x, gamma, beta, mean_logits, var_logits, **config)
    return linearization(y, cache)


def linearization(y: Array, cache: SwitchNormCache) -> Linearized:
    """An SN forward's output with its backward, JVP and HVP, and the ratio functions' active sets (a
    piecewise-smooth ratio function such as SparsestMax reports which piece the point lies on)."""
    mixture = cache.mixture
    active = (cache.config.mean_ratio.active_set(mixture.mean_aux), cache.config.var_ratio.active_set(mixture.var_aux))
    return Linearized(
        out=y,
        pullback=lambda dy: tuple(switch_norm_backward(dy, cache)),
        pushforward=lambda *tangents: switch_norm_jvp(SwitchNormGrads(*tangents), cache),
        active_set=None if active == (None, None) else active,
        hvp=lambda dy, *tangents: tuple(switch_norm_hvp(dy, cache, SwitchNormGrads(*tangents))),
    )
