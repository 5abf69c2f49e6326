"""Audit, class 1 (data loss): a report destination that destroys what the command reads.

``refnorm golden verify DIR --json DIR/manifest.json`` overwrote the manifest of the set it had
just verified (the set no longer verifies, and its hashes are gone); ``--json`` and ``--junit-xml``
naming one file kept only the second report. Both are refused as usage errors (exit 2) before
anything is read or written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refnorm.cli import main
from refnorm.oracle import golden

from small_golden import SMALL, pristine, victim  # noqa: F401 - fixtures

CLI_SMALL = ["--kind", "sample", "--op", "sparsemax"]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def run(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(arguments)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.err


@pytest.mark.parametrize("option", ["--json", "--junit-xml"])
@pytest.mark.parametrize("inside", ["manifest.json", "manifest.json.sha256", "sparsemax/new-report.json"])
def test_verify_refuses_a_report_inside_the_set_it_verifies(victim: Path, capsys, option: str, inside: str):
    before = snapshot(victim)
    code, err = run(["golden", "verify", str(victim), *CLI_SMALL, "--quiet", option, str(victim / inside)], capsys)
    assert code == 2 and "inside" in err and "write the report elsewhere" in err
    assert snapshot(victim) == before
    assert golden.verify(victim, **SMALL).passed


@pytest.fixture
def shipped(victim: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy standing in for the package's set (the command reads ``golden.SHIPPED`` when it runs),
    so that a regression destroys the copy, not the package."""
    monkeypatch.setattr(golden, "SHIPPED", victim)
    return victim


def test_verify_refuses_a_report_inside_the_shipped_set(shipped: Path, capsys):
    before = snapshot(shipped)
    code, err = run(["golden", "verify", "--shipped", "--quiet", "--json", str(shipped / "report.json")], capsys)
    assert code == 2 and "inside" in err
    assert snapshot(shipped) == before


@pytest.mark.parametrize("target", ["results", "against"])
def test_compare_refuses_a_report_inside_the_results_or_the_golden_set(victim: Path, tmp_path: Path, capsys, target: str):
    results = tmp_path / "results"
    shutil.copytree(victim, results)
    before = snapshot(victim), snapshot(results)
    destination = (results if target == "results" else victim) / "manifest.json"
    code, err = run(["golden", "compare", str(results), "--against", str(victim), "--quiet", "--json", str(destination)], capsys)
    assert code == 2 and "inside" in err
    assert (snapshot(victim), snapshot(results)) == before


def test_compare_refuses_a_report_inside_the_shipped_set_it_compares_against(shipped: Path, tmp_path: Path, capsys):
    results = tmp_path / "results"
    shutil.copytree(shipped, results)
    before = snapshot(shipped)
    code, err = run(["golden", "compare", str(results), "--quiet", "--junit-xml", str(shipped / "manifest.json")], capsys)
    assert code == 2 and "inside" in err
    assert snapshot(shipped) == before


def test_json_and_junit_xml_may_not_name_the_same_file(victim: Path, tmp_path: Path, capsys):
    report = tmp_path / "report"
    code, err = run(["golden", "verify", str(victim), *CLI_SMALL, "--quiet", "--json", str(report), "--junit-xml", str(tmp_path / "." / "report")], capsys)
    assert code == 2 and "same file" in err
    assert not report.exists()


def test_a_report_beside_the_set_is_written(victim: Path, tmp_path: Path, capsys):
    """The control: a destination outside the set is written as before."""
    code, _ = run(["golden", "verify", str(victim), *CLI_SMALL, "--quiet", "--json", str(tmp_path / "report.json")], capsys)
    assert code == 0 and (tmp_path / "report.json").stat().st_size > 0
