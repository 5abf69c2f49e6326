"""The benchmark scripts still run (a tiny size; their timings are not checked)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sparsestmax_speed_benchmark_runs_and_reports_a_ratio(capsys):
    assert load("sparsestmax_speed").main(["--vectors", "300", "--repeat", "1"]) == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "x   (target >= 100 x)" in printed
