r"""Finite-difference gradient checking of hand-derived backward passes (SPEC §5).

An op is checked through its *linearization*: a function ``fun(*args) -> Linearized`` returning
the output, a ``pullback`` (the VJP, one gradient per argument) and optionally a ``pushforward``
(the JVP) and an ``active_set`` (which smooth piece of a piecewise-smooth function the point is on).

**Directional (dot-product) test**, the default. For argument ``j``, a random direction ``u``
and a random output cotangent ``v`` (both drawn from a seeded NumPy generator, float64):

.. math::

    \underbrace{\langle \mathrm{pullback}(v)_j,\ u \rangle}_{\text{analytic}}
    \quad\text{vs}\quad
    \underbrace{\frac{d}{dt}\, \big\langle v,\ f(\dots, a_j + t u, \dots) \big\rangle \Big|_{t=0}}_{\text{numeric}}

The numeric derivative comes from :func:`scipy.differentiate.derivative` with ``order=4`` and
``step_factor=2``: its nested 4th-order central stencil on ``t = ±h, ±h/2`` is exactly one
Richardson extrapolation of central differences, :math:`(4 D(h/2) - D(h)) / 3`, and the step is
halved (up to three times) until successive estimates agree to ``1e-11``; the change between the
last two iterates is the error estimate reported. A direction passes when

.. math::

    |\text{analytic} - \text{numeric}| \le \text{rtol} \cdot \text{scale}
    + \text{atol} \cdot \lVert v \rVert \lVert u \rVert,
    \qquad \text{scale} = \max\big(\lVert \mathrm{pullback}(v)_j \rVert \lVert u \rVert,
    |\text{numeric}|\big),

``scale`` being the Cauchy–Schwarz bound of the analytic value, so a cancellation inside the dot
product cannot hide an error. Nothing passes on the strength of a large error estimate: when the
finite differences are too noisy to decide, the direction fails and says so.

**Kink guard.** If the op reports an ``active_set``, it is recorded at every point the finite
difference evaluates. A direction along which it changes crosses a kink (a sparsemax support or
SparsestMax stage change), where the derivative does not exist; the checker retries with a step
100 times smaller and, if the kink is still inside the stencil, reports the direction as
*skipped*: never as passed.

**Adjoint test.** When the op has a ``pushforward``, ``<v, J u>`` (JVP) and ``<J^T v, u>`` (VJP)
must agree to rounding: an exact test, no finite differences. In Jacobian mode the JVP's Jacobian
(one pushforward per input element) must equal the VJP's (one pullback per output element).

**Full Jacobian** (``mode="jacobian"``, tiny inputs): the analytic Jacobian row by row (one
pullback per output element) against :func:`scipy.differentiate.jacobian` column by column; the
result names the worst ``(output index, input index)`` entry.

**Fail closed.** The checker judges what the op under test returns; it never lets a malformed
answer pass. Each of these is a *failed* argument (a verdict, never an exception), with a message
that says where:

* a pullback or pushforward that raises, returns something that is not a tuple of arrays (one
  gradient per argument; a tangent shaped like the output), the wrong number of gradients, a
  gradient of another shape or dtype than its argument (a float32 gradient of a float64 argument
  included), or ``None`` for an argument being checked;
* any NaN or infinity in a gradient, a pushforward, a finite-difference derivative or a Jacobian
  entry (the message names the argument, the direction or the entry);
* ``fun`` raising at a point the finite differences evaluate;
* an output that is not finite at the point itself (every argument fails: nothing can be checked);
* an argument with nothing compared: no elements, or every direction (column) skipped at a kink.

What is wrong with the *call* is a ``TypeError`` or ``ValueError`` naming the parameter: ``fun``
not callable or not returning a :class:`~refnorm.ops.linearized.Linearized`, an output that is not
a real floating array (or tuple of them), and every parameter of :func:`gradcheck` (``args``
float64 arrays with finite values; ``names`` unique strings, one per argument; ``wrt`` known
names; ``mode``; ``directions`` an int >= 1; ``seed`` an int >= 0; ``rtol`` and ``adjoint_rtol``
in ``(0, 1)``; ``atol`` finite and >= 0; ``step`` in ``(0, 1]``). An exception raised by ``fun`` at
the point itself propagates unchanged (the point, not the gradient, is wrong).

Errors that do not apply are NaN, never 0: :attr:`ArgumentResult.max_rel_error` is NaN where the
absolute tolerance dominates every direction (a zero gradient has no scale to be relative to), and
both maxima are NaN where nothing was compared or a derivative was not finite.

All checking happens in float64 on the host (NumPy): a float32 implementation is compared
against the float64 reference, never against finite differences.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import scipy.differentiate

from .._xp import to_numpy
from ..ops.linearized import Linearized

MODES = ("directional", "jacobian")
"""The two kinds of check :func:`gradcheck` runs."""


@dataclass(frozen=True)
class DirectionResult:
    """One direction of the directional test for one argument."""

    status: str
    """``"passed"``, ``"failed"`` or ``"skipped"`` (the direction crossed a kink)."""
    analytic: float
    numeric: float
    abs_error: float
    rel_error: float
    """``abs_error / scale``; NaN where ``atol`` dominates the tolerance (a gradient that is zero,
    or zero up to rounding, has no scale to be relative to), and where a value was not finite."""
    fd_error: float
    """scipy's estimate of the error of ``numeric``."""
    step: float
    note: str = ""


