r"""Switchable Normalization (SN): forward, hand-derived backward, and the sharded-batch (SyncSN) form.

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

Backward: :func:`switch_norm_backward` states the formulas; ``docs/sn-backward.md`` derives them
with the same symbols.

The computation is split into stages that the sharded form reuses unchanged:

1. per-instance moments of each batch (a pass over ``x``);
2. :func:`_mix`: scope statistics, ratios, mixed mean and variance. It only touches ``(N, C)``
   arrays; in SyncSN this is where the instance moments of all devices are pooled;
3. :func:`_normalize`: ``xhat`` and ``y`` (a pass over ``x``).
"""

from __future__ import annotations

from collections.abc import Sequence
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
from .linearized import Linearized
from .running import BatchAverage, RunningStats, check_running_for_layer, use_running_statistics
from .simplex import SOFTMAX, RatioFunction
from .statistics import (
    InstanceMoments,
    Layout,
    ScopeMoments,
    check_convention_defined,
    check_normalizers,
    default_normalizers,
    instance_moments,
    instance_moments_vjp_coefficients,
    reduce_to_scope,
    scope_moments,
    scope_moments_vjp,
)


@dataclass(frozen=True)
class SwitchNormConfig:
    """Everything about an SN call that is not an array."""

    normalizers: tuple[str, ...]
    groups: int | None
    convention: str
    eps: float
    momentum: float
    training: bool
    mean_ratio: RatioFunction
    var_ratio: RatioFunction


class Mixture(NamedTuple):
    """The small-array stage of SN: statistics, ratios and their mixture, all ``(N, C)`` or ``(K,)``."""

    moments: InstanceMoments
    scopes: ScopeMoments
    """Per-normalizer statistics actually mixed (BN = running statistics in evaluation)."""
    mean_ratios: Array
    var_ratios: Array
    mean_aux: Any
    var_aux: Any
    mean: Array
    """:math:`\\mu_{nc}`, the mixed mean."""
    var: Array
    """:math:`\\sigma^2_{nc}`, the mixed variance (without ``eps``)."""
    inv_std: Array
    """:math:`r_{nc} = (\\sigma^2_{nc} + \\epsilon)^{-1/2}`."""


class SwitchNormCache(NamedTuple):
    """What :func:`switch_norm_backward` needs: ``xhat``, ``gamma`` and the mixture (not ``x``)."""

    xhat: Array
    gamma: Array
    mixture: Mixture
    layout: Layout
    config: SwitchNormConfig

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


def mixture_arrays(mixture: Mixture) -> dict[str, Array]:
    """The arrays of a :class:`Mixture` by name: ``mean_in``, ``var_ln``, ``mean_ratios``, ..."""
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
# Validation
# --------------------------------------------------------------------------------------------


def _check_arguments(
    xs: Sequence[Array],
    gamma: Array,
    beta: Array,
    mean_logits: Array,
    var_logits: Array,
    *,
    running: Any,
    training: bool,
    normalizers: Any,
    groups: int | None,
    convention: str,
    eps: float,
    momentum: float,
    mean_ratio: Any,
    var_ratio: Any,
    check_finite_input: bool,
) -> tuple[Any, Layout, SwitchNormConfig]:
    """Validate an SN call; return the namespace, the layout of the (pooled) batch and the config."""
    names = ["x"] if len(xs) == 1 else [f"xs[{i}]" for i in range(len(xs))]
    xp = namespace_of(
        {**dict(zip(names, xs, strict=True)), "gamma": gamma, "beta": beta, "mean_logits": mean_logits, "var_logits": var_logits}
    )
    for name, x in zip(names, xs, strict=True):
        check_floating(xp, x, name)
    layouts = [Layout.of(x.shape, name) for name, x in zip(names, xs, strict=True)]
    for name, x in zip(names[1:], xs[1:], strict=True):
        if tuple(x.shape[1:]) != tuple(xs[0].shape[1:]):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected (N_i, *{tuple(xs[0].shape[1:])}) like xs[0]")
    layout = Layout(N=sum(lay.N for lay in layouts), C=layouts[0].C, M=layouts[0].M, ndim=layouts[0].ndim)
    check_convention(convention)
    normalizers = check_normalizers(default_normalizers(layout) if normalizers is None else normalizers, groups, layout)
    check_convention_defined(convention, normalizers, layout, groups)
    eps = check_positive_number(eps, "eps")
    momentum = check_unit_interval(momentum, "momentum")
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    for name, ratio in (("mean_ratio", mean_ratio), ("var_ratio", var_ratio)):
        if not isinstance(ratio, RatioFunction):
            raise TypeError(f"{name} must be a ratio function (forward/vjp/jvp/active_set), got {type(ratio).__name__}")

    for name, array in (("gamma", gamma), ("beta", beta), ("mean_logits", mean_logits), ("var_logits", var_logits)):
        check_floating(xp, array, name)
    check_same_dtype(
        names[0],
        xs[0],
        [*zip(names[1:], xs[1:], strict=True), ("gamma", gamma), ("beta", beta), ("mean_logits", mean_logits), ("var_logits", var_logits)],
    )
    check_shape(gamma, "gamma", (layout.C,), "(C,)")
    check_shape(beta, "beta", (layout.C,), "(C,)")
    K = len(normalizers)
    check_shape(mean_logits, "mean_logits", (K,), f"one logit per normalizer {normalizers}")
    check_shape(var_logits, "var_logits", (K,), f"one logit per normalizer {normalizers}")

    check_running_for_layer(running, normalizers, training=training, channels=layout.C, like=xs[0])

    if check_finite_input:  # the input itself is checked through its instance moments (instance_moments)
        for name, array in (("gamma", gamma), ("beta", beta), ("mean_logits", mean_logits), ("var_logits", var_logits)):
            check_finite(xp, array, name)
    config = SwitchNormConfig(normalizers, groups, convention, eps, momentum, training, mean_ratio, var_ratio)
    return xp, layout, config


