"""Argument checks shared by every op.

Each check raises before any computation starts, so nothing is ever returned half-computed, and
each message names the argument, what was received and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import array_api_compat

from .._xp import Array, all_finite, is_real_floating, namespace


def namespace_of(named: dict[str, Any]) -> Any:
    """The array namespace shared by the named arrays; ``TypeError`` naming any that is not an array.

    ``None`` values are skipped (optional arguments).
    """
    arrays = []
    for name, value in named.items():
        if value is None:
            continue
        if not array_api_compat.is_array_api_obj(value):
            raise TypeError(f"{name} must be an array (NumPy, CuPy, array-api-strict, PyTorch, ...), got {type(value).__name__}")
        arrays.append(value)
    try:
        return namespace(*arrays)
    except TypeError as error:
        raise TypeError(f"the arrays {', '.join(named)} must all come from one array library: {error}") from None


def check_floating(xp: Any, x: Array, name: str) -> None:
    """``TypeError`` unless ``x`` is an array with a real floating dtype."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if not is_real_floating(xp, x):
        raise TypeError(f"{name} has dtype {x.dtype}, expected a real floating dtype (float32 or float64)")


def check_same_dtype(reference_name: str, reference: Array, others: Iterable[tuple[str, Array]]) -> None:
    """``TypeError`` when any of ``others`` has another dtype than ``reference`` (no silent promotion)."""
    for name, array in others:
        if array.dtype != reference.dtype:
            raise TypeError(
                f"{name} has dtype {array.dtype}, expected {reference.dtype} (the dtype of {reference_name}); "
                "refnorm does not mix precisions"
            )


def check_shape(array: Array, name: str, expected: tuple[int, ...], meaning: str) -> None:
    """``ValueError`` unless ``array.shape == expected``; ``meaning`` spells the expected shape."""
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {meaning} = {tuple(expected)}")


def check_finite(xp: Any, x: Array, name: str) -> None:
    """``ValueError`` when ``x`` holds NaN or infinity."""
    if not all_finite(xp, x):
        raise ValueError(f"{name} contains NaN or infinity; refnorm needs finite inputs")


def check_finite_statistic(xp: Any, statistic: Array, name: str) -> None:
    """``ValueError`` unless a per-instance statistic (mean, variance) of the layer input ``name`` is finite.

    This is how the layers check their input (:func:`refnorm.ops.statistics.instance_moments` with
    ``check_finite=True``): the forward computes the ``(N, C)`` moments anyway, so checking them
    costs nothing next to a pass over ``x``. A NaN or infinity anywhere in an instance makes its
    mean NaN or infinite, so no non-finite input gets through. The check also rejects finite input
    so large that an instance's sum or sum of squared deviations overflows the dtype (beyond about
    ``3e38 / M`` in float32): its normalized output would be NaN or zero. On NumPy, an instance
    holding both ``+inf`` and ``-inf``, or a sum that overflows, first emits NumPy's own
    ``RuntimeWarning`` from the reduction (an elementwise check would not).
    """
    if not all_finite(xp, statistic):
        raise ValueError(
            f"{name} contains NaN or infinity, or values so large that a per-instance mean or variance "
            f"overflows {statistic.dtype}; refnorm needs finite inputs"
        )


def check_positive_number(value: Any, name: str) -> float:
    """``value`` as a float; ``TypeError`` unless a real number, ``ValueError`` unless finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a Python number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_nonnegative_number(value: Any, name: str) -> float:
    """``value`` as a float; ``TypeError`` unless a real number, ``ValueError`` unless finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a Python number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_unit_interval(value: Any, name: str) -> float:
    """``value`` as a float; ``ValueError`` unless ``0 <= value <= 1``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a Python number, got {type(value).__name__}")
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value
