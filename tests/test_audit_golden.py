"""Audit, classes 3 and 5 (compare fooled or crashing): a results file whose member is not NPY.

NumPy's ``np.load`` hands back the raw bytes of an ``.npz`` member that does not start with the NPY
magic; ``refnorm golden compare`` then raised ``AttributeError: 'bytes' object has no attribute
'dtype'`` (a traceback from the command). Such a file is now unreadable, a failed case with the reason.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from refnorm.cli import main
from refnorm.oracle import golden
from refnorm.oracle.compare import compare_results

SMALL = dict(kinds=("sample",), ops=("sparsemax",))


@pytest.fixture(scope="module")
def golden_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audit-golden") / "set"
    golden.generate(out, **SMALL)
    return out


def _results_with(golden_set: Path, tmp_path: Path, member: bytes) -> tuple[Path, str]:
    entry = golden.load_manifest(golden_set)["cases"][0]
    results = tmp_path / "results"
    (results / entry["file"]).parent.mkdir(parents=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("output.y.npy", member)
    (results / entry["file"]).write_bytes(buffer.getvalue())
    return results, entry["id"]


@pytest.mark.parametrize("member", [b"", b"not an npy file", b"\x93NUMPX"], ids=["empty", "text", "near-magic"])
def test_a_results_member_that_is_not_npy_is_a_failed_case_not_a_crash(golden_set: Path, tmp_path: Path, member: bytes):
    results, case_id = _results_with(golden_set, tmp_path, member)
    report = compare_results(results, golden_set, cases=[case_id])
    entry = next(e for e in report.cases if e.id == case_id)
    assert entry.failed and not report.passed
    assert any("not an NPY array" in p for p in entry.problems)


def test_the_command_reports_it_without_a_traceback(golden_set: Path, tmp_path: Path, capsys):
    results, case_id = _results_with(golden_set, tmp_path, b"")
    code = main(["golden", "compare", str(results), "--against", str(golden_set), "--case", case_id, "--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.out + captured.err
    assert "not an NPY array" in captured.out
