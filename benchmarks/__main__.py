"""``python -m benchmarks [COMMAND] [OPTIONS]``: the benchmarks of ``docs/benchmarks.md``.

Commands (default ``layers``; ``python -m benchmarks COMMAND --help`` for the options):

``layers``       SN, SSN and EN forward + backward against PyTorch autograd: time, peak memory
                 (``--device gpu``: CuPy against PyTorch CUDA, with memory bandwidth)
``scaling``      SN forward + backward time and memory from 1e4 to 1e8 elements
``passes``       how many full-size array operations SN's and EN's forward and backward make
``sparsestmax``  batched SparsestMax against the official per-vector algorithm
``en-vs-sn``     EN's time and memory relative to SN's on ResNet-50 shapes
``golden``       time to generate the golden set
``dask``         SN forward + backward on an input larger than memory, on a Dask cluster
``jax``          SN, SSN and EN on JAX arrays, eager and under jax.jit, against NumPy
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "layers": "layers",
    "scaling": "scaling",
    "passes": "passes",
    "sparsestmax": "sparsestmax_speed",
    "en-vs-sn": "en_vs_sn",
    "golden": "golden_generation",
    "dask": "dask_scaling",
    "jax": "jax_layers",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help") and len(argv) == 1:
        print(__doc__)
        return 0
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "layers"
    module = importlib.import_module(f"benchmarks.{COMMANDS[command]}")
    return module.main(argv) or 0


if __name__ == "__main__":
    sys.exit(main())
