"""The benchmark scripts still run (tiny sizes; their timings are not checked)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def benchmarks_package(monkeypatch):
    """``python -m benchmarks`` as the README runs it from the repository root."""
    monkeypatch.syspath_prepend(str(ROOT))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module("benchmarks.__main__")


def test_sparsestmax_speed_benchmark_runs_and_reports_a_ratio(capsys):
    assert load("sparsestmax_speed").main(["--vectors", "300", "--repeat", "1"]) == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "x   (target >= 100 x)" in printed


def test_layer_benchmark_runs_every_op_and_dtype_on_a_tiny_shape(benchmarks_package, capsys):
    assert benchmarks_package.main(["--shapes", "2x3x4x4", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith(("SN ", "SSN ", "EN "))]
    assert len(rows) == 3 * 2, printed
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "no ratios: PyTorch is not installed" in printed
    else:
        assert "no ratios" not in printed


def test_gpu_layer_benchmark_says_why_it_does_not_run_without_a_gpu(benchmarks_package, capsys):
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present: the GPU benchmark would run for real")
    assert benchmarks_package.main(["layers", "--device", "gpu"]) == 0
    assert capsys.readouterr().out.startswith("no GPU benchmark: ")


def test_scaling_and_pass_count_benchmarks_run(benchmarks_package, capsys):
    assert benchmarks_package.main(["scaling", "--largest", "1e4", "--repeats", "1"]) == 0
    assert benchmarks_package.main(["passes", "--shape", "2x3x4x4"]) == 0
    printed = capsys.readouterr().out
    assert "ns / element" in printed and "forward" in printed and "backward" in printed


def test_dask_benchmark_runs_on_a_cluster_and_agrees_with_numpy(benchmarks_package, capsys):
    """The larger-than-memory benchmark at a tiny size: a two-process LocalCluster, results checked
    against NumPy on the materialised input (``--check``), memory and spill reported."""
    pytest.importorskip("distributed", reason="Dask's distributed is not installed (pip install 'refnorm[dask]')")
    arguments = ["dask", "--size", "24MiB", "--shape", "8,16,16", "--chunk-rows", "256", "--numpy-size", "2MiB", "--repeats", "1",
                 "--memory-limit", "512MiB", "--check"]  # fmt: skip
    assert benchmarks_package.main(arguments) == 0
    printed = capsys.readouterr().out
    for line in ("wall time", "time per element", "peak resident memory", "peak spilled to disk", "every result finite     True",
                 "against NumPy in memory max rel error"):  # fmt: skip
        assert line in printed, printed


def test_jax_benchmark_runs_every_op_eagerly_and_under_jit(benchmarks_package, capsys):
    pytest.importorskip("jax", reason="JAX is not installed (pip install 'refnorm[jax]')")
    assert benchmarks_package.main(["jax", "--shape", "2x4x3x3", "--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("SN ", "SSN ", "EN "))]
    assert len(rows) == 3, rows
