"""Audit 2, class 4 (paths): where ``generate`` may write, and what ``compare`` does with odd files.

``refnorm golden generate --out refnorm/golden_data/x`` wrote a complete set *inside* the shipped
set: that set then held a directory its manifest does not list and no longer verified. A target
below any directory holding a golden manifest is refused before anything is written. FIFOs,
sockets and device files in a results directory are failures, never opened (a FIFO read blocks
forever).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from refnorm.oracle import golden
from refnorm.oracle.compare import compare_results

from small_golden import SMALL, pristine, victim  # noqa: F401 - fixtures



def snapshot(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))


@pytest.mark.parametrize("inside", ["new", "sparsemax/new", "sparsemax/deeper/new"])
def test_generate_refuses_a_target_inside_a_golden_set(victim: Path, inside: str):
    before = snapshot(victim)
    with pytest.raises(golden.GoldenError, match="inside the golden set"):
        golden.generate(victim / inside, **SMALL)
    assert snapshot(victim) == before
    assert golden.verify(victim, **SMALL).passed


def test_generate_refuses_a_target_inside_a_set_whose_manifest_is_damaged(victim: Path):
    (victim / golden.MANIFEST_HASH).unlink()  # still a golden set's directory: its manifest is there
    with pytest.raises(golden.GoldenError, match="inside the golden set"):
        golden.generate(victim / "new", **SMALL)
    assert not (victim / "new").exists()


def test_generate_refuses_a_target_inside_the_shipped_set():
    with pytest.raises(golden.GoldenError, match="inside the golden set"):
        golden.generate(golden.SHIPPED / "new", **SMALL)
    assert not (golden.SHIPPED / "new").exists()


def test_generate_beside_a_golden_set_is_allowed(victim: Path):
    golden.generate(victim.parent / "beside", **SMALL)
    assert golden.verify(victim.parent / "beside", **SMALL).passed


def _special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
    else:
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device file needs privileges this run does not have")


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_compare_reports_a_special_file_in_the_results_without_opening_it(pristine: Path, tmp_path: Path, kind: str):
    results = tmp_path / "results"
    shutil.copytree(pristine, results)
    for name in (golden.MANIFEST, golden.MANIFEST_HASH):
        (results / name).unlink()
    path = results / "sparsemax" / "K3.npz"
    path.unlink()
    _special(path, kind)
    report = compare_results(results, pristine, ops=["sparsemax"], kinds=["sample"])
    assert not report.passed
    assert any("sparsemax/K3.npz: not a regular file" in problem for problem in report.problems)
