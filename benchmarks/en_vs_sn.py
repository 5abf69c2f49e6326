"""Exemplar Normalization vs Switchable Normalization: forward + backward time and peak memory.

Run from the repository root::

    python -m benchmarks.en_vs_sn                 # ResNet-50 shapes, batch 8, float32, NumPy
    python -m benchmarks.en_vs_sn --batch 2 --repeats 3

For every shape, SN (softmax ratios, IN/LN/BN) and EN (output and statistics mixing, kernel
size 3) run one forward and one backward in training mode with running statistics. Time is the
median over ``--repeats`` runs after one warm-up run; peak memory is what ``tracemalloc`` sees
NumPy allocate during one forward + backward (inputs excluded; the cache counts, because a
layer holds it until its backward). The last line compares EN with SN: the issue asks EN to
stay within 2x SN's time. The exit status is 1 when a ratio exceeds ``--max-ratio``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

import refnorm
from refnorm.ops import exemplarnorm as en

from .layers import tracemalloc_peak

RESNET50_SHAPES = {
    "stem 64x112x112": (64, 112, 112),
    "conv2 256x56x56": (256, 56, 56),
    "conv3 512x28x28": (512, 28, 28),
    "conv4 1024x14x14": (1024, 14, 14),
    "conv5 2048x7x7": (2048, 7, 7),
}


def _sn_step(x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
    C = x.shape[1]
    gamma, beta = np.ones(C, x.dtype), np.zeros(C, x.dtype)
    logits = np.ones(3, x.dtype)
    running = refnorm.initial_running_stats(C, x)

    def step() -> object:
        _, cache, _ = refnorm.switch_norm_forward(x, gamma, beta, logits, logits, running=running)
        return refnorm.switch_norm_backward(dy, cache)

    return step


def _en_step(x: np.ndarray, dy: np.ndarray, mixing: str) -> Callable[[], object]:
    C = x.shape[1]
    rng = np.random.default_rng(0)
    params = en.exemplar_norm_init(C, x)._replace(conv_weight=rng.standard_normal(3).astype(x.dtype))
    running = refnorm.initial_running_stats(C, x)

    def step() -> object:
        _, cache, _ = en.exemplar_norm_forward(x, *params, running=running, mixing=mixing)
        return en.exemplar_norm_backward(dy, cache)

    return step


def _time(step: Callable[[], object], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="batch size N (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per op and shape (default 5)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--max-ratio", type=float, default=2.0, help="fail when EN takes longer than this times SN")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    print(f"refnorm {refnorm.__version__}, NumPy {np.__version__}, {args.dtype}, batch {args.batch}, median of {args.repeats}")
    header = f"{'shape':<20}{'op':<16}{'time ms':>10}{'x SN':>7}{'peak MiB':>11}{'x SN':>7}"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, sizes in RESNET50_SHAPES.items():
        shape = (args.batch, *sizes)
        x = rng.standard_normal(shape, dtype=np.float64).astype(dtype)
        dy = rng.standard_normal(shape, dtype=np.float64).astype(dtype)
        steps = {"SN": _sn_step(x, dy), "EN output": _en_step(x, dy, "output"), "EN statistics": _en_step(x, dy, "statistics")}
        sn_time = sn_peak = None
        for op, step in steps.items():
            seconds, peak = _time(step, args.repeats), tracemalloc_peak(step)
            if op == "SN":
                sn_time, sn_peak = seconds, peak
            else:
                worst = max(worst, seconds / sn_time)
            print(f"{name:<20}{op:<16}{seconds * 1e3:>10.1f}{seconds / sn_time:>7.2f}{peak / 2**20:>11.1f}{peak / sn_peak:>7.2f}")
        print(f"{'':<20}(x itself: {x.nbytes / 2**20:.1f} MiB)")
    verdict = "within" if worst <= args.max_ratio else "EXCEEDS"
    print("-" * len(header))
    print(f"largest EN / SN time ratio: {worst:.2f} ({verdict} the {args.max_ratio:g}x budget)")
    return 0 if worst <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
