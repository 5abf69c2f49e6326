r"""Finite-difference gradient checking of hand-derived backward passes (SPEC §5).

An op is checked through its *linearization*: a function ``fun(*args) -> Linearized`` returning
the output, a ``pullback`` (the VJP, one gradient per argument) and optionally a ``pushforward``
(the JVP), an ``hvp`` (the second order: the derivative of the pullback along tangents) and an
``active_set`` (which smooth piece of a piecewise-smooth function the point is on). Every
derivative the linearization provides is checked (``order`` restricts it), in the manner of
``torch.autograd.gradcheck``/``gradgradcheck`` and ``jax.test_util.check_grads(order=2,
modes=("fwd", "rev"))``.

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

**Adjoint test.** When the op has a ``pushforward``, ``<v, J u>`` (JVP) and ``<J^T v, u>`` (VJP)
must agree to rounding (``adjoint_rtol``, default 1e-12): an exact test, no finite differences.
The mismatch is relative to the Cauchy–Schwarz bound of the whole derivative,
``max(||J^T v|| ||u||, ||v|| ||J u||)`` with ``J^T v`` the gradients of *every* argument: an
argument whose gradient is zero up to rounding (EN's ``conv_bias`` where every pre-activation is
positive) is not judged against its own rounding noise. In Jacobian mode the JVP's Jacobian (one
pushforward per input element) must equal the VJP's (one pullback per output element), relative
to the largest entry of every argument's Jacobian.

**Finite differences of the JVP** (directional mode, with a ``pushforward``). For each direction
``u`` the whole tangent ``J u`` against a Richardson-extrapolated central difference of the whole
output, :math:`(4 D(h/2) - D(h)) / 3` with :math:`D(h) = (f(a + h u) - f(a - h u)) / 2h`, ``h``
halved (up to seven times) until successive estimates agree to ``1e-11`` or draw apart again
(then rounding noise dominates, and the previous estimate is taken), each block (an output part;
below, an argument's gradient) on its own, then normwise over all of them. A direction passes when

.. math::

    \lVert J u - \text{numeric} \rVert \le \text{rtol}\,\max(\lVert J u \rVert, \lVert \text{numeric} \rVert)
    + \text{atol} \sqrt{n}\, \lVert u \rVert

(``n`` the output size: the directional test's ``atol ||v|| ||u||`` for a cotangent of unit
entries), with the kink guard below.

**Second order** (directional mode, with an ``hvp``): ``hvp(v, *tangents)`` is the derivative of
``pullback(v)`` along the tangents (the Hessian of ``<v, f>`` times them). For each direction ``u``
of argument ``j`` (the same ``u`` and ``v`` as above):

* *finite differences of the backward*: the derivative of ``pullback(v)`` along ``u`` (every
  argument's gradient: a column of the Hessian), by the same Richardson differences of the pullback
  at ``a ± h u``, against ``hvp(v, u)``, normwise with the test above and the absolute term
  ``atol ||v|| ||u||`` (``H`` is the Hessian of ``<v, f>``);
* *symmetry*, exact: with a random unit direction ``w`` over all arguments,
  ``<w, H u> = <u, H w>`` to ``adjoint_rtol``, relative to ``max(||w|| ||H u||, ||u|| ||H w||)``
  and no less than the norm of the whole gradient ``J^T v`` (as the adjoint test: a Hessian that
  is zero up to rounding has no scale of its own).

**Kink guard.** If the op reports an ``active_set``, it is recorded at every point the finite
differences evaluate (of the pullback's dot product, of the JVP and of the backward alike). A
direction along which it changes crosses a kink (a sparsemax support or SparsestMax stage change),
where the derivative does not exist; the checker retries with a step 100 times smaller and, if the
kink is still inside the stencil, reports the direction as *skipped*: never as passed. An argument
whose every direction of a check is skipped fails that check (nothing was compared).

**Full Jacobian** (``mode="jacobian"``, tiny inputs): the analytic Jacobian row by row (one
pullback per output element) against :func:`scipy.differentiate.jacobian` column by column; the
result names the worst ``(output index, input index)`` entry.

**Fail closed.** The checker judges what the op under test returns; it never lets a malformed
answer pass. Each of these is a *failed* argument (a verdict, never an exception), with a message
that says where:

* a pullback, pushforward or hvp that raises, returns something that is not a tuple of arrays (one
  gradient per argument; a tangent shaped like the output), the wrong number of gradients, a
  gradient of another shape or dtype than its argument (a float32 gradient of a float64 argument
  included), or ``None`` for an argument being checked (an hvp must answer ``None`` exactly where
  the pullback does);
* a pullback, pushforward or hvp that changes the cotangent or tangents it is handed (each call
  gets fresh copies, so an in-place update never moves the checker's own directions);
* any NaN or infinity in a gradient, a pushforward, an hvp, a finite-difference derivative (of the
  output or of the pullback) or a Jacobian entry (the message names the argument, the direction or
  the entry), and an adjoint or symmetry mismatch that is not finite;
* ``fun`` raising at a point the finite differences evaluate;
* an output that is not finite at the point itself (every argument fails: nothing can be checked);
* ``None`` for an argument the output depends on (unless ``wrt`` leaves it out);
* an argument with nothing compared: no elements, or every direction (column) skipped at a kink.

What is wrong with the *call* is a ``TypeError`` or ``ValueError`` naming the parameter: ``fun``
not callable or not returning a :class:`~refnorm.ops.linearized.Linearized`, an output that is not
a real floating array (or tuple of them), and every parameter of :func:`gradcheck` (``args``
float64 arrays with finite values; ``names`` unique strings, one per argument; ``wrt`` known
names; ``mode``; ``directions`` an int from 1 to :data:`MAX_DIRECTIONS`; ``seed`` an int >= 0;
``rtol`` and ``adjoint_rtol`` in ``(0, 1)``; ``atol`` finite and >= 0; ``step`` in ``(0, 1]``;
``order`` ``None``, 1 or 2, 2 only for an op with an ``hvp`` and in directional mode). An exception raised by ``fun`` at
the point itself propagates unchanged (the point, not the gradient, is wrong).

Errors that do not apply are NaN, never 0: :attr:`ArgumentResult.max_rel_error` is NaN where the
absolute tolerance dominates every direction (a zero gradient has no scale to be relative to), and
both maxima are NaN where nothing was compared or a derivative was not finite.

All checking happens in float64 on the host (NumPy): a float32 implementation is compared
against the float64 reference, never against finite differences.
"""

