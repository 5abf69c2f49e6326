"""The conformance kit: check another implementation against refnorm from its own test suite.

An implementation is wrapped in an :class:`Adapter` (a forward callable, optionally a backward
callable, a converter to NumPy and the dtype it computes in); one entry point,
:func:`parametrize_conformance`, turns the case catalog into pytest parameters, in the pattern of
scikit-learn's ``parametrize_with_checks``::

    import refnorm.testing

    ADAPTER = refnorm.testing.Adapter(forward=my_forward, backward=my_backward, dtype="float32")

    @refnorm.testing.parametrize_conformance(
        ADAPTER, op="switch_norm",
        expected_failures={"switch_norm/*-gn*": "GN is not implemented yet"},
    )
    def test_switch_norm_matches_refnorm(check):
        check()

Each ``check`` runs :func:`check_conformance` on one case: it gives the adapter the case's inputs
(cast to the adapter's dtype), compares every array the adapter returns with refnorm's value at
the same (rounded) inputs, in float64, and raises :class:`ConformanceError` naming the case, the
array, the worst index, both values and the error. ``expected_failures`` (case id or
``fnmatch`` pattern -> reason) become strict xfails: a case that starts to pass is reported, so the
list cannot go stale silently.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._xp import to_numpy
from .catalog import OPS, Case, cases
from .evaluation import Evaluation, cast_floating, evaluate
from .golden import SHIPPED, GoldenCase, load_manifest, read_case, same_params
from .tolerances import (
    DEFAULT_TOLERANCES,
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
    "Comparison",
    "ConformanceCheck",
    "ConformanceError",
    "ConformanceReport",
    "Tolerance",
    "assert_allclose_named",
    "check_conformance",
    "compare",
    "conformance_checks",
    "default_tolerance",
    "parametrize_conformance",
    "recommended_tolerances",
    "refnorm_adapter",
]

Forward = Callable[[dict[str, np.ndarray], Mapping[str, Any]], Mapping[str, Any]]
Backward = Callable[[dict[str, np.ndarray], Mapping[str, Any], dict[str, np.ndarray]], Mapping[str, Any]]


class ConformanceError(AssertionError):
    """An implementation disagrees with refnorm (or failed to run); the message says where."""


@dataclass(frozen=True)
class Adapter:
    """How the conformance kit calls an implementation of one op.

    Attributes
    ----------
    forward
        ``forward(inputs, params) -> {name: array}``. ``inputs`` are NumPy arrays named as the op's
        inputs (``x``, ``gamma``, ``beta``, ``mean_logits``, ``var_logits``, ``running_mean``,
        ``running_var`` for SN), already cast to :attr:`dtype`; ``params`` the case's parameters
        (``refnorm golden list`` shows them). Return at least every output (``y``), and any
        intermediates you want compared by refnorm's names (``xhat``, ``mean_ln``, ``var_bn``,
        ``mean_ratios``, ``new_running_mean``, ...), as arrays of your library.
    backward
        ``backward(inputs, params, upstream) -> {argument: gradient}``, ``upstream`` the cotangent
        per output name; return one gradient per differentiable argument, named after the argument
        (``x``, ``gamma``, ...). ``None``: forward only.
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

    def __post_init__(self) -> None:
        if not callable(self.forward):
            raise TypeError(f"Adapter.forward must be callable, got {type(self.forward).__name__}")
        if self.backward is not None and not callable(self.backward):
            raise TypeError(f"Adapter.backward must be callable or None, got {type(self.backward).__name__}")
        dtype_name(self.dtype)


