"""Argument checks shared by every op: the one error contract of refnorm's public API.

Every public function checks its arguments at its entry point with these helpers, before any
computation starts, so nothing is ever returned half-computed, and the stages behind the entry
point trust their inputs. The contract (``docs/errors.md``):

* ``TypeError`` for an argument of the wrong kind: not an array, ``None`` where an array is
  required, a Python scalar or a list for an array, an integer or complex dtype, two dtypes mixed,
  arrays of two libraries, a container of the wrong type (a tuple for ``RunningStats``, another
  op's cache);
* ``ValueError`` for an argument of the right kind with a wrong shape or value: wrong rank or
  length, an empty axis, NaN or infinity, a negative variance, a number out of range, an unknown
  option;
* each message names the argument (``gamma``, ``running.var``, ``xs[1]``), says what was received
  and what was expected.

Checks of *values* (finiteness, signs) need the array's contents on the host. They all go
through :func:`check_values`, and that through :func:`require`, the only function in
``refnorm.ops`` that turns an array into a Python ``bool``: one reduction, one host
synchronisation per checked array, on NumPy, CuPy, PyTorch, array-api-strict and eager JAX
arrays. On a lazy Dask array that read would compute the user's graph behind their back (SyncSN on
a cluster would run twice), and under ``jax.jit`` (or ``grad``, ``vmap``) there is no value to
read, so there :func:`require` does not read: a traced check is skipped, and a Dask check is
skipped or, inside :func:`deferred_checks`, collected as a lazy condition that the caller computes
together with the results (``docs/scaling-out.md``). Checks of structure (types, dtypes, shapes,
options) need no values and run on every library, traced and lazy arrays included.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import numbers
import re
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import array_api_compat
import numpy as np

from .._xp import (
    Array,
    device,
    is_jax_tracer,
    is_real_floating,
    namespace,
    to_numpy_all,
    values_available,
)


def describe(value: Any) -> str:
    """A short description of what was received, for messages: ``None``, ``list``, ``float (0.5)``, ``str ('10')``."""
    if value is None:
        return "None"
    if isinstance(value, bool | int | float | complex | str):
        return f"{type(value).__name__} ({value!r})"
    return type(value).__name__


def library_of(array: Array) -> str:
    """The name of the array library ``array`` comes from (``numpy``, ``torch``, ``array_api_strict``, ...)."""
    return type(array).__module__.split(".")[0]


def _mixed_libraries_message(arrays: Mapping[str, Array]) -> str:
    """Which of the named arrays come from which library, e.g. ``x is a torch array; gamma, beta are numpy arrays``."""
    by_library: dict[str, list[str]] = {}
    for name, array in arrays.items():
        by_library.setdefault(library_of(array), []).append(name)
    if len(by_library) < 2:  # one module name, and still incompatible: say what array-api-compat saw
        kinds = ", ".join(f"{name} ({type(array).__module__}.{type(array).__name__})" for name, array in arrays.items())
        return f"the arrays {kinds} must all come from one array library"
    parts = [
        f"{names[0]} is {'an' if library[0] in 'aeiou' else 'a'} {library} array" if len(names) == 1 else f"{', '.join(names)} are {library} arrays"
        for library, names in by_library.items()
    ]
    return f"{'; '.join(parts)}: the array arguments must all come from one array library"


def _check_one_device(arrays: Mapping[str, Array]) -> None:
    """``ValueError`` naming two arrays on different devices (where every array can tell its device)."""
    if all(isinstance(array, np.ndarray | np.generic) for array in arrays.values()):
        return  # NumPy has one device
    devices = {}
    for name, array in arrays.items():
        if is_jax_tracer(array):
            continue  # traced by jax.jit: placed where the jitted function runs, nothing to compare
        try:
            devices[name] = device(array)
        except Exception:  # noqa: BLE001 - an array that cannot tell its device (a traced one): nothing to compare
            return
    if not devices:
        return
    first_name, first = next(iter(devices.items()))
    for name, where in devices.items():
        if where != first:
            raise ValueError(f"{name} is on device {where}, but {first_name} is on {first}; expected every array on one device")


def namespace_of(named: Mapping[str, Any], *, optional: Iterable[str] = ()) -> Any:
    """The array namespace shared by the named arrays.

    Every value must be an array (of any array-API library), except those named in ``optional``,
    which may also be ``None`` (and are then skipped). ``TypeError`` naming the first value that is
    not an array (``None``, a Python scalar, a list, ...) and, for arrays of two libraries, saying
    which arguments come from which; ``ValueError`` for arrays on two devices.
    """
    optional = set(optional)
    arrays: dict[str, Array] = {}
    for name, value in named.items():
        if value is None and name in optional:
            continue
        if not array_api_compat.is_array_api_obj(value):
            expected = "an array or None" if name in optional else "an array"
            raise TypeError(f"{name} must be {expected} (NumPy, CuPy, array-api-strict, PyTorch, ...), got {describe(value)}")
        if isinstance(value, np.ma.MaskedArray):  # some operations would honour its mask and others not
            raise TypeError(f"{name} is a masked array; refnorm has no masks, pass an ndarray ({name}.filled(value) or np.asarray({name}))")
        arrays[name] = value
    if not arrays:
        raise TypeError(f"{', '.join(named)} must include at least one array, got only None")
    try:
        xp = namespace(*arrays.values())
    except TypeError:
        raise TypeError(_mixed_libraries_message(arrays)) from None
    _check_one_device(arrays)
    return xp


def check_floating(xp: Any, x: Array, name: str) -> None:
    """``TypeError`` unless ``x`` is an array with a real floating dtype."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array, got {describe(x)}")
    if not is_real_floating(xp, x):
        raise TypeError(f"{name} has dtype {x.dtype}, expected a real floating dtype (float32 or float64)")


