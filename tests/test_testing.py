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
            second_order = {"hvp"} if OPS[op].hvp else set()
            assert {c.array.split(".")[0] for c in report.comparisons} == {"output", "intermediate", "grad", "jvp", *second_order}


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
    error = raised.value
    message = str(error)
    assert message.startswith("switch_norm/official-train-4d: always-paper (float64) differs from refnorm (live float64) in 12 of 20 arrays")
    assert "intermediate.var_in: 8 of 8 elements differ; worst at (" in message
    assert "output.y:" in message and "grad.x" in message
    assert "agree: intermediate.instance_mean" in message, "the stages that agree are listed too"
    assert (error.case_id, error.adapter, error.dtype, error.source) == (case.id, "always-paper", "float64", "live float64")
    differing = {c.array: c for c in error.mismatches}
    assert {"output.y", "intermediate.var_in", "intermediate.var_bn", "grad.x"} <= set(differing)
    assert {"intermediate.mean_in", "intermediate.mean_bn", "grad.beta"} <= set(error.agreeing)
    var_in = differing["intermediate.var_in"]
    assert var_in.mismatched == 8 and var_in.worst_index is not None and (var_in.rtol, var_in.atol) == (1e-7, 1e-7)
    assert var_in.abs_error == abs(var_in.actual - var_in.expected) > 0 and var_in.rel_error == pytest.approx(1 / 9), "biased / unbiased = (M-1)/M, M = 9"
    assert error.missing == () and error.extra == () and error.problems == ()
    assert error.params == dict(case.params)
    check_conformance(_always_paper(), _case("switch_norm/paper-train-4d"))  # right where the bug does not matter


def test_a_failure_message_lists_at_most_a_few_arrays_but_the_error_holds_them_all():
    from refnorm.oracle.conformance import MAX_LISTED

    with pytest.raises(ConformanceError) as raised:
        check_conformance(_always_paper(), _case("switch_norm/official-train-4d"))
    error = raised.value
    assert len(error.mismatches) > MAX_LISTED
    assert sum(" elements differ; worst at " in line for line in str(error).splitlines()) == MAX_LISTED
    assert f"... {len(error.mismatches) - MAX_LISTED} more differ: " in str(error)


def test_the_error_keeps_its_fields_through_pickling():
    import pickle

    with pytest.raises(ConformanceError) as raised:
        check_conformance(_always_paper(), _case("switch_norm/official-train-4d"))
    copy = pickle.loads(pickle.dumps(raised.value))
    assert str(copy) == str(raised.value) and copy.fields() == raised.value.fields()


def test_nan_and_inf_are_reported_as_such():
    case = _case("switch_norm/paper-train-4d")
    correct = refnorm_adapter("switch_norm")

    def forward(inputs, params):
        y = np.array(correct.forward(inputs, params)["y"])
        y[0, 1, 2, 0], y[1, 0, 0, 0] = np.nan, -np.inf
        return {"y": y}

    with pytest.raises(ConformanceError) as raised:
        check_conformance(Adapter(forward, name="nan-y"), case)
    (y,) = raised.value.mismatches
    assert (y.nan_count, y.inf_count, y.mismatched) == (1, 1, 2)
    assert "output.y: 2 of 72 elements differ (1 NaN and 1 inf where refnorm's value is finite)" in str(raised.value)
    assert "actual NaN, expected " in str(raised.value) and "abs error NaN" in str(raised.value)
    assert "inf …" not in str(raised.value) and "max abs error inf" not in str(raised.value)


def test_missing_outputs_unknown_names_and_crashes_are_reported():
    case = _case("switch_norm/paper-train-4d")
    correct = refnorm_adapter("switch_norm")
    renamed = Adapter(lambda i, p: {"out": correct.forward(i, p)["y"]}, name="renamed")
    with pytest.raises(ConformanceError, match=r"missing: output\.y \(forward returned \['out'\]\)[\s\S]*extra: forward: out") as raised:
        check_conformance(renamed, case)
    assert raised.value.missing == ("output.y (forward returned ['out'])",)
    assert raised.value.extra[0].startswith("forward: out (refnorm's forward names for this case: y, xhat, ")
    no_logits = Adapter(correct.forward, lambda i, p, u: {k: v for k, v in correct.backward(i, p, u).items() if k != "mean_logits"})
    with pytest.raises(ConformanceError, match=r"missing: grad\.mean_logits") as raised:
        check_conformance(no_logits, case)
    assert [m.split(" ")[0] for m in raised.value.missing] == ["grad.mean_logits"]

    def crash(inputs, params):
        raise RuntimeError("shape mismatch in kernel")

    with pytest.raises(ConformanceError, match=r"crashing\.forward raised RuntimeError: shape mismatch in kernel") as raised:
        check_conformance(Adapter(crash, name="crashing"), case)
    assert raised.value.problems == ("crashing.forward raised RuntimeError: shape mismatch in kernel",)
    assert isinstance(raised.value.__cause__, RuntimeError), "the implementation's own traceback is kept"


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
    with pytest.raises(ValueError, match="matches no case of the op and kinds"):
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
    assert result.nan_count == 1 and result.inf_count == 0 and "1 NaN where refnorm's value is finite" in result.describe()
    assert "actual NaN, expected 2.0" in result.describe() and "max abs error" not in result.describe()
    assert result.as_dict()["actual"] == "NaN" and result.as_dict()["max_abs_error"] == "inf", "JSON has no NaN: named as strings"
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


