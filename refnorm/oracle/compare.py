"""Judge another implementation's results, written as files in any language, against a golden set.

``refnorm golden compare RESULTS [--against GOLDEN_DIR]`` is the oracle for implementations that
cannot call Python: a C++ or CUDA kernel's test harness, a Julia package, a JAX program. The
harness reads the inputs (``input.*``) and upstream gradients (``upstream.*``) of each case from
the golden files, runs the implementation, and writes what it computed under the golden array
names into a directory laid out like a golden set::

    RESULTS/
      switch_norm/paper-train-4d.npz      output.y, grad.x, grad.gamma, ... (and any intermediate.*)
      sparsemax/K3.npz                    output.y, grad.logits

:func:`compare_results` checks every file against the golden case of the same id and returns a
:class:`~refnorm.oracle.reports.Report`. The rules (``docs/golden-format.md`` states them for
implementers):

* **Selection.** The cases required are the golden set's ``sample`` and ``reference`` cases (or
  ``kinds``), narrowed by ``ops`` and ``cases`` (``fnmatch`` patterns on the case id) and minus
  ``exclude``. Every pattern must match a case of the golden set. Error cases hold no values and
  cannot be compared (the conformance kit checks them).
* **Required arrays.** Every ``output.*`` and ``grad.*`` array of a selected case (the groups of
  ``require``); ``intermediate.*``, ``jvp.*`` and ``hvp.*`` arrays are optional, and compared when
  present (``require`` them to check forward mode or second order: ``--require output,grad,jvp,hvp``). A selected case
  without a results file is missing: a failure.
* **Comparison.** Each array with the case's recommended tolerance (from the golden manifest) for
  the array's own dtype, float32 or float64, and its direction (``output``/``intermediate``:
  forward; ``grad``: backward; ``jvp`` and ``hvp``: their own): ``|actual - expected| <= atol + rtol * |expected|``. Integer and
  boolean arrays (SSN's ``new_fixed_*``, SparsestMax's ``sphere_steps``) must be equal. Any other
  dtype (float16, complex, strings) is refused, with the reason. NaN and infinity fail, counted
  and named as such.
* **Inputs.** A results file may hold ``input.*``, ``upstream.*`` and ``tangent.*`` arrays (a harness that copies
  the golden file and adds its results); each must then equal the golden array cast to its dtype,
  bit for bit, or the case fails: its results were computed from other inputs.
* **Extra.** Everything in ``RESULTS`` must be accounted for: a file that is not
  ``<op>/<case name>.npz``, a case the golden set does not have, an array of a name the golden
  case does not have, an unreadable or pickled ``.npz``, a symbolic link (never followed) or
  anything but a regular file is a failure. Results for golden cases outside the selection are
  not compared and are listed as such (not a failure).
* **Unusable input** (``RESULTS`` missing, a golden set that does not verify its manifest hash, a
  pattern that matches nothing): :class:`CompareError`, one line, and the command exits 2.

The golden set is read with :func:`refnorm.oracle.golden.load_manifest` and
:func:`~refnorm.oracle.golden.read_case`, which check the manifest's and each file's hash before
anything is used. Array groups are not hard-coded beyond :data:`COMPARED_GROUPS` and
:data:`GIVEN_GROUPS`: a group added to golden files (tangents and their outputs) is compared as
soon as it is named there with its tolerance direction.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .golden import SHIPPED, GoldenError, load_manifest, read_case
from .reports import CaseEntry, Report
from .tolerances import Comparison, compare

__all__ = ["COMPARED_GROUPS", "DEFAULT_REQUIRED", "GIVEN_GROUPS", "CompareError", "compare_results"]

COMPARED_GROUPS: dict[str, str] = {"output": "forward", "intermediate": "forward", "grad": "backward", "jvp": "jvp", "hvp": "hvp"}
"""Groups of values an implementation computes, each with the manifest's tolerance direction
(``jvp``: the outputs' tangents along ``tangent.*``; ``hvp``: the second order; schema version 2)."""

GIVEN_GROUPS = ("input", "upstream", "tangent")
"""Groups an implementation is given; a results file may repeat them, unchanged."""

DEFAULT_REQUIRED = ("output", "grad")
"""Groups whose every array a results file must hold (``require=`` changes it: ``("output",)``
for a forward-only implementation)."""

FLOAT_DTYPES = ("float32", "float64")

HEADER_ALLOWANCE = 1 << 16
"""Bytes beyond an array's data that an ``.npy`` member may declare (its header); a member declaring
more than its golden array needs is refused before it is decompressed."""

_RESULTS_FILE = re.compile(r"(?P<op>[A-Za-z0-9_]+)/(?P<name>[A-Za-z0-9][A-Za-z0-9._+=-]*)\.npz")
_KEY = re.compile(r"(?P<group>[A-Za-z_][A-Za-z0-9_]*)\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


class CompareError(ValueError):
    """The comparison cannot run as asked (a missing directory, a golden set that does not verify,
    a pattern that matches nothing); the message is one line."""


@dataclass(frozen=True)
class _Found:
    """What a walk of the results directory found: case files by id, and everything else."""

    files: dict[str, Path]
    extra: list[str]


def _walk(results: Path) -> _Found:
    """Every entry below ``results``: ``<op>/<name>.npz`` regular files by case id, the rest as
    problems. Symbolic links are reported and never followed."""
    files: dict[str, Path] = {}
    extra: list[str] = []

    def unreadable(error: OSError) -> None:  # a directory that cannot be listed hides what it holds: a failure
        where = Path(error.filename).relative_to(results).as_posix() if error.filename else "."
        extra.append(f"{where}/: cannot be read ({error.strerror or error})")

    for root, directories, names in os.walk(results, onerror=unreadable, followlinks=False):
        here = Path(root)
        for name in sorted(directories):
            path = here / name
            if path.is_symlink():
                extra.append(f"{path.relative_to(results).as_posix()}/: a symbolic link; not followed")
        directories[:] = sorted(d for d in directories if not (here / d).is_symlink())
        for name in sorted(names):
            path = here / name
            relative = path.relative_to(results).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                extra.append(f"{relative}: a symbolic link; not followed")
            elif not stat.S_ISREG(mode):
                extra.append(f"{relative}: not a regular file")
            elif not relative.endswith(".npz"):
                extra.append(f"{relative}: not an .npz file (a results directory holds only <op>/<case name>.npz)")
            elif not _RESULTS_FILE.fullmatch(relative):
                extra.append(f"{relative}: not at <op>/<case name>.npz")
            else:
                files[relative[: -len(".npz")]] = path
    return _Found(files, extra)


def _select(
    entries: Mapping[str, Mapping[str, Any]],
    ops: Iterable[str] | None,
    patterns: Iterable[str] | None,
    exclude: Iterable[str] | None,
    kinds: Iterable[str] | None,
    against: Path,
) -> list[str]:
    """The ids of the golden cases to require, after checking every option names something."""
    kinds = tuple(kinds) if kinds else ("sample", "reference")
    if "error" in kinds:
        raise CompareError("error cases hold no values to compare; the conformance kit (refnorm.testing) checks them")
    unknown_kinds = [k for k in kinds if k not in ("sample", "reference")]
    if unknown_kinds:
        raise CompareError(f"unknown kind {unknown_kinds[0]!r}; expected 'sample' or 'reference'")
    ops = tuple(ops) if ops else ()
    held_ops = {e["op"] for e in entries.values()}
    for op in ops:
        if op not in held_ops:
            raise CompareError(f"the golden set {against} has no cases of op {op!r} (it has {', '.join(sorted(held_ops))})")
    candidates = [i for i, e in entries.items() if e["kind"] in kinds and (not ops or e["op"] in ops)]
    for what, given in (("--case", patterns), ("--exclude", exclude)):
        for pattern in given or ():
            if not any(fnmatch.fnmatchcase(i, pattern) for i in candidates):
                raise CompareError(f"{what} {pattern!r} matches no {'/'.join(kinds)} case of the golden set {against}" + (f" for {', '.join(ops)}" if ops else ""))
    selected = [
        i for i in candidates
        if (not patterns or any(fnmatch.fnmatchcase(i, p) for p in patterns)) and not any(fnmatch.fnmatchcase(i, p) for p in exclude or ())
    ]  # fmt: skip
    if not selected:
        raise CompareError("the options select no case")
    return selected


def _load_results(path: Path, expected_sizes: Mapping[str, int], largest: int) -> dict[str, np.ndarray]:
    """A results ``.npz``: refused without decompressing when a member declares more bytes than its
    golden array can need; pickles refused; every member loaded."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            limit = expected_sizes.get(key, largest) + HEADER_ALLOWANCE
            if info.file_size > limit:
                raise ValueError(f"member {info.filename} declares {info.file_size} bytes, more than any array of this case needs ({limit})")
    with np.load(path, allow_pickle=False) as npz:
        loaded = {key: npz[key] for key in npz.files}
    for key, value in loaded.items():
        if not isinstance(value, np.ndarray):  # NumPy hands back the raw bytes of a member that is not NPY
            raise ValueError(f"member {key}.npy is not an NPY array ({type(value).__name__})")
    return loaded


def _golden_arrays(arrays: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{group}.{name}": array for group, named in arrays.items() for name, array in named.items()}


def _compare_case(
    case_id: str,
    path: Path,
    entry: Mapping[str, Any],
    golden: Mapping[str, np.ndarray],
    require: tuple[str, ...],
) -> CaseEntry:
    """One results file against its golden case."""
    started = time.perf_counter()
    sizes = {key: 8 * max(int(np.prod(array.shape)), 1) for key, array in golden.items()}
    try:
        results = _load_results(path, sizes, max(sizes.values(), default=0))
    except Exception as error:  # noqa: BLE001 - anything unreadable is a finding about this file
        return CaseEntry(case_id, "failed", f"{case_id}.npz cannot be read as .npz: {type(error).__name__}: {error}",
                         problems=(f"unreadable: {type(error).__name__}: {error}",), seconds=time.perf_counter() - started)  # fmt: skip
    comparisons: list[Comparison] = []
    problems: list[str] = []
    extra: list[str] = []
    dtypes: set[str] = set()
    for key in sorted(results):
        array = results[key]
        match = _KEY.fullmatch(key)
        group = match.group("group") if match else ""
        if key not in golden:
            if group in (*GIVEN_GROUPS, *COMPARED_GROUPS):
                known = ", ".join(k for k in sorted(golden) if k.split(".", 1)[0] == group) or "none"
                extra.append(f"{key}: the golden case has no such array (its {group}.* arrays: {known})")
            else:
                extra.append(f"{key}: not <group>.<name> with a group of {', '.join((*GIVEN_GROUPS, *COMPARED_GROUPS))}")
            continue
        expected = golden[key]
        problem = _dtype_problem(key, array, expected)
        if problem:
            problems.append(problem)
            continue
        if group in GIVEN_GROUPS:
            given = expected.astype(array.dtype) if expected.dtype.kind == "f" else expected
            if array.shape != given.shape or not np.array_equal(array, given, equal_nan=True):
                differ = "shape " + str(array.shape) if array.shape != given.shape else f"{int(np.sum(array != given))} elements"
                problems.append(f"{key} differs from the golden {key} cast to {array.dtype.name} ({differ}): these results were computed from other inputs")
            continue
        direction = COMPARED_GROUPS[group]
        if array.dtype.kind == "f":
            dtypes.add(array.dtype.name)
            tolerance = (entry.get("tolerances") or {}).get(array.dtype.name, {}).get(direction)
            if tolerance is None:
                problems.append(f"{key}: the golden manifest gives no {array.dtype.name} {direction} tolerance for this case")
                continue
            comparisons.append(compare(array, expected, rtol=float(tolerance["rtol"]), atol=float(tolerance["atol"]), array=key))
        else:
            comparisons.append(compare(array, expected, rtol=0.0, atol=0.0, array=key))
    missing = tuple(
        key for key in sorted(golden) if key.split(".", 1)[0] in require and key not in results
    )  # fmt: skip
    mismatches = [c for c in comparisons if not c.passed]
    passed = not (mismatches or problems or extra or missing)
    parts = [
        (f"{len(mismatches)} of {len(comparisons)} arrays differ: ", [c.array for c in mismatches]),
        ("problems: ", [p.split(" ", 1)[0] for p in problems]),
        ("missing: ", list(missing)),
        ("extra: ", [e.split(":", 1)[0] for e in extra]),
    ]
    message = "; ".join(label + ", ".join(names) for label, names in parts if names)
    details = {"file": f"{case_id}.npz", "dtypes": sorted(dtypes), "kind": entry["kind"], "worst_ratio": max((c.ratio for c in comparisons), default=0.0)}
    return CaseEntry(case_id, "passed" if passed else "failed", message, tuple(comparisons), missing, tuple(extra), tuple(problems),
                     details=details, seconds=time.perf_counter() - started)  # fmt: skip


def _dtype_problem(key: str, array: np.ndarray, expected: np.ndarray) -> str:
    """Why ``array`` cannot stand for the golden ``expected`` by its dtype alone ("" if it can)."""
    if expected.dtype.kind == "f":
        if array.dtype.kind != "f" or array.dtype.name not in FLOAT_DTYPES:
            return f"{key} has dtype {array.dtype.name}; expected float32 or float64 (the dtype chooses the tolerance)"
        return ""
    if expected.dtype.kind in "biu":
        if array.dtype.kind not in "biu":
            return f"{key} has dtype {array.dtype.name}; expected an integer or boolean dtype, as the golden {expected.dtype.name}"
        return ""
    return f"{key}: the golden array has dtype {expected.dtype.name}, which compare does not judge"  # pragma: no cover - golden sets hold b, i, u, f only


def compare_results(
    results: str | os.PathLike[str],
    against: str | os.PathLike[str] = SHIPPED,
    *,
    ops: Iterable[str] | None = None,
    cases: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    require: Iterable[str] = DEFAULT_REQUIRED,
    progress: Callable[[int, int, str], None] | None = None,
) -> Report:
    """Compare a results directory with a golden set (module docstring); never raises for what the
    results hold, only :class:`CompareError` for unusable input.

    Parameters
    ----------
    results
        The directory of results files, ``<op>/<case name>.npz``.
    against
        The golden set (default: the one shipped inside the package).
    ops, cases, exclude, kinds
        Which golden cases are required: only these ops, only ids matching one of the ``cases``
        patterns, none matching an ``exclude`` pattern, of these kinds (default sample and reference).
    require
        Groups whose every array must be present (default ``("output", "grad")``).
    progress
        Called as ``progress(done, total, case_id)`` before each case.
    """
    results, against = Path(results), Path(against)
    if not results.exists():
        raise CompareError(f"results directory {results} does not exist")
    if not results.is_dir():
        raise CompareError(f"{results} is not a directory (expected a directory of <op>/<case name>.npz results files)")
    require = tuple(require)
    for group in require:
        if group not in COMPARED_GROUPS:
            raise CompareError(f"--require names {group!r}; expected groups of {', '.join(COMPARED_GROUPS)}")
    try:
        manifest = load_manifest(against)
        entries = {e["id"]: e for e in manifest["cases"]}
    except (GoldenError, OSError, ValueError, KeyError, TypeError) as error:
        raise CompareError(f"golden set {against}: {error}") from error
    selected = _select(entries, ops, cases, exclude, kinds, against)
    for group in require:  # a group no selected case holds would be required vacuously
        if not any(key.split(".", 1)[0] == group for case_id in selected for key in entries[case_id]["arrays"]):
            raise CompareError(
                f"--require names {group!r}, but no selected case of the golden set {against} holds {group}.* arrays"
                + (f" (its schema version {manifest.get('schema_version')} has none)" if group in ("jvp", "hvp") and manifest.get("schema_version") == 1 else "")
            )
    found = _walk(results.resolve())
    problems = list(found.extra)
    not_selected = []
    for case_id in sorted(found.files):
        if case_id in selected:
            continue
        entry = entries.get(case_id)
        if entry is None:
            problems.append(f"{case_id}.npz: the golden set {against} has no case {case_id} (a full set from `refnorm golden generate --out DIR` has every case; compare --against DIR)")
        elif entry["kind"] == "error":
            problems.append(f"{case_id}.npz: {case_id} is an error case, which holds no values to compare")
        else:
            not_selected.append(case_id)
    started = time.perf_counter()
    reported: list[CaseEntry] = []
    for done, case_id in enumerate(selected):
        if progress is not None:
            progress(done, len(selected), case_id)
        entry = entries[case_id]
        if case_id not in found.files:
            reported.append(CaseEntry(case_id, "failed", f"no results file {case_id}.npz", missing=(f"{case_id}.npz",),
                                      details={"file": f"{case_id}.npz", "kind": entry["kind"]}))  # fmt: skip
            continue
        try:
            golden = _golden_arrays(read_case(against, case_id, manifest).arrays)
        except (GoldenError, OSError, ValueError, KeyError) as error:
            raise CompareError(f"golden set {against}: {case_id}: {error}") from error
        reported.append(_compare_case(case_id, found.files[case_id], entry, golden, require))
    if progress is not None:
        progress(len(selected), len(selected), "")
    shown = ", ".join(not_selected[:10]) + (f", ... ({len(not_selected) - 10} more)" if len(not_selected) > 10 else "")
    notes = [f"{len(not_selected)} results files of golden cases outside the selection were not compared: {shown}"] if not_selected else []
    context = {
        "results": str(results), "against": str(against), "golden_refnorm_version": manifest.get("refnorm_version"),
        "golden_selection": manifest.get("selection"), "ops": list(ops or ()), "cases": list(cases or ()), "exclude": list(exclude or ()),
        "kinds": list(kinds or ("sample", "reference")), "require": list(require), "not_selected": not_selected,
    }  # fmt: skip
    return Report("refnorm golden compare", tuple(reported), tuple(problems), tuple(notes), context, subject="results directory",
                  seconds=time.perf_counter() - started)  # fmt: skip