from __future__ import annotations

import dataclasses
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
MAX_DIRECTIONS = 10_000
"""The most random directions :func:`gradcheck` draws per argument: each direction's cotangent and
pullback are held at once, so a mistyped count would exhaust memory; ``mode="jacobian"`` checks
every column exactly instead."""
"""The two kinds of check :func:`gradcheck` runs."""

ORDERS = (1, 2)
"""``order=1``: the pullback (and the pushforward, if any); ``order=2``: also the hvp."""


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
class TangentResult:
    """One direction of a vector-valued finite-difference test for one argument: the JVP against the
    difference quotient of the output, or the hvp against that of the pullback (normwise)."""

    status: str
    """``"passed"``, ``"failed"`` or ``"skipped"`` (the direction crossed a kink)."""
    abs_error: float
    """``||analytic - numeric||`` over the whole vector; NaN where a value was not finite."""
    rel_error: float
    """``abs_error / max(||analytic||, ||numeric||)``; NaN where ``atol`` dominates the tolerance or a value was not finite."""
    fd_error: float
    """The change between the last two Richardson estimates (the error estimate of ``numeric``)."""
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
    jvp: tuple[TangentResult, ...] = ()
    """Finite differences of the JVP, one per direction (empty without a pushforward, and in Jacobian mode)."""
    hvp: tuple[TangentResult, ...] = ()
    """Second order: the derivative of this argument's gradient along every direction checked (of
    every argument), by finite differences of the pullback, against the hvp (empty without a
    second-order check). A wrong block of the Hessian fails the argument whose gradient it differentiates."""
    symmetry_error: float | None = None
    """Largest relative mismatch of ``<w, H u>`` and ``<u, H w>`` (None without a second-order check)."""

    @property
    def max_jvp_error(self) -> float:
        """Largest relative error of the JVP's finite differences where one applies; NaN where none
        applies or none was computed, and where a value was not finite."""
        return _max_tangent_error(self.jvp)

    @property
    def max_hvp_error(self) -> float:
        """Largest relative error of the backward's finite differences against the hvp (as :attr:`max_jvp_error`)."""
        return _max_tangent_error(self.hvp)

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


def _max_tangent_error(results: Sequence[TangentResult]) -> float:
    checked = [r for r in results if r.status != "skipped"]
    if not checked or any(math.isnan(r.abs_error) for r in checked):
        return math.nan
    if any(math.isinf(r.abs_error) for r in checked):
        return math.inf
    return _nan_max([r.rel_error for r in checked])


