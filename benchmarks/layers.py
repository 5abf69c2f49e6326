"""refnorm against PyTorch autograd: forward + backward time and peak memory of SN, SSN and EN.

Run from the repository root (``python -m benchmarks --help`` lists every option)::

    python -m benchmarks                      # NumPy vs PyTorch CPU, float32 and float64
    python -m benchmarks --device gpu         # CuPy vs PyTorch CUDA, with memory bandwidth

For every op, ResNet-50 layer shape and dtype, one *step* is a training-mode forward (with
running statistics) followed by the backward of the upstream gradient ``dy``: refnorm's
hand-derived backward on one side, ``torch.autograd.grad`` through the PyTorch forward of
``benchmarks/torch_layers.py`` (the official SN and SSN code, refnorm's EN) on the other. Both
get the same inputs; the script checks that their input gradients agree before it reports.

* **time**: the best of ``--repeats`` steps after one warm-up, refnorm and PyTorch steps
  interleaved so that both see the same machine load (the best, not the median: on a shared
  machine a busy core slows PyTorch's two threads by up to 10x, and the best step is what each
  side does when it has the cores). ``ratio`` is refnorm / PyTorch (below 1: refnorm is faster).
* **peak memory**, in units of ``x.nbytes``: what the step allocates at its peak, inputs
  excluded (the cache counts: a layer holds it until its backward). refnorm on NumPy is measured
  with ``tracemalloc`` (NumPy reports its allocations to it), PyTorch CPU with the profiler's
  memory events, CuPy with a counting allocator and PyTorch CUDA with
  ``torch.cuda.max_memory_allocated``. ``bwd`` is SN's backward alone: everything live at its
  peak, the upstream gradient and the cache included.
* **bandwidth** (GPU only): the bytes a step must move, ``8 x.nbytes`` (the forward reads ``x``
  for the statistics, again to normalize, and writes ``y``; the backward reads ``dy`` and the
  saved tensor for its sums, again for ``dx``, and writes ``dx``), divided by the time, as a
  fraction of the device's peak memory bandwidth.

Without PyTorch the script prints refnorm's own figures and says why the ratios are missing;
without a GPU ``--device gpu`` says so and exits 0. Timings are figures, not tests.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

import refnorm
from refnorm.ops import exemplarnorm as en

RESNET50_SHAPES = ((8, 64, 56, 56), (8, 256, 14, 14), (32, 512, 7, 7))
"""Layer shapes of ResNet-50 (conv2, conv4 and conv5 stages) at small batch sizes."""

OPS = ("SN", "SSN", "EN")
DTYPES = ("float32", "float64")

SSN_RADIUS = 0.5
"""Mid-training (the official schedule runs from 0 to 1); with the logits below the official
SparsestMax takes two sphere steps for the means and one for the variances."""
SSN_MEAN_LOGITS = (0.3, 0.2, -0.1)
SSN_VAR_LOGITS = (0.5, 0.2, 0.0)

BYTES_MOVED_PER_STEP = 8
"""Tensors of ``x``'s size a forward + backward step must read or write (module docstring)."""


# --------------------------------------------------------------------------------------------
# Backends: where the arrays live, how to wait for the device, how to measure memory
# --------------------------------------------------------------------------------------------


@dataclass
class Backend:
    """An array library for refnorm (``xp``) paired with the PyTorch device it is compared with."""

    name: str
    xp: Any
    torch_device: str | None
    """``"cpu"`` or ``"cuda"``; ``None`` when PyTorch is not available."""
    why_no_torch: str = ""

    def asarray(self, host: np.ndarray) -> Any:
        return self.xp.asarray(host)

    def to_host(self, array: Any) -> np.ndarray:
        return refnorm._xp.to_numpy(array)

    def sync(self) -> None:
        """Wait for the device (a no-op on the CPU)."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()
        if self.torch_device == "cuda":
            import torch

            torch.cuda.synchronize()

    def peak_bytes(self, step: Callable[[], object]) -> int:
        """Bytes ``step`` allocates at its peak with this backend's array library."""
        if self.name == "numpy":
            return tracemalloc_peak(step)
        return _cupy_peak(self.xp, step)


def tracemalloc_peak(step: Callable[[], object]) -> int:
    """Bytes NumPy allocates at the peak of ``step()``, above what was allocated before it."""
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        return tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()


