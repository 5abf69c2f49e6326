r"""Statistics of the normalizer scopes, assembled from per-instance moments, with their VJPs.

Input ``x`` has shape ``(N, C, *spatial)``; ``M`` is the product of the spatial sizes (``M = 1``
for ``(N, C)`` input). The scopes are

====  ==================================  ===============  ======================
name  statistic per                       averages over    stored shape
====  ==================================  ===============  ======================
in    ``(n, c)``                          space            ``(N, C)``
ln    ``n``                               channels, space  ``(N, 1)``
bn    ``c``                               batch, space     ``(1, C)``
gn    ``(n, group)`` of ``C / G`` chans.  group, space     ``(N, C)`` (repeated)
====  ==================================  ===============  ======================

Every scope statistic broadcasts against ``(N, C)``; GN's are repeated over the channels of each
group so that they do too.

Algorithm (SPEC §1). First the per-instance moments, two-pass:

.. math::

    \mu^{in}_{nc} = \frac1M \sum_i x_{nci}, \qquad
    s_{nc} = \frac{1}{M - d} \sum_i (x_{nci} - \mu^{in}_{nc})^2,

with ``d = 1`` in the official convention for input with spatial axes and ``d = 0`` otherwise.
Then every scope ``k`` pools them with the law of total variance, where :math:`P_k` is the mean
over the instances the scope pools (identity for IN, over ``c`` for LN, over ``n`` for BN, over
the channels of a group for GN):

.. math::

    \mu^k = P_k \mu^{in}, \qquad
    \sigma^{2,k} = f_k \big( P_k s + P_k (\mu^{in} - \mu^k)^2 \big).

``f_k = 1`` except in the official convention for ``(N, C)`` input, where every scope variance
is unbiased over its own scope: ``f_k = n_k / (n_k - 1)`` with ``n_k`` the pooled count. No
``E[x^2] - \mu^2`` appears anywhere, so float64 results stay accurate for inputs with large
offsets (mean ``1e6``, std ``1``).

The VJPs run the same two steps backwards (:func:`scope_moments_vjp` then
:func:`instance_moments_vjp`); ``docs/sn-backward.md`` derives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import contextlib
import numbers

from ._validation import (
    check_bool,
    check_choice,
    check_finite_statistic,
    check_floating,
    check_int,
    check_name,
    check_same_dtype,
    check_shape,
    check_values,
    describe,
    namespace_of,
    overflow_checked_afterwards,
)
from .._xp import Array, namespace
from .conventions import check_convention

NORMALIZERS = ("in", "ln", "bn", "gn")
"""The normalizer names, in the official logit order (GN last; the official code has no GN)."""


@dataclass(frozen=True)
class Layout:
    """Sizes of an input of shape ``(N, C, *spatial)``: ``M`` is the product of the spatial sizes."""

    N: int
    C: int
    M: int
    ndim: int

    def __post_init__(self) -> None:
        for field in ("N", "C", "M"):
            check_int(getattr(self, field), f"Layout.{field}", 1)
        check_int(self.ndim, "Layout.ndim", 2)
        if self.ndim == 2 and self.M != 1:
            raise ValueError(f"Layout.M = {self.M} for ndim = 2; an (N, C) input has M = 1 (no spatial axes)")

    @classmethod
    def of(cls, shape: tuple[int, ...], name: str = "x") -> Layout:
        """The layout of ``shape`` (a tuple of ints, the shape of the array ``name``); ``TypeError`` for
        anything else, ``ValueError`` for rank < 2 or an empty axis."""
        check_name(name, "name")
        if not isinstance(shape, tuple | list) or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape):
            raise TypeError(f"the shape of {name} must be a tuple of ints, got {describe(shape)}")
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise ValueError(f"{name} has shape {shape}, expected (N, C, *spatial) with rank >= 2")
        if any(s < 1 for s in shape):
            raise ValueError(f"{name} has shape {shape}, expected every axis to have size >= 1")
        M = 1
        for s in shape[2:]:
            M *= s
        return cls(N=shape[0], C=shape[1], M=M, ndim=len(shape))


class InstanceMoments(NamedTuple):
    """Per-instance moments, both of shape ``(N, C)``."""

    mean: Array
    """:math:`\\mu^{in}_{nc}`, the spatial mean."""
    var: Array
    """:math:`s_{nc}`, the spatial variance of the convention (divided by ``M - d``)."""


class ScopeMoments(NamedTuple):
    """Mean and variance of each scope, aligned with ``normalizers``, each broadcasting to ``(N, C)``."""

    normalizers: tuple[str, ...]
    means: tuple[Array, ...]
    variances: tuple[Array, ...]


def check_normalizers(normalizers: Any, groups: int | None, layout: Layout) -> tuple[str, ...]:
    """Validate an ordered normalizer subset and its GN group count; return it as a tuple.

    ``ValueError`` for an unknown or repeated name, an empty set, ``"gn"`` without ``groups`` (or
    ``groups`` without ``"gn"``), or a group count that does not divide ``C``.
    """
    if isinstance(normalizers, str) or not hasattr(normalizers, "__iter__"):
        raise TypeError(f"normalizers must be a sequence of names such as ('in', 'ln', 'bn'), got {normalizers!r}")
    normalizers = tuple(normalizers)
    if not normalizers:
        raise ValueError("normalizers is empty; expected an ordered subset of ('in', 'ln', 'bn', 'gn')")
    for name in normalizers:
        if not isinstance(name, str):
            raise TypeError(f"normalizers must hold names such as 'in', 'ln', 'bn', 'gn'; got {describe(name)} in {normalizers}")
        check_choice(name, "normalizer", NORMALIZERS)
    if len(set(normalizers)) != len(normalizers):
        raise ValueError(f"normalizers {normalizers} repeats a name; each normalizer may appear once")
    if "gn" in normalizers:
        if groups is None:
            raise ValueError("normalizers include 'gn' but groups is None; expected a group count dividing C")
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
            raise TypeError(f"groups must be a positive int, got {describe(groups)}")
        if groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if layout.C % groups:
            raise ValueError(f"groups = {groups} does not divide the channel count C = {layout.C}")
    elif groups is not None:
        raise ValueError(f"groups = {groups!r} was given but 'gn' is not in normalizers {normalizers}")
    return normalizers


def default_normalizers(layout: Layout) -> tuple[str, ...]:
    """``("in", "ln", "bn")``, or ``("ln", "bn")`` for ``(N, C)`` input (SPEC §2)."""
    return ("ln", "bn") if layout.ndim == 2 else ("in", "ln", "bn")


def instance_correction(convention: str, layout: Layout) -> int:
    """``d`` in ``s = sum (x - mean)^2 / (M - d)``: 1 for the official convention with spatial axes."""
    return 1 if (convention == "official" and layout.ndim > 2) else 0


def pooled_count(scope: str, layout: Layout, groups: int | None) -> int:
    """How many instances ``(n, c)`` the scope pools: 1 (IN), C (LN), N (BN), C / G (GN)."""
    return {"in": 1, "ln": layout.C, "bn": layout.N, "gn": layout.C // groups if groups else 0}[scope]


def scope_correction(scope: str, convention: str, layout: Layout, groups: int | None) -> float:
    """``f_k``: ``n_k / (n_k - 1)`` for the official convention on ``(N, C)`` input, else 1."""
    if convention == "official" and layout.ndim == 2:
        n = pooled_count(scope, layout, groups)
        return n / (n - 1)
    return 1.0


def check_convention_defined(convention: str, normalizers: tuple[str, ...], layout: Layout, groups: int | None) -> None:
    """``ValueError`` where the official formulas divide by zero, instead of returning NaN.

    The official code divides the IN variance by ``M - 1`` (NaN for ``H·W = 1``, SN issue #5) and,
    for ``(N, C)`` input, the LN variance by ``C - 1`` and the BN variance by ``N - 1``.
    """
    check_convention(convention)
    if convention != "official":
        return
    if layout.ndim > 2:
        if layout.M == 1:
            raise ValueError(
                "convention 'official' divides the instance variance by M - 1 = 0 for input with a single "
                "spatial position (M = 1); the official code returns NaN here (SN issue #5). "
                "Use convention='paper' for such input"
            )
        return
    for scope in normalizers:
        n = pooled_count(scope, layout, groups)
        what = {"in": "one element", "ln": f"C = {layout.C}", "bn": f"N = {layout.N}", "gn": f"C / G = {n}"}[scope]
        if n <= 1:
            raise ValueError(
                f"convention 'official' makes the {scope.upper()} variance of (N, C) input unbiased over its scope, "
                f"which divides by zero for {what}; use convention='paper' or another normalizer set"
            )


def _pool(a: Array, scope: str, groups: int | None, xp: Any) -> Array:
    """:math:`P_k a`: the mean of an ``(N, C)`` array over the instances scope ``k`` pools."""
    if scope == "in":
        return a
    if scope == "ln":
        return xp.mean(a, axis=1, keepdims=True)
    if scope == "bn":
        return xp.mean(a, axis=0, keepdims=True)
    N, C = a.shape
    per_group = xp.mean(xp.reshape(a, (N, groups, C // groups)), axis=2, keepdims=True)
    return xp.reshape(xp.broadcast_to(per_group, (N, groups, C // groups)), (N, C))


def _pool_adjoint(d: Array, scope: str, groups: int | None, layout: Layout, xp: Any) -> Array:
    r""":math:`P_k^\top d`: spreads a scope-shaped gradient evenly over the instances it pooled."""
    if scope == "in":
        return d
    if scope == "gn":  # the repeated group mean is an orthogonal projector: self-adjoint
        return _pool(d, scope, groups, xp)
    return xp.broadcast_to(d, (layout.N, layout.C)) / float(pooled_count(scope, layout, groups))


def instance_moments(x: Array, *, convention: str = "paper", check_finite: bool = True, name: str = "x") -> InstanceMoments:
    """Spatial mean and variance of every ``(n, c)`` instance, two-pass (no ``E[x^2] - mean^2``).

    Parameters
    ----------
    x
        Input of shape ``(N, C, *spatial)``, a real floating array.
    convention
        ``"paper"`` divides the variance by ``M``; ``"official"`` by ``M - 1`` when ``x`` has
        spatial axes (for ``(N, C)`` input the instance variance is 0 in both). The official
        convention on input with a single spatial position raises ``ValueError``.
    check_finite, name
        Raise ``ValueError`` naming ``name`` when ``x`` holds NaN or infinity (or values whose
        moments overflow), found through the moments themselves (no extra pass over ``x``; see
        ``refnorm.ops._validation.check_finite_statistic``). On by default; switch it off only
        for trusted data.
    """
    name = check_name(name, "name")
    xp = namespace_of({name: x})
    check_floating(xp, x, name)
    layout = Layout.of(tuple(x.shape), name)
    check_convention_defined(convention, (), layout, None)
    check_bool(check_finite, "check_finite")
    return instance_moments_and_centered(x, convention=convention, check_finite=check_finite, name=name)[0]


def instance_moments_and_centered(
    x: Array, *, convention: str, check_finite: bool = False, name: str = "x"
) -> tuple[InstanceMoments, Array]:
    """:func:`instance_moments` and the centred input :math:`x - \\mu^{in}`, shape ``(N, C, M)``.

    The stage the layers run, on arguments their entry point has checked. The variance is
    computed from the centred input, and the layers keep it: it is what
    :func:`instance_moments_vjp` needs, and every normalized map is an affine function of it per
    instance. ``check_finite`` is the one value check of ``x`` (see :func:`instance_moments`).
    """
    xp = namespace(x)
    layout = Layout.of(x.shape, name)
    d = instance_correction(convention, layout)
    x3 = xp.reshape(x, (layout.N, layout.C, layout.M))
    with overflow_checked_afterwards() if check_finite else contextlib.nullcontext():
        mean = xp.mean(x3, axis=2)
    if check_finite:  # before x - mean, which would turn an infinity into NaN
        check_finite_statistic(xp, mean, name)
    centered = x3 - mean[:, :, None]
    # A pairwise sum (xp.sum), not a contraction (vecdot, one sweep fewer): NumPy sums pairwise,
    # O(log M) roundings, where a BLAS dot product accumulates long runs one term at a time; the
    # float32 variance sets the tolerances the golden set recommends (refnorm.oracle.tolerances).
    with overflow_checked_afterwards() if check_finite else contextlib.nullcontext():
        var = xp.sum(centered * centered, axis=-1) / float(layout.M - d)
    if check_finite:
        check_finite_statistic(xp, var, name)
    return InstanceMoments(mean=mean, var=var), centered


def instance_moments_vjp(dmean: Array, dvar: Array, centered: Array, *, convention: str, layout: Layout) -> Array:
    r"""VJP of :func:`instance_moments`: the gradient with respect to ``x``, shape ``(N, C, M)``.

    .. math::

        \frac{\partial L}{\partial x_{nci}} = \frac{1}{M} \frac{\partial L}{\partial \mu^{in}_{nc}}
        + \frac{2 (x_{nci} - \mu^{in}_{nc})}{M - d} \frac{\partial L}{\partial s_{nc}}

    (the derivative of ``s`` through ``mean`` vanishes because the deviations sum to zero).

    Parameters
    ----------
    dmean, dvar
        Gradients with respect to the instance mean and variance, shape ``(N, C)``.
    centered
        ``x - mean``, shape ``(N, C, M)`` (:func:`instance_moments_and_centered`).
    """
    d = instance_correction(convention, layout)
    offset = dmean / float(layout.M)
    slope = (2.0 / float(layout.M - d)) * dvar
    return slope[:, :, None] * centered + offset[:, :, None]


def instance_moments_jvp(x_dot: Array, centered: Array, *, convention: str, layout: Layout) -> tuple[InstanceMoments, Array]:
    r"""JVP of :func:`instance_moments_and_centered`: the tangents of the moments and of the centred input.

    With :math:`\dot x` the tangent of ``x``, shape ``(N, C, M)``:

    .. math::

        \dot\mu^{in}_{nc} = \frac1M \sum_i \dot x_{nci}, \qquad
        \dot s_{nc} = \frac{2}{M - d} \sum_i (x_{nci} - \mu^{in}_{nc})\, \dot x_{nci}, \qquad
        (x - \mu^{in})^\cdot = \dot x - \dot\mu^{in}

    (the term of :math:`\dot s` through :math:`\dot\mu^{in}` vanishes because the deviations sum to
    zero). The transpose of :func:`instance_moments_vjp`. Returns ``(InstanceMoments(mean=mean_dot,
    var=var_dot), centered_dot)``: a tangent has the type of its primal.
    """
    xp = namespace(x_dot, centered)
    d = instance_correction(convention, layout)
    mean_dot = xp.mean(x_dot, axis=2)
    var_dot = (2.0 / float(layout.M - d)) * xp.vecdot(centered, x_dot, axis=-1)
    return InstanceMoments(mean=mean_dot, var=var_dot), x_dot - mean_dot[:, :, None]


def instance_moments_vjp_jvp(
    dvar: Array, dmean_dot: Array, dvar_dot: Array, centered: Array, centered_dot: Array, *, convention: str, layout: Layout
) -> Array:
    r"""The derivative of :func:`instance_moments_vjp` along a tangent (forward-over-reverse).

    The VJP :math:`\bar x = \frac{1}{M}\bar\mu^{in} + \frac{2}{M - d}\bar s\,(x - \mu^{in})` is
    bilinear in its cotangents and the centred input, so along tangents
    :math:`\dot{\bar\mu}^{in}, \dot{\bar s}` of the cotangents (``dmean_dot``, ``dvar_dot``) and
    :math:`(x - \mu^{in})^\cdot` (``centered_dot``):

    .. math::

        \dot{\bar x} = \frac{1}{M}\dot{\bar\mu}^{in} + \frac{2}{M - d}\big(\dot{\bar s}\,(x - \mu^{in})
        + \bar s\,(x - \mu^{in})^\cdot\big).

    Returns :math:`\dot{\bar x}`, shape ``(N, C, M)``.
    """
    d = instance_correction(convention, layout)
    factor = 2.0 / float(layout.M - d)
    return (factor * dvar_dot)[:, :, None] * centered + (factor * dvar)[:, :, None] * centered_dot + (dmean_dot / float(layout.M))[:, :, None]


def scope_moments(
    moments: InstanceMoments,
    normalizers: tuple[str, ...],
    *,
    convention: str = "paper",
    layout: Layout,
    groups: int | None = None,
    check_finite: bool = True,
) -> ScopeMoments:
    """Mean and variance of every scope in ``normalizers``, pooled from the instance moments.

    ``layout`` is the :class:`Layout` of the full input (it tells ``M`` and whether it is
    ``(N, C)``); ``moments`` the :class:`InstanceMoments` of that input (:func:`instance_moments`),
    ``(N, C)`` arrays of one real floating dtype. See the module docstring for the formulas.

    ``check_finite``: ``ValueError`` when a moment is NaN or infinite or an instance variance is
    negative, and when the instance means lie so far apart that a pooled variance overflows. The
    layers pass ``False``: their entry point and :func:`~refnorm.ops.running.use_running_statistics`
    check the same.
    """
    if not isinstance(moments, InstanceMoments):
        raise TypeError(f"moments must be the InstanceMoments that refnorm.instance_moments returns, got {describe(moments)}")
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a refnorm.Layout (Layout.of(x.shape)), got {describe(layout)}")
    check_convention(convention)
    normalizers = check_normalizers(normalizers, groups, layout)
    check_convention_defined(convention, normalizers, layout, groups)
    xp = namespace_of({"moments.mean": moments.mean, "moments.var": moments.var})
    for field, array in (("moments.mean", moments.mean), ("moments.var", moments.var)):
        check_floating(xp, array, field)
        check_shape(array, field, (layout.N, layout.C), "(N, C) of layout")
    check_same_dtype("moments.mean", moments.mean, [("moments.var", moments.var)])
    check_bool(check_finite, "check_finite")
    if check_finite:
        check_values(xp, moments.mean, "moments.mean")
        check_values(xp, moments.var, "moments.var", nonnegative=True)
    means, variances = [], []
    for scope in normalizers:
        mean = _pool(moments.mean, scope, groups, xp)
        spread = moments.mean - mean
        # Instance means far apart make this variance overflow to inf: the check below, or the
        # layer's (refnorm.ops.running.use_running_statistics), reports it.
        with overflow_checked_afterwards():
            var = _pool(moments.var, scope, groups, xp) + _pool(spread * spread, scope, groups, xp)
            var = var * scope_correction(scope, convention, layout, groups)
        if check_finite:
            message = f"moments.mean has values so far apart that the {scope.upper()} variance overflows {var.dtype}"
            check_values(xp, var, "moments", message=message)
        means.append(mean)
        variances.append(var)
    return ScopeMoments(normalizers=tuple(normalizers), means=tuple(means), variances=tuple(variances))


def scope_moments_vjp(
    dmeans: tuple[Array | None, ...],
    dvars: tuple[Array | None, ...],
    moments: InstanceMoments,
    scopes: ScopeMoments,
    *,
    convention: str,
    layout: Layout,
    groups: int | None = None,
) -> tuple[Array, Array]:
    r"""VJP of :func:`scope_moments`: gradients with respect to the instance mean and variance.

    For every scope ``k`` with pooling :math:`P_k` and correction :math:`f_k`:

    .. math::

        \frac{\partial L}{\partial s} \mathrel{+}= f_k P_k^\top \bar\sigma_k, \qquad
        \frac{\partial L}{\partial \mu^{in}} \mathrel{+}= P_k^\top \bar\mu_k
        + 2 (\mu^{in} - \mu^k) \odot f_k P_k^\top \bar\sigma_k,

    where :math:`\bar\mu_k, \bar\sigma_k` are the gradients with respect to the scope's mean and
    variance (the term through :math:`\mu^k` inside the variance vanishes because
    :math:`P_k(\mu^{in} - \mu^k) = 0`). A ``None`` gradient marks a scope treated as a constant
    (BN in evaluation mode) and is skipped.
    """
    xp = namespace(moments.mean)
    dmean_in = xp.zeros_like(moments.mean)
    dvar_in = xp.zeros_like(moments.mean)
    for scope, mean, dmean, dvar in zip(scopes.normalizers, scopes.means, dmeans, dvars, strict=True):
        if dmean is not None:
            dmean_in = dmean_in + _pool_adjoint(dmean, scope, groups, layout, xp)
        if dvar is not None:
            spread_grad = _pool_adjoint(dvar, scope, groups, layout, xp) * scope_correction(scope, convention, layout, groups)
            dvar_in = dvar_in + spread_grad
            dmean_in = dmean_in + 2.0 * (moments.mean - mean) * spread_grad
    return dmean_in, dvar_in


def scope_moments_jvp(
    moments_dot: InstanceMoments,
    moments: InstanceMoments,
    scopes: ScopeMoments,
    *,
    convention: str,
    layout: Layout,
    groups: int | None = None,
    constant: tuple[str, ...] = (),
) -> ScopeMoments:
    r"""JVP of :func:`scope_moments`: the tangents of every scope's mean and variance.

    From the tangents :math:`\dot\mu^{in}, \dot s` of the instance moments:

    .. math::

        \dot\mu^k = P_k \dot\mu^{in}, \qquad
        \dot\sigma^{2,k} = f_k \big( P_k \dot s + 2 P_k\big((\mu^{in} - \mu^k) \odot \dot\mu^{in}\big) \big)

    (the term through :math:`\dot\mu^k` vanishes: :math:`\dot\mu^k` is constant over the instances
    :math:`P_k` pools and :math:`P_k(\mu^{in} - \mu^k) = 0`). The transpose of
    :func:`scope_moments_vjp`. Scopes named in ``constant`` (BN in evaluation, whose statistics are
    the running ones) get ``None``, as their cotangents do in the VJP. ``scopes`` are the statistics
    the layer mixes; a constant scope's are not read.
    """
    xp = namespace(moments.mean, moments_dot.mean)
    means, variances = [], []
    for scope, mean in zip(scopes.normalizers, scopes.means, strict=True):
        if scope in constant:
            means.append(None)
            variances.append(None)
            continue
        spread = moments.mean - mean
        var_dot = _pool(moments_dot.var, scope, groups, xp) + 2.0 * _pool(spread * moments_dot.mean, scope, groups, xp)
        means.append(_pool(moments_dot.mean, scope, groups, xp))
        variances.append(var_dot * scope_correction(scope, convention, layout, groups))
    return ScopeMoments(normalizers=scopes.normalizers, means=tuple(means), variances=tuple(variances))


def scope_moments_vjp_jvp(
    dvars: tuple[Array | None, ...],
    dmeans_dot: tuple[Array | None, ...],
    dvars_dot: tuple[Array | None, ...],
    moments: InstanceMoments,
    scopes: ScopeMoments,
    moments_dot: InstanceMoments,
    scopes_dot: ScopeMoments,
    *,
    convention: str,
    layout: Layout,
    groups: int | None = None,
) -> tuple[Array, Array]:
    r"""The derivative of :func:`scope_moments_vjp` along a tangent (forward-over-reverse).

    Differentiating the VJP's two lines along the tangents of their cotangents
    (:math:`\dot{\bar\mu}_k, \dot{\bar\sigma}_k`: ``dmeans_dot``, ``dvars_dot``) and of the point
    (:math:`\dot\mu^{in}`, :math:`\dot\mu^k`: ``moments_dot``, ``scopes_dot``):

    .. math::

        \dot{\bar s} \mathrel{+}= f_k P_k^\top \dot{\bar\sigma}_k, \qquad
        \dot{\bar\mu}^{in} \mathrel{+}= P_k^\top \dot{\bar\mu}_k
        + 2 (\dot\mu^{in} - \dot\mu^k) \odot f_k P_k^\top \bar\sigma_k
        + 2 (\mu^{in} - \mu^k) \odot f_k P_k^\top \dot{\bar\sigma}_k .

    A ``None`` cotangent (a constant scope) is skipped, as in the VJP. Returns
    ``(dmean_in_dot, dvar_in_dot)``, the tangents of :func:`scope_moments_vjp`'s two gradients.
    """
    xp = namespace(moments.mean)
    dmean_in_dot = xp.zeros_like(moments.mean)
    dvar_in_dot = xp.zeros_like(moments.mean)
    pieces = zip(scopes.normalizers, scopes.means, scopes_dot.means, dmeans_dot, dvars, dvars_dot, strict=True)
    for scope, mean, mean_dot, dmean_dot, dvar, dvar_dot in pieces:
        if dmean_dot is not None:
            dmean_in_dot = dmean_in_dot + _pool_adjoint(dmean_dot, scope, groups, layout, xp)
        if dvar is not None:
            correction = scope_correction(scope, convention, layout, groups)
            spread_grad = _pool_adjoint(dvar, scope, groups, layout, xp) * correction
            spread_grad_dot = _pool_adjoint(dvar_dot, scope, groups, layout, xp) * correction
            dvar_in_dot = dvar_in_dot + spread_grad_dot
            dmean_in_dot = dmean_in_dot + 2.0 * (moments_dot.mean - mean_dot) * spread_grad + 2.0 * (moments.mean - mean) * spread_grad_dot
    return dmean_in_dot, dvar_in_dot


def reduce_to_scope(a: Array, scope: str, groups: int | None, xp: Any) -> Array:
    """Sum an ``(N, C)`` array down to the shape of a scope statistic (the adjoint of broadcasting).

    IN keeps ``(N, C)``; LN sums over channels to ``(N, 1)``; BN over the batch to ``(1, C)``;
    GN (stored repeated over its channels) keeps ``(N, C)`` because the repetition is already
    part of :func:`scope_moments`' output.
    """
    if scope == "ln":
        return xp.sum(a, axis=1, keepdims=True)
    if scope == "bn":
        return xp.sum(a, axis=0, keepdims=True)
    return a
