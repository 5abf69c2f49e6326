"""The ``refnorm`` command line.

``refnorm check [--op OP] [--case GLOB] [--kind K] [--order 1|2] [--failures-only] [--json PATH] [--junit-xml PATH]``
    Run the gradient checker on every implemented op over the catalog's sample cases (or
    reference cases) and print a table of errors: finite differences of the backward, the JVP's
    adjoint test and finite differences, and for ops with a second order its finite differences
    and symmetry (``--order 1``: first order only); exit 1 if any check fails. A case the catalog
    declares on a kink of the op (``Case.kink``), where every direction crosses the kink and none
    fails, is reported as ``KINK`` (a ``skipped`` case in the reports): neither passed nor failed.
``refnorm info``
    Version, array backends and devices.
``refnorm golden generate --out DIR [--kind K] [--op OP] [--backend B] [--selection all|shipped] [--force]``
    Write a golden set (one ``.npz`` per case and a ``manifest.json``); refuses to replace an
    existing set without ``--force``. ``--selection shipped``: the cases of the set inside the
    package (regenerate it with ``--out refnorm/golden_data --force --selection shipped``).
``refnorm golden verify DIR`` / ``refnorm golden verify --shipped`` ``[--case GLOB] [--failures-only] [--json PATH] [--junit-xml PATH]``
    Check every hash and recompute every case; a table of errors; exit 1 on any problem.
``refnorm golden compare RESULTS [--against DIR] [--op OP] [--case GLOB] [--exclude GLOB] [--require GROUPS] [--json PATH] [--junit-xml PATH]``
    Judge another implementation's results (``<op>/<case name>.npz`` files holding ``output.*``,
    ``grad.*`` and any ``intermediate.*``) against a golden set (default: the shipped one); exit 0
    when everything agrees and nothing required is missing, 1 otherwise, 2 on unusable input.
``refnorm golden list [--kind K] [--op OP] [--case GLOB] [--json PATH]``
    The case catalog.

Options that take a case pattern take ``fnmatch`` patterns of case ids (``'switch_norm/official-*'``)
and may be repeated; a pattern that matches no case is a usage error (exit 2). ``--json PATH`` and
``--junit-xml PATH`` write machine-readable reports (:mod:`refnorm.oracle.reports`); ``-`` writes
to standard output, and the human-readable text then goes to standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import __version__
from ._xp import available_backends
from .oracle.catalog import KINDS, OPS, Case, cases
from .oracle.evaluation import BACKENDS, gradcheck_case
from .oracle.gradient_check import MAX_DIRECTIONS
from .oracle.reports import CaseEntry, Report, json_data, json_text, junit_xml_text

DESCRIPTION = "refnorm: the reference implementation of Switchable, Sparse Switchable and Exemplar Normalization, and its oracle tools."

# --------------------------------------------------------------------------------------------
# Shared helpers: case patterns, reports, a closed pipe
# --------------------------------------------------------------------------------------------


def _directions(text: str) -> int:
    """``--directions``: a count gradcheck accepts, or a usage error (exit 2) before any case runs."""
    try:
        count = int(text)
    except ValueError:
        count = None
    if count is None or not 1 <= count <= MAX_DIRECTIONS:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_DIRECTIONS}, got {text!r}")
    return count


def _selected(case_id: str, patterns: Sequence[str] | None) -> bool:
    """Whether ``case_id`` matches one of the ``fnmatch`` ``patterns`` (every id when there are none)."""
    return not patterns or any(fnmatch.fnmatchcase(case_id, pattern) for pattern in patterns)


def _unmatched(option: str, patterns: Sequence[str] | None, ids: Sequence[str]) -> list[str]:
    """The patterns that match no id; each is reported on standard error (the caller exits 2)."""
    unmatched = [p for p in patterns or () if not any(fnmatch.fnmatchcase(i, p) for i in ids)]
    for pattern in unmatched:
        print(f"refnorm: {option} {pattern!r} matches no case (`refnorm golden list` lists them)", file=sys.stderr)
    return unmatched


class _ReportError(Exception):
    """A ``--json``/``--junit-xml`` report could not be written (one line; the command exits 2)."""


def _emit_reports(report: Report, args: argparse.Namespace) -> None:
    """Write the ``--json`` and ``--junit-xml`` reports the command was asked for (``-``: the real
    standard output, while the text goes to standard error)."""
    for option, text_of in (("json", json_text), ("junit_xml", junit_xml_text)):
        destination = getattr(args, option, None)
        if destination == "-":
            args.stdout.write(text_of(report))
        elif destination is not None:
            try:
                Path(destination).write_text(text_of(report), encoding="utf-8")
            except OSError as error:  # a full disk, a read-only or special file: the report asked for is not there
                raise _ReportError(f"cannot write the --{option.replace('_', '-')} report to {destination}: {error.strerror or error}") from None


def _reports_to_stdout(args: argparse.Namespace) -> bool:
    return "-" in (getattr(args, "json", None), getattr(args, "junit_xml", None))


def _read_directories(args: argparse.Namespace) -> list[Path]:
    """The directories the command reads (the golden set, the results), resolved: a report written
    into one would overwrite or add to what is being judged (``--json DIR/manifest.json``)."""
    from .oracle.golden import SHIPPED

    found = []
    if getattr(args, "shipped", False) or getattr(args, "against", "") in (None, "shipped"):
        found.append(SHIPPED)
    found += [Path(d).resolve() for d in (getattr(args, "directory", None), getattr(args, "results", None), getattr(args, "against", None)) if d not in (None, "shipped")]
    return found


def _check_report_paths(args: argparse.Namespace) -> str:
    """Why a ``--json``/``--junit-xml`` destination cannot be written (empty if it can)."""
    destinations = [d for d in (getattr(args, "json", None), getattr(args, "junit_xml", None)) if d is not None]
    if destinations.count("-") > 1:
        return "--json and --junit-xml cannot both write to standard output ('-')"
    files = [Path(d).resolve() for d in destinations if d != "-"]
    if len(set(files)) < len(files):
        return f"--json and --junit-xml name the same file ({files[0]}); one report would overwrite the other"
    for destination in destinations:
        if destination == "-":
            continue
        path = Path(destination)
        for directory in _read_directories(args):
            if path.resolve() == directory or directory in path.resolve().parents:
                return f"report destination {destination} is inside {directory}, which this command reads; write the report elsewhere"
        if path.is_dir():
            return f"report destination {destination} is a directory"
        if not path.parent.is_dir():
            return f"report destination {destination}: directory {path.parent} does not exist"
    return ""


class _PipeGuard:
    """Standard output that survives a closed pipe (``refnorm golden list | head``): once the reader
    is gone, further output is dropped (the file descriptor is pointed at the null device, so the
    interpreter's final flush does not fail either) and the command runs to its own exit status."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.closed_pipe = stream, False

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.closed_pipe = True
        with contextlib.suppress(AttributeError, OSError, ValueError):  # a stream without a descriptor (a test's capture)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _output(args: argparse.Namespace) -> Iterator[None]:
    """Standard output guarded against a closed pipe; when a report goes to standard output, the
    human-readable text goes to standard error instead."""
    real, guarded = sys.stdout, _PipeGuard(sys.stdout)
    args.stdout = guarded if _reports_to_stdout(args) else None
    sys.stdout = sys.stderr if _reports_to_stdout(args) else guarded  # type: ignore[assignment]
    try:
        yield
    finally:
        with contextlib.suppress(BrokenPipeError):
            guarded.flush()
        sys.stdout = real


def _rel(value: float) -> str:
    """A relative error for a table: ``n/a`` where none applies (NaN)."""
    return f"{'n/a':>13}" if value != value else f"{value:>13.2e}"


def _derivative_errors(argument: Any) -> dict[str, float | None]:
    """The errors of the derivative checks of one argument: ``None`` where the check did not run,
    NaN where it ran and no relative error applies (the derivative is zero or ~zero)."""
    return {
        "adjoint_error": argument.adjoint_error,
        "jvp_error": argument.max_jvp_error if argument.jvp else None,
        "hvp_error": argument.max_hvp_error if argument.hvp else None,
        "symmetry_error": argument.symmetry_error,
    }


def _cell(value: float | None) -> str:
    """A table cell of a derivative check: ``-`` where it did not run, ``n/a`` where no relative error applies."""
    return "-" if value is None else ("n/a" if value != value else f"{value:.2e}")


# --------------------------------------------------------------------------------------------
# refnorm check
# --------------------------------------------------------------------------------------------


def _relative_error(argument: Any) -> float:
    """The largest relative error of one argument's check; NaN where none applies (every direction
    judged in absolute terms: a zero gradient has no scale to be relative to)."""
    if argument.jacobian_rel_error is not None:
        return argument.jacobian_rel_error
    relative = [d.rel_error for d in argument.directions if d.status != "skipped" and d.rel_error == d.rel_error]
    return max(relative) if relative else float("nan")


KINK_ONLY = "KINK nothing comparable (every direction crosses the kink), none failed"
"""The verdict on an argument of a case the catalog declares on a kink (``Case.kink``) whose only
failures are that nothing could be compared there: neither passed (nothing was proven) nor failed."""


def _argument_failures(argument: Any) -> list[str]:
    """Every reason an argument did not pass, the first order's included (the checker's ``failures``
    hold the messages; an argument whose every first-order direction crossed a kink fails by its
    count of directions compared, zero)."""
    failures = list(argument.failures)
    if argument.checked == 0:
        kinked = argument.skipped > 0
        failures.insert(0, "every finite-difference direction of the backward crosses a kink; nothing was compared" if kinked else "nothing checked")
    return failures


def _only_kinks(case: Case, argument: Any, failures: list[str]) -> bool:
    """Whether a case declared on a kink has, for this argument, nothing wrong but kinks: every failure
    is a check with every direction skipped at the kink, and no direction of any order failed."""
    if not case.kink or not failures:
        return False
    statuses = [d.status for d in argument.directions] + [t.status for t in (*(argument.jvp or ()), *(argument.hvp or ()))]
    return "failed" not in statuses and all(f.endswith("crosses a kink; nothing was compared") for f in failures)


def _check(args: argparse.Namespace) -> int:
    kinds = args.kind or ["sample"]
    ops = args.op or list(OPS)
    candidates = [c for kind in kinds for op in ops for c in cases(kind=kind, op=op)]
    if _unmatched("--case", args.case, [c.id for c in candidates]):
        return 2
    selected = [c for c in candidates if _selected(c.id, args.case)]
    if not selected:
        print("refnorm check: no cases selected", file=sys.stderr)
        return 2
    width = max(44, *(len(c.id) + 2 for c in selected))
    header = (
        f"{'case':<{width}}{'argument':<14}{'checked':>8}{'skipped':>8}{'max abs err':>13}{'max rel err':>13}"
        f"{'adjoint':>10}{'jvp fd':>10}{'hvp fd':>10}{'symmetry':>10}  verdict"
    )
    print(header)
    print("-" * len(header))
    entries: list[CaseEntry] = []
    not_applicable = False
    started = time.perf_counter()
    for case in selected:
        began = time.perf_counter()
        try:
            # --order 2 asks for the second order where an op has one; without it, every derivative the op has.
            order = {} if args.order is None else {"order": min(args.order, 2 if OPS[case.op].hvp else 1)}
            result = gradcheck_case(case, directions=args.directions, **order)
        except Exception as error:  # noqa: BLE001 - a crash is a finding about this case, reported
            entries.append(CaseEntry(case.id, "error", f"{type(error).__name__}: {error}", problems=(f"{type(error).__name__}: {error}",),
                                     seconds=time.perf_counter() - began))  # fmt: skip
            print(f"{case.id:<{width}}{'':<14}{'':>8}{'':>8}{'':>13}{'':>13}  ERROR {type(error).__name__}: {error}")
            continue
        details = []
        for argument in result.arguments:
            relative = _relative_error(argument)
            failures = [] if argument.passed else _argument_failures(argument)
            kink = _only_kinks(case, argument, failures)
            details.append({
                "argument": argument.name, "passed": argument.passed, "on_kink": kink, "checked": argument.checked, "skipped": argument.skipped,
                "max_abs_error": argument.max_abs_error, "max_rel_error": None if relative != relative else relative,
                **{key: None if value != value else value for key, value in _derivative_errors(argument).items()},
                "failures": failures,
            })  # fmt: skip
            if argument.passed and args.failures_only:
                continue
            verdict = "ok" if argument.passed else (KINK_ONLY if kink else "FAIL " + "; ".join(failures))
            not_applicable = not_applicable or relative != relative
            derivatives = "".join(f"{_cell(value):>10}" for value in _derivative_errors(argument).values())
            print(f"{case.id:<{width}}{argument.name:<14}{argument.checked:>8}{argument.skipped:>8}{argument.max_abs_error:>13.2e}{_rel(relative)}{derivatives}  {verdict}")
        failing = [f"{d['argument']}: {'; '.join(d['failures'])}" for d in details if not d["passed"]]
        on_kink = not result.passed and any(d["on_kink"] for d in details) and all(d["passed"] or d["on_kink"] for d in details)
        status = "passed" if result.passed else ("skipped" if on_kink else "failed")
        entries.append(CaseEntry(case.id, status, f"on a kink, {KINK_ONLY[5:]}: {case.kink}" if on_kink else "\n".join(failing),
                                 details={"mode": result.mode, "order": result.order, "arguments": details}, seconds=time.perf_counter() - began))  # fmt: skip
    elapsed = time.perf_counter() - started
    report = Report("refnorm check", tuple(entries), context={"kinds": kinds, "ops": ops, "cases": list(args.case or ()), "directions": args.directions},
                    subject="check", seconds=elapsed)  # fmt: skip
    failed = sum(e.failed for e in entries)
    kinks = sum(e.status == "skipped" for e in entries)
    print("-" * len(header))
    checked_ops = sorted({c.op for c in selected})
    print(f"{len(selected)} {'/'.join(kinds)} cases over {len(checked_ops)} ops ({', '.join(checked_ops)}): "
          f"{len(selected) - failed - kinks} passed, " + (f"{kinks} on a kink (nothing to compare, none failed), " if kinks else "")
          + f"{failed} failed in {elapsed:.1f} s")  # fmt: skip
    if kinks:
        print("KINK: a case the catalog declares on a kink of the op (refnorm golden list marks them), where finite differences "
              "cannot check a derivative: neither passed nor failed; its gradient there is refnorm's documented one-sided choice, "
              "pinned by the golden set")  # fmt: skip
    if not_applicable:
        print("max rel err n/a: every direction of that argument was judged in absolute terms (its gradient is zero or ~zero, "
              "so no relative error applies)")  # fmt: skip
    print("adjoint: JVP against VJP (relative, exact to rounding); jvp fd, hvp fd: finite differences of the output and of the "
          "backward against the JVP and the second order (relative); symmetry: <w, H u> against <u, H w>; -: not checked")  # fmt: skip
    _emit_reports(report, args)
    return 1 if failed else 0


# --------------------------------------------------------------------------------------------
# refnorm info
# --------------------------------------------------------------------------------------------


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
    from .oracle.golden import SHIPPED

    print(f"shipped golden set: {SHIPPED}")
    return 0


# --------------------------------------------------------------------------------------------
# refnorm golden ...
# --------------------------------------------------------------------------------------------


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
    except (GoldenError, RuntimeError, ValueError, TypeError, OSError) as error:
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
    shown = [case for case in report.cases if _selected(case.id, args.case)]
    if report.cases and _unmatched("--case", args.case, [case.id for case in report.cases]):
        return 2
    for case in shown:
        if case.passed and args.failures_only:
            continue
        status = "ok" if case.passed else "FAIL"
        print(f"{case.id:<52}{status:<8}{_rel(case.max_abs_error)}{_rel(case.max_rel_error)}")
        for problem in case.problems:
            print(f"    {case.file}: {problem}")
    print("-" * len(header))
    failed = sum(not c.passed for c in shown)
    action = f"recomputed on {args.backend}" if not args.no_recompute else "hashes only: values and tolerances not recomputed"
    print(f"{len(shown)} cases: {len(shown) - failed} ok, {failed} failed, {len(report.problems)} set problems ({action}, {elapsed:.1f} s)")
    _emit_reports(_verify_report(report, shown, args, elapsed), args)
    return 0 if shown and not failed and not report.problems else 1


def _verify_report(report: Any, shown: Sequence[Any], args: argparse.Namespace, elapsed: float) -> Report:
    """``refnorm golden verify``'s :class:`~refnorm.oracle.golden.VerifyReport` as a :class:`Report`."""
    entries = tuple(
        CaseEntry(case.id, "passed" if case.passed else "failed", "; ".join(case.problems), problems=tuple(case.problems),
                  details={"file": case.file, "recomputed": case.recomputed, "max_abs_error": case.max_abs_error,
                           "max_rel_error": case.max_rel_error})  # fmt: skip
        for case in shown
    )
    context = {"directory": str(report.directory), "backend": args.backend, "recompute": not args.no_recompute, "cases": list(args.case or ()),
               "expected": report.expected, "missing": list(report.missing)}  # fmt: skip
    return Report("refnorm golden verify", entries, tuple(report.problems), context=context, subject="golden set", seconds=elapsed)


def _golden_compare(args: argparse.Namespace) -> int:
    from .oracle.compare import CompareError, compare_results
    from .oracle.golden import SHIPPED

    against = SHIPPED if args.against in (None, "shipped") else Path(args.against)
    require = tuple(g for g in args.require.split(",") if g) if args.require else ("output", "grad")
    try:
        report = compare_results(
            args.results, against, ops=args.op, cases=args.case, exclude=args.exclude, kinds=args.kind, require=require,
            progress=_ProgressLine("comparing", args.quiet),
        )  # fmt: skip
    except CompareError as error:
        print(f"refnorm golden compare: {error}", file=sys.stderr)
        return 2
    print(f"results {args.results} against golden set {against} ({report.context['golden_selection']} selection, refnorm "
          f"{report.context['golden_refnorm_version']}); required: {', '.join(f'{g}.*' for g in require)}")  # fmt: skip
    for problem in report.problems:
        print(f"  EXTRA {problem}")
    header = f"{'case':<52}{'status':<9}{'dtype':<9}{'arrays':>7}{'worst/tol':>11}"
    print(header)
    print("-" * len(header))
    for entry in report.cases:
        if entry.status == "passed" and args.failures_only:
            continue
        status = "ok" if entry.status == "passed" else ("MISSING" if not entry.comparisons and entry.missing and not entry.problems else "FAIL")
        dtype = ",".join(entry.details.get("dtypes", [])) or "-"
        worst = entry.details.get("worst_ratio")
        print(f"{entry.id:<52}{status:<9}{dtype:<9}{len(entry.comparisons):>7}{'-' if worst is None else f'{worst:.2g}':>11}")
        for line in [c.brief() for c in entry.mismatches] + list(entry.problems) + [f"missing {m}" for m in entry.missing] + [f"extra {e}" for e in entry.extra]:
            if status != "MISSING":
                print(f"    {line}")
    print("-" * len(header))
    for note in report.notes:
        print(f"note: {note}")
    failed = sum(e.failed for e in report.cases)
    missing = sum(1 for e in report.cases if e.failed and not e.comparisons and e.missing and not e.problems)
    print(f"{len(report.cases)} cases: {len(report.cases) - failed} agree, {failed - missing} disagree, {missing} missing; "
          f"{len(report.problems)} extra entries in the results directory")  # fmt: skip
    _emit_reports(report, args)
    return 0 if report.passed else 1


def _error_case_display(case: Case) -> tuple[str, str]:
    """What an error case gives the op that is wrong, and the message refnorm raises for it."""
    from .oracle.evaluation import evaluate

    drawn = OPS[case.op].make_inputs(np.random.default_rng(case.seed), case.params)
    given = case.inputs()
    edits = []
    for name in list(drawn) + [n for n in given if n not in drawn]:
        before, after = drawn.get(name), given.get(name)
        if after is None:
            edits.append(f"no {name}")
        elif before is None:
            edits.append(f"{name} {after.dtype.name} {tuple(after.shape)}")
        elif after.shape != before.shape:
            edits.append(f"{name} of shape {tuple(after.shape)}")
        elif after.dtype != before.dtype:
            edits.append(f"{name} of dtype {after.dtype.name}")
        elif after.dtype.kind == "f" and not bool(np.all(np.isfinite(after))):
            edits.append(f"{name} holding {'NaN' if np.isnan(after).any() else 'inf'}")
        elif not np.array_equal(after, before):
            edits.append(f"{name} edited")
    try:
        evaluate(case.op, case.params, given, seed=case.seed)
    except Exception as error:  # noqa: BLE001 - the message is what we show
        message = f"{type(error).__name__}: {error}"
    else:
        message = f"{case.raises.__name__} (pattern {case.match!r}); refnorm raised nothing here"  # type: ignore[union-attr]
    return ", ".join(edits), message


def _golden_list(args: argparse.Namespace) -> int:
    kinds = args.kind or list(KINDS)
    ops = args.op or list(OPS)
    candidates = [c for kind in kinds for op in ops for c in cases(kind=kind, op=op)]
    if _unmatched("--case", args.case, [c.id for c in candidates]):
        return 2
    selected = [c for c in candidates if _selected(c.id, args.case)]
    entries = []
    for case in selected:
        params = dict(case.params)
        details: dict[str, Any] = {"kind": case.kind, "params": dict(case.params), "note": case.note, "kink": case.kink, "shipped": case.shipped}
        expected = ""
        if case.raises is not None:
            edits, message = _error_case_display(case)
            if "shape" in params and edits and "x of shape" in edits:
                params.pop("shape")
            details["inputs"] = edits
            details["raises"] = {"type": case.raises.__name__, "match": case.match, "message": message}
            expected = (f"  inputs: {edits};" if edits else "") + f"  raises {message}"
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        marks = ("  [on a kink]" if case.kink else "") + ("  [shipped]" if case.kind == "reference" and case.ship else "")
        print(f"{case.id:<52}{case.kind:<10}{shown}{expected}{marks}")
        entries.append({"id": case.id, "op": case.op, "name": case.name, **details})
    print(f"{len(selected)} cases", file=sys.stderr)
    if args.json is not None:
        text = json.dumps(json_data({"schema": "refnorm-catalog", "refnorm_version": __version__, "cases": entries}), indent=2, allow_nan=False) + "\n"
        if args.json == "-":
            args.stdout.write(text)
        else:
            Path(args.json).write_text(text, encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


def _report_options(parser: argparse.ArgumentParser, *, junit: bool = True) -> None:
    parser.add_argument("--json", metavar="PATH", help="write a JSON report to PATH ('-': standard output, the text then goes to standard error)")
    if junit:
        parser.add_argument("--junit-xml", metavar="PATH", help="write a JUnit XML report to PATH ('-': standard output)")


def _case_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", action="append", metavar="GLOB", help="only cases whose id matches this fnmatch pattern (repeatable), e.g. 'switch_norm/official-*'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refnorm", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"refnorm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser(
        "check", help="gradient-check every op over the sample cases",
        description="Gradient-check every op (dot-product tests with Richardson-extrapolated central differences, float64) over the "
                    "catalog's sample cases, or the cases selected; print the largest errors per argument; exit 1 if any check fails.",
    )  # fmt: skip
    check.add_argument("--op", action="append", choices=sorted(OPS), help="only this op (repeatable)")
    _case_option(check)
    check.add_argument("--kind", action="append", choices=("sample", "reference"), help="which cases (repeatable; default sample)")
    check.add_argument("--directions", type=_directions, default=3, help="random directions per argument (default 3)")
    check.add_argument("--order", type=int, choices=(1, 2), default=None,
                       help="1: first order only (backward, JVP); 2: also the second order where the op has one (the default: everything the op has)")  # fmt: skip
    check.add_argument("--failures-only", action="store_true", help="print only the arguments that fail (and the summary)")
    _report_options(check)
    check.set_defaults(run=_check)

    info = commands.add_parser("info", help="version, array backends and devices", description="Print the version, the array backends found and the devices.")
    info.set_defaults(run=_info)

    golden = commands.add_parser(
        "golden", help="golden files: generate, verify, compare, list the catalog",
        description="Golden files: refnorm's values for every catalog case, for implementations in any language (docs/golden-format.md).",
    )  # fmt: skip
    actions = golden.add_subparsers(dest="action", required=True)
    generate = actions.add_parser("generate", help="write a golden set (one .npz per case + manifest.json)",
                                  description="Write a golden set: one .npz per case and a manifest.json with hashes and tolerances.")  # fmt: skip
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
    verify = actions.add_parser("verify", help="check hashes and recompute every case of a golden set",
                                description="Check a golden set's hashes, files and inputs, and recompute every case; exit 1 on any problem.")  # fmt: skip
    verify.add_argument("directory", nargs="?", help="the golden set")
    verify.add_argument("--shipped", action="store_true", help="verify the set shipped inside the package")
    verify.add_argument("--backend", choices=BACKENDS, default="numpy", help="array library recomputing the values")
    verify.add_argument("--kind", action="append", choices=KINDS, help="the set holds only these kinds (repeatable; default all)")
    verify.add_argument("--op", action="append", choices=sorted(OPS), help="the set holds only these ops (repeatable; default all)")
    verify.add_argument(
        "--selection", choices=("all", "shipped"), help="the set's selection (default: all; with --shipped: shipped)"
    )  # fmt: skip
    verify.add_argument("--no-recompute", action="store_true", help="check hashes and catalog consistency only")
    _case_option(verify)
    verify.add_argument("--failures-only", action="store_true", help="print only the cases that fail (and the summary)")
    verify.add_argument("--quiet", action="store_true", help="no progress display")
    _report_options(verify)
    verify.set_defaults(run=_golden_verify)
    compare = actions.add_parser(
        "compare", help="judge another implementation's results files against a golden set",
        description="Judge another implementation's results: RESULTS holds <op>/<case name>.npz files with the arrays it computed under "
                    "the golden names (output.*, grad.*, any intermediate.*), from the golden files' input.* and upstream.*. Each array is "
                    "compared with the case's recommended tolerance for its dtype (float32 or float64). Exit 0 when everything present "
                    "agrees and nothing required is missing, 1 otherwise, 2 on unusable input. docs/golden-format.md has the rules.",
    )  # fmt: skip
    compare.add_argument("results", help="directory of results files, <op>/<case name>.npz")
    compare.add_argument("--against", metavar="GOLDEN_DIR", help="the golden set (default: the one shipped inside the package)")
    compare.add_argument("--op", action="append", help="require only this op's cases (repeatable)")
    _case_option(compare)
    compare.add_argument("--exclude", action="append", metavar="GLOB", help="do not require cases whose id matches (repeatable), e.g. '*gn*'")
    compare.add_argument("--kind", action="append", choices=("sample", "reference"), help="require only these kinds (repeatable; default both)")
    compare.add_argument("--require", metavar="GROUPS", help="comma-separated groups whose every array must be present (default output,grad; "
                                                            "output for a forward-only implementation)")  # fmt: skip
    compare.add_argument("--failures-only", action="store_true", help="print only the cases that fail (and the summary)")
    compare.add_argument("--quiet", action="store_true", help="no progress display")
    _report_options(compare)
    compare.set_defaults(run=_golden_compare)
    listing = actions.add_parser("list", help="print the case catalog", description="Print the case catalog: id, kind, parameters, note.")
    listing.add_argument("--kind", action="append", choices=KINDS, help="only these kinds (repeatable)")
    listing.add_argument("--op", action="append", choices=sorted(OPS), help="only this op (repeatable)")
    _case_option(listing)
    _report_options(listing, junit=False)
    listing.set_defaults(run=_golden_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _check_report_paths(args)
    if problem:
        print(f"refnorm: {problem}", file=sys.stderr)
        return 2
    with _output(args):
        try:
            return args.run(args)
        except _ReportError as error:
            print(f"refnorm: {error}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
