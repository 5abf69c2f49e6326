"""The ``refnorm`` command line.

``refnorm check``
    Run the gradient checker on every implemented op over the catalog's sample cases and print a
    table of errors; exit 1 if any check fails.
``refnorm info``
    Version, array backends and devices.
``refnorm golden generate --out DIR [--kind K] [--op OP] [--backend B] [--selection all|shipped] [--force]``
    Write a golden set (one ``.npz`` per case and a ``manifest.json``); refuses to replace an
    existing set without ``--force``. ``--selection shipped``: the cases of the set inside the
    package (regenerate it with ``--out refnorm/golden_data --force --selection shipped``).
``refnorm golden verify DIR`` / ``refnorm golden verify --shipped``
    Check every hash and recompute every case; a table of errors; exit 1 on any problem.
``refnorm golden list [--kind K] [--op OP]``
    The case catalog.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__
from ._xp import available_backends
from .oracle.catalog import KINDS, OPS, cases
from .oracle.evaluation import BACKENDS
from .oracle.gradient_check import gradcheck


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


class _ProgressLine:
    """``[ 12/228] switch_norm/paper-train-4d`` on stderr: rewritten in place on a terminal, every
    25 cases otherwise (CI logs), nothing with ``quiet``."""

    def __init__(self, verb: str, quiet: bool) -> None:
        self.verb, self.quiet = verb, quiet
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, case_id: str) -> None:
        if self.quiet:
            return
        line = f"{self.verb} [{done:>{len(str(total))}}/{total}] {case_id or 'done'}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100)[:100] + ("\n" if done == total else ""))
            sys.stderr.flush()
        elif done % 25 == 0 or done == total:
            print(line, file=sys.stderr)


def _golden_generate(args: argparse.Namespace) -> int:
    from .oracle.golden import SHIPPED, GoldenError, generate

    if Path(args.out).resolve() == SHIPPED and (args.selection != "shipped" or args.kind or args.op):
        print(f"refnorm golden generate: {SHIPPED} holds the package's own selection; regenerate it with "
              "--out refnorm/golden_data --force --selection shipped (and no --kind or --op)", file=sys.stderr)  # fmt: skip
        return 2
    started = time.perf_counter()
    try:
        manifest = generate(
            args.out, kinds=args.kind, ops=args.op, backend=args.backend, force=args.force, selection=args.selection,
            progress=_ProgressLine("generating", args.quiet),
        )  # fmt: skip
    except (GoldenError, RuntimeError, ValueError, OSError) as error:
        print(f"refnorm golden generate: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    out = Path(args.out).resolve()
    size = sum((out / name).stat().st_size for name in ["manifest.json", "manifest.json.sha256", *(c["file"] for c in manifest["cases"])])
    counts = ", ".join(f"{sum(c['kind'] == k for c in manifest['cases'])} {k}" for k in manifest["kinds"])
    print(f"wrote {len(manifest['cases'])} cases ({counts}) to {args.out}: {size / 1e6:.2f} MB in {elapsed:.1f} s on {args.backend}")
    return 0


def _golden_verify(args: argparse.Namespace) -> int:
    from .oracle.golden import SHIPPED, verify

    if (args.directory is None) == (not args.shipped):
        print("refnorm golden verify: give a directory or --shipped (one of them)", file=sys.stderr)
        return 2
    directory = SHIPPED if args.shipped else Path(args.directory)
    selection = args.selection or ("shipped" if args.shipped else "all")
    started = time.perf_counter()
    report = verify(
        directory, kinds=args.kind, ops=args.op, selection=selection, backend=args.backend, recompute=not args.no_recompute,
        progress=_ProgressLine("verifying", args.quiet),
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    expected = report.expected
    kinds = "every kind" if args.kind is None else "kinds " + ", ".join(expected["kinds"])
    ops = "every op" if args.op is None else "ops " + ", ".join(expected["ops"])
    header = f"{'case':<52}{'status':<8}{'max abs err':>13}{'max rel err':>13}"
    print(f"golden set {directory} (expected: {kinds}, {ops}, selection {expected['selection']})")
    for problem in report.problems:
        print(f"  FAIL {problem}")
    print(header)
    print("-" * len(header))

    def error(value: float) -> str:
        return "n/a" if value != value else f"{value:.2e}"

    for case in report.cases:
        if case.passed and args.failures_only:
            continue
        status = "ok" if case.passed else "FAIL"
        print(f"{case.id:<52}{status:<8}{error(case.max_abs_error):>13}{error(case.max_rel_error):>13}")
        for problem in case.problems:
            print(f"    {case.file}: {problem}")
    print("-" * len(header))
    failed = sum(not c.passed for c in report.cases)
    action = f"recomputed on {args.backend}" if not args.no_recompute else "hashes only: values and tolerances not recomputed"
    print(f"{len(report.cases)} cases: {len(report.cases) - failed} ok, {failed} failed, {len(report.problems)} set problems ({action}, {elapsed:.1f} s)")
    return 0 if report.passed else 1


def _golden_list(args: argparse.Namespace) -> int:
    selected = [c for kind in (args.kind or KINDS) for c in cases(kind=kind, op=args.op)]
    for case in selected:
        params = ", ".join(f"{k}={v}" for k, v in case.params.items())
        expected = f"  raises {case.raises.__name__}: {case.match}" if case.raises else ""
        marks = ("  [on a kink]" if case.kink else "") + ("  [shipped]" if case.kind == "reference" and case.ship else "")
        print(f"{case.id:<52}{case.kind:<10}{params}{expected}{marks}")
    print(f"{len(selected)} cases", file=sys.stderr)
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

    golden = commands.add_parser("golden", help="golden files: generate, verify, list the catalog")
    actions = golden.add_subparsers(dest="action", required=True)
    generate = actions.add_parser("generate", help="write a golden set (one .npz per case + manifest.json)")
    generate.add_argument("--out", required=True, help="target directory (must not hold files unless --force)")
    generate.add_argument("--kind", action="append", choices=KINDS, help="only these kinds (repeatable; default all)")
    generate.add_argument("--op", action="append", choices=sorted(OPS), help="only these ops (repeatable; default all)")
    generate.add_argument("--backend", choices=BACKENDS, default="numpy", help="array library computing the values")
    generate.add_argument(
        "--selection", choices=("all", "shipped"), default="all",
        help="all cases (default), or the package's own selection: regenerate it with --out refnorm/golden_data --force --selection shipped",
    )  # fmt: skip
    generate.add_argument("--force", action="store_true", help="replace an existing golden set at --out")
    generate.add_argument("--quiet", action="store_true", help="no progress display")
    generate.set_defaults(run=_golden_generate)
    verify = actions.add_parser("verify", help="check hashes and recompute every case of a golden set")
    verify.add_argument("directory", nargs="?", help="the golden set")
    verify.add_argument("--shipped", action="store_true", help="verify the set shipped inside the package")
    verify.add_argument("--backend", choices=BACKENDS, default="numpy", help="array library recomputing the values")
    verify.add_argument("--kind", action="append", choices=KINDS, help="the set holds only these kinds (repeatable; default all)")
    verify.add_argument("--op", action="append", choices=sorted(OPS), help="the set holds only these ops (repeatable; default all)")
    verify.add_argument(
        "--selection", choices=("all", "shipped"), help="the set's selection (default: all; with --shipped: shipped)"
    )  # fmt: skip
    verify.add_argument("--no-recompute", action="store_true", help="check hashes and catalog consistency only")
    verify.add_argument("--failures-only", action="store_true", help="print only the cases that fail (and the summary)")
    verify.add_argument("--quiet", action="store_true", help="no progress display")
    verify.set_defaults(run=_golden_verify)
    listing = actions.add_parser("list", help="print the case catalog")
    listing.add_argument("--kind", action="append", choices=KINDS, help="only these kinds (repeatable)")
    listing.add_argument("--op", choices=sorted(OPS), help="only this op")
    listing.set_defaults(run=_golden_list)
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