def refnorm_adapter(op: str, *, dtype: str = "float64", backend: str = "numpy") -> Adapter:
    """refnorm itself as an :class:`Adapter` (self-consistency checks, and a template for yours)."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {tuple(OPS)}")

    def forward(inputs: dict[str, np.ndarray], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        evaluation = evaluate(op, params, inputs, backend=backend)
        return {**evaluation.outputs, **evaluation.intermediates}

    def backward(inputs: dict[str, np.ndarray], params: Mapping[str, Any], upstream: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return evaluate(op, params, inputs, upstream=upstream, backend=backend).gradients

    return Adapter(forward, backward, dtype=dtype, name=f"refnorm[{backend}]")


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
    actual = np.asarray(to_numpy(actual))
    default = default_tolerance(dtype if dtype is not None else actual.dtype, direction)
    result = compare(actual, expected, rtol=default.rtol if rtol is None else rtol, atol=default.atol if atol is None else atol, array=array)
    if not result.passed:
        name = case.id if isinstance(case, Case) else case
        raise ConformanceError(f"{name}: {result.describe()}")
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


_TOLERANCE_CACHE: dict[str, RecommendedTolerances] = {}


def _live_reference(case: Case, dtype: str) -> _Reference:
    """refnorm in float64 at the adapter's rounded inputs, so input rounding is not counted as error."""
    drawn = evaluate(case.op, case.params, case.inputs(), seed=case.seed)
    inputs = cast_floating(drawn.inputs, dtype)
    upstream = cast_floating(drawn.upstream, dtype)
    reference: Evaluation = drawn
    if dtype != "float64":
        reference = evaluate(case.op, case.params, cast_floating(inputs, np.float64), upstream=cast_floating(upstream, np.float64))
    if case.id not in _TOLERANCE_CACHE:
        _TOLERANCE_CACHE[case.id] = recommended_tolerances(case, reference=drawn)
    recommended = _TOLERANCE_CACHE[case.id]
    tolerances = {direction: recommended.get(dtype, direction) for direction in ("forward", "backward")}
    return _Reference(inputs, upstream, reference.forward_arrays(), reference.backward_arrays(), tolerances, recommended.notes, "live float64")


_MANIFEST_CACHE: dict[Path, dict[str, Any]] = {}


def _golden_reference(case: Case, dtype: str, directory: Path) -> _Reference:
    """Everything from a golden set: inputs, upstream, values, the manifest's tolerances."""
    if directory not in _MANIFEST_CACHE:
        _MANIFEST_CACHE[directory] = load_manifest(directory)
    golden: GoldenCase = read_case(directory, case.id, _MANIFEST_CACHE[directory])
    if not same_params(golden.params, case.params):
        raise ConformanceError(f"{case.id}: the golden set {directory} holds other params than this refnorm's catalog; regenerate it")
    arrays = golden.arrays
    tolerances = {d: Tolerance(**golden.entry["tolerances"][dtype][d]) for d in ("forward", "backward")}
    forward = {**{f"output.{k}": v for k, v in arrays["output"].items()}, **{f"intermediate.{k}": v for k, v in arrays["intermediate"].items()}}
    return _Reference(
        cast_floating(arrays["input"], dtype),
        cast_floating(arrays["upstream"], dtype),
        forward,
        {f"grad.{k}": v for k, v in arrays["grad"].items()},
        tolerances,
        tuple(golden.entry["tolerance_notes"]),
        f"golden set {directory}",
    )


