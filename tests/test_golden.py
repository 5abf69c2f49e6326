"""Golden files: the round trip, corruption detection, determinism, atomic writes, backends, and
the set shipped with the package."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from refnorm.oracle import golden
from refnorm.oracle.catalog import cases
from refnorm.cli import main
from refnorm.oracle.evaluation import evaluate_case

SMALL = dict(kinds=("sample", "error"))
"""A quick selection for the round-trip tests: every sample case and every error case."""


@pytest.fixture(scope="module")
def sample_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A golden set generated once; tests that damage it work on a copy (:func:`copy_of`)."""
    out = tmp_path_factory.mktemp("golden") / "set"
    golden.generate(out, **SMALL)
    return out


def copy_of(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    return target


def reseal(directory: Path, case_id: str, arrays: dict[str, np.ndarray]) -> None:
    """Rewrite one case's file with ``arrays`` and update every hash so that all of them match:
    what a careless (or malicious) edit that 'fixes the hashes' looks like."""
    manifest = json.loads((directory / golden.MANIFEST).read_text())
    entry = next(e for e in manifest["cases"] if e["id"] == case_id)
    data = golden.npz_bytes(arrays)
    (directory / entry["file"]).write_bytes(data)
    entry["file_sha256"] = hashlib.sha256(data).hexdigest()
    for key, array in arrays.items():
        entry["arrays"][key]["sha256"] = golden.array_sha256(array)
    text = golden.manifest_bytes(manifest)
    (directory / golden.MANIFEST).write_bytes(text)
    (directory / golden.MANIFEST_HASH).write_text(f"{hashlib.sha256(text).hexdigest()}  {golden.MANIFEST}\n")


def test_generate_then_verify_passes(sample_set: Path):
    report = golden.verify(sample_set, **SMALL)
    assert report.passed, report.failures
    assert len(report.cases) == len(cases("sample")) + len(cases("error"))
    assert all(c.recomputed for c in report.cases)


def test_a_flipped_byte_is_detected_and_the_file_named(sample_set: Path, tmp_path: Path):
    directory = copy_of(sample_set, tmp_path)
    path = directory / "switch_norm" / "paper-train-4d.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = golden.verify(directory, **SMALL)
    assert not report.passed
    failures = "\n".join(report.failures)
    assert "switch_norm/paper-train-4d.npz" in failures
    assert all(c.passed for c in report.cases if c.id != "switch_norm/paper-train-4d")


def test_an_edited_array_with_fixed_hashes_fails_the_recomputation_naming_the_case(sample_set: Path, tmp_path: Path):
    directory = copy_of(sample_set, tmp_path)
    case_id = "switch_norm/official-eval-3d"
    arrays = golden.load_arrays(directory / golden.case_file(case_id))
    arrays["grad.gamma"] = arrays["grad.gamma"] + np.array([0.0, 1e-6, 0.0])
    reseal(directory, case_id, arrays)
    report = golden.verify(directory, **SMALL)
    assert not report.passed
    failing = [c for c in report.cases if not c.passed]
    assert [c.id for c in failing] == [case_id]
    assert any("grad.gamma differs from the recomputed value" in p for p in failing[0].problems), failing[0].problems
    assert not any("sha256" in p for p in failing[0].problems), "the hashes were fixed; only the recomputation may fail"


def test_an_edited_input_with_recomputed_outputs_is_caught_by_the_catalog_draw(sample_set: Path, tmp_path: Path):
    directory = copy_of(sample_set, tmp_path)
    case = next(c for c in cases("sample") if c.id == "switch_norm/paper-train-5d")
    evaluation = evaluate_case(case)
    inputs = dict(evaluation.inputs, x=evaluation.inputs["x"] * 1.5)
    from refnorm.oracle.evaluation import evaluate

    forged = evaluate(case.op, case.params, inputs, upstream=evaluation.upstream)
    arrays = {f"{g}.{n}": a for g, named in forged.groups().items() for n, a in named.items()}
    reseal(directory, case.id, arrays)
    report = golden.verify(directory, **SMALL)
    problems = next(c for c in report.cases if c.id == case.id).problems
    assert problems == ["input.x is not the catalog case's seeded draw"]


def test_an_edited_manifest_is_detected(sample_set: Path, tmp_path: Path):
    directory = copy_of(sample_set, tmp_path)
    path = directory / golden.MANIFEST
    path.write_text(path.read_text().replace('"seed": 0', '"seed": 1', 1))
    report = golden.verify(directory, **SMALL)
    assert not report.passed
    assert "does not match the hash in manifest.json.sha256" in report.failures[0]


def test_extra_and_missing_files_are_detected(sample_set: Path, tmp_path: Path):
    directory = copy_of(sample_set, tmp_path)
    (directory / "switch_norm" / "stray.npz").write_bytes(b"")
    (directory / "plain_norm" / "paper-train-bn.npz").unlink()
    failures = "\n".join(golden.verify(directory, **SMALL).failures)
    assert "switch_norm/stray.npz is not listed in the manifest" in failures
    assert "plain_norm/paper-train-bn (plain_norm/paper-train-bn.npz): plain_norm/paper-train-bn.npz is missing" in failures


def test_generating_twice_gives_identical_hashes_and_bytes(sample_set: Path, tmp_path: Path):
    again = tmp_path / "again"
    golden.generate(again, **SMALL)
    first = json.loads((sample_set / golden.MANIFEST).read_text())
    second = json.loads((again / golden.MANIFEST).read_text())
    assert [(c["id"], c["file_sha256"], c["arrays"]) for c in first["cases"]] == [(c["id"], c["file_sha256"], c["arrays"]) for c in second["cases"]]
    assert (sample_set / golden.MANIFEST).read_bytes() == (again / golden.MANIFEST).read_bytes()


def test_an_existing_set_is_not_overwritten_without_force(sample_set: Path, tmp_path: Path):
    directory = copy_of(sample_set, tmp_path)
    before = (directory / golden.MANIFEST).read_bytes()
    with pytest.raises(golden.GoldenError, match="refusing to overwrite"):
        golden.generate(directory, kinds=("sample",), ops=("plain_norm",))
    assert (directory / golden.MANIFEST).read_bytes() == before
    golden.generate(directory, kinds=("sample",), ops=("plain_norm",), force=True)
    manifest = golden.load_manifest(directory)
    assert {c["op"] for c in manifest["cases"]} == {"plain_norm"}
    assert not (directory / "switch_norm").exists(), "the old set is replaced, not merged"
    assert [p.name for p in tmp_path.iterdir()] == ["copy"], "no temporary directory is left behind"


def test_force_never_replaces_a_directory_that_is_not_a_golden_set(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(golden.GoldenError, match="not a golden set"):
        golden.generate(tmp_path, kinds=("sample",), force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_failed_generation_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def broken(case, **options):
        raise RuntimeError("boom")

    monkeypatch.setattr(golden, "case_entry", broken)
    with pytest.raises(RuntimeError, match="boom"):
        golden.generate(tmp_path / "set", kinds=("sample",))
    assert list(tmp_path.iterdir()) == []


def _assert_same_to_rounding(first: Path, second: Path) -> None:
    left, right = golden.load_manifest(first), golden.load_manifest(second)
    assert [c["id"] for c in left["cases"]] == [c["id"] for c in right["cases"]]
    for a, b in zip(left["cases"], right["cases"], strict=True):
        assert (a["params"], a["seed"], list(a["arrays"])) == (b["params"], b["seed"], list(b["arrays"])), a["id"]
        x, y = golden.load_arrays(first / a["file"]), golden.load_arrays(second / b["file"])
        scales = golden._rounding_scales({key: array for key, array in x.items() if not key.startswith(("input.", "upstream."))})
        for key in x:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, (a["id"], key)
            if key.startswith(("input.", "upstream.")):
                assert np.array_equal(x[key], y[key], equal_nan=True), (a["id"], key)
            else:
                ok, abs_error, _ = golden._agree(x[key], y[key], scales[key])
                assert ok, f"{a['id']} {key}: max abs error {abs_error:.3e} beyond float64 rounding"


@pytest.mark.parametrize("backend_name", ["array-api-strict", "cupy"])
def test_generation_on_another_backend_equals_numpy_to_float64_rounding(backend_name: str, tmp_path: Path):
    """Over the shipped selection: every sample and error case and reference cases of every op."""
    if backend_name == "cupy":
        cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'refnorm[gpu]' on a machine with a CUDA GPU)")
        try:
            if cupy.cuda.runtime.getDeviceCount() == 0:
                pytest.skip("CuPy is installed but no CUDA device is present")
        except Exception as error:  # noqa: BLE001 - any CUDA failure means: no usable GPU
            pytest.skip(f"CuPy cannot reach a GPU ({type(error).__name__}: {error})")
    on_numpy, other = tmp_path / "numpy", tmp_path / backend_name
    golden.generate(on_numpy, selection="shipped")
    golden.generate(other, backend=backend_name, selection="shipped")
    _assert_same_to_rounding(on_numpy, other)
    assert golden.verify(other, backend=backend_name, selection="shipped").passed


def test_the_shipped_set_verifies():
    report = golden.verify(golden.SHIPPED, selection="shipped")
    assert report.passed, report.failures


def test_regenerating_the_shipped_set_matches_the_shipped_files(tmp_path: Path):
    """Drift in refnorm's values or in the catalog shows up here. If it is intended, regenerate with
    ``refnorm golden generate --out refnorm/golden_data --force`` and commit the files."""
    regenerated = tmp_path / "regenerated"
    shipped = golden.load_manifest(golden.SHIPPED)
    assert (shipped["selection"], shipped["selection_rule"]) == ("shipped", golden.SELECTIONS["shipped"])
    golden.generate(regenerated, kinds=shipped["kinds"], ops=shipped["ops"], selection=shipped["selection"])
    _assert_same_to_rounding(golden.SHIPPED, regenerated)
    fresh = golden.load_manifest(regenerated)
    for a, b in zip(shipped["cases"], fresh["cases"], strict=True):
        assert (a["tolerances"], a["expected_error"], a["note"], a["kink"]) == (b["tolerances"], b["expected_error"], b["note"], b["kink"]), a["id"]
    assert set(shipped["ops"]) == set(cases_ops := {c.op for c in cases()}), f"the shipped set lacks ops {cases_ops - set(shipped['ops'])}"


def test_the_shipped_selection_is_every_sample_and_error_case_and_the_marked_reference_cases():
    from refnorm.oracle.catalog.switchnorm import _SHIPPED_PLAIN_NORM, _SHIPPED_SWITCH_NORM

    manifest = golden.load_manifest(golden.SHIPPED)
    held = [entry["id"] for entry in manifest["cases"]]
    assert set(manifest["kinds"]) == {"sample", "reference", "error"}
    assert held == [c.id for kind in manifest["kinds"] for op in manifest["ops"] for c in cases(kind=kind, op=op) if c.shipped]
    assert {c.id for c in cases() if c.kind != "reference"} <= set(held)
    for op in ("switch_norm", "plain_norm", "sparsemax", "sparsestmax", "sparse_switch_norm", "exemplar_norm"):
        assert any(c.ship for c in cases(kind="reference", op=op)), f"the shipped set has no {op} reference case"
    names = {c.name for c in cases(kind="reference", op="switch_norm")}, {c.name for c in cases(kind="reference", op="plain_norm")}
    assert _SHIPPED_SWITCH_NORM <= names[0] and _SHIPPED_PLAIN_NORM <= names[1], "a shipped name matches no case"


def test_generating_into_the_package_needs_the_shipped_selection(capsys: pytest.CaptureFixture[str]):
    before = (golden.SHIPPED / golden.MANIFEST).read_bytes()
    assert main(["golden", "generate", "--out", str(golden.SHIPPED), "--force", "--quiet"]) == 2
    assert "--selection shipped" in capsys.readouterr().err
    assert main(["golden", "generate", "--out", str(golden.SHIPPED), "--force", "--selection", "shipped", "--kind", "sample"]) == 2
    assert (golden.SHIPPED / golden.MANIFEST).read_bytes() == before


def test_the_shipped_set_stays_small():
    # 3.0 MB in schema version 1; version 2 adds tangent.*, jvp.* and hvp.* (3.6 MB).
    size = sum(p.stat().st_size for p in golden.SHIPPED.rglob("*") if p.is_file())
    assert size < 4e6, f"the shipped golden set is {size / 1e6:.2f} MB"


def test_golden_files_hold_no_pickles_and_load_with_plain_numpy():
    manifest = golden.load_manifest(golden.SHIPPED)
    entry = manifest["cases"][0]
    with np.load(golden.SHIPPED / entry["file"], allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(entry["arrays"])
        for key in npz.files:
            assert npz[key].dtype.name == entry["arrays"][key]["dtype"]
            assert hashlib.sha256(np.ascontiguousarray(npz[key]).tobytes()).hexdigest() == entry["arrays"][key]["sha256"]


def test_cli_round_trip_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "set"
    assert main(["golden", "generate", "--out", str(out), "--kind", "sample", "--op", "plain_norm", "--quiet"]) == 0
    assert "wrote 7 cases (7 sample)" in capsys.readouterr().out
    assert main(["golden", "generate", "--out", str(out), "--kind", "sample", "--quiet"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["golden", "verify", str(out), "--kind", "sample", "--op", "plain_norm", "--quiet"]) == 0
    assert "7 cases: 7 ok, 0 failed" in capsys.readouterr().out
    path = out / "plain_norm" / "paper-train-in.npz"
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 0xFF]))
    assert main(["golden", "verify", str(out), "--kind", "sample", "--op", "plain_norm", "--quiet"]) == 1
    printed = capsys.readouterr().out
    assert "plain_norm/paper-train-in.npz: file does not match its file_sha256" in printed
    assert main(["golden", "list", "--kind", "error", "--op", "plain_norm"]) == 0
    assert "plain_norm/unknown-normalizer" in capsys.readouterr().out
    assert main(["golden", "verify", "--quiet"]) == 2
