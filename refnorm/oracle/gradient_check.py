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
must agree to rounding: an exact test, no finite differences.

**Full Jacobian** (``mode="jacobian"``, tiny inputs): the analytic Jacobian row by row (one
pullback per output element) against :func:`scipy.differentiate.jacobian` column by column; the
result names the worst ``(output index, input index)`` entry.

All checking happens in float64 on the host (NumPy): a float32 implementation is compared
against the float64 reference, never against finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.differentiate

from .._xp import to_numpy
from ..ops.linearized import Linearized


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
    or zero up to rounding, has no scale to be relative to)."""
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
    """Largest relative mismatch of ``<v, J u>`` between JVP and VJP (None without a JVP)."""
    worst_entry: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    """Jacobian mode: the (output index, input index) of the largest error."""
    jacobian_abs_error: float | None = None
    jacobian_rel_error: float | None = None
    jacobian_skipped_columns: int = 0
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures and self.checked > 0

    @property
    def checked(self) -> int:
        """Number of directions (or Jacobian columns) that were actually compared."""
        if self.jacobian_abs_error is not None:
            return 1
        return sum(d.status != "skipped" for d in self.directions)

    @property
    def skipped(self) -> int:
        return sum(d.status == "skipped" for d in self.directions) + self.jacobian_skipped_columns

    @property
    def max_abs_error(self) -> float:
        if self.jacobian_abs_error is not None:
            return self.jacobian_abs_error
        return max((d.abs_error for d in self.directions if d.status != "skipped"), default=0.0)

    @property
    def max_rel_error(self) -> float:
        if self.jacobian_rel_error is not None:
            return self.jacobian_rel_error
        return max((d.rel_error for d in self.directions if d.status != "skipped" and not math.isnan(d.rel_error)), default=0.0)


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
        """True when every checked argument passed (an argument with only skipped directions fails)."""
        return all(a.passed for a in self.arguments)

    def __getitem__(self, name: str) -> ArgumentResult:
        for argument in self.arguments:
            if argument.name == name:
                return argument
        raise KeyError(name)

    @property
    def max_abs_error(self) -> float:
        return max((a.max_abs_error for a in self.arguments), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((a.max_rel_error for a in self.arguments), default=0.0)

    def summary(self) -> str:
        """A plain-text table: one row per argument."""
        lines = [f"{'argument':<14}{'checked':>8}{'skipped':>8}{'max abs err':>13}{'max rel err':>13}  verdict"]
        for a in self.arguments:
            verdict = "ok" if a.passed else "FAIL: " + "; ".join(a.failures or ("nothing checked",))
            lines.append(f"{a.name:<14}{a.checked:>8}{a.skipped:>8}{a.max_abs_error:>13.2e}{a.max_rel_error:>13.2e}  {verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class GradcheckError(AssertionError):
    """Raised by :func:`assert_gradcheck` when a check fails."""


_DIRECTION_SALT = 0x67726164  # "grad"


def _flatten(value: Any) -> list[np.ndarray]:
    """The arrays of an output or active set (array, number, or nested tuple), as float64 host arrays."""
    if value is None:
        return []
    if isinstance(value, tuple | list):
        return [a for item in value for a in _flatten(item)]
    if isinstance(value, bool | int | float | str):
        return [np.asarray(value)]
    return [np.asarray(to_numpy(value))]


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
        The point: arrays of any array-API library. They must be float64 (finite differences in
        float32 cannot check a gradient to a meaningful tolerance).
    names
        A name per argument, for the report (default ``arg0, arg1, ...``).
    wrt
        Names of the arguments to check (default: every argument whose gradient is not ``None``).
    mode
        ``"directional"`` (dot-product tests over ``directions`` random directions per argument)
        or ``"jacobian"`` (full Jacobians; for tiny inputs).
    seed
        Seed of the NumPy generator that draws directions and cotangents.
    rtol, atol
        Pass when ``|analytic - numeric| <= rtol * scale + atol * ||v|| ||u||`` (module docstring).
    step
        Initial finite-difference step per element, relative to the spread (standard deviation,
        or 1 if it is 0) of the argument being perturbed; halved up to three times.
    adjoint_rtol
        Largest relative mismatch allowed between ``<v, pushforward(u)>`` and
        ``<pullback(v), u>`` (both exact up to rounding).

    Returns
    -------
    GradcheckResult
        Per argument: every direction's errors, skips (kinks) and failures.
    """
    if mode not in ("directional", "jacobian"):
        raise ValueError(f"unknown mode {mode!r}; expected 'directional' or 'jacobian'")
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ValueError(f"directions must be a positive int, got {directions!r}")
    args = tuple(args)
    names = tuple(names) if names is not None else tuple(f"arg{i}" for i in range(len(args)))
    if len(names) != len(args):
        raise ValueError(f"names has {len(names)} entries, expected one per argument ({len(args)})")
    for name, a in zip(names, args, strict=True):
        if to_numpy(a).dtype != np.float64:
            raise TypeError(f"argument {name} has dtype {a.dtype}; gradcheck needs float64 arguments")

    base = fun(*args)
    # Salted, so the directions never repeat a stream the caller drew its inputs from with the
    # same seed (an output direction equal to x is nearly orthogonal to a normalization's range).
    rng = np.random.default_rng([seed, _DIRECTION_SALT])
    cotangents = [
        _like_output(base.out, lambda h: rng.standard_normal(h.shape), _to_backend) for _ in range(directions)
    ]
    pullbacks = [base.pullback(v) for v in cotangents]
    if any(len(p) != len(args) for p in pullbacks):
        raise ValueError(f"pullback returned {len(pullbacks[0])} gradients, expected one per argument ({len(args)})")

    if wrt is None:
        wrt = tuple(n for i, n in enumerate(names) if pullbacks[0][i] is not None)
    unknown = set(wrt) - set(names)
    if unknown:
        raise ValueError(f"wrt names unknown arguments {sorted(unknown)}; arguments are {names}")
    for index, name in enumerate(names):
        if name in wrt and pullbacks[0][index] is None:
            raise ValueError(f"the pullback returns no gradient (None) for {name}, which wrt asks to check")

    results = []
    for index, name in enumerate(names):
        if name not in wrt:
            continue
        if mode == "directional":
            results.append(
                _check_directional(
                    fun, args, index, name, base, cotangents, pullbacks, rng, rtol, atol, step, adjoint_rtol
                )
            )
        else:
            results.append(_check_jacobian(fun, args, index, name, base, rtol, atol, step))
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