@dataclass(frozen=True)
class ArgumentResult:
    """All directions (or the full Jacobian) checked for one argument."""

    name: str
    directions: tuple[DirectionResult, ...] = ()
    adjoint_error: float | None = None
    """Largest relative mismatch between JVP and VJP (None without a JVP, or when not computed)."""
    worst_entry: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    """Jacobian mode: the (output index, input index) of the largest error."""
    jacobian_abs_error: float | None = None
    jacobian_rel_error: float | None = None
    jacobian_skipped_columns: int = 0
    failures: tuple[str, ...] = ()
    mode: str = "directional"
    jacobian_columns: int = 0
    """Jacobian mode: the number of Jacobian columns (input elements) compared."""

    @property
    def passed(self) -> bool:
        """No failure, and at least one direction (or Jacobian column) compared."""
        return not self.failures and self.checked > 0

    @property
    def checked(self) -> int:
        """Number of directions (or Jacobian columns) that were actually compared."""
        if self.mode == "jacobian":
            return self.jacobian_columns
        return sum(d.status != "skipped" for d in self.directions)

    @property
    def skipped(self) -> int:
        return sum(d.status == "skipped" for d in self.directions) + self.jacobian_skipped_columns

    @property
    def nonfinite(self) -> bool:
        """Whether an error could not be computed (a NaN or infinite derivative)."""
        if self.mode == "jacobian":
            return self.jacobian_abs_error is not None and not math.isfinite(self.jacobian_abs_error)
        return any(not math.isfinite(d.abs_error) for d in self.directions if d.status != "skipped")

    @property
    def max_abs_error(self) -> float:
        """Largest absolute error compared; NaN when nothing was compared or an error is NaN."""
        if self.mode == "jacobian":
            return self.jacobian_abs_error if self.jacobian_abs_error is not None else math.nan
        errors = [d.abs_error for d in self.directions if d.status != "skipped"]
        if not errors or any(math.isnan(e) for e in errors):
            return math.nan
        return max(errors)

    @property
    def max_rel_error(self) -> float:
        """Largest relative error where one applies; NaN where none applies (every direction judged
        in absolute terms, nothing compared) and where an error is not finite."""
        if self.mode == "jacobian":
            return self.jacobian_rel_error if self.jacobian_rel_error is not None else math.nan
        checked = [d for d in self.directions if d.status != "skipped"]
        if not checked or any(math.isnan(d.abs_error) for d in checked):
            return math.nan
        if any(math.isinf(d.abs_error) for d in checked):
            return math.inf
        applicable = [d.rel_error for d in checked if not math.isnan(d.rel_error)]
        return max(applicable) if applicable else math.nan


def _nan_max(values: Sequence[float]) -> float:
    """Largest of ``values`` ignoring NaN ("not applicable"); NaN when all are NaN or none given."""
    present = [v for v in values if not math.isnan(v)]
    return max(present) if present else math.nan


def format_error(value: float) -> str:
    """An error for a table: ``1.23e-09``, ``inf``, or ``n/a`` for NaN (nothing applies, or nothing
    could be computed: the verdict says which)."""
    return "n/a" if math.isnan(value) else f"{value:.2e}"