def _native(dtype: Any) -> Any:
    """A NumPy dtype in native byte order (byte order is how values are stored, not their precision:
    a big-endian ``>f8`` read from a file is float64); other libraries' dtypes unchanged."""
    return dtype.newbyteorder("=") if isinstance(dtype, np.dtype) else dtype


def check_same_dtype(reference_name: str, reference: Array, others: Iterable[tuple[str, Array]]) -> None:
    """``TypeError`` when any of ``others`` has another dtype than ``reference`` (no silent promotion)."""
    for name, array in others:
        if _native(array.dtype) != _native(reference.dtype):
            raise TypeError(
                f"{name} has dtype {array.dtype}, expected {reference.dtype} (the dtype of {reference_name}); "
                "refnorm does not mix precisions"
            )


def check_shape(array: Array, name: str, expected: tuple[int, ...], meaning: str) -> None:
    """``ValueError`` unless ``array.shape == expected``; ``meaning`` spells the expected shape."""
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {meaning} = {tuple(expected)}")


def check_like(xp: Any, value: Array, name: str, like: Array, like_name: str) -> None:
    """A cotangent or tangent ``value``: floating, of the dtype and exactly the shape of ``like``
    (not broadcastable to it: a ``(4, K)`` cotangent of a ``(K,)`` output is a caller's bug that
    broadcasting would hide), and finite."""
    check_floating(xp, value, name)
    check_same_dtype(like_name, like, [(name, value)])
    if tuple(value.shape) != tuple(like.shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected the shape of {like_name} = {tuple(like.shape)}")
    check_values(xp, value, name)


# --------------------------------------------------------------------------------------------
# Values: the one place an array's contents are inspected
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
        computed here, in one ``dask.compute`` (a pass over the inputs they depend on), with
        NumPy's ``RuntimeWarning`` silenced (``_compute_quietly``).
        """
        values = _compute_quietly(*self.conditions) if values is None else list(values)
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
    (``refnorm._xp.values_available``):

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


def check_values(
    xp: Any,
    array: Array,
    name: str,
    *,
    nonnegative: bool = False,
    positive: bool = False,
    at_most: float | None = None,
    message: str | None = None,
) -> None:
    """``ValueError`` unless every element of ``array`` is finite (and ``>= 0`` when ``nonnegative``,
    ``> 0`` when ``positive``, ``<= at_most`` when given).

    The one value check of refnorm's ops: every check that needs an array's contents (NaN or
    infinity in an input, an upstream gradient or a tangent; a negative running variance; ratios
    outside ``[0, 1]``; a statistic that overflowed) calls this, with one reduction and one host
    synchronisation (:func:`require`: skipped under ``jax.jit``, skipped or deferred on Dask).
    ``message`` replaces the message (the default names ``name`` and says what is wrong; the
    failure path looks further to say so).
    """
    valid = xp.isfinite(array)
    if nonnegative:
        valid = valid & (array >= 0.0)
    if positive:
        valid = valid & (array > 0.0)
    if at_most is not None:
        valid = valid & (array <= at_most)
    require(xp.all(valid), lambda: _values_error(xp, array, name, nonnegative=nonnegative, positive=positive, at_most=at_most, message=message))


def _values_error(
    xp: Any, array: Array, name: str, *, nonnegative: bool, positive: bool, at_most: float | None, message: str | None
) -> ValueError:
    """The error of a failed :func:`check_values`: ``message``, or which condition fails and an entry
    that fails it. Only called on the failure path; for a Dask array (a deferred check that failed,
    :meth:`DeferredChecks.verify`) the few 0-d reductions it reads are computed together, once."""
    if message is not None:
        return ValueError(message)
    finite, nonnegative_entries, positive_entries, smallest, largest = (
        _read(xp.all(xp.isfinite(array)), xp.all(array >= 0.0), xp.all(array > 0.0), xp.min(array), xp.max(array))
    )  # fmt: skip
    if not bool(finite):
        return ValueError(f"{name} contains NaN or infinity; refnorm needs finite inputs")
    if (nonnegative or positive) and not bool(nonnegative_entries):
        return ValueError(f"{name} has a negative entry ({float(smallest)!r}); expected every entry >= 0")
    if positive and not bool(positive_entries):
        return ValueError(f"{name} has an entry 0; expected every entry > 0")
    return ValueError(f"{name} has an entry above {at_most} ({float(largest)!r}); expected every entry <= {at_most}")


def _read(*arrays: Array) -> list[Any]:
    """0-d arrays whose values are read next: as they are where values are available, else computed
    together (one ``dask.compute``, ``_compute_quietly``)."""
    return list(arrays) if all(values_available(a) for a in arrays) else _compute_quietly(*arrays)


def _compute_quietly(*arrays: Array) -> list[Any]:
    """Host copies of lazy arrays, computed together with NumPy's ``RuntimeWarning`` (overflow,
    invalid value) silenced.

    The arrays are the conditions of deferred checks, or the reductions that word a failed one's
    message. Eagerly, an op raises at its first failed check, and computes what may overflow under
    :func:`overflow_checked_afterwards`; deferred, every condition is computed at once, so the
    conditions after a failed one run on input the op would have refused (the square root of a
    negative running variance), outside that ``errstate``. Their warnings say what the failed check
    says, in NumPy's words; a caller running with warnings as errors would get them instead of
    the op's ``ValueError``. (The filter is process-wide, so it reaches the threads of Dask's
    threaded scheduler; a ``distributed`` worker logs its own.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return to_numpy_all(*arrays)