# --------------------------------------------------------------------------------------------
# Forward stages
# --------------------------------------------------------------------------------------------


def _mix(
    moments: InstanceMoments,
    mean_logits: Array,
    var_logits: Array,
    running: RunningStats | BatchAverage | None,
    layout: Layout,
    config: SwitchNormConfig,
    xp: Any,
) -> tuple[Mixture, RunningStats | BatchAverage | None]:
    """Scope statistics, ratios and the mixed mean/variance; the new running state."""
    scopes = scope_moments(moments, config.normalizers, convention=config.convention, layout=layout, groups=config.groups)
    scopes, new_running = use_running_statistics(
        scopes, running, training=config.training, momentum=config.momentum, channels=layout.C
    )

    mean_ratios, mean_aux = config.mean_ratio.forward(mean_logits)
    var_ratios, var_aux = config.var_ratio.forward(var_logits)
    mean = xp.zeros_like(moments.mean)
    var = xp.zeros_like(moments.mean)
    for k in range(len(config.normalizers)):
        mean = mean + mean_ratios[k] * scopes.means[k]
        var = var + var_ratios[k] * scopes.variances[k]
    inv_std = 1.0 / xp.sqrt(var + config.eps)
    mixture = Mixture(moments, scopes, mean_ratios, var_ratios, mean_aux, var_aux, mean, var, inv_std)
    return mixture, new_running


