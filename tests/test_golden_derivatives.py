"""Tangents and their outputs in golden files (schema version 2), version-1 sets still read, and the
conformance kit's and ``refnorm golden compare``'s checks of an implementation's JVP and second order.

A version-2 case file holds ``tangent.*`` (one seeded tangent per differentiable argument),
``jvp.*`` (the outputs' tangents) and, for ops with a second order, ``hvp.*``; a version-1 set,
written by refnorm before these existed (``generate(schema_version=1)`` writes the same bytes), is
verified as version 1 wrote it. Where a source has no values for a derivative the adapter gives,
the kit fails closed.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from refnorm.oracle import golden
from refnorm.oracle.catalog import OPS, cases
from refnorm.oracle.compare import CompareError, compare_results
from refnorm.oracle.evaluation import draw_tangents
from refnorm.testing import Adapter, ConformanceError, check_conformance, refnorm_adapter

SMALL = dict(kinds=("sample", "error"), ops=("sparsemax", "switch_norm", "exemplar_norm"))


@pytest.fixture(scope="module")
def version2(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("golden") / "v2"
    golden.generate(directory, **SMALL)
    return directory


@pytest.fixture(scope="module")
def version1(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("golden") / "v1"
    golden.generate(directory, **SMALL, schema_version=1)
    return directory


def _entry(directory: Path, case_id: str) -> dict:
    return next(e for e in golden.load_manifest(directory)["cases"] if e["id"] == case_id)


SN_SAMPLE = cases(kind="sample", op="switch_norm")[0]
EN_SAMPLE = cases(kind="sample", op="exemplar_norm")[0]


# --------------------------------------------------------------------------------------------
# What a version-2 file holds
# --------------------------------------------------------------------------------------------


def test_a_version_2_case_holds_one_seeded_tangent_per_argument_the_jvp_and_the_second_order(version2):
    case = golden.read_case(version2, SN_SAMPLE.id)
    arguments = OPS["switch_norm"].arguments
    assert set(case.arrays["tangent"]) == set(arguments) == set(case.arrays["hvp"])
    assert list(case.arrays["jvp"]) == ["y"] and case.arrays["jvp"]["y"].shape == case.arrays["output"]["y"].shape
    drawn = draw_tangents(SN_SAMPLE.seed, {name: SN_SAMPLE.inputs()[name].shape for name in arguments})
    for name in arguments:
        np.testing.assert_array_equal(case.arrays["tangent"][name], drawn[name])


def test_an_op_without_a_second_order_has_tangents_and_a_jvp_but_no_hvp(version2):
    case = golden.read_case(version2, EN_SAMPLE.id)
    assert case.arrays["tangent"] and case.arrays["jvp"] and not case.arrays["hvp"]


def test_the_manifest_of_version_2_names_the_new_tolerance_directions_and_rule(version2):
    manifest = golden.load_manifest(version2)
    assert manifest["schema_version"] == 2
    assert set(manifest["default_tolerances"]["float32"]) == {"forward", "backward", "jvp", "hvp"}
    assert "jvp = jvp.*, hvp = hvp.*" in manifest["comparison"]
    assert set(_entry(version2, SN_SAMPLE.id)["tolerances"]["float64"]) == {"forward", "backward", "jvp", "hvp"}


def test_a_version_2_set_verifies(version2):
    report = golden.verify(version2, **SMALL)
    assert report.passed, report.failures


def _edited(directory: Path, tmp_path: Path, case_id: str, key: str, change) -> Path:
    """A copy of the set whose array ``key`` of ``case_id`` is changed and every hash resealed."""
    import shutil

    target = tmp_path / "edited"
    shutil.copytree(directory, target)
    entry = _entry(target, case_id)
    arrays = golden.load_arrays(target / entry["file"])
    arrays[key] = change(arrays[key])
    data = golden.npz_bytes(arrays)
    manifest = json.loads((target / golden.MANIFEST).read_bytes())
    stored = next(e for e in manifest["cases"] if e["id"] == case_id)
    (target / stored["file"]).write_bytes(data)
    stored["file_sha256"] = hashlib.sha256(data).hexdigest()
    stored["arrays"][key]["sha256"] = golden.array_sha256(arrays[key])
    text = golden.manifest_bytes(manifest)
    (target / golden.MANIFEST).write_bytes(text)
    (target / golden.MANIFEST_HASH).write_text(f"{hashlib.sha256(text).hexdigest()}  {golden.MANIFEST}\n")
    return target


@pytest.mark.parametrize("key", ["jvp.y", "hvp.x", "hvp.var_logits"])
def test_verify_recomputes_the_jvp_and_the_second_order(version2, tmp_path, key):
    edited = _edited(version2, tmp_path, SN_SAMPLE.id, key, lambda a: a * (1 + 1e-6))
    report = golden.verify(edited, **SMALL)
    assert not report.passed and any(f"array {key} differs from the recomputed value" in f for f in report.failures), report.failures


def test_a_tangent_that_is_not_the_seeded_draw_is_rejected(version2, tmp_path):
    edited = _edited(version2, tmp_path, SN_SAMPLE.id, "tangent.gamma", lambda a: a + 1.0)
    with pytest.raises(golden.GoldenError, match="tangent.gamma is not the case's seeded draw"):
        golden.read_case(edited, SN_SAMPLE.id)
    assert any("tangent.gamma is not the case's seeded draw" in f for f in golden.verify(edited, **SMALL).failures)


# --------------------------------------------------------------------------------------------
# Version 1, still readable
# --------------------------------------------------------------------------------------------


def test_a_version_1_set_holds_what_version_1_wrote(version1):
    manifest = golden.load_manifest(version1)
    assert manifest["schema_version"] == 1
    assert set(manifest["default_tolerances"]["float64"]) == {"forward", "backward"}
    assert manifest["comparison"] == golden.COMPARISON_RULES[1]
    for entry in manifest["cases"]:
        assert {key.split(".")[0] for key in entry["arrays"]} <= {"input", "output", "intermediate", "upstream", "grad"}
        if entry["tolerances"] is not None:
            assert set(entry["tolerances"]["float32"]) == {"forward", "backward"}
            assert not any(note.split(":")[0].endswith(("jvp", "hvp")) for note in entry["tolerance_notes"])


def test_a_version_1_set_verifies(version1):
    report = golden.verify(version1, **SMALL)
    assert report.passed, report.failures


def test_a_version_1_set_is_read_by_the_kit_for_forward_and_backward(version1):
    adapter = refnorm_adapter("switch_norm")
    first_order = Adapter(adapter.forward, adapter.backward, name="first order")
    report = check_conformance(first_order, SN_SAMPLE, source=version1)
    assert {c.array.split(".")[0] for c in report.comparisons} == {"output", "intermediate", "grad"}


@pytest.mark.parametrize("derivative", ["jvp", "hvp"])
def test_a_version_1_set_fails_an_adapter_that_gives_a_derivative_it_has_no_values_for(version1, derivative):
    adapter = refnorm_adapter("switch_norm")
    only = Adapter(adapter.forward, **{derivative: getattr(adapter, derivative)}, name="derivative")
    with pytest.raises(ConformanceError, match=f"derivative.{derivative} was given, but refnorm has no {derivative} values for this case: the golden set has schema version 1"):
        check_conformance(only, SN_SAMPLE, source=version1)


def test_a_version_2_set_claiming_version_1_fails(version2, tmp_path):
    import shutil

    target = tmp_path / "claims-1"
    shutil.copytree(version2, target)
    manifest = json.loads((target / golden.MANIFEST).read_bytes())
    manifest["schema_version"] = 1
    text = golden.manifest_bytes(manifest)
    (target / golden.MANIFEST).write_bytes(text)
    (target / golden.MANIFEST_HASH).write_text(f"{hashlib.sha256(text).hexdigest()}  {golden.MANIFEST}\n")
    report = golden.verify(target, **SMALL)
    assert not report.passed
    assert any("array tangent.x is not an array of the case" in f for f in report.failures)


def test_generate_refuses_a_schema_version_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match=r"schema_version must be one of \(1, 2\), got 3"):
        golden.generate(tmp_path / "set", **SMALL, schema_version=3)


# --------------------------------------------------------------------------------------------
# The kit checks an implementation's JVP and second order
# --------------------------------------------------------------------------------------------


def test_refnorm_passes_its_own_jvp_and_hvp_from_the_golden_files(version2):
    for dtype in ("float64", "float32"):
        report = check_conformance(refnorm_adapter("switch_norm", dtype=dtype), SN_SAMPLE, source=version2)
        assert {"jvp.y", "hvp.x", "hvp.mean_logits"} <= {c.array for c in report.comparisons}


def test_a_wrong_jvp_is_caught_and_named():
    adapter = refnorm_adapter("switch_norm")
    wrong = Adapter(adapter.forward, jvp=lambda i, p, t: {"y": 1.001 * adapter.jvp(i, p, t)["y"]}, name="wrong-jvp")
    with pytest.raises(ConformanceError) as raised:
        check_conformance(wrong, SN_SAMPLE)
    assert [m.array for m in raised.value.mismatches] == ["jvp.y"]


def test_a_wrong_hvp_is_caught_and_named():
    adapter = refnorm_adapter("switch_norm")

    def hvp(inputs, params, upstream, tangents):
        second = dict(adapter.hvp(inputs, params, upstream, tangents))
        second["gamma"] = second["gamma"] + 1e-3
        return second

    with pytest.raises(ConformanceError) as raised:
        check_conformance(Adapter(adapter.forward, hvp=hvp, name="wrong-hvp"), SN_SAMPLE)
    assert [m.array for m in raised.value.mismatches] == ["hvp.gamma"]


def test_a_missing_second_order_array_is_reported():
    adapter = refnorm_adapter("switch_norm")
    partial = Adapter(adapter.forward, hvp=lambda *a: {k: v for k, v in adapter.hvp(*a).items() if k != "x"}, name="partial")
    with pytest.raises(ConformanceError) as raised:
        check_conformance(partial, SN_SAMPLE)
    assert raised.value.missing and raised.value.missing[0].startswith("hvp.x")


def test_an_hvp_for_an_op_without_a_second_order_fails_closed():
    adapter = refnorm_adapter("exemplar_norm")
    assert adapter.hvp is None
    with pytest.raises(ConformanceError, match="refnorm defines no second order for exemplar_norm"):
        check_conformance(Adapter(adapter.forward, hvp=lambda *a: {}, name="en-hvp"), EN_SAMPLE)


def test_the_adapter_refuses_a_derivative_that_is_not_callable():
    with pytest.raises(TypeError, match="Adapter.jvp must be callable or None, got int"):
        Adapter(lambda i, p: {}, jvp=3)
    with pytest.raises(TypeError, match="Adapter.hvp must be callable or None, got str"):
        Adapter(lambda i, p: {}, hvp="double backward")


# --------------------------------------------------------------------------------------------
# refnorm golden compare judges jvp.* and hvp.*
# --------------------------------------------------------------------------------------------


def _results(golden_set: Path, directory: Path, *, scale: float = 1.0, tangents: bool = False) -> Path:
    """refnorm's results for the switch_norm samples, with the jvp and hvp arrays (scaled)."""
    manifest = golden.load_manifest(golden_set)
    adapter = refnorm_adapter("switch_norm")
    for entry in manifest["cases"]:
        if entry["op"] != "switch_norm" or entry["kind"] != "sample":
            continue
        case = golden.read_case(golden_set, entry["id"], manifest)
        inputs, upstream, given = case.arrays["input"], case.arrays["upstream"], case.arrays["tangent"]
        arrays = {"output.y": np.asarray(adapter.forward(inputs, case.params)["y"])}
        arrays |= {f"grad.{k}": v for k, v in adapter.backward(inputs, case.params, upstream).items()}
        arrays |= {f"jvp.{k}": scale * v for k, v in adapter.jvp(inputs, case.params, given).items()}
        arrays |= {f"hvp.{k}": v for k, v in adapter.hvp(inputs, case.params, upstream, given).items()}
        if tangents:
            arrays |= {f"tangent.{k}": v + 1.0 for k, v in given.items()}
        path = directory / f"{entry['id']}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path.write_bytes(buffer.getvalue())
    return directory


def test_compare_judges_the_jvp_and_the_second_order(version2, tmp_path):
    right = compare_results(_results(version2, tmp_path / "right"), version2, ops=["switch_norm"], require=("output", "grad", "jvp", "hvp"))
    assert right.passed, right.summary() if hasattr(right, "summary") else right
    wrong = compare_results(_results(version2, tmp_path / "wrong", scale=1.001), version2, ops=["switch_norm"])
    assert not wrong.passed
    assert all("jvp.y" in case.message for case in wrong.cases if case.status == "failed")


def test_compare_refuses_results_from_other_tangents(version2, tmp_path):
    report = compare_results(_results(version2, tmp_path / "r", tangents=True), version2, ops=["switch_norm"])
    assert not report.passed
    assert any("tangent.x differs from the golden tangent.x" in p for case in report.cases for p in case.problems)


def test_compare_refuses_to_require_derivatives_a_version_1_set_does_not_hold(version1, tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(CompareError, match=r"--require names 'jvp', but no selected case .* holds jvp\.\* arrays \(its schema version 1 has none\)"):
        compare_results(tmp_path / "r", version1, ops=["switch_norm"], require=("output", "jvp"))
