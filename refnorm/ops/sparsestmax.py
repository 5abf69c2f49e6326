r"""Sparsemax and SparsestMax: forward, stage-composed VJP and JVP (SPEC §3; spec-notes §3.2–3.7).

Both maps act on the last axis ("the simplex axis", size ``K >= 2``) and accept any number of
leading batch axes. They are written with sort, cumulative sum and masks only: no boolean
indexing, no data-dependent shapes and no loop over vectors. ``docs/sparsestmax.md`` derives
everything below with the same symbols and function names.

**Sparsemax** (Martins & Astudillo, 2016) is the Euclidean projection onto the simplex
:math:`\Delta^{K-1}`: with :math:`z_{(1)} \ge \dots \ge z_{(K)}` sorted,

.. math::

    k = \max\{j : 1 + j z_{(j)} > \textstyle\sum_{l \le j} z_{(l)}\}, \qquad
    \tau = \frac{\sum_{l \le k} z_{(l)} - 1}{k}, \qquad
    \mathrm{sparsemax}(z) = \max(z - \tau, 0).

``_sparsemax_stage`` computes it after shifting the logits by their maximum (sparsemax is
translation invariant), so that any finite logits, up to ``±finfo.max``, give the exact result and
every intermediate stays finite (``_shift_by_max``).

**SparsestMax** (Shao et al., CVPR 2019) with radius :math:`r` solves

.. math::

    \mathrm{SparsestMax}(z; r) = \arg\min_{p \in \Delta^{K-1},\ \|p - u_0\| \ge r} \|p - z\|^2,
    \qquad u_0 = \mathbf 1 / K,

by alternating sphere steps and sparsemax stages (:func:`sparsestmax_forward`).
:math:`u_S = \mathbf 1_S / |S|` is the centre of the face spanned by a support :math:`S`.

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
most ``K - 1`` sphere steps and ``K`` sparsemax stages; the forward runs exactly ``K - 1``
masked iterations over the whole batch, and a boolean column ``running`` says which rows a
stage applies to.

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
* Any finite logits: the shift by the maximum makes a vertex from sparsemax exactly one-hot, loses
  no precision in the threshold, and keeps ``[9e307, 0, 0]`` or ``[finfo.max, -finfo.max]`` from
  overflowing.

**Backward.** Each stage has a symmetric Jacobian: sparsemax
:math:`J_{\mathrm{smax}} = \operatorname{diag}(s) - s s^\top / |S|`, sphere step
:math:`J_{\mathrm{sph}} = (\rho/n)(I - d d^\top)`. :func:`sparsestmax_vjp` applies the recorded
stages' Jacobians in reverse order, :func:`sparsestmax_jvp` in forward order, each on the rows the
stage applied to. Vertices have Jacobian exactly zero; so has a sphere step inside a face of two
elements (an edge, where the sphere is two points), which is computed as an exact zero rather
than as rounding residue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from .._xp import Array, device, full_like_on, namespace
from . import _sparsestmax_fast
from ._validation import check_choice, check_finite, check_floating, check_like, check_nonnegative_number, check_record, namespace_of
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
# Validation (at the public functions; the stages below trust their inputs)
# --------------------------------------------------------------------------------------------


def _check_logits(logits: Array, name: str = "logits") -> tuple[Any, int]:
    """Validate a logit array (floating, simplex axis last with K >= 2, finite); return ``(xp, K)``."""
    xp = namespace_of({name: logits})
    check_floating(xp, logits, name)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"{name} has shape {tuple(logits.shape)}, expected (..., K) with K >= 2 entries on the last (simplex) axis"
        )
    if any(size < 1 for size in logits.shape):
        raise ValueError(f"{name} has shape {tuple(logits.shape)}, expected no axis of size 0")
    check_finite(xp, logits, name)
    return xp, int(logits.shape[-1])


def _check_radius_and_variant(radius: Any, variant: Any) -> tuple[float, str]:
    return check_nonnegative_number(radius, "radius"), check_choice(variant, "variant", VARIANTS)


def _check_stages(stages: Any) -> None:
    if not isinstance(stages, SparsestMaxStages):
        raise TypeError(f"stages must be the SparsestMaxStages that sparsestmax_forward returned, got {type(stages).__name__}")
    check_record(stages, "stages")


# --------------------------------------------------------------------------------------------
# Sparsemax
# --------------------------------------------------------------------------------------------


def _shift_by_max(z: Array, xp: Any) -> Array:
    r"""``z - max(z)`` over the last axis, clipped at ``-2``, computed without overflow for any finite ``z``.

    Sparsemax is translation invariant, so it may work on ``z - max z``: the largest entry becomes
    exactly 0, and a vertex comes out exactly one-hot. Its threshold satisfies
    :math:`\tau \ge \max z - 1`, so an entry more than 1 below the maximum is outside the support
    whatever its value; clipped at ``-2`` it stays outside (:math:`1 + j z_{(j)} > \sum_{l \le j} z_{(l)}`
    cannot hold there, with a margin of 1 for rounding) and the cumulative sums stay finite.

    ``z - max z`` itself overflows where an entry is more than ``finfo.max`` below the maximum
    (``[finfo.max, -finfo.max]``). Every entry is therefore first raised to the floor
    ``max(max z, -h) - h``, ``h = finfo.max / 2``, which lies no more than ``finfo.max`` below the
    maximum (so the difference is finite) and either ``h`` below it or at ``-finfo.max`` (so no
    entry within 1 of the maximum, and none of the support, moves).
    """
    largest = xp.max(z, axis=-1, keepdims=True)
    h = 0.5 * float(xp.finfo(z.dtype).max)
    floor = xp.maximum(largest, -h) - h
    return xp.maximum(xp.maximum(z, floor) - largest, -2.0)


def _sparsemax_stage(z: Array, xp: Any) -> tuple[Array, Array, Array]:
    """Sparsemax of ``z`` over the last axis: ``(w, support, size)`` (module docstring, no validation).

    ``support`` is the 0/1 indicator :math:`s` of :math:`S = \\{w > 0\\}` in ``z``'s dtype and
    ``size`` is :math:`|S|`, shape ``(..., 1)``.
    """
    K = z.shape[-1]
    shifted = _shift_by_max(z, xp)
    ordered = xp.sort(shifted, axis=-1, descending=True)  # z_(1) >= ... >= z_(K), z_(1) = 0
    cumulative = xp.cumulative_sum(ordered, axis=-1)  # sum_{l <= j} z_(l)
    j = xp.arange(1, K + 1, dtype=z.dtype, device=device(z))
    ranks = xp.where(1.0 + j * ordered > cumulative, j, 0.0)  # j where the condition holds, 0 elsewhere
    k = xp.max(ranks, axis=-1, keepdims=True)
    top_k_sum = xp.sum(xp.where(ranks == k, cumulative, 0.0), axis=-1, keepdims=True)  # the cumulative sum at position k
    tau = (top_k_sum - 1.0) / k
    # max(z - tau, 0), with entries AT the threshold outside the support (their gradient is 0, the
    # convention of docs/sparsestmax.md), so that autodiff of this forward agrees with the VJP.
    in_support = shifted > tau
    w = xp.where(in_support, shifted - tau, 0.0)
    support = xp.astype(in_support, z.dtype)
    return w, support, xp.sum(support, axis=-1, keepdims=True)


def sparsemax(logits: Array) -> Array:
    r"""Sparsemax over the last axis: the Euclidean projection of ``logits`` onto the simplex.

    Parameters
    ----------
    logits
        ``(..., K)``, ``K >= 2``, float32 or float64, finite (any magnitude up to ``finfo.max``).

    Returns
    -------
    Array
        ``max(z - tau, 0)`` with the threshold of the module docstring; same shape and dtype.
    """
    xp, _ = _check_logits(logits)
    return _sparsemax_stage(logits, xp)[0]


def _sparsemax_stage_vjp(g: Array, support: Array, size: Array, xp: Any) -> Array:
    r""":math:`J^\top g = s \odot (g - \frac{1}{|S|}\sum_{j \in S} g_j)`, :math:`J = \operatorname{diag}(s) - s s^\top/|S|` (symmetric).

    A zero ``size`` (a row a stage did not apply to, whose ``support`` is zero) gives zero.
    """
    support_mean = xp.sum(support * g, axis=-1, keepdims=True) / xp.maximum(size, 1.0)
    return support * (g - support_mean)


def _check_ratios(ratios: Array, cotangent: Array, cotangent_name: str) -> Any:
    xp = namespace_of({cotangent_name: cotangent, "ratios": ratios})
    _check_logits(ratios, "ratios")
    check_like(xp, cotangent, cotangent_name, ratios, "ratios")
    return xp


def sparsemax_vjp(dratios: Array, ratios: Array) -> Array:
    r"""VJP of :func:`sparsemax`, from its output: :math:`s \odot (g - \frac{1}{|S|}\sum_{j\in S} g_j)`, :math:`s = [w > 0]`.

    The Jacobian :math:`\operatorname{diag}(s) - s s^\top/|S|` is symmetric, so this is also the JVP.
    ``dratios`` must have the shape and dtype of ``ratios`` and be finite.
    """
    xp = _check_ratios(ratios, dratios, "dratios")
    support = xp.astype(ratios > 0.0, ratios.dtype)
    return _sparsemax_stage_vjp(dratios, support, xp.sum(support, axis=-1, keepdims=True), xp)


def sparsemax_jvp(dlogits: Array, ratios: Array) -> Array:
    r"""JVP of :func:`sparsemax` (its Jacobian is symmetric: the formula of :func:`sparsemax_vjp`).

    ``dlogits`` must have the shape and dtype of ``ratios`` and be finite.
    """
    xp = _check_ratios(ratios, dlogits, "dlogits")
    support = xp.astype(ratios > 0.0, ratios.dtype)
    return _sparsemax_stage_vjp(dlogits, support, xp.sum(support, axis=-1, keepdims=True), xp)


def sparsemax_linearize(logits: Array) -> Linearized:
    """Sparsemax at a point, for :func:`refnorm.gradcheck` (pullback, pushforward, hvp); the active set is the support."""
    ratios = sparsemax(logits)
    xp = namespace(ratios)
    return Linearized(
        out=ratios,
        pullback=lambda dratios: (sparsemax_vjp(dratios, ratios),),
        pushforward=lambda dlogits: sparsemax_jvp(dlogits, ratios),
        active_set=xp.astype(ratios > 0.0, ratios.dtype),
        hvp=lambda dratios, dlogits: (sparsemax_hvp(dratios, ratios, dlogits),),
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

    def hvp(self, g: Array, t: Array, xp: Any) -> Array:
        """The derivative of :math:`J^\\top g` along the input tangent ``t``: 0, the Jacobian is constant on a piece."""
        return xp.zeros_like(g)


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
        residue of order eps instead). Rows the stage did not apply to (radius 0, distance 0) give 0.
        """
        scale = self.radius / xp.where(self.applied, self.distance, 1.0)
        v = scale * (g - self.direction * xp.sum(self.direction * g, axis=-1, keepdims=True))
        return xp.where(self.face_size > 2.0, v, 0.0)

    def jvp(self, t: Array, xp: Any) -> Array:
        """:math:`J t` (:math:`J` is symmetric)."""
        return self.vjp(t, xp)

    def hvp(self, g: Array, t: Array, xp: Any) -> Array:
        r"""The derivative of :math:`J^\top g` along the tangent ``t`` of the stage's input :math:`w`, ``g`` fixed.

        On a piece the face, its centre :math:`u` and :math:`\rho` are constant; with
        :math:`\dot n = \langle d, t \rangle` and :math:`\dot d = (t - d\,\dot n) / n`,

        .. math::

            \big(J^\top g\big)^\cdot = -\frac{\rho\,\dot n}{n^2}\big(g - d \langle d, g\rangle\big)
            - \frac{\rho}{n}\big(\dot d\, \langle d, g \rangle + d\, \langle \dot d, g \rangle\big);

        exactly 0 when :math:`|F| = 2` (the Jacobian is 0 there) and on rows the stage did not apply to.
        """
        distance = xp.where(self.applied, self.distance, 1.0)
        d = self.direction
        distance_dot = xp.sum(d * t, axis=-1, keepdims=True)
        direction_dot = (t - d * distance_dot) / distance
        along = xp.sum(d * g, axis=-1, keepdims=True)
        v = -(self.radius * distance_dot / (distance * distance)) * (g - d * along) - (self.radius / distance) * (
            direction_dot * along + d * xp.sum(direction_dot * g, axis=-1, keepdims=True)
        )
        return xp.where(self.face_size > 2.0, v, 0.0)


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
        steps = xp.zeros(self.vertex.shape[:-1], dtype=xp.int64, device=device(self.vertex))
        for stage in self.stages:
            if isinstance(stage, SphereStage):
                steps = steps + xp.astype(stage.applied[..., 0], xp.int64)
        return steps

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
                edge_side = xp.where(stage.face_size == 2.0, xp.sign(stage.direction), 0.0)
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

    The square root is taken of 1 where the row is zero ("double where"), so autodiff of this
    forward (torch, JAX) gets a zero instead of ``0 * inf = NaN`` in the rows a later mask
    discards. refnorm's own backward does not differentiate through it.
    """
    squared = xp.sum(v * v, axis=-1, keepdims=True)
    nonzero = squared > 0.0
    return xp.where(nonzero, xp.sqrt(xp.where(nonzero, squared, 1.0)), 0.0)


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

    Of the entries equal to the maximum, the first is where the running count of maxima is 1.
    """
    is_max = xp.astype(v == xp.max(v, axis=-1, keepdims=True), v.dtype)
    return is_max * xp.astype(xp.cumulative_sum(is_max, axis=-1) == 1.0, v.dtype)