def _normalize(x: Array, mean: Array, inv_std: Array, gamma: Array, beta: Array, layout: Layout, xp: Any) -> tuple[Array, Array]:
    """``xhat = (x - mean) * inv_std`` and ``y = gamma * xhat + beta``, back in ``x``'s shape."""
    x3 = xp.reshape(x, (layout.N, layout.C, layout.M))
    xhat = (x3 - mean[:, :, None]) * inv_std[:, :, None]
    y = gamma[None, :, None] * xhat + beta[None, :, None]
    return xp.reshape(y, x.shape), xp.reshape(xhat, x.shape)


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
    r"""Switchable Normalization forward (see the module docstring for the equations).

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
    xp, layout, config = _check_arguments(
        [x], gamma, beta, mean_logits, var_logits,
        running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=momentum, mean_ratio=mean_ratio, var_ratio=var_ratio, check_finite_input=check_finite,
    )  # fmt: skip
    moments = instance_moments(x, convention=config.convention, check_finite=check_finite)
    mixture, new_running = _mix(moments, mean_logits, var_logits, running, layout, config, xp)
    y, xhat = _normalize(x, mixture.mean, mixture.inv_std, gamma, beta, layout, xp)
    return SwitchNormOutput(y, SwitchNormCache(xhat, gamma, mixture, layout, config), new_running)


# --------------------------------------------------------------------------------------------
# Backward stages
# --------------------------------------------------------------------------------------------


def _reduce_upstream(dy: Array, xhat: Array, layout: Layout, xp: Any) -> tuple[Array, Array]:
    r"""Per-instance sums :math:`\sum_i g_{nci}` and :math:`\sum_i g_{nci}\hat x_{nci}`, shape ``(N, C)``.

    The second is a contraction (``vecdot``): one sweep over ``dy`` and ``xhat``, no product array.
    """
    dy3 = xp.reshape(dy, (layout.N, layout.C, layout.M))
    xhat3 = xp.reshape(xhat, (layout.N, layout.C, layout.M))
    return xp.sum(dy3, axis=2), xp.vecdot(dy3, xhat3, axis=-1)


def _mixture_vjp(
    sum_dy: Array,
    sum_dy_xhat: Array,
    gamma: Array,
    mixture: Mixture,
    layout: Layout,
    config: SwitchNormConfig,
    xp: Any,
) -> tuple[Array, Array, Array, Array]:
    """From the per-instance sums to the gradients of the instance moments and of the logits."""
    # Gradients with respect to the mixed statistics: A = dL/dmu, B = dL/dsigma^2.
    A = -mixture.inv_std * gamma[None, :] * sum_dy
    B = -0.5 * mixture.inv_std**2 * gamma[None, :] * sum_dy_xhat

    # Ratios: dL/dw_k = sum_nc A mu^k, dL/dw'_k = sum_nc B sigma^{2,k}; then the ratio VJPs.
    scopes = mixture.scopes
    dmean_ratios = xp.stack([xp.sum(A * mean) for mean in scopes.means])
    dvar_ratios = xp.stack([xp.sum(B * var) for var in scopes.variances])
    dmean_logits = config.mean_ratio.vjp(dmean_ratios, mixture.mean_ratios, mixture.mean_aux)
    dvar_logits = config.var_ratio.vjp(dvar_ratios, mixture.var_ratios, mixture.var_aux)

    # Scope statistics: dL/dmu^k = w_k A and dL/dsigma^{2,k} = w'_k B, summed to the scope's shape.
    # In evaluation the BN pair is the running statistics: constants, no gradient into x.
    dmeans, dvars = [], []
    for k, scope in enumerate(scopes.normalizers):
        if scope == "bn" and not config.training:
            dmeans.append(None)
            dvars.append(None)
            continue
        dmeans.append(mixture.mean_ratios[k] * reduce_to_scope(A, scope, config.groups, xp))
        dvars.append(mixture.var_ratios[k] * reduce_to_scope(B, scope, config.groups, xp))
    dmean_in, dvar_in = scope_moments_vjp(
        tuple(dmeans), tuple(dvars), mixture.moments, scopes,
        convention=config.convention, layout=layout, groups=config.groups,
    )  # fmt: skip
    return dmean_in, dvar_in, dmean_logits, dvar_logits


def _input_gradient(
    dy: Array, xhat: Array, gamma: Array, mixture_rows: tuple[Array, Array, Array], dmean_in: Array, dvar_in: Array,
    layout: Layout, config: SwitchNormConfig, xp: Any,
) -> Array:  # fmt: skip
    r"""``dx = a dy + b xhat + c``, with per-instance coefficients: one sweep over ``dy`` and ``xhat``.

    With the statistics held fixed, ``dx = r gamma dy``. Through the instance moments ``dx`` gets
    ``offset + slope (x - mu_in)`` (:func:`refnorm.ops.statistics.instance_moments_vjp_coefficients`).
    The cache holds ``xhat``, not ``x``: :math:`x - \mu^{in} = \hat x / r + (\mu - \mu^{in})`, which
    involves no large cancellation. Collecting the terms,

    .. math::

        a = r \gamma, \qquad b = \text{slope} / r, \qquad c = \text{offset} + \text{slope}\,(\mu - \mu^{in}) .
    """
    mean, inv_std, instance_mean = mixture_rows
    offset, slope = instance_moments_vjp_coefficients(dmean_in, dvar_in, convention=config.convention, layout=layout)
    a = inv_std * gamma[None, :]
    b = slope / inv_std
    c = offset + slope * (mean - instance_mean)
    dy3 = xp.reshape(dy, (layout.N, layout.C, layout.M))
    xhat3 = xp.reshape(xhat, (layout.N, layout.C, layout.M))
    dx = a[:, :, None] * dy3 + b[:, :, None] * xhat3 + c[:, :, None]
    return xp.reshape(dx, dy.shape)


def switch_norm_backward(dy: Array, cache: SwitchNormCache) -> SwitchNormGrads:
    r"""Hand-derived backward of :func:`switch_norm_forward` (spec-notes §2.5; ``docs/sn-backward.md``).

    With :math:`g = \partial L/\partial y`, :math:`\hat g = \gamma g` and
    :math:`r = (\sigma^2 + \epsilon)^{-1/2}`:

    .. math::

        \frac{\partial L}{\partial\beta_c} = \sum_{n,i} g_{nci}, \quad
        \frac{\partial L}{\partial\gamma_c} = \sum_{n,i} g_{nci}\hat x_{nci}, \quad
        A_{nc} = -r_{nc}\sum_i \hat g_{nci}, \quad
        B_{nc} = -\tfrac12 r_{nc}^2 \sum_i \hat g_{nci}\hat x_{nci},

    .. math::

        \frac{\partial L}{\partial w_k} = \sum_{n,c} A_{nc}\mu^k_{nc}, \quad
        \frac{\partial L}{\partial w'_k} = \sum_{n,c} B_{nc}\sigma^{2,k}_{nc},

    then the ratio functions' VJPs give ``dmean_logits`` and ``dvar_logits``. Each scope receives
    :math:`\bar\mu_k = w_k \sum A`, :math:`\bar\sigma_k = w'_k \sum B` (summed over the axes the
    scope broadcasts along; none for BN in evaluation), which
    :func:`refnorm.ops.statistics.scope_moments_vjp` maps to the instance moments and
    :func:`refnorm.ops.statistics.instance_moments_vjp` to ``x``:

    .. math::

        \frac{\partial L}{\partial x_{nci}} = r_{nc}\hat g_{nci}
        + \frac{1}{M}\frac{\partial L}{\partial \mu^{in}_{nc}}
        + \frac{2(x_{nci} - \mu^{in}_{nc})}{M - d}\frac{\partial L}{\partial s_{nc}} .
    """
    xp = namespace(dy, cache.xhat)
    _check_upstream(xp, dy, cache.xhat, "dy")
    config, layout, mixture = cache.config, cache.layout, cache.mixture
    sum_dy, sum_dy_xhat = _reduce_upstream(dy, cache.xhat, layout, xp)
    dmean_in, dvar_in, dmean_logits, dvar_logits = _mixture_vjp(
        sum_dy, sum_dy_xhat, cache.gamma, mixture, layout, config, xp
    )
    dx = _input_gradient(
        dy, cache.xhat, cache.gamma, (mixture.mean, mixture.inv_std, mixture.moments.mean),
        dmean_in, dvar_in, layout, config, xp,
    )  # fmt: skip
    return SwitchNormGrads(
        dx=dx,
        dgamma=xp.sum(sum_dy_xhat, axis=0),
        dbeta=xp.sum(sum_dy, axis=0),
        dmean_logits=dmean_logits,
        dvar_logits=dvar_logits,
    )


def _check_upstream(xp: Any, dy: Array, like: Array, name: str) -> None:
    check_floating(xp, dy, name)
    check_shape(dy, name, tuple(like.shape), "the output's shape")
    check_same_dtype("the output", like, [(name, dy)])


# --------------------------------------------------------------------------------------------
# Sharded batch (SyncSN)
# --------------------------------------------------------------------------------------------


class ShardedSwitchNormCache(NamedTuple):
    """Cache of :func:`switch_norm_sharded_forward`: one ``xhat`` per shard, one shared mixture."""

    xhats: tuple[Array, ...]
    gamma: Array
    mixture: Mixture
    layouts: tuple[Layout, ...]
    layout: Layout
    """Layout of the pooled batch (``N`` = sum of the shard sizes)."""
    config: SwitchNormConfig


class ShardedSwitchNormOutput(NamedTuple):
    ys: tuple[Array, ...]
    cache: ShardedSwitchNormCache
    running: RunningStats | BatchAverage | None


class ShardedSwitchNormGrads(NamedTuple):
    dxs: tuple[Array, ...]
    dgamma: Array
    dbeta: Array
    dmean_logits: Array
    dvar_logits: Array


def switch_norm_sharded_forward(
    xs: Sequence[Array],
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
) -> ShardedSwitchNormOutput:
    """SN over a batch split into shards (one per device), with BN statistics pooled as SyncSN does.

    Each shard computes its instance moments; the ``(N_i, C)`` moments of all shards are pooled
    (in SyncSN: all-gathered) and the scope statistics are computed once from the pooled moments,
    so every output equals :func:`switch_norm_forward` on the concatenated batch exactly. Shards
    may have different sizes ``N_i`` (the official SyncSN assumes equal ones). Arguments as in
    :func:`switch_norm_forward`, with ``xs`` a sequence of arrays ``(N_i, C, *spatial)``.
    """
    if isinstance(xs, str) or not isinstance(xs, Sequence) or len(xs) == 0:
        raise TypeError("xs must be a non-empty sequence of arrays (one per shard)")
    xp, layout, config = _check_arguments(
        list(xs), gamma, beta, mean_logits, var_logits,
        running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=momentum, mean_ratio=mean_ratio, var_ratio=var_ratio, check_finite_input=check_finite,
    )  # fmt: skip
    shard_moments = [
        instance_moments(x, convention=config.convention, check_finite=check_finite, name=f"xs[{i}]") for i, x in enumerate(xs)
    ]
    pooled = InstanceMoments(
        mean=xp.concat([m.mean for m in shard_moments], axis=0),
        var=xp.concat([m.var for m in shard_moments], axis=0),
    )
    mixture, new_running = _mix(pooled, mean_logits, var_logits, running, layout, config, xp)
    layouts = tuple(Layout.of(x.shape) for x in xs)
    ys, xhats = [], []
    for rows, x, shard_layout in zip(_shard_rows(layouts), xs, layouts, strict=True):
        y, xhat = _normalize(x, mixture.mean[rows, :], mixture.inv_std[rows, :], gamma, beta, shard_layout, xp)
        ys.append(y)
        xhats.append(xhat)
    cache = ShardedSwitchNormCache(tuple(xhats), gamma, mixture, layouts, layout, config)
    return ShardedSwitchNormOutput(tuple(ys), cache, new_running)


def switch_norm_sharded_backward(dys: Sequence[Array], cache: ShardedSwitchNormCache) -> ShardedSwitchNormGrads:
    """Backward of :func:`switch_norm_sharded_forward`: equals :func:`switch_norm_backward` on the
    concatenated batch. The per-instance sums of every shard are pooled before the mixture VJP
    (the one place SyncSN communicates), and each gradient is computed exactly once (the official
    SyncSN sums the logit gradients twice across devices, spec-notes §2.6)."""
    if len(dys) != len(cache.xhats):
        raise ValueError(f"dys has {len(dys)} shards, expected {len(cache.xhats)} (one per forward shard)")
    xp = namespace(*dys, *cache.xhats)
    for i, (dy, xhat) in enumerate(zip(dys, cache.xhats, strict=True)):
        _check_upstream(xp, dy, xhat, f"dys[{i}]")
    sums = [_reduce_upstream(dy, xhat, lay, xp) for dy, xhat, lay in zip(dys, cache.xhats, cache.layouts, strict=True)]
    sum_dy = xp.concat([s[0] for s in sums], axis=0)
    sum_dy_xhat = xp.concat([s[1] for s in sums], axis=0)
    mixture = cache.mixture
    dmean_in, dvar_in, dmean_logits, dvar_logits = _mixture_vjp(
        sum_dy, sum_dy_xhat, cache.gamma, mixture, cache.layout, cache.config, xp
    )
    dxs = []
    for rows, dy, xhat, lay in zip(_shard_rows(cache.layouts), dys, cache.xhats, cache.layouts, strict=True):
        shard_mixture = (mixture.mean[rows, :], mixture.inv_std[rows, :], mixture.moments.mean[rows, :])
        dxs.append(
            _input_gradient(dy, xhat, cache.gamma, shard_mixture, dmean_in[rows, :], dvar_in[rows, :], lay, cache.config, xp)
        )
    return ShardedSwitchNormGrads(
        dxs=tuple(dxs),
        dgamma=xp.sum(sum_dy_xhat, axis=0),
        dbeta=xp.sum(sum_dy, axis=0),
        dmean_logits=dmean_logits,
        dvar_logits=dvar_logits,
    )


def _shard_rows(layouts: Sequence[Layout]) -> list[slice]:
    """The rows of the pooled ``(N, C)`` arrays that belong to each shard."""
    rows, start = [], 0
    for lay in layouts:
        rows.append(slice(start, start + lay.N))
        start += lay.N
    return rows


# --------------------------------------------------------------------------------------------
# For the gradient checker
# --------------------------------------------------------------------------------------------

SWITCH_NORM_ARGUMENTS = ("x", "gamma", "beta", "mean_logits", "var_logits")


def switch_norm_linearize(x: Array, gamma: Array, beta: Array, mean_logits: Array, var_logits: Array, **config: Any) -> Linearized:
    """SN at a point, as :func:`refnorm.gradcheck` consumes it (``config`` as in the forward)."""
    y, cache, _ = switch_norm_forward(x, gamma, beta, mean_logits, var_logits, **config)
    mixture = cache.mixture
    active = (cache.config.mean_ratio.active_set(mixture.mean_aux), cache.config.var_ratio.active_set(mixture.var_aux))
    return Linearized(
        out=y,
        pullback=lambda dy: tuple(switch_norm_backward(dy, cache)),
        active_set=None if active == (None, None) else active,
    )
