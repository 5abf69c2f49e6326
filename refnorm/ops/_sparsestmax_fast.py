"""Speed only: SparsestMax on large NumPy batches of short vectors (the same code, laid out for NumPy).

Nothing here is part of the math. :mod:`refnorm.ops.sparsestmax` is the reference, and the only
algorithm: for a large NumPy batch with a short simplex axis (:func:`applies`), its public
functions run the very same code (``_sparsestmax_stages``, ``_stages_vjp``, ``_stages_jvp``) on a
copy of their input laid out *simplex-axis-major*, with the namespace :class:`SimplexAxisMajor`,
and give the output back in the usual layout (the stage records stay simplex-axis-major, which is
what makes the VJP and JVP fast too). Every value, output, stage record and active set is
the same bit for bit (the sign of a zero aside); ``tests/test_sparsestmax.py`` checks it on many
inputs.

Why it is faster. A batch of 1e5 vectors of ``K = 3`` is, to NumPy, 1e5 tiny rows: a reduction
over the simplex axis, a sort or a cumulative sum runs one short loop per row (about 2 ms each
at 1e5 rows; the forward and backward need some 40). Simplex-axis-major, every ``(..., K)`` array
holds its ``K`` entries of the simplex axis in ``K`` contiguous blocks, one per position (the
shape and the values are those of the usual layout; only the memory order differs). NumPy runs
an operation in memory order, so every reduction along the simplex axis and every broadcast
against a per-vector column becomes a few long vector loops. Sorting and cumulative sums, which
NumPy would still run one vector at a time, are written over the ``K`` positions
(:meth:`SimplexAxisMajor.sort`, :meth:`SimplexAxisMajor.cumulative_sum`), and a selection as
arithmetic (:meth:`SimplexAxisMajor.where`; NumPy's ``where`` branches on every element).
``docs/benchmarks.md`` records what this buys.

Why the values do not change. For ``K <= 7`` (:data:`SHORT_SIMPLEX_AXIS`) the sorted values, sums
and cumulative sums are those of ``xp.sort``, ``xp.sum`` and ``xp.cumulative_sum``: a sort
selects, and NumPy sums fewer than 8 entries left to right, as the loops here do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import array_api_compat

from .._xp import Array

SHORT_SIMPLEX_AXIS = 7
"""The longest simplex axis laid out simplex-axis-major. :meth:`SimplexAxisMajor.sort` makes
``O(K^2)`` whole-batch operations, and NumPy sums 8 or more contiguous entries pairwise, so a
simplex-axis-major sum (left to right) would round differently beyond 7."""

LARGE_BATCH = 256
"""The fewest vectors laid out simplex-axis-major: below, the copies in and out and the longer
sort cost more than they save (one vector of K = 3: ~0.2 ms plain, ~0.35 ms laid out; they break even near 100 to 200 vectors)."""


def applies(x: Array, xp: Any) -> bool:
    """Whether ``x`` (logits, or a cotangent or tangent of SparsestMax) is a large NumPy batch of short vectors.

    Decided from the shape and the library only, so the forward and its VJP and JVP decide alike.
    NumPy only: that is where it was measured.
    """
    K = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    return array_api_compat.is_numpy_namespace(xp) and K <= SHORT_SIMPLEX_AXIS and rows >= LARGE_BATCH


def _simplex_axis_major(entries: list[Array], xp: Any) -> Array:
    """The ``K`` arrays ``entries`` (each of the batch shape) as one ``(..., K)`` array, simplex-axis-major.

    ``xp.stack(entries, axis=0)`` is ``(K, ...)`` with each position contiguous; moving that axis
    last is a view, so the result has the shape and values of ``xp.stack(entries, axis=-1)`` and
    the memory order of the stack. Element-wise operations keep that order.
    """
    stacked = xp.stack(entries, axis=0)
    return xp.permute_dims(stacked, (*range(1, stacked.ndim), 0))


def _positions(v: Array) -> list[Array]:
    """The ``K`` entries of the simplex axis of ``v``, each an array of the batch shape."""
    return [v[..., k] for k in range(v.shape[-1])]


class SimplexAxisMajor:
    """The array namespace ``xp``, with ``sort`` and ``cumulative_sum`` along the simplex axis written as
    whole-batch operations over its ``K`` positions, and ``where`` as arithmetic.

    They return the values of ``xp``'s functions, simplex-axis-major. Only the last axis is
    supported (the only one the SparsestMax code uses them on).
    """

    def __init__(self, xp: Any) -> None:
        self._xp = xp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._xp, name)

    def sort(self, x: Array, /, *, axis: int = -1, descending: bool = False, stable: bool = True) -> Array:
        """Odd-even transposition sort: ``K`` rounds of compare-exchanges of neighbouring positions,
        each a ``maximum`` and a ``minimum`` over the whole batch (they select, they do not round)."""
        _check_last_axis(axis, x, "sort")
        xp, entries = self._xp, _positions(x)
        K = len(entries)
        for round_ in range(K):
            for i in range(round_ % 2, K - 1, 2):
                entries[i], entries[i + 1] = xp.maximum(entries[i], entries[i + 1]), xp.minimum(entries[i], entries[i + 1])
        return _simplex_axis_major(entries if descending else entries[::-1], xp)

    def cumulative_sum(self, x: Array, /, *, axis: int | None = None, dtype: Any = None, include_initial: bool = False) -> Array:
        """``K - 1`` additions, left to right."""
        _check_last_axis(axis, x, "cumulative_sum")
        if dtype is not None or include_initial:
            raise NotImplementedError("SimplexAxisMajor.cumulative_sum takes neither dtype nor include_initial")
        partial = _positions(x)
        for k in range(1, len(partial)):
            partial[k] = partial[k - 1] + partial[k]
        return _simplex_axis_major(partial, self._xp)

    def where(self, condition: Array, x1: Array | float, x2: Array | float, /) -> Array:
        """``m x1 + (1 - m) x2`` with ``m = 0`` or ``1``: the selected value exactly, for finite ``x1`` and ``x2``.

        The term not selected is a zero, so only the sign of a zero can differ from ``xp.where``.
        NumPy's ``where`` branches on every element (about 20 times the cost of a multiplication
        on a batch of random rows); every value the SparsestMax code selects is finite.
        """
        xp = self._xp
        dtype = x1.dtype if hasattr(x1, "dtype") else x2.dtype
        if isinstance(x2, float) and x2 == 0.0:  # most selections keep a value or zero
            return x1 * xp.astype(condition, dtype)
        if isinstance(x1, float) and x1 == 0.0:
            return x2 * xp.astype(~condition, dtype)
        return x1 * xp.astype(condition, dtype) + x2 * xp.astype(~condition, dtype)


def _check_last_axis(axis: int | None, x: Array, function: str) -> None:
    if axis not in (-1, x.ndim - 1):
        raise NotImplementedError(f"SimplexAxisMajor.{function} works along the last axis only, got axis={axis}")


def to_simplex_axis_major(x: Array, xp: Any) -> Array:
    """``x`` with its values and shape, laid out simplex-axis-major (one copy)."""
    return _simplex_axis_major(_positions(x), xp)


def to_simplex_axis_last(x: Array, xp: Any) -> Array:
    """``x`` with its values and shape in the usual (C) layout: what the public functions return."""
    return xp.stack(_positions(x), axis=-1)


def run(function: Callable[..., Any], x: Array, *args: Any, xp: Any) -> Any:
    """``function(x, *args, xp)`` with ``x`` laid out simplex-axis-major and the namespace
    :class:`SimplexAxisMajor`; the first result (or the only one) comes back in the usual layout."""
    result = function(to_simplex_axis_major(x, xp), *args, SimplexAxisMajor(xp))
    if isinstance(result, tuple):
        return (to_simplex_axis_last(result[0], xp), *result[1:])
    return to_simplex_axis_last(result, xp)
