"""The conformance kit: check another implementation against refnorm from its own test suite.

An implementation is wrapped in an :class:`Adapter` (a forward callable, optionally a backward
callable, a JVP callable and a second-order callable, a converter to NumPy and the dtype it
computes in); one entry point,
:func:`parametrize_conformance`, turns the case catalog into pytest parameters, in the pattern of
scikit-learn's ``parametrize_with_checks``::

    import refnorm.testing

    ADAPTER = refnorm.testing.Adapter(forward=my_forward, backward=my_backward, dtype="float32")

    @refnorm.testing.parametrize_conformance(
        ADAPTER, op="switch_norm",
        select=["switch_norm/official-*"],
        expected_failures={"switch_norm/*-gn*": "GN is not implemented yet"},
    )
    def test_switch_norm_matches_refnorm(check):
        check()

Outside pytest (a notebook, a script, a CI job of a non-pytest project),
:func:`run_conformance` runs the same cases with the same rules and returns a
:class:`ConformanceRun`: a status per case (passed, failed, xfailed, xpassed, skipped, error),
the structured mismatches, a text summary and JSON / JUnit XML reports.

Each case runs :func:`check_conformance`: it gives the adapter the case's inputs (cast to the
adapter's dtype), compares every array the adapter returns with refnorm's value at the same
(rounded) inputs, in float64, and raises :class:`ConformanceError`, whose fields name the case,
the arrays that differ (worst index, both values, the errors, the tolerance), what is missing and
what is extra. ``select`` (case ids or ``fnmatch`` patterns) keeps only the matching cases;
``skip`` and ``expected_failures`` (id or pattern -> reason) skip cases or make them strict
expected failures: a case that starts to pass is reported, so the list cannot go stale silently.

The reference comes from refnorm itself (``source="live"``, the default) or from a golden set on
disk (``source="shipped"`` or a directory): then inputs, upstream gradients, values and
tolerances are read from the files, as a port in another language would.

Tolerances: :mod:`refnorm.oracle.tolerances` (per dtype and direction, widened per case only where
refnorm's own float32 evaluation shows the case is ill-conditioned).
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._xp import to_numpy
from ..ops._validation import check_bool, check_name, check_nonnegative_number, describe
from .catalog import KINDS, OPS, Case, cases
from .evaluation import BACKENDS, Evaluation, cast_floating, evaluate
from .golden import SHIPPED, GoldenCase, GoldenError, load_manifest, read_case, same_params
from .reports import CaseEntry, Report, write_json, write_junit_xml
from .tolerances import (
    DEFAULT_TOLERANCES,
    DIRECTIONS,
    Comparison,
    RecommendedTolerances,
    Tolerance,
    compare,
    default_tolerance,
    dtype_name,
    recommended_tolerances,
)

__all__ = [
    "DEFAULT_TOLERANCES",
    "Adapter",
    "CaseOutcome",
    "Comparison",
    "ConformanceCheck",
    "ConformanceError",
    "ConformanceReport",
    "ConformanceRun",
    "Tolerance",
    "assert_allclose_named",
    "check_conformance",
    "compare",
    "conformance_checks",
    "default_tolerance",
    "parametrize_conformance",
    "recommended_tolerances",
    "refnorm_adapter",
    "run_conformance",
]

Forward = Callable[[dict[str, np.ndarray], Mapping[str, Any]], Mapping[str, Any]]
Backward = Callable[[dict[str, np.ndarray], Mapping[str, Any], dict[str, np.ndarray]], Mapping[str, Any]]
Jvp = Callable[[dict[str, np.ndarray], Mapping[str, Any], dict[str, np.ndarray]], Mapping[str, Any]]
Hvp = Callable[[dict[str, np.ndarray], Mapping[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]], Mapping[str, Any]]

MAX_LISTED = 6
"""A failure message lists at most this many differing arrays (the error's fields hold them all)."""


class ConformanceError(AssertionError):
    """An implementation disagrees with refnorm (or failed to run).

    The message is short (the case, the arrays that differ with their worst element, what is
    missing or extra, the arrays that agree); the fields hold the same, structured:

    Attributes
    ----------
    case_id, adapter, dtype, source
        The case, the implementation's name and dtype, where refnorm's values came from.
    mismatches
        One :class:`~refnorm.oracle.tolerances.Comparison` per array that differs (its
        ``worst_index``, ``actual``, ``expected``, ``abs_error``, ``rel_error``, ``rtol``,
        ``atol``, ``nan_count``, ``inf_count``).
    missing
        Keys (``output.y``, ``grad.gamma``) refnorm has and the implementation did not return.
    extra
        Names the implementation returned that refnorm does not know (``forward: out``).
    problems
        Anything else: the implementation raised, returned no mapping, or (error cases) raised
        nothing or another exception type.
    agreeing
        The keys that were compared and agree.
    params
        The case's parameters.
    """

    def __init__(
        self,
        message: str,
        *,
        case_id: str = "",
        adapter: str = "",
        dtype: str = "",
        source: str = "",
        mismatches: Iterable[Comparison] = (),
        missing: Iterable[str] = (),
        extra: Iterable[str] = (),
        problems: Iterable[str] = (),
        agreeing: Iterable[str] = (),
        params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.case_id, self.adapter, self.dtype, self.source = case_id, adapter, dtype, source
        self.mismatches = tuple(mismatches)
        self.missing, self.extra, self.problems, self.agreeing = tuple(missing), tuple(extra), tuple(problems), tuple(agreeing)
        self.params = dict(params or {})

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def fields(self) -> dict[str, Any]:
        """The structured fields, as keyword arguments of the constructor."""
        return dict(
            case_id=self.case_id, adapter=self.adapter, dtype=self.dtype, source=self.source, mismatches=self.mismatches,
            missing=self.missing, extra=self.extra, problems=self.problems, agreeing=self.agreeing, params=self.params,
        )  # fmt: skip

    def __reduce__(self) -> tuple[Any, ...]:  # keep the fields through pickling (pytest-xdist, multiprocessing)
        return (_rebuild_error, (self.message, self.fields()))


def _rebuild_error(message: str, fields: dict[str, Any]) -> ConformanceError:
    return ConformanceError(message, **fields)


def _check_op(op: Any) -> str:
    """``TypeError`` unless ``op`` is a str, ``ValueError`` unless it is an op of the catalog."""
    if not isinstance(op, str):
        raise TypeError(f"op must be the name of an op, one of {tuple(OPS)}; got {describe(op)}")
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {tuple(OPS)}")
    return op


def _check_source(source: Any) -> None:
    """``TypeError`` unless ``source`` is ``"live"``, ``"shipped"`` or a path (a str or ``os.PathLike``)."""
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"source must be 'live', 'shipped' or the path of a golden set, got {describe(source)}")


@dataclass(frozen=True)
class Adapter:
    """How the conformance kit calls an implementation of one op.

    Attributes
    ----------
    forward
        ``forward(inputs, params) -> {name: array}``. ``inputs`` are NumPy arrays named as the op's
        inputs (``x``, ``gamma``, ``beta``, ``mean_logits``, ``var_logits``, and ``running_mean``,
        ``running_var`` in every evaluation case and in training cases with running statistics,
        for SN; ``docs/conformance.md`` lists every op's), already cast to :attr:`dtype`;
        ``params`` the case's parameters (``docs/conformance.md`` lists them with their defaults
        per op). Return at least every output (``y``), and the intermediates you have under
        refnorm's names (``xhat``, ``mean_ln``, ``var_bn``, ``mean_ratios``,
        ``new_running_mean``, ...): each one is compared, so a disagreement is located at its
        stage.
    backward
        ``backward(inputs, params, upstream) -> {argument: gradient}``, ``upstream`` the cotangent
        per output name; return one gradient per differentiable argument, named after the argument
        (``x``, ``gamma``, ...). ``None``: forward only.
    jvp
        ``jvp(inputs, params, tangents) -> {output: tangent}``, ``tangents`` one tangent per
        differentiable argument, named after it; return the tangent of every output, named after
        the output (``y``): forward mode, e.g. ``jax.jvp`` or ``torch.func.jvp`` of your forward.
        ``None``: not checked.
    hvp
        ``hvp(inputs, params, upstream, tangents) -> {argument: array}``: the derivative of your
        backward's gradients along ``tangents``, ``upstream`` held fixed (the Hessian of
        ``<upstream, y>`` times the tangents), one array per differentiable argument, named after
        it; e.g. a double backward (``torch.autograd.grad`` of the gradients with
        ``create_graph=True``) or ``jax.jvp`` of ``jax.vjp``. Only for ops with a second order in
        refnorm (SN, SSN, the plain normalizers, sparsemax, SparsestMax). ``None``: not checked.
    to_numpy
        Converts one of your arrays to NumPy (default: refnorm's, which knows NumPy, CuPy,
        PyTorch and DLPack arrays).
    dtype
        ``"float32"`` or ``"float64"``: inputs are cast to it, and the tolerances are its.
    name
        Shown in failure messages.
    """

    forward: Forward
    backward: Backward | None = None
    to_numpy: Callable[[Any], np.ndarray] = to_numpy
    dtype: str = "float64"
    name: str = "implementation"
    jvp: Jvp | None = None
    hvp: Hvp | None = None

    def __post_init__(self) -> None:
        if not callable(self.forward):
            raise TypeError(f"Adapter.forward must be callable, got {type(self.forward).__name__}")
        for field in ("backward", "jvp", "hvp"):
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise TypeError(f"Adapter.{field} must be callable or None, got {type(value).__name__}")
        if not callable(self.to_numpy):
            raise TypeError(f"Adapter.to_numpy must be callable, got {type(self.to_numpy).__name__}")
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Adapter.name must be a non-empty string, got {self.name!r}")
        dtype_name(self.dtype)


def refnorm_adapter(op: str, *, dtype: str = "float64", backend: str = "numpy") -> Adapter:
    """refnorm itself as an :class:`Adapter` (self-consistency checks, and a template for yours):
    forward, backward, JVP and, for ops with a second order, the hvp.

    ``op`` one of the catalog's ops, ``dtype`` ``"float32"`` or ``"float64"``, ``backend`` one of
    :data:`refnorm.oracle.evaluation.BACKENDS`.
    """
    _check_op(op)
    dtype_name(dtype)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {', '.join(map(repr, BACKENDS))}; got {describe(backend)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(map(repr, BACKENDS))}")

    def forward(inputs: dict[str, np.ndarray], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        evaluation = evaluate(op, params, inputs, backend=backend)
        return {**evaluation.outputs, **evaluation.intermediates}

    def backward(inputs: dict[str, np.ndarray], params: Mapping[str, Any], upstream: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return evaluate(op, params, inputs, upstream=upstream, backend=backend).gradients

    def jvp(inputs: dict[str, np.ndarray], params: Mapping[str, Any], tangents: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return evaluate(op, params, inputs, tangents=tangents, backend=backend).jvp

    def hvp(inputs: dict[str, np.ndarray], params: Mapping[str, Any], upstream: dict[str, np.ndarray], tangents: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return evaluate(op, params, inputs, upstream=upstream, tangents=tangents, backend=backend).hvp

    return Adapter(forward, backward, dtype=dtype, name=f"refnorm[{backend}]", jvp=jvp, hvp=hvp if OPS[op].hvp else None)


# --------------------------------------------------------------------------------------------
# Comparison helpers
# --------------------------------------------------------------------------------------------


def assert_allclose_named(
    actual: Any,
    expected: Any,
    *,
    case: Case | str,
    array: str,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: Any = None,
    direction: str = "forward",
) -> Comparison:
    """Assert ``actual`` matches refnorm's ``expected``; :class:`ConformanceError` names the case,
    the array, the worst index, both values and the error.

    Tolerances default to :func:`refnorm.oracle.tolerances.default_tolerance` of ``dtype`` (default:
    ``actual``'s dtype) and ``direction`` (``"forward"`` or ``"backward"``).
    """
    __tracebackhide__ = True
    if not isinstance(case, Case):
        check_name(case, "case")
    check_name(array, "array")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None:
            check_nonnegative_number(value, name)
    if dtype is not None:
        dtype_name(dtype)
    # actual is what the implementation returned: anything that is not a real array fails the comparison
    actual = np.asarray(to_numpy(actual)) if hasattr(actual, "__dlpack__") or isinstance(actual, np.generic) else np.asarray(actual, dtype=object)
    if dtype is None and actual.dtype.kind != "f":
        dtype = np.float64  # the tolerances of the reference's precision; compare() fails a non-numeric actual
    default = default_tolerance(dtype if dtype is not None else actual.dtype, direction)
    result = compare(actual, expected, rtol=default.rtol if rtol is None else rtol, atol=default.atol if atol is None else atol, array=array)
    if not result.passed:
        name = case.id if isinstance(case, Case) else case
        raise ConformanceError(f"{name}: {result.describe()}", case_id=name, dtype=dtype_name(actual.dtype) if actual.dtype.kind == "f" else "",
                               mismatches=(result,))  # fmt: skip
    return result


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConformanceReport:
    """What :func:`check_conformance` compared for one case (all passed, or it would have raised)."""

    case: Case
    adapter: str
    dtype: str
    source: str
    comparisons: tuple[Comparison, ...] = ()
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        lines = [f"{self.case.id}: {self.adapter} ({self.dtype}) against refnorm ({self.source})"]
        lines += [f"  {c.describe()}" for c in self.comparisons]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Reference:
    """Inputs to give the adapter, refnorm's values and the tolerances, for one case and dtype."""

    inputs: dict[str, np.ndarray]
    upstream: dict[str, np.ndarray]
    forward: dict[str, np.ndarray]
    backward: dict[str, np.ndarray]
    tolerances: dict[str, Tolerance]
    notes: tuple[str, ...]
    source: str
    tangents: dict[str, np.ndarray]
    jvp: dict[str, np.ndarray]
    """``jvp.<output>``; empty where the source holds none (a version-1 golden set)."""
    hvp: dict[str, np.ndarray]
    """``hvp.<argument>``; empty for an op without a second order, and in a version-1 golden set."""
    missing_derivatives: str = ""
    """Why the source holds no ``jvp``/``hvp`` values where the op has them (a version-1 golden set)."""


_TOLERANCE_CACHE: dict[str, RecommendedTolerances] = {}


def _live_reference(case: Case, dtype: str) -> _Reference:
    """refnorm in float64 at the adapter's rounded inputs, so input rounding is not counted as error."""
    drawn = evaluate(case.op, case.params, case.inputs(), seed=case.seed)
    inputs = cast_floating(drawn.inputs, dtype)
    upstream = cast_floating(drawn.upstream, dtype)
    tangents = cast_floating(drawn.tangents, dtype)
    reference: Evaluation = drawn
    if dtype != "float64":
        reference = evaluate(
            case.op, case.params, cast_floating(inputs, np.float64),
            upstream=cast_floating(upstream, np.float64), tangents=cast_floating(tangents, np.float64),
        )  # fmt: skip
    if case.id not in _TOLERANCE_CACHE:
        _TOLERANCE_CACHE[case.id] = recommended_tolerances(case, reference=drawn)
    recommended = _TOLERANCE_CACHE[case.id]
    tolerances = {direction: recommended.get(dtype, direction) for direction in DIRECTIONS}
    return _Reference(
        inputs, upstream, reference.forward_arrays(), reference.backward_arrays(), tolerances, recommended.notes, "live float64",
        tangents, reference.jvp_arrays(), reference.hvp_arrays(),
    )  # fmt: skip


_MANIFEST_CACHE: dict[Path, dict[str, Any]] = {}


def _manifest(directory: Path) -> dict[str, Any]:
    if directory not in _MANIFEST_CACHE:
        try:
            _MANIFEST_CACHE[directory] = load_manifest(directory)
        except GoldenError as error:
            raise GoldenError(f"source {str(directory)!r} is not a golden set refnorm can read: {error}") from None
    return _MANIFEST_CACHE[directory]


def _golden_reference(case: Case, dtype: str, directory: Path) -> _Reference:
    """Everything from a golden set: inputs, upstream, values, the manifest's tolerances."""
    golden: GoldenCase = read_case(directory, case.id, _manifest(directory))
    if not same_params(golden.params, case.params):
        raise GoldenError(f"{case.id}: the golden set {directory} holds other params than this refnorm's catalog; regenerate it")
    arrays = golden.arrays
    tolerances = {d: Tolerance(**t) for d, t in golden.entry["tolerances"][dtype].items()}
    forward = {**{f"output.{k}": v for k, v in arrays["output"].items()}, **{f"intermediate.{k}": v for k, v in arrays["intermediate"].items()}}
    version = _manifest(directory)["schema_version"]
    return _Reference(
        cast_floating(arrays["input"], dtype),
        cast_floating(arrays["upstream"], dtype),
        forward,
        {f"grad.{k}": v for k, v in arrays["grad"].items()},
        tolerances,
        tuple(golden.entry["tolerance_notes"]),
        f"golden set {directory}",
        cast_floating(arrays["tangent"], dtype),
        {f"jvp.{k}": v for k, v in arrays["jvp"].items()},
        {f"hvp.{k}": v for k, v in arrays["hvp"].items()},
        f"the golden set has schema version {version}, which holds no tangents, JVP or second-order values; regenerate it"
        if version < 2 else "",
    )


def _source_directory(source: str | os.PathLike[str]) -> Path | None:
    """``None`` for the live source, else the golden set's directory."""
    if str(source) == "live":
        return None
    return SHIPPED if str(source) == "shipped" else Path(source).resolve()


@dataclass(frozen=True)
class _Failure:
    """Everything a :class:`ConformanceError` is built from, gathered while checking one case."""

    case: Case
    adapter: Adapter
    dtype: str
    source: str
    comparisons: tuple[Comparison, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def error(self) -> ConformanceError:
        mismatches = tuple(c for c in self.comparisons if not c.passed)
        agreeing = tuple(c.array for c in self.comparisons if c.passed)
        differing = len(mismatches) + len(self.missing)
        checked = len(self.comparisons) + len(self.missing)
        head = f"{self.case.id}: {self.adapter.name} ({self.dtype}) "
        if self.problems and not differing:
            lines = [head + "failed against refnorm (" + self.source + ")"]
        else:
            lines = [head + f"differs from refnorm ({self.source}) in {differing} of {checked} arrays"]
        lines += [f"  {p}" for p in self.problems]
        lines += [f"  {c.brief()}" for c in mismatches[:MAX_LISTED]]
        if len(mismatches) > MAX_LISTED:
            rest = ", ".join(c.array for c in mismatches[MAX_LISTED:])
            lines.append(f"  ... {len(mismatches) - MAX_LISTED} more differ: {rest} (ConformanceError.mismatches has them all)")
        lines += [f"  missing: {m}" for m in self.missing]
        lines += [f"  extra: {e}" for e in self.extra]
        if agreeing:
            lines.append(f"  agree: {', '.join(agreeing)}")
        lines.append(f"  params: {dict(self.case.params)}" + (f"; note: {self.case.note}" if self.case.note else ""))
        if self.case.kink:
            lines.append(f"  on a kink of the op, where derivatives are one-sided: {self.case.kink}")
        lines += [f"  tolerance note: {n}" for n in self.notes]
        return ConformanceError(
            "\n".join(lines), case_id=self.case.id, adapter=self.adapter.name, dtype=self.dtype, source=self.source,
            mismatches=mismatches, missing=self.missing, extra=self.extra, problems=self.problems, agreeing=agreeing,
            params=self.case.params,
        )  # fmt: skip


def _call(failure: _Failure, what: str, function: Callable[..., Any], *args: Any) -> Any:
    __tracebackhide__ = True
    try:
        return function(*args)
    except Exception as error:
        problem = f"{failure.adapter.name}.{what} raised {type(error).__name__}: {error}"
        raise replace(failure, problems=failure.problems + (problem,)).error() from error


def _copies(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.array(a, copy=True) for name, a in arrays.items()}


def error_case_inputs(case: Case, dtype: str) -> tuple[dict[str, np.ndarray], bool]:
    """An error case's inputs for an implementation in ``dtype``, and whether dtypes were swapped.

    The catalog draws inputs in float64; they are cast to ``dtype`` like any case's. An error case
    whose floating inputs have two dtypes (``gamma`` float32 next to a float64 ``x``: a dtype
    mismatch) keeps its mismatch: for a float32 implementation float64 becomes float32 and float32
    becomes float64.
    """
    inputs = case.inputs()
    floating = {a.dtype for a in inputs.values() if np.issubdtype(a.dtype, np.floating)}
    target, main = np.dtype(dtype), np.dtype(np.float64)
    if target == main or not floating:
        return inputs, False
    swap = {main: target, target: main} if len(floating) > 1 else {main: target}
    with np.errstate(over="ignore"):  # a float64 value beyond float32's range becomes inf: still bad input
        cast = {name: a.astype(swap[a.dtype]) if a.dtype in swap else a for name, a in inputs.items()}
    return cast, len(floating) > 1


def _check_error_case(adapter: Adapter, case: Case, check_error_messages: bool) -> ConformanceReport:
    __tracebackhide__ = True
    expected = case.raises
    assert expected is not None and case.match is not None
    dtype = dtype_name(adapter.dtype)
    inputs, swapped = error_case_inputs(case, dtype)
    failure = _Failure(case, adapter, dtype, "error case")
    try:
        adapter.forward(_copies(inputs), dict(case.params))
    except Exception as error:
        if not isinstance(error, expected):
            problem = f"{adapter.name}.forward raised {type(error).__name__}({error}), expected {expected.__name__}"
            raise replace(failure, problems=(problem,)).error() from error
        notes = [f"raised {type(error).__name__}: {error}"]
        if check_error_messages and swapped:
            notes.append(f"message not checked: the case's float32/float64 inputs were swapped for a {dtype} implementation")
        elif check_error_messages and not re.search(case.match, str(error)):
            problem = f"{adapter.name} raised {expected.__name__}({error}), whose message does not match {case.match!r}"
            raise replace(failure, problems=(problem,)).error() from error
        return ConformanceReport(case, adapter.name, dtype, "error case", notes=tuple(notes))
    problem = f"{adapter.name}.forward raised nothing, expected {expected.__name__} matching {case.match!r}" + (f" ({case.note})" if case.note else "")
    raise replace(failure, problems=(problem,)).error()


def _group_of(name: str, forward: Mapping[str, np.ndarray]) -> str | None:
    for group in ("output", "intermediate"):
        if f"{group}.{name}" in forward:
            return f"{group}.{name}"
    return None


def check_conformance(
    adapter: Adapter,
    case: Case,
    *,
    source: str | os.PathLike[str] = "live",
    check_error_messages: bool = False,
) -> ConformanceReport:
    """Compare ``adapter`` with refnorm on one catalog ``case``.

    Parameters
    ----------
    adapter
        The implementation (:class:`Adapter`).
    case
        A case of :func:`refnorm.oracle.catalog.cases` for the adapter's op.
    source
        ``"live"`` (refnorm computes the reference), ``"shipped"`` (the golden set inside the
        package) or a golden-set directory.
    check_error_messages
        For ``"error"`` cases: also require the message to match refnorm's pattern (off by
        default: the exception type is the contract, the wording is refnorm's).

    Returns the :class:`ConformanceReport`; raises :class:`ConformanceError` (with structured
    fields) when any array differs, an output, gradient, tangent or second-order array is missing, a
    returned name is unknown, the adapter raises, or it has a ``jvp``/``hvp`` that the source has
    no values for (an op without a second order, a version-1 golden set).

    The adapter's ``jvp`` gets the case's tangents (``tangent.*``, one per differentiable argument)
    and is compared with ``jvp.*``; its ``hvp`` gets the upstream gradient and the tangents and is
    compared with ``hvp.*``, each with the case's tolerance for its direction.
    """
    __tracebackhide__ = True
    if not isinstance(adapter, Adapter):
        raise TypeError(f"adapter must be a refnorm.testing.Adapter, got {type(adapter).__name__}")
    if not isinstance(case, Case):
        raise TypeError(f"case must be a catalog Case (refnorm.oracle.catalog.cases()), got {type(case).__name__}")
    _check_source(source)
    check_bool(check_error_messages, "check_error_messages")
    if case.kind == "error":
        return _check_error_case(adapter, case, check_error_messages)
    dtype = dtype_name(adapter.dtype)
    directory = _source_directory(source)
    reference = _live_reference(case, dtype) if directory is None else _golden_reference(case, dtype, directory)
    params = dict(case.params)
    failure = _Failure(case, adapter, dtype, reference.source, notes=reference.notes)
    comparisons: list[Comparison] = []
    missing: list[str] = []
    extra: list[str] = []

    def results_of(what: str, returned: Any) -> Mapping[str, Any]:
        __tracebackhide__ = True
        if not isinstance(returned, Mapping):
            problem = f"{adapter.name}.{what} returned {type(returned).__name__}, expected a mapping name -> array"
            raise replace(failure, comparisons=tuple(comparisons), problems=(problem,)).error()
        return returned

    def compare_all(what: str, results: Mapping[str, Any], expected: Mapping[str, np.ndarray], direction: str,
                    key_of: Callable[[str], str | None]) -> None:  # fmt: skip
        __tracebackhide__ = True
        tolerance = reference.tolerances[direction]
        for name, value in results.items():
            key = key_of(str(name))
            if key is None:
                extra.append(f"{what}: {name} (refnorm's {direction} names for this case: {', '.join(k.split('.', 1)[1] for k in expected)})")
                continue
            actual = np.asarray(_call(failure, "to_numpy", adapter.to_numpy, value))
            comparisons.append(compare(actual, expected[key], rtol=tolerance.rtol, atol=tolerance.atol, array=key))

    outputs = results_of("forward", _call(failure, "forward", adapter.forward, _copies(reference.inputs), params))
    missing += [f"{key} (forward returned {sorted(map(str, outputs))})" for key in reference.forward
                if key.startswith("output.") and key.split(".", 1)[1] not in outputs]  # fmt: skip
    compare_all("forward", outputs, reference.forward, "forward", lambda name: _group_of(name, reference.forward))
    if adapter.backward is not None:
        upstream = _copies(reference.upstream)
        gradients = results_of("backward", _call(failure, "backward", adapter.backward, _copies(reference.inputs), params, upstream))
        missing += [f"{key} (backward returned {sorted(map(str, gradients))})" for key in reference.backward
                    if key.split(".", 1)[1] not in gradients]  # fmt: skip
        compare_all("backward", gradients, reference.backward, "backward",
                    lambda name: f"grad.{name}" if f"grad.{name}" in reference.backward else None)  # fmt: skip
    problems: list[str] = []
    for what, derivative in (("jvp", adapter.jvp), ("hvp", adapter.hvp)):
        if derivative is None:
            continue
        expected = reference.jvp if what == "jvp" else reference.hvp
        if not expected:  # nothing to compare against is a failure, never a pass
            why = reference.missing_derivatives or f"refnorm defines no second order for {case.op} (docs/sn-jvp-hvp.md)"
            problems.append(f"{adapter.name}.{what} was given, but refnorm has no {what} values for this case: {why}")
            continue
        arguments = (_copies(reference.inputs), params) + ((_copies(reference.upstream),) if what == "hvp" else ()) + (_copies(reference.tangents),)
        results = results_of(what, _call(failure, what, derivative, *arguments))
        missing += [f"{key} ({what} returned {sorted(map(str, results))})" for key in expected if key.split(".", 1)[1] not in results]
        compare_all(what, results, expected, what, lambda name, what=what, expected=expected: f"{what}.{name}" if f"{what}.{name}" in expected else None)

    if missing or extra or problems or any(not c.passed for c in comparisons):
        raise replace(failure, comparisons=tuple(comparisons), missing=tuple(missing), extra=tuple(extra), problems=tuple(problems)).error()
    return ConformanceReport(case, adapter.name, dtype, reference.source, tuple(comparisons), reference.notes)


# --------------------------------------------------------------------------------------------
# Selecting cases: select, skip, expected failures
# --------------------------------------------------------------------------------------------


def _patterns(what: str, value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, str) and not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a case id or fnmatch pattern, or several; got {describe(value)}")
    patterns = (value,) if isinstance(value, str) else tuple(value)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"{what} holds {pattern!r}; expected case ids or fnmatch patterns (non-empty strings)")
    return patterns


def _resolve_patterns(what: str, mapping: Mapping[str, str] | None, ids: list[str]) -> dict[str, str]:
    """``{case id: reason}`` from ids or ``fnmatch`` patterns; every key must match a case, every reason be given."""
    if mapping is not None and not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a mapping {{case id or pattern: reason}}, got {type(mapping).__name__}")
    resolved: dict[str, str] = {}
    for pattern, reason in (mapping or {}).items():
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"{what}[{pattern!r}] needs a reason (a non-empty string), got {reason!r}")
        matched = [i for i in ids if fnmatch.fnmatchcase(i, pattern)]
        if not matched:
            raise ValueError(f"{what} names {pattern!r}, which matches no case of the op and kinds (see `refnorm golden list`)")
        for i in matched:
            resolved.setdefault(i, reason)
    return resolved


@dataclass(frozen=True)
class _Planned:
    """One selected case and what to do with it: ``"run"``, ``"skip"`` or ``"xfail"`` (with the reason)."""

    case: Case
    action: str
    reason: str = ""


def _plan(
    op: str,
    kinds: Iterable[str],
    select: str | Iterable[str] | None,
    skip: Mapping[str, str] | None,
    expected_failures: Mapping[str, str] | None,
    source: str | os.PathLike[str],
) -> list[_Planned]:
    """The cases of ``op`` and ``kinds`` that ``select`` keeps, each with its action.

    Every pattern of ``select``, ``skip`` and ``expected_failures`` must match at least one case of
    the op and kinds (so a typo is an error, not a silently empty list); ``skip`` and
    ``expected_failures`` then apply to the selected cases. A case both skipped and expected to
    fail is skipped (a case that cannot run cannot fail).
    """
    _check_op(op)
    _check_source(source)
    if not isinstance(kinds, str) and not isinstance(kinds, Iterable):
        raise TypeError(f"kinds must be a kind or several, a subset of {KINDS}; got {describe(kinds)}")
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    for kind in kinds:
        if not isinstance(kind, str):
            raise TypeError(f"kinds holds {describe(kind)}; expected a subset of {KINDS}")
        if kind not in KINDS:
            raise ValueError(f"kinds holds {kind!r}; expected a subset of {KINDS}")
    candidates = [c for kind in kinds for c in cases(kind=kind, op=op)]
    ids = [c.id for c in candidates]
    selected_patterns = _patterns("select", select)
    for pattern in selected_patterns:
        if not any(fnmatch.fnmatchcase(i, pattern) for i in ids):
            raise ValueError(f"select names {pattern!r}, which matches no case of {op} of kinds {kinds} (see `refnorm golden list --op {op}`)")
    failing = _resolve_patterns("expected_failures", expected_failures, ids)
    skipped = _resolve_patterns("skip", skip, ids)
    selected = [c for c in candidates if not selected_patterns or any(fnmatch.fnmatchcase(c.id, p) for p in selected_patterns)]
    absent = _absent_from_golden_set(source, selected)
    planned = []
    for case in selected:
        if case.id in skipped:
            planned.append(_Planned(case, "skip", skipped[case.id]))
        elif case.id in absent:
            planned.append(_Planned(case, "skip", absent[case.id]))
        elif case.id in failing:
            planned.append(_Planned(case, "xfail", failing[case.id]))
        else:
            planned.append(_Planned(case, "run"))
    return planned


def _absent_from_golden_set(source: str | os.PathLike[str], selected: list[Case]) -> dict[str, str]:
    """``{case id: reason}`` for the non-error cases a golden-set source does not hold (the shipped set
    holds a selection of the reference cases); nothing for the live source."""
    directory = _source_directory(source)
    if directory is None:
        return {}
    manifest = _manifest(directory)
    held = {entry["id"] for entry in manifest["cases"]}
    rule = manifest.get("selection_rule", "")
    reason = (
        f"not in the golden set {directory} ({rule}); source='live', or a full set from "
        "`refnorm golden generate --out DIR`, checks it"
    )
    return {c.id: reason for c in selected if c.kind != "error" and c.id not in held}


# --------------------------------------------------------------------------------------------
# The pytest entry point
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConformanceCheck:
    """One case against one adapter: call it to run :func:`check_conformance`."""

    adapter: Adapter
    case: Case
    source: str | os.PathLike[str] = "live"
    check_error_messages: bool = False

    def __call__(self) -> ConformanceReport:
        __tracebackhide__ = True  # a failure shows the test and the message, not the kit's source
        return check_conformance(self.adapter, self.case, source=self.source, check_error_messages=self.check_error_messages)

    def __repr__(self) -> str:
        return f"ConformanceCheck({self.case.id})"


def conformance_checks(
    adapter: Adapter,
    *,
    op: str,
    kinds: Iterable[str] = ("sample", "reference"),
    select: str | Iterable[str] | None = None,
    expected_failures: Mapping[str, str] | None = None,
    skip: Mapping[str, str] | None = None,
    source: str | os.PathLike[str] = "live",
    check_error_messages: bool = False,
) -> list[Any]:
    """The catalog's cases of ``op`` as ``pytest.param(ConformanceCheck, id=case id, marks=...)``.

    Parameters
    ----------
    kinds
        Which kinds of cases (``"error"`` cases check that the adapter raises the same exception type).
    select
        Case ids or ``fnmatch`` patterns (one string or several): only the matching cases become
        tests (default: every case of the op and kinds).
    expected_failures
        ``{case id or fnmatch pattern: reason}``: strict xfails (a case that passes fails the run,
        so the list is kept honest). Only a :class:`ConformanceError` counts as the expected
        failure; a crash of the kit itself does not.
    skip
        ``{case id or pattern: reason}``: cases the implementation cannot express at all (an
        unsupported normalizer); skipped with the reason. A case both skipped and expected to
        fail (through overlapping patterns) is skipped.

    Every pattern must match at least one case of the op and kinds (``ValueError`` otherwise).
    """
    import pytest

    if not isinstance(adapter, Adapter):
        raise TypeError(f"adapter must be a refnorm.testing.Adapter, got {type(adapter).__name__}")
    check_bool(check_error_messages, "check_error_messages")
    params = []
    for planned in _plan(op, kinds, select, skip, expected_failures, source):
        marks = []
        if planned.action == "skip":
            marks.append(pytest.mark.skip(reason=planned.reason))
        elif planned.action == "xfail":
            marks.append(pytest.mark.xfail(reason=planned.reason, strict=True, raises=ConformanceError))
        check = ConformanceCheck(adapter, planned.case, source, check_error_messages)
        params.append(pytest.param(check, id=planned.case.id, marks=marks))
    return params


def parametrize_conformance(adapter: Adapter, *, op: str, argname: str = "check", **options: Any) -> Callable[[Any], Any]:
    """Decorator: parametrize a test over :func:`conformance_checks` (same options).

    The test receives one :class:`ConformanceCheck` per case as ``check``; calling it runs the
    comparison::

        @parametrize_conformance(adapter, op="switch_norm", expected_failures={...})
        def test_conformance(check):
            check()
    """
    import pytest

    check_name(argname, "argname")
    return pytest.mark.parametrize(argname, conformance_checks(adapter, op=op, **options))


# --------------------------------------------------------------------------------------------
# Outside pytest
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseOutcome:
    """One case of a :class:`ConformanceRun`.

    ``status``: ``"passed"``, ``"failed"`` (a :class:`ConformanceError`), ``"xfailed"`` (expected
    to fail, and it did), ``"xpassed"`` (expected to fail, and it passed: counts as a failure),
    ``"skipped"`` or ``"error"`` (the kit itself could not run the case, e.g. an unreadable golden
    file). ``reason``: why skipped or expected to fail. ``error``: the :class:`ConformanceError`
    (failed, xfailed) or the exception (error). ``report``: the :class:`ConformanceReport` of a
    case that ran and passed.
    """

    case: Case
    status: str
    reason: str = ""
    report: ConformanceReport | None = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def mismatches(self) -> tuple[Comparison, ...]:
        return self.error.mismatches if isinstance(self.error, ConformanceError) else ()

    def entry(self) -> CaseEntry:
        """This outcome as a :class:`~refnorm.oracle.reports.CaseEntry` (JSON and JUnit reports)."""
        comparisons: tuple[Comparison, ...] = ()
        missing: tuple[str, ...] = ()
        extra: tuple[str, ...] = ()
        problems: tuple[str, ...] = ()
        message = self.reason
        if isinstance(self.error, ConformanceError):
            comparisons, missing, extra, problems = self.error.mismatches, self.error.missing, self.error.extra, self.error.problems
            message = (f"expected to fail: {self.reason}\n" if self.reason else "") + self.error.message
        elif self.error is not None:
            problems = (f"{type(self.error).__name__}: {self.error}",)
            message = message or problems[0]
        elif self.report is not None:
            comparisons = self.report.comparisons
        if self.status == "xpassed":
            message = f"expected to fail ({self.reason}) but passed: the expectation is stale"
        return CaseEntry(self.id, self.status, message, comparisons, missing, extra, problems,
                         details={"kind": self.case.kind, "params": dict(self.case.params)}, seconds=self.seconds)  # fmt: skip


@dataclass(frozen=True)
class ConformanceRun:
    """What :func:`run_conformance` found: one :class:`CaseOutcome` per selected case."""

    adapter: str
    dtype: str
    op: str
    source: str
    outcomes: tuple[CaseOutcome, ...]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """No case failed, errored or passed against its expected failure."""
        return not any(o.status in ("failed", "xpassed", "error") for o in self.outcomes)

    def __getitem__(self, case_id: str) -> CaseOutcome:
        for outcome in self.outcomes:
            if outcome.id == case_id:
                return outcome
        raise KeyError(f"{case_id!r} is not a case of this run")

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    def statuses(self) -> dict[str, str]:
        """``{case id: status}``."""
        return {o.id: o.status for o in self.outcomes}

    def ids(self, status: str) -> list[str]:
        """The ids of the cases with ``status``, in catalog order."""
        return [o.id for o in self.outcomes if o.status == status]

    @property
    def counts(self) -> dict[str, int]:
        return self.to_report().counts

    def to_report(self) -> Report:
        """The run as a :class:`~refnorm.oracle.reports.Report` (what the JSON and JUnit writers take)."""
        context = {"adapter": self.adapter, "dtype": self.dtype, "op": self.op, "source": self.source}
        return Report("refnorm.testing.run_conformance", tuple(o.entry() for o in self.outcomes), context=context, subject="conformance run",
                      seconds=self.seconds)  # fmt: skip

    def summary(self) -> str:
        """A few lines: the counts, then one line per case that failed, errored or passed unexpectedly."""
        report = self.to_report()
        lines = [f"{self.adapter} ({self.dtype}) against refnorm ({self.source}), {self.op}: {report.summary()}"]
        for outcome in self.outcomes:
            if outcome.status == "failed" and isinstance(outcome.error, ConformanceError):
                first = outcome.error.mismatches[0].brief() if outcome.error.mismatches else next(
                    iter(outcome.error.problems + outcome.error.missing + outcome.error.extra), "")
                lines.append(f"  FAILED {outcome.id}: {first}")
            elif outcome.status == "xpassed":
                lines.append(f"  XPASS  {outcome.id}: expected to fail ({outcome.reason}) but passed")
            elif outcome.status == "error":
                lines.append(f"  ERROR  {outcome.id}: {type(outcome.error).__name__}: {outcome.error}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def write_json(self, destination: str | os.PathLike[str]) -> None:
        """The JSON report (``docs/conformance.md``) to a file, or standard output for ``"-"``."""
        write_json(self.to_report(), destination)

    def write_junit_xml(self, destination: str | os.PathLike[str]) -> None:
        """The JUnit XML report to a file, or standard output for ``"-"``."""
        write_junit_xml(self.to_report(), destination)


def run_conformance(
    adapter: Adapter,
    *,
    op: str,
    select: str | Iterable[str] | None = None,
    skip: Mapping[str, str] | None = None,
    expected_failures: Mapping[str, str] | None = None,
    kinds: Iterable[str] = ("sample", "reference"),
    source: str | os.PathLike[str] = "live",
    check_error_messages: bool = False,
) -> ConformanceRun:
    """Run the conformance kit outside pytest: every selected case of ``op``, with pytest's rules.

    The options are those of :func:`conformance_checks`. A skipped case is not run; an expected
    failure counts as ``"xfailed"`` only when :func:`check_conformance` raised
    :class:`ConformanceError`, and as ``"xpassed"`` (a failure) when it passed; any other exception
    is an ``"error"`` of that case. Nothing is raised for a failing case: inspect the returned
    :class:`ConformanceRun` (``.passed``, ``.summary()``, ``run[case_id].error.mismatches``,
    ``.write_json(path)``, ``.write_junit_xml(path)``).
    """
    if not isinstance(adapter, Adapter):
        raise TypeError(f"adapter must be a refnorm.testing.Adapter, got {type(adapter).__name__}")
    dtype = dtype_name(adapter.dtype)
    check_bool(check_error_messages, "check_error_messages")
    plan = _plan(op, kinds, select, skip, expected_failures, source)
    started = time.perf_counter()
    outcomes = []
    for planned in plan:
        if planned.action == "skip":
            outcomes.append(CaseOutcome(planned.case, "skipped", planned.reason))
            continue
        began = time.perf_counter()
        expected = planned.action == "xfail"
        try:
            report = check_conformance(adapter, planned.case, source=source, check_error_messages=check_error_messages)
        except ConformanceError as error:
            status = "xfailed" if expected else "failed"
            outcomes.append(CaseOutcome(planned.case, status, planned.reason, error=error, seconds=time.perf_counter() - began))
        except Exception as error:  # noqa: BLE001 - the kit could not judge this case: an error, reported
            outcomes.append(CaseOutcome(planned.case, "error", planned.reason, error=error, seconds=time.perf_counter() - began))
        else:
            status = "xpassed" if expected else "passed"
            outcomes.append(CaseOutcome(planned.case, status, planned.reason, report=report, seconds=time.perf_counter() - began))
    directory = _source_directory(source)
    source_name = "live float64" if directory is None else f"golden set {directory}"
    return ConformanceRun(adapter.name, dtype, op, source_name, tuple(outcomes), time.perf_counter() - started)
