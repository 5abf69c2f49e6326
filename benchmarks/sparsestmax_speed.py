"""Batched SparsestMax against the official per-vector algorithm: forward + backward, wall time.

    python -m benchmarks sparsestmax [--vectors 100000] [--K 3] [--radius 0.5] [--repeat 3]

refnorm's ``sparsestmax_forward`` + ``sparsestmax_vjp`` (``variant="official"``) run once over the
whole ``(vectors, K)`` batch. The baseline is the official algorithm (``utils/ssn_utils.py`` of
``switchablenorms/Sparse_SwitchNorm``) transcribed plainly in NumPy below: the recursive forward,
then the stage VJPs autograd would apply, called once per vector. Its support centre is in the
input's dtype, as in refnorm's ``"official"`` variant (the released code rounds it to float32,
which moves float64 outputs by up to ~2e-7 and costs the same; ``docs/known-bugs.md``). Both get the same float64 logits
and upstream gradients; the script checks that they agree before it reports the times and their
ratio (target: batched >= 100x faster). It also times

* the same batch through the plain reference code alone (``_sparsestmax_stages`` and
  ``_stages_vjp`` in the usual memory layout), which is what the speed-only layout of
  ``refnorm/ops/_sparsestmax_fast.py`` is measured against;
* refnorm on one vector of the batch at a time (``--single`` vectors), which is how SSN calls it:
  once per side and step on a ``(K,)`` vector.

Not a timed test: nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import array_api_compat.numpy as xp
import numpy as np

from refnorm.ops.sparsestmax import _sparsestmax_stages, _stages_vjp, sparsestmax_forward, sparsestmax_vjp

# --------------------------------------------------------------------------------------------
# The baseline: the official SparsestMax, one vector at a time
# --------------------------------------------------------------------------------------------


def official_sparsemax(v: np.ndarray) -> np.ndarray:
    """``sparsemax(v, z=1)`` of the official code (1-D ``v``)."""
    v_sorted = np.sort(v)[::-1]
    cssv = np.cumsum(v_sorted) - 1.0
    ind = np.arange(1, 1 + len(v), dtype=v.dtype)
    cond = v_sorted - cssv / ind > 0
    rho = ind[cond][-1]
    tau = cssv[cond][-1] / rho
    return np.maximum(v - tau, 0.0)


def official_sparsestmax(v: np.ndarray, rad_in: float, stages: list, u_in: np.ndarray | None = None) -> np.ndarray:
    """``sparsestmax(v, rad_in, u_in)`` of the official code; appends the stages it runs to ``stages``
    (``("sparsemax", support)`` or ``("sphere", rad, distance, direction)``) for the backward."""
    w = official_sparsemax(v)
    support = (w > 0).astype(v.dtype)
    stages.append(("sparsemax", support))
    if max(w) - min(w) == 1:
        return w
    u = support / np.sum(support)
    rad = rad_in if u_in is None else math.sqrt(rad_in**2 - np.sum((u - u_in) ** 2))
    distance = np.linalg.norm(w - u)
    if distance >= rad:
        return w
    p = rad * (w - u) / distance + u
    stages.append(("sphere", rad, distance, (w - u) / distance))
    if min(p) < 0:
        return official_sparsestmax(p, rad, stages, u)
    return np.clip(p, 0.0, 1.0)


def official_vjp(g: np.ndarray, stages: list) -> np.ndarray:
    """The gradient autograd returns through the official forward: the stage VJPs, last stage first."""
    for stage in reversed(stages):
        if stage[0] == "sparsemax":
            support = stage[1]
            g = support * (g - np.sum(support * g) / np.sum(support))
        else:
            _, rad, distance, direction = stage
            g = rad / distance * (g - direction * np.dot(direction, g))
    return g


# --------------------------------------------------------------------------------------------
# The contestants
# --------------------------------------------------------------------------------------------


def batched(logits: np.ndarray, dratios: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    ratios, stages = sparsestmax_forward(logits, radius, variant="official")
    return ratios, sparsestmax_vjp(dratios, stages)


def batched_reference_layout(logits: np.ndarray, dratios: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    ratios, stages = _sparsestmax_stages(logits, radius, "official", xp)
    return ratios, _stages_vjp(dratios, stages, xp)


def per_vector(logits: np.ndarray, dratios: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    ratios, dlogits = np.empty_like(logits), np.empty_like(logits)
    for row, (z, g) in enumerate(zip(logits, dratios, strict=True)):
        stages: list = []
        ratios[row] = official_sparsestmax(z, radius, stages)
        dlogits[row] = official_vjp(g, stages)
    return ratios, dlogits


def refnorm_per_vector(logits: np.ndarray, dratios: np.ndarray, radius: float) -> None:
    for z, g in zip(logits, dratios, strict=True):
        batched(z, g, radius)


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
    parser.add_argument("--single", type=int, default=300, help="vectors refnorm runs one at a time (best of --repeat)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    logits = rng.standard_normal((args.vectors, args.K))
    dratios = rng.standard_normal((args.vectors, args.K))

    faults_before = page_faults()
    batched_time, (ratios, dlogits) = best_time(batched, logits, dratios, args.radius, repeat=args.repeat)
    faults = None if faults_before is None else (page_faults() - faults_before) / args.repeat
    plain_time, (plain_ratios, plain_dlogits) = best_time(batched_reference_layout, logits, dratios, args.radius, repeat=args.repeat)
    loop_time, (loop_ratios, loop_dlogits) = best_time(per_vector, logits, dratios, args.radius, repeat=1)
    single = min(args.single, args.vectors)
    single_time, _ = best_time(refnorm_per_vector, logits[:single], dratios[:single], args.radius, repeat=args.repeat)

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
    same = np.array_equal(plain_ratios, ratios) and np.array_equal(plain_dlogits, dlogits)
    print(
        f"  batched, reference layout only {plain_time * 1e3:.1f} ms ({loop_time / plain_time:.1f} x; "
        f"the fast layout is {plain_time / batched_time:.1f} x faster, results {'equal bit for bit' if same else 'DIFFERENT'})"
    )
    print(
        f"  one vector at a time: refnorm {single_time / single * 1e6:.0f} us, the official code "
        f"{loop_time / args.vectors * 1e6:.0f} us per vector (forward + backward; SSN's own use)"
    )
    print(
        f"  largest difference on {int(well_defined.sum())} rows: forward {forward_error:.1e}, backward {backward_error:.1e} "
        "(rounding times rho/n, largest near tied logits)"
    )
    print(f"  {int((~well_defined).sum())} rows where the official output leaves the simplex (compared nowhere)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