def _max_optional(values: Sequence[float | None]) -> float | None:
    """Largest of the values that are not None (None when all are); NaN wins (an error that could not be computed)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return math.nan if any(math.isnan(v) for v in present) else max(present)


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
    order: int = 1
    """1: first-order checks (the pullback, and the pushforward if any); 2: also second order."""

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

    @property
    def max_adjoint_error(self) -> float | None:
        """Largest JVP/VJP mismatch over the arguments (None where no adjoint test ran)."""
        return _max_optional([a.adjoint_error for a in self.arguments])

    @property
    def max_jvp_error(self) -> float:
        """Largest relative error of the JVP's finite differences over the arguments (NaN as :attr:`ArgumentResult.max_jvp_error`)."""
        return _nan_max([a.max_jvp_error for a in self.arguments])

    @property
    def max_hvp_error(self) -> float:
        """Largest relative error of the backward's finite differences against the hvp over the arguments."""
        return _nan_max([a.max_hvp_error for a in self.arguments])

    @property
    def max_symmetry_error(self) -> float | None:
        """Largest Hessian symmetry mismatch over the arguments (None where no second-order check ran)."""
        return _max_optional([a.symmetry_error for a in self.arguments])

    def summary(self) -> str:
        """A plain-text table: one row per argument (``n/a``: no error applies or none was computed;
        the verdict says why; ``-``: the check did not run). The columns after the first-order ones
        appear when those checks ran: the adjoint test, the JVP's and the backward's finite
        differences (relative errors) and the Hessian's symmetry. The last line gives the
        tolerances the verdicts were judged with (a pass means little at a large ``atol``)."""
        columns = [
            ("adjoint", lambda a: "-" if a.adjoint_error is None else format_error(a.adjoint_error), any(a.adjoint_error is not None for a in self.arguments)),
            ("jvp fd", lambda a: format_error(a.max_jvp_error) if a.jvp else "-", any(a.jvp for a in self.arguments)),
            ("hvp fd", lambda a: format_error(a.max_hvp_error) if a.hvp else "-", any(a.hvp for a in self.arguments)),
            ("symmetry", lambda a: "-" if a.symmetry_error is None else format_error(a.symmetry_error), any(a.symmetry_error is not None for a in self.arguments)),
        ]
        shown = [(title, value) for title, value, present in columns if present]
        head = f"{'argument':<14}{'checked':>8}{'skipped':>8}{'max abs err':>13}{'max rel err':>13}" + "".join(f"{t:>10}" for t, _ in shown)
        lines = [head + "  verdict"]
        for a in self.arguments:
            verdict = "ok" if a.passed else "FAIL: " + "; ".join(a.failures or ("nothing checked",))
            lines.append(
                f"{a.name:<14}{a.checked:>8}{a.skipped:>8}{format_error(a.max_abs_error):>13}{format_error(a.max_rel_error):>13}"
                + "".join(f"{value(a):>10}" for _, value in shown)
                + f"  {verdict}"
            )
        lines.append(f"judged with rtol {self.rtol:g}, atol {self.atol:g} ({self.mode} mode)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class GradcheckError(AssertionError):
    """Raised by :func:`assert_gradcheck` when a check fails."""


_DIRECTION_SALT = 0x67726164  # "grad"
_SYMMETRY_SALT = 0x73796D6D  # "symm"

def _quiet() -> Any:
    """Around the checker's own arithmetic on what the op returned: an overflow there is a finding,
    reported as a failure, not a warning (which a ``-W error`` test suite would turn into a crash)."""
    return np.errstate(over="ignore", invalid="ignore")


# --------------------------------------------------------------------------------------------
# Host views of what the op returns, checked
# --------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """What an op under test returned is not what the checker can judge (the message says why);
    ``argument`` is the index of the argument whose gradient it concerns, where one does."""

    def __init__(self, message: str, argument: int | None = None) -> None:
        super().__init__(message)
        self.argument = argument


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
    if host.dtype.newbyteorder("=") != like.dtype.newbyteorder("="):  # byte order is storage: >f8 is float64
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
    handed = _copies(cotangent)
    try:
        raw = pullback(handed)
    except Exception as error:  # noqa: BLE001 - a pullback that raises is a failed check
        problem = f"{what} raised {type(error).__name__}: {error}"
        return _Pulled((None,) * count, dict.fromkeys(range(count), problem))
    if _modified(handed, cotangent):
        problem = f"{what} modified its cotangent in place (an op must not mutate its inputs)"
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


def _copies(value: Any) -> Any:
    """Fresh copies of the (co)tangents handed to the op under test, on their backend: a pullback,
    pushforward or hvp that updates its argument in place must not move the checker's own
    directions (``v *= 2`` in a pullback returning ``2 v`` would change the numeric side too)."""
    return _like_output(value, lambda host: host, _to_backend)


def _modified(handed: Any, original: Any) -> bool:
    """Whether the op under test changed the copies it was handed (see :func:`_copies`)."""
    return not all(
        a.shape == b.shape and np.array_equal(a, b, equal_nan=True) for a, b in zip(_flatten(handed), _flatten(original), strict=True)
    )


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
        if host.dtype.newbyteorder("=") != np.float64:
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
    order: int | None = None,
) -> GradcheckResult:
    """Check the pullback (and the pushforward and hvp, if any) of ``fun`` at ``args`` against finite differences.

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
        Names of the arguments to check (default: every argument whose gradient is not ``None``,
        and for every other one, that the output does not depend on it: ``<v, f>`` constant, to
        ``atol ||v||``, along a random direction, since ``None`` claims exactly that; an explicit
        empty list is an error: it would check nothing).
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
        ``<pullback(v), u>`` (both exact up to rounding), and between ``<w, H u>`` and
        ``<u, H w>``, in ``(0, 1)``.
    order
        ``1``: first order (the pullback; with a pushforward, the adjoint test and the JVP's finite
        differences). ``2``: also the second order (the hvp's finite differences and symmetry; the
        op must have an ``hvp``; directional mode). ``None`` (default): every derivative the op's
        linearization provides (2 where it has an ``hvp`` and the mode is directional, else 1).

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
    if directions > MAX_DIRECTIONS:
        raise ValueError(f"directions must be an int <= {MAX_DIRECTIONS} (each is held in memory; mode='jacobian' checks every column), got {directions}")
    seed = _integer("seed", seed, 0)
    rtol = _real("rtol", rtol, low=0.0, high=1.0, why="at rtol >= 1 a zero gradient passes")
    atol = _real("atol", atol, low=0.0, low_open=False)
    step = _real("step", step, low=0.0, high=1.0, high_open=False)
    adjoint_rtol = _real("adjoint_rtol", adjoint_rtol, low=0.0, high=1.0)
    if order is not None:
        order = _integer("order", order, 1)
        if order not in ORDERS:
            raise ValueError(f"order must be 1, 2 or None (every derivative the op provides), got {order!r}")
        if order == 2 and mode == "jacobian":
            raise ValueError("order=2 is checked in directional mode only; use mode='directional' (the default)")
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
    if base.hvp is not None and not callable(base.hvp):
        raise TypeError(f"fun's Linearized has an hvp that is {_describe(base.hvp)}, not callable (or None)")
    if order == 2 and base.hvp is None:
        raise ValueError("order=2 checks the second order, but fun's Linearized has no hvp")
    if order is None:
        order = 2 if base.hvp is not None and mode == "directional" else 1
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
    undifferentiated: tuple[int, ...] = ()
    if wrt is None:
        # A pullback that answers nothing usable leaves no way to tell which arguments it
        # differentiates: check them all (and fail them all).
        wrt = tuple(n for i, n in enumerate(names) if i in first.problems or first.gradients[i] is not None)
        if not wrt:
            raise ValueError("the pullback returns no gradient (None) for every argument; there is nothing to check")
        # None says "the output does not depend on it": shown below, or a None would hide a gradient.
        undifferentiated = tuple(i for i, n in enumerate(names) if n not in wrt)
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
    options = _Options(
        rtol=rtol, atol=atol, step=step, adjoint_rtol=adjoint_rtol, order=order, seed=seed, rows=frozenset(i for i, n in enumerate(names) if n in wrt)
    )
    results = []
    second_order: list[tuple[int, TangentResult, str]] = []
    for index, name in enumerate(names):
        if name not in wrt:
            continue
        if nonfinite_output:
            results.append(ArgumentResult(name=name, mode=mode, failures=(nonfinite_output[0] + "; nothing can be checked",)))
        elif hosts[index].size == 0:
            results.append(ArgumentResult(name=name, mode=mode, failures=(f"{name} has no elements; nothing was checked",)))
        elif mode == "directional":
            result, blocks = _check_directional(fun, args, hosts, names, index, base, cotangents, pulled, rng, options)
            results.append(result)
            second_order += blocks
        else:
            results.append(_check_jacobian(fun, args, hosts, index, name, base, out_parts, pulled, rtol, atol, step, adjoint_rtol))
    if not nonfinite_output and cotangents:
        results += [r for i in undifferentiated if (r := _independent(fun, args, hosts, names, i, base, cotangents[0], options)) is not None]
    return GradcheckResult(arguments=_with_second_order(tuple(results), names, second_order), mode=mode, rtol=rtol, atol=atol, order=order)


_NONE_SALT = 0x6E6F6E65  # "none"


def _independent(fun, args, hosts, names, index, base, v, options: _Options) -> ArgumentResult | None:
    """``None`` when ``<v, f>`` does not change along a random direction of argument ``index`` (whose
    gradient the pullback says is ``None``: not differentiated, the output independent of it);
    otherwise a failed result for it. Independent means exactly: within ``atol ||v||``."""
    host, name = hosts[index], names[index]
    if host.size == 0:
        return None
    u = np.random.default_rng([options.seed, _NONE_SALT, index]).standard_normal(host.shape)
    u /= np.linalg.norm(u) or 1.0
    h0 = options.step * _spread(args[index]) * math.sqrt(host.size)
    try:
        numeric, _, crossed = _directional_derivative(fun, args, index, u, v, h0, base.active_set)
    except _Malformed as error:
        return ArgumentResult(name=name, failures=(f"the pullback returns no gradient (None) for {name}, and moving it: {error}",))
    if math.isfinite(numeric) and abs(numeric) <= options.atol * _norm(v):
        return None
    return ArgumentResult(
        name=name,
        failures=(
            f"the pullback returns no gradient (None) for {name}, yet the output depends on it: d/dt <v, f> = {numeric:.6g} along a random direction"
            + (" (across a kink)" if crossed else "")
            + "; return its gradient, or pass wrt= to leave it out on purpose",
        ),
    )


def _with_second_order(
    results: tuple[ArgumentResult, ...], names: Sequence[str], second_order: list[tuple[int, TangentResult, str]]
) -> tuple[ArgumentResult, ...]:
    """Every argument's result with the second-order comparisons of its gradient (made along every
    checked direction), their failures, and a failure where all of them crossed a kink."""
    merged = []
    for result in results:
        mine = [(r, note) for index, r, note in second_order if names[index] == result.name]
        if not mine:
            merged.append(result)
            continue
        failures = list(result.failures) + [note for _, note in mine if note]
        if all(r.status == "skipped" for r, _ in mine):
            failures.append("every second-order finite-difference direction crosses a kink; nothing was compared")
        merged.append(dataclasses.replace(result, hvp=tuple(r for r, _ in mine), failures=tuple(failures)))
    return tuple(merged)


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


def _check_directional(
    fun, args, hosts, names, index, base, cotangents, pulled, rng, options: _Options
) -> tuple[ArgumentResult, list[tuple[int, TangentResult, str]]]:
    """The directional checks along argument ``index``: its ArgumentResult, and the second-order
    comparisons of every checked argument's gradient along its directions (by argument index)."""
    host, name = hosts[index], names[index]
    rtol, atol = options.rtol, options.atol
    # u has unit norm, so each element moves by about t / sqrt(size): scale the step so that every
    # element moves by about step * spread.
    h0 = options.step * _spread(args[index]) * math.sqrt(host.size)
    outcomes, failures = [], []
    adjoint_error = None
    jvp_results: list[TangentResult] = []
    second_order: list[tuple[int, TangentResult, str]] = []
    symmetry_error = None
    # The symmetry test's second directions come from a stream of their own, so adding it changed no other draw.
    second = np.random.default_rng([options.seed, _SYMMETRY_SALT, index])
    for k, (v, answer) in enumerate(zip(cotangents, pulled, strict=True)):
        # Drawn first, whatever happens next, so every direction sees the same u as in a passing run.
        u = rng.standard_normal(host.shape)
        u /= np.linalg.norm(u) or 1.0
        w = _joint_direction(second, hosts, answer)
        try:
            grad = _gradient_of(answer, index, name, f"pullback(v[{k}])")
        except _Malformed as error:
            failures.append(f"direction {k}: {error}")
            outcomes.append(_failed_direction(failures[-1], h0))
            continue
        with _quiet():
            analytic = float(np.vdot(grad, u))
        line = _Line(fun, args, index, u, hosts, names, base.active_set)
        if base.pushforward is not None:
            try:
                mismatch, pushed = _adjoint_mismatch(base, args, hosts, index, u, v, analytic, answer, f"pushforward(u[{k}])")
            except _Malformed as error:
                failures.append(f"direction {k}: {error}")
            else:
                adjoint_error = max(adjoint_error or 0.0, mismatch)
                jvp_results.append(_check_jvp_fd(line, pushed, base.out, h0, k, options, failures))
        if options.order == 2:
            blocks, mismatch = _check_second_order(line, base, v, answer, u, w, h0, k, options, failures)
            second_order += blocks
            if mismatch is not None:
                symmetry_error = max(symmetry_error or 0.0, mismatch)
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
    if adjoint_error is not None and adjoint_error > options.adjoint_rtol:
        failures.append(f"JVP and VJP disagree: relative mismatch {adjoint_error:.3g} of <v, J u>")
    if symmetry_error is not None and not symmetry_error <= options.adjoint_rtol:
        failures.append(f"the Hessian is not symmetric: <w, H u> and <u, H w> differ by {symmetry_error:.3g} (relative)")
    if jvp_results and all(r.status == "skipped" for r in jvp_results):
        failures.append("every JVP finite-difference direction crosses a kink; nothing was compared")
    result = ArgumentResult(
        name=name, directions=tuple(outcomes), adjoint_error=adjoint_error, failures=tuple(failures),
        jvp=tuple(jvp_results), symmetry_error=symmetry_error,
    )  # fmt: skip
    return result, second_order


# --------------------------------------------------------------------------------------------
# Forward mode and second order: vector-valued finite differences along a line, symmetry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """The checker's validated options, as the per-argument checks read them."""

    rtol: float
    atol: float
    step: float
    adjoint_rtol: float
    order: int
    seed: int
    rows: frozenset[int]
    """The arguments being checked (by index): the second order compares their gradients' derivatives."""


class _Line:
    """``fun`` along ``a + t u`` (argument ``index`` moved): each point evaluated once, its output and
    its pullbacks kept, so the finite differences of the output and of the backward share them."""

    def __init__(self, fun, args, index, u, hosts, names, base_active) -> None:
        self.fun, self.args, self.index, self.u = fun, args, index, u
        self.hosts, self.names, self.base_active = hosts, names, base_active
        self._points: dict[float, Linearized] = {}
        self._pulled: dict[tuple[float, int], _Pulled] = {}

    def at(self, t: float) -> Linearized:
        if t not in self._points:
            self._points[t] = _value_at(self.fun, _perturbed(self.args, self.index, self.u, t))
        return self._points[t]

    def crossed(self, t: float) -> bool:
        return self.base_active is not None and not _same_active_set(self.at(t).active_set, self.base_active)

    def output(self, t: float) -> list[np.ndarray]:
        return [p.astype(np.float64) for p in _flatten(self.at(t).out)]

    def pullback(self, t: float, cotangent: Any, key: int, blocks: Sequence[int]) -> list[np.ndarray]:
        """The gradients of arguments ``blocks`` from ``pullback(cotangent)`` at ``a + t u`` (``key``
        names the cotangent for the cache); ``_Malformed`` if the pullback does not answer them."""
        if (t, key) not in self._pulled:
            self._pulled[(t, key)] = _pull(self.at(t).pullback, cotangent, self.hosts, self.names, "the pullback near the point")
        answer = self._pulled[(t, key)]
        gradients = []
        for i in blocks:
            try:
                gradients.append(_gradient_of(answer, i, self.names[i], "the pullback near the point"))
            except _Malformed as error:
                raise _Malformed(str(error), argument=i) from None
        return gradients


_RICHARDSON_HALVINGS = 8
"""Estimates of :func:`_richardson` (the step halved between them): more than the scalar test's four,
because each block of a vector stops where its own estimates converge or draw apart (a second
derivative at a mean of 1e4 needs a step 32 times below the first derivative's in one block, and
the step of the first in another)."""


def _richardson(
    values_at: Callable[[float], list[np.ndarray]], crossed: Callable[[float], bool], h0: float
) -> tuple[list[np.ndarray], list[float], bool]:
    """The derivative at 0 of a function returning a list of arrays ("blocks"): Richardson-extrapolated
    central differences ``(4 D(h/2) - D(h)) / 3``, ``h = h0, h0/2, ..., h0/128``. Each block keeps
    the estimate at which successive estimates changed least: it stops when they agree to 1e-11
    (normwise) or draw apart again (rounding noise, divided by an ever smaller step, then dominates
    the truncation error). Returns the estimates, each block's last change (its error estimate) and
    whether a point's active set differed from the base's."""

    def central(h: float) -> list[np.ndarray]:
        plus, minus = values_at(h), values_at(-h)
        if [p.shape for p in plus] != [m.shape for m in minus]:
            raise _Malformed("the values changed structure near the point")
        return [(p - m) / (2.0 * h) for p, m in zip(plus, minus, strict=True)]

    any_crossed = False
    with _quiet():
        coarse = central(h0)
        count = len(coarse)
        best: list[np.ndarray | None] = [None] * count
        errors = [math.inf] * count
        previous: list[np.ndarray | None] = [None] * count
        done = [False] * count
        for iteration in range(_RICHARDSON_HALVINGS):
            h = h0 / 2**iteration
            fine = central(h / 2.0)
            any_crossed = any_crossed or any(crossed(t) for t in (h, -h, h / 2.0, -h / 2.0))
            for block in range(count):
                if done[block]:
                    continue
                estimate = (4.0 * fine[block] - coarse[block]) / 3.0
                if previous[block] is not None:
                    change = float(np.linalg.norm((estimate - previous[block]).reshape(-1)))
                    if not change <= errors[block]:
                        done[block] = True  # drawing apart: the estimate kept is the best
                        continue
                    best[block], errors[block] = estimate, change
                    done[block] = change <= 1e-11 * float(np.linalg.norm(estimate.reshape(-1)))
                previous[block] = estimate
            if all(done):
                break
            coarse = fine
    estimates = [b if b is not None else p for b, p in zip(best, previous, strict=True)]
    return estimates, errors, any_crossed


def _norm_of(arrays: Any) -> float:
    """The norm of arrays (or numbers) taken together."""
    return math.sqrt(sum(float(np.vdot(a, a)) for a in arrays))


def _line_derivative(values_at, line: _Line, h0: float) -> tuple[list[np.ndarray], list[float], bool, float]:
    """:func:`_richardson` with the kink guard: retried with a step 100 times smaller when the stencil
    crosses a kink. Returns ``(estimate, error estimate, still crossed, step used)``."""
    estimate, error, crossed = _richardson(values_at, line.crossed, h0)
    if not crossed:
        return estimate, error, False, h0
    estimate, error, crossed = _richardson(values_at, line.crossed, h0 / 100.0)
    return estimate, error, crossed, h0 / 100.0


def _compare_blocks(
    analytic: Sequence[np.ndarray], numeric: Sequence[np.ndarray], labels: Sequence[str], fd_errors: Sequence[float], floor: float,
    step: float, what: str, options: _Options,
) -> tuple[TangentResult, str]:
    """Normwise comparison of a vector made of blocks (the output's parts; every argument's gradient
    derivative): ``||a - n|| <= rtol * max(||a||, ||n||) + floor``, the block that contributes most to
    the error named in the note. Returns the result and the failure note ("" when it passed)."""
    for n, label in zip(numeric, labels, strict=True):
        if not np.all(np.isfinite(n)):
            note = f"{what}: the finite-difference derivative of {label} holds {_first_nonfinite(n)} (not finite near the point)"
            return TangentResult("failed", math.nan, math.nan, _norm_of(fd_errors), step, note), note
    with _quiet():
        differences = [float(np.linalg.norm((a - n).reshape(-1))) for a, n in zip(analytic, numeric, strict=True)]
        error = math.sqrt(sum(d * d for d in differences))
        scale = max(_norm_of(analytic), _norm_of(numeric))
        tolerance = options.rtol * scale + floor
        fd_error = math.sqrt(sum(e * e for e in fd_errors))
    if not (math.isfinite(error) and math.isfinite(tolerance)):
        note = f"{what}: the error ({error:.3g}) or its tolerance ({tolerance:.3g}) is not finite, cannot be judged"
        return TangentResult("failed", math.inf, math.nan, fd_error, step, note), note
    rel_error = error / scale if options.rtol * scale > floor else math.nan
    if error <= tolerance:
        return TangentResult("passed", error, rel_error, fd_error, step), ""
    worst = labels[int(np.argmax(differences))]
    noisy = not (fd_error <= tolerance)
    note = (
        f"{what}: ||analytic - numeric|| = {error:.3g} > tolerance {tolerance:.3g} (norm {scale:.3g}; most of it in {worst})"
        + (f"; the finite differences are too noisy to decide (error estimate {fd_error:.3g})" if noisy else "")
    )
    return TangentResult("failed", error, rel_error, fd_error, step, note), note


def _skipped(fd_errors: Sequence[float], step: float) -> TangentResult:
    return TangentResult("skipped", math.nan, math.nan, _norm_of(fd_errors), step, "direction crosses a kink (active set changes within the stencil)")


def _check_jvp_fd(line: _Line, pushed: list[np.ndarray], out: Any, h0: float, k: int, options: _Options, failures: list[str]) -> TangentResult:
    """Finite differences of the output along ``u`` against the pushforward's tangent ``J u``."""
    what = f"direction {k}: JVP"
    try:
        numeric, fd_error, crossed, step = _line_derivative(line.output, line, h0)
    except _Malformed as error:
        failures.append(f"{what}: {error}")
        return TangentResult("failed", math.nan, math.nan, math.nan, h0, failures[-1])
    if crossed:
        return _skipped(fd_error, step)
    parts = _flatten(out)
    labels = ["the output"] if len(parts) == 1 else [f"output part {i}" for i in range(len(parts))]
    # The directional test's absolute term atol ||v|| ||u||, for a cotangent of unit entries (||u|| = 1).
    floor = options.atol * math.sqrt(sum(p.size for p in parts))
    result, note = _compare_blocks(pushed, numeric, labels, fd_error, floor, step, what, options)
    if note:
        failures.append(note)
    return result


def _joint_direction(rng: np.random.Generator, hosts: Sequence[np.ndarray], answer: _Pulled) -> list[np.ndarray]:
    """A random unit direction over every argument the pullback differentiates (zero elsewhere)."""
    w = [rng.standard_normal(h.shape) if answer.gradients[i] is not None else np.zeros(h.shape) for i, h in enumerate(hosts)]
    norm = _norm_of(w) or 1.0
    return [part / norm for part in w]


def _hvp_of(base: Linearized, v: Any, tangents: tuple, answer: _Pulled, hosts: Sequence[np.ndarray], names: Sequence[str], what: str) -> list[np.ndarray | None]:
    """``base.hvp(v, *tangents)`` checked: one array per argument, each like its argument and finite,
    ``None`` exactly where the pullback answered ``None``; ``_Malformed`` otherwise."""
    handed = _copies((v, *tangents))
    try:
        raw = base.hvp(*handed)
    except Exception as error:  # noqa: BLE001 - an hvp that raises is a failed check
        raise _Malformed(f"{what} raised {type(error).__name__}: {error}") from None
    if _modified(handed, (v, *tangents)):
        raise _Malformed(f"{what} modified its cotangent or tangents in place (an op must not mutate its inputs)")
    if not isinstance(raw, tuple | list):
        raise _Malformed(f"{what} returned {_describe(raw)}, expected a tuple with one array per argument ({len(hosts)})")
    if len(raw) != len(hosts):
        raise _Malformed(f"{what} returned {len(raw)} arrays, expected one per argument ({len(hosts)}: {', '.join(names)})")
    found: list[np.ndarray | None] = []
    for i, (value, host, name) in enumerate(zip(raw, hosts, names, strict=True)):
        differentiated = answer.gradients[i] is not None or i in answer.problems
        if value is None:
            if differentiated:
                raise _Malformed(f"{what} returned None for {name}, whose gradient the pullback returns", argument=i)
            found.append(None)
            continue
        if not differentiated:
            raise _Malformed(f"{what} returned an array for {name}, whose gradient the pullback says is None", argument=i)
        try:
            found.append(_matching(value, host, f"{what} for {name}", "the argument's"))
        except _Malformed as error:
            raise _Malformed(str(error), argument=i) from None
    return found


def _check_second_order(
    line: _Line, base: Linearized, v: Any, answer: _Pulled, u: np.ndarray, w: list[np.ndarray], h0: float, k: int, options: _Options, failures: list[str]
) -> tuple[list[tuple[int, TangentResult, str]], float | None]:
    """Along ``u`` (argument ``line.index``): finite differences of ``pullback(v)`` against ``hvp(v, u)``,
    one comparison per checked argument's gradient (its block of the Hessian's column, returned as
    ``(argument index, result, failure note)``: a wrong block is the fault of that argument's
    gradient), and the symmetry mismatch of ``<w, H u>`` and ``<u, H w>``. A malformed hvp fails
    the direction's argument (``failures``)."""
    args, hosts, names, index = line.args, line.hosts, line.names, line.index
    what = f"second order along {names[index]} (direction {k})"
    try:
        along_u = _hvp_of(base, v, _tangents(args, hosts, index, u), answer, hosts, names, f"hvp(v[{k}], u[{k}])")
        along_w = _hvp_of(base, v, tuple(_to_backend(part, a) for part, a in zip(w, args, strict=True)), answer, hosts, names, f"hvp(v[{k}], w[{k}])")
    except _Malformed as error:
        note = f"{what}: {error}"
        if error.argument is not None and error.argument in options.rows:  # one argument's block is malformed
            return [(error.argument, TangentResult("failed", math.nan, math.nan, math.nan, h0, note), note)], None
        failures.append(note)
        return [], None
    present = [i for i, h in enumerate(along_u) if h is not None and i not in answer.problems]
    with _quiet():
        first = sum(float(np.vdot(w[i], along_u[i])) for i in present)
        second = float(np.vdot(u, along_w[index])) if along_w[index] is not None else 0.0
        # The Cauchy-Schwarz bound (||w|| = ||u|| = 1), and no less than the whole gradient's norm: a
        # Hessian that is zero up to rounding (y = beta for (1, 1, 1, 1) input) has no scale of its own.
        gradient = _norm_of(g for g in answer.gradients if g is not None)
        scale = max(_norm_of(along_u[i] for i in present), _norm_of(along_w[i] for i in present), gradient)
        mismatch = abs(first - second)
    if not (math.isfinite(mismatch) and math.isfinite(scale)):
        symmetry = math.inf  # finite hvps whose products overflow: not shown to be symmetric
    else:
        symmetry = mismatch / scale if scale > 0 else (0.0 if mismatch == 0 else math.inf)
    blocks = [i for i in present if i in options.rows]
    if not blocks:
        return [], symmetry
    try:
        numeric, fd_errors, crossed, step = _line_derivative(lambda t: line.pullback(t, v, k, blocks), line, h0)
    except _Malformed as error:
        row = error.argument if error.argument in options.rows else index
        note = f"{what}: {error}"
        return [(row, TangentResult("failed", math.nan, math.nan, math.nan, h0, note), note)], symmetry
    if crossed:
        return [(i, _skipped([e], step), "") for i, e in zip(blocks, fd_errors, strict=True)], symmetry
    analytic = [along_u[i] for i in blocks]
    with _quiet():
        # Every block is judged against the whole column (the derivative of every gradient along u),
        # as the JVP is against the whole output: a small block carries the rounding of the large ones.
        column = max(_norm_of(analytic), _norm_of(numeric))
        floor = options.atol * _norm(v)  # the directional test's atol ||v|| ||u||: H is the Hessian of <v, f>
        tolerance = options.rtol * column + floor
    results = []
    for i, a, n, fd_error in zip(blocks, analytic, numeric, fd_errors, strict=True):
        label = f"{what}: the derivative of the gradient of {names[i]}"
        if not np.all(np.isfinite(n)):
            note = f"{label}: the finite differences hold {_first_nonfinite(n)} (the pullback is not finite near the point)"
            results.append((i, TangentResult("failed", math.nan, math.nan, fd_error, step, note), note))
            continue
        with _quiet():
            error = float(np.linalg.norm((a - n).reshape(-1)))
        if not (math.isfinite(error) and math.isfinite(tolerance)):
            note = f"{label}: the error ({error:.3g}) or its tolerance ({tolerance:.3g}) is not finite, cannot be judged"
            results.append((i, TangentResult("failed", math.inf, math.nan, fd_error, step, note), note))
            continue
        rel_error = error / column if options.rtol * column > floor else math.nan
        if error <= tolerance:
            results.append((i, TangentResult("passed", error, rel_error, fd_error, step), ""))
            continue
        note = f"{label}: ||hvp - numeric|| = {error:.3g} > tolerance {tolerance:.3g} (the column's norm {column:.3g})" + (
            f"; the finite differences are too noisy to decide (error estimate {fd_error:.3g})" if not fd_error <= tolerance else ""
        )
        results.append((i, TangentResult("failed", error, rel_error, fd_error, step, note), note))
    return results, symmetry


def _tangents(args: tuple, hosts: Sequence[np.ndarray], index: int, u: np.ndarray) -> tuple:
    """One tangent per argument: ``u`` for argument ``index``, zeros elsewhere, on each argument's backend."""
    return tuple(_to_backend(u if i == index else np.zeros(h.shape), a) for i, (a, h) in enumerate(zip(args, hosts, strict=True)))


def _pushed(base: Linearized, tangents: tuple, what: str) -> list[np.ndarray]:
    """``base.pushforward(*tangents)``, checked against the output (module docstring, "Fail closed")."""
    handed = _copies(tuple(tangents))
    try:
        raw = base.pushforward(*handed)
    except Exception as error:  # noqa: BLE001 - a pushforward that raises is a failed check
        raise _Malformed(f"{what} raised {type(error).__name__}: {error}") from None
    if _modified(handed, tuple(tangents)):
        raise _Malformed(f"{what} modified its tangents in place (an op must not mutate its inputs)")
    return _like_out(raw, _output_parts(base.out), base.out, what)


def _adjoint_mismatch(base, args, hosts, index, u, v, analytic, answer: _Pulled, what) -> tuple[float, list[np.ndarray]]:
    """Relative mismatch of ``<v, J u>`` (JVP) and ``<J^T v, u>`` (VJP), relative to the Cauchy–Schwarz
    bound of the whole derivative (module docstring), and the JVP's tangent; ``_Malformed`` for a bad JVP."""
    pushed = _pushed(base, _tangents(args, hosts, index, u), what)
    with _quiet():
        jvp = float(sum(np.vdot(a, b) for a, b in zip(_flatten(v), pushed, strict=True)))
        whole = _norm_of(g for g in answer.gradients if g is not None)  # every argument's gradient; ||u|| = 1
        scale = max(whole, _norm(v) * math.sqrt(sum(float(np.vdot(p, p)) for p in pushed)))
        mismatch = abs(jvp - analytic)
        if not (math.isfinite(mismatch) and math.isfinite(scale)):
            return math.inf, pushed  # finite JVP and VJP whose products overflow: not shown to agree
        return (mismatch / scale if scale > 0 else (0.0 if mismatch == 0 else math.inf)), pushed


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
        whole = max((float(np.max(np.abs(g), initial=0.0)) for answer in pulled for g in answer.gradients if g is not None), default=0.0)
        scale = max(whole, float(np.max(np.abs(pushforward), initial=0.0)))
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