def _directional_derivative(
    fun: Callable[..., Linearized], args: tuple, index: int, direction: np.ndarray, weight: Any, h0: float, base_active: Any
) -> tuple[float, float, bool]:
    """d/dt <weight, f(a + t u)> at 0: (value, scipy's error estimate, crossed a kink?)."""
    crossed = False

    def g(t: np.ndarray) -> np.ndarray:
        nonlocal crossed
        values = np.empty(t.shape)
        for position, ti in np.ndenumerate(t):
            evaluated = fun(*_perturbed(args, index, direction, float(ti)))
            if base_active is not None and not _same_active_set(evaluated.active_set, base_active):
                crossed = True
            values[position] = _dot(weight, evaluated.out)
        return values

    result = scipy.differentiate.derivative(
        g, 0.0, order=4, step_factor=2.0, initial_step=h0, maxiter=4, tolerances={"atol": 0.0, "rtol": 1e-11}
    )
    return float(result.df), float(result.error), crossed


def _check_directional(
    fun, args, index, name, base, cotangents, pullbacks, rng, rtol, atol, step, adjoint_rtol
) -> ArgumentResult:
    host = to_numpy(args[index])
    # u has unit norm, so each element moves by about t / sqrt(size): scale the step so that every
    # element moves by about step * spread.
    h0 = step * _spread(args[index]) * math.sqrt(host.size)
    outcomes, failures = [], []
    adjoint_error = None
    for k, (v, grads) in enumerate(zip(cotangents, pullbacks, strict=True)):
        u = rng.standard_normal(host.shape)
        u /= np.linalg.norm(u) or 1.0
        grad = to_numpy(grads[index])
        if grad.shape != host.shape:
            raise ValueError(f"pullback gradient for {name} has shape {grad.shape}, expected {host.shape}")
        analytic = float(np.vdot(grad, u))
        if base.pushforward is not None:
            tangents = tuple(
                _to_backend(u if i == index else np.zeros(to_numpy(a).shape), a) for i, a in enumerate(args)
            )
            pushed = base.pushforward(*tangents)
            adjoint_scale = max(float(np.linalg.norm(grad)), _norm(v) * _norm(pushed))
            mismatch = abs(_dot(v, pushed) - analytic)
            adjoint_error = max(adjoint_error or 0.0, mismatch / adjoint_scale if adjoint_scale > 0 else mismatch)
        numeric, fd_error, crossed = _directional_derivative(fun, args, index, u, v, h0, base.active_set)
        used_step = h0
        if crossed:
            used_step = h0 / 100.0
            numeric, fd_error, crossed = _directional_derivative(fun, args, index, u, v, used_step, base.active_set)
        scale = max(float(np.linalg.norm(grad)), abs(numeric))
        abs_error = abs(analytic - numeric)
        tolerance = rtol * scale + atol * _norm(v)
        # A gradient that is zero, or zero up to rounding (a zero-gradient region, a parameter at
        # its initialisation), has no scale to be relative to: where the absolute term dominates
        # the tolerance the direction is judged in absolute terms, and its relative error is NaN
        # (left out of max_rel_error) instead of a meaningless ~1.
        rel_error = abs_error / scale if rtol * scale > atol * _norm(v) else math.nan
        if crossed:
            status, note = "skipped", "direction crosses a kink (active set changes within the stencil)"
        elif abs_error <= tolerance:
            status, note = "passed", ""
        else:
            status = "failed"
            noisy = fd_error > tolerance
            note = (
                f"direction {k}: analytic {analytic:.12g} vs numeric {numeric:.12g} (error {abs_error:.3g} > tolerance {tolerance:.3g})"
                + ("; the finite differences are too noisy to decide (error estimate {:.3g})".format(fd_error) if noisy else "")
            )
            failures.append(note)
        outcomes.append(DirectionResult(status, analytic, numeric, abs_error, rel_error, fd_error, used_step, note))
    if adjoint_error is not None and adjoint_error > adjoint_rtol:
        failures.append(f"JVP and VJP disagree: relative mismatch {adjoint_error:.3g} of <v, J u>")
    return ArgumentResult(name=name, directions=tuple(outcomes), adjoint_error=adjoint_error, failures=tuple(failures))


