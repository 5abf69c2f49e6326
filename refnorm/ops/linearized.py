"""The linearization of an op at a point: its output and its derivatives, as one value.

Every op has a ``*_linearize`` function returning a :class:`Linearized`; the gradient checker
(:func:`refnorm.gradcheck`) and the catalog's evaluation consume it. It lives with the ops, not
with the checker, so that the math never imports the tooling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Linearized(NamedTuple):
    """An op evaluated at a point, with what the checker needs to differentiate it.

    ``out`` is an array or a tuple of arrays. ``pullback(cotangent)`` takes a cotangent shaped
    like ``out`` and returns one gradient per argument (``None`` where the op does not
    differentiate that argument). ``pushforward(*tangents)`` takes one tangent per argument and
    returns a tangent shaped like ``out``. ``active_set`` is any value made of arrays, tuples and
    plain numbers: two points with equal active sets lie on the same smooth piece.
    ``hvp(cotangent, *tangents)`` is the second order: the derivative of ``pullback(cotangent)``
    along the tangents (one per argument), the cotangent held fixed; the Hessian of
    ``<cotangent, out>`` times the tangents, one array per argument like ``pullback``'s.
    """

    out: Any
    pullback: Callable[[Any], tuple[Any, ...]]
    pushforward: Callable[..., Any] | None = None
    active_set: Any = None
    hvp: Callable[..., tuple[Any, ...]] | None = None