# --------------------------------------------------------------------------------------------
# select=, run_conformance, reports
# --------------------------------------------------------------------------------------------


def test_select_keeps_only_the_matching_cases():
    adapter = refnorm_adapter("switch_norm")
    params = conformance_checks(adapter, op="switch_norm", kinds=("sample",), select=["switch_norm/official-*", "switch_norm/paper-train-4d"])
    expected = [c.id for c in cases("sample", "switch_norm") if c.name.startswith("official-") or c.name == "paper-train-4d"]
    assert [p.id for p in params] == expected
    assert [p.id for p in conformance_checks(adapter, op="switch_norm", kinds=("sample",), select="*-gn*")] == [
        c.id for c in cases("sample", "switch_norm") if "-gn" in c.name
    ]
    with pytest.raises(ValueError, match=r"select names 'switch_norm/oficial-\*', which matches no case"):
        conformance_checks(adapter, op="switch_norm", select=["switch_norm/oficial-*"])
    with pytest.raises(TypeError, match="select holds 3"):
        conformance_checks(adapter, op="switch_norm", select=["switch_norm/*", 3])


def test_skip_and_expected_failures_apply_within_the_selection():
    adapter = refnorm_adapter("switch_norm")
    params = conformance_checks(adapter, op="switch_norm", kinds=("sample",), select="switch_norm/official-*",
                                skip={"*-gn*": "no GN"}, expected_failures={"switch_norm/paper-*": "only official ones would fail"})
    assert all(p.id.startswith("switch_norm/official-") for p in params)
    assert {p.id for p in params if p.marks} == {"switch_norm/official-train-gn-first"}, "a pattern may match outside the selection"


def test_run_conformance_gives_every_status_outside_pytest(tmp_path):
    from refnorm.oracle import golden
    from refnorm.testing import run_conformance

    run = run_conformance(
        _always_paper(), op="switch_norm", kinds=("sample",),
        skip={"switch_norm/*-gn*": "GN is not implemented"},
        expected_failures={"switch_norm/official-train-*": "ignores the convention", "switch_norm/paper-train-4d": "claimed, not true"},
    )  # fmt: skip
    statuses = run.statuses()
    assert list(statuses) == [c.id for c in cases("sample", "switch_norm")]
    assert statuses["switch_norm/official-train-gn-first"] == "skipped" and run["switch_norm/official-train-gn-first"].reason == "GN is not implemented"
    assert statuses["switch_norm/official-train-4d"] == "xfailed"
    assert statuses["switch_norm/paper-train-4d"] == "xpassed"
    assert statuses["switch_norm/official-eval-4d"] == "failed" and statuses["switch_norm/paper-eval-4d"] == "passed"
    failed = run["switch_norm/official-eval-4d"]
    assert isinstance(failed.error, ConformanceError) and "intermediate.var_in" in {c.array for c in failed.mismatches}
    assert not run.passed
    assert run.ids("xpassed") == ["switch_norm/paper-train-4d"]
    summary = run.summary()
    assert summary.splitlines()[0].startswith("always-paper (float64) against refnorm (live float64), switch_norm: ")
    assert "XPASS  switch_norm/paper-train-4d: expected to fail (claimed, not true) but passed" in summary
    assert "FAILED switch_norm/official-eval-4d: " in summary

    # error: the kit itself cannot judge a case (a golden file that no longer matches its hash)
    golden.generate(tmp_path / "set", kinds=("sample",), ops=("switch_norm",))
    victim = tmp_path / "set" / "switch_norm" / "paper-train-4d.npz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    broken = run_conformance(refnorm_adapter("switch_norm"), op="switch_norm", kinds=("sample",), select="switch_norm/paper-train-[34]d",
                             source=tmp_path / "set")  # fmt: skip
    assert broken.statuses() == {"switch_norm/paper-train-3d": "passed", "switch_norm/paper-train-4d": "error"}
    assert not broken.passed and "does not match its file_sha256" in str(broken["switch_norm/paper-train-4d"].error)
    assert run_conformance(refnorm_adapter("switch_norm"), op="switch_norm", kinds=("sample",), select="switch_norm/paper-*").passed