def _check_jacobian(fun, args, index, name, base, rtol, atol, step) -> ArgumentResult:
    host = to_numpy(args[index])
    out_parts = _flatten(base.out)
    out_size = sum(p.size for p in out_parts)

    # Analytic Jacobian, one row per output element (one pullback per one-hot cotangent).
    analytic = np.empty((out_size, host.size))
    offsets = np.cumsum([0] + [p.size for p in out_parts])
    for row in range(out_size):
        part = int(np.searchsorted(offsets, row, side="right") - 1)
        pieces = [np.zeros(p.shape) for p in out_parts]
        pieces[part].reshape(-1)[row - offsets[part]] = 1.0
        cotangent = _rebuild(base.out, pieces)
        grad = base.pullback(cotangent)[index]
        analytic[row] = to_numpy(grad).reshape(-1)

    # Numeric Jacobian, one column per input element (scipy.differentiate.jacobian).
    skipped_columns: set[int] = set()

    def f(flat: np.ndarray) -> np.ndarray:
        columns = flat.reshape(host.size, -1)
        values = np.empty((out_size, columns.shape[1]))
        for j in range(columns.shape[1]):
            point = columns[:, j].reshape(host.shape)
            evaluated = fun(*(args[:index] + (_to_backend(point, args[index]),) + args[index + 1 :]))
            if base.active_set is not None and not _same_active_set(evaluated.active_set, base.active_set):
                moved = np.nonzero(point.reshape(-1) != host.reshape(-1))[0]
                skipped_columns.update(int(m) for m in moved)
            values[:, j] = np.concatenate([p.reshape(-1) for p in _flatten(evaluated.out)])
        return values.reshape((out_size,) + flat.shape[1:])

    h0 = step * _spread(args[index])
    result = scipy.differentiate.jacobian(
        f, host.reshape(-1), order=4, step_factor=2.0, initial_step=h0, maxiter=4, tolerances={"atol": 0.0, "rtol": 1e-11}
    )
    numeric = np.asarray(result.df).reshape(out_size, host.size)
    keep = np.ones(host.size, dtype=bool)
    keep[sorted(skipped_columns)] = False
    error = np.abs(analytic - numeric) * keep
    # Normwise comparison: entries are judged against the largest entry of the Jacobian.
    scale = max(float(np.max(np.abs(analytic * keep), initial=0.0)), float(np.max(np.abs(numeric * keep), initial=0.0)))
    tolerance = rtol * scale + atol
    worst = np.unravel_index(int(np.argmax(error)), error.shape)
    failures = []
    if error[worst] > tolerance:
        out_index = _unflat_index(out_parts, int(worst[0]))
        in_index = np.unravel_index(int(worst[1]), host.shape)
        failures.append(
            f"Jacobian entry d out{out_index} / d {name}{tuple(int(i) for i in in_index)}: analytic "
            f"{analytic[worst]:.12g} vs numeric {numeric[worst]:.12g} (error {error[worst]:.3g} > tolerance {tolerance:.3g})"
        )
    if skipped_columns and len(skipped_columns) == host.size:
        failures.append("every Jacobian column crosses a kink; nothing was checked")
    rel = float(error[worst] / scale) if scale > 0 else float(error[worst])
    return ArgumentResult(
        name=name,
        worst_entry=(_unflat_index(out_parts, int(worst[0])), tuple(int(i) for i in np.unravel_index(int(worst[1]), host.shape))),
        jacobian_abs_error=float(np.max(error)),
        jacobian_rel_error=rel,
        jacobian_skipped_columns=len(skipped_columns),
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
    """:func:`gradcheck`, raising :class:`GradcheckError` with the report when it fails."""
    result = gradcheck(fun, args, **kwargs)
    if not result.passed:
        raise GradcheckError("gradient check failed\n" + result.summary())
    return result
