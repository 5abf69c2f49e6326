"""Argument checks shared by every op.

Each check raises before any computation starts, so nothing is ever returned half-computed, and
each message names the argument, what was received and what was expected.

Checks of structure (types, dtypes, shapes, options) need no array values and run everywhere.
Checks of values (finiteness, ...) read a value on the host, and every one goes through
:func:`require`: on NumPy, CuPy, PyTorch, array-api-strict and eager JAX arrays it reads one 0-d
boolean and raises at once. On a lazy Dask array that read would compute the user's graph behind
their back (SyncSN on a cluster would run twice), and under ``jax.jit`` there is no value to read,
so there :func:`require` does not read: a traced check is skipped, and a Dask check is skipped or,
inside :func:`deferred_checks`, collected as a lazy condition that the caller computes together
with the results (``docs/scaling-out.md``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import array_api_compat

from .._xp import Array, is_jax_tracer, is_real_floating, namespace, to_numpy_all, values_available


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


# --------------------------------------------------------------------------------------------
# Value checks: the one place an array value is read on the host
# --------------------------------------------------------------------------------------------


class DeferredChecks:
    """The value checks of lazy (Dask) arrays made inside :func:`deferred_checks`, not yet decided.

    Each is a lazy 0-d boolean (True: the check holds) and the error it raises otherwise, in the
    order the op made them. Nothing is computed until :meth:`verify`.
    """

    def __init__(self) -> None:
        self._checks: list[tuple[Array, Callable[[], Exception]]] = []

    def __len__(self) -> int:
        return len(self._checks)

    @property
    def conditions(self) -> tuple[Any, ...]:
        """The lazy 0-d booleans, in order: compute them together with the results
        (``dask.compute(y, checks.conditions)``) and pass the values to :meth:`verify`."""
        return tuple(condition for condition, _ in self._checks)

    def verify(self, values: Iterable[Any] | None = None) -> None:
        """Raise the error of the first check that does not hold (the op's own ``ValueError``).

        ``values`` are the computed :attr:`conditions`, in order; without them the conditions are
        computed here, in one ``dask.compute`` (a pass over the inputs they depend on).
        """
        values = to_numpy_all(*self.conditions) if values is None else list(values)
        if len(values) != len(self._checks):
            raise ValueError(f"values holds {len(values)} computed conditions, expected {len(self._checks)} (one per check, in order)")
        for (_, error), value in zip(self._checks, values, strict=True):
            if not bool(value):
                raise error()

    def _add(self, condition: Array, error: Callable[[], Exception]) -> None:
        self._checks.append((condition, error))


_DEFERRED: contextvars.ContextVar[DeferredChecks | None] = contextvars.ContextVar("refnorm_deferred_checks", default=None)


@contextlib.contextmanager
def deferred_checks() -> Iterator[DeferredChecks]:
    """Collect the value checks of lazy (Dask) arrays instead of skipping them.

    Outside this block an op called on Dask arrays skips its value checks (reading a value would
    compute the graph). Inside it, each check becomes a lazy condition of the graph::

        with refnorm.deferred_checks() as checks:
            y, cache, running = refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits)
        y, flags = dask.compute(y, checks.conditions)   # one pass over x for both
        checks.verify(flags)                            # the ValueError eager arrays raise at once

    Checks of eager arrays still raise at once, and JAX tracers are never checked
    (``refnorm.ops._validation.require``).
    """
    checks = DeferredChecks()
    token = _DEFERRED.set(checks)
    try:
        yield checks
    finally:
        _DEFERRED.reset(token)


def require(holds: Array, error: Exception | Callable[[], Exception]) -> None:
    """Raise ``error`` unless the 0-d boolean array ``holds`` is True: the one value check.

    ``error`` is the exception, or a callable that builds it (then a message is only formatted
    for a failure). What happens depends on whether values can be read
    (:func:`refnorm._xp.values_available`):

    * eager arrays (NumPy, CuPy, PyTorch, array-api-strict, JAX outside ``jit``): one host read
      of ``holds``, and the error is raised now;
    * a JAX tracer (inside ``jax.jit``, ``grad``, ``vmap``): skipped, there is no value yet;
    * a Dask array: skipped, or collected into the active :func:`deferred_checks` as a lazy
      condition. Never computed here.
    """
    build = error if callable(error) else (lambda: error)
    if values_available(holds):
        if not bool(holds):
            raise build()
        return
    if is_jax_tracer(holds):
        return
    collector = _DEFERRED.get()
    if collector is not None:
        collector._add(holds, build)


def check_finite(xp: Any, x: Array, name: str) -> None:
    """``ValueError`` when ``x`` holds NaN or infinity (a value check: :func:`require`)."""
    require(xp.all(xp.isfinite(x)), lambda: ValueError(f"{name} contains NaN or infinity; refnorm needs finite inputs"))


def check_finite_statistic(xp: Any, statistic: Array, name: str) -> None:
    """``ValueError`` unless a per-instance statistic (mean, variance) of the layer input ``name`` is finite.

    This is how the layers check their input (:func:`refnorm.ops.statistics.instance_moments` with
    ``check_finite=True``): the forward computes the ``(N, C)`` moments anyway, so checking them
    costs nothing next to a pass over ``x``. A NaN or infinity anywhere in an instance makes its
    mean NaN or infinite, so no non-finite input gets through. The check also rejects finite input
    so large that an instance's sum or sum of squared deviations overflows the dtype (beyond about
    ``3e38 / M`` in float32): its normalized output would be NaN or zero. On NumPy, an instance
    holding both ``+inf`` and ``-inf``, or a sum that overflows, first emits NumPy's own
    ``RuntimeWarning`` from the reduction (an elementwise check would not). A value check
    (:func:`require`).
    """
    require(
        xp.all(xp.isfinite(statistic)),
        lambda: ValueError(
            f"{name} contains NaN or infinity, or values so large that a per-instance mean or variance "
            f"overflows {statistic.dtype}; refnorm needs finite inputs"
        ),
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
