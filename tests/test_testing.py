"""The conformance kit: refnorm passes against itself, a wrong implementation fails with a message
that locates the error, expected failures and skips are honoured, and tolerances are computed."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pytest

from refnorm.oracle.catalog import OPS, cases
from refnorm.testing import (
    Adapter,
    ConformanceError,
    assert_allclose_named,
    check_conformance,
    compare,
    conformance_checks,
    recommended_tolerances,
    refnorm_adapter,
)
from refnorm.oracle.tolerances import DEFAULT_TOLERANCES


def _case(case_id: str):
    return next(c for c in cases() if c.id == case_id)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_refnorm_conforms_to_itself_on_every_case(op: str, dtype: str):
    adapter = refnorm_adapter(op, dtype=dtype)
    for case in cases(op=op):
        report = check_conformance(adapter, case)
        if case.kind != "error":
            assert {c.array.split(".")[0] for c in report.comparisons} == {"output", "intermediate", "grad"}


def test_refnorm_on_array_api_strict_conforms_to_refnorm_on_numpy():
    adapter = refnorm_adapter("switch_norm", backend="array-api-strict")
    for case in cases(kind="sample", op="switch_norm"):
        check_conformance(adapter, case)


@pytest.mark.parametrize("source", ["shipped", "directory"])
def test_the_kit_reads_golden_files_as_its_reference(source: str, tmp_path):
    from refnorm.oracle import golden

    if source == "directory":
        golden.generate(tmp_path / "set", kinds=("sample",), ops=("switch_norm",))
        source = tmp_path / "set"
    for dtype in ("float64", "float32"):
        adapter = refnorm_adapter("switch_norm", dtype=dtype)
        for case in cases(kind="sample", op="switch_norm"):
            report = check_conformance(adapter, case, source=source)
            assert report.source.startswith("golden set")


def test_a_golden_source_skips_the_cases_the_set_does_not_hold():
    from refnorm.oracle import golden

    adapter = refnorm_adapter("sparsestmax")
    params = conformance_checks(adapter, op="sparsestmax", kinds=("sample", "reference", "error"), source="shipped")
    held = {entry["id"] for entry in golden.load_manifest(golden.SHIPPED)["cases"]}
    for param in params:
        (check,) = param.values
        if check.case.kind == "error" or check.case.id in held:
            assert not param.marks, check.case.id
        else:
            (mark,) = param.marks
            assert mark.name == "skip" and "not in the golden set" in mark.kwargs["reason"] and "source='live'" in mark.kwargs["reason"]
    assert any(p.marks for p in params) and any(not p.marks for p in params if p.values[0].case.kind == "reference")


def _always_paper(op: str = "switch_norm") -> Adapter:
    """A plausible port bug: the convention parameter is ignored (always biased variances)."""
    correct = refnorm_adapter(op)

    def forward(inputs: dict[str, np.ndarray], params: dict[str, Any]):
        return correct.forward(inputs, {**params, "convention": "paper"})

    def backward(inputs, params, upstream):
        return correct.backward(inputs, {**params, "convention": "paper"}, upstream)

    return Adapter(forward, backward, name="always-paper")


def test_a_wrong_implementation_fails_with_a_message_that_locates_the_error():
    case = _case("switch_norm/official-train-4d")
    with pytest.raises(ConformanceError) as raised:
        check_conformance(_always_paper(), case)
    message = str(raised.value)
    assert message.startswith("switch_norm/official-train-4d: always-paper (float64) differs from refnorm")
    assert "intermediate.var_in: 8 of 8 elements differ" in message
    assert "output.y:" in message and "grad.x:" in message
    assert "worst at index (" in message and "actual " in message and "expected " in message
    assert "(these agree: intermediate.instance_mean" in message, "the stages that agree are listed too"
    check_conformance(_always_paper(), _case("switch_norm/paper-train-4d"))  # right where the bug does not matter


def test_missing_outputs_unknown_names_and_crashes_are_reported():
    case = _case("switch_norm/paper-train-4d")
    correct = refnorm_adapter("switch_norm")
    renamed = Adapter(lambda i, p: {"out": correct.forward(i, p)["y"]}, name="renamed")
    with pytest.raises(ConformanceError, match=r"output\.y: missing from renamed\.forward's result[\s\S]*out: not a forward result"):
        check_conformance(renamed, case)
    no_logits = Adapter(correct.forward, lambda i, p, u: {k: v for k, v in correct.backward(i, p, u).items() if k != "mean_logits"})
    with pytest.raises(ConformanceError, match=r"grad\.mean_logits: missing"):
        check_conformance(no_logits, case)

    def crash(inputs, params):
        raise RuntimeError("shape mismatch in kernel")

    with pytest.raises(ConformanceError, match=r"crashing\.forward raised RuntimeError: shape mismatch in kernel"):
        check_conformance(Adapter(crash, name="crashing"), case)


def test_error_cases_require_the_same_exception_type():
    case = _case("switch_norm/gamma-shape")
    check_conformance(refnorm_adapter("switch_norm"), case, check_error_messages=True)

    def accepts_anything(inputs, params):
        return {"y": inputs["x"]}

    with pytest.raises(ConformanceError, match="raised nothing, expected ValueError"):
        check_conformance(Adapter(accepts_anything), case)

    def wrong_type(inputs, params):
        raise RuntimeError("size mismatch")

    with pytest.raises(ConformanceError, match=r"raised RuntimeError\(size mismatch\), expected ValueError"):
        check_conformance(Adapter(wrong_type), case)


def test_float32_inputs_are_given_rounded_and_compared_against_float64_at_those_inputs():
    seen = {}
    correct = refnorm_adapter("switch_norm", dtype="float32")

    def forward(inputs, params):
        seen.update({name: a.dtype for name, a in inputs.items()})
        return correct.forward(inputs, params)

    report = check_conformance(Adapter(forward, dtype="float32"), _case("switch_norm/paper-eval-4d"))
    assert set(seen.values()) == {np.dtype(np.float32)}
    y = next(c for c in report.comparisons if c.array == "output.y")
    assert (y.rtol, y.atol) == DEFAULT_TOLERANCES["float32"]["forward"]
    assert 0 < y.max_abs_error < 1e-5, "a float32 result is compared as such, not bit for bit"


def test_expected_failures_must_name_cases_and_give_reasons():
    adapter = refnorm_adapter("switch_norm")
    with pytest.raises(ValueError, match="matches no selected case"):
        conformance_checks(adapter, op="switch_norm", expected_failures={"switch_norm/no-such-case": "typo"})
    with pytest.raises(ValueError, match="needs a reason"):
        conformance_checks(adapter, op="switch_norm", expected_failures={"switch_norm/official-*": ""})
    overlapping = conformance_checks(adapter, op="switch_norm", kinds=("sample",), expected_failures={"*-gn*": "a"}, skip={"*-gn*": "b"})
    assert {m.name for p in overlapping for m in p.marks} == {"skip"}, "a case that cannot run cannot fail"
    params = conformance_checks(adapter, op="switch_norm", kinds=("sample",), expected_failures={"switch_norm/official-*": "uses biased variances"})
    marked = {p.id for p in params if p.marks}
    assert marked == {c.id for c in cases("sample", "switch_norm") if c.name.startswith("official-")}
    mark = next(p for p in params if p.marks).marks[0]
    assert mark.name == "xfail" and mark.kwargs == {"reason": "uses biased variances", "strict": True, "raises": ConformanceError}


def test_parametrize_conformance_runs_in_pytest_with_strict_expected_failures(pytester: pytest.Pytester):
    pytester.makepyfile(
        textwrap.dedent(
            """
            from refnorm.testing import parametrize_conformance
            from test_testing_helpers import always_paper

            @parametrize_conformance(always_paper(), op="switch_norm", kinds=("sample",),
                                     expected_failures={"switch_norm/official-*": "ignores the convention",
                                                        "switch_norm/paper-train-4d": "claimed but not true"},
                                     skip={"*-gn*": "GN is not implemented"})
            def test_conformance(check):
                check()
            """
        )
    )
    pytester.makepyfile(test_testing_helpers=f"from refnorm.testing import Adapter, refnorm_adapter\n{_ALWAYS_PAPER_SOURCE}")
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    official = sum(c.name.startswith("official-") and "-gn" not in c.name for c in cases("sample", "switch_norm"))
    paper = sum(c.name.startswith("paper-") and "-gn" not in c.name for c in cases("sample", "switch_norm"))
    result.assert_outcomes(passed=paper - 1, xfailed=official, failed=1, skipped=2)
    result.stdout.fnmatch_lines(["*XPASS(strict)*claimed but not true*"])


_ALWAYS_PAPER_SOURCE = '''
def always_paper():
    correct = refnorm_adapter("switch_norm")
    def forward(inputs, params):
        return correct.forward(inputs, {**params, "convention": "paper"})
    def backward(inputs, params, upstream):
        return correct.backward(inputs, {**params, "convention": "paper"}, upstream)
    return Adapter(forward, backward, name="always-paper")
'''


def test_assert_allclose_named_names_case_array_index_and_values():
    expected = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert_allclose_named(expected + 1e-9, expected, case="switch_norm/x", array="output.y")
    with pytest.raises(ConformanceError) as raised:
        assert_allclose_named(expected + np.array([[0, 0], [0, 1e-3]]), expected, case="switch_norm/x", array="output.y")
    message = str(raised.value)
    assert message.startswith("switch_norm/x: output.y: 1 of 4 elements differ")
    assert "worst at index (1, 1): actual 4.001, expected 4.0, abs error 1.000e-03" in message


def test_compare_treats_nan_as_an_error_and_checks_shapes():
    result = compare(np.array([1.0, np.nan]), np.array([1.0, 2.0]), rtol=1e-7, atol=1e-7, array="y")
    assert not result.passed and result.worst_index == (1,) and result.max_abs_error == np.inf
    assert compare(np.array([np.nan]), np.array([np.nan]), rtol=0, atol=0).passed
    shape = compare(np.zeros((2, 3)), np.zeros((3, 2)), rtol=1e-7, atol=1e-7, array="grad.x")
    assert not shape.passed and "shape (2, 3), expected (3, 2)" in shape.describe()
    assert not compare(np.array([1, 2]), np.array([1, 3]), rtol=1, atol=1).passed, "integers compare exactly"


def test_widened_tolerances_only_for_cases_that_say_why():
    """No ordinary case may get a loose tolerance silently: a widening needs Case.conditioning."""
    for case in cases():
        if case.kind == "error":
            continue
        recommended = recommended_tolerances(case)
        if recommended.widened:
            assert case.conditioning, f"{case.id} gets {recommended.widened} widened without a conditioning note: {recommended.notes}"
        assert recommended.tolerances["float64"] == DEFAULT_TOLERANCES["float64"] or case.tolerances, case.id


def test_large_offset_cases_really_need_their_wider_float32_tolerance():
    """The widening is measured, not guessed: refnorm's own float32 run fails the defaults here."""
    from refnorm.oracle.evaluation import evaluate, evaluate_case

    for case in cases(kind="reference"):
        if case.params.get("offset", 0) < 1e4:
            continue
        reference = evaluate_case(case)
        single = evaluate(case.op, case.params, reference.inputs, upstream=reference.upstream, dtype=np.float32)
        default = DEFAULT_TOLERANCES["float32"]["forward"]
        y = compare(single.outputs["y"], reference.outputs["y"], rtol=default.rtol, atol=default.atol)
        assert not y.passed, f"{case.id}: float32 passes the default tolerance, so widening it was not needed"
        widened = recommended_tolerances(case, reference).get("float32", "forward")
        assert compare(single.outputs["y"], reference.outputs["y"], rtol=widened.rtol, atol=widened.atol).ratio <= 0.1
