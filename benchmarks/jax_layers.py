"""SN, SSN and EN forward + backward on JAX arrays, eager and under ``jax.jit``, against NumPy.

    python -m benchmarks jax [--shape 8x64x56x56] [--dtype float32] [--repeats 5]

The same refnorm code on three inputs: NumPy arrays, JAX arrays run eagerly (JAX dispatches, and
compiles once per shape, every operation), and JAX arrays inside one ``jax.jit`` of the whole step
(forward, backward, new running statistics; compiled once, the compile time shown apart). Time is
the best of ``--repeats`` steps after a warm-up; the ratio is against NumPy (below 1: faster).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

import refnorm


def _step(op: str):
    """``(inputs, running) -> (y, gradients, running)`` for ``op``."""

    def step(x, gamma, beta, a, b, running):
        if op == "SN":
            y, cache, running = refnorm.switch_norm_forward(x, gamma, beta, a, b, running=running)
            return y, refnorm.switch_norm_backward(y * 0.5, cache), running
        if op == "SSN":
            y, cache, running, _ = refnorm.sparse_switch_norm_forward(x, gamma, beta, a, b, radius=0.3, running=running)
            return y, refnorm.sparse_switch_norm_backward(y * 0.5, cache), running
        temperature = refnorm.exemplar_norm_init(x.shape[1], x).temperature
        y, cache, running = refnorm.exemplar_norm_forward(x, gamma, beta, a, b, temperature, running=running)  # a: kernel, b: bias
        return y, refnorm.exemplar_norm_backward(y * 0.5, cache), running

    return step


def _inputs(op: str, shape: tuple[int, ...], dtype: str):
    rng = np.random.default_rng(0)
    C = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    if op == "EN":  # the channel kernel and its bias
        return [x, np.ones(C, dtype), np.zeros(C, dtype), np.array([0.3, -0.2, 0.5], dtype), np.array(0.1, dtype)]
    return [x, np.ones(C, dtype), np.zeros(C, dtype), rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)]


def _best(run, repeats: int) -> float:
    run()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks jax", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="8x64x56x56", help="input shape N x C x H x W (default 8x64x56x56)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        print("no JAX benchmark: JAX is not installed (pip install 'refnorm[jax]')")
        return 0
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    shape = tuple(int(s) for s in args.shape.split("x"))
    print(f"forward + backward, training, {args.dtype}, {shape}; JAX {jax.__version__} on {jax.devices()[0].platform}, NumPy {np.__version__}; "
          f"best of {args.repeats}")  # fmt: skip
    header = f"{'op':<5}{'NumPy ms':>10}{'JAX eager ms':>14}{'ratio':>8}{'JAX jit ms':>12}{'ratio':>8}{'compile s':>11}{'max |dx - NumPy|':>19}"
    print(header)
    print("-" * len(header))
    for op in ("SN", "SSN", "EN"):
        host = _inputs(op, shape, args.dtype)
        step = _step(op)
        numpy_running = refnorm.initial_running_stats(shape[1], host[0])
        numpy_time = _best(lambda: step(*host, numpy_running), args.repeats)
        arrays = [jnp.asarray(a) for a in host]
        running = refnorm.initial_running_stats(shape[1], arrays[0])
        eager_time = _best(lambda: jax.block_until_ready(step(*arrays, running)), args.repeats)
        compiled = jax.jit(step)
        started = time.perf_counter()
        jax.block_until_ready(compiled(*arrays, running))
        compile_time = time.perf_counter() - started
        jit_time = _best(lambda: jax.block_until_ready(compiled(*arrays, running)), args.repeats)
        dx = np.asarray(compiled(*arrays, running)[1][0])
        error = float(np.max(np.abs(dx - step(*host, numpy_running)[1][0])))
        print(f"{op:<5}{numpy_time * 1e3:>10.2f}{eager_time * 1e3:>14.2f}{eager_time / numpy_time:>8.2f}{jit_time * 1e3:>12.2f}"
              f"{jit_time / numpy_time:>8.2f}{compile_time:>11.2f}{error:>19.1e}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
