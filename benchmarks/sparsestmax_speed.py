"""Batched SparsestMax against the official per-vector algorithm: forward + backward, wall time.

    python benchmarks/sparsestmax_speed.py [--vectors 100000] [--K 3] [--radius 0.5] [--repeat 3]

refnorm's ``sparsestmax_forward`` + ``sparsestmax_vjp`` (``variant="official"``) run once over the
whole ``(vectors, K)`` batch; the baseline is the official algorithm transcribed plainly in NumPy
(``tests/oracles/official_ssn.py``: the recursive forward, then the stage VJPs autograd would apply), called
once per vector. Both get the same float64 logits and upstream gradients; the script checks that
they agree before it reports the times and their ratio (target: batched >= 100x faster).
Not a timed test: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from oracles.official_ssn import official_sparsestmax, official_vjp  # noqa: E402

from refnorm.ops.sparsestmax import sparsestmax_forward, sparsestmax_vjp  # noqa: E402


def batched(logits: np.ndarray, dratios: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    ratios, stages = sparsestmax_forward(logits, radius, variant="official")
    return ratios, sparsestmax_vjp(dratios, stages)


def per_vector(logits: np.ndarray, dratios: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    ratios, dlogits = np.empty_like(logits), np.empty_like(logits)
    for row, (z, g) in enumerate(zip(logits, dratios, strict=True)):
        stages: list = []
        ratios[row] = official_sparsestmax(z, radius, stages=stages)
        dlogits[row] = official_vjp(g, stages)
    return ratios, dlogits


def page_faults() -> int | None:
    """Minor page faults of this process so far (Unix), or None."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def best_time(function, *args, repeat: int) -> tuple[float, tuple]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - started)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--K", type=int, default=3)
    parser.add_argument("--radius", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (batched); the per-vector loop runs once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    logits = rng.standard_normal((args.vectors, args.K))
    dratios = rng.standard_normal((args.vectors, args.K))

    faults_before = page_faults()
    batched_time, (ratios, dlogits) = best_time(batched, logits, dratios, args.radius, repeat=args.repeat)
    faults = None if faults_before is None else (page_faults() - faults_before) / args.repeat
    loop_time, (loop_ratios, loop_dlogits) = best_time(per_vector, logits, dratios, args.radius, repeat=1)

    # The official code misses one-hot outputs that sparsemax computes as (1 - 1e-16, 0, ...) and
    # leaves the simplex there (spec-notes §3.7); refnorm fixes that. Compare the other rows.
    well_defined = np.abs(np.sum(loop_ratios, axis=1) - 1.0) < 1e-12
    forward_error = float(np.max(np.abs(ratios - loop_ratios)[well_defined]))
    backward_error = float(np.max(np.abs(dlogits - loop_dlogits)[well_defined]))
    print(f"{args.vectors} vectors, K = {args.K}, radius {args.radius}, variant 'official', float64, numpy {np.__version__}")
    print(f"  batched (refnorm)      {batched_time * 1e3:10.1f} ms   (best of {args.repeat})")
    print(f"  per vector (official)  {loop_time * 1e3:10.1f} ms")
    print(f"  ratio                  {loop_time / batched_time:10.1f} x   (target >= 100 x)")
    if faults is not None:
        print(
            f"  page faults per batched call: {faults:.0f} (fresh memory for the stage records and temporaries; "
            "glibc returns freed memory to the system between calls, see docs/benchmarks.md)"
        )
    print(
        f"  largest difference on {int(well_defined.sum())} rows: forward {forward_error:.1e}, backward {backward_error:.1e} "
        "(rounding times rho/n, largest near tied logits)"
    )
    print(f"  {int((~well_defined).sum())} rows where the official output leaves the simplex (compared nowhere)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