def _cupy_peak(cupy: Any, step: Callable[[], object]) -> int:
    """Peak bytes in use in CuPy's memory pool during ``step`` (sampled after every allocation)."""
    pool = cupy.get_default_memory_pool()
    baseline = pool.used_bytes()
    peak = baseline

    def counting_malloc(size: int) -> Any:
        nonlocal peak
        memory = pool.malloc(size)
        peak = max(peak, pool.used_bytes())
        return memory

    cupy.cuda.set_allocator(counting_malloc)
    try:
        step()
        cupy.cuda.get_current_stream().synchronize()
    finally:
        cupy.cuda.set_allocator(pool.malloc)
    return peak - baseline


def _torch_peak(device: str, step: Callable[[], object]) -> int:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - baseline
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    in_use = peak = 0
    for event in events:
        in_use += event.nbytes()
        peak = max(peak, in_use)
    return peak


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """The profiler's C++ side logs two lines to file descriptor 2 on every start and stop."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w", encoding="utf-8") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_backend() -> Backend:
    try:
        import torch
    except ImportError as error:
        return Backend("numpy", np, None, f"PyTorch is not installed ({error}); pip install torch to get the ratios")
    return Backend("numpy", np, "cpu")


def gpu_backend() -> tuple[Backend | None, str]:
    """CuPy and PyTorch CUDA, or ``None`` and the reason there is no GPU run."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "CuPy finds no CUDA device"
    except Exception as error:  # noqa: BLE001 - any failure means: no GPU run here
        return None, f"CuPy is not usable here ({type(error).__name__}: {error}); pip install -e '.[gpu]' on a machine with a CUDA GPU"
    try:
        import torch

        if not torch.cuda.is_available():
            return Backend("cupy", cupy, None, "PyTorch has no CUDA device here (a CPU-only wheel?)"), ""
    except ImportError as error:
        return Backend("cupy", cupy, None, f"PyTorch is not installed ({error})"), ""
    return Backend("cupy", cupy, "cuda"), ""


CUDA_MEMORY_CLOCK_RATE = 36
"""``cudaDevAttrMemoryClockRate`` (kHz) in CUDA's ``cudaDeviceAttr`` enum (``cudaDeviceProp.memoryClockRate``
is gone in CUDA 13; the attribute is the supported way)."""
CUDA_GLOBAL_MEMORY_BUS_WIDTH = 37
"""``cudaDevAttrGlobalMemoryBusWidth`` (bits)."""


def peak_bandwidth_bytes_per_s(cupy: Any) -> float | None:
    """The device's theoretical memory bandwidth, ``2 x memory clock x bus width`` (DDR), if CUDA reports it."""
    runtime = cupy.cuda.runtime
    device = cupy.cuda.Device().id
    try:
        clock_khz = runtime.deviceGetAttribute(getattr(runtime, "cudaDevAttrMemoryClockRate", CUDA_MEMORY_CLOCK_RATE), device)
        bus_bits = runtime.deviceGetAttribute(getattr(runtime, "cudaDevAttrGlobalMemoryBusWidth", CUDA_GLOBAL_MEMORY_BUS_WIDTH), device)
    except Exception:  # noqa: BLE001 - a CuPy or CUDA that does not answer: no bandwidth figure
        return None
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8.0


# --------------------------------------------------------------------------------------------
# One step per op and side
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    op: str
    shape: tuple[int, ...]
    dtype: str


