r"""Sparse Switchable Normalization (SSN): SN whose ratios come from SparsestMax (SPEC §3).

SSN (Shao et al., CVPR 2019) is :mod:`refnorm.ops.switchnorm` with another ratio function: the mean
and variance ratios are

.. math::

    p = \mathrm{SparsestMax}(\lambda^\mu; r), \qquad p' = \mathrm{SparsestMax}(\lambda^\sigma; r),

(:mod:`refnorm.ops.sparsestmax`), everything else (statistics, conventions, running statistics,
backward) is SN's: this module checks an SSN call once
(:func:`check_sparse_switch_norm_call`: SN's check, then the radius, the variant and the fixed
state), builds the two ratio functions and runs SN's stages with them
(:func:`~refnorm.ops.switchnorm.switch_norm_stages`), copying none of SN's code.

**Fixing** (official ``SSN2d.forward``, spec-notes §3.5). As the radius grows, a side's ratios
reach a vertex of the simplex (one-hot); that side is then *fixed*: from the next call on, its
ratios are that vertex (:class:`~refnorm.ops.simplex.FixedRatios`), its logits are ignored and get no
gradient. The decision is returned as new state (:class:`FixedSides`), never stored in an
argument. A vertex is detected with a tolerance (:func:`is_vertex`), not with the official exact
test ``max - min >= 1``, which misses one-hot vectors computed as ``(1 - 1e-16, 0, 0)``
(spec-notes §3.7). The official code also overwrites the logit parameter with the one-hot vector;
refnorm leaves the logits alone (write ``one_hot(fixed.mean)`` into them to reproduce a
checkpoint). The check runs in training and in evaluation, as in the official code. A side fixed
during this call already had a vertex as its ratios, whose SparsestMax Jacobian is zero, so this
call's gradient matches the official code's (which detaches it).

**Fixing without host values** (Dask, ``jax.jit``). Whether a side becomes fixed is read from the
ratios' values, which a lazy Dask array or a JAX tracer does not have yet. There the new state of
a free side is a 0-d integer array in the graph instead of a Python int: the vertex's index, or
``-1`` while the side is still free (:func:`vertex_index`). Compute it with the results
(``dask.compute``, or as an output of the jitted function) and pass it back as ``fixed``: the
entry point reads a concrete 0-d integer array as its int (``-1`` as ``None``). Which ratio
function a side uses is Python structure (a fixed side has no SparsestMax at all), so ``fixed``
itself must be concrete: a static argument of a jitted function (:meth:`FixedSides.resolved`
turns the arrays into hashable ints), never a traced one.

**Radius schedule.** The official training loop sets :math:`r = (\text{epoch}\cdot T + i) /
(\text{epochs}\cdot T)` at every iteration (:func:`radius_schedule`), so every side is fixed by
about 82 % of training for ``K = 3`` (earlier with the official variant when the sparsemax sits
on an edge).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import array_api_compat

from .._xp import Array, namespace, values_available
from .conventions import check_convention, preset
from .linearized import Linearized
from .running import BatchAverage, RunningStats
from .simplex import FixedRatios
from .sparsestmax import SparsestMax, rounding_tolerance
from .statistics import Layout
from .switchnorm import (
    SwitchNormCache,
    SwitchNormConfig,
    SwitchNormGrads,
    check_hvp_call,
    check_jvp_call,
    check_switch_norm_call,
    hvp_stages,
    jvp_stages,
    linearization,
    switch_norm_backward,
    switch_norm_stages,
)


class FixedSides(NamedTuple):
    """Which vertex each side of an SSN layer is fixed to: a normalizer index, or ``None`` (still learned).

    ``FixedSides()`` is a fresh layer; ``FixedSides(mean=1)`` has its mean ratios fixed to the
    second normalizer of the set (LN for ``("in", "ln", "bn")``). The forward on Dask or traced
    JAX arrays returns a free side's new state as a 0-d integer array (the index, ``-1``: still
    free; module docstring), which the next call accepts once computed.
    """

    mean: int | None | Array = None
    var: int | None | Array = None

    def resolved(self) -> FixedSides:
        """This state with every side an ``int`` or ``None``: a computed 0-d integer array read
        as its index, ``-1`` as ``None`` (hashable, e.g. for a static argument of ``jax.jit``).

        ``TypeError`` for a side whose value is not available (a lazy Dask array: compute it
        first; a JAX tracer: return it from the jitted function).
        """
        return FixedSides(*(_fixed_index(side, index) for side, index in zip(self._fields, self, strict=True)))


class SparseSwitchNormOutput(NamedTuple):
    """``y, cache, running, fixed = sparse_switch_norm_forward(...)``."""

    y: Array
    cache: SwitchNormCache
    """SN's cache; its config holds the two ratio functions (:class:`~refnorm.ops.sparsestmax.SparsestMax`
    or :class:`~refnorm.ops.simplex.FixedRatios`) and the mixture holds the ratios and their stages."""
    running: RunningStats | BatchAverage | None
    fixed: FixedSides
    """The new fixed state: the given one plus any side whose ratios reached a vertex in this call."""


def radius_schedule(step: int, total_steps: int) -> float:
    r"""The official SSN radius schedule :math:`r = \text{step} / \text{total\_steps}` (linear from 0).

    The official ``train_imagenet.py`` uses ``step = epoch * T + i`` and
    ``total_steps = epochs * T`` (``T`` iterations per epoch), so :math:`r` runs from 0 to just
    below 1.

    Parameters
    ----------
    step
        The current iteration, ``0 <= step <= total_steps``.
    total_steps
        The number of training iterations, ``>= 1``.
    """
    for name, value in (("step", step), ("total_steps", total_steps)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # a NumPy integer too, as check_int
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must lie in [0, total_steps] = [0, {total_steps}], got {step}")
    return int(step) / int(total_steps)


def one_hot(index: int, K: int) -> tuple[float, ...]:
    """The vertex ``index`` of the simplex with ``K`` entries, as a tuple of floats."""
    return tuple(1.0 if k == index else 0.0 for k in range(K))


def vertex_index(ratios: Array) -> Array:
    """The index of the vertex ``ratios`` (shape ``(K,)``) is, or ``-1``: a 0-d integer array, no host read.

    A vertex is ``max >= 1 - tol``, tol = 32 eps of the dtype: the tolerance is
    :func:`refnorm.ops.sparsestmax.rounding_tolerance`, the one SparsestMax snaps its outputs
    with, so a SparsestMax output is a vertex here exactly when it is exactly one-hot (the official
    test ``max - min >= 1`` misses ``(1 - 2^-52, 2^-52, 0)``). Its index is the argmax.
    """
    xp = namespace(ratios)
    at_vertex = xp.max(ratios) >= 1.0 - rounding_tolerance(xp, ratios.dtype)
    return xp.where(at_vertex, xp.argmax(ratios), -1)


def is_vertex(ratios: Array) -> bool:
    """True when ``ratios`` (shape ``(K,)``) is a vertex (:func:`vertex_index`). One host read: not
    for lazy or traced arrays (the forward uses :func:`vertex_index` there)."""
    return int(vertex_index(ratios)) >= 0


def _fixed_index(side: str, index: Any) -> int | None:
    """A side of the fixed state as an ``int`` or ``None``: ints as given, a computed 0-d integer
    array (or NumPy integer) as its value, ``-1`` from such an array as ``None`` (still free)."""
    if index is None or isinstance(index, bool) or isinstance(index, int):
        return index
    if hasattr(index, "dtype") and hasattr(index, "shape"):
        if tuple(index.shape) != () or not array_api_compat.is_array_api_obj(index) or not namespace(index).isdtype(index.dtype, "integral"):
            raise ValueError(
                f"fixed.{side} is an array of shape {tuple(index.shape)} and dtype {index.dtype}, expected a 0-d integer array "
                "(the new state a forward on lazy or traced arrays returns), an int or None"
            )
        if not values_available(index):
            raise TypeError(
                f"fixed.{side} is a lazy or traced {type(index).__name__}: its value decides which ratio function the side uses, "
                "so it must be known before the call; compute it first (dask.compute(fixed)), or return it from the jitted "
                "function and pass fixed.resolved() as a static argument"
            )
        value = int(index)
        return None if value == -1 else value
    return index


def _check_fixed(fixed: Any, K: int) -> FixedSides:
    if not isinstance(fixed, FixedSides):
        raise TypeError(f"fixed must be a FixedSides, got {type(fixed).__name__}; build one with refnorm.FixedSides(mean=..., var=...)")
    fixed = fixed.resolved()
    for side, index in zip(fixed._fields, fixed, strict=True):
        if index is None:
            continue
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < K:
            raise ValueError(f"fixed.{side} = {index!r}, expected None or a normalizer index in [0, {K})")
    return fixed


def check_sparse_switch_norm_call(
    x: Any,
    gamma: Any,
    beta: Any,
    mean_logits: Any,
    var_logits: Any,
    *,
    radius: Any,
    fixed: Any,
    variant: Any,
    running: Any,
    training: Any,
    normalizers: Any,
    groups: Any,
    convention: Any,
    eps: Any,
    momentum: Any,
    check_finite: bool,
) -> tuple[Layout, SwitchNormConfig]:
    """The one check of an SSN call: SN's (:func:`~refnorm.ops.switchnorm.check_switch_norm_call`),
    then the radius, the variant and the fixed state. Returns the layout and SN's config, whose
    ratio functions are SparsestMax for a free side and the fixed vertex for a fixed one."""
    if momentum is None:
        momentum = preset(check_convention(convention), sparse=True).momentum
    _, layout, layer = check_switch_norm_call(
        x, gamma, beta, mean_logits, var_logits,
        running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=momentum, check_finite=check_finite,
    )  # fmt: skip
    K = len(layer.normalizers)
    learned = SparsestMax(radius, variant)
    fixed = _check_fixed(fixed, K)
    for side, index, logits in (("mean", fixed.mean, mean_logits), ("var", fixed.var, var_logits)):
        if index is None and K < 2:
            raise ValueError(
                f"{side}_logits has shape {tuple(logits.shape)}, expected (..., K) with K >= 2: the {side} ratios come from "
                f"SparsestMax, which needs at least two normalizers (normalizers = {layer.normalizers}); for a single "
                "normalizer use refnorm.plain_norm_forward"
            )
    mean_ratio = learned if fixed.mean is None else FixedRatios(one_hot(fixed.mean, K))
    var_ratio = learned if fixed.var is None else FixedRatios(one_hot(fixed.var, K))
    return layout, SwitchNormConfig(**vars(layer), mean_ratio=mean_ratio, var_ratio=var_ratio)


def _newly_fixed(fixed: FixedSides, mean_ratios: Array, var_ratios: Array) -> FixedSides:
    """``fixed`` plus every free side whose ratios are a vertex (the vertex's index).

    Read on the host where the ratios' values are available; on lazy or traced ratios a free
    side's new state stays in the graph (:func:`vertex_index`, ``-1``: still free).
    """
    sides = {}
    for side, index, ratios in (("mean", fixed.mean, mean_ratios), ("var", fixed.var, var_ratios)):
        if index is not None:
            sides[side] = index
        elif values_available(ratios):
            vertex = int(vertex_index(ratios))
            sides[side] = None if vertex < 0 else vertex
        else:
            sides[side] = vertex_index(ratios)
    return FixedSides(**sides)


def sparse_switch_norm_forward(
    x: Array,
    gamma: Array,
    beta: Array,
    mean_logits: Array,
    var_logits: Array,
    *,
    radius: float,
    fixed: FixedSides = FixedSides(),
    variant: str = "paper",
    running: RunningStats | BatchAverage | None = None,
    training: bool = True,
    normalizers: Sequence[str] | None = None,
    groups: int | None = None,
    convention: str = "paper",
    eps: float = 1e-5,
    momentum: float | None = None,
    check_finite: bool = True,
) -> SparseSwitchNormOutput:
    r"""Sparse Switchable Normalization forward (module docstring; SN's equations with SparsestMax ratios).

    Parameters
    ----------
    x, gamma, beta, mean_logits, var_logits, running, training, normalizers, groups, convention, eps, check_finite
        As in :func:`refnorm.ops.switchnorm.switch_norm_forward`. The official ``SSN2d`` is
        ``normalizers=("in", "ln", "bn")``, ``convention="official"``, logits initialised to ones.
    radius
        SparsestMax radius :math:`r \ge 0` (:func:`radius_schedule`).
    fixed
        The fixed state from the previous call (``FixedSides()`` for a fresh layer).
    variant
        ``"paper"`` or ``"official"`` SparsestMax (:func:`refnorm.ops.sparsestmax.sparsestmax_forward`).
    momentum
        EMA weight of the old running value; default: the SSN preset of the convention
        (:func:`refnorm.ops.conventions.preset` with ``sparse=True``: 0.997 official, 0.9 paper).

    Returns
    -------
    SparseSwitchNormOutput
        ``(y, cache, running, fixed)``; ``fixed`` is the new fixed state.
    """
    layout, config = check_sparse_switch_norm_call(
        x, gamma, beta, mean_logits, var_logits,
        radius=radius, fixed=fixed, variant=variant, running=running, training=training, normalizers=normalizers,
        groups=groups, convention=convention, eps=eps, momentum=momentum, check_finite=check_finite,
    )  # fmt: skip
    y, cache, new_running = switch_norm_stages(
        x, gamma, beta, mean_logits, var_logits, running=running, layout=layout, config=config, check_finite=check_finite
    )
    new_fixed = _newly_fixed(fixed.resolved(), cache.mixture.mean_ratios, cache.mixture.var_ratios)
    return SparseSwitchNormOutput(y, cache, new_running, new_fixed)


def sparse_switch_norm_backward(dy: Array, cache: SwitchNormCache) -> SwitchNormGrads:
    r"""Backward of :func:`sparse_switch_norm_forward`: SN's backward with the SparsestMax VJP.

    :func:`refnorm.ops.switchnorm.switch_norm_backward` runs SN's stage VJPs; the mixture's
    (:func:`refnorm.ops.switchnorm.mix_vjp`) computes
    :math:`\partial L/\partial p_k = \sum_{n,c} A_{nc}\mu^k_{nc}` and
    :math:`\partial L/\partial p'_k = \sum_{n,c} B_{nc}\sigma^{2,k}_{nc}` and hands them to the
    ratio functions in the cache's config: :meth:`SparsestMax.vjp
    <refnorm.ops.sparsestmax.SparsestMax.vjp>` for a free side, zero
    (:meth:`FixedRatios.vjp <refnorm.ops.simplex.FixedRatios.vjp>`) for a fixed side.
    """
    return switch_norm_backward(dy, cache)


def sparse_switch_norm_jvp(tangents: SwitchNormGrads, cache: SwitchNormCache) -> Array:
    r"""JVP of :func:`sparse_switch_norm_forward`: SN's (:func:`refnorm.ops.switchnorm.switch_norm_jvp`)
    with the SparsestMax JVP (:meth:`SparsestMax.jvp <refnorm.ops.sparsestmax.SparsestMax.jvp>`) for a
    free side and zero for a fixed side, on the smooth piece of the point (the recorded stages).

    ``tangents`` is a ``SwitchNormGrads(dx=..., dgamma=..., dbeta=..., dmean_logits=...,
    dvar_logits=...)`` of tangents; returns the tangent of ``y``.
    """
    xp = check_jvp_call(tangents, cache, function="sparse_switch_norm_jvp", forward="sparse_switch_norm_forward")
    return jvp_stages(tangents, cache, xp)


def sparse_switch_norm_hvp(dy: Array, cache: SwitchNormCache, tangents: SwitchNormGrads) -> SwitchNormGrads:
    r"""Second order of :func:`sparse_switch_norm_forward`: the derivative of
    :func:`sparse_switch_norm_backward` ``(dy, ·)`` along ``tangents``, SN's
    (:func:`refnorm.ops.switchnorm.switch_norm_hvp`) with SparsestMax's second derivative
    (:func:`refnorm.ops.sparsestmax.sparsestmax_hvp`) within the smooth piece of the point: at a
    kink (a support or stage count about to change) it is the derivative on the recorded piece.
    """
    xp = check_hvp_call(dy, cache, tangents, function="sparse_switch_norm_hvp", forward="sparse_switch_norm_forward")
    return hvp_stages(dy, cache, tangents, xp)


def sparse_switch_norm_linearize(
    x: Array, gamma: Array, beta: Array, mean_logits: Array, var_logits: Array, *,
    radius: float, fixed: FixedSides = FixedSides(), variant: str = "paper", convention: str = "paper",
    momentum: float | None = None, **config: Any,
) -> Linearized:  # fmt: skip
    """SSN at a point, as :func:`refnorm.gradcheck` consumes it (``config`` as in the forward):
    pullback, pushforward and HVP.

    The active set is the SparsestMax stages of the free sides, so a direction that changes a
    support or a stage count is reported as skipped.
    """
    y, cache, _, _ = sparse_switch_norm_forward(
        x, gamma, beta, mean_logits, var_logits,
        radius=radius, fixed=fixed, variant=variant, convention=convention, momentum=momentum, **config,
    )  # fmt: skip
    return linearization(y, cache)