def sparsestmax_forward(logits: Array, radius: float, *, variant: str = "paper") -> tuple[Array, SparsestMaxStages]:
    r"""SparsestMax over the last axis, with the recorded stages its VJP and JVP need.

    Parameters
    ----------
    logits
        ``(..., K)``, ``K >= 2``, float32 or float64, finite (any magnitude up to ``finfo.max``).
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
    xp, _ = _check_logits(logits)
    radius, variant = _check_radius_and_variant(radius, variant)
    if _sparsestmax_fast.applies(logits, xp):  # speed only: this code, laid out for NumPy
        return _sparsestmax_fast.run(_sparsestmax_stages, logits, radius, variant, xp=xp)
    return _sparsestmax_stages(logits, radius, variant, xp)


def _sparsestmax_stages(z: Array, radius: float, variant: str, xp: Any) -> tuple[Array, SparsestMaxStages]:
    """The algorithm of the module docstring (``sparsestmax_forward`` without the validation)."""
    K = z.shape[-1]
    column = (*z.shape[:-1], 1)
    every_row = xp.ones(column, dtype=xp.bool, device=device(z))
    if radius >= max_radius(K):
        vertex = _one_hot_at_max(z, xp)
        return vertex, SparsestMaxStages((), vertex, ~every_row, radius, variant)
    tolerance = rounding_tolerance(xp, z.dtype)

    # 1. Sparsemax stage 0; the face of the first sphere: the whole simplex (paper, centre u0) or
    #    the support (official, centre u_S0).
    w, support, size = _sparsemax_stage(z, xp)
    stages: list[SparsemaxStage | SphereStage] = [SparsemaxStage(every_row, support, size)]
    face = xp.ones_like(support) if variant == "paper" else support
    face_size = first_face_size = xp.sum(face, axis=-1, keepdims=True)
    rho = full_like_on(z, column, radius, xp)
    offset = _offset_in_face(w, face, face_size, xp)
    distance = _norm(offset, xp)
    out = w
    inside_ball = (size > 1.0) & (distance < rho)
    degenerate = inside_ball & (distance <= tolerance)
    running = inside_ball & (distance > tolerance)

    # Every iteration computes on all rows and keeps the results of the running ones; the record
    # of a stage is zero on the rows it did not apply to.
    for _ in range(K - 1):
        # 2. Sphere step p = u + rho d, d = (w - u) / n (n > tolerance on the running rows; the
        #    floor only keeps the other rows finite).
        centre = face / face_size
        direction = xp.where(running, offset / xp.clip(distance, min=tolerance), 0.0)
        p = centre + rho * direction
        stages.append(
            SphereStage(
                running,
                xp.where(running, centre, 0.0),
                xp.where(running, face_size, 0.0),
                xp.where(running, rho, 0.0),
                xp.where(running, distance, 0.0),
                direction,
            )
        )
        on_simplex = xp.min(p, axis=-1, keepdims=True) >= 0.0
        out = xp.where(running & on_simplex, p, out)
        running = running & ~on_simplex

        # 3. Back onto the simplex: w = sparsemax(p). Exactly, its threshold is > 0 (p sums to 1
        #    and has a negative entry), so the entries <= 0 leave the support; replacing them by
        #    -2 (below any threshold) makes that hold under rounding too, so the support shrinks at
        #    every stage and K - 1 iterations always suffice.
        w, support, size = _sparsemax_stage(xp.where(p > 0.0, p, -2.0), xp)
        stages.append(SparsemaxStage(running, xp.where(running, support, 0.0), xp.where(running, size, 0.0)))
        out = xp.where(running, w, out)
        # The next sphere lies in the face of the new support, with the Pythagorean radius.
        face, face_size = support, size
        rho = xp.sqrt(xp.clip(radius**2 - (1.0 / size - 1.0 / first_face_size), min=0.0))
        offset = _offset_in_face(w, face, face_size, xp)
        distance = _norm(offset, xp)
        reached_vertex = running & (size == 1.0)
        degenerate = degenerate | (running & ~reached_vertex & (distance <= tolerance))
        running = running & ~reached_vertex & (distance > tolerance)

    # Outputs within rounding of a vertex are that vertex (exactly one-hot, Jacobian zero).
    at_vertex = xp.max(out, axis=-1, keepdims=True) >= 1.0 - tolerance
    vertex = xp.where(at_vertex, _one_hot_at_max(out, xp), 0.0)
    out = xp.where(at_vertex, vertex, out)
    return out, SparsestMaxStages(tuple(stages), vertex, degenerate, radius, variant)


def sparsestmax(logits: Array, radius: float, *, variant: str = "paper") -> Array:
    """SparsestMax over the last axis (:func:`sparsestmax_forward` without the stages)."""
    return sparsestmax_forward(logits, radius, variant=variant)[0]


# --------------------------------------------------------------------------------------------
# SparsestMax: backward and forward-mode derivatives
# --------------------------------------------------------------------------------------------


def _check_stages_and(stages: Any, value: Array, name: str) -> Any:
    _check_stages(stages)
    xp = namespace_of({name: value, "stages": stages.vertex})
    check_like(xp, value, name, stages.vertex, "the forward's ratios")
    return xp


def sparsestmax_vjp(dratios: Array, stages: SparsestMaxStages) -> Array:
    r"""VJP of :func:`sparsestmax_forward`: the recorded stages' Jacobians, last stage first.

    .. math::

        \frac{\partial L}{\partial z} = J_{\mathrm{smax},0}^\top J_{\mathrm{sph},0}^\top
        J_{\mathrm{smax},1}^\top \cdots\, g, \qquad
        J_{\mathrm{smax}} = \operatorname{diag}(s) - \frac{s s^\top}{|S|}, \quad
        J_{\mathrm{sph}} = \frac{\rho}{n}(I - d d^\top),

    each stage applied only on the rows that went through it (the others pass ``g`` on unchanged);
    zero where the output is a vertex. ``dratios`` must have the shape and dtype of the forward's
    output and be finite.
    """
    xp = _check_stages_and(stages, dratios, "dratios")
    if _sparsestmax_fast.applies(dratios, xp):  # speed only: the layout of the forward's records
        return _sparsestmax_fast.run(_stages_vjp, dratios, stages, xp=xp)
    return _stages_vjp(dratios, stages, xp)


def _stages_vjp(g: Array, stages: SparsestMaxStages, xp: Any) -> Array:
    """:math:`J^\top g`: zero at a vertex, then each stage's :math:`J^\top` on its rows, last stage first."""
    g = xp.where(stages.at_vertex(), 0.0, g)
    for stage in reversed(stages.stages):
        g = xp.where(stage.applied, stage.vjp(g, xp), g)
    return g


