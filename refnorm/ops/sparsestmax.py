r"""Sparsemax and SparsestMax: forward, stage-composed VJP and JVP (SPEC §3; spec-notes §3.2–3.7).

Both maps act on the last axis ("the simplex axis", size ``K >= 2``) and accept any number of
leading batch axes. They are written with sort, cumulative sum and masks only: no boolean
indexing, no data-dependent shapes and no loop over vectors. ``docs/sparsestmax.md`` derives
everything below with the same symbols.

**Sparsemax** (Martins & Astudillo, 2016) is the Euclidean projection onto the simplex
:math:`\Delta^{K-1}`: with :math:`z_{(1)} \ge \dots \ge z_{(K)}` sorted,

.. math::

    k = \max\{j : 1 + j z_{(j)} > \textstyle\sum_{l \le j} z_{(l)}\}, \qquad
    \tau = \frac{\sum_{l \le k} z_{(l)} - 1}{k}, \qquad
    \mathrm{sparsemax}(z) = \max(z - \tau, 0).

**SparsestMax** (Shao et al., CVPR 2019) with radius :math:`r` solves

.. math::

    \mathrm{SparsestMax}(z; r) = \arg\min_{p \in \Delta^{K-1},\ \|p - u_0\| \ge r} \|p - z\|^2,
    \qquad u_0 = \mathbf 1 / K,

by alternating sphere steps and sparsemax stages. :math:`u_S = \mathbf 1_S / |S|` is the centre of
the face spanned by a support :math:`S`.

1. :math:`w = \mathrm{sparsemax}(z)`, support :math:`S_0`. The first sphere lies in the face
   :math:`F_0` with centre :math:`u_{F_0}`: :math:`F_0 = \{1..K\}` (``variant="paper"``, the
   centre is :math:`u_0`) or :math:`F_0 = S_0` (``variant="official"``, the official
   ``utils/ssn_utils.py``). If :math:`\|w - u_{F_0}\| \ge r` the output is :math:`w`.
2. Sphere step about centre :math:`u` with radius :math:`\rho` (first :math:`u = u_{F_0}`,
   :math:`\rho = r`): :math:`n = \|w - u\|`, :math:`d = (w - u)/n`, :math:`p = u + \rho d`. If
   :math:`p \ge 0` the output is :math:`p`.
3. Otherwise :math:`w = \mathrm{sparsemax}(p)` with a strictly smaller support :math:`S` (the
   entries of :math:`p` that are :math:`\le 0` leave it); the next sphere lies in the face of
   :math:`S`, centre :math:`u_S`, Pythagorean radius
   :math:`\rho = \sqrt{r^2 - \|u_S - u_{F_0}\|^2} = \sqrt{r^2 - (1/|S| - 1/|F_0|)}`; go to 2.
   A support of size 1 is a vertex: the output is that vertex.

Each sparsemax stage after a sphere step shrinks the support by at least one, so there are at
most ``K - 1`` sphere steps and ``K`` sparsemax stages; the loop below runs exactly ``K - 1``
masked iterations over the whole batch.

The ``"paper"`` variant returns the minimiser of the stated problem (the output is
:math:`\mathrm{sparsemax}(\beta z)` for the smallest :math:`\beta \ge 1` whose distance from
:math:`u_0` reaches :math:`r`; see the docs). The ``"official"`` variant's first sphere is about
:math:`u_{S_0}` with the full radius, a stronger constraint whenever :math:`S_0` is not the whole
set: its outputs are feasible but not the minimiser (spec-notes §3.3).

**Defined edge behaviour** (spec-notes §3.7), with tolerances relative to unit-size ratios:

* ``radius >= sqrt((K - 1) / K)`` (the largest distance of a simplex point from :math:`u_0`):
  the output is the vertex at :math:`\arg\max z` (first index among ties), with no stages.
* Distance zero: when :math:`n \le` :data:`ROUNDING_TOLERANCE` ``* eps`` (the sphere centre
  coincides with :math:`w`, which happens only for tied logits), the direction is undefined; the
  output is :math:`w`, the current sparsemax stage (no NaN), and ``degenerate`` is set. For exact
  ties every point of the sphere is a minimiser; :math:`w` is the symmetric, index-independent
  choice and keeps a non-zero gradient, so training can move the logits apart.
* An output within :data:`ROUNDING_TOLERANCE` ``* eps`` of a vertex
  (:math:`\max p \ge 1 - \text{tol}`) snaps to that vertex, so one-hot outputs are exactly
  one-hot (and have Jacobian zero). At radius 0 this is the only difference from sparsemax.
* Logits are shifted by their maximum first (sparsemax is translation invariant), so a vertex from
  sparsemax is exactly one-hot and huge logits lose no precision in the threshold.

**Layout and speed.** The batch is processed simplex-axis-major: every ``(..., K)`` array holds its
``K`` entries of the simplex axis in ``K`` contiguous blocks, one per position (the values and
shapes are those of the usual layout; only the memory order differs, see
``_simplex_axis_major``). NumPy and CuPy run an operation in memory order, so over a batch of
short vectors every reduction along the simplex axis and every broadcast against a per-vector
column is then a few long vector loops instead of one short loop per vector (20 to 40 times
faster for ``K = 3``). Sorting, cumulative sums and the arg-max, which NumPy still runs one
vector at a time, are written over the ``K`` positions instead (``_sorted_descending``,
``_cumulative_sum``, ``_one_hot_at_max``), and a row selection between finite values is
the arithmetic ``_where_rows`` (NumPy's ``where`` costs as much as ten arithmetic
operations). For ``K <= 7`` none of this changes a value: the sorted values, sums and cumulative
sums are those of ``xp.sort``, ``xp.sum`` and ``xp.cumulative_sum`` (NumPy sums fewer than 8
entries left to right), so every output, stage record and active set is the same bit for bit
(the sign of a zero aside). Longer simplex axes keep the usual layout (:data:`SHORT_SIMPLEX_AXIS`).

**Backward.** Each stage has a symmetric Jacobian: sparsemax
:math:`\operatorname{diag}(s) - s s^\top / |S|`, sphere step :math:`(\rho/n)(I - d d^\top)`. The VJP
applies the recorded stages' Jacobians in reverse order, the JVP in forward order. Vertices have
Jacobian exactly zero; so has a sphere step inside a face of two elements (an edge, where the
sphere is two points), which is computed as an exact zero rather than as rounding residue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._validation import check_choice, check_finite, check_floating, check_nonnegative_number
from .._xp import Array, device, full_like_on, namespace
from .linearized import Linearized

VARIANTS = ("paper", "official")
"""Names accepted by every ``variant=`` argument (default ``"paper"``)."""

ROUNDING_TOLERANCE = 32
"""Multiple of the dtype's machine epsilon under which a distance counts as zero and an output
counts as a vertex. Ratio entries lie in [0, 1] after the max-shift, so each carries a rounding
error of a few eps; 32 eps leaves a margin for ``K`` up to ~30 (7.1e-15 in float64, 3.8e-6 in
float32)."""


def max_radius(K: int) -> float:
    r"""The largest distance of a point of :math:`\Delta^{K-1}` from its centre: :math:`\sqrt{(K-1)/K}`."""
    return math.sqrt((K - 1) / K)


def rounding_tolerance(xp: Any, dtype: Any) -> float:
    """:data:`ROUNDING_TOLERANCE` times the machine epsilon of ``dtype``."""
    return ROUNDING_TOLERANCE * float(xp.finfo(dtype).eps)


# --------------------------------------------------------------------------------------------
# The simplex axis: layout, sorting, cumulative sums and row selection (module docstring)
# --------------------------------------------------------------------------------------------

SHORT_SIMPLEX_AXIS = 7
"""Up to this ``K`` the batch is processed simplex-axis-major, with sorting and cumulative sums
written over the ``K`` positions (``_sorted_descending`` takes ``O(K^2)`` whole-batch
operations). Longer simplex axes keep the usual layout, ``xp.sort`` and ``xp.cumulative_sum``:
their per-vector cost no longer dominates, and NumPy sums 8 or more contiguous entries pairwise,
so a simplex-axis-major sum (left to right) would round differently there. Below 8 both orders
are left to right and every value is the same bit for bit."""


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


def _to_simplex_axis_major(v: Array, xp: Any) -> Array:
    """``v`` with its values and shape, laid out simplex-axis-major (one copy; ``v`` itself for a long axis)."""
    if v.shape[-1] > SHORT_SIMPLEX_AXIS:
        return v
    return _simplex_axis_major(_positions(v), xp)


def _to_simplex_axis_last(v: Array, xp: Any) -> Array:
    """``v`` with its values and shape in the usual (C) layout: what the public functions return."""
    if v.shape[-1] > SHORT_SIMPLEX_AXIS:
        return v
    return xp.stack(_positions(v), axis=-1)


def _sorted_descending(z: Array, xp: Any) -> Array:
    """``z`` sorted along the simplex axis, largest first: the values of ``xp.sort(z, descending=True)``.

    For a short simplex axis, an odd-even transposition sort: ``K`` rounds of compare-exchanges of
    neighbouring positions, each a ``maximum`` and a ``minimum`` over the whole batch (they select,
    they do not round). NumPy's sort makes one call per vector, ten times slower for ``K = 3``.
    """
    K = z.shape[-1]
    if K > SHORT_SIMPLEX_AXIS:
        return xp.sort(z, axis=-1, descending=True)
    entries = _positions(z)
    for round_ in range(K):
        for i in range(round_ % 2, K - 1, 2):
            entries[i], entries[i + 1] = xp.maximum(entries[i], entries[i + 1]), xp.minimum(entries[i], entries[i + 1])
    return _simplex_axis_major(entries, xp)


def _cumulative_sum(v: Array, xp: Any) -> Array:
    """Cumulative sum along the simplex axis, left to right (the values of ``xp.cumulative_sum``)."""
    if v.shape[-1] > SHORT_SIMPLEX_AXIS:
        return xp.cumulative_sum(v, axis=-1)
    partial = _positions(v)
    for k in range(1, len(partial)):
        partial[k] = partial[k - 1] + partial[k]
    return _simplex_axis_major(partial, xp)


def _where_rows(condition: Array, x1: Array, x2: Array, xp: Any) -> Array:
    """``xp.where(condition, x1, x2)`` for finite ``x1``, ``x2``: ``m x1 + (1 - m) x2`` with ``m = 0`` or ``1``.

    The term that is not selected is a zero, so the result is the selected value exactly (at
    most the sign of a zero differs). Every value SparsestMax selects is finite.
    """
    m = xp.astype(condition, x1.dtype)
    return m * x1 + (1.0 - m) * x2


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_logits(xp: Any, logits: Array, name: str = "logits") -> int:
    """Validate a logit array (floating, simplex axis last with K >= 2, finite); return K."""
    check_floating(xp, logits, name)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"{name} has shape {tuple(logits.shape)}, expected (..., K) with K >= 2 entries on the last (simplex) axis"
        )
    check_finite(xp, logits, name)
    return int(logits.shape[-1])


def _check_radius_and_variant(radius: Any, variant: Any) -> tuple[float, str]:
    return check_nonnegative_number(radius, "radius"), check_choice(variant, "variant", VARIANTS)


# --------------------------------------------------------------------------------------------
# Sparsemax
# --------------------------------------------------------------------------------------------


def _sparsemax_threshold(z: Array, xp: Any) -> tuple[Array, Array]:
    """``(largest, tau)``, both ``(..., 1)``: the largest entry of ``z`` and the sparsemax threshold of ``z - largest``."""
    K = z.shape[-1]
    ordered = _sorted_descending(z, xp)
    # Translation invariance: shift so that the top entry is exactly 0.
    largest = ordered[..., :1]
    ordered = ordered - largest
    cumulative = _cumulative_sum(ordered, xp)
    j = xp.arange(1, K + 1, dtype=z.dtype, device=device(z))
    ranks = j * xp.astype(1.0 + j * ordered > cumulative, z.dtype)  # j where the condition holds, else 0
    k = xp.max(ranks, axis=-1, keepdims=True)
    # The sum of the k largest entries is the cumulative sum at position k (a masked sum, no gather).
    top_k_sum = xp.sum(cumulative * xp.astype(ranks == k, z.dtype), axis=-1, keepdims=True)
    return largest, (top_k_sum - 1.0) / k


def _sparsemax_parts(z: Array, xp: Any) -> tuple[Array, Array, Array]:
    """Sparsemax of ``z`` over the last axis: ``(w, support, size)``.

    ``support`` is the 0/1 indicator of ``w > 0`` in ``z``'s dtype and ``size`` its count, shape
    ``(..., 1)``. No validation. Fast when ``z`` is simplex-axis-major (the results are too).
    """
    largest, tau = _sparsemax_threshold(z, xp)
    shifted = z - largest
    support = xp.astype(shifted > tau, z.dtype)
    # max(z - tau, 0) with entries AT the threshold outside the support (gradient 0 there, the
    # convention of the module docstring), so autodiff of this forward agrees with the VJP.
    w = xp.where(shifted > tau, shifted - tau, xp.zeros_like(shifted))
    return w, support, xp.sum(support, axis=-1, keepdims=True)


def sparsemax(logits: Array) -> Array:
    r"""Sparsemax over the last axis: the Euclidean projection of ``logits`` onto the simplex.

    Parameters
    ----------
    logits
        ``(..., K)``, ``K >= 2``, float32 or float64, finite.

    Returns
    -------
    Array
        ``max(z - tau, 0)`` with the threshold of the module docstring; same shape and dtype.
    """
    xp = namespace(logits)
    _check_logits(xp, logits)
    w = _sparsemax_parts(_to_simplex_axis_major(logits, xp), xp)[0]
    return _to_simplex_axis_last(w, xp)


def _sparsemax_stage_vjp(g: Array, support: Array, size: Array, xp: Any) -> Array:
    r""":math:`(\operatorname{diag}(s) - s s^\top/|S|)\, g = s \odot (g - \frac{1}{|S|}\sum_{j \in S} g_j)` (symmetric)."""
    support_mean = xp.sum(support * g, axis=-1, keepdims=True) / xp.maximum(size, xp.ones_like(size))
    return support * (g - support_mean)


def sparsemax_vjp(dratios: Array, ratios: Array) -> Array:
    r"""VJP of :func:`sparsemax`, from its output: :math:`s \odot (g - \frac{1}{|S|}\sum_{j\in S} g_j)`, :math:`s = [w > 0]`.

    The Jacobian :math:`\operatorname{diag}(s) - s s^\top/|S|` is symmetric, so this is also the JVP.
    """
    xp = namespace(dratios, ratios)
    support = xp.astype(ratios > 0, ratios.dtype)
    return _sparsemax_stage_vjp(dratios, support, xp.sum(support, axis=-1, keepdims=True), xp)


def sparsemax_jvp(dlogits: Array, ratios: Array) -> Array:
    r"""JVP of :func:`sparsemax` (its Jacobian is symmetric: the same formula as :func:`sparsemax_vjp`)."""
    return sparsemax_vjp(dlogits, ratios)


def sparsemax_linearize(logits: Array) -> Linearized:
    """Sparsemax at a point, for :func:`refnorm.gradcheck`; the active set is the support."""
    xp = namespace(logits)
    ratios = sparsemax(logits)
    return Linearized(
        out=ratios,
        pullback=lambda dratios: (sparsemax_vjp(dratios, ratios),),
        pushforward=lambda dlogits: sparsemax_jvp(dlogits, ratios),
        active_set=xp.astype(ratios > 0, ratios.dtype),
    )


# --------------------------------------------------------------------------------------------
# SparsestMax: the recorded stages
# --------------------------------------------------------------------------------------------


class SparsemaxStage(NamedTuple):
    r"""A sparsemax stage :math:`w = \mathrm{sparsemax}(\cdot)`, on the rows where ``applied``.

    Arrays are zero on the other rows.
    """

    applied: Array
    """``(..., 1)`` bool: the row went through this stage."""
    support: Array
    """``(..., K)``: the indicator :math:`s` of the support :math:`S = \\{w > 0\\}`."""
    size: Array
    """``(..., 1)``: :math:`|S|`."""

    def vjp(self, g: Array, xp: Any) -> Array:
        r""":math:`J^\top g` with :math:`J = \operatorname{diag}(s) - s s^\top / |S|`."""
        return _sparsemax_stage_vjp(g, self.support, self.size, xp)

    def jvp(self, t: Array, xp: Any) -> Array:
        """:math:`J t` (:math:`J` is symmetric)."""
        return self.vjp(t, xp)


class SphereStage(NamedTuple):
    r"""A sphere step :math:`p = u + \rho d`, :math:`d = (w - u)/n`, :math:`n = \|w - u\|`, on the rows where ``applied``.

    Arrays are zero on the other rows.
    """

    applied: Array
    """``(..., 1)`` bool: the row went through this stage."""
    centre: Array
    """``(..., K)``: :math:`u = u_F`, the centre of the face :math:`F` the sphere lies in."""
    face_size: Array
    """``(..., 1)``: :math:`|F|`."""
    radius: Array
    r"""``(..., 1)``: :math:`\rho`."""
    distance: Array
    """``(..., 1)``: :math:`n = \\|w - u\\| > 0`."""
    direction: Array
    """``(..., K)``: the unit vector :math:`d`."""

    def vjp(self, g: Array, xp: Any) -> Array:
        r""":math:`J^\top g = \frac{\rho}{n}(g - d\,\langle d, g\rangle)`; exactly 0 when :math:`|F| = 2`.

        The stage's input always lies in the face :math:`F`; when :math:`|F| = 2` the sphere inside
        that face is two points, so the derivative along the face is zero (rounding would leave
        residue of order eps instead).
        """
        # distance > 0 where the stage applies; the other rows (radius 0, distance 0) get scale 0.
        scale = self.radius / _where_rows(self.applied, self.distance, xp.ones_like(self.distance), xp)
        v = scale * (g - self.direction * xp.sum(self.direction * g, axis=-1, keepdims=True))
        return v * xp.astype(self.face_size > 2.0, v.dtype)

    def jvp(self, t: Array, xp: Any) -> Array:
        """:math:`J t` (:math:`J` is symmetric)."""
        return self.vjp(t, xp)


class SparsestMaxStages(NamedTuple):
    """What :func:`sparsestmax_forward` records: the stages in forward order and the final state.

    ``stages`` alternates ``SparsemaxStage, SphereStage, SparsemaxStage, ...`` (``2K - 1`` entries;
    none when the radius is at least :func:`max_radius`). Every array field can be dumped
    (:meth:`arrays`).
    """

    stages: tuple[SparsemaxStage | SphereStage, ...]
    vertex: Array
    """``(..., K)``: the output where it is a vertex of the simplex (Jacobian 0), zeros elsewhere."""
    degenerate: Array
    """``(..., 1)`` bool: stopped at distance zero from a sphere centre (tied logits); the output
    is the last sparsemax stage."""
    radius: float
    variant: str

    def at_vertex(self) -> Array:
        """``(..., 1)`` bool: the output is a vertex."""
        return namespace(self.vertex).sum(self.vertex, axis=-1, keepdims=True) > 0.0

    def sphere_steps(self) -> Array:
        """``(...,)`` int: how many sphere steps each row took (0 to ``K - 1``)."""
        xp = namespace(self.vertex)
        steps = [xp.astype(stage.applied[..., 0], xp.int64) for stage in self.stages if isinstance(stage, SphereStage)]
        if not steps:
            return xp.zeros(self.vertex.shape[:-1], dtype=xp.int64, device=device(self.vertex))
        return sum(steps[1:], steps[0])

    def active_set(self) -> tuple[Any, ...]:
        """The smooth piece a point lies on (for the gradient checker's kink guard).

        Every sparsemax stage's support, every sphere step's applied flag, the vertex and the
        degenerate flag; and, for a sphere inside an edge, which of its two points the step takes
        (the sign of the direction): along a line of logits, the offset from the edge midpoint
        changes sign generically, and the output jumps between the two points while every support
        stays the same.
        """
        xp = namespace(self.vertex)
        pieces = []
        for stage in self.stages:
            if isinstance(stage, SparsemaxStage):
                pieces.append(stage.support)
            else:
                edge_side = xp.where(stage.face_size == 2.0, xp.sign(stage.direction), xp.zeros_like(stage.direction))
                pieces.append((xp.astype(stage.applied, self.vertex.dtype), edge_side))
        return (tuple(pieces), self.vertex, xp.astype(self.degenerate, self.vertex.dtype))

    def arrays(self) -> dict[str, Array]:
        """Every recorded array by name (``stage0_sparsemax_support``, ``stage1_sphere_radius``, ...)."""
        named: dict[str, Array] = {}
        for index, stage in enumerate(self.stages):
            kind = "sparsemax" if isinstance(stage, SparsemaxStage) else "sphere"
            for field, value in zip(stage._fields, stage, strict=True):
                named[f"stage{index}_{kind}_{field}"] = value
        named.update(vertex=self.vertex, degenerate=self.degenerate, sphere_steps=self.sphere_steps())
        return named


# --------------------------------------------------------------------------------------------
# SparsestMax: forward
# --------------------------------------------------------------------------------------------


def _norm(v: Array, xp: Any) -> Array:
    """Euclidean norm over the last axis (keepdims), 0 for a zero row.

    The square root is taken of a positive stand-in where the row is zero ("double where": 1 is
    added there, and the result multiplied by 0), so autodiff of this forward (torch, JAX) gets a
    zero instead of ``0 * inf = NaN`` in the rows a later mask discards. refnorm's own backward
    does not differentiate through it.
    """
    squared = xp.sum(v * v, axis=-1, keepdims=True)
    positive = xp.astype(squared > 0.0, v.dtype)
    return xp.sqrt(squared + (1.0 - positive)) * positive


def _offset_in_face(w: Array, face: Array, face_size: Array, xp: Any) -> Array:
    """:math:`w - u_F`, projected onto the directions of the face :math:`F` (indicator ``face``).

    In exact arithmetic the projection does nothing (``w`` lies in :math:`F` and sums to 1). It
    removes the rounding of ``sum(w) - 1``, which the sphere step divides by :math:`n`: near tied
    logits (:math:`n` ~ 1e-4) it would otherwise move the output 1e-12 off the simplex.
    """
    offset = w - face / face_size
    return offset - face * (xp.sum(offset, axis=-1, keepdims=True) / face_size)


def _one_hot_at_max(v: Array, xp: Any) -> Array:
    """The vertex at ``argmax(v)`` (the first index among ties), shape and dtype of ``v``.

    The first maximum is where the running count of maxima reaches 1 (no ``argmax``, which NumPy
    runs one vector at a time).
    """
    is_max = xp.astype(v == xp.max(v, axis=-1, keepdims=True), v.dtype)
    return is_max * xp.astype(_cumulative_sum(is_max, xp) == 1.0, v.dtype)


def _zero_rows(applied: Array, value: Array, xp: Any) -> Array:
    """``value`` on the rows where ``applied``, 0 elsewhere (``value`` is finite)."""
    return value * xp.astype(applied, value.dtype)


def sparsestmax_forward(logits: Array, radius: float, *, variant: str = "paper") -> tuple[Array, SparsestMaxStages]:
    r"""SparsestMax over the last axis, with the recorded stages its VJP and JVP need.

    Parameters
    ----------
    logits
        ``(..., K)``, ``K >= 2``, float32 or float64, finite.
    radius
        :math:`r \ge 0`, a Python number. ``0`` gives sparsemax; ``r >= sqrt((K-1)/K)`` one-hot.
    variant
        ``"paper"`` (default): the minimiser of :math:`\|p - z\|` over simplex points with
        :math:`\|p - u_0\| \ge r`. ``"official"``: the official SSN algorithm, whose first sphere
        is about the centre of the sparsemax support (module docstring).

    Returns
    -------
    ratios, stages
        The output (same shape and dtype as ``logits``) and a :class:`SparsestMaxStages`.
    """
    xp = namespace(logits)
    K = _check_logits(xp, logits)
    radius, variant = _check_radius_and_variant(radius, variant)
    column = tuple(logits.shape[:-1]) + (1,)
    no_rows = xp.zeros(column, dtype=xp.bool, device=device(logits))
    if radius >= max_radius(K):
        vertex = _one_hot_at_max(_to_simplex_axis_major(logits, xp), xp)
        return _to_simplex_axis_last(vertex, xp), SparsestMaxStages((), vertex, no_rows, radius, variant)

    tolerance = rounding_tolerance(xp, logits.dtype)
    # Every array from here on is simplex-axis-major (memory layout only; module docstring).
    w, support, size = _sparsemax_parts(_to_simplex_axis_major(logits, xp), xp)
    stages: list[SparsemaxStage | SphereStage] = [SparsemaxStage(~no_rows, support, size)]
    # The face of the first sphere: the whole simplex (paper, centre u0) or the support (official).
    face = xp.ones_like(support) if variant == "paper" else support
    first_face_size = xp.sum(face, axis=-1, keepdims=True)
    face_size = first_face_size
    rho = full_like_on(logits, column, radius, xp)
    offset = _offset_in_face(w, face, face_size, xp)
    distance = _norm(offset, xp)

    out = w
    inside_ball = (size > 1.0) & (distance < rho)
    degenerate = inside_ball & (distance <= tolerance)
    running = inside_ball & (distance > tolerance)
    # Every iteration computes on all rows and keeps the results of the running ones: a row that
    # stops running has its output in `out` and never reads its sphere state again.
    for _ in range(K - 1):
        p, sphere = _sphere_step(running, face, face_size, rho, offset, distance, tolerance, xp)
        stages.append(sphere)
        on_simplex = xp.min(p, axis=-1, keepdims=True) >= 0.0
        out = _where_rows(running & on_simplex, p, out, xp)
        running = running & ~on_simplex

        w, support, size = _back_onto_simplex(p, xp)
        stages.append(SparsemaxStage(running, _zero_rows(running, support, xp), _zero_rows(running, size, xp)))
        out = _where_rows(running, w, out, xp)
        # The next sphere lies in the face of the new support, with the Pythagorean radius.
        face, face_size = support, size
        pythagorean = radius**2 - (1.0 / size - 1.0 / first_face_size)
        rho = xp.sqrt(xp.clip(pythagorean, min=0.0))
        offset = _offset_in_face(w, support, size, xp)
        distance = _norm(offset, xp)
        del p, w, support  # free them before the next step allocates: fresh memory costs page faults

        reached_vertex = running & (size == 1.0)
        degenerate = degenerate | (running & ~reached_vertex & (distance <= tolerance))
        running = running & ~reached_vertex & (distance > tolerance)

    # Outputs within rounding of a vertex are that vertex (exactly one-hot, Jacobian zero).
    at_vertex = xp.max(out, axis=-1, keepdims=True) >= 1.0 - tolerance
    vertex = _zero_rows(at_vertex, _one_hot_at_max(out, xp), xp)
    out = _where_rows(at_vertex, vertex, out, xp)
    return _to_simplex_axis_last(out, xp), SparsestMaxStages(tuple(stages), vertex, degenerate, radius, variant)


def _sphere_step(
    running: Array, face: Array, face_size: Array, rho: Array, offset: Array, distance: Array, tolerance: float, xp: Any
) -> tuple[Array, SphereStage]:
    """:math:`p = u_F + \\rho\\, d` with :math:`d = (w - u_F)/n`, and its record (zero on the rows not running).

    The running rows have ``distance > tolerance``; the floor only keeps the other rows finite.
    """
    centre = face / face_size
    direction = _zero_rows(running, offset / xp.clip(distance, min=tolerance), xp)
    p = centre + rho * direction
    record = SphereStage(
        running,
        _zero_rows(running, centre, xp),
        _zero_rows(running, face_size, xp),
        _zero_rows(running, rho, xp),
        _zero_rows(running, distance, xp),
        direction,
    )
    return p, record


def _back_onto_simplex(p: Array, xp: Any) -> tuple[Array, Array, Array]:
    """``sparsemax`` of a sphere point ``p`` whose entries ``<= 0`` must leave the support.

    Exactly, sparsemax(p) has a threshold > 0 (p sums to 1 and has a negative entry), so entries
    <= 0 leave the support; replacing them by -2 (below any threshold, which is > max(p) - 1 > -1)
    makes that hold under rounding too, so the support shrinks at every stage and K - 1
    iterations always suffice.
    """
    positive = xp.astype(p > 0.0, p.dtype)
    return _sparsemax_parts(p * positive - 2.0 * (1.0 - positive), xp)  # where(p > 0, p, -2)


def sparsestmax(logits: Array, radius: float, *, variant: str = "paper") -> Array:
    """SparsestMax over the last axis (:func:`sparsestmax_forward` without the stages)."""
    return sparsestmax_forward(logits, radius, variant=variant)[0]


# --------------------------------------------------------------------------------------------
# SparsestMax: backward and forward-mode derivatives
# --------------------------------------------------------------------------------------------


def sparsestmax_vjp(dratios: Array, stages: SparsestMaxStages) -> Array:
    r"""VJP of :func:`sparsestmax_forward`: the recorded stages' Jacobians, last stage first.

    .. math::

        \frac{\partial L}{\partial z} = J_{\mathrm{smax},0}^\top J_{\mathrm{sph},0}^\top
        J_{\mathrm{smax},1}^\top \cdots\, g, \qquad
        J_{\mathrm{smax}} = \operatorname{diag}(s) - \frac{s s^\top}{|S|}, \quad
        J_{\mathrm{sph}} = \frac{\rho}{n}(I - d d^\top),

    each stage applied only on the rows that went through it (the others pass ``g`` unchanged);
    zero where the output is a vertex. ``dratios`` must be finite, as every gradient refnorm
    computes is (the rows are selected arithmetically: an infinity would turn into NaN).
    """
    xp = namespace(dratios, stages.vertex)
    g = _zero_rows(~stages.at_vertex(), _to_simplex_axis_major(dratios, xp), xp)
    for stage in reversed(stages.stages):
        g = _applied_on_rows(stage, stage.vjp(g, xp), g, xp)
    return _to_simplex_axis_last(g, xp)


def sparsestmax_jvp(dlogits: Array, stages: SparsestMaxStages) -> Array:
    r"""JVP of :func:`sparsestmax_forward`: the same stage Jacobians (all symmetric), first stage first."""
    xp = namespace(dlogits, stages.vertex)
    t = _to_simplex_axis_major(dlogits, xp)
    for stage in stages.stages:
        t = _applied_on_rows(stage, stage.jvp(t, xp), t, xp)
    return _to_simplex_axis_last(_zero_rows(~stages.at_vertex(), t, xp), xp)


def _applied_on_rows(stage: SparsemaxStage | SphereStage, applied: Array, passed: Array, xp: Any) -> Array:
    """``applied`` (the stage's Jacobian times the input) on the rows the stage applies to, ``passed`` elsewhere.

    A stage's record is zero on the other rows, and so is its Jacobian there (zero support, zero
    radius): adding ``passed`` on those rows only is ``where(stage.applied, applied, passed)``, exactly.
    """
    return applied + xp.astype(~stage.applied, passed.dtype) * passed


def sparsestmax_linearize(logits: Array, *, radius: float, variant: str = "paper") -> Linearized:
    """SparsestMax at a point, for :func:`refnorm.gradcheck` (pullback, pushforward, stages as active set)."""
    ratios, stages = sparsestmax_forward(logits, radius, variant=variant)
    return Linearized(
        out=ratios,
        pullback=lambda dratios: (sparsestmax_vjp(dratios, stages),),
        pushforward=lambda dlogits: sparsestmax_jvp(dlogits, stages),
        active_set=stages.active_set(),
    )


@dataclass(frozen=True)
class SparsestMax:
    """The ratio function of Sparse Switchable Normalization (see :class:`refnorm.ops.simplex.RatioFunction`).

    Parameters
    ----------
    radius
        :math:`r \\ge 0` (a Python number; :func:`refnorm.ops.sparse_switchnorm.radius_schedule` gives
        the official schedule).
    variant
        ``"paper"`` or ``"official"`` (:func:`sparsestmax_forward`).
    """

    radius: float
    variant: str = "paper"

    def __post_init__(self) -> None:
        radius, variant = _check_radius_and_variant(self.radius, self.variant)
        object.__setattr__(self, "radius", radius)

    def forward(self, logits: Array) -> tuple[Array, SparsestMaxStages]:
        return sparsestmax_forward(logits, self.radius, variant=self.variant)

    def vjp(self, dratios: Array, ratios: Array, aux: SparsestMaxStages) -> Array:
        return sparsestmax_vjp(dratios, aux)

    def jvp(self, dlogits: Array, ratios: Array, aux: SparsestMaxStages) -> Array:
        return sparsestmax_jvp(dlogits, aux)

    def active_set(self, aux: SparsestMaxStages) -> tuple[Any, ...]:
        return aux.active_set()