@dataclass(frozen=True)
class GradcheckResult:
    """The outcome of :func:`gradcheck`: one :class:`ArgumentResult` per checked argument."""

    arguments: tuple[ArgumentResult, ...]
    mode: str
    rtol: float
    atol: float
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """True when there is at least one argument and every one passed (an argument with only
        skipped directions fails)."""
        return bool(self.arguments) and all(a.passed for a in self.arguments)

    def __getitem__(self, name: str) -> ArgumentResult:
        for argument in self.arguments:
            if argument.name == name:
                return argument
        raise KeyError(name)

    @property
    def max_abs_error(self) -> float:
        """Largest absolute error over the arguments; NaN if any argument's is NaN (nothing
        compared, or a non-finite derivative)."""
        values = [a.max_abs_error for a in self.arguments]
        if not values or any(math.isnan(v) for v in values):
            return math.nan
        return max(values)

    @property
    def max_rel_error(self) -> float:
        """Largest relative error where one applies; NaN where none applies, or where any argument
        has no finite error (nothing compared, a non-finite derivative)."""
        if not self.arguments or any(math.isnan(a.max_abs_error) for a in self.arguments):
            return math.nan
        return _nan_max([a.max_rel_error for a in self.arguments])

    def summary(self) -> str:
        """A plain-text table: one row per argument (``n/a``: no error applies or none was computed;
        the verdict says why)."""
        lines = [f"{'argument':<14}{'checked':>8}{'skipped':>8}{'max abs err':>13}{'max rel err':>13}  verdict"]
        for a in self.arguments:
            verdict = "ok" if a.passed else "FAIL: " + "; ".join(a.failures or ("nothing checked",))
            lines.append(
                f"{a.name:<14}{a.checked:>8}{a.skipped:>8}{format_error(a.max_abs_error):>13}{format_error(a.max_rel_error):>13}  {verdict}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class GradcheckError(AssertionError):
    """Raised by :func:`assert_gradcheck` when a check fails."""


_DIRECTION_SALT = 0x67726164  # "grad"

def _quiet() -> Any:
    """Around the checker's own arithmetic on what the op returned: an overflow there is a finding,
    reported as a failure, not a warning (which a ``-W error`` test suite would turn into a crash)."""
    return np.errstate(over="ignore", invalid="ignore")


# --------------------------------------------------------------------------------------------
# Host views of what the op returns, checked
# --------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """What an op under test returned is not what the checker can judge (the message says why)."""


def _flatten(value: Any) -> list[np.ndarray]:
    """The arrays of an output or active set (array, number, or nested tuple), as host arrays."""
    if value is None:
        return []
    if isinstance(value, tuple | list):
        return [a for item in value for a in _flatten(item)]
    if isinstance(value, bool | int | float | str):
        return [np.asarray(value)]
    try:
        return [np.asarray(to_numpy(value))]
    except Exception:  # noqa: BLE001 - anything unreadable is the finding
        raise _Malformed(f"holds {_describe(value)}, not arrays, tuples and numbers") from None


def _describe(value: Any) -> str:
    """``"a list"``, ``"an ndarray"``, ``"None"``: what a value is, for messages."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _host(value: Any, what: str) -> np.ndarray:
    """A host copy of an array returned by the op under test; ``_Malformed`` if it is no array."""
    # np.float64 is a subclass of float, yet a NumPy scalar (what a NumPy reduction returns) is
    # a 0-d array as far as the checker is concerned.
    plain = isinstance(value, bool | int | float | complex | str | bytes | list | tuple | dict) and not isinstance(value, np.generic)
    if value is None or plain:
        raise _Malformed(f"{what} is {_describe(value)}, expected an array")
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise _Malformed(f"{what} is {_describe(value)}, expected an array")
    try:
        return np.asarray(to_numpy(value))
    except Exception as error:  # noqa: BLE001 - any failure to read it is the finding
        raise _Malformed(f"{what} ({type(value).__name__}) cannot be read as an array: {type(error).__name__}: {error}") from None


def _first_nonfinite(host: np.ndarray) -> str:
    """``"NaN at (1, 2)"``: the first non-finite element of ``host`` (which has one)."""
    index = tuple(int(i) for i in np.argwhere(~np.isfinite(host))[0])
    value = host[index]
    kind = "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"{kind} at {index}"


def _finite(host: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(host)):
        raise _Malformed(f"{what} holds {_first_nonfinite(host)}")
    return host


def _matching(value: Any, like: np.ndarray, what: str, expected: str) -> np.ndarray:
    """``value`` as a finite host array with the shape and dtype of ``like`` (``expected`` names it)."""
    host = _host(value, what)
    if host.dtype != like.dtype:
        raise _Malformed(f"{what} has dtype {host.dtype}, expected {like.dtype} ({expected})")
    if host.shape != like.shape:
        raise _Malformed(f"{what} has shape {host.shape}, expected {like.shape} ({expected})")
    return _finite(host, what)


def _output_parts(out: Any) -> list[np.ndarray]:
    """The arrays of ``fun``'s output (an array or a tuple of them); ``TypeError`` for anything else."""
    if isinstance(out, tuple | list):
        if not out:
            raise TypeError("fun returned an empty output tuple; gradcheck needs at least one output array")
        return [part for item in out for part in _output_parts(item)]
    try:
        host = _host(out, "fun's output")
    except _Malformed as error:
        raise TypeError(f"{error} (or a tuple of arrays)") from None
    if host.dtype.kind != "f":
        raise TypeError(f"fun's output has dtype {host.dtype}; gradcheck differentiates real floating outputs only")
    return [host]


def _like_out(value: Any, parts: list[np.ndarray], out: Any, what: str) -> list[np.ndarray]:
    """A pushforward's tangent checked against the output: same structure, shapes, dtypes, finite."""
    if isinstance(out, tuple | list):
        if not isinstance(value, tuple | list):
            raise _Malformed(f"{what} is {_describe(value)}, expected a tuple of {len(out)} arrays like the output")
        if len(value) != len(out):
            raise _Malformed(f"{what} has {len(value)} parts, expected {len(out)} (one per output)")
        found: list[np.ndarray] = []
        for number, (v, o) in enumerate(zip(value, out, strict=True)):
            count = len(_flatten(o))
            found += _like_out(v, parts[len(found) : len(found) + count], o, f"{what}[{number}]")
        return found
    return [_matching(value, parts[0], what, "the output's")]


class _Pulled(NamedTuple):
    """A pullback's gradients, host copies (``None`` where it returned ``None``), and what was wrong
    with each argument's (by argument index)."""

    gradients: tuple[np.ndarray | None, ...]
    problems: dict[int, str]


def _pull(pullback: Callable[[Any], Any], cotangent: Any, hosts: Sequence[np.ndarray], names: Sequence[str], what: str) -> _Pulled:
    """Call ``pullback(cotangent)`` and check its answer (module docstring, "Fail closed")."""
    count = len(hosts)
    try:
        raw = pullback(cotangent)
    except Exception as error:  # noqa: BLE001 - a pullback that raises is a failed check
        problem = f"{what} raised {type(error).__name__}: {error}"
        return _Pulled((None,) * count, dict.fromkeys(range(count), problem))
    if not isinstance(raw, tuple | list):
        problem = f"{what} returned {_describe(raw)}, expected a tuple with one gradient per argument ({count})"
        return _Pulled((None,) * count, dict.fromkeys(range(count), problem))
    if len(raw) != count:
        problem = f"{what} returned {len(raw)} gradients, expected one per argument ({count}: {', '.join(names)})"
        return _Pulled((None,) * count, dict.fromkeys(range(count), problem))
    gradients: list[np.ndarray | None] = []
    problems: dict[int, str] = {}
    for index, (gradient, host, name) in enumerate(zip(raw, hosts, names, strict=True)):
        if gradient is None:
            gradients.append(None)
            continue
        try:
            gradients.append(_matching(gradient, host, f"{what}'s gradient for {name}", "the argument's"))
        except _Malformed as error:
            gradients.append(None)
            problems[index] = str(error)
    return _Pulled(tuple(gradients), problems)


def _gradient_of(pulled: _Pulled, index: int, name: str, what: str) -> np.ndarray:
    """The checked gradient of argument ``index``; ``_Malformed`` with the reason if there is none."""
    if index in pulled.problems:
        raise _Malformed(pulled.problems[index])
    gradient = pulled.gradients[index]
    if gradient is None:
        raise _Malformed(f"{what} returned no gradient (None) for {name}")
    return gradient


def _dot(a: Any, b: Any) -> float:
    return float(sum(np.vdot(x.astype(np.float64), y.astype(np.float64)) for x, y in zip(_flatten(a), _flatten(b), strict=True)))


def _norm(value: Any) -> float:
    return math.sqrt(sum(float(np.vdot(x, x)) for x in _flatten(value)))


def _same_active_set(a: Any, b: Any) -> bool:
    left, right = _flatten(a), _flatten(b)
    return len(left) == len(right) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(left, right, strict=True))