def test_run_conformance_writes_json_and_junit_reports(tmp_path):
    import json
    import xml.etree.ElementTree as ElementTree

    from refnorm.testing import run_conformance

    run = run_conformance(_always_paper(), op="switch_norm", kinds=("sample",), select=["switch_norm/*-train-4d", "switch_norm/*-gn*"],
                          skip={"*-gn*": "GN is not implemented"}, expected_failures={"switch_norm/official-train-4d": "ignores the convention"})  # fmt: skip
    run.write_json(tmp_path / "report.json")
    run.write_junit_xml(tmp_path / "report.xml")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["schema"] == "refnorm-report" and report["tool"] == "refnorm.testing.run_conformance" and report["passed"] is True
    assert report["counts"] == {"passed": 1, "failed": 0, "xfailed": 1, "xpassed": 0, "skipped": 2, "error": 0}
    xfailed = next(c for c in report["cases"] if c["status"] == "xfailed")
    assert xfailed["id"] == "switch_norm/official-train-4d" and xfailed["message"].startswith("expected to fail: ignores the convention")
    var_in = next(a for a in xfailed["arrays"] if a["array"] == "intermediate.var_in")
    assert var_in["passed"] is False and len(var_in["worst_index"]) == 2 and var_in["actual"] != var_in["expected"]
    suite = ElementTree.parse(tmp_path / "report.xml").getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "0" and suite.get("skipped") == "3"
    kinds = {case.get("name"): [child.tag for child in case] for case in suite.iter("testcase")}
    assert kinds == {"paper-train-4d": [], "official-train-4d": ["skipped"], "paper-train-gn": ["skipped"], "official-train-gn-first": ["skipped"]}


@pytest.mark.parametrize("name", ["gamma-shape", "x-nan", "eps-zero", "x-integer"])
def test_error_cases_reach_a_float32_adapter_in_float32(name):
    seen = {}
    correct = refnorm_adapter("switch_norm", dtype="float32")

    def forward(inputs, params):
        seen.update({key: a.dtype for key, a in inputs.items()})
        return correct.forward(inputs, params)

    check_conformance(Adapter(forward, dtype="float32"), _case(f"switch_norm/{name}"), check_error_messages=True)
    floating = {key: dtype for key, dtype in seen.items() if dtype.kind == "f"}
    assert floating and set(floating.values()) == {np.dtype(np.float32)}
    if name == "x-integer":
        assert seen["x"] == np.dtype(np.int64), "an integer input stays an integer: that is the bad input"


def test_a_dtype_mismatch_error_case_keeps_its_mismatch_in_float32():
    from refnorm.oracle.conformance import error_case_inputs

    case = _case("switch_norm/gamma-float32")
    inputs, swapped = error_case_inputs(case, "float32")
    assert swapped and inputs["x"].dtype == np.float32 and inputs["gamma"].dtype == np.float64
    report = check_conformance(refnorm_adapter("switch_norm", dtype="float32"), case, check_error_messages=True)
    assert any("message not checked" in note for note in report.notes)
    unchanged, swapped = error_case_inputs(case, "float64")
    assert not swapped and {k: a.dtype for k, a in unchanged.items()} == {k: a.dtype for k, a in case.inputs().items()}


def test_a_failing_case_prints_under_25_lines_in_pytest(pytester: pytest.Pytester):
    pytester.makepyfile(test_testing_helpers=f"from refnorm.testing import Adapter, refnorm_adapter\n{_ALWAYS_PAPER_SOURCE}")
    pytester.makepyfile(
        textwrap.dedent(
            """
            from refnorm.testing import parametrize_conformance
            from test_testing_helpers import always_paper

            @parametrize_conformance(always_paper(), op="switch_norm", kinds=("sample",), select="switch_norm/official-train-4d")
            def test_conformance(check):
                check()
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "test_conformance[switch_norm/official-train-4d]" in line and line.startswith("_"))
    end = next(i for i, line in enumerate(lines) if "short test summary info" in line)
    section = lines[start:end]
    print("\n".join(section))
    assert len(section) < 25, f"{len(section)} lines"
    text = "\n".join(section)
    assert "check()" in text and "ConformanceError: switch_norm/official-train-4d: always-paper (float64) differs" in text
    assert "def check_conformance" not in text and "__tracebackhide__" not in text, "the kit's own source is hidden"
