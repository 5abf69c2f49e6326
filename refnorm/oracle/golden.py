"""Golden files: refnorm's values for every catalog case, written once, verified byte by byte.

A golden set is a directory::

    manifest.json            what every file holds: cases, parameters, shapes, dtypes, hashes
    manifest.json.sha256     the sha256 of manifest.json (``sha256sum`` format)
    <op>/<case name>.npz     one per case: a ZIP of ``.npy`` files (no pickles)

``docs/golden-format.md`` specifies the format precisely enough to read it from another language.

* :func:`generate` evaluates cases (:func:`refnorm.oracle.evaluation.evaluate_case`) and writes a set
  atomically: into a temporary directory beside the target, renamed into place at the end. An
  existing non-empty target is replaced only with ``force=True``, and never when it is not a
  golden set (no ``manifest.json``).
* :func:`verify` checks the manifest's own hash, that the files are exactly those listed, every
  file's and every array's sha256, the dtypes and shapes, that the stored inputs are the seeded
  draw of the catalog case of the same name, and recomputes every case from its stored inputs.
* :func:`read_case` loads one case for a comparison (the conformance kit's golden source).

Generation is deterministic: the same catalog on the same NumPy gives byte-identical files (ZIP
entries in sorted order, fixed timestamps, no compression), so ``git diff`` of a regenerated set
shows only real changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import KINDS, OPS, Case, cases
from .evaluation import GROUPS, Evaluation, draw_upstream, evaluate, evaluate_case
from .tolerances import DEFAULT_TOLERANCES, recommended_tolerances

SCHEMA = "refnorm-golden"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.json.sha256"
SHIPPED = Path(__file__).resolve().parent.parent / "golden_data"
"""The golden set shipped with the package (the ``"shipped"`` selection, float64, NumPy)."""

SELECTIONS = {
    "all": "every case of the selected kinds and ops",
    "shipped": (
        "every sample and error case, and the reference cases marked for shipping in the catalog (Case.ship: one or two per "
        "rank, convention and variant, and the edge cases of the bug reports); the set inside the package"
    ),
}
"""Which cases of the selected kinds and ops a set holds (``generate(selection=...)``); the manifest
records the name and its rule, so a regeneration selects the same cases."""

ALLOWED_KINDS = "biuf"
"""Array dtype kinds a golden file may hold: bool, signed and unsigned integers, floats (values are
float64; other dtypes appear in error cases' inputs and in integer or boolean state)."""

VERIFY_RTOL = 1e-9
"""Recomputation agrees with a stored array when ``|a - e| <= VERIFY_RTOL * |e| + VERIFY_ATOL_SCALE * max|e|``."""
VERIFY_ATOL_SCALE = 1e-12

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Progress = Callable[[int, int, str], None]
"""``progress(done, total, case_id)``, called before each case."""


class GoldenError(Exception):
    """A golden set cannot be written or read as asked (the message says why)."""


# --------------------------------------------------------------------------------------------
# Bytes and hashes
# --------------------------------------------------------------------------------------------


def canonical(array: Any) -> np.ndarray:
    """``array`` as stored: a C-ordered, little-endian NumPy array of an allowed dtype."""
    array = np.asarray(array)
    if array.dtype.kind not in ALLOWED_KINDS or array.dtype.itemsize > 8:
        raise GoldenError(f"dtype {array.dtype} cannot be stored in a golden file; expected a bool, integer or float dtype of at most 8 bytes")
    # np.asarray(order="C"), not np.ascontiguousarray, which turns a 0-d array into shape (1,).
    return np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")


def array_sha256(array: Any) -> str:
    """sha256 of an array's data: its elements in C order, little-endian, no header (hex digest).

    Shape and dtype are not hashed; the manifest records them next to the hash, and :func:`verify`
    compares all three.
    """
    return hashlib.sha256(canonical(array).tobytes()).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A deterministic ``.npz``: ZIP_STORED entries ``<key>.npy`` (format 1.0) in sorted key order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            npy = io.BytesIO()
            np.lib.format.write_array(npy, canonical(arrays[key]), version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, npy.getvalue())
    return buffer.getvalue()


NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
"""How a non-finite float parameter (an error case's ``radius=nan``) is written in a manifest:
``{"float": "nan"}``, ``{"float": "inf"}`` or ``{"float": "-inf"}`` (JSON has no NaN or infinity)."""


def _json_params(case_id: str, value: Any, where: str = "params") -> Any:
    """``value`` as JSON data (tuples become lists, non-finite floats ``{"float": "nan"}`` etc.);
    ``GoldenError`` for anything JSON cannot hold exactly."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return {"float": "nan"}
        if math.isinf(value):
            return {"float": "inf" if value > 0 else "-inf"}
        return value
    if isinstance(value, tuple | list):
        return [_json_params(case_id, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _json_params(case_id, v, f"{where}.{k}") for k, v in value.items()}
    raise GoldenError(f"case {case_id}: {where} is a {type(value).__name__}; golden manifests hold JSON values only")


def params_from_json(value: Any) -> Any:
    """Manifest parameters back to catalog form: JSON lists become tuples, ``{"float": "nan"}`` a float."""
    if isinstance(value, list):
        return tuple(params_from_json(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"float"} and value["float"] in NONFINITE:
            return NONFINITE[value["float"]]
        return {k: params_from_json(v) for k, v in value.items()}
    return value


def same_params(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Whether two parameter sets are equal as a manifest writes them (so NaN equals NaN)."""
    return _json_params("", dict(first)) == _json_params("", dict(second))


def case_file(case_id: str) -> str:
    """The file of a case inside a set, POSIX-style: ``switch_norm/paper-train-4d.npz``."""
    return f"{case_id}.npz"


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _arrays_of(evaluation: Evaluation) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for group, named in evaluation.groups().items():
        for name, array in named.items():
            if not _NAME.fullmatch(name):
                raise GoldenError(f"array name {name!r} (group {group}) is not an identifier; golden keys are <group>.<identifier>")
            arrays[f"{group}.{name}"] = canonical(array)
    return arrays


def case_entry(case: Case, *, backend: str = "numpy") -> tuple[dict[str, Any], bytes]:
    """A case's manifest entry and the bytes of its ``.npz`` (evaluated on ``backend``)."""
    entry: dict[str, Any] = {
        "id": case.id,
        "op": case.op,
        "name": case.name,
        "kind": case.kind,
        "file": case_file(case.id),
        "seed": case.seed,
        "params": _json_params(case.id, dict(case.params)),
        "arguments": list(OPS[case.op].arguments),
        "note": case.note,
        "kink": case.kink,
    }
    if case.kind == "error":
        arrays = {f"input.{name}": canonical(a) for name, a in case.inputs().items()}
        entry["expected_error"] = {"type": case.raises.__name__, "match": case.match}  # type: ignore[union-attr]
        entry["tolerances"] = None
        entry["tolerance_notes"] = []
    else:
        evaluation = evaluate_case(case, backend=backend)
        arrays = _arrays_of(evaluation)
        recommended = recommended_tolerances(case, reference=evaluation)
        entry["expected_error"] = None
        entry["tolerances"] = recommended.as_json()
        entry["tolerance_notes"] = list(recommended.notes)
    entry["arrays"] = {
        key: {"dtype": a.dtype.name, "shape": list(a.shape), "sha256": array_sha256(a)} for key, a in sorted(arrays.items())
    }
    data = npz_bytes(arrays)
    entry["file_sha256"] = hashlib.sha256(data).hexdigest()
    return entry, data


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _dumps(value: Any, indent: str = "") -> str:
    """JSON with 2-space indentation, but containers nested at most two deep on one line."""
    if _depth(value) <= 2:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    return "[\n" + ",\n".join(f"{inner}{_dumps(v, inner)}" for v in value) + "\n" + indent + "]"


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as written: UTF-8 JSON (2-space indent, small containers on one line),
    keys in insertion order, a final newline."""
    return (_dumps(dict(manifest)) + "\n").encode("utf-8")


def _check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise GoldenError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise GoldenError(f"{out} already holds files; refusing to overwrite it (pass --force to replace a golden set)")
        if not (out / MANIFEST).is_file():
            raise GoldenError(f"{out} holds files but no {MANIFEST}: it is not a golden set, so it is not replaced even with --force")


def _replace_directory(new: Path, out: Path) -> None:
    """Put ``new`` at ``out`` by renames (the old ``out``, if any, is removed only afterwards)."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(new, out)
    shutil.rmtree(old)


def generate(
    out: str | os.PathLike[str],
    *,
    kinds: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    backend: str = "numpy",
    force: bool = False,
    progress: Progress | None = None,
    selection: str = "all",
) -> dict[str, Any]:
    """Write the golden set of the selected cases to directory ``out``; return its manifest.

    Parameters
    ----------
    out
        Target directory. Must not exist or be empty, unless ``force`` and it holds a golden set.
    kinds, ops
        Which cases (default: every kind, every op).
    selection
        ``"all"`` (default) or ``"shipped"``: the cases of the package's own set (:data:`SELECTIONS`).
    backend
        Array library that computes the values (:data:`refnorm.oracle.evaluation.BACKENDS`); inputs are
        drawn on the host either way.
    progress
        Called as ``progress(done, total, case_id)`` before each case.
    """
    from .. import __version__

    out = Path(out)
    kinds = tuple(kinds) if kinds is not None else KINDS
    ops = tuple(ops) if ops is not None else tuple(OPS)
    if selection not in SELECTIONS:
        raise GoldenError(f"unknown selection {selection!r}; expected one of {', '.join(map(repr, SELECTIONS))}")
    selected = [c for kind in kinds for op in ops for c in cases(kind=kind, op=op) if selection == "all" or c.shipped]
    if not selected:
        raise GoldenError(f"no cases of kinds {kinds} for ops {ops} in selection {selection!r}")
    _check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        entries = []
        for done, case in enumerate(selected):
            if progress is not None:
                progress(done, len(selected), case.id)
            entry, data = case_entry(case, backend=backend)
            path = staging / entry["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            entries.append(entry)
        if progress is not None:
            progress(len(selected), len(selected), "")
        manifest = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "refnorm_version": __version__,
            "numpy_version": np.__version__,
            "backend": backend,
            "kinds": list(kinds),
            "ops": list(ops),
            "selection": selection,
            "selection_rule": SELECTIONS[selection],
            "hash": "sha256 of each array's elements in C order, little-endian, without the .npy header; file_sha256 of the whole .npz",
            "comparison": "|actual - expected| <= atol + rtol * |expected| elementwise; forward = output.* and intermediate.*, backward = grad.*",
            "default_tolerances": {d: {k: t._asdict() for k, t in by.items()} for d, by in DEFAULT_TOLERANCES.items()},
            "cases": entries,
        }
        text = manifest_bytes(manifest)
        (staging / MANIFEST).write_bytes(text)
        (staging / MANIFEST_HASH).write_text(f"{hashlib.sha256(text).hexdigest()}  {MANIFEST}\n", encoding="utf-8")
        _replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def load_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a golden set, after checking it against ``manifest.json.sha256``."""
    directory = Path(directory)
    path, sidecar = directory / MANIFEST, directory / MANIFEST_HASH
    if not path.is_file():
        raise GoldenError(f"{directory} has no {MANIFEST}: not a golden set")
    if not sidecar.is_file():
        raise GoldenError(f"{directory} has no {MANIFEST_HASH}: the manifest cannot be checked")
    text = path.read_bytes()
    recorded = sidecar.read_text(encoding="utf-8").split()[0] if sidecar.read_text(encoding="utf-8").split() else ""
    if hashlib.sha256(text).hexdigest() != recorded:
        raise GoldenError(f"{path} does not match the hash in {MANIFEST_HASH}: the manifest was edited or corrupted")
    manifest = json.loads(text)
    if manifest.get("schema") != SCHEMA:
        raise GoldenError(f"{path} is not a refnorm golden manifest (schema {manifest.get('schema')!r})")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise GoldenError(f"{path} has schema version {manifest.get('schema_version')!r}; this refnorm reads version {SCHEMA_VERSION}")
    return manifest


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of a golden ``.npz`` by key (``"input.x"``, ...); pickles are refused."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


@dataclass(frozen=True)
class GoldenCase:
    """One case read from a golden set: its manifest entry and its arrays by group and name."""

    entry: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]

    @property
    def params(self) -> dict[str, Any]:
        return params_from_json(self.entry["params"])


def read_case(directory: str | os.PathLike[str], case_id: str, manifest: Mapping[str, Any] | None = None) -> GoldenCase:
    """Load case ``case_id`` from a golden set, checking its file's and arrays' hashes."""
    directory = Path(directory)
    manifest = manifest if manifest is not None else load_manifest(directory)
    entries = {e["id"]: e for e in manifest["cases"]}
    if case_id not in entries:
        raise GoldenError(f"{directory} has no case {case_id!r}")
    entry = entries[case_id]
    path = directory / entry["file"]
    if file_sha256(path) != entry["file_sha256"]:
        raise GoldenError(f"{path} does not match its file_sha256 in the manifest: corrupted or edited")
    arrays = load_arrays(path)
    grouped: dict[str, dict[str, np.ndarray]] = {group: {} for group in GROUPS}
    for key, array in arrays.items():
        group, name = key.split(".", 1)
        grouped[group][name] = array
    return GoldenCase(entry, grouped)


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


@dataclass
class CaseReport:
    """The verification of one case: problems (empty when it passed) and the recomputation error."""

    id: str
    file: str
    problems: list[str] = field(default_factory=list)
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    """Largest ``|recomputed - stored| / max|stored|`` over the case's arrays (normwise)."""
    recomputed: bool = False

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    """The verification of a golden set: set-level problems and one report per case."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    cases: list[CaseReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and all(c.passed for c in self.cases)

    @property
    def failures(self) -> list[str]:
        """Every problem, set-level ones first, each prefixed with its case and file."""
        found = list(self.problems)
        for case in self.cases:
            found += [f"{case.id} ({case.file}): {p}" for p in case.problems]
        return found


def _rounding_scales(stored: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The magnitude each stored array's rounding is judged against: the largest entry of the case's
    arrays of the same direction (outputs and intermediates; gradients).

    An array that is zero in exact arithmetic holds only rounding noise (EN's bias gradient at the
    initialisation, of order 1e-14 next to kernel gradients of order 10), and any change of
    summation order changes that noise completely: judged against its own size it would never
    agree "to rounding", judged against the computation that produced it, it does.
    """
    def direction(key: str) -> str:
        return "backward" if key.startswith("grad.") else "forward"

    largest: dict[str, float] = {}
    for key, array in stored.items():
        if array.size and np.issubdtype(array.dtype, np.floating):
            magnitude = float(np.max(np.abs(array.astype(np.float64))))
            largest[direction(key)] = max(largest.get(direction(key), 0.0), magnitude)
    return {key: largest.get(direction(key), 0.0) for key in stored}


def _agree(recomputed: np.ndarray, stored: np.ndarray, scale: float | None = None) -> tuple[bool, float, float]:
    """Whether a recomputed array equals a stored one to float64 rounding; max abs and normwise rel error.

    ``scale`` is the magnitude the absolute part of the tolerance is relative to (default: the
    stored array's largest entry; verification passes :func:`_rounding_scales`).
    """
    if recomputed.shape != stored.shape:
        return False, math.inf, math.inf
    a, e = recomputed.astype(np.float64), stored.astype(np.float64)
    if a.size == 0:
        return True, 0.0, 0.0
    scale = max(float(np.max(np.abs(e))), scale or 0.0)
    error = np.abs(a - e)
    error = np.where(np.isnan(error), np.inf, error)
    ok = bool(np.all(error <= VERIFY_RTOL * np.abs(e) + VERIFY_ATOL_SCALE * scale))
    worst = float(error.max())
    return ok, worst, worst / scale if scale > 0 else (0.0 if worst == 0 else math.inf)


def _check_arrays(entry: Mapping[str, Any], arrays: Mapping[str, np.ndarray], report: CaseReport) -> None:
    listed, found = set(entry["arrays"]), set(arrays)
    for key in sorted(listed - found):
        report.problems.append(f"array {key} is listed in the manifest but missing from the file")
    for key in sorted(found - listed):
        report.problems.append(f"array {key} is in the file but not in the manifest")
    for key in sorted(listed & found):
        meta, array = entry["arrays"][key], arrays[key]
        if array.dtype.name != meta["dtype"] or list(array.shape) != meta["shape"]:
            report.problems.append(f"array {key} is {array.dtype.name} {list(array.shape)}, the manifest says {meta['dtype']} {meta['shape']}")
        elif array_sha256(array) != meta["sha256"]:
            report.problems.append(f"array {key} does not match its sha256 in the manifest (edited or corrupted)")


def _check_against_catalog(
    entry: Mapping[str, Any], params: Mapping[str, Any], grouped: Mapping[str, Mapping[str, np.ndarray]], catalog: Mapping[str, Case], report: CaseReport
) -> None:
    """Stored params and inputs must be those of the catalog case of the same id."""
    case = catalog.get(entry["id"])
    if case is None:
        report.problems.append(f"this refnorm's catalog has no case {entry['id']}; the set was made by another version")
        return
    if case.kind != entry["kind"] or not same_params(case.params, params) or case.seed != entry["seed"]:
        report.problems.append("kind, params or seed differ from this refnorm's catalog case of the same id: regenerate the set")
        return
    drawn = case.inputs()
    if case.kind != "error":
        shapes = {name: a.shape for name, a in grouped["upstream"].items()}
        drawn_upstream = draw_upstream(case.seed, shapes)
        for name, array in drawn_upstream.items():
            if not np.array_equal(array, grouped["upstream"][name]):
                report.problems.append(f"upstream.{name} is not the case's seeded draw")
    if set(drawn) != set(grouped["input"]):
        report.problems.append(f"inputs {sorted(grouped['input'])} differ from the catalog case's {sorted(drawn)}")
        return
    for name, array in drawn.items():
        stored = grouped["input"][name]
        if array.dtype != stored.dtype or array.shape != stored.shape or not np.array_equal(array, stored, equal_nan=True):
            report.problems.append(f"input.{name} is not the catalog case's seeded draw")


def _recompute(entry: Mapping[str, Any], params: Mapping[str, Any], grouped: Mapping[str, Mapping[str, np.ndarray]], backend: str, report: CaseReport) -> None:
    op = OPS[entry["op"]]
    if entry["kind"] == "error":
        expected = entry["expected_error"]
        try:
            evaluate(op, params, grouped["input"], seed=entry["seed"], backend=backend)
        except Exception as error:  # noqa: BLE001 - we check what was raised
            if type(error).__name__ != expected["type"] or not re.search(expected["match"], str(error)):
                report.problems.append(f"raised {type(error).__name__}({error}), expected {expected['type']} matching {expected['match']!r}")
        else:
            report.problems.append(f"raised nothing, expected {expected['type']} matching {expected['match']!r}")
        report.recomputed = True
        return
    evaluation = evaluate(op, params, grouped["input"], upstream=grouped["upstream"], backend=backend)
    recomputed = {**evaluation.forward_arrays(), **evaluation.backward_arrays()}
    stored = {f"{g}.{n}": a for g in ("output", "intermediate", "grad") for n, a in grouped[g].items()}
    for key in sorted(set(stored) ^ set(recomputed)):
        where = "stored but not recomputed" if key in stored else "recomputed but not stored"
        report.problems.append(f"array {key} is {where}")
    scales = _rounding_scales(stored)
    for key in sorted(set(stored) & set(recomputed)):
        ok, abs_error, rel_error = _agree(recomputed[key], stored[key], scales[key])
        report.max_abs_error = max(report.max_abs_error, abs_error)
        report.max_rel_error = max(report.max_rel_error, rel_error)
        if not ok:
            report.problems.append(f"array {key} differs from the recomputed value (max abs error {abs_error:.3e}, rel {rel_error:.3e})")
    report.recomputed = True


def verify(
    directory: str | os.PathLike[str],
    *,
    backend: str = "numpy",
    recompute: bool = True,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check a golden set completely (module docstring); never raises for a bad set, reports it."""
    directory = Path(directory)
    report = VerifyReport(directory)
    try:
        manifest = load_manifest(directory)
    except (GoldenError, json.JSONDecodeError, UnicodeDecodeError) as error:
        report.problems.append(str(error))
        return report
    entries = manifest["cases"]
    catalog = {c.id: c for c in cases()}
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    listed = {e["file"] for e in entries} | {MANIFEST, MANIFEST_HASH}
    for extra in sorted(present - listed):
        report.problems.append(f"{extra} is not listed in the manifest")
    for done, entry in enumerate(entries):
        if progress is not None:
            progress(done, len(entries), entry["id"])
        case_report = CaseReport(entry["id"], entry["file"])
        report.cases.append(case_report)
        path = directory / entry["file"]
        if not path.is_file():
            case_report.problems.append("file missing")
            continue
        if file_sha256(path) != entry["file_sha256"]:
            case_report.problems.append("file does not match its file_sha256 in the manifest (corrupted or edited)")
        try:
            arrays = load_arrays(path)
        except Exception as error:  # noqa: BLE001 - any failure to read is a finding
            case_report.problems.append(f"cannot be read as .npz: {type(error).__name__}: {error}")
            continue
        _check_arrays(entry, arrays, case_report)
        grouped: dict[str, dict[str, np.ndarray]] = {group: {} for group in GROUPS}
        for key, array in arrays.items():
            group, _, name = key.partition(".")
            if group not in grouped:
                case_report.problems.append(f"array {key} has an unknown group {group!r}")
                continue
            grouped[group][name] = array
        params = params_from_json(entry["params"])
        _check_against_catalog(entry, params, grouped, catalog, case_report)
        if recompute and entry["op"] in OPS:
            try:
                _recompute(entry, params, grouped, backend, case_report)
            except Exception as error:  # noqa: BLE001 - a case that cannot be recomputed fails
                case_report.problems.append(f"recomputation failed: {type(error).__name__}: {error}")
        elif recompute:
            case_report.problems.append(f"op {entry['op']!r} is unknown to this refnorm; cannot recompute")
    if progress is not None:
        progress(len(entries), len(entries), "")
    return report