def _like_output(out: Any, make: Callable[[np.ndarray], np.ndarray], to_backend: Callable[[np.ndarray, Any], Any]) -> Any:
    """A structure shaped like ``out`` whose arrays are ``make(host_copy)`` moved to ``out``'s backend."""
    if isinstance(out, tuple | list):
        return tuple(_like_output(o, make, to_backend) for o in out)
    return to_backend(make(to_numpy(out)), out)


def _to_backend(host: np.ndarray, like: Any) -> Any:
    from .._xp import asarray_on, namespace

    return asarray_on(host, like, namespace(like))


# --------------------------------------------------------------------------------------------
# The checker's own arguments
# --------------------------------------------------------------------------------------------


def _real(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = True, high_open: bool = True, why: str = "") -> float:
    """``value`` as a float in the given interval; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    number = float(value)
    low_ok = number > low if low_open else number >= low
    high_ok = number < high if high_open else number <= high
    if not math.isfinite(number) or not low_ok or not high_ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be finite and in {interval}, got {value!r}" + (f" ({why})" if why else ""))
    return number


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _strings(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list or tuple of strings, got {_describe(value)}")
    if not all(isinstance(item, str) for item in value):
        raise TypeError(f"{name} must hold strings only, got {[type(item).__name__ for item in value]}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} names an argument twice: {list(value)}")
    return tuple(value)


def _point(args: Any, names: Any) -> tuple[tuple[Any, ...], tuple[str, ...], tuple[np.ndarray, ...]]:
    """The checked point: ``(args, names, host copies)``."""
    if not isinstance(args, tuple | list):
        raise TypeError(f"args must be a list or tuple of arrays, one per argument of fun; got {_describe(args)}")
    args = tuple(args)
    if not args:
        raise ValueError("args is empty; gradcheck needs at least one argument to check")
    names = _strings("names", names) if names is not None else tuple(f"arg{i}" for i in range(len(args)))
    if len(names) != len(args):
        raise ValueError(f"names has {len(names)} entries, expected one per argument ({len(args)})")
    hosts = []
    for position, (name, a) in enumerate(zip(names, args, strict=True)):
        try:
            host = _host(a, f"args[{position}] ({name})")
        except _Malformed as error:
            raise TypeError(f"{error}; gradcheck needs float64 arrays") from None
        if host.dtype != np.float64:
            raise TypeError(f"argument {name} has dtype {host.dtype}; gradcheck needs float64 arguments")
        if not np.all(np.isfinite(host)):
            raise ValueError(f"argument {name} holds {_first_nonfinite(host)}; gradcheck needs a finite point")
        hosts.append(host)
    return args, names, tuple(hosts)


# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------


def gradcheck(
    fun: Callable[..., Linearized],
    args: Sequence[Any],
    *,
    names: Sequence[str] | None = None,
    wrt: Sequence[str] | None = None,
    mode: str = "directional",
    directions: int = 3,
    seed: int = 0,
    rtol: float = 1e-7,
    atol: float = 1e-10,
    step: float = 1e-2,
    adjoint_rtol: float = 1e-12,
) -> GradcheckResult:
    """Check the pullback (and pushforward, if any) of ``fun`` at ``args`` against finite differences.

    Parameters
    ----------
    fun
        ``fun(*args) -> Linearized``.
    args
        The point: a list or tuple of arrays of any array-API library, float64 (finite differences
        in float32 cannot check a gradient to a meaningful tolerance), with finite values.
    names
        A name per argument, unique, for the report (default ``arg0, arg1, ...``).
    wrt
        Names of the arguments to check (default: every argument whose gradient is not ``None``;
        an explicit empty list is an error: it would check nothing).
    mode
        ``"directional"`` (dot-product tests over ``directions`` random directions per argument)
        or ``"jacobian"`` (full Jacobians; for tiny inputs).
    directions
        Random directions (and cotangents) per argument, an int >= 1 (directional mode).
    seed
        Seed (an int >= 0) of the NumPy generator that draws directions and cotangents.
    rtol, atol
        Pass when ``|analytic - numeric| <= rtol * scale + atol * ||v|| ||u||`` (module docstring).
        ``rtol`` in ``(0, 1)``: at ``rtol >= 1`` a gradient of zero would pass every direction.
        ``atol >= 0``; it is an absolute bound, so a large one passes small gradients (it is
        reported in the result).
    step
        Initial finite-difference step per element, in ``(0, 1]``, relative to the spread
        (standard deviation, or the magnitude if that is 0) of the argument being perturbed;
        halved up to three times.
    adjoint_rtol
        Largest relative mismatch allowed between ``<v, pushforward(u)>`` and
        ``<pullback(v), u>`` (both exact up to rounding), in ``(0, 1)``.

    Returns
    -------
    GradcheckResult
        Per argument: every direction's errors, skips (kinks) and failures. Anything malformed or
        non-finite that the op returns is a failure (module docstring, "Fail closed").

    Raises
    ------
    TypeError, ValueError
        For a malformed call (module docstring): the message names the parameter.
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable (returning a Linearized), got {_describe(fun)}")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected 'directional' or 'jacobian'")
    directions = _integer("directions", directions, 1)
    seed = _integer("seed", seed, 0)
    rtol = _real("rtol", rtol, low=0.0, high=1.0, why="at rtol >= 1 a zero gradient passes")
    atol = _real("atol", atol, low=0.0, low_open=False)
    step = _real("step", step, low=0.0, high=1.0, high_open=False)
    adjoint_rtol = _real("adjoint_rtol", adjoint_rtol, low=0.0, high=1.0)
    args, names, hosts = _point(args, names)
    if wrt is not None:
        wrt = _strings("wrt", wrt)
        unknown = set(wrt) - set(names)
        if unknown:
            raise ValueError(f"wrt names unknown arguments {sorted(unknown)}; arguments are {names}")
        if not wrt:
            raise ValueError("wrt is empty; name at least one argument to check")

    base = fun(*args)
    if not isinstance(base, Linearized):
        raise TypeError(f"fun must return a refnorm.Linearized, got {_describe(base)}")
    if not callable(base.pullback):
        raise TypeError(f"fun's Linearized has a pullback that is {_describe(base.pullback)}, not callable")
    if base.pushforward is not None and not callable(base.pushforward):
        raise TypeError(f"fun's Linearized has a pushforward that is {_describe(base.pushforward)}, not callable (or None)")
    if base.active_set is not None:
        try:
            _flatten(base.active_set)
        except _Malformed as error:
            raise TypeError(f"fun's Linearized has an active_set that {error}") from None
    out_parts = _output_parts(base.out)

    # Salted, so the directions never repeat a stream the caller drew its inputs from with the
    # same seed (an output direction equal to x is nearly orthogonal to a normalization's range).
    rng = np.random.default_rng([seed, _DIRECTION_SALT])
    if mode == "directional":
        cotangents = [_like_output(base.out, lambda h: rng.standard_normal(h.shape), _to_backend) for _ in range(directions)]
        pulled = [_pull(base.pullback, v, hosts, names, f"pullback(v[{k}])") for k, v in enumerate(cotangents)]
    else:
        cotangents, pulled = _one_hot_rows(base, out_parts, hosts, names)

    # Jacobian mode on an empty output has no pullback at all: nothing says what is differentiated.
    first = pulled[0] if pulled else _Pulled((None,) * len(args), dict.fromkeys(range(len(args)), "no pullback"))
    if wrt is None:
        # A pullback that answers nothing usable leaves no way to tell which arguments it
        # differentiates: check them all (and fail them all).
        wrt = tuple(n for i, n in enumerate(names) if i in first.problems or first.gradients[i] is not None)
        if not wrt:
            raise ValueError("the pullback returns no gradient (None) for every argument; there is nothing to check")
    else:
        for index, name in enumerate(names):
            if name in wrt and index not in first.problems and first.gradients[index] is None:
                raise ValueError(f"the pullback returns no gradient (None) for {name}, which wrt asks to check")

    nonfinite_output = [
        f"the output at the point holds {_first_nonfinite(part)}" + (f" (output part {number})" if len(out_parts) > 1 else "")
        for number, part in enumerate(out_parts)
        if not np.all(np.isfinite(part))
    ]
    if not any(part.size for part in out_parts):
        nonfinite_output.append("the output has no elements")  # <v, f> = 0 for every v: nothing to compare
    results = []
    for index, name in enumerate(names):
        if name not in wrt:
            continue
        if nonfinite_output:
            results.append(ArgumentResult(name=name, mode=mode, failures=(nonfinite_output[0] + "; nothing can be checked",)))
        elif hosts[index].size == 0:
            results.append(ArgumentResult(name=name, mode=mode, failures=(f"{name} has no elements; nothing was checked",)))
        elif mode == "directional":
            results.append(_check_directional(fun, args, hosts, index, name, base, cotangents, pulled, rng, rtol, atol, step, adjoint_rtol))
        else:
            results.append(_check_jacobian(fun, args, hosts, index, name, base, out_parts, pulled, rtol, atol, step, adjoint_rtol))
    return GradcheckResult(arguments=tuple(results), mode=mode, rtol=rtol, atol=atol)