def sparsestmax_jvp(dlogits: Array, stages: SparsestMaxStages) -> Array:
    r"""JVP of :func:`sparsestmax_forward`: the same stage Jacobians (all symmetric), first stage first.

    ``dlogits`` must have the shape and dtype of the forward's logits and be finite.
    """
    xp = _check_stages_and(stages, dlogits, "dlogits")
    if _sparsestmax_fast.applies(dlogits, xp):  # speed only: the layout of the forward's records
        return _sparsestmax_fast.run(_stages_jvp, dlogits, stages, xp=xp)
    return _stages_jvp(dlogits, stages, xp)


def _stages_jvp(t: Array, stages: SparsestMaxStages, xp: Any) -> Array:
    """:math:`J t`: each stage's :math:`J` on its rows, first stage first, then zero at a vertex."""
    for stage in stages.stages:
        t = xp.where(stage.applied, stage.jvp(t, xp), t)
    return xp.where(stages.at_vertex(), 0.0, t)


def sparsestmax_hvp(dratios: Array, stages: SparsestMaxStages, dlogits: Array) -> Array:
    r"""The derivative of :func:`sparsestmax_vjp` along a logit tangent, ``dratios`` held fixed.

    The second-order term of forward-over-reverse through SparsestMax, on the smooth piece of the
    point (the recorded stages): with :math:`t_l` the tangent of stage :math:`l`'s input (the JVP's
    running value) and :math:`g_l` the cotangent of its output (the VJP's),

    .. math::

        h_l = J_l^\top h_{l+1} + \big(\partial_{t_l} J_l\big)^\top g_{l+1}, \qquad h_{L+1} = 0,

    last stage first; :math:`h_0` is the Hessian of :math:`\langle g, \mathrm{SparsestMax}(z) \rangle`
    times :math:`\dot z`. Sparsemax stages have a constant Jacobian on a piece (their term is 0); a
    sphere step's is :meth:`SphereStage.hvp`. Zero where the output is a vertex. ``dratios`` and
    ``dlogits`` must have the shape and dtype of the forward's output and be finite.
    """
    xp = _check_stages_and(stages, dratios, "dratios")
    _check_stages_and(stages, dlogits, "dlogits")
    return _stages_hvp(dratios, dlogits, stages, xp)


