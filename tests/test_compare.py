"""``refnorm golden compare``: another implementation's results files judged against a golden set.

Results are written here by refnorm itself (the right answer, in float32 or float64) and then
broken in every way a harness in another language could break them; each test states one rule of
the comparison (``refnorm/oracle/compare.py``, ``docs/golden-format.md``)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from refnorm.cli import main
from refnorm.oracle import golden
from refnorm.oracle.compare import CompareError, compare_results
from refnorm.testing import refnorm_adapter

OPS = ("sparsemax", "switch_norm")


@pytest.fixture(scope="module")
def golden_set(tmp_path_factory) -> Path:
    """A small golden set: the sample cases of two ops, and their error cases."""
    directory = tmp_path_factory.mktemp("golden") / "set"
    golden.generate(directory, kinds=("sample", "error"), ops=OPS)
    return directory


def cases_of(directory: Path, kind: str = "sample") -> list[dict]:
    return [e for e in golden.load_manifest(directory)["cases"] if e["kind"] == kind]


def write_results(golden_set: Path, results: Path, dtype: str = "float64", *, intermediates: bool = True, copy_inputs: bool = False,
                  ops: tuple[str, ...] = OPS) -> Path:  # fmt: skip
    """What a correct implementation in ``dtype`` writes: refnorm evaluated on the golden inputs."""
    manifest = golden.load_manifest(golden_set)
    for entry in cases_of(golden_set) + cases_of(golden_set, "reference"):
        if entry["op"] not in ops:
            continue
        case = golden.read_case(golden_set, entry["id"], manifest)
        adapter = refnorm_adapter(entry["op"], dtype=dtype)
        inputs = {k: v.astype(dtype) for k, v in case.arrays["input"].items()}
        upstream = {k: v.astype(dtype) for k, v in case.arrays["upstream"].items()}
        forward = adapter.forward(inputs, case.params)
        arrays = {"output.y": np.asarray(forward["y"]).astype(dtype)}
        if intermediates:
            arrays.update({f"intermediate.{k}": np.asarray(v) for k, v in forward.items() if k != "y"})
            arrays = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in arrays.items()}
        arrays.update({f"grad.{k}": np.asarray(v).astype(dtype) for k, v in adapter.backward(inputs, case.params, upstream).items()})
        if copy_inputs:
            arrays.update({f"input.{k}": v for k, v in inputs.items()} | {f"upstream.{k}": v for k, v in upstream.items()})
        path = results / f"{entry['id']}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return results


def edit(path: Path, **changes: np.ndarray | None) -> None:
    """Rewrite one results file with some arrays replaced (``None``: removed)."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def failing(report) -> dict:
    return {c.id: c for c in report.cases if c.status != "passed"}


# --------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_correct_implementation_agrees_in_its_dtype(golden_set, tmp_path, dtype):
    report = compare_results(write_results(golden_set, tmp_path / "r", dtype), golden_set)
    assert report.passed, report.summary()
    assert len(report.cases) == len(cases_of(golden_set)) and not report.problems
    y = next(c for c in report.cases[0].comparisons if c.array == "output.y")
    expected = cases_of(golden_set)[0]["tolerances"][dtype]["forward"]
    assert (y.rtol, y.atol) == (expected["rtol"], expected["atol"]), "the case's recommended tolerance for the results' dtype"
    assert {c.details["dtypes"][0] for c in report.cases} == {dtype}


def test_intermediates_are_optional_and_compared_when_present(golden_set, tmp_path):
    without = compare_results(write_results(golden_set, tmp_path / "without", intermediates=False), golden_set)
    assert without.passed and all(not a.array.startswith("intermediate.") for c in without.cases for a in c.comparisons)
    results = write_results(golden_set, tmp_path / "with")
    edit(results / "switch_norm/paper-train-4d.npz", intermediate__var_bn=np.full((1, 4), 0.5))
    (case,) = failing(compare_results(results, golden_set)).values()
    assert [c.array for c in case.mismatches] == ["intermediate.var_bn"]


def test_repeated_inputs_must_equal_the_golden_inputs(golden_set, tmp_path):
    results = write_results(golden_set, tmp_path / "r", "float32", copy_inputs=True)
    assert compare_results(results, golden_set).passed, "inputs cast to the results' dtype are the golden inputs"
    path = results / "sparsemax/K3.npz"
    with np.load(path) as npz:
        logits = npz["input.logits"].copy()
    logits[0, 0] += 1.0
    edit(path, input__logits=logits)
    (case,) = failing(compare_results(results, golden_set)).values()
    assert case.problems == ("input.logits differs from the golden input.logits cast to float32 (1 elements): these results were computed from other inputs",)


