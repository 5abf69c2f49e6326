r"""Comparing arrays against refnorm's values: per-dtype tolerances and named, located errors.

An element passes when

.. math:: |a - e| \le \mathrm{atol} + \mathrm{rtol}\,|e|

(``numpy.isclose`` and ``torch.testing.assert_close`` use the same rule), ``a`` the value under
test, ``e`` refnorm's float64 value. Integer and boolean arrays must be equal.

Default tolerances, by the dtype of the implementation under test and by direction:

=========  ===========================  ==============================
dtype      forward (outputs and         backward (gradients), jvp (the
           intermediates)               outputs' tangents), hvp (the
                                        second order)
=========  ===========================  ==============================
float32    rtol 1.3e-6, atol 1e-5       rtol 2e-3, atol 2e-3
float64    rtol 1e-7, atol 1e-7         rtol 1e-5, atol 1e-5
=========  ===========================  ==============================

Forward values use ``torch.testing.assert_close``'s defaults; derivatives of every kind use JAX's
gradient tolerance table (``jax._src.public_test_util.default_gradient_tolerance``, which
``jax.test_util.check_grads`` applies to forward mode and to second order alike) as rtol and atol.
Each direction is measured and widened on its own (below), so a case whose float32 second order is
ill-conditioned does not widen its gradients' tolerance.

A case may need more: with a mean of 1e4 and a standard deviation of 1, ``x - mean`` loses about
four of float32's seven digits in *any* implementation. :func:`recommended_tolerances` measures
this instead of guessing: it evaluates the case with refnorm itself in float32 (on the
float32-rounded inputs) and, where that evaluation exceeds a tenth of the default tolerance, widens
the float32 tolerance to :data:`SAFETY` times what refnorm's own float32 evaluation needs, rounded
up to one significant digit, and says so in a note. Explicit per-case overrides
(``Case.tolerances``) come last, with their recorded reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..ops._validation import check_name, check_nonnegative_number, describe
from .catalog import Case

DIRECTIONS = ("forward", "backward", "jvp", "hvp")
"""Tolerance directions: ``output.*`` and ``intermediate.*`` are forward, ``grad.*`` backward,
``jvp.*`` jvp and ``hvp.*`` hvp (version-1 golden sets have the first two only)."""
DTYPES = ("float32", "float64")


class Tolerance(NamedTuple):
    """``|actual - expected| <= atol + rtol * |expected|``."""

    rtol: float
    atol: float

    def scaled(self, factor: float) -> Tolerance:
        return Tolerance(_significant(self.rtol * factor), _significant(self.atol * factor))


DEFAULT_TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "float32": {"forward": Tolerance(1.3e-6, 1e-5), "backward": Tolerance(2e-3, 2e-3), "jvp": Tolerance(2e-3, 2e-3), "hvp": Tolerance(2e-3, 2e-3)},
    "float64": {"forward": Tolerance(1e-7, 1e-7), "backward": Tolerance(1e-5, 1e-5), "jvp": Tolerance(1e-5, 1e-5), "hvp": Tolerance(1e-5, 1e-5)},
}
"""Default tolerances by implementation dtype and direction (module docstring)."""

SAFETY = 10.0
"""How much more error than refnorm's own float32 evaluation a widened tolerance allows (other
implementations sum in other orders)."""


def _significant(value: float) -> float:
    """``value`` rounded to 3 significant digits (so scaled tolerances print cleanly)."""
    return float(f"{value:.3g}")


def dtype_name(dtype: Any) -> str:
    """``"float32"`` or ``"float64"`` for a NumPy/array dtype or its name; ``TypeError`` for something
    that is not a dtype (``None`` included), ``ValueError`` for another dtype."""
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name if dtype is not None else None
        except TypeError:
            name = None
        if name is None:
            raise TypeError(f"dtype must be 'float32' or 'float64' (a name or a NumPy dtype), got {describe(dtype)}")
    if name not in DTYPES:
        raise ValueError(f"dtype {dtype!r} has no default tolerance; expected one of {DTYPES}")
    return name


def default_tolerance(dtype: Any, direction: str = "forward") -> Tolerance:
    """The default :class:`Tolerance` for an implementation in ``dtype`` and a direction of :data:`DIRECTIONS`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}, expected one of {DIRECTIONS}")
    return DEFAULT_TOLERANCES[dtype_name(dtype)][direction]


