"""The kernel-style harness (``sn_kernel_harness.py``) judged by ``refnorm golden compare``, as a
C++ project's CI would run the two: the harness writes results files, the command judges them by
its exit status and its JSON report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from refnorm.oracle.golden import SHIPPED, load_manifest

HARNESS = Path(__file__).with_name("sn_kernel_harness.py")
COMPARE = [sys.executable, "-m", "refnorm", "golden", "compare"]
SELECTION = ["--op", "switch_norm", "--exclude", "*gn*", "--quiet"]


def run_harness(results: Path, *options: str) -> None:
    subprocess.run([sys.executable, str(HARNESS), str(SHIPPED), str(results), *options], check=True, capture_output=True, text=True)


def judge(results: Path) -> tuple[int, dict]:
    """``refnorm golden compare`` on ``results``: exit status and the JSON report (on standard output)."""
    done = subprocess.run([*COMPARE, str(results), *SELECTION, "--json", "-"], capture_output=True, text=True)
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_correct_kernel_agrees_with_every_selected_case(tmp_path, dtype):
    run_harness(tmp_path / "results", "--dtype", dtype)
    status, report = judge(tmp_path / "results")
    assert status == 0, report["summary"]
    held = [e for e in load_manifest(SHIPPED)["cases"] if e["op"] == "switch_norm" and e["kind"] != "error" and "gn" not in e["params"]["normalizers"]]
    assert report["passed"] and report["counts"]["passed"] == len(held) > 30
    assert all(a["passed"] and a["worst_index"] is not None for case in report["cases"] for a in case["arrays"])
    compared = {a["array"] for case in report["cases"] for a in case["arrays"]}
    assert {"output.y", "grad.x", "intermediate.var_bn", "intermediate.new_running_mean"} <= compared


def test_the_planted_bn_variance_bug_is_located_at_var_bn(tmp_path):
    run_harness(tmp_path / "results", "--plant-bug")
    status, report = judge(tmp_path / "results")
    assert status == 1 and not report["passed"]
    entries = {e["id"]: e for e in load_manifest(SHIPPED)["cases"]}
    failed = [case for case in report["cases"] if case["status"] == "failed"]
    assert len(failed) > 10
    for case in failed:
        params = entries[case["id"]]["params"]
        assert params.get("training", True) and "bn" in params["normalizers"], f"{case['id']}: the bug lives in BN's batch statistics"
        arrays = {a["array"]: a for a in case["arrays"]}
        assert not arrays["intermediate.var_bn"]["passed"]
        assert all(arrays[k]["passed"] for k in ("intermediate.mean_bn", "intermediate.mean", "grad.beta") if k in arrays), case["id"]
        assert all(arrays[f"intermediate.var_{k}"]["passed"] for k in ("in", "ln") if f"intermediate.var_{k}" in arrays), case["id"]
        N, C, *spatial = params["shape"]
        factor = N * math.prod(spatial) / (N * math.prod(spatial) - 1)
        worst = arrays["intermediate.var_bn"]
        assert worst["actual"] / worst["expected"] == pytest.approx(factor, rel=1e-12), "off by exactly N*M / (N*M - 1)"
    assert all(case["status"] == "passed" for case in report["cases"] if not entries[case["id"]]["params"].get("training", True)), \
        "evaluation uses the running statistics: the bug cannot show"


def test_missing_results_fail_and_unusable_input_exits_2(tmp_path):
    run_harness(tmp_path / "results")
    next((tmp_path / "results" / "switch_norm").glob("*.npz")).unlink()
    status, report = judge(tmp_path / "results")
    assert status == 1 and report["counts"]["failed"] == 1
    (missing,) = [case for case in report["cases"] if case["status"] == "failed"]
    assert missing["missing"] == [f"{missing['id']}.npz"]
    done = subprocess.run([*COMPARE, str(tmp_path / "no-such-directory")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "does not exist" in done.stderr and "Traceback" not in done.stderr
