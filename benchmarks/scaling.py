"""SN forward + backward time and peak memory from 1e4 to 1e8 elements: does anything grow faster than linearly?

    python -m benchmarks scaling [--largest 1e8] [--dtype float32] [--repeats 3]

Two series of NumPy inputs ``(N, C, M)`` in the official convention, training mode:

* ``spatial``: ``N = 8``, ``C = 64`` and ``M`` growing, as in the early layers of a network;
* ``instances``: ``C = 64``, ``M = 49`` and ``N`` growing, so the ``(N, C)`` statistics stage
  grows too (a quadratic step there, e.g. an ``(N, N)`` intermediate, would show here).

For each size: the best of ``--repeats`` steps, the time per element (flat when the cost is
linear; larger at small sizes, where the fixed cost of a call dominates), and the peak memory
of a step (``tracemalloc``, inputs excluded) in units of ``x.nbytes`` (flat when memory is
linear). The largest size needs about ten times ``x.nbytes`` of free memory (``x``, ``dy`` and
the peak), 4 GB for 1e8 float32 elements.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import refnorm

from .layers import tracemalloc_peak


def sn_step(x: np.ndarray, dy: np.ndarray):
    C = x.shape[1]
    gamma, beta, logits = np.ones(C, x.dtype), np.zeros(C, x.dtype), np.ones(3, x.dtype)
    running = refnorm.initial_running_stats(C, x)

    def step() -> None:
        cache = refnorm.switch_norm_forward(x, gamma, beta, logits, logits, running=running, convention="official").cache
        refnorm.switch_norm_backward(dy, cache)

    return step


def shapes(series: str, largest: float) -> list[tuple[int, int, int]]:
    sizes = [10**e for e in range(4, 9) if 10**e <= largest]
    if series == "spatial":
        return [(8, 64, max(2, round(size / 512))) for size in sizes]
    return [(max(1, round(size / (64 * 49))), 64, 49) for size in sizes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--largest", type=float, default=1e8, help="largest element count (default 1e8)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--series", nargs="+", choices=("spatial", "instances"), default=["spatial", "instances"])
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    print(f"SN forward + backward, official convention, training, {args.dtype}, NumPy {np.__version__}, best of {args.repeats}")
    header = f"{'series':<11}{'shape (N, C, M)':<22}{'elements':>12}{'time ms':>11}{'ns / element':>14}{'peak xX':>9}"
    print(header)
    print("-" * len(header))
    for series in args.series:
        for shape in shapes(series, args.largest):
            x = rng.standard_normal(shape, dtype=np.float32 if args.dtype == "float32" else np.float64)
            dy = rng.standard_normal(shape, dtype=x.dtype)
            step = sn_step(x, dy)
            step()
            best = float("inf")
            for _ in range(args.repeats):
                started = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - started)
            peak = tracemalloc_peak(step) / x.nbytes
            print(f"{series:<11}{str(shape):<22}{x.size:>12.2e}{best * 1e3:>11.2f}{best / x.size * 1e9:>14.2f}{peak:>9.2f}")
            del x, dy, step
    return 0


if __name__ == "__main__":
    sys.exit(main())