# --------------------------------------------------------------------------------------------
# Disagreement, located
# --------------------------------------------------------------------------------------------


def test_a_mismatch_is_located_with_both_values_the_errors_and_the_tolerance(golden_set, tmp_path):
    results = write_results(golden_set, tmp_path / "r")
    path = results / "switch_norm/official-train-4d.npz"
    with np.load(path) as npz:
        dx = npz["grad.x"].copy()
    dx[1, 2, 0, 1] += 1e-3
    edit(path, grad__x=dx)
    report = compare_results(results, golden_set)
    (case,) = failing(report).values()
    (mismatch,) = case.mismatches
    assert (case.id, mismatch.array, mismatch.worst_index, mismatch.mismatched) == ("switch_norm/official-train-4d", "grad.x", (1, 2, 0, 1), 1)
    assert mismatch.actual == dx[1, 2, 0, 1] and mismatch.abs_error == pytest.approx(1e-3, rel=1e-9)
    assert mismatch.rel_error == pytest.approx(1e-3 / abs(mismatch.expected))
    assert (mismatch.rtol, mismatch.atol) == (1e-5, 1e-5), "gradients: the backward tolerance"
    assert case.message == "1 of 20 arrays differ: grad.x"


def test_nan_and_inf_fail_and_are_named(golden_set, tmp_path):
    results = write_results(golden_set, tmp_path / "r")
    with np.load(results / "sparsemax/K3.npz") as npz:
        y = npz["output.y"].copy()
    y[0, 0], y[1, 1] = np.nan, np.inf
    edit(results / "sparsemax/K3.npz", output__y=y)
    (case,) = failing(compare_results(results, golden_set)).values()
    (mismatch,) = case.mismatches
    assert (mismatch.nan_count, mismatch.inf_count) == (1, 1)
    assert "(1 NaN and 1 inf where refnorm's value is finite)" in mismatch.brief() and "actual NaN" in mismatch.brief()


@pytest.mark.parametrize(
    ("dtype", "why"),
    [(np.float16, "has dtype float16; expected float32 or float64"), (np.complex128, "has dtype complex128; expected float32 or float64"),
     (np.int64, "has dtype int64; expected float32 or float64")],
)  # fmt: skip
def test_other_dtypes_are_refused_with_the_reason(golden_set, tmp_path, dtype, why):
    results = write_results(golden_set, tmp_path / "r")
    edit(results / "sparsemax/K3.npz", output__y=np.zeros((5, 3), dtype))
    (case,) = failing(compare_results(results, golden_set)).values()
    assert case.problems == (f"output.y {why} (the dtype chooses the tolerance)",)


def test_integer_intermediates_compare_exactly(tmp_path):
    directory = tmp_path / "set"
    golden.generate(directory, kinds=("sample",), ops=("sparse_switch_norm",))
    results = write_results(directory, tmp_path / "r", ops=("sparse_switch_norm",))
    assert compare_results(results, directory).passed
    path = results / "sparse_switch_norm/paper-train-mean-fixed.npz"
    with np.load(path) as npz:
        assert npz["intermediate.new_fixed_mean"].dtype.kind == "i"
    edit(path, intermediate__new_fixed_mean=np.asarray(0, np.int32))
    (case,) = failing(compare_results(results, directory)).values()
    assert [c.array for c in case.mismatches] == ["intermediate.new_fixed_mean"]


# --------------------------------------------------------------------------------------------
# Missing: what a selection requires
# --------------------------------------------------------------------------------------------


def test_a_case_without_results_and_a_missing_gradient_fail(golden_set, tmp_path):
    results = write_results(golden_set, tmp_path / "r")
    (results / "sparsemax/K2.npz").unlink()
    edit(results / "sparsemax/K3.npz", grad__logits=None)
    report = compare_results(results, golden_set)
    assert failing(report)["sparsemax/K2"].missing == ("sparsemax/K2.npz",)
    assert failing(report)["sparsemax/K3"].missing == ("grad.logits",)
    forward_only = compare_results(results, golden_set, require=("output",), cases=["sparsemax/K3"])
    assert forward_only.passed, "--require output: a forward-only implementation"


