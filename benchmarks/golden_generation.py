"""Benchmark (not a test): time golden generation of the full reference catalog on NumPy.

Budget (issue 5): generating the whole ``reference`` catalog on NumPy takes at most 30 s on the
2-core CI machine. Run from the repository root::

    python -m benchmarks.golden_generation [--backend numpy] [--repeat 3]

Prints the best of ``--repeat`` runs for the reference catalog and for the whole catalog; exits 0
either way (a benchmark reports, CI's tests decide).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from refnorm import __version__, catalog, golden
from refnorm.oracle.catalog import cases
from refnorm.oracle.evaluation import BACKENDS

BUDGET_S = 30.0


def best_time(kinds: tuple[str, ...] | None, backend: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        catalog._DRAWN.clear()  # every run draws the inputs afresh, as a new process does
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            golden.generate(Path(scratch) / "set", kinds=kinds, backend=backend)
            times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, default="numpy")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"refnorm {__version__}, backend {args.backend}, {os.cpu_count()} CPUs, best of {args.repeat}")
    reference = best_time(("reference",), args.backend, args.repeat)
    count = len(cases(kind="reference"))
    verdict = "within" if reference <= BUDGET_S else "OVER"
    print(f"reference catalog: {count} cases in {reference:.2f} s ({verdict} the {BUDGET_S:.0f} s budget)")
    everything = best_time(None, args.backend, args.repeat)
    print(f"whole catalog:     {len(cases())} cases in {everything:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