def _host_inputs(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    C = case.shape[1]
    dtype = np.dtype(case.dtype)
    host = {
        "x": rng.standard_normal(case.shape).astype(dtype),
        "dy": rng.standard_normal(case.shape).astype(dtype),
        "gamma": (1.0 + 0.1 * rng.standard_normal(C)).astype(dtype),
        "beta": (0.1 * rng.standard_normal(C)).astype(dtype),
    }
    if case.op == "SSN":
        host["mean_logits"] = np.asarray(SSN_MEAN_LOGITS, dtype)
        host["var_logits"] = np.asarray(SSN_VAR_LOGITS, dtype)
    else:
        host["mean_logits"] = (1.0 + 0.1 * rng.standard_normal(3)).astype(dtype)
        host["var_logits"] = (1.0 + 0.1 * rng.standard_normal(3)).astype(dtype)
    host["conv_weight"] = (0.5 * rng.standard_normal(3)).astype(dtype)
    host["conv_bias"] = np.asarray(1.0, dtype)
    host["temperature"] = np.asarray(1.0, dtype)
    return host


def refnorm_step(case: Case, host: dict[str, np.ndarray], backend: Backend) -> Callable[[], Any]:
    """refnorm's forward + backward on ``backend``; the step returns the input gradient."""
    a = {name: backend.asarray(value) for name, value in host.items()}
    C = case.shape[1]
    x, dy = a["x"], a["dy"]
    running = refnorm.initial_running_stats(C, x)
    if case.op == "SN":

        def step() -> Any:
            _, cache, _ = refnorm.switch_norm_forward(
                x, a["gamma"], a["beta"], a["mean_logits"], a["var_logits"], running=running, convention="official"
            )
            return refnorm.switch_norm_backward(dy, cache).dx

    elif case.op == "SSN":

        def step() -> Any:
            cache = refnorm.sparse_switch_norm_forward(
                x, a["gamma"], a["beta"], a["mean_logits"], a["var_logits"],
                radius=SSN_RADIUS, variant="official", running=running, convention="official",
            ).cache  # fmt: skip
            return refnorm.sparse_switch_norm_backward(dy, cache).dx

    else:
        params = (a["gamma"], a["beta"], a["conv_weight"], a["conv_bias"], a["temperature"])

        def step() -> Any:
            _, cache, _ = en.exemplar_norm_forward(x, *params, running=running)
            return en.exemplar_norm_backward(dy, cache).dx

    return step


def torch_step(case: Case, host: dict[str, np.ndarray], device: str) -> Callable[[], Any]:
    """The PyTorch forward of ``benchmarks/torch_layers.py`` and ``autograd.grad``; returns ``dx``."""
    import torch

    from . import torch_layers

    t = {name: torch.from_numpy(np.ascontiguousarray(value)).to(device) for name, value in host.items()}
    C = case.shape[1]
    x, dy = t["x"].requires_grad_(), t["dy"]
    running = [torch.zeros(C, dtype=x.dtype, device=device), torch.zeros(C, dtype=x.dtype, device=device)]
    if case.op == "EN":
        params = [t[name].requires_grad_() for name in ("gamma", "beta", "conv_weight", "conv_bias", "temperature")]

        def forward() -> Any:
            return torch_layers.exemplar_norm(x, *params, running)

    else:
        params = [t[name].requires_grad_() for name in ("gamma", "beta", "mean_logits", "var_logits")]
        if case.op == "SN":

            def forward() -> Any:
                return torch_layers.switch_norm(x, *params, running)

        else:

            def forward() -> Any:
                return torch_layers.sparse_switch_norm(x, *params, running, radius=SSN_RADIUS)

    def step() -> Any:
        return torch.autograd.grad(forward(), [x, *params], dy)[0]

    return step


def refnorm_backward_peak(case: Case, host: dict[str, np.ndarray], backend: Backend) -> int:
    """Everything live at the peak of SN's backward: ``dy``, the cache and the backward's own arrays."""
    a = {name: backend.asarray(value) for name, value in host.items()}
    x, dy = a["x"], a["dy"]

    def forward() -> Any:
        return refnorm.switch_norm_forward(x, a["gamma"], a["beta"], a["mean_logits"], a["var_logits"], convention="official").cache

    if backend.name != "numpy":
        cache = forward()
        return dy.nbytes + cache.xhat.nbytes + backend.peak_bytes(lambda: refnorm.switch_norm_backward(dy, cache))
    tracemalloc.start()
    try:
        cache = forward()  # traced: the cache counts
        tracemalloc.reset_peak()
        refnorm.switch_norm_backward(dy, cache)
        return tracemalloc.get_traced_memory()[1] + dy.nbytes
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def interleaved_best(steps: dict[str, Callable[[], Any]], repeats: int, sync: Callable[[], None]) -> dict[str, float]:
    """The fewest seconds per step, after one warm-up each, the steps taking turns."""
    for step in steps.values():
        step()
        sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync()
            started = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


@dataclass
class Row:
    case: Case
    refnorm_s: float
    torch_s: float | None
    refnorm_peak: float
    """In units of ``x.nbytes``."""
    torch_peak: float | None
    backward_peak: float | None
    agreement: float | None
    """Largest ``|dx_refnorm - dx_torch|`` over the largest ``|dx|``."""

    @property
    def ratio(self) -> float | None:
        return None if self.torch_s is None else self.refnorm_s / self.torch_s


def measure(case: Case, backend: Backend, repeats: int) -> Row:
    host = _host_inputs(case)
    nbytes = host["x"].nbytes
    steps = {"refnorm": refnorm_step(case, host, backend)}
    if backend.torch_device is not None:
        steps["torch"] = torch_step(case, host, backend.torch_device)
    agreement = None
    if "torch" in steps:
        ours, theirs = backend.to_host(steps["refnorm"]()), steps["torch"]().detach().cpu().numpy()
        agreement = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
    times = interleaved_best(steps, repeats, backend.sync)
    refnorm_peak = backend.peak_bytes(steps["refnorm"]) / nbytes
    torch_peak = _torch_peak(backend.torch_device, steps["torch"]) / nbytes if "torch" in steps else None
    backward_peak = refnorm_backward_peak(case, host, backend) / nbytes if case.op == "SN" else None
    return Row(case, times["refnorm"], times.get("torch"), refnorm_peak, torch_peak, backward_peak, agreement)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine_description(backend: Backend) -> str:
    """One line: CPU model and cores (or the GPU), library versions, threads."""
    parts = [f"refnorm {refnorm.__version__}", f"NumPy {np.__version__}"]
    if backend.name == "cupy":
        cupy = backend.xp
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        parts.insert(0, name.decode() if isinstance(name, bytes) else str(name))
        parts.append(f"CuPy {cupy.__version__}")
    else:
        parts.insert(0, f"{cpu_model()}, {os.cpu_count()} cores")
    if backend.torch_device is not None:
        import torch

        parts.append(f"PyTorch {torch.__version__} ({torch.get_num_threads()} CPU threads)")
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def _percent(fraction: float | None, width: int) -> str:
    return f"{'-':>{width}}" if fraction is None else f"{f'{100 * fraction:.0f}%':>{width}}"


def print_table(rows: list[Row], backend: Backend, bandwidth: float | None) -> None:
    header = f"{'op':<5}{'shape':<18}{'dtype':<9}{'refnorm ms':>11}{'torch ms':>10}{'ratio':>7}{'peak xX':>9}{'torch xX':>9}{'bwd xX':>8}{'dx agree':>10}"
    if backend.name == "cupy":
        header += f"{'bw refnorm':>11}{'bw torch':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        case = row.case
        line = (
            f"{case.op:<5}{str(case.shape):<18}{case.dtype:<9}{row.refnorm_s * 1e3:>11.2f}"
            + _fmt(None if row.torch_s is None else row.torch_s * 1e3, ".2f", 10)
            + _fmt(row.ratio, ".2f", 7)
            + _fmt(row.refnorm_peak, ".2f", 9)
            + _fmt(row.torch_peak, ".2f", 9)
            + _fmt(row.backward_peak, ".2f", 8)
            + _fmt(row.agreement, ".0e", 10)
        )
        if backend.name == "cupy":
            moved = BYTES_MOVED_PER_STEP * math.prod(case.shape) * np.dtype(case.dtype).itemsize
            for seconds, width in ((row.refnorm_s, 11), (row.torch_s, 10)):
                line += _percent(None if seconds is None or bandwidth is None else moved / seconds / bandwidth, width)
        print(line)
    print("-" * len(header))
    print("ratio = refnorm time / PyTorch time (best of interleaved steps); peak, torch, bwd in units of x.nbytes")
    if backend.torch_device is None:
        print(f"no ratios: {backend.why_no_torch}")
    if backend.name == "cupy":
        shown = "unknown (CUDA does not report it; pass --peak-bandwidth)" if bandwidth is None else f"{bandwidth / 1e9:.0f} GB/s"
        print(f"bw = {BYTES_MOVED_PER_STEP} x.nbytes / time as a fraction of the peak memory bandwidth, {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="NumPy vs PyTorch CPU (default) or CuPy vs PyTorch CUDA")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--shapes", nargs="+", default=None, help="shapes such as 8x64x56x56 (default: the ResNet-50 shapes)")
    parser.add_argument("--repeats", type=int, default=11, help="timed steps per side and case (default 11)")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    parser.add_argument("--peak-bandwidth", type=float, default=None, help="GPU memory bandwidth in GB/s (default: from CUDA)")
    args = parser.parse_args(argv)

    if args.device == "gpu":
        backend, why = gpu_backend()
        if backend is None:
            print(f"no GPU benchmark: {why}")
            return 0
    else:
        backend = cpu_backend()
    if backend.torch_device is not None and args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    shapes = RESNET50_SHAPES if args.shapes is None else tuple(tuple(int(s) for s in text.split("x")) for text in args.shapes)
    bandwidth = None
    if backend.name == "cupy":
        bandwidth = args.peak_bandwidth * 1e9 if args.peak_bandwidth else peak_bandwidth_bytes_per_s(backend.xp)

    print(machine_description(backend))
    print(f"forward + backward, training mode; best of {args.repeats} interleaved steps after a warm-up")
    rows = []
    for op in args.ops:
        for dtype in args.dtypes:
            for shape in shapes:
                rows.append(measure(Case(op, shape, dtype), backend, args.repeats))
    print_table(rows, backend, bandwidth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