def test_ops_cases_and_exclude_choose_what_is_required(golden_set, tmp_path):
    results = write_results(golden_set, tmp_path / "r")
    for path in (results / "switch_norm").glob("*gn*.npz"):
        path.unlink()
    assert not compare_results(results, golden_set).passed
    report = compare_results(results, golden_set, ops=["switch_norm"], exclude=["*gn*"])
    assert report.passed and {c.id.split("/")[0] for c in report.cases} == {"switch_norm"}
    assert report.notes and report.notes[0].startswith(f"{len(cases_of(golden_set)) - len(report.cases) - 2} results files of golden cases outside")
    only = compare_results(results, golden_set, cases=["sparsemax/K[23]", "switch_norm/official-train-4d"])
    assert [c.id for c in only.cases] == ["switch_norm/official-train-4d", "sparsemax/K2", "sparsemax/K3"]  # the set's order: the catalog's


# --------------------------------------------------------------------------------------------
# Extra: everything in RESULTS is accounted for
# --------------------------------------------------------------------------------------------


def test_everything_unaccounted_for_in_the_results_is_a_failure(golden_set, tmp_path):
    results = write_results(golden_set, tmp_path / "r")
    (results / "notes.txt").write_text("hello")
    (results / "manifest.json").write_text("{}")
    (results / "sparsemax/deep").mkdir()
    np.savez(results / "sparsemax/deep/K3.npz", y=np.zeros(3))
    np.savez(results / "sparsemax/K99.npz", **{"output.y": np.zeros(3)})
    np.savez(results / "sparsemax/K1.npz", **{"output.y": np.zeros(3)})  # an error case
    (results / "outside.npz").write_bytes(b"")
    edit(results / "sparsemax/K3.npz", output__z=np.zeros(3), weird=np.zeros(3))
    report = compare_results(results, golden_set)
    assert sorted(p.split(":")[0] for p in report.problems) == [
        "manifest.json", "notes.txt", "outside.npz", "sparsemax/K1.npz", "sparsemax/K99.npz", "sparsemax/deep/K3.npz",
    ]  # fmt: skip
    assert "has no case sparsemax/K99" in next(p for p in report.problems if p.startswith("sparsemax/K99"))
    assert "error case" in next(p for p in report.problems if p.startswith("sparsemax/K1"))
    assert failing(report)["sparsemax/K3"].extra == (
        "output.z: the golden case has no such array (its output.* arrays: output.y)",
        "weird: not <group>.<name> with a group of input, upstream, tangent, output, intermediate, grad, jvp, hvp",
    )
    assert not report.passed


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symbolic_links_are_reported_and_never_followed(golden_set, tmp_path):
    results = write_results(golden_set, tmp_path / "r")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = results / "sparsemax/K3.npz"
    os.replace(target, outside / "K3.npz")
    os.symlink(outside / "K3.npz", target)
    os.symlink(outside, results / "linked-dir")
    report = compare_results(results, golden_set)
    assert sorted(report.problems) == ["linked-dir/: a symbolic link; not followed", "sparsemax/K3.npz: a symbolic link; not followed"]
    assert failing(report)["sparsemax/K3"].missing == ("sparsemax/K3.npz",), "a linked file is not read"


def test_unreadable_pickled_and_oversized_files_fail_without_being_loaded(golden_set, tmp_path):
    results = write_results(golden_set, tmp_path / "r")
    (results / "sparsemax/K2.npz").write_bytes(b"not a zip")
    np.savez(results / "sparsemax/K3.npz", **{"output.y": np.array([{"a": 1}], dtype=object)})
    # A member that declares far more bytes than its golden array needs: refused before decompression.
    np.savez_compressed(results / "sparsemax/K5-sparse.npz", **{"output.y": np.zeros((1000, 1000))})
    report = failing(compare_results(results, golden_set))
    assert report["sparsemax/K2"].problems[0].startswith("unreadable: BadZipFile")
    assert "pickle" in report["sparsemax/K3"].problems[0].lower()
    assert "declares 8000128 bytes, more than any array of this case needs" in report["sparsemax/K5-sparse"].problems[0]


# --------------------------------------------------------------------------------------------
# Unusable input: CompareError, exit 2
# --------------------------------------------------------------------------------------------