def _call(adapter: Adapter, what: str, case: Case, function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(*args)
    except Exception as error:
        raise ConformanceError(f"{case.id}: {adapter.name}.{what} raised {type(error).__name__}: {error}") from error


def _copies(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.array(a, copy=True) for name, a in arrays.items()}


def _check_error_case(adapter: Adapter, case: Case, check_error_messages: bool) -> ConformanceReport:
    expected = case.raises
    assert expected is not None and case.match is not None
    try:
        adapter.forward(_copies(case.inputs()), dict(case.params))
    except Exception as error:
        if not isinstance(error, expected):
            raise ConformanceError(
                f"{case.id}: {adapter.name}.forward raised {type(error).__name__}({error}), expected {expected.__name__}"
            ) from error
        if check_error_messages and not re.search(case.match, str(error)):
            raise ConformanceError(f"{case.id}: {adapter.name} raised {expected.__name__}({error}), whose message does not match {case.match!r}") from error
        return ConformanceReport(case, adapter.name, adapter.dtype, "error case", notes=(f"raised {type(error).__name__}: {error}",))
    raise ConformanceError(f"{case.id}: {adapter.name}.forward raised nothing, expected {expected.__name__} matching {case.match!r} ({case.note})")


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

    Returns the :class:`ConformanceReport`; raises :class:`ConformanceError` when any array
    differs, an output or gradient is missing, or the adapter raises.
    """
    if case.kind == "error":
        return _check_error_case(adapter, case, check_error_messages)
    dtype = dtype_name(adapter.dtype)
    if str(source) == "live":
        reference = _live_reference(case, dtype)
    else:
        reference = _golden_reference(case, dtype, SHIPPED if str(source) == "shipped" else Path(source).resolve())
    params = dict(case.params)
    comparisons: list[Comparison] = []
    problems: list[str] = []

    def compare_all(results: Mapping[str, Any], expected: Mapping[str, np.ndarray], direction: str, key_of: Callable[[str], str | None]) -> None:
        tolerance = reference.tolerances[direction]
        for name, value in results.items():
            key = key_of(name)
            if key is None:
                known = ", ".join(k.split(".", 1)[1] for k in expected)
                problems.append(f"{name}: not a {direction} result refnorm knows for {case.op} (known: {known})")
                continue
            actual = np.asarray(_call(adapter, "to_numpy", case, adapter.to_numpy, value))
            comparisons.append(compare(actual, expected[key], rtol=tolerance.rtol, atol=tolerance.atol, array=key))

    outputs = _call(adapter, "forward", case, adapter.forward, _copies(reference.inputs), params)
    if not isinstance(outputs, Mapping):
        raise ConformanceError(f"{case.id}: {adapter.name}.forward returned {type(outputs).__name__}, expected a mapping name -> array")
    for key in reference.forward:
        if key.startswith("output.") and key.split(".", 1)[1] not in outputs:
            problems.append(f"{key}: missing from {adapter.name}.forward's result (it returned {sorted(outputs)})")
    compare_all(outputs, reference.forward, "forward", lambda name: _group_of(name, reference.forward))
    if adapter.backward is not None:
        gradients = _call(adapter, "backward", case, adapter.backward, _copies(reference.inputs), params, _copies(reference.upstream))
        if not isinstance(gradients, Mapping):
            raise ConformanceError(f"{case.id}: {adapter.name}.backward returned {type(gradients).__name__}, expected a mapping argument -> gradient")
        for key in reference.backward:
            if key.split(".", 1)[1] not in gradients:
                problems.append(f"{key}: missing from {adapter.name}.backward's result (it returned {sorted(gradients)})")
        compare_all(gradients, reference.backward, "backward", lambda name: f"grad.{name}" if f"grad.{name}" in reference.backward else None)

    failed = [c for c in comparisons if not c.passed]
    if failed or problems:
        lines = [
            f"{case.id}: {adapter.name} ({dtype}) differs from refnorm ({reference.source}) "
            f"in {len(failed) + len(problems)} of {len(comparisons) + len(problems)} arrays checked"
        ]
        lines += [f"  {p}" for p in problems] + [f"  {c.describe()}" for c in failed]
        passed = [c.array for c in comparisons if c.passed]
        if passed:
            lines.append(f"  (these agree: {', '.join(passed)})")
        lines.append(f"  params: {params}" + (f"; case note: {case.note}" if case.note else ""))
        if case.kink:
            lines.append(f"  this case sits on a kink of the op, where derivatives are one-sided: {case.kink}")
        lines += [f"  tolerance note: {n}" for n in reference.notes]
        raise ConformanceError("\n".join(lines))
    return ConformanceReport(case, adapter.name, dtype, reference.source, tuple(comparisons), reference.notes)


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
        return check_conformance(self.adapter, self.case, source=self.source, check_error_messages=self.check_error_messages)

    def __repr__(self) -> str:
        return f"ConformanceCheck({self.case.id})"


def _resolve_patterns(what: str, mapping: Mapping[str, str] | None, ids: list[str]) -> dict[str, str]:
    """``{case id: reason}`` from ids or ``fnmatch`` patterns; every key must match a case, every reason be given."""
    resolved: dict[str, str] = {}
    for pattern, reason in (mapping or {}).items():
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"{what}[{pattern!r}] needs a reason (a non-empty string), got {reason!r}")
        matched = [i for i in ids if fnmatch.fnmatchcase(i, pattern)]
        if not matched:
            raise ValueError(f"{what} names {pattern!r}, which matches no selected case (see `refnorm golden list`)")
        for i in matched:
            resolved.setdefault(i, reason)
    return resolved


def conformance_checks(
    adapter: Adapter,
    *,
    op: str,
    kinds: Iterable[str] = ("sample", "reference"),
    expected_failures: Mapping[str, str] | None = None,
    skip: Mapping[str, str] | None = None,
    source: str | os.PathLike[str] = "live",
    check_error_messages: bool = False,
) -> list[Any]:
    """The catalog's cases of ``op`` as ``pytest.param(ConformanceCheck, id=case id, marks=...)``.

    Parameters
    ----------
    expected_failures
        ``{case id or fnmatch pattern: reason}``: strict xfails (a case that passes fails the run,
        so the list is kept honest). Only a :class:`ConformanceError` counts as the expected
        failure; a crash of the kit itself does not.
    skip
        ``{case id or pattern: reason}``: cases the implementation cannot express at all (an
        unsupported normalizer); skipped with the reason. A case both skipped and expected to
        fail (through overlapping patterns) is skipped.
    kinds
        Which kinds of cases (``"error"`` cases check that the adapter raises the same exception type).
    """
    import pytest

    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {tuple(OPS)}")
    selected = [c for kind in kinds for c in cases(kind=kind, op=op)]
    ids = [c.id for c in selected]
    failing = _resolve_patterns("expected_failures", expected_failures, ids)
    skipped = _resolve_patterns("skip", skip, ids)
    absent = _absent_from_golden_set(source, selected)
    params = []
    for case in selected:
        marks = []
        if case.id in skipped:  # a case that cannot run cannot fail: skip wins over an expected failure
            marks.append(pytest.mark.skip(reason=skipped[case.id]))
        elif case.id in absent:
            marks.append(pytest.mark.skip(reason=absent[case.id]))
        elif case.id in failing:
            marks.append(pytest.mark.xfail(reason=failing[case.id], strict=True, raises=ConformanceError))
        check = ConformanceCheck(adapter, case, source, check_error_messages)
        params.append(pytest.param(check, id=case.id, marks=marks))
    return params


def _absent_from_golden_set(source: str | os.PathLike[str], selected: list[Case]) -> dict[str, str]:
    """``{case id: reason}`` for the non-error cases a golden-set source does not hold (the shipped set
    holds a selection of the reference cases); nothing for the live source."""
    if str(source) == "live":
        return {}
    directory = SHIPPED if str(source) == "shipped" else Path(source).resolve()
    if directory not in _MANIFEST_CACHE:
        _MANIFEST_CACHE[directory] = load_manifest(directory)
    manifest = _MANIFEST_CACHE[directory]
    held = {entry["id"] for entry in manifest["cases"]}
    rule = manifest.get("selection_rule", "")
    reason = (
        f"not in the golden set {directory} ({rule}); source='live', or a full set from "
        "`refnorm golden generate --out DIR`, checks it"
    )
    return {c.id: reason for c in selected if c.kind != "error" and c.id not in held}


def parametrize_conformance(adapter: Adapter, *, op: str, argname: str = "check", **options: Any) -> Callable[[Any], Any]:
    """Decorator: parametrize a test over :func:`conformance_checks` (same options).

    The test receives one :class:`ConformanceCheck` per case as ``check``; calling it runs the
    comparison::

        @parametrize_conformance(adapter, op="switch_norm", expected_failures={...})
        def test_conformance(check):
            check()
    """
    import pytest

    return pytest.mark.parametrize(argname, conformance_checks(adapter, op=op, **options))
