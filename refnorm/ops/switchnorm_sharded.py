r"""Switchable Normalization over a batch split into shards: the SyncSN form (SPEC §2).

With the batch split over devices, SyncSN pools the BN statistics of all devices. refnorm runs
:mod:`refnorm.ops.switchnorm`'s stages with one step added:

1. every shard computes its instance moments :math:`\mu^{in}, s` (``(N_i, C)`` arrays) and keeps
   its centred input;
2. the moments of all shards are pooled (concatenated along the batch: in SyncSN, all-gathered),
   and stages 2–3 (scope moments, ratios, mixture) run once on the pooled ``(N, C)`` arrays;
3. every shard normalizes its own rows (stage 4).

Backwards, every shard computes the per-instance sums of
:func:`~refnorm.ops.layer.normalize_vjp`; they are pooled (the one place SyncSN communicates),
:func:`~refnorm.ops.switchnorm.mix_vjp` and :func:`~refnorm.ops.statistics.scope_moments_vjp` run
once, and every shard finishes :func:`~refnorm.ops.statistics.instance_moments_vjp` on its own
rows. Every gradient is computed exactly once, so the sharded result equals SN on the
concatenated batch, for shards of any sizes (the official SyncSN assumes equal ones, and sums the
logit gradients twice across devices: spec-notes §2.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ._validation import check_same_dtype, namespace_of, overflow_checked_afterwards
from .._xp import Array
from .layer import check_cache, check_finite_parameters, check_layer_arguments, check_layer_input, check_upstream, check_upstream_sum, normalize, normalize_vjp
from .running import BatchAverage, RunningStats, use_running_statistics
from .simplex import SOFTMAX, RatioFunction
from .statistics import InstanceMoments, Layout, instance_moments_and_centered, instance_moments_vjp, scope_moments, scope_moments_vjp
from .switchnorm import MixedStatistics, SwitchNormConfig, check_logits, check_ratio_functions, mix, mix_vjp


class ShardedSwitchNormCache(NamedTuple):
    """Cache of :func:`switch_norm_sharded_forward`: one centred input per shard, one shared mixture."""

    centered: tuple[Array, ...]
    r""":math:`x_i - \mu^{in}` of every shard, shape ``(N_i, C, M)``."""
    gamma: Array
    mixture: MixedStatistics
    """The statistics of the pooled batch (``(N, C)`` arrays, ``N`` = sum of the shard sizes)."""
    layouts: tuple[Layout, ...]
    shapes: tuple[tuple[int, ...], ...]
    """The shape of every shard."""
    layout: Layout
    """Layout of the pooled batch."""
    config: SwitchNormConfig


class ShardedSwitchNormOutput(NamedTuple):
    """``ys, cache, running = switch_norm_sharded_forward(...)``."""

    ys: tuple[Array, ...]
    cache: ShardedSwitchNormCache
    running: RunningStats | BatchAverage | None


class ShardedSwitchNormGrads(NamedTuple):
    """Gradients of the loss with respect to every input of the sharded form."""

    dxs: tuple[Array, ...]
    dgamma: Array
    dbeta: Array
    dmean_logits: Array
    dvar_logits: Array


def shard_rows(layouts: Sequence[Layout]) -> list[slice]:
    """The rows of the pooled ``(N, C)`` arrays that belong to each shard."""
    rows, start = [], 0
    for layout in layouts:
        rows.append(slice(start, start + layout.N))
        start += layout.N
    return rows


def _check_shards(xs: Any, parameters: dict[str, Any]) -> tuple[Any, tuple[Layout, ...], Layout]:
    """The namespace, each shard's layout and the pooled layout; ``ValueError`` for shards that differ
    in anything but their batch size."""
    if isinstance(xs, str) or not isinstance(xs, Sequence) or len(xs) == 0:
        raise TypeError("xs must be a non-empty sequence of arrays (one per shard)")
    names = [f"xs[{i}]" for i in range(len(xs))]
    xp = namespace_of({**dict(zip(names, xs, strict=True)), **parameters})
    layouts = tuple(check_layer_input(xp, x, name) for name, x in zip(names, xs, strict=True))
    for name, x in zip(names[1:], xs[1:], strict=True):
        if tuple(x.shape[1:]) != tuple(xs[0].shape[1:]):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected (N_i, *{tuple(xs[0].shape[1:])}) like xs[0]")
    check_same_dtype("xs[0]", xs[0], list(zip(names[1:], xs[1:], strict=True)))
    pooled = Layout(N=sum(layout.N for layout in layouts), C=layouts[0].C, M=layouts[0].M, ndim=layouts[0].ndim)
    return xp, layouts, pooled


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

    Every output equals :func:`~refnorm.ops.switchnorm.switch_norm_forward` on the concatenated
    batch exactly. Shards may have different sizes ``N_i``. Arguments as in
    :func:`~refnorm.ops.switchnorm.switch_norm_forward`, with ``xs`` a sequence of arrays
    ``(N_i, C, *spatial)``.
    """
    parameters = {"gamma": gamma, "beta": beta, "mean_logits": mean_logits, "var_logits": var_logits}
    xp, layouts, layout = _check_shards(xs, parameters)
    layer = check_layer_arguments(
        xp, layout, xs[0], parameters,
        running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=momentum, like_name="xs[0]", check_finite=check_finite,
    )  # fmt: skip
    check_logits(mean_logits, var_logits, layer.normalizers)
    check_ratio_functions(mean_ratio, var_ratio, len(layer.normalizers))
    if check_finite:  # every shard is checked through its instance moments
        check_finite_parameters(xp, parameters, running)
    config = SwitchNormConfig(**vars(layer), mean_ratio=mean_ratio, var_ratio=var_ratio)

    # Stage 1 on every shard, then the pooling.
    shards = [
        instance_moments_and_centered(x, convention=config.convention, check_finite=check_finite, name=f"xs[{i}]")
        for i, x in enumerate(xs)
    ]
    moments = InstanceMoments(
        mean=xp.concat([shard_moments.mean for shard_moments, _ in shards], axis=0),
        var=xp.concat([shard_moments.var for shard_moments, _ in shards], axis=0),
    )
    # Stages 2 and 3, once, on the pooled moments.
    scopes = scope_moments(moments, config.normalizers, convention=config.convention, layout=layout, groups=config.groups, check_finite=False)
    scopes, new_running = use_running_statistics(
        scopes, running, training=config.training, momentum=config.momentum, channels=layout.C, check_finite=check_finite, name="xs"
    )
    mixture = mix(moments, scopes, mean_logits, var_logits, config)
    # Stage 4 on every shard's rows.
    ys = tuple(
        xp.reshape(normalize(centered, gamma, beta, mixture.inv_std[rows, :], mixture.shift[rows, :]), x.shape)
        for rows, x, (_, centered) in zip(shard_rows(layouts), xs, shards, strict=True)
    )
    cache = ShardedSwitchNormCache(
        tuple(centered for _, centered in shards), gamma, mixture, layouts, tuple(tuple(x.shape) for x in xs), layout, config
    )
    return ShardedSwitchNormOutput(ys, cache, new_running)


