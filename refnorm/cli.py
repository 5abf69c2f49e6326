"""The ``refnorm`` command line.

``refnorm check``
    Run the gradient checker on every implemented op over the catalog's sample cases and print a
    table of errors; exit 1 if any check fails.
``refnorm info``
    Version, array backends and devices.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import __version__
from ._xp import available_backends
from .catalog import OPS, cases
from .gradient_check import gradcheck


def _check(args: argparse.Namespace) -> int:
    selected = cases(kind="sample", op=args.op)
    if not selected:
        print("no cases selected", file=sys.stderr)
        return 1
    header = f"{'case':<44}{'argument':<14}{'checked':>8}{'skipped':>8}{'max abs err':>13}{'max rel err':>13}  verdict"
    print(header)
    print("-" * len(header))
    failures = 0
    started = time.perf_counter()
    for case in selected:
        op = OPS[case.op]
        inputs = case.inputs()
        arguments = [inputs[name] for name in op.arguments]

        def linearized(*point, _inputs=inputs, _op=op, _case=case):
            return _op.linearize({**_inputs, **dict(zip(_op.arguments, point, strict=True))}, _case.params)

        options = {"directions": args.directions, "seed": case.seed, **case.gradcheck}
        result = gradcheck(linearized, arguments, names=op.arguments, **options)
        for argument in result.arguments:
            verdict = "ok" if argument.passed else "FAIL " + "; ".join(argument.failures or ("nothing checked",))
            print(
                f"{case.id:<44}{argument.name:<14}{argument.checked:>8}{argument.skipped:>8}"
                f"{argument.max_abs_error:>13.2e}{argument.max_rel_error:>13.2e}  {verdict}"
            )
        failures += not result.passed
    elapsed = time.perf_counter() - started
    ops = sorted({c.op for c in selected})
    print("-" * len(header))
    print(f"{len(selected)} cases over {len(ops)} ops ({', '.join(ops)}): {len(selected) - failures} passed, {failures} failed in {elapsed:.1f} s")
    return 1 if failures else 0


def _info(args: argparse.Namespace) -> int:
    print(f"refnorm {__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print("array backends:")
    for name, version in available_backends().items():
        print(f"  {name:<18}{version}")
    print("devices:")
    print("  numpy             cpu")
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        for index in range(count):
            properties = cupy.cuda.runtime.getDeviceProperties(index)
            print(f"  cupy              cuda:{index} {properties['name'].decode()}")
        if count == 0:
            print("  cupy              no CUDA device")
    except Exception as error:  # noqa: BLE001 - any failure means: no GPU here
        print(f"  cupy              unavailable ({type(error).__name__})")
    print(f"ops: {', '.join(OPS)}")
    print(f"numpy {np.__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refnorm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"refnorm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="gradient-check every op over the sample cases")
    check.add_argument("--op", choices=sorted(OPS), help="only this op")
    check.add_argument("--directions", type=int, default=3, help="random directions per argument (default 3)")
    check.set_defaults(run=_check)

    info = commands.add_parser("info", help="version, array backends and devices")
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # e.g. `refnorm check | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
