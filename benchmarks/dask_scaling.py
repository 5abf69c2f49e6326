"""SN forward + backward in float32 on an input larger than this machine's memory, on a Dask cluster.

    python -m benchmarks dask [--size 32GiB] [--chunk-rows 64] [--workers 2] [--memory-limit 2.3GiB]

The input ``x`` of shape ``(N, C, H, W)`` (``--shape C,H,W``, default ResNet-50's first stage
``64,56,56``; ``N`` from ``--size``) is generated chunk by chunk with ``dask.array.random``, in
chunks of ``--chunk-rows`` samples along the batch: no process ever holds it. The upstream
gradient is that of the loss ``sum(w * y)`` for a random weight ``w`` of shape ``(1, C, H, W)``
shared by every sample (a broadcast: a second random tensor of ``x``'s size would double what is
held between the passes, and change nothing else). Results are reduced on the workers: per-channel
sums of ``y`` and ``dx``, ``dgamma``, ``dbeta``, the logit gradients and the new running
statistics, with the value checks of the call decided in the same compute
(:func:`refnorm.deferred_checks`).

SN pools the BN statistics over the whole batch, so the forward cannot produce a row before it has
seen every row, and its cache keeps the centred input for the backward: between the passes that
much data is held, and the workers' memory limit (``--memory-limit`` each; Dask spills at 70 % of
it) sends it to disk (``--spill-dir``, default a new temporary directory, removed afterwards).
Peak resident memory therefore follows the limit and the chunk size, not the input size.

Reported: the wall time of the compute, the time per element against in-memory NumPy at a size
that fits (``--numpy-size``), peak resident memory (RSS of this process and every worker process,
sampled every 0.2 s, psutil or ``/proc``) against the machine's memory and the chunk size, and
the most data spilled to disk at once. ``--check`` also computes the same reductions with NumPy on
the materialised input and compares (only for sizes that fit).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

import refnorm

UNITS = {"": 1, "B": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_size(text: str) -> int:
    """``"32GiB"``, ``"500MB"``, ``"1e9"`` as a number of bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 32GiB, 500MB or 1e9")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def machine_memory() -> int:
    """Physical memory of this machine in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _rss(pid: int) -> int:
    """Resident memory of a process in bytes (psutil when installed, else ``/proc/PID/statm``)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        children: list[int] = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if parent == pid:
                    children += [int(entry.name), *_descendants(int(entry.name))]
        return children


def _directory_bytes(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                continue
    return total


class MemoryMonitor:
    """Samples the RSS of this process and all its descendants (the cluster's workers and nannies),
    and the size of the spill directory, in a background thread; keeps the peaks."""

    def __init__(self, spill_dir: Path, interval: float = 0.2) -> None:
        self.spill_dir, self.interval = spill_dir, interval
        self.peak_total = self.peak_process = self.peak_spilled = 0
        self.peak_worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        own = os.getpid()
        sizes = {pid: _rss(pid) for pid in [own, *_descendants(own)] if Path(f"/proc/{pid}").exists()}
        self.peak_total = max(self.peak_total, sum(sizes.values()))
        self.peak_process = max(self.peak_process, sizes.get(own, 0))
        self.peak_worker = max([self.peak_worker, *(size for pid, size in sizes.items() if pid != own)])

    def _run(self) -> None:
        ticks = 0
        while not self._stop.is_set():
            try:
                self._sample()
                if ticks % 5 == 0:
                    self.peak_spilled = max(self.peak_spilled, _directory_bytes(self.spill_dir))
            except (OSError, ProcessLookupError):
                pass  # a process ended between listing and reading it
            except Exception as error:  # noqa: BLE001 - psutil.NoSuchProcess and the like
                if type(error).__name__ not in ("NoSuchProcess", "ZombieProcess", "AccessDenied"):
                    raise
            ticks += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def sn_reductions(x, dy, xp):
    """SN forward (training, running statistics) and backward of ``dy``, reduced to ``(C,)`` and ``(K,)`` arrays."""
    C = x.shape[1]
    gamma = xp.asarray(np.linspace(0.5, 1.5, C, dtype=x.dtype))
    beta = xp.asarray(np.linspace(-0.5, 0.5, C, dtype=x.dtype))
    mean_logits, var_logits = xp.asarray(np.array([0.2, -0.1, 0.3], x.dtype)), xp.asarray(np.array([-0.3, 0.1, 0.2], x.dtype))
    with refnorm.deferred_checks() as checks:
        y, cache, running = refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=refnorm.initial_running_stats(C, x))
        grads = refnorm.switch_norm_backward(dy, cache)
    results = {
        "sum y": xp.sum(y, axis=(0, 2, 3)), "sum dx": xp.sum(grads.dx, axis=(0, 2, 3)), "dgamma": grads.dgamma, "dbeta": grads.dbeta,
        "dmean_logits": grads.dmean_logits, "dvar_logits": grads.dvar_logits, "running mean": running.mean, "running var": running.var,
    }  # fmt: skip
    return results, checks