@contextlib.contextmanager
def overflow_checked_afterwards() -> Any:
    """Silence NumPy's overflow and invalid-value ``RuntimeWarning`` in a computation whose result
    refnorm checks itself right after (:func:`check_values`), so a caller running with warnings as
    errors gets refnorm's ``ValueError`` naming the argument, not NumPy's warning. Other libraries
    do not warn; for them this does nothing."""
    with np.errstate(over="ignore", invalid="ignore"):
        yield


def check_finite(xp: Any, x: Array, name: str) -> None:
    """``ValueError`` when ``x`` holds NaN or infinity (:func:`check_values`)."""
    check_values(xp, x, name)


def check_finite_statistic(xp: Any, statistic: Array, name: str) -> None:
    """``ValueError`` unless a statistic (mean, variance) of the layer input ``name`` is finite.

    This is how the layers check their input (:func:`refnorm.ops.statistics.instance_moments` with
    ``check_finite=True``): the forward computes the ``(N, C)`` moments anyway, so checking them
    costs nothing next to a pass over ``x``. A NaN or infinity anywhere in an instance makes its
    mean NaN or infinite, so no non-finite input gets through. The check also rejects finite input
    so large that an instance's sum or sum of squared deviations overflows the dtype (beyond about
    ``3e38 / M`` in float32), and, applied to the pooled statistics of every scope
    (:func:`refnorm.ops.running.use_running_statistics`), input whose instance means lie so far
    apart that a pooled variance overflows (``x[0] += 3e154`` in float64): its normalized output
    would be NaN or zero. The reductions that may overflow run under
    :func:`overflow_checked_afterwards`, so NumPy's own ``RuntimeWarning`` does not precede the
    ``ValueError``.
    """
    check_values(
        xp, statistic, name,
        message=(
            f"{name} contains NaN or infinity, or values so large (or so far apart) that a mean or variance "
            f"overflows {statistic.dtype}; refnorm needs finite inputs whose statistics are finite"
        ),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Python numbers and options
# --------------------------------------------------------------------------------------------


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a Python number, got {describe(value)}")
    return float(value)


def check_positive_number(value: Any, name: str) -> float:
    """``value`` as a float; ``TypeError`` unless a real number, ``ValueError`` unless finite and > 0."""
    number = _real(value, name)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_nonnegative_number(value: Any, name: str) -> float:
    """``value`` as a float; ``TypeError`` unless a real number, ``ValueError`` unless finite and >= 0."""
    number = _real(value, name)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_finite_number(value: Any, name: str) -> float:
    """``value`` as a float; ``TypeError`` unless a real number, ``ValueError`` unless finite."""
    number = _real(value, name)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def check_unit_interval(value: Any, name: str) -> float:
    """``value`` as a float; ``ValueError`` unless ``0 <= value <= 1``."""
    number = _real(value, name)
    if not (0.0 <= number <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return number


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int; ``TypeError`` unless a Python (or NumPy) integer, not a bool; ``ValueError`` below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """``TypeError`` unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {describe(value)}")
    return value


def check_name(value: Any, name: str) -> str:
    """``TypeError`` unless ``value`` is a non-empty string (an argument's name used in messages)."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str, got {describe(value)}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """``value``; ``TypeError`` unless a str, ``ValueError`` unless one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {', '.join(map(repr, choices))}; got {describe(value)}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


# --------------------------------------------------------------------------------------------
# eps: the smallest value that keeps (var + eps)^(-1/2) and the backward finite
# --------------------------------------------------------------------------------------------


EPS_HEADROOM = 8.0
"""How far below the dtype's largest value :math:`r^3` stays at the smallest ``eps``
(:func:`smallest_eps`): room for the rounding of :math:`r` and for the factors of order one
(:math:`\tfrac12`, 2) the backward multiplies :math:`r^3` by."""


def smallest_eps(xp: Any, dtype: Any) -> float:
    r"""The smallest ``eps`` a layer accepts in ``dtype``: :math:`(\text{finfo.max} / 8)^{-2/3}`.

    Derivation. A layer normalizes with :math:`r = (\sigma^2 + \epsilon)^{-1/2}`, and
    :math:`\sigma^2 \ge 0`, so :math:`r \le \epsilon^{-1/2}`, with equality for an instance of
    constant input (:math:`\sigma^2 = 0`, the case the bug reports hit). The forward forms
    :math:`r`; the backward forms :math:`r^2` (SN's :math:`B = -\tfrac12 r^2(\dots)`, EN's
    :math:`\partial L/\partial\sigma^2_k`) and, through the derivative
    :math:`\partial r/\partial\sigma^2 = -\tfrac12 r^3`, products of size :math:`r^3`. All of
    them are finite for every :math:`\sigma^2 \ge 0` when :math:`\epsilon^{-3/2} \le
    \text{finfo.max} / 8` (:data:`EPS_HEADROOM`), i.e. :math:`\epsilon \ge (\text{finfo.max}/8)^{-2/3}`:
    about ``8.2e-26`` in float32 and ``1.3e-205`` in float64. That bound is also a normal
    number, far above the smallest subnormal, so :math:`\sigma^2 + \epsilon > 0` holds in the
    dtype. Below it, constant input gives ``y`` NaN (``eps = 1e-46`` rounds to 0 in float32) or
    ``dx`` NaN (``eps = 1e-40`` in float32, ``1e-310`` in float64: :math:`r^2` overflows and meets
    a zero).
    """
    return (float(xp.finfo(dtype).max) / EPS_HEADROOM) ** (-2.0 / 3.0)


def check_eps(value: Any, xp: Any, dtype: Any, name: str = "eps") -> float:
    """``eps`` as a float: a finite number > 0 (``TypeError``/``ValueError``), at least
    :func:`smallest_eps` of ``dtype`` and at most its largest finite value (``ValueError``)."""
    eps = check_positive_number(value, name)
    smallest = smallest_eps(xp, dtype)
    if eps < smallest:
        raise ValueError(
            f"{name} = {value!r} is too small for {dtype}: expected {name} >= {smallest:.3g} ((finfo.max / 8) ** (-2/3)), "
            "the smallest value for which (var + eps)^(-1/2) and the powers of it the backward forms stay finite "
            "when an instance's variance is 0"
        )
    largest = float(xp.finfo(dtype).max)
    if eps > largest:
        raise ValueError(f"{name} = {value!r} overflows {dtype}; expected {name} <= {largest:.6g}")
    return eps


# --------------------------------------------------------------------------------------------
# Records refnorm returns and takes back (caches, SparsestMax's stages): their structure
# --------------------------------------------------------------------------------------------


class _ArrayHint:
    """Stands for ``Array`` (an alias of ``Any``) when a record's annotations are resolved."""


@functools.cache
def _record_plan(cls: type) -> tuple[tuple[str, Callable[[Any], bool], str], ...]:
    """For each field of a NamedTuple class: its name, a test of a value against its annotation
    (``Array`` resolved as :class:`_ArrayHint`) and the annotation as a reader writes it. Built once
    per class."""
    module = sys.modules[cls.__module__].__dict__
    hints = typing.get_type_hints(cls, globalns=module, localns={"Array": _ArrayHint})
    return tuple((field, _test_of(hints.get(field, Any)), _hint_name(hints.get(field, Any))) for field in cls._fields)


def _test_of(hint: Any) -> Callable[[Any], bool]:
    """A function telling whether a value has the type ``hint`` (annotations it cannot interpret, a
    callable or a protocol, accept anything)."""
    if hint is Any:
        return lambda value: True
    if hint is _ArrayHint:
        return array_api_compat.is_array_api_obj
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = tuple(_test_of(option) for option in typing.get_args(hint))
        return lambda value: any(test(value) for test in options)
    if origin is tuple:
        arguments = typing.get_args(hint)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            item = _test_of(arguments[0])
            return lambda value: isinstance(value, tuple) and all(item(v) for v in value)
        items = tuple(_test_of(a) for a in arguments)
        return lambda value: isinstance(value, tuple) and len(value) == len(items) and all(t(v) for t, v in zip(items, value, strict=True))
    if hint is float:
        return lambda value: isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(hint, type) and not getattr(hint, "_is_protocol", False):
        return lambda value: isinstance(value, hint)
    return lambda value: True


def _hint_name(hint: Any) -> str:
    """``tuple[int, ...]``, ``Layout``, ``int | None``: an annotation as a reader writes it."""
    if hint is _ArrayHint:
        return "an array"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return re.sub(r"\b[\w.]+\.(\w+)", r"\1", str(hint)).replace("_ArrayHint", "Array")


def _is_named_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def check_record(record: Any, name: str) -> None:
    """``TypeError`` naming the first field (``cache.mixture.inv_std``) of a NamedTuple ``record``
    whose value does not have its annotated type, through every nested NamedTuple.

    A record refnorm returns and takes back (a forward's cache, SparsestMax's stages) is checked
    this way before it is used, so one assembled or edited by hand fails with a message instead of
    an ``AttributeError`` deep inside a backward. Types only: the shapes and values of a record's
    arrays are the forward's, and are trusted, and so are the fields of a frozen dataclass in it
    (the layer's config, which only the forward builds).
    """
    for field, test, expected in _record_plan(type(record)):
        value = getattr(record, field)
        if not test(value):
            raise TypeError(f"{name}.{field} must be {expected}, got {describe(value)}; pass what the forward returned, unchanged")
        if _is_named_tuple(value):
            check_record(value, f"{name}.{field}")
        elif isinstance(value, tuple):
            for index, item in enumerate(value):
                if _is_named_tuple(item):
                    check_record(item, f"{name}.{field}[{index}]")