def _perturbed(args: tuple, index: int, direction: np.ndarray, t: float) -> tuple:
    moved = to_numpy(args[index]) + t * direction
    return args[:index] + (_to_backend(moved, args[index]),) + args[index + 1 :]


def _spread(a: Any) -> float:
    """The scale of an argument's values: their standard deviation, or, for (numerically)
    constant values such as ``gamma = 1.1`` everywhere, their magnitude (at least 1)."""
    host = to_numpy(a).astype(np.float64)
    magnitude = float(np.max(np.abs(host), initial=0.0))
    spread = float(np.std(host)) if host.size > 1 else 0.0
    # The std of equal values that are not exactly representable is rounding noise (~1e-16);
    # treat anything below 1e-8 of the magnitude as "constant".
    return spread if spread > 1e-8 * magnitude else max(magnitude, 1.0)


def _value_at(fun: Callable[..., Linearized], point: tuple) -> Linearized:
    """``fun`` at a point the finite differences evaluate; ``_Malformed`` if it raises or returns no
    :class:`Linearized`."""
    try:
        evaluated = fun(*point)
    except Exception as error:  # noqa: BLE001 - fun failing next to the point is a finding
        raise _Malformed(f"fun raised {type(error).__name__} at a point the finite differences evaluate: {error}") from None
    if not isinstance(evaluated, Linearized):
        raise _Malformed(f"fun returned {_describe(evaluated)} at a point the finite differences evaluate, expected a Linearized")
    return evaluated