def _stages_hvp(g: Array, t: Array, stages: SparsestMaxStages, xp: Any) -> Array:
    """:func:`sparsestmax_hvp` without the validation (the plain layout only: the records of the fast
    forward are read as they are, the values are the same)."""
    inputs = []
    for stage in stages.stages:  # forward: the tangent of every stage's input
        inputs.append(t)
        t = xp.where(stage.applied, stage.jvp(t, xp), t)
    g = xp.where(stages.at_vertex(), 0.0, g)
    h = xp.zeros_like(g)
    for stage, t_in in zip(reversed(stages.stages), reversed(inputs), strict=True):
        h = xp.where(stage.applied, stage.vjp(h, xp) + stage.hvp(g, t_in, xp), h)
        g = xp.where(stage.applied, stage.vjp(g, xp), g)
    return h


def sparsemax_hvp(dratios: Array, ratios: Array, dlogits: Array) -> Array:
    """The derivative of :func:`sparsemax_vjp` along a logit tangent: 0 (sparsemax is piecewise linear).

    Shapes and dtypes are checked as :func:`sparsemax_vjp` checks them.
    """
    xp = _check_ratios(ratios, dratios, "dratios")
    _check_ratios(ratios, dlogits, "dlogits")
    return xp.zeros_like(dratios)


def sparsestmax_linearize(logits: Array, *, radius: float, variant: str = "paper") -> Linearized:
    """SparsestMax at a point, for :func:`refnorm.gradcheck` (pullback, pushforward, hvp, stages as active set)."""
    ratios, stages = sparsestmax_forward(logits, radius, variant=variant)
    return Linearized(
        out=ratios,
        pullback=lambda dratios: (sparsestmax_vjp(dratios, stages),),
        pushforward=lambda dlogits: sparsestmax_jvp(dlogits, stages),
        active_set=stages.active_set(),
        hvp=lambda dratios, dlogits: (sparsestmax_hvp(dratios, stages, dlogits),),
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

    def hvp(self, dratios: Array, ratios: Array, aux: SparsestMaxStages, dlogits: Array) -> Array:
        return sparsestmax_hvp(dratios, aux, dlogits)

    def active_set(self, aux: SparsestMaxStages) -> tuple[Any, ...]:
        return aux.active_set()