def switch_norm_sharded_backward(dys: Sequence[Array], cache: ShardedSwitchNormCache) -> ShardedSwitchNormGrads:
    """Backward of :func:`switch_norm_sharded_forward`: equals
    :func:`~refnorm.ops.switchnorm.switch_norm_backward` on the concatenated batch (module docstring)."""
    check_cache(cache, ShardedSwitchNormCache, "switch_norm_sharded_forward")
    if isinstance(dys, str) or not isinstance(dys, Sequence):
        raise TypeError(f"dys must be a sequence of arrays (one per shard), got {type(dys).__name__}")
    if len(dys) != len(cache.centered):
        raise ValueError(f"dys has {len(dys)} shards, expected {len(cache.centered)} (one per forward shard)")
    config, layout, mixture = cache.config, cache.layout, cache.mixture
    rows = shard_rows(cache.layouts)
    # Stage 4 backwards on every shard, then the pooling of the per-instance sums.
    normalized = []
    for i, (dy, centered, shard_layout, shape, shard) in enumerate(zip(dys, cache.centered, cache.layouts, cache.shapes, rows, strict=True)):
        xp = check_upstream(dy, centered, shape, f"dys[{i}]", values=False)
        dy3 = xp.reshape(dy, (shard_layout.N, shard_layout.C, shard_layout.M))
        with overflow_checked_afterwards():  # dys[i] is checked through its sums, right after
            normalized.append(normalize_vjp(dy3, centered, cache.gamma, mixture.inv_std[shard, :], mixture.shift[shard, :]))
        check_upstream_sum(xp, normalized[-1].dbeta, f"dys[{i}]")
    sum_dxhat = xp.concat([grads.sum_dxhat for grads in normalized], axis=0)
    sum_dxhat_centered = xp.concat([grads.sum_dxhat_centered for grads in normalized], axis=0)
    # Stages 3 and 2 backwards, once, on the pooled arrays.
    mixed = mix_vjp(sum_dxhat, sum_dxhat_centered, mixture, config)
    dmean_in, dvar_in = scope_moments_vjp(
        mixed.dmeans, mixed.dvars, mixture.moments, mixture.scopes,
        convention=config.convention, layout=layout, groups=config.groups,
    )  # fmt: skip
    # Stage 1 backwards on every shard's rows.
    dxs = tuple(
        xp.reshape(
            instance_moments_vjp(dmean_in[shard, :], dvar_in[shard, :], centered, convention=config.convention, layout=shard_layout)
            + grads.direct_scale[:, :, None] * xp.reshape(dy, (shard_layout.N, shard_layout.C, shard_layout.M)),
            shape,
        )
        for grads, dy, centered, shard_layout, shape, shard in zip(normalized, dys, cache.centered, cache.layouts, cache.shapes, rows, strict=True)
    )
    dgamma, dbeta = normalized[0].dgamma, normalized[0].dbeta
    for grads in normalized[1:]:  # an all-reduce of the affine gradients
        dgamma, dbeta = dgamma + grads.dgamma, dbeta + grads.dbeta
    return ShardedSwitchNormGrads(dxs, dgamma, dbeta, mixed.dmean_logits, mixed.dvar_logits)