def _directional_derivative(
    fun: Callable[..., Linearized], args: tuple, index: int, direction: np.ndarray, weight: Any, h0: float, base_active: Any
) -> tuple[float, float, bool]:
    """d/dt <weight, f(a + t u)> at 0: (value, scipy's error estimate, crossed a kink?)."""
    crossed = False

    def g(t: np.ndarray) -> np.ndarray:
        nonlocal crossed
        values = np.empty(t.shape)
        for position, ti in np.ndenumerate(t):
            evaluated = _value_at(fun, _perturbed(args, index, direction, float(ti)))
            if base_active is not None and not _same_active_set(evaluated.active_set, base_active):
                crossed = True
            try:
                values[position] = _dot(weight, evaluated.out)
            except Exception as error:  # noqa: BLE001 - an output that changed structure is a finding
                raise _Malformed(f"fun's output changed structure near the point ({type(error).__name__}: {error})") from None
        return values

    result = scipy.differentiate.derivative(
        g, 0.0, order=4, step_factor=2.0, initial_step=h0, maxiter=4, tolerances={"atol": 0.0, "rtol": 1e-11}
    )
    return float(result.df), float(result.error), crossed


def _failed_direction(note: str, step: float) -> DirectionResult:
    nan = math.nan
    return DirectionResult("failed", nan, nan, nan, nan, nan, step, note)


def _check_directional(fun, args, hosts, index, name, base, cotangents, pulled, rng, rtol, atol, step, adjoint_rtol) -> ArgumentResult:
    host = hosts[index]
    # u has unit norm, so each element moves by about t / sqrt(size): scale the step so that every
    # element moves by about step * spread.
    h0 = step * _spread(args[index]) * math.sqrt(host.size)
    outcomes, failures = [], []
    adjoint_error = None
    for k, (v, answer) in enumerate(zip(cotangents, pulled, strict=True)):
        # Drawn first, whatever happens next, so every direction sees the same u as in a passing run.
        u = rng.standard_normal(host.shape)
        u /= np.linalg.norm(u) or 1.0
        try:
            grad = _gradient_of(answer, index, name, f"pullback(v[{k}])")
        except _Malformed as error:
            failures.append(f"direction {k}: {error}")
            outcomes.append(_failed_direction(failures[-1], h0))
            continue
        with _quiet():
            analytic = float(np.vdot(grad, u))
        if base.pushforward is not None:
            try:
                mismatch = _adjoint_mismatch(base, args, hosts, index, u, v, analytic, grad, f"pushforward(u[{k}])")
            except _Malformed as error:
                failures.append(f"direction {k}: {error}")
            else:
                adjoint_error = max(adjoint_error or 0.0, mismatch)
        try:
            numeric, fd_error, crossed = _directional_derivative(fun, args, index, u, v, h0, base.active_set)
            used_step = h0
            if crossed:
                used_step = h0 / 100.0
                numeric, fd_error, crossed = _directional_derivative(fun, args, index, u, v, used_step, base.active_set)
        except _Malformed as error:
            failures.append(f"direction {k}: {error}")
            outcomes.append(_failed_direction(failures[-1], h0))
            continue
        if crossed:
            outcomes.append(
                DirectionResult("skipped", analytic, numeric, math.nan, math.nan, fd_error, used_step, "direction crosses a kink (active set changes within the stencil)")
            )
            continue
        if not math.isfinite(numeric):
            note = f"direction {k}: the finite-difference derivative is {numeric} (fun is not finite near the point)"
            failures.append(note)
            outcomes.append(DirectionResult("failed", analytic, numeric, math.nan, math.nan, fd_error, used_step, note))
            continue
        with _quiet():
            scale = max(float(np.linalg.norm(grad)), abs(numeric))
            abs_error = abs(analytic - numeric)
            tolerance = rtol * scale + atol * _norm(v)
        if not (math.isfinite(analytic) and math.isfinite(tolerance)):
            # Finite gradients whose products overflow: an infinite tolerance would pass anything.
            note = f"direction {k}: <gradient, u> = {analytic:.3g} with tolerance {tolerance:.3g}: not finite, cannot be judged"
            failures.append(note)
            outcomes.append(DirectionResult("failed", analytic, numeric, math.nan, math.nan, fd_error, used_step, note))
            continue
        # A gradient that is zero, or zero up to rounding (a zero-gradient region, a parameter at
        # its initialisation), has no scale to be relative to: where the absolute term dominates
        # the tolerance the direction is judged in absolute terms, and its relative error is NaN
        # (not applicable) instead of a meaningless ~1.
        rel_error = abs_error / scale if rtol * scale > atol * _norm(v) else math.nan
        if abs_error <= tolerance:
            status, note = "passed", ""
        else:
            status = "failed"
            noisy = not (fd_error <= tolerance)  # a NaN estimate cannot vouch for the value either
            note = (
                f"direction {k}: analytic {analytic:.12g} vs numeric {numeric:.12g} (error {abs_error:.3g} > tolerance {tolerance:.3g})"
                + (f"; the finite differences are too noisy to decide (error estimate {fd_error:.3g})" if noisy else "")
            )
            failures.append(note)
        outcomes.append(DirectionResult(status, analytic, numeric, abs_error, rel_error, fd_error, used_step, note))
    if adjoint_error is not None and adjoint_error > adjoint_rtol:
        failures.append(f"JVP and VJP disagree: relative mismatch {adjoint_error:.3g} of <v, J u>")
    return ArgumentResult(name=name, directions=tuple(outcomes), adjoint_error=adjoint_error, failures=tuple(failures))