def format_value(value: float | None) -> str:
    """A float for a message: ``NaN``, ``inf`` and ``-inf`` named as such, others as ``repr``."""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def json_float(value: float | None) -> float | str | None:
    """A float for JSON, which has no NaN or infinity: those become the strings ``"NaN"``,
    ``"inf"`` and ``"-inf"`` (every machine-readable report of refnorm writes them so)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else format_value(value)


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one array against refnorm's value (:func:`compare`)."""

    array: str
    passed: bool
    shape: tuple[int, ...]
    rtol: float
    atol: float
    mismatched: int = 0
    max_abs_error: float = 0.0
    """Largest ``|a - e|``; infinite when ``a`` holds NaN or infinity where ``e`` is finite."""
    max_rel_error: float = 0.0
    """Largest ``|a - e| / |e|``; infinite where ``e = 0`` and ``a`` is not."""
    worst_index: tuple[int, ...] | None = None
    """The index of the largest ``|a - e| / (atol + rtol |e|)`` (a NaN or infinity first)."""
    actual: float | None = None
    expected: float | None = None
    ratio: float = 0.0
    """Largest ``|a - e| / (atol + rtol |e|)``: above 1 fails; how far from failing it is."""
    problem: str = ""
    """A structural failure (shape, missing array) instead of a numerical one."""
    nan_count: int = 0
    """Elements where ``a`` is NaN and ``e`` is not."""
    inf_count: int = 0
    """Elements where ``a`` is infinite and ``e`` is not that same infinity."""

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def abs_error(self) -> float | None:
        """``|a - e|`` at :attr:`worst_index` (NaN where ``a`` is NaN)."""
        if self.actual is None or self.expected is None:
            return None
        return abs(self.actual - self.expected)

    @property
    def rel_error(self) -> float | None:
        """``|a - e| / |e|`` at :attr:`worst_index` (``None`` where ``e = 0``: not applicable)."""
        error = self.abs_error
        if error is None or self.expected == 0:
            return None
        return error / abs(self.expected)  # type: ignore[arg-type]

    def _nonfinite(self) -> str:
        parts = [f"{count} {name}" for count, name in ((self.nan_count, "NaN"), (self.inf_count, "inf")) if count]
        return " and ".join(parts) + " where refnorm's value is finite" if parts else ""

    def describe(self) -> str:
        """One paragraph: the array, how many elements fail, the worst index with both values."""
        if self.problem:
            return f"{self.array}: {self.problem}"
        head = f"{self.array}: {self.mismatched} of {self.size} elements differ" if not self.passed else f"{self.array}: ok"
        text = f"{head} (|actual - expected| <= atol + rtol*|expected| with rtol={self.rtol:.3g}, atol={self.atol:.3g})"
        nonfinite = self._nonfinite()
        if nonfinite:
            text += f"; {nonfinite}"
        else:
            text += f"; max abs error {self.max_abs_error:.3e}, max rel error {self.max_rel_error:.3e}"
        if self.worst_index is not None:
            text += (
                f"; worst at index {self.worst_index}: actual {format_value(self.actual)}, expected {format_value(self.expected)}, "
                f"abs error {format_value(self.abs_error) if nonfinite else f'{self.abs_error:.3e}'}"
            )
        return text

    def brief(self) -> str:
        """One line for a failure message: how many elements, the worst one, its errors and the tolerance."""
        if self.problem:
            return f"{self.array}: {self.problem}"
        if self.passed:
            return f"{self.array}: ok (max abs error {self.max_abs_error:.3e})"
        nonfinite = self._nonfinite()
        rel = self.rel_error
        errors = (
            f"abs error {format_value(self.abs_error)}" if nonfinite or self.abs_error is None or not math.isfinite(self.abs_error)
            else f"abs error {self.abs_error:.3e}, rel error {'n/a' if rel is None else f'{rel:.3e}'}"
        )  # fmt: skip
        return (
            f"{self.array}: {self.mismatched} of {self.size} elements differ" + (f" ({nonfinite})" if nonfinite else "")
            + f"; worst at {self.worst_index}: actual {format_value(self.actual)}, expected {format_value(self.expected)}, "
            + f"{errors} (rtol {self.rtol:.3g}, atol {self.atol:.3g})"
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """The comparison as JSON data (non-finite floats as ``"NaN"``, ``"inf"``, ``"-inf"``)."""
        return {
            "array": self.array,
            "passed": self.passed,
            "problem": self.problem or None,
            "shape": list(self.shape),
            "rtol": self.rtol,
            "atol": self.atol,
            "mismatched": self.mismatched,
            "size": self.size,
            "nan": self.nan_count,
            "inf": self.inf_count,
            "max_abs_error": json_float(self.max_abs_error),
            "max_rel_error": json_float(self.max_rel_error),
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            "actual": json_float(self.actual),
            "expected": json_float(self.expected),
            "abs_error": json_float(self.abs_error),
            "rel_error": json_float(self.rel_error),
            "ratio": json_float(self.ratio),
        }


def compare(actual: Any, expected: Any, *, rtol: float, atol: float, array: str = "array") -> Comparison:
    """Compare ``actual`` with refnorm's ``expected`` elementwise (module docstring rule).

    Both are converted to NumPy float64 (integer/boolean arrays compare exactly). NaN or infinity
    in ``actual`` where ``expected`` is finite counts as an infinite error, and is counted as such
    (:attr:`Comparison.nan_count`, :attr:`Comparison.inf_count`). ``actual`` is judged, whatever it
    is: one that is not a real numeric array (complex, strings, objects, ``None``) fails the
    comparison. ``expected`` must be a real numeric array, ``rtol`` and ``atol`` finite numbers
    ``>= 0`` and ``array`` a non-empty name (``TypeError``/``ValueError`` otherwise).
    """
    rtol = check_nonnegative_number(rtol, "rtol")
    atol = check_nonnegative_number(atol, "atol")
    array = check_name(array, "array")
    expected = np.asarray(expected)
    if expected.dtype.kind not in "biuf":
        got = "objects" if expected.dtype.kind == "O" else f"dtype {expected.dtype}"
        raise TypeError(f"expected must be refnorm's value, a real numeric array, got {got}")
    try:
        actual = np.asarray(actual)
    except Exception as error:  # noqa: BLE001 - whatever the implementation returned, judge it
        actual = np.asarray(None)
        note = f"; converting it raised {type(error).__name__}: {error}"
    else:
        note = ""
    if actual.dtype.kind not in "biuf":
        what = "objects" if actual.dtype.kind == "O" else f"dtype {actual.dtype}"
        return Comparison(array, False, tuple(expected.shape), rtol, atol, problem=f"not a real numeric array ({what}){note}")
    if actual.shape != expected.shape:
        return Comparison(array, False, tuple(expected.shape), rtol, atol,
                          problem=f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")  # fmt: skip
    shape = tuple(expected.shape)
    exact = not (np.issubdtype(expected.dtype, np.floating) or np.issubdtype(actual.dtype, np.floating))
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    if a.size == 0:
        return Comparison(array, True, shape, rtol, atol)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        error = np.abs(a - e)
        same_nonfinite = ~np.isfinite(e) & (a == e) | (np.isnan(e) & np.isnan(a))
        error = np.where(same_nonfinite, 0.0, np.where(np.isnan(error), np.inf, error))
        allowed = np.zeros_like(e) if exact else atol + rtol * np.abs(e)
        ratio = np.where(error == 0, 0.0, error / np.where(allowed > 0, allowed, np.finfo(np.float64).tiny))
        rel = np.where(e != 0, error / np.abs(e), np.where(error == 0, 0.0, np.inf))
    failing = error > allowed
    worst = np.unravel_index(int(np.argmax(ratio)), shape) if shape else ()
    worst_index = tuple(int(i) for i in worst)
    return Comparison(
        array=array,
        passed=not bool(failing.any()),
        shape=shape,
        rtol=rtol,
        atol=atol,
        mismatched=int(failing.sum()),
        max_abs_error=float(error.max()),
        max_rel_error=float(rel.max()),
        worst_index=worst_index,
        actual=float(a[worst_index]),
        expected=float(e[worst_index]),
        ratio=float(ratio.max()),
        nan_count=int(np.sum(np.isnan(a) & ~np.isnan(e))),
        inf_count=int(np.sum(np.isinf(a) & (a != e))),
    )


@dataclass(frozen=True)
class RecommendedTolerances:
    """Tolerances for comparing an implementation against one case, with the reasons for each change."""

    tolerances: dict[str, dict[str, Tolerance]]
    """``{dtype: {direction: Tolerance}}``."""
    notes: tuple[str, ...] = ()
    widened: tuple[str, ...] = ()
    """``"float32.forward"`` etc.: where the measured float32 error forced a wider tolerance."""

    def get(self, dtype: Any, direction: str) -> Tolerance:
        return self.tolerances[dtype_name(dtype)][direction]

    def as_json(self) -> dict[str, dict[str, dict[str, float]]]:
        return {d: {k: t._asdict() for k, t in by_dir.items()} for d, by_dir in self.tolerances.items()}


def _worst(float32: Mapping[str, np.ndarray], float64: Mapping[str, np.ndarray], tolerance: Tolerance) -> tuple[float, str]:
    """The largest error ratio over ``float32``'s floating arrays against ``float64``, and where."""
    worst, where = 0.0, ""
    for key, reference in float64.items():
        if not np.issubdtype(reference.dtype, np.floating):
            continue
        result = compare(float32[key], reference, rtol=tolerance.rtol, atol=tolerance.atol, array=key)
        if result.ratio > worst:
            worst, where = result.ratio, key
    return worst, where


def _round_up(value: float) -> float:
    """``value`` rounded up to one significant digit (37 -> 40, 440 -> 500, 1.2 -> 2)."""
    exponent = math.floor(math.log10(value))
    return math.ceil(value / 10**exponent) * 10**exponent


def recommended_tolerances(case: Case, reference: Any = None) -> RecommendedTolerances:
    """The tolerances to compare an implementation against ``case``, by dtype and direction.

    ``reference`` is the case's float64 :class:`~refnorm.oracle.evaluation.Evaluation` if already at hand.
    float64: the defaults. float32: the defaults, widened where refnorm's own float32 evaluation
    needs it (module docstring). Then the case's explicit ``tolerances`` overrides.
    """
    from .evaluation import Evaluation, evaluate, evaluate_case

    if not isinstance(case, Case):
        raise TypeError(f"case must be a catalog Case (refnorm.oracle.catalog.cases()), got {describe(case)}")
    if reference is not None and not isinstance(reference, Evaluation):
        raise TypeError(f"reference must be None or the case's float64 Evaluation (evaluate_case(case)), got {describe(reference)}")
    tolerances = {dtype: dict(by_direction) for dtype, by_direction in DEFAULT_TOLERANCES.items()}
    notes: list[str] = []
    widened: list[str] = []
    if case.kind != "error":
        reference = reference if reference is not None else evaluate_case(case)
        try:
            tangents = reference.tangents or None  # a version-1 golden set's stored evaluation has none: drawn
            single = evaluate(
                case.op, case.params, reference.inputs, upstream=reference.upstream, tangents=tangents, seed=case.seed, dtype=np.float32
            )
        except Exception as error:  # noqa: BLE001 - report it; the float64 tolerances still stand
            notes.append(f"float32: refnorm's own float32 evaluation failed ({type(error).__name__}: {error}); defaults kept")
        else:
            measured = {
                "forward": (single.forward_arrays(), reference.forward_arrays()),
                "backward": (single.backward_arrays(), reference.backward_arrays()),
                "jvp": (single.jvp_arrays(), reference.jvp_arrays()),
                "hvp": (single.hvp_arrays(), reference.hvp_arrays()),
            }
            for direction, (float32, float64) in measured.items():
                default = tolerances["float32"][direction]
                ratio, where = _worst(float32, float64, default)
                if ratio * SAFETY > 1.0:
                    factor = _round_up(ratio * SAFETY)
                    tolerances["float32"][direction] = default.scaled(factor)
                    widened.append(f"float32.{direction}")
                    notes.append(
                        f"float32 {direction}: default tolerance x{factor:g}: refnorm's own float32 evaluation of this case "
                        f"(on the float32-rounded inputs) reaches {ratio:.3g} times the default (worst: {where}); "
                        f"x{SAFETY:g} for other summation orders" + (f". Why: {case.conditioning}" if case.conditioning else "")
                    )
    for dtype, by_direction in case.tolerances.items():
        for direction, (rtol, atol) in by_direction.items():
            tolerances[dtype_name(dtype)][direction] = Tolerance(float(rtol), float(atol))
            notes.append(f"{dtype} {direction}: set to rtol {rtol:g}, atol {atol:g} by the case: {case.tolerance_reason}")
    return RecommendedTolerances(tolerances, tuple(notes), tuple(widened))