def numpy_time_per_element(shape: tuple[int, ...], dtype: str, repeats: int) -> float:
    """Best time of SN forward + backward on an in-memory NumPy input of ``shape``, per element, in seconds."""
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.dtype(dtype))
    dy = np.broadcast_to(rng.standard_normal((1, *shape[1:]), dtype=np.dtype(dtype)), shape)
    sn_reductions(x, dy, xp)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        sn_reductions(x, dy, xp)
        best = min(best, time.perf_counter() - started)
    return best / x.size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks dask", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("32GiB"), help="input size (default 32GiB)")
    parser.add_argument("--shape", default="64,56,56", help="C,H,W of every sample (default 64,56,56)")
    parser.add_argument("--chunk-rows", type=int, default=64, help="samples per chunk (default 64: 49 MiB for 64,56,56 float32)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster (default 2)")
    parser.add_argument("--memory-limit", type=parse_size, default=None, help="memory limit per worker (default: 10 %% of the machine's memory)")
    parser.add_argument("--numpy-size", type=parse_size, default=parse_size("512MiB"), help="in-memory NumPy reference size (default 512MiB)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the NumPy reference (best is kept)")
    parser.add_argument("--spill-dir", type=Path, default=None, help="where workers spill (default: a new temporary directory)")
    parser.add_argument("--check", action="store_true", help="compare the reductions with NumPy on the materialised input")
    args = parser.parse_args(argv)

    try:
        import dask
        import dask.array as da
        import distributed
    except ImportError as error:
        print(f"no Dask benchmark: {error.name} is not installed (pip install 'refnorm[dask]')")
        return 0

    C, H, W = (int(s) for s in args.shape.split(","))
    dtype = np.dtype(args.dtype)
    row_bytes = C * H * W * dtype.itemsize
    N = max(args.chunk_rows, args.size // row_bytes)
    shape = (N, C, H, W)
    chunk_bytes = args.chunk_rows * row_bytes
    memory = machine_memory()
    memory_limit = args.memory_limit or int(0.1 * memory)
    numpy_rows = max(1, args.numpy_size // row_bytes)

    print(f"SN forward + backward, {args.dtype}, training, default options; Dask {dask.__version__}, distributed {distributed.__version__}, "
          f"NumPy {np.__version__}")  # fmt: skip
    print(f"input {shape}: {gib(N * row_bytes)} ({N * row_bytes / memory:.2f} x this machine's {gib(memory)} of memory), "
          f"{math.ceil(N / args.chunk_rows)} chunks of {args.chunk_rows} samples ({chunk_bytes / 2**20:.0f} MiB)")  # fmt: skip
    numpy_seconds = numpy_time_per_element((numpy_rows, C, H, W), args.dtype, args.repeats)
    print(f"NumPy in memory, {(numpy_rows, C, H, W)} ({gib(numpy_rows * row_bytes)}): {numpy_seconds * 1e9:.2f} ns / element")

    spill_dir = Path(tempfile.mkdtemp(prefix="refnorm-dask-spill-")) if args.spill_dir is None else args.spill_dir
    try:
        import array_api_compat.dask.array as xp

        x = da.random.default_rng(0).standard_normal(shape, chunks=(args.chunk_rows, C, H, W), dtype=dtype)
        weight = np.random.default_rng(1).standard_normal((1, C, H, W), dtype=dtype)
        dy = da.broadcast_to(da.from_array(weight), shape, chunks=x.chunks)
        results, checks = sn_reductions(x, dy, xp)
        with (
            warnings.catch_warnings(),
            distributed.LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=memory_limit, local_directory=str(spill_dir),
                scheduler_port=0, dashboard_address=":0", worker_dashboard_address=None, silence_logs=40,
            ) as cluster,
            distributed.Client(cluster) as client,
            MemoryMonitor(spill_dir) as monitor,
        ):  # fmt: skip
            # ~10 MiB of task definitions for hundreds of chunks (no data: x is generated on the workers)
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            started = time.perf_counter()
            computed, flags = client.compute((results, checks.conditions), sync=True)
            elapsed = time.perf_counter() - started
        checks.verify(flags)
        per_element = elapsed / math.prod(shape)
        print(f"Dask, {args.workers} worker processes x 1 thread, memory limit {gib(memory_limit)} each:")
        print(f"  wall time               {elapsed:.1f} s ({math.prod(shape) / elapsed / 1e6:.1f} M elements / s, "
              f"{N * row_bytes / elapsed / 2**30:.2f} GiB of input / s)")  # fmt: skip
        print(f"  time per element        {per_element * 1e9:.2f} ns ({per_element / numpy_seconds:.2f} x NumPy in memory)")
        print(f"  peak resident memory    {gib(monitor.peak_total)} in all ({monitor.peak_total / memory * 100:.1f} % of the machine's memory, "
              f"{monitor.peak_total / chunk_bytes:.0f} chunks; {monitor.peak_total / (N * row_bytes) * 100:.1f} % of the input); "
              f"this process {gib(monitor.peak_process)}, largest worker {gib(monitor.peak_worker)}")  # fmt: skip
        print(f"  peak spilled to disk    {gib(monitor.peak_spilled)}")
        expected_dbeta = N * weight.astype(np.float64).sum(axis=(0, 2, 3))
        dbeta_error = float(np.max(np.abs(computed["dbeta"] - expected_dbeta) / np.maximum(np.abs(expected_dbeta), 1.0)))
        finite = all(bool(np.all(np.isfinite(value))) for value in computed.values())
        print(f"  every result finite     {finite}; dbeta against N * sum(w) computed apart: max rel error {dbeta_error:.1e}")
        if args.check:
            import array_api_compat.numpy as numpy_xp

            expected, _ = sn_reductions(x.compute(), np.broadcast_to(weight, shape), numpy_xp)
            worst = max(float(np.max(np.abs(computed[k] - expected[k]) / np.maximum(np.abs(expected[k]), 1.0))) for k in expected)
            print(f"  against NumPy in memory max rel error {worst:.1e}")
            if worst > 1e-3 if dtype == np.float32 else worst > 1e-10:
                return 1
        return 0 if finite else 1
    finally:
        if args.spill_dir is None:
            shutil.rmtree(spill_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