def _tangents(args: tuple, hosts: Sequence[np.ndarray], index: int, u: np.ndarray) -> tuple:
    """One tangent per argument: ``u`` for argument ``index``, zeros elsewhere, on each argument's backend."""
    return tuple(_to_backend(u if i == index else np.zeros(h.shape), a) for i, (a, h) in enumerate(zip(args, hosts, strict=True)))


def _pushed(base: Linearized, tangents: tuple, what: str) -> list[np.ndarray]:
    """``base.pushforward(*tangents)``, checked against the output (module docstring, "Fail closed")."""
    try:
        raw = base.pushforward(*tangents)
    except Exception as error:  # noqa: BLE001 - a pushforward that raises is a failed check
        raise _Malformed(f"{what} raised {type(error).__name__}: {error}") from None
    return _like_out(raw, _output_parts(base.out), base.out, what)


def _adjoint_mismatch(base, args, hosts, index, u, v, analytic, grad, what) -> float:
    """Relative mismatch of ``<v, J u>`` (JVP) and ``<J^T v, u>`` (VJP); ``_Malformed`` for a bad JVP."""
    pushed = _pushed(base, _tangents(args, hosts, index, u), what)
    with _quiet():
        jvp = float(sum(np.vdot(a, b) for a, b in zip(_flatten(v), pushed, strict=True)))
        scale = max(float(np.linalg.norm(grad)), _norm(v) * math.sqrt(sum(float(np.vdot(p, p)) for p in pushed)))
        mismatch = abs(jvp - analytic)
        if not (math.isfinite(mismatch) and math.isfinite(scale)):
            return math.inf  # finite JVP and VJP whose products overflow: not shown to agree
        return mismatch / scale if scale > 0 else (0.0 if mismatch == 0 else math.inf)


def _one_hot_rows(base: Linearized, out_parts: list[np.ndarray], hosts, names) -> tuple[list[Any], list[_Pulled]]:
    """Jacobian mode: one pullback per output element (the analytic Jacobian's rows), checked."""
    cotangents, pulled = [], []
    offsets = np.cumsum([0] + [p.size for p in out_parts])
    for row in range(int(offsets[-1])):
        part = int(np.searchsorted(offsets, row, side="right") - 1)
        pieces = [np.zeros(p.shape) for p in out_parts]
        pieces[part].reshape(-1)[row - offsets[part]] = 1.0
        cotangent = _rebuild(base.out, pieces)
        cotangents.append(cotangent)
        pulled.append(_pull(base.pullback, cotangent, hosts, names, f"pullback(one-hot at out{_unflat_index(out_parts, row)})"))
    return cotangents, pulled