def test_unusable_input_is_a_compare_error(golden_set, tmp_path):
    results = write_results(golden_set, tmp_path / "r")
    with pytest.raises(CompareError, match="does not exist"):
        compare_results(tmp_path / "nothing", golden_set)
    with pytest.raises(CompareError, match="is not a directory"):
        compare_results(results / "sparsemax/K3.npz", golden_set)
    with pytest.raises(CompareError, match="error cases hold no values to compare"):
        compare_results(results, golden_set, kinds=["error"])
    with pytest.raises(CompareError, match="--case 'sparsemax/K33' matches no"):
        compare_results(results, golden_set, cases=["sparsemax/K33"])
    with pytest.raises(CompareError, match="has no cases of op 'exemplar_norm'"):
        compare_results(results, golden_set, ops=["exemplar_norm"])
    with pytest.raises(CompareError, match="--require names 'intermediates'"):
        compare_results(results, golden_set, require=["intermediates"])


def test_a_golden_set_that_does_not_verify_is_not_used(golden_set, tmp_path):
    import shutil

    copy = tmp_path / "golden"
    shutil.copytree(golden_set, copy)
    results = write_results(golden_set, tmp_path / "r")
    victim = copy / "sparsemax/K3.npz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CompareError, match="sparsemax/K3.*does not match its file_sha256"):
        compare_results(results, copy)
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"rtol": 1e-07', '"rtol": 1000.0'))
    with pytest.raises(CompareError, match="manifest"):
        compare_results(results, copy)


# --------------------------------------------------------------------------------------------
# The command: exit status, reports
# --------------------------------------------------------------------------------------------


def test_the_command_exits_0_1_2_and_writes_reports(golden_set, tmp_path, capsys):
    results = write_results(golden_set, tmp_path / "r", "float32")
    assert main(["golden", "compare", str(results), "--against", str(golden_set), "--quiet"]) == 0
    assert "agree, 0 disagree, 0 missing" in capsys.readouterr().out
    edit(results / "sparsemax/K3.npz", output__y=np.zeros((5, 3), np.float32))
    xml_path = tmp_path / "report.xml"
    status = main(["golden", "compare", str(results), "--against", str(golden_set), "--quiet", "--failures-only", "--json", "-", "--junit-xml", str(xml_path)])
    captured = capsys.readouterr()
    assert status == 1
    report = json.loads(captured.out)
    assert report["tool"] == "refnorm golden compare" and report["passed"] is False and report["counts"]["failed"] == 1
    (bad,) = [c for c in report["cases"] if c["status"] == "failed"]
    assert bad["id"] == "sparsemax/K3" and bad["arrays"][-1]["array"] == "output.y" and bad["arrays"][-1]["worst_index"] is not None
    assert "sparsemax/K3" in captured.err and "FAIL" in captured.err, "with --json -, the text goes to standard error"
    assert "sparsemax/K2 " not in captured.err, "--failures-only"
    suite = ElementTree.parse(xml_path).getroot().find("testsuite")
    assert suite.get("failures") == "1" and suite.get("tests") == str(len(report["cases"]))
    failure = next(case for case in suite.iter("testcase") if case.find("failure") is not None)
    assert (failure.get("classname"), failure.get("name")) == ("refnorm.sparsemax", "K3")
    assert main(["golden", "compare", str(tmp_path / "nothing"), "--against", str(golden_set)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_the_command_uses_the_shipped_set_by_default(tmp_path, capsys):
    results = write_results(golden.SHIPPED, tmp_path / "r", ops=("sparsemax",))
    assert main(["golden", "compare", str(results), "--quiet", "--op", "sparsemax"]) == 0
    assert f"against golden set {golden.SHIPPED}" in capsys.readouterr().out


def test_a_directory_that_cannot_be_listed_is_a_failure(golden_set, tmp_path, monkeypatch):
    """os.walk skips what it cannot list unless asked; compare asks, and fails."""
    import refnorm.oracle.compare as compare_module

    results = write_results(golden_set, tmp_path / "r")
    (results / "locked").mkdir()
    real_walk = os.walk

    def walk(top, onerror=None, followlinks=False):
        for root, directories, names in real_walk(top, onerror=onerror, followlinks=followlinks):
            if "locked" in directories:
                directories.remove("locked")
                onerror(PermissionError(13, "Permission denied", str(Path(root) / "locked")))
            yield root, directories, names

    monkeypatch.setattr(compare_module.os, "walk", walk)
    report = compare_results(results, golden_set)
    assert "locked/: cannot be read (Permission denied)" in report.problems and not report.passed
