r"""Maps from logits onto the probability simplex, with their VJPs and JVPs.

Switchable Normalization turns each logit vector into importance ratios with one of these maps.
A *ratio function* is any object with the five methods of :class:`RatioFunction`; SN takes one
for the means and one for the variances, which is how Sparse SN reuses SN with SparsestMax
instead of softmax, and how a side fixed to a vertex stops receiving gradient.

All maps act on the last axis and accept any number of leading batch axes. Sparsemax and
SparsestMax (the ratio function of Sparse SN) live in :mod:`refnorm.ops.sparsestmax`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._validation import check_floating, check_same_dtype, namespace_of
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


def softmax(logits: Array) -> Array:
    r"""Softmax over the last axis, :math:`w_k = e^{z_k - \max z} / \sum_j e^{z_j - \max z}`."""
    xp = namespace(logits)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    unnormalized = xp.exp(shifted)
    return unnormalized / xp.sum(unnormalized, axis=-1, keepdims=True)


def softmax_vjp(dratios: Array, ratios: Array) -> Array:
    r"""VJP of :func:`softmax`: :math:`\partial L/\partial z = w \odot (g - \langle w, g\rangle)`.

    The result is a new array: the official SyncSN backward wrote it into the array holding
    ``w`` and read the overwritten entries back (spec-notes §2.6), which corrupts components 1..K-1.
    """
    xp = namespace(dratios, ratios)
    return ratios * (dratios - xp.sum(ratios * dratios, axis=-1, keepdims=True))


def softmax_jvp(dlogits: Array, ratios: Array) -> Array:
    r"""JVP of :func:`softmax`: :math:`\dot w = w \odot (\dot z - \langle w, \dot z\rangle)` (J is symmetric)."""
    return softmax_vjp(dlogits, ratios)


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
    """
    xp = namespace_of({"dratios": dratios, "ratios": ratios, "dlogits": dlogits})
    for name, value in (("dratios", dratios), ("dlogits", dlogits)):
        check_floating(xp, value, name)
        check_same_dtype("ratios", ratios, [(name, value)])
        if tuple(value.shape) != tuple(ratios.shape):
            raise ValueError(f"{name} has shape {tuple(value.shape)}, expected the shape of ratios = {tuple(ratios.shape)}")
    ratios_dot = softmax_jvp(dlogits, ratios)
    centred = dratios - xp.sum(ratios * dratios, axis=-1, keepdims=True)
    return ratios_dot * centred - ratios * xp.sum(ratios_dot * dratios, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Softmax:
    """The ratio function of Switchable Normalization."""

    def forward(self, logits: Array) -> tuple[Array, None]:
        return softmax(logits), None

    def vjp(self, dratios: Array, ratios: Array, aux: None) -> Array:
        return softmax_vjp(dratios, ratios)

    def jvp(self, dlogits: Array, ratios: Array, aux: None) -> Array:
        return softmax_jvp(dlogits, ratios)

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
        values = tuple(float(r) for r in self.ratios)
        if len(values) < 1 or any(r < 0 for r in values) or abs(sum(values) - 1.0) > 1e-12:
            raise ValueError(f"FixedRatios needs a point of the simplex (non-negative, summing to 1), got {self.ratios}")
        object.__setattr__(self, "ratios", values)

    def forward(self, logits: Array) -> tuple[Array, None]:
        # The layer's entry point has checked that the logits have len(self.ratios) entries.
        xp = namespace(logits)
        fixed = asarray_on(self.ratios, logits, xp)
        return xp.broadcast_to(fixed, logits.shape), None

    def vjp(self, dratios: Array, ratios: Array, aux: None) -> Array:
        return namespace(dratios).zeros_like(dratios)

    def jvp(self, dlogits: Array, ratios: Array, aux: None) -> Array:
        return namespace(dlogits).zeros_like(dlogits)

    def hvp(self, dratios: Array, ratios: Array, aux: None, dlogits: Array) -> Array:
        return namespace(dlogits).zeros_like(dlogits)

    def active_set(self, aux: None) -> None:
        return None


SOFTMAX = Softmax()
"""The default ratio function."""