def _check_jacobian(fun, args, hosts, index, name, base, out_parts, pulled, rtol, atol, step, adjoint_rtol) -> ArgumentResult:
    host = hosts[index]
    out_size = sum(p.size for p in out_parts)

    def failed(*failures: str, **fields: Any) -> ArgumentResult:
        return ArgumentResult(name=name, mode="jacobian", failures=failures, **fields)

    # Analytic Jacobian, one row per output element.
    analytic = np.empty((out_size, host.size))
    for row, answer in enumerate(pulled):
        try:
            analytic[row] = _gradient_of(answer, index, name, f"pullback(one-hot at out{_unflat_index(out_parts, row)})").reshape(-1)
        except _Malformed as error:
            return failed(str(error))

    # The JVP's Jacobian, one pushforward per input element, must be the VJP's.
    adjoint_error = None
    if base.pushforward is not None:
        pushforward = np.empty((out_size, host.size))
        for column in range(host.size):
            tangent = np.zeros(host.size)
            tangent[column] = 1.0
            in_index = tuple(int(i) for i in np.unravel_index(column, host.shape))
            try:
                pushed = _pushed(base, _tangents(args, hosts, index, tangent.reshape(host.shape)), f"pushforward(one-hot at {name}{in_index})")
            except _Malformed as error:
                return failed(str(error))
            pushforward[:, column] = np.concatenate([p.reshape(-1) for p in pushed])
        scale = max(float(np.max(np.abs(analytic), initial=0.0)), float(np.max(np.abs(pushforward), initial=0.0)))
        with _quiet():
            mismatch = float(np.max(np.abs(analytic - pushforward), initial=0.0))
        mismatch = mismatch if math.isfinite(mismatch) else math.inf
        adjoint_error = mismatch / scale if scale > 0 else (0.0 if mismatch == 0 else math.inf)

    # Numeric Jacobian, one column per input element (scipy.differentiate.jacobian).
    skipped_columns: set[int] = set()

    def f(flat: np.ndarray) -> np.ndarray:
        columns = flat.reshape(host.size, -1)
        values = np.empty((out_size, columns.shape[1]))
        for j in range(columns.shape[1]):
            point = columns[:, j].reshape(host.shape)
            evaluated = _value_at(fun, args[:index] + (_to_backend(point, args[index]),) + args[index + 1 :])
            if base.active_set is not None and not _same_active_set(evaluated.active_set, base.active_set):
                moved = np.nonzero(point.reshape(-1) != host.reshape(-1))[0]
                skipped_columns.update(int(m) for m in moved)
            try:
                values[:, j] = np.concatenate([p.reshape(-1) for p in _flatten(evaluated.out)])
            except Exception as error:  # noqa: BLE001 - an output that changed structure is a finding
                raise _Malformed(f"fun's output changed structure near the point ({type(error).__name__}: {error})") from None
        return values.reshape((out_size,) + flat.shape[1:])

    h0 = step * _spread(args[index])
    try:
        result = scipy.differentiate.jacobian(
            f, host.reshape(-1), order=4, step_factor=2.0, initial_step=h0, maxiter=4, tolerances={"atol": 0.0, "rtol": 1e-11}
        )
    except _Malformed as error:
        return failed(str(error), adjoint_error=adjoint_error)
    numeric = np.asarray(result.df, dtype=np.float64).reshape(out_size, host.size)
    fd_error = np.asarray(result.error, dtype=np.float64).reshape(out_size, host.size)
    keep = np.ones(host.size, dtype=bool)
    keep[sorted(skipped_columns)] = False
    failures = []
    if not keep.any():
        failures.append("every Jacobian column crosses a kink; nothing was checked")
    bad = ~np.isfinite(numeric) & keep[None, :]
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        entry = f"d out{_unflat_index(out_parts, row)} / d {name}{tuple(int(i) for i in np.unravel_index(column, host.shape))}"
        failures.append(f"Jacobian entry {entry}: the finite-difference derivative is {numeric[row, column]} (fun is not finite near the point)")
        return failed(*failures, adjoint_error=adjoint_error, jacobian_abs_error=math.nan, jacobian_rel_error=math.nan,
                      jacobian_skipped_columns=len(skipped_columns), jacobian_columns=int(keep.sum()))  # fmt: skip
    with _quiet():
        error = np.where(keep[None, :], np.abs(analytic - numeric), 0.0)
    error = np.where(np.isfinite(error), error, np.inf)  # finite entries whose difference overflows
    # Normwise comparison: entries are judged against the largest entry of the Jacobian.
    scale = max(
        float(np.max(np.abs(np.where(keep[None, :], analytic, 0.0)), initial=0.0)),
        float(np.max(np.abs(np.where(keep[None, :], numeric, 0.0)), initial=0.0)),
    )
    tolerance = rtol * scale + atol
    if not math.isfinite(tolerance):
        failures.append(f"the Jacobian of {name} has entries too large to judge (tolerance {tolerance:.3g})")
    worst = np.unravel_index(int(np.argmax(error)), error.shape)
    out_index = _unflat_index(out_parts, int(worst[0]))
    in_index = tuple(int(i) for i in np.unravel_index(int(worst[1]), host.shape))
    if error[worst] > tolerance:
        noisy = not (fd_error[worst] <= tolerance)
        failures.append(
            f"Jacobian entry d out{out_index} / d {name}{in_index}: analytic "
            f"{analytic[worst]:.12g} vs numeric {numeric[worst]:.12g} (error {error[worst]:.3g} > tolerance {tolerance:.3g})"
            + (f"; the finite differences are too noisy to decide (error estimate {fd_error[worst]:.3g})" if noisy else "")
        )
    if adjoint_error is not None and adjoint_error > adjoint_rtol:
        failures.append(f"JVP and VJP Jacobians disagree: relative mismatch {adjoint_error:.3g}")
    rel = float(error[worst] / scale) if rtol * scale > atol else math.nan
    return ArgumentResult(
        name=name,
        mode="jacobian",
        adjoint_error=adjoint_error,
        worst_entry=(out_index, in_index),
        jacobian_abs_error=float(np.max(error)),
        jacobian_rel_error=rel,
        jacobian_skipped_columns=len(skipped_columns),
        jacobian_columns=int(keep.sum()),
        failures=tuple(failures),
    )


def _rebuild(out: Any, pieces: list[np.ndarray]) -> Any:
    """Host ``pieces`` (in flattening order) shaped and typed like ``out``."""
    iterator = iter(pieces)

    def build(node: Any) -> Any:
        if isinstance(node, tuple | list):
            return tuple(build(n) for n in node)
        return _to_backend(next(iterator), node)

    return build(out)


def _unflat_index(parts: list[np.ndarray], flat: int) -> tuple[int, ...]:
    for number, part in enumerate(parts):
        if flat < part.size:
            index = tuple(int(i) for i in np.unravel_index(flat, part.shape))
            return index if len(parts) == 1 else (number,) + index
        flat -= part.size
    raise IndexError(flat)


def assert_gradcheck(fun: Callable[..., Linearized], args: Sequence[Any], **kwargs: Any) -> GradcheckResult:
    """:func:`gradcheck`, raising :class:`GradcheckError` with the report when it fails.

    The keyword arguments are :func:`gradcheck`'s, validated the same way (an unknown keyword is a
    ``TypeError``).
    """
    result = gradcheck(fun, args, **kwargs)
    if not result.passed:
        raise GradcheckError("gradient check failed\n" + result.summary())
    return result
