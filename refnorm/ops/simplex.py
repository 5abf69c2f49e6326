r"""Maps from logits onto the probability simplex, with their VJPs and JVPs.

Switchable Normalization turns each logit vector into importance ratios with one of these maps.
A *ratio function* is any object with the five methods of :class:`RatioFunction`; SN takes one
for the means and one for the variances, which is how Sparse SN reuses SN with SparsestMax
instead of softmax, and how a side fixed to a vertex stops receiving gradient.

All maps act on the last axis and accept any number of leading batch axes. Sparsemax and
SparsestMax (the ratio function of Sparse SN) live in :mod:`refnorm.ops.sparsestmax`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._validation import check_floating, check_like, check_same_dtype, check_values, describe, namespace_of
from .._xp import Array, asarray_on, namespace


@runtime_checkable
class RatioFunction(Protocol):
    r"""What SN needs from a map onto the simplex.

    ``forward`` returns the ratios and an auxiliary value (whatever the derivatives need);
    ``vjp``, ``jvp`` and ``hvp`` take that value back. ``hvp(dratios, ratios, aux, dlogits)`` is
    the second-order term of the layers' HVPs: the derivative of ``vjp(dratios, ...)`` along the
    logit tangent ``dlogits`` with ``dratios`` held fixed, the Hessian of
    :math:`\langle \bar w, \mathrm{ratio}(z) \rangle` times :math:`\dot z`. ``active_set`` tells
    the gradient checker which smooth piece of a piecewise-smooth map the point lies on (``None``
    for smooth maps).
    """

    def forward(self, logits: Array) -> tuple[Array, Any]: ...

    def vjp(self, dratios: Array, ratios: Array, aux: Any) -> Array: ...

    def jvp(self, dlogits: Array, ratios: Array, aux: Any) -> Array: ...

    def hvp(self, dratios: Array, ratios: Array, aux: Any, dlogits: Array) -> Array: ...

    def active_set(self, aux: Any) -> Any: ...


def check_simplex_input(logits: Any, name: str, K: int | None = None) -> Any:
    """Check the input of a map onto the simplex: a real floating array of shape ``(..., K)``, no
    axis of size 0 (``K`` given: exactly ``K`` entries on the last axis). Returns the namespace.
    Values are not looked at."""
    xp = namespace_of({name: logits})
    check_floating(xp, logits, name)
    shape = tuple(logits.shape)
    if len(shape) < 1 or any(size < 1 for size in shape):
        raise ValueError(f"{name} has shape {shape}, expected (..., K) with the simplex axis last and no axis of size 0")
    if K is not None and shape[-1] != K:
        raise ValueError(f"{name} has shape {shape}, expected (..., K) with K = {K} entries on the last axis")
    return xp


def _check_ratios_and(cotangent: Any, ratios: Any, name: str) -> Any:
    """A VJP's or JVP's arguments: ``ratios`` a forward's output (every entry in ``[0, 1]``),
    ``cotangent`` (named ``name``) of its library, dtype and exact shape (not broadcastable to it),
    finite."""
    xp = namespace_of({name: cotangent, "ratios": ratios})
    check_simplex_input(ratios, "ratios")
    check_values(xp, ratios, "ratios", nonnegative=True, at_most=1.0)
    check_like(xp, cotangent, name, ratios, "ratios")
    return xp


def softmax(logits: Array) -> Array:
    r"""Softmax over the last axis, :math:`w_k = e^{z_k - \max z} / \sum_j e^{z_j - \max z}`.

    ``logits``: a real floating array ``(..., K)``, ``K >= 1``, finite (any magnitude: the shift by
    the maximum keeps the exponentials in ``(0, 1]``).
    """
    xp = check_simplex_input(logits, "logits")
    check_values(xp, logits, "logits")
    return softmax_stage(logits)


def softmax_stage(logits: Array) -> Array:
    """:func:`softmax` on logits the caller has checked (a stage of a layer, EN's ratio generator): no
    check, no host synchronisation."""
    xp = namespace(logits)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    unnormalized = xp.exp(shifted)
    return unnormalized / xp.sum(unnormalized, axis=-1, keepdims=True)


def softmax_stage_vjp(dratios: Array, ratios: Array) -> Array:
    """:func:`softmax_vjp` on arguments the caller has checked (a stage's VJP)."""
    return _softmax_jacobian_product(dratios, ratios, namespace(dratios, ratios))


def _softmax_jacobian_product(v: Array, ratios: Array, xp: Any) -> Array:
    r""":math:`J v = w \odot (v - \langle w, v\rangle)`, :math:`J = \operatorname{diag}(w) - w w^\top` (symmetric)."""
    return ratios * (v - xp.sum(ratios * v, axis=-1, keepdims=True))


def softmax_vjp(dratios: Array, ratios: Array) -> Array:
    r"""VJP of :func:`softmax`: :math:`\partial L/\partial z = w \odot (g - \langle w, g\rangle)`.

    ``ratios`` is the forward's output, ``dratios`` the cotangent :math:`g`: of its library, dtype
    and exact shape, finite. The result is a new array: the official SyncSN backward wrote it into
    the array holding ``w`` and read the overwritten entries back (spec-notes §2.6), which corrupts
    components 1..K-1.
    """
    xp = _check_ratios_and(dratios, ratios, "dratios")
    return _softmax_jacobian_product(dratios, ratios, xp)


def softmax_jvp(dlogits: Array, ratios: Array) -> Array:
    r"""JVP of :func:`softmax`: :math:`\dot w = w \odot (\dot z - \langle w, \dot z\rangle)` (J is symmetric).

    ``dlogits`` must have the library, dtype and exact shape of ``ratios`` and be finite.
    """
    xp = _check_ratios_and(dlogits, ratios, "dlogits")
    return _softmax_jacobian_product(dlogits, ratios, xp)


def _check_structure_like(value: Any, name: str, ratios: Any) -> Any:
    """A ratio function's VJP or JVP argument: an array of the library, dtype and exact shape of
    ``ratios`` (values are the layer's, checked at its entry point). Returns the namespace."""
    xp = namespace_of({name: value, "ratios": ratios})
    check_floating(xp, value, name)
    check_floating(xp, ratios, "ratios")
    check_same_dtype("ratios", ratios, [(name, value)])
    if tuple(value.shape) != tuple(ratios.shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected the shape of ratios = {tuple(ratios.shape)}")
    return xp


def softmax_hvp(dratios: Array, ratios: Array, dlogits: Array) -> Array:
    r"""The derivative of :func:`softmax_vjp` along a logit tangent, the cotangent held fixed.

    With :math:`g` = ``dratios``, :math:`\dot z` = ``dlogits`` and
    :math:`\dot w = w \odot (\dot z - \langle w, \dot z\rangle)` (:func:`softmax_jvp`),
    differentiating :math:`J^\top g = w \odot (g - \langle w, g\rangle)` gives

    .. math::

        H \dot z = \dot w \odot (g - \langle w, g \rangle) - w\, \langle \dot w, g \rangle,

    the Hessian of :math:`\langle g, \mathrm{softmax}(z) \rangle` times :math:`\dot z` (a symmetric
    matrix: :math:`H = \operatorname{diag}(a) - a w^\top - w a^\top` with
    :math:`a = w \odot (g - \langle w, g\rangle)`).

    ``ratios`` is the forward's output (every entry in ``[0, 1]``); ``dratios`` and ``dlogits`` must
    have its library, dtype and exact shape and be finite.
    """
    xp = namespace_of({"dratios": dratios, "ratios": ratios, "dlogits": dlogits})
    # ratios first, so a bad ratios is named as such (not as a dtype or shape dratios fails to match);
    # then the cotangent and the tangent as softmax_vjp and softmax_jvp check them (finite included).
    check_simplex_input(ratios, "ratios")
    check_values(xp, ratios, "ratios", nonnegative=True, at_most=1.0)
    check_like(xp, dratios, "dratios", ratios, "ratios")
    check_like(xp, dlogits, "dlogits", ratios, "ratios")
    ratios_dot = _softmax_jacobian_product(dlogits, ratios, xp)
    centred = dratios - xp.sum(ratios * dratios, axis=-1, keepdims=True)
    return ratios_dot * centred - ratios * xp.sum(ratios_dot * dratios, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Softmax:
    """The ratio function of Switchable Normalization.

    Its methods are the stages SN runs, on logits and gradients the layer has checked: they check
    structure (array, dtype, shape), not values; :func:`softmax`, :func:`softmax_vjp` and
    :func:`softmax_jvp` check values too.
    """

    def forward(self, logits: Array) -> tuple[Array, None]:
        check_simplex_input(logits, "logits")
        return softmax_stage(logits), None

    def vjp(self, dratios: Array, ratios: Array, aux: None) -> Array:
        return _softmax_jacobian_product(dratios, ratios, _check_structure_like(dratios, "dratios", ratios))

    def jvp(self, dlogits: Array, ratios: Array, aux: None) -> Array:
        return _softmax_jacobian_product(dlogits, ratios, _check_structure_like(dlogits, "dlogits", ratios))

    def hvp(self, dratios: Array, ratios: Array, aux: None, dlogits: Array) -> Array:
        return softmax_hvp(dratios, ratios, dlogits)

    def active_set(self, aux: None) -> None:
        return None


@dataclass(frozen=True)
class FixedRatios:
    """Constant ratios that ignore the logits and pass no gradient (a side SSN has fixed).

    Parameters
    ----------
    ratios
        A point of the simplex, e.g. ``(0.0, 1.0, 0.0)`` for a side fixed to LN.
    """

    ratios: tuple[float, ...]

    def __post_init__(self) -> None:
        ratios = self.ratios
        if isinstance(ratios, str | bytes) or not isinstance(ratios, tuple | list):
            raise TypeError(f"FixedRatios needs ratios as a tuple of numbers such as (0.0, 1.0, 0.0), got {describe(ratios)}")
        for index, ratio in enumerate(ratios):
            if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
                raise TypeError(f"FixedRatios needs ratios as a tuple of numbers, got {describe(ratio)} at ratios[{index}]")
        values = tuple(float(r) for r in ratios)
        if len(values) < 1 or not all(math.isfinite(r) and r >= 0 for r in values) or abs(math.fsum(values) - 1.0) > 1e-12:
            raise ValueError(f"FixedRatios needs ratios on the simplex (finite, non-negative, summing to 1), got {tuple(ratios)}")
        object.__setattr__(self, "ratios", values)

    def forward(self, logits: Array) -> tuple[Array, None]:
        """The fixed ratios broadcast to the shape of ``logits`` (``(..., K)``, ``K = len(ratios)``), whose
        values are ignored (and not looked at)."""
        xp = check_simplex_input(logits, "logits", len(self.ratios))
        fixed = asarray_on(self.ratios, logits, xp)
        return xp.broadcast_to(fixed, logits.shape), None

    def vjp(self, dratios: Array, ratios: Array, aux: None) -> Array:
        """Zero: the ratios do not depend on the logits (``dratios`` shaped like ``ratios``)."""
        return _check_structure_like(dratios, "dratios", ratios).zeros_like(dratios)

    def jvp(self, dlogits: Array, ratios: Array, aux: None) -> Array:
        """Zero (``dlogits`` shaped like ``ratios``)."""
        return _check_structure_like(dlogits, "dlogits", ratios).zeros_like(dlogits)

    def hvp(self, dratios: Array, ratios: Array, aux: None, dlogits: Array) -> Array:
        return namespace(dlogits).zeros_like(dlogits)

    def active_set(self, aux: None) -> None:
        return None


SOFTMAX = Softmax()
"""The default ratio function."""
