"""Golden files: refnorm's values for every catalog case, written once, verified byte by byte.

A golden set is a directory::

    manifest.json            what every file holds: cases, parameters, shapes, dtypes, hashes
    manifest.json.sha256     the sha256 of manifest.json (``sha256sum`` format)
    <op>/<case name>.npz     one per case: a ZIP of ``.npy`` files (no pickles)

and nothing else: no other file, no other directory, no symbolic link anywhere (the set directory
itself included). ``docs/golden-format.md`` specifies the format precisely enough to read it from
another language, and says what :func:`verify` proves and what it cannot.

* :func:`generate` evaluates cases (:func:`refnorm.oracle.evaluation.evaluate_case`) and writes a
  set atomically: into a staging directory beside the target, swapped into place in one step. An
  existing non-empty target is replaced only with ``force=True``, and only when it is itself a
  complete golden set; only the files that set lists are removed.
* :func:`verify` recomputes, from this refnorm's catalog, everything a consumer relies on (every
  manifest field, every case's file, arrays, tolerances and expected error) and compares; it checks
  containment, completeness against the catalog, every hash before parsing anything, and never
  raises for a bad set: it reports one line per problem.
* :func:`read_case` loads one case for a comparison (the conformance kit's golden source), with
  the same containment and hash-first checks, raising :class:`GoldenError`.

Generation is deterministic: the same catalog on the same NumPy gives byte-identical files (ZIP
entries in sorted order, fixed timestamps, no compression), so ``git diff`` of a regenerated set
shows only real changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from .catalog import KINDS, OPS, Case, cases
from .evaluation import BACKENDS, GROUPS, Evaluation, draw_tangents, draw_upstream, evaluate, evaluate_case
from .tolerances import DEFAULT_TOLERANCES, DIRECTIONS, RecommendedTolerances, recommended_tolerances

try:  # POSIX: staging directories are guarded by a lock their writer holds while it lives
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SCHEMA = "refnorm-golden"
SCHEMA_VERSION = 2
"""The manifest version :func:`generate` writes: 2 adds the tangents and their outputs (the groups
``tangent``, ``jvp`` and ``hvp``) and the tolerance directions ``jvp`` and ``hvp``."""
READABLE_VERSIONS = (1, 2)
"""Manifest versions :func:`verify`, :func:`load_manifest` and :func:`read_case` read (each has its
own field list, array groups and tolerance directions); any other is refused with the reason. A
version-1 set is verified against what version 1 wrote (:data:`VERSION_GROUPS`)."""

VERSION_GROUPS = {1: GROUPS[:5], 2: GROUPS}
"""The array groups a case file of each schema version holds."""
VERSION_DIRECTIONS = {1: ("forward", "backward"), 2: DIRECTIONS}
"""The tolerance directions a manifest of each schema version holds."""
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

HASH_RULE = "sha256 of each array's elements in C order, little-endian, without the .npy header; file_sha256 of the whole .npz"
COMPARISON_RULES = {
    1: "|actual - expected| <= atol + rtol * |expected| elementwise; forward = output.* and intermediate.*, backward = grad.*",
    2: "|actual - expected| <= atol + rtol * |expected| elementwise; forward = output.* and intermediate.*, backward = grad.*, jvp = jvp.*, hvp = hvp.*",
}
"""The manifest's ``comparison`` field, by schema version."""
COMPARISON_RULE = COMPARISON_RULES[SCHEMA_VERSION]

ALLOWED_KINDS = "biuf"
"""Array dtype kinds a golden file may hold: bool, signed and unsigned integers, floats (values are
float64; other dtypes appear in error cases' inputs and in integer or boolean state)."""

VERIFY_RTOL = 1e-9
"""Recomputation agrees with a stored array when ``|a - e| <= VERIFY_RTOL * |e| + VERIFY_ATOL_SCALE * max|e|``."""
VERIFY_ATOL_SCALE = 1e-12

MAX_MANIFEST_BYTES = 64 * 2**20
"""A manifest larger than this is refused unread (the full catalog's is about 3 MB)."""
MAX_SIDECAR_BYTES = 1024

STAGING_MARK = ".refnorm-staging-"
"""Staging directories of :func:`generate` are named ``.<target name>.refnorm-staging-<token>``
(beside the target, never inside a set), with a lock file ``<that name>.lock`` next to them."""

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CASE_FILE = re.compile(r"[a-z][a-z0-9_]*/[A-Za-z0-9][A-Za-z0-9._+=-]*\.npz")
"""The path of a case file inside a set: ``<op>/<case name>.npz`` (what :func:`case_file` gives)."""
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIDECAR = re.compile(r"([0-9a-f]{64}) [ *]" + re.escape(MANIFEST) + r"\n?")
_CHUNK = 2**20

Progress = Callable[[int, int, str], None]
"""``progress(done, total, case_id)``, called before each case."""


class GoldenError(ValueError):
    """A golden set cannot be written or read as asked (the message says why).

    A ``ValueError``: what was asked (a directory, a manifest, a case) is the wrong value."""


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


def _stream_sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (hex digest), read in 1 MiB chunks (never the whole file at once)."""
    with open(path, "rb") as handle:
        return _stream_sha256(handle)


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
    return _same_json(_json_params("", dict(first)), _json_params("", dict(second)))


def _same_json(a: Any, b: Any) -> bool:
    """Equality of JSON values that also tells ``true`` from ``1`` and ``1`` from ``1.0`` (Python's
    ``==`` does not): a manifest field must be exactly what :func:`generate` writes."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def case_file(case_id: str) -> str:
    """The file of a case inside a set, POSIX-style: ``switch_norm/paper-train-4d.npz``."""
    return f"{case_id}.npz"


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _arrays_of(evaluation: Evaluation, version: int = SCHEMA_VERSION) -> dict[str, np.ndarray]:
    """The arrays a case file of schema ``version`` holds, keyed ``<group>.<name>``."""
    arrays: dict[str, np.ndarray] = {}
    for group, named in evaluation.groups().items():
        if group not in VERSION_GROUPS[version]:
            continue
        for name, array in named.items():
            if not _NAME.fullmatch(name):
                raise GoldenError(f"array name {name!r} (group {group}) is not an identifier; golden keys are <group>.<identifier>")
            arrays[f"{group}.{name}"] = canonical(array)
    return arrays


def _catalog_fields(case: Case) -> dict[str, Any]:
    """The manifest fields of a case that come from the catalog alone (no evaluation)."""
    return {
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
        "expected_error": {"type": case.raises.__name__, "match": case.match} if case.kind == "error" else None,  # type: ignore[union-attr]
    }


def _array_meta(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {key: {"dtype": a.dtype.name, "shape": list(a.shape), "sha256": array_sha256(a)} for key, a in sorted(arrays.items())}


def _tolerances_of(recommended: RecommendedTolerances, version: int) -> tuple[dict[str, Any], list[str]]:
    """The manifest's ``tolerances`` and ``tolerance_notes`` of schema ``version``: its directions only
    (each note starts with ``"<dtype> <direction>"``)."""
    directions = VERSION_DIRECTIONS[version]
    tolerances = {dtype: {d: t for d, t in by.items() if d in directions} for dtype, by in recommended.as_json().items()}

    def kept(note: str) -> bool:
        words = note.split(":", 1)[0].split(" ")
        return not (len(words) == 2 and words[1] in DIRECTIONS) or words[1] in directions

    return tolerances, [n for n in recommended.notes if kept(n)]


def _case_entry(case: Case, backend: str, version: int = SCHEMA_VERSION) -> tuple[dict[str, Any], bytes, Evaluation | None]:
    """:func:`case_entry` as schema ``version`` writes it, and the evaluation it was made from
    (``None`` for error cases)."""
    entry = _catalog_fields(case)
    expected_error = entry.pop("expected_error")
    evaluation = None
    if case.kind == "error":
        arrays = {f"input.{name}": canonical(a) for name, a in case.inputs().items()}
        entry["expected_error"] = expected_error
        entry["tolerances"] = None
        entry["tolerance_notes"] = []
    else:
        evaluation = evaluate_case(case, backend=backend)
        arrays = _arrays_of(evaluation, version)
        recommended = recommended_tolerances(case, reference=evaluation)
        entry["expected_error"] = None
        entry["tolerances"], entry["tolerance_notes"] = _tolerances_of(recommended, version)
    entry["arrays"] = _array_meta(arrays)
    data = npz_bytes(arrays)
    entry["file_sha256"] = hashlib.sha256(data).hexdigest()
    return entry, data, evaluation


def case_entry(case: Case, *, backend: str = "numpy", schema_version: int = SCHEMA_VERSION) -> tuple[dict[str, Any], bytes]:
    """A case's manifest entry and the bytes of its ``.npz`` (evaluated on ``backend``), as schema
    version ``schema_version`` writes them."""
    entry, data, _ = _case_entry(case, backend, schema_version)
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


def _default_tolerances_json(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    directions = VERSION_DIRECTIONS[version]
    return {d: {k: t._asdict() for k, t in by.items() if k in directions} for d, by in DEFAULT_TOLERANCES.items()}


def _header(kinds: tuple[str, ...], ops: tuple[str, ...], selection: str, backend: str, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """Every top-level manifest field but ``cases``, as :func:`generate` writes them now (``version``:
    as that schema version wrote them, for verifying an older set)."""
    from .. import __version__

    return {
        "schema": SCHEMA,
        "schema_version": version,
        "refnorm_version": __version__,
        "numpy_version": np.__version__,
        "backend": backend,
        "kinds": list(kinds),
        "ops": list(ops),
        "selection": selection,
        "selection_rule": SELECTIONS[selection],
        "hash": HASH_RULE,
        "comparison": COMPARISON_RULES[version],
        "default_tolerances": _default_tolerances_json(version),
    }


INFORMATIONAL = ("numpy_version", "backend")
"""Top-level fields :func:`verify` only type-checks: they say how a set was made, and another NumPy
or backend gives the same values to float64 rounding (which is what is checked)."""


def _selection_arguments(kinds: Iterable[str] | None, ops: Iterable[str] | None, selection: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """Checked ``kinds``, ``ops`` (default: all) and ``selection``; ``ValueError``/``TypeError`` naming the argument."""

    def names(argument: str, value: Iterable[str] | None, known: Iterable[str]) -> tuple[str, ...]:
        known = tuple(known)
        if value is None:
            return known
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise TypeError(f"{argument} must be a list of names (from {', '.join(known)}), got {type(value).__name__}")
        value = tuple(value)
        unknown = [v for v in value if not isinstance(v, str) or v not in known]
        if unknown:
            raise ValueError(f"{argument} names unknown {argument} {unknown}; expected some of {', '.join(known)}")
        if len(set(value)) != len(value):
            raise ValueError(f"{argument} names one twice: {list(value)}")
        if not value:
            raise ValueError(f"{argument} is empty; name at least one (or pass None for all)")
        return tuple(k for k in known if k in value)  # the catalog's order: a set's bytes do not depend on how the names were listed

    if not isinstance(selection, str) or selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; expected one of {', '.join(map(repr, SELECTIONS))}")
    return names("kinds", kinds, KINDS), names("ops", ops, OPS), selection


def _path_argument(name: str, value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or (isinstance(value, str) and not value):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {value!r}"[:200])
    return Path(value)


def _options(backend: Any, progress: Any, **flags: Any) -> None:
    """``backend`` one of :data:`~refnorm.oracle.evaluation.BACKENDS`, ``progress`` callable or
    None, each flag a bool (a string such as ``"no"`` would be truthy)."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(map(repr, BACKENDS))}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")


def _selected(kinds: Iterable[str], ops: Iterable[str], selection: str, catalog: list[Case] | None = None) -> list[Case]:
    """The cases of a set of these kinds, ops and selection, in generation order (from ``catalog``,
    the list :func:`~refnorm.oracle.catalog.cases` returns, when the caller has it already)."""
    catalog = catalog if catalog is not None else cases()
    return [c for kind in kinds for op in ops for c in catalog if c.kind == kind and c.op == op and (selection == "all" or c.shipped)]


def generate(
    out: str | os.PathLike[str],
    *,
    kinds: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    backend: str = "numpy",
    force: bool = False,
    progress: Progress | None = None,
    selection: str = "all",
    schema_version: int = SCHEMA_VERSION,
) -> dict[str, Any]:
    """Write the golden set of the selected cases to directory ``out``; return its manifest.

    Parameters
    ----------
    out
        Target directory. It must not exist or be empty, unless ``force``: then it must be a
        complete refnorm golden set (its manifest and sidecar parse and agree, every file it lists
        is there, nothing else is, no symbolic links), of any schema version, and only the files it
        lists are removed. It must not be a symbolic link, nor inside a directory holding a golden
        manifest (the shipped set included), and the current directory must not be inside it
        (replacing it would leave the caller in a removed directory).
    kinds, ops
        Which cases (default: every kind, every op), each name at most once, in any order (the set
        lists them in the catalog's order, so its bytes do not depend on it).
    selection
        ``"all"`` (default) or ``"shipped"``: the cases of the package's own set (:data:`SELECTIONS`).
    backend
        Array library that computes the values (:data:`refnorm.oracle.evaluation.BACKENDS`); inputs are
        drawn on the host either way.
    progress
        Called as ``progress(done, total, case_id)`` before each case.
    schema_version
        The manifest version to write (:data:`READABLE_VERSIONS`; default the newest,
        :data:`SCHEMA_VERSION`). Version 1 has no tangents and no ``jvp``/``hvp`` arrays, for a
        consumer whose harness reads only those (``docs/golden-format.md``).

    Raises
    ------
    GoldenError
        When the target cannot be written or replaced (the message says why).

    Notes
    -----
    Atomic: the set is written to a staging directory ``.<name>.refnorm-staging-<token>`` beside
    ``out`` and swapped with it in one step (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two
    renames, with the old set renamed back if the second fails). Interrupted at any point before the
    swap, ``out`` is untouched; after it, ``out`` is the new complete set. A staging directory left
    by a killed run is recognised by its name and by a lock its writer no longer holds, and is
    removed by the next ``generate`` beside the same target (only the set's own files in it).
    """
    _path_argument("out", out)
    kinds, ops, selection = _selection_arguments(kinds, ops, selection)
    _options(backend, progress, force=force)
    if isinstance(schema_version, bool) or schema_version not in READABLE_VERSIONS:
        raise ValueError(f"schema_version must be one of {READABLE_VERSIONS}, got {schema_version!r}")
    selected = _selected(kinds, ops, selection)
    if not selected:
        raise GoldenError(f"no cases of kinds {list(kinds)} for ops {list(ops)} in selection {selection!r}")
    target = _target(out)
    _clean_stale_staging(target)  # first: it may put back a set a killed run had moved aside
    replaced = _replaceable(target, force)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GoldenError(f"cannot create the parent directory of {target}: {error}") from None
    with _Staging(target) as staging:
        entries = []
        for done, case in enumerate(selected):
            if progress is not None:
                progress(done, len(selected), case.id)
            entry, data = case_entry(case, backend=backend, schema_version=schema_version)
            staging.write(entry["file"], data)
            entries.append(entry)
        if progress is not None:
            progress(len(selected), len(selected), "")
        manifest = {**_header(kinds, ops, selection, backend, schema_version), "cases": entries}
        text = manifest_bytes(manifest)
        staging.write(MANIFEST, text)
        staging.write(MANIFEST_HASH, f"{hashlib.sha256(text).hexdigest()}  {MANIFEST}\n".encode())
        staging.commit(replaced)
    return manifest


def _target(out: str | os.PathLike[str]) -> Path:
    """The absolute target directory of :func:`generate`; ``GoldenError`` for one it must not touch."""
    path = Path(out)
    if path.is_symlink():
        raise GoldenError(f"{out} is a symbolic link; give the directory itself (generate never replaces a link, nor writes through one)")
    target = path.resolve()
    if target.parent == target:
        raise GoldenError(f"{out} is the root of the file system; give a directory below it")
    if target.name.startswith(".") and STAGING_MARK in target.name:
        raise GoldenError(f"{out} is named like a staging directory of generate ('{STAGING_MARK}'); choose another name")
    for ancestor in target.parents:  # a set written inside another would be an extra directory of that one: it would no longer verify
        if any(_lstat(ancestor / name) is not None for name in (MANIFEST, MANIFEST_HASH)):
            raise GoldenError(f"{out} is inside the golden set {ancestor} (it holds {MANIFEST}); a golden set holds nothing else, choose a directory outside it")
    info = _lstat(target)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise GoldenError(f"{out} exists and is not a directory")
    if info is not None:
        cwd = Path.cwd().resolve()
        if cwd == target or target in cwd.parents:
            raise GoldenError(
                f"the current directory {cwd} is inside {out}: generate replaces that directory as a whole, which would leave you "
                "in a removed directory; run it from outside (e.g. from its parent)"
            )
    return target


def _replaceable(target: Path, force: bool) -> list[str] | None:
    """What :func:`generate` may remove at ``target``: ``None`` (nothing there), ``[]`` (an empty
    directory) or the files of the golden set there; ``GoldenError`` for anything else."""
    if _lstat(target) is None:
        return None
    try:
        present = os.listdir(target)
    except OSError as error:
        raise GoldenError(f"cannot read {target}: {error}") from None
    if not present:
        return []
    if not force:
        raise GoldenError(f"{target} already holds files; refusing to overwrite it (pass --force to replace a golden set)")
    try:
        return _set_files(target)
    except GoldenError as error:
        raise GoldenError(f"{target} is not a complete refnorm golden set, so it is not replaced even with --force: {error}") from None


def _set_files(directory: Path) -> list[str]:
    """The files of a structurally complete golden set of any schema version (manifest and sidecar
    parse and agree, every listed file is there, nothing else is, no links); ``GoldenError`` (the
    first reason) otherwise."""
    text, problems = _read_sealed_manifest(directory)
    if text is None:
        raise GoldenError(problems[0])
    manifest, problem = _parse_json(text)
    if problem:
        raise GoldenError(problem)
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise GoldenError(f"{MANIFEST} is not a refnorm golden manifest (no \"schema\": \"{SCHEMA}\")")
    entries = manifest.get("cases")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("file"), str) for e in entries):
        raise GoldenError(f"{MANIFEST} has no list of cases with files")
    files = [e["file"] for e in entries]
    for file in files:
        if not _CASE_FILE.fullmatch(file):
            raise GoldenError(f"{MANIFEST} lists {file!r}, which is not a case file <op>/<case name>.npz inside the set")
    if len(set(files)) != len(files):
        raise GoldenError(f"{MANIFEST} lists a file twice")
    tree = _scan(directory)
    if tree.problems:
        raise GoldenError(tree.problems[0])
    listed = set(files) | {MANIFEST, MANIFEST_HASH}
    extra = sorted(tree.files - listed) + sorted(f"{d}/" for d in tree.directories - _parents(listed))
    missing = sorted(listed - tree.files)
    if extra:
        raise GoldenError(f"it holds {extra[0]}, which its manifest does not list" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    if missing:
        raise GoldenError(f"{missing[0]} is listed but missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return files


def _parents(files: Iterable[str]) -> set[str]:
    return {str(parent) for file in files for parent in PurePosixPath(file).parents if str(parent) != "."}


# --------------------------------------------------------------------------------------------
# Staging, the swap, and what a killed run leaves
# --------------------------------------------------------------------------------------------


RENAME_EXCHANGE = 2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or file system cannot, ``OSError`` for a real failure."""
    function = getattr(_LIBC, "renameat2", None) if _LIBC is not None else None
    if function is None:
        return False
    at_fdcwd = -100
    if function(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - no C library to ask
    _LIBC = None


def _staging_stem(target: Path) -> str:
    return f".{target.name}{STAGING_MARK}"


class _Staging:
    """A staging directory beside ``target``, locked while this process writes it; on any exception
    (``KeyboardInterrupt`` included) before :meth:`commit`, every file it wrote is removed."""

    def __init__(self, target: Path) -> None:
        self.target = target
        name = f"{_staging_stem(target)}{secrets.token_hex(6)}"
        self.path = target.parent / name
        self.old = target.parent / (name + ".old")
        self.lock_path = target.parent / (name + ".lock")
        self.lock: int | None = None
        self.written: list[str] = []
        self.committed = False

    def __enter__(self) -> _Staging:
        try:
            self.lock = _acquire_lock(self.lock_path)
            os.mkdir(self.path)
        except OSError as error:
            self._release()
            raise GoldenError(f"cannot create a staging directory beside {self.target}: {error}") from None
        return self

    def write(self, relative: str, data: bytes) -> None:
        path = self.path / relative
        try:
            path.parent.mkdir(exist_ok=True)
            self.written.append(relative)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                handle = os.fdopen(descriptor, "wb")
            except BaseException:
                os.close(descriptor)
                raise
            with handle:
                handle.write(data)
        except OSError as error:
            raise GoldenError(f"cannot write {relative} into the staging directory {self.path}: {error}") from None

    def commit(self, replaced: list[str] | None) -> None:
        """Put the staged set at the target, then remove what the old one listed."""
        try:
            if replaced is None:
                os.rename(self.path, self.target)
                self.committed = True
                return
            if _exchange(self.path, self.target):
                self.committed = True
                holding = self.path
            else:
                os.rename(self.target, self.old)
                try:
                    os.rename(self.path, self.target)
                except BaseException:
                    os.rename(self.old, self.target)
                    raise
                self.committed = True
                holding = self.old
        except OSError as error:
            raise GoldenError(f"cannot put the new set in place at {self.target}: {error}") from None
        left = _remove_files(holding, [*replaced, MANIFEST, MANIFEST_HASH])
        if left:
            raise GoldenError(
                f"the new set is in place at {self.target}, but the replaced directory held {left[0]}, which its manifest "
                f"did not list (written while generating?); it is kept in {holding}"
            )

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        if kind is not None and not self.committed:
            _remove_files(self.path, self.written)
        self._release()

    def _release(self) -> None:
        if self.lock is None:
            return
        # The lock file stays while a directory it guards is left: a later run recognises it.
        if _lstat(self.path) is None and _lstat(self.old) is None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)
        os.close(self.lock)
        self.lock = None


def _acquire_lock(path: Path) -> int:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    if fcntl is not None:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def _remove_files(directory: Path, files: Iterable[str]) -> list[str]:
    """Remove ``files`` (relative paths, regular files only) from ``directory``, then the
    directories that became empty, then ``directory`` if empty; return what is left (relative)."""
    for relative in files:
        path = directory / relative
        info = _lstat(path)
        if info is not None and stat.S_ISREG(info.st_mode):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    for parent in sorted(_parents(files), key=lambda p: -p.count("/")):
        with contextlib.suppress(OSError):
            os.rmdir(directory / parent)
    with contextlib.suppress(OSError):
        os.rmdir(directory)
    if _lstat(directory) is None:
        return []
    tree = _scan(directory)
    return sorted(tree.files | tree.links | tree.others | {f"{d}/" for d in tree.directories})


def _clean_stale_staging(target: Path) -> None:
    """Remove what killed runs of :func:`generate` for ``target`` left beside it: staging
    directories whose lock no live writer holds (only files of a set's layout are removed). A
    run killed between the two renames of the fallback swap left the old set at ``<staging>.old``
    and no target: it is renamed back first."""
    if fcntl is None:  # pragma: no cover - without locks a live writer cannot be told from a dead one
        return
    stem = _staging_stem(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(stem) and name.endswith(".lock")):
            continue
        lock_path = target.parent / name
        info = _lstat(lock_path)
        if info is None or not stat.S_ISREG(info.st_mode):
            continue
        try:
            descriptor = os.open(lock_path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live generate holds it
            staging = target.parent / name[: -len(".lock")]
            old = staging.parent / (staging.name + ".old")
            if _is_real_directory(old) and _lstat(target) is None:
                with contextlib.suppress(OSError):
                    os.rename(old, target)
            left = []
            for directory in (staging, old):
                if _is_real_directory(directory):
                    left += _remove_files(directory, _layout_files(directory))
            if not left and _lstat(staging) is None and _lstat(old) is None:
                with contextlib.suppress(OSError):
                    os.unlink(lock_path)
        finally:
            os.close(descriptor)


def _layout_files(directory: Path) -> list[str]:
    """The files in ``directory`` that a golden set's layout names (what generate writes)."""
    tree = _scan(directory)
    return sorted(f for f in tree.files if f in (MANIFEST, MANIFEST_HASH) or _CASE_FILE.fullmatch(f))


# --------------------------------------------------------------------------------------------
# Containment: what is in a set directory, and opening its files
# --------------------------------------------------------------------------------------------


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (OSError, ValueError):
        return None


def _is_real_directory(path: Path) -> bool:
    info = _lstat(path)
    return info is not None and stat.S_ISDIR(info.st_mode)


@dataclass(frozen=True)
class _Tree:
    """Everything below a directory, as POSIX relative paths, never following a link."""

    files: set[str]
    directories: set[str]
    links: set[str]
    others: set[str]
    problems: list[str]


def _scan(directory: Path) -> _Tree:
    files: set[str] = set()
    directories: set[str] = set()
    links: set[str] = set()
    others: set[str] = set()
    problems: list[str] = []
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            with os.scandir(directory / relative if relative else directory) as listing:
                found = list(listing)
        except OSError as error:
            problems.append(f"{relative or '.'}/ cannot be listed: {error.strerror or error}")
            continue
        for item in found:
            path = f"{relative}/{item.name}" if relative else item.name
            try:
                mode = item.stat(follow_symlinks=False).st_mode
            except OSError as error:
                problems.append(f"{path} cannot be examined: {error.strerror or error}")
                continue
            if stat.S_ISLNK(mode):
                links.add(path)
                problems.append(f"{path} is a symbolic link; a golden set holds no links")
            elif stat.S_ISDIR(mode):
                directories.add(path)
                pending.append(path)
            elif stat.S_ISREG(mode):
                files.add(path)
            else:
                others.add(path)
                problems.append(f"{path} is not a regular file")
    return _Tree(files, directories, links, others, sorted(problems))


def _directory_problems(directory: Path) -> list[str]:
    """Why ``directory`` cannot be a golden set's directory (it must exist, be a directory, not a
    link, and not be a staging directory of :func:`generate`)."""
    info = _lstat(directory)
    if info is None:
        return [f"{directory} does not exist"]
    if stat.S_ISLNK(info.st_mode):
        return [f"{directory} is a symbolic link; a golden set holds no links, the set directory itself included (verify {directory.resolve()})"]
    if not stat.S_ISDIR(info.st_mode):
        return [f"{directory} is not a directory"]
    if directory.name.startswith(".") and STAGING_MARK in directory.name:
        return [f"{directory} is the staging directory of a generate that did not finish, not a golden set"]
    return []


@contextlib.contextmanager
def _open_inside(directory: Path, relative: str) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``directory/relative`` for reading, with its size, where ``relative`` is a plain
    relative path and no component is a link; ``GoldenError`` (one line) otherwise. Nothing
    outside the set is ever opened."""
    parts = PurePosixPath(relative).parts
    if (
        not relative
        or "\\" in relative
        or PurePosixPath(relative).is_absolute()
        or any(part in ("", ".", "..") for part in relative.split("/"))
    ):
        raise GoldenError(f"{relative!r} is not a relative path inside the set")
    current = directory
    for number, part in enumerate(parts):
        current = current / part
        info = _lstat(current)
        last = number == len(parts) - 1
        if info is None:
            raise GoldenError(f"{relative} is missing")
        if stat.S_ISLNK(info.st_mode):
            raise GoldenError(f"{'/'.join(parts[: number + 1])} is a symbolic link; a golden set holds no links (not followed)")
        if not last and not stat.S_ISDIR(info.st_mode):
            raise GoldenError(f"{'/'.join(parts[: number + 1])} is not a directory")
        if last and not stat.S_ISREG(info.st_mode):
            raise GoldenError(f"{relative} is not a regular file")
    try:
        descriptor = os.open(current, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise GoldenError(f"{relative} cannot be opened: {error.strerror or error}") from None
    try:
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    try:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise GoldenError(f"{relative} is not a regular file")
        yield handle, info.st_size
    except OSError as error:  # a read failing (EIO, ...) is a problem of the set, reported as one
        raise GoldenError(f"{relative} cannot be read: {error.strerror or error}") from None
    finally:
        handle.close()


# --------------------------------------------------------------------------------------------
# The manifest: reading it and its structure
# --------------------------------------------------------------------------------------------


def _read_sealed_manifest(directory: Path) -> tuple[bytes | None, list[str]]:
    """The manifest's bytes once they match the sidecar's hash, or ``None`` and why not."""
    problems = _directory_problems(directory)
    if problems:
        return None, problems
    texts: dict[str, bytes] = {}
    for name, limit in ((MANIFEST, MAX_MANIFEST_BYTES), (MANIFEST_HASH, MAX_SIDECAR_BYTES)):
        try:
            with _open_inside(directory, name) as (handle, size):
                if size > limit:
                    return None, [f"{name} has {size} bytes, more than a refnorm golden set's can have ({limit}); not read"]
                texts[name] = handle.read(size + 1)  # never limit + 1: read() allocates what it is asked for
        except GoldenError as error:
            what = "not a golden set" if name == MANIFEST else "the manifest cannot be checked"
            return None, [f"{directory}: {error} ({what})"]
    try:
        sidecar = texts[MANIFEST_HASH].decode("ascii")
    except UnicodeDecodeError:
        sidecar = ""
    matched = _SIDECAR.fullmatch(sidecar)
    if matched is None:
        return None, [f"{MANIFEST_HASH} is not one line '<64 lowercase hex digits>  {MANIFEST}'"]
    if hashlib.sha256(texts[MANIFEST]).hexdigest() != matched.group(1):
        return None, [f"{directory / MANIFEST} does not match the hash in {MANIFEST_HASH}: the manifest was edited or corrupted"]
    return texts[MANIFEST], []


def _parse_json(text: bytes) -> tuple[Any, str]:
    """Strict JSON: UTF-8, no NaN or Infinity, no key twice in an object; ``(value, "")`` or ``(None, why)``."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"key {next(k for k in keys if keys.count(k) > 1)!r} appears twice in one object")
        return dict(pairs)

    try:
        return json.loads(text.decode("utf-8"), parse_constant=no_constant, object_pairs_hook=unique), ""
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"{MANIFEST} is not valid JSON: {str(error).splitlines()[0][:200]}"


_NUMBER = "number"
_COUNT = "count"
_HEX = "hex64"
_ANY = "any"
_TOLERANCE = ("record", {"rtol": _NUMBER, "atol": _NUMBER})
_TOLERANCES = ("map", ("map", _TOLERANCE))
_ARRAY = ("record", {"dtype": str, "shape": ("list", _COUNT), "sha256": _HEX})
_ENTRY_V1 = ("record", {
    "id": str, "op": str, "name": str, "kind": str, "file": str, "seed": int, "params": ("map", _ANY),
    "arguments": ("list", str), "note": str, "kink": str,
    "expected_error": ("nullable", ("record", {"type": str, "match": str})),
    "tolerances": ("nullable", _TOLERANCES), "tolerance_notes": ("list", str),
    "arrays": ("map", _ARRAY), "file_sha256": _HEX,
})  # fmt: skip
_HEADER_V1 = ("record", {
    "schema": str, "schema_version": int, "refnorm_version": str, "numpy_version": str, "backend": str,
    "kinds": ("list", str), "ops": ("list", str), "selection": str, "selection_rule": str, "hash": str, "comparison": str,
    "default_tolerances": _TOLERANCES, "cases": ("list", _ANY),
})  # fmt: skip
_MANIFEST_FIELDS = {1: (_HEADER_V1, _ENTRY_V1), 2: (_HEADER_V1, _ENTRY_V1)}
"""Per readable schema version: the structure of the manifest's top level and of one case entry.
Version 2 has version 1's fields; what changed is their content (the array groups of
:data:`VERSION_GROUPS`, the tolerance directions of :data:`VERSION_DIRECTIONS`, the comparison rule
of :data:`COMPARISON_RULES`), which :func:`verify` recomputes as the set's own version wrote it. A
new version adds its pair here, bumps :data:`SCHEMA_VERSION`, and keeps the old pairs in
:data:`READABLE_VERSIONS` or drops them (old sets are then refused with the reason)."""


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)  # fmt: skip


def _structure(value: Any, spec: Any, where: str) -> list[str]:
    """Where ``value`` departs from ``spec`` (one line each): ``str``, ``int`` (not a boolean),
    ``"number"`` (finite), ``"count"`` (int >= 0), ``"hex64"``, ``"any"``, ``("list", item)``,
    ``("map", value)`` (object, any keys), ``("record", {key: spec})`` (exactly these keys),
    ``("nullable", spec)``."""
    if spec == _ANY:
        return []
    if spec is str:
        return [] if isinstance(value, str) else [f"{where}: expected a string, got {_type_name(value)}"]
    if spec is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: expected an integer, got {_type_name(value)}"]
    if spec == _NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return [] if ok else [f"{where}: expected a finite number, got {_type_name(value)}"]
    if spec == _COUNT:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return [] if ok else [f"{where}: expected a non-negative integer, got {value!r}"[:200]]
    if spec == _HEX:
        ok = isinstance(value, str) and _HEX64.fullmatch(value) is not None
        return [] if ok else [f"{where}: expected 64 lowercase hex digits, got {_type_name(value)}"]
    kind, inner = spec
    if kind == "nullable":
        return [] if value is None else _structure(value, inner, where)
    if kind == "list":
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {_type_name(value)}"]
        return [p for i, item in enumerate(value) for p in _structure(item, inner, f"{where}[{i}]")]
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {_type_name(value)}"]
    if kind == "map":
        return [p for key, item in value.items() for p in _structure(item, inner, f"{where}[{json.dumps(key)}]")]
    problems = [f"{where}: missing field {key!r}" for key in inner if key not in value]
    problems += [f"{where}: unknown field {key!r}"[:200] for key in value if key not in inner]
    return problems + [p for key, item_spec in inner.items() if key in value for p in _structure(value[key], item_spec, f"{where}.{key}")]


def _manifest_and_problems(directory: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The manifest with a valid top level (cases not yet checked one by one), or ``None`` and why."""
    text, problems = _read_sealed_manifest(directory)
    if text is None:
        return None, problems
    manifest, problem = _parse_json(text)
    if problem:
        return None, [problem]
    if not isinstance(manifest, dict):
        return None, [f"{MANIFEST} holds {_type_name(manifest)}, expected an object"]
    if manifest.get("schema") != SCHEMA:
        return None, [f"{MANIFEST} is not a refnorm golden manifest (schema {str(manifest.get('schema'))[:80]!r}, expected {SCHEMA!r})"]
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > max(READABLE_VERSIONS)
        return None, [
            f"{MANIFEST} has schema version {str(version)[:40]}; this refnorm reads version"
            f" {', '.join(map(str, READABLE_VERSIONS))}" + ("; upgrade refnorm to read it" if newer else "")
        ]
    problems = _structure(manifest, _MANIFEST_FIELDS[version][0], "manifest")
    return (None, problems) if problems else (manifest, [])


def load_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a golden set, after checking it against ``manifest.json.sha256`` and checking
    its structure (every field of every case, by schema version).

    Raises
    ------
    GoldenError
        One line per problem: no set there, a link, a hash mismatch, malformed JSON or fields, an
        unreadable schema version.
    """
    directory = _path_argument("directory", directory)
    manifest, problems = _manifest_and_problems(directory)
    if manifest is not None:
        entry_spec = _MANIFEST_FIELDS[manifest["schema_version"]][1]
        problems = [p for i, entry in enumerate(manifest["cases"]) for p in _structure(entry, entry_spec, f"cases[{i}]")]
    if problems:
        raise GoldenError("\n".join(problems))
    return manifest  # type: ignore[return-value]


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` by key (``"input.x"``, ...); pickles are refused.

    No hash, containment or size check: this reads a file you trust. :func:`read_case` and
    :func:`verify` read golden sets.
    """
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


_DTYPES = {
    np.dtype(t).name: np.dtype(t)
    for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64")
}
"""The dtypes a golden file may hold (:data:`ALLOWED_KINDS`, at most 8 bytes), by manifest name."""


def _declared_problems(declared: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Why a (structurally valid) manifest's ``arrays`` cannot describe a golden file's arrays."""
    problems = []
    for key, meta in declared.items():
        group, _, name = key.partition(".")
        if group not in GROUPS or not _NAME.fullmatch(name):
            problems.append(f"array {key[:80]!r} is not <group>.<identifier> with a group of {', '.join(GROUPS)}")
        if meta["dtype"] not in _DTYPES:
            problems.append(f"array {key[:80]} has dtype {meta['dtype'][:40]!r}; a golden file holds {', '.join(_DTYPES)}")
    return problems


def _npz_size_bound(declared: Mapping[str, Mapping[str, Any]]) -> int:
    """An upper bound of the size of an ``.npz`` of the declared arrays (ZIP and NPY headers
    included); the declared arrays must have passed :func:`_declared_problems`."""
    total = 22  # end of central directory
    for key, meta in declared.items():
        count = math.prod(meta["shape"])
        total += count * _DTYPES[meta["dtype"]].itemsize + 2 * (len(key) + 4) + 76 + 64 * (2 + (len(str(meta["shape"])) + 60) // 64)
    return total


def _read_npz(handle: BinaryIO, declared: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The arrays of a golden ``.npz`` whose hash already matched, read as the format allows and no
    further: stored (uncompressed) entries, exactly the declared keys, NPY 1.0 headers whose dtype
    and shape are the declared ones, data of exactly that size. ``GoldenError`` otherwise; never
    allocates more than the file holds."""
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise GoldenError(f"cannot be read as .npz (ZIP): {error}") from None
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        keys = [name[: -len(".npy")] for name in names if name.endswith(".npy")]
        if len(keys) != len(names) or len(set(keys)) != len(keys):
            raise GoldenError("its ZIP entries are not one <key>.npy per array")
        extra, missing = sorted(set(keys) - set(declared)), sorted(set(declared) - set(keys))
        if extra or missing:
            raise GoldenError("its arrays differ from the manifest's: " + "; ".join(
                [f"array {k} is in the file but not in the manifest" for k in extra]
                + [f"array {k} is listed in the manifest but missing from the file" for k in missing]))  # fmt: skip
        arrays = {}
        for info, key in zip(infos, keys, strict=True):
            meta = declared[key]
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise GoldenError(f"array {key} is compressed or encrypted (ZIP method {info.compress_type}); golden files store entries as they are")
            dtype = _DTYPES[meta["dtype"]]
            count = math.prod(meta["shape"])
            try:
                with archive.open(info) as member:
                    if np.lib.format.read_magic(member) != (1, 0):
                        raise GoldenError(f"array {key} is not NPY format 1.0")
                    shape, fortran, found = np.lib.format.read_array_header_1_0(member)
                    if fortran or found != dtype or list(shape) != list(meta["shape"]):
                        raise GoldenError(f"array {key} is {found} {list(shape)}, the manifest says {meta['dtype']} {meta['shape']}")
                    data = member.read(count * dtype.itemsize + 1)
                    if len(data) != count * dtype.itemsize:
                        raise GoldenError(f"array {key} holds {len(data)} bytes of data, {list(shape)} {dtype} needs {count * dtype.itemsize}")
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
                raise GoldenError(f"array {key} cannot be read: {str(error)[:200]}") from None
            arrays[key] = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    return arrays


def _read_file(directory: Path, entry: Mapping[str, Any], size_bound: int) -> dict[str, np.ndarray]:
    """A case's arrays: containment, size, the file's sha256 (streamed) before any parsing, then
    each array's dtype, shape and sha256 against the manifest; ``GoldenError`` with the first
    problem."""
    problems = _declared_problems(entry["arrays"])
    if problems:
        raise GoldenError(problems[0] + "; not opened")
    with _open_inside(directory, entry["file"]) as (handle, size):
        if size > size_bound:
            raise GoldenError(f"file has {size} bytes, more than its arrays can need ({size_bound}); not read")
        if _stream_sha256(handle) != entry["file_sha256"]:
            raise GoldenError("file does not match its file_sha256 in the manifest (corrupted or edited); not parsed")
        handle.seek(0)
        arrays = _read_npz(handle, entry["arrays"])
    for key, meta in entry["arrays"].items():
        if array_sha256(arrays[key]) != meta["sha256"]:
            raise GoldenError(f"array {key} does not match its sha256 in the manifest (edited or corrupted)")
    return arrays


def _grouped(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    grouped: dict[str, dict[str, np.ndarray]] = {group: {} for group in GROUPS}
    for key, array in arrays.items():
        group, _, name = key.partition(".")
        if group not in grouped or not _NAME.fullmatch(name):
            raise GoldenError(f"array {key} is not <group>.<identifier> with a group of {', '.join(GROUPS)}")
        grouped[group][name] = array
    return grouped


@dataclass(frozen=True)
class GoldenCase:
    """One case read from a golden set: its manifest entry and its arrays by group and name."""

    entry: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]

    @property
    def params(self) -> dict[str, Any]:
        return params_from_json(self.entry["params"])


def read_case(directory: str | os.PathLike[str], case_id: str, manifest: Mapping[str, Any] | None = None) -> GoldenCase:
    """Load case ``case_id`` from a golden set, authenticated as far as one case can be.

    Checks, in order: the manifest (its sidecar hash and structure, :func:`load_manifest`; a
    ``manifest`` passed in is trusted to come from there, its entry is checked again); that the
    entry's ``file`` is exactly ``<case id>.npz``, a regular file inside the set with no link on
    the way (nothing outside the set is opened); the file's size against what its arrays need and
    its sha256 (streamed) *before* it is parsed; every array's dtype, shape and sha256; that the
    entry's catalog fields (op, kind, seed, params, note, expected error, ...), its inputs and
    upstream gradient and its tolerances are what this refnorm's catalog gives for the case
    (tolerances recomputed from the stored values, :func:`refnorm.oracle.tolerances.recommended_tolerances`).
    The stored outputs and gradients are not recomputed: :func:`verify` does that.

    Raises
    ------
    GoldenError
        With the reason (one line per problem).
    """
    directory = _path_argument("directory", directory)
    if not isinstance(case_id, str):
        raise TypeError(f"case_id must be a case id string ('<op>/<case name>'), got {type(case_id).__name__}")
    if manifest is not None and not isinstance(manifest, Mapping):
        raise TypeError(f"manifest must be a manifest from load_manifest or None, got {type(manifest).__name__}")
    manifest = manifest if manifest is not None else load_manifest(directory)
    try:
        entry_spec = _MANIFEST_FIELDS[manifest["schema_version"]][1]
        matching = [e for e in manifest["cases"] if isinstance(e, dict) and e.get("id") == case_id]
    except (KeyError, TypeError, AttributeError):
        raise GoldenError(f"{directory}: the manifest passed in is not a refnorm golden manifest (use load_manifest)") from None
    if not matching:
        raise GoldenError(f"{directory} has no case {case_id!r}")
    if len(matching) > 1:
        raise GoldenError(f"{directory} lists case {case_id!r} {len(matching)} times")
    entry = matching[0]
    problems = _structure(entry, entry_spec, case_id)
    if problems:
        raise GoldenError("\n".join(problems))
    if entry["file"] != case_file(case_id):
        raise GoldenError(f"{case_id}: file {_short(entry['file'])} is not {case_file(case_id)!r}: a case's file is <case id>.npz inside the set; not opened")
    case = _catalog().get(case_id)
    if case is None:
        raise GoldenError(f"this refnorm's catalog has no case {case_id!r}; the set {directory} was made by another version: regenerate it")
    problems = _catalog_problems(entry, case)
    if problems:
        raise GoldenError("\n".join(f"{case_id}: {p}" for p in problems))
    try:
        if _declared_problems(entry["arrays"]):
            raise GoldenError(_declared_problems(entry["arrays"])[0])
        arrays = _read_file(directory, entry, _npz_size_bound(entry["arrays"]))
        grouped = _grouped(arrays)
    except GoldenError as error:
        raise GoldenError(f"{directory / entry['file']}: {error}") from None
    version = manifest["schema_version"]
    problems = _draw_problems(case, grouped)
    if not problems and case.kind != "error":
        problems = _tolerance_problems(entry, case, _stored_evaluation(grouped, None), version)
    if problems:
        raise GoldenError("\n".join(f"{case_id}: {p}" for p in problems))
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
    max_abs_error: float = math.nan
    """Largest ``|recomputed - stored|`` over the case's arrays; NaN where nothing was recomputed
    (an error case, ``recompute=False``, or a case that failed before)."""
    max_rel_error: float = math.nan
    """Largest ``|recomputed - stored| / max|stored|`` over the case's arrays (normwise); NaN as above."""
    recomputed: bool = False

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    """The verification of a golden set: set-level problems and one report per case listed.

    ``expected`` is what the set was verified as: ``{"kinds": [...], "ops": [...], "selection": ...}``.
    """

    directory: Path
    problems: list[str] = field(default_factory=list)
    cases: list[CaseReport] = field(default_factory=list)
    expected: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    """Catalog cases of the recorded kinds, ops and selection that the set does not hold."""
    recompute: bool = True
    """Whether values, tolerances and expected errors were recomputed (``verify(recompute=...)``)."""

    @property
    def passed(self) -> bool:
        """No set problem, no case problem, and at least one case."""
        return not self.problems and bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def failures(self) -> list[str]:
        """Every problem, set-level ones first, each case's prefixed with its case and file."""
        found = list(self.problems)
        for case in self.cases:
            found += [f"{case.id} ({case.file}): {p}" for p in case.problems]
        return found

    def as_json(self) -> dict[str, Any]:
        """The report as JSON data (NaN errors as ``null``)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "directory": str(self.directory),
            "passed": self.passed,
            "expected": self.expected,
            "recompute": self.recompute,
            "problems": list(self.problems),
            "missing": list(self.missing),
            "cases": [
                {"id": c.id, "file": c.file, "passed": c.passed, "problems": list(c.problems), "recomputed": c.recomputed,
                 "max_abs_error": number(c.max_abs_error), "max_rel_error": number(c.max_rel_error)}
                for c in self.cases
            ],
        }  # fmt: skip


def _catalog() -> dict[str, Case]:
    return {c.id: c for c in cases()}


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _differences(recorded: Any, expected: Any, where: str) -> list[tuple[str, Any, Any]]:
    """The innermost places where two JSON values differ: ``(path, recorded, expected)``."""
    if isinstance(recorded, dict) and isinstance(expected, dict) and list(recorded) == list(expected):
        return [d for key in expected for d in _differences(recorded[key], expected[key], f"{where}.{key}")]
    if isinstance(recorded, list) and isinstance(expected, list) and len(recorded) == len(expected):
        return [d for i, (r, e) in enumerate(zip(recorded, expected, strict=True)) for d in _differences(r, e, f"{where}[{i}]")]
    return [] if _same_json(recorded, expected) else [(where, recorded, expected)]


def _mismatch(recorded: Any, expected: Any, where: str, source: str) -> list[str]:
    """One line for a field that differs from what this refnorm gives, naming the innermost place
    (``tolerances.float32.forward.rtol: the manifest says 1e9, this refnorm recommends 1.3e-06``)."""
    found = _differences(recorded, expected, where)
    if not found:
        return []
    path, mine, theirs = found[0]
    more = f" (and {len(found) - 1} more difference{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
    return [f"{path}: the manifest says {_short(mine)}, {source} {_short(theirs)}{more}"]


def _catalog_problems(entry: Mapping[str, Any], case: Case) -> list[str]:
    """Where a (structurally valid) entry's catalog fields differ from this refnorm's case."""
    return [p for key, expected in _catalog_fields(case).items() for p in _mismatch(entry[key], expected, key, "this refnorm's catalog says")]


def _draw_problems(case: Case, grouped: Mapping[str, Mapping[str, np.ndarray]]) -> list[str]:
    """Stored inputs (and upstream gradient) must be the catalog case's seeded draws, bit for bit."""
    problems = []
    drawn = {name: canonical(a) for name, a in case.inputs().items()}
    if set(drawn) != set(grouped["input"]):
        return [f"inputs {sorted(grouped['input'])} differ from the catalog case's {sorted(drawn)}"]
    for name, array in drawn.items():
        stored = grouped["input"][name]
        if array.dtype != stored.dtype or array.shape != stored.shape or array_sha256(array) != array_sha256(stored):
            problems.append(f"input.{name} is not the catalog case's seeded draw")
    if case.kind == "error":
        if any(grouped[g] for g in GROUPS if g != "input"):
            problems.append("an error case holds arrays other than its inputs")
        return problems
    upstream = draw_upstream(case.seed, {name: a.shape for name, a in grouped["upstream"].items()})
    for name, array in upstream.items():
        if array_sha256(array) != array_sha256(grouped["upstream"][name]) or grouped["upstream"][name].dtype != array.dtype:
            problems.append(f"upstream.{name} is not the case's seeded draw")
    if grouped["tangent"]:  # version 2: one tangent per differentiable argument, the case's seeded draw
        arguments = OPS[case.op].arguments
        if set(grouped["tangent"]) != set(arguments):
            return problems + [f"tangents {sorted(grouped['tangent'])} are not one per differentiable argument {list(arguments)}"]
        tangents = draw_tangents(case.seed, {name: drawn[name].shape for name in arguments})
        for name, array in tangents.items():
            stored = grouped["tangent"][name]
            if stored.dtype != array.dtype or stored.shape != array.shape or array_sha256(array) != array_sha256(stored):
                problems.append(f"tangent.{name} is not the case's seeded draw")
    return problems


def _stored_evaluation(grouped: Mapping[str, Mapping[str, np.ndarray]], order: Evaluation | None) -> Evaluation:
    """The stored arrays as an :class:`Evaluation`, in the key order of ``order`` where given (the
    order an evaluation produces them, which decides ties in the tolerance notes)."""
    groups = []
    for group, fresh in zip(GROUPS, order if order is not None else [None] * len(GROUPS), strict=True):
        stored = grouped[group]
        keys = [k for k in fresh if k in stored] + [k for k in stored if k not in fresh] if fresh is not None else list(stored)
        groups.append({k: stored[k] for k in keys})
    return Evaluation(*groups)


def _tolerance_problems(entry: Mapping[str, Any], case: Case, reference: Evaluation, version: int) -> list[str]:
    """The entry's tolerances and notes must be what this refnorm recommends for the case, with the
    stored values as the float64 reference (exactly what :func:`generate` computed), as schema
    ``version`` writes them."""
    try:
        tolerances, notes = _tolerances_of(recommended_tolerances(case, reference=reference), version)
    except Exception as error:  # noqa: BLE001 - a case this refnorm cannot evaluate fails
        return [f"tolerances cannot be recomputed: {type(error).__name__}: {error}"]
    return _mismatch(entry["tolerances"], tolerances, "tolerances", "this refnorm recommends") + _mismatch(
        entry["tolerance_notes"], notes, "tolerance_notes", "this refnorm says"
    )


def _rounding_scales(stored: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The magnitude each stored array's rounding is judged against: the largest entry of the case's
    arrays of the same direction (outputs and intermediates; gradients).

    An array that is zero in exact arithmetic holds only rounding noise (EN's bias gradient at the
    initialisation, of order 1e-14 next to kernel gradients of order 10), and any change of
    summation order changes that noise completely: judged against its own size it would never
    agree "to rounding", judged against the computation that produced it, it does.
    """

    def direction(key: str) -> str:
        group = key.split(".", 1)[0]
        return {"grad": "backward", "jvp": "jvp", "hvp": "hvp"}.get(group, "forward")

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
    with np.errstate(invalid="ignore", over="ignore"):
        scale = max(float(np.max(np.abs(e))), scale or 0.0)
        error = np.abs(a - e)
        error = np.where(np.isnan(error), np.inf, error)
        ok = bool(np.all(error <= VERIFY_RTOL * np.abs(e) + VERIFY_ATOL_SCALE * scale))
        worst = float(error.max())
        return ok, worst, worst / scale if scale > 0 else (0.0 if worst == 0 else math.inf)


def _check_error_case(entry: Mapping[str, Any], grouped: Mapping[str, Mapping[str, np.ndarray]], backend: str, report: CaseReport) -> None:
    """An error case's stored inputs must make the op raise what the entry says."""
    expected = entry["expected_error"]
    try:
        evaluate(entry["op"], params_from_json(entry["params"]), grouped["input"], seed=entry["seed"], backend=backend)
    except Exception as error:  # noqa: BLE001 - we check what was raised
        if type(error).__name__ != expected["type"] or not re.search(expected["match"], str(error)):
            report.problems.append(f"raised {type(error).__name__}({error}), expected {expected['type']} matching {expected['match']!r}")
    else:
        report.problems.append(f"raised nothing, expected {expected['type']} matching {expected['match']!r}")
    report.recomputed = True


def _compare_values(
    expected: Evaluation, grouped: Mapping[str, Mapping[str, np.ndarray]], recorded: Mapping[str, Any], computed: Mapping[str, Any], report: CaseReport
) -> None:
    """Stored outputs, intermediates and gradients against the recomputation, to float64 rounding
    (arrays whose sha256 is the recomputed one are equal bit for bit)."""
    recomputed = {**expected.forward_arrays(), **expected.backward_arrays(), **expected.jvp_arrays(), **expected.hvp_arrays()}
    stored = {f"{g}.{n}": a for g in ("output", "intermediate", "grad", "jvp", "hvp") for n, a in grouped[g].items()}
    scales = _rounding_scales(stored)
    report.max_abs_error = report.max_rel_error = 0.0
    for key in sorted(stored):
        if recorded[key]["sha256"] == computed[key]["sha256"]:
            continue
        ok, abs_error, rel_error = _agree(recomputed[key], stored[key], scales[key])
        report.max_abs_error = max(report.max_abs_error, abs_error)
        report.max_rel_error = max(report.max_rel_error, rel_error)
        if not ok:
            report.problems.append(f"array {key} differs from the recomputed value (max abs error {abs_error:.3e}, rel {rel_error:.3e})")
    report.recomputed = True


def _verify_case(directory: Path, entry: Mapping[str, Any], case: Case, backend: str, recompute: bool, report: CaseReport, version: int) -> None:
    """Everything about one listed catalog case (:func:`verify`'s notes); problems go to ``report``.
    A file is opened only when its entry is right, and parsed only when its hash is."""
    if entry["file"] != case_file(case.id):
        report.problems.append(f"file {_short(entry['file'])} is not {case_file(case.id)!r}: a case's file is <case id>.npz inside the set; not opened")
        return
    report.problems += _catalog_problems(entry, case)
    # Error cases need no evaluation to know their entry: always recomputed.
    known = recompute or case.kind == "error"
    fresh: Evaluation | None = None
    computed: dict[str, Any] = {}
    tolerances_differ = False
    report.problems += _declared_problems(entry["arrays"])
    if report.problems:
        return
    size_bound = _npz_size_bound(entry["arrays"])
    if known:
        try:
            expected_entry, data, fresh = _case_entry(case, backend, version)
        except Exception as error:  # noqa: BLE001 - a case this refnorm cannot evaluate fails
            report.problems.append(f"this refnorm cannot evaluate the case: {type(error).__name__}: {error}")
            return
        computed, size_bound = expected_entry["arrays"], len(data)
        for key in sorted(set(computed) - set(entry["arrays"])):
            report.problems.append(f"array {key} is missing (this refnorm's evaluation of the case has it)")
        for key in sorted(set(entry["arrays"]) - set(computed)):
            report.problems.append(f"array {key} is not an array of the case (this refnorm's evaluation has no such array)")
        for key in sorted(set(computed) & set(entry["arrays"])):
            meta, want = entry["arrays"][key], computed[key]
            if (meta["dtype"], meta["shape"]) != (want["dtype"], want["shape"]):
                report.problems.append(f"array {key} is {meta['dtype']} {meta['shape']} in the manifest, the case's is {want['dtype']} {want['shape']}")
        tolerances_differ = not (
            _same_json(entry["tolerances"], expected_entry["tolerances"]) and _same_json(entry["tolerance_notes"], expected_entry["tolerance_notes"])
        )
        if case.kind == "error" and tolerances_differ:
            report.problems.append("an error case has no tolerances (null) and no tolerance notes ([])")
    if report.problems:
        return
    try:
        grouped = _grouped(_read_file(directory, entry, size_bound))
    except GoldenError as error:
        report.problems.append(str(error))
        return
    report.problems += _draw_problems(case, grouped)
    if report.problems or not recompute:
        return
    if case.kind == "error":
        _check_error_case(entry, grouped, backend, report)
        return
    assert fresh is not None
    if tolerances_differ:
        # Another backend's float64 reference differs from ours at rounding level, which can move
        # a measured float32 tolerance: the stored values are the reference the generator used.
        report.problems += _tolerance_problems(entry, case, _stored_evaluation(grouped, fresh), version)
    _compare_values(fresh, grouped, entry["arrays"], computed, report)


def _header_problems(manifest: Mapping[str, Any], asked: Mapping[str, Any], catalog: list[Case]) -> tuple[list[str], list[Case] | None]:
    """Set-level fields against what this refnorm writes and what the caller asked to verify; and
    the catalog's cases for the recorded kinds, ops and selection (``None`` if they are not valid)."""
    from .. import __version__

    problems = []
    if manifest["refnorm_version"] != __version__:
        problems.append(f"written by refnorm {_short(manifest['refnorm_version'])}, this is {__version__}: regenerate the set")
    recorded = {"kinds": manifest["kinds"], "ops": manifest["ops"], "selection": manifest["selection"]}
    valid = True
    for key, known in (("kinds", KINDS), ("ops", tuple(OPS))):
        value = recorded[key]
        if not value or len(set(value)) != len(value) or any(v not in known for v in value):
            problems.append(f"{key}: {_short(value)} is not a list of distinct {key} of this refnorm ({', '.join(known)})")
            valid = False
    if recorded["selection"] not in SELECTIONS:
        problems.append(f"selection: {_short(recorded['selection'])} is not one of {', '.join(map(repr, SELECTIONS))}")
        valid = False
    if not valid:
        return problems, None
    version = manifest["schema_version"]
    for key, value in _header(tuple(recorded["kinds"]), tuple(recorded["ops"]), recorded["selection"], manifest["backend"], version).items():
        # schema and schema_version were checked when the manifest was read; an older set is
        # compared with what its own version wrote.
        if key not in ("schema", "schema_version", "refnorm_version", *INFORMATIONAL):
            problems += _mismatch(manifest[key], value, key, "this refnorm writes")
    made = {"kinds": sorted(recorded["kinds"]), "ops": sorted(recorded["ops"]), "selection": recorded["selection"]}
    wanted = {"kinds": sorted(asked["kinds"]), "ops": sorted(asked["ops"]), "selection": asked["selection"]}
    differs = [k for k in made if made[k] != wanted[k]]
    if differs:
        problems.append(
            "the set holds " + ", ".join(f"{k} {_short(made[k])}" for k in differs) + "; verify was asked for "
            + ", ".join(f"{k} {_short(wanted[k])}" for k in differs)
            + " (a set made for a subset verifies only when you name it: --kind, --op, --selection; verify(kinds=, ops=, selection=))"
        )  # fmt: skip
    return problems, _selected(recorded["kinds"], recorded["ops"], recorded["selection"], catalog)


def verify(
    directory: str | os.PathLike[str],
    *,
    kinds: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    selection: str = "all",
    backend: str = "numpy",
    recompute: bool = True,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check that ``directory`` is an authentic, complete golden set of this refnorm; never raises
    for a bad set: every problem is a line of the report.

    Parameters
    ----------
    directory
        The set.
    kinds, ops, selection
        What the set must be (default: every kind, every op, selection ``"all"``: the complete
        catalog). A set generated for a subset verifies only when these name that subset; the
        shipped set is ``selection="shipped"``.
    backend
        Array library that recomputes the values (:data:`refnorm.oracle.evaluation.BACKENDS`).
    recompute
        ``False``: check containment, completeness, hashes, structure, the catalog fields and the
        seeded inputs only; values, array lists, tolerances and expected errors of non-error cases
        are then not proven (:attr:`VerifyReport.recompute` says so).
    progress
        Called as ``progress(done, total, case_id)`` before each case.

    Returns
    -------
    VerifyReport
        ``passed`` only when every check below passed and the set holds at least one case.

    Notes
    -----
    In order: the directory (exists, not a link, not a staging directory); the sidecar hash of the
    manifest, then its JSON and its structure (every field, by schema version, no unknown fields);
    every set-level field against what this refnorm writes (``refnorm_version`` must be this one;
    ``numpy_version`` and ``backend`` are informational); the recorded kinds, ops and selection
    against those asked for; the files present against those listed (no other file or directory,
    no link, no special file); completeness (exactly the catalog's cases of the recorded kinds, ops
    and selection, in generation order: missing ones are set problems, unknown and duplicate ones
    case problems). Then per case: every field against the catalog and a fresh evaluation (file
    path exactly ``<case id>.npz``, seed, params, arguments, note, kink, expected error, tolerances
    and their notes, every array's dtype and shape); the file's size and sha256 (streamed) before
    it is parsed; its ZIP and NPY structure without reading more than declared; every array's
    sha256; the inputs and upstream gradient bit for bit against the seeded draws; the outputs,
    intermediates and gradients against the recomputation to float64 rounding; for error cases,
    that the stored inputs raise the recorded exception. ``docs/golden-format.md`` says what this
    proves and what it cannot.
    """
    directory = _path_argument("directory", directory)
    kinds, ops, selection = _selection_arguments(kinds, ops, selection)
    _options(backend, progress, recompute=recompute)
    report = VerifyReport(directory, expected={"kinds": list(kinds), "ops": list(ops), "selection": selection}, recompute=recompute)
    try:
        _verify(report, backend, recompute, progress)
    except Exception as error:  # noqa: BLE001 - never a traceback for a bad set: a failed report
        report.problems.append(f"verification stopped: {type(error).__name__}: {error}")
    return report


def _verify(report: VerifyReport, backend: str, recompute: bool, progress: Progress | None) -> None:
    directory = report.directory
    manifest, problems = _manifest_and_problems(directory)
    if manifest is None:
        report.problems += problems
        return
    everything = cases()
    header_problems, selected = _header_problems(manifest, report.expected, everything)
    report.problems += header_problems
    entries: list[Any] = manifest["cases"]
    entry_spec = _MANIFEST_FIELDS[manifest["schema_version"]][1]
    structures = [_structure(entry, entry_spec, "entry") for entry in entries]

    # Containment: exactly the listed files, no links, nothing else.
    tree = _scan(directory)
    report.problems += tree.problems
    listed = {e["file"] for e, s in zip(entries, structures, strict=True) if not s and _CASE_FILE.fullmatch(e["file"])}
    listed |= {MANIFEST, MANIFEST_HASH}
    for extra in sorted(tree.files - listed) + sorted(tree.others - listed):
        report.problems.append(f"{extra} is not listed in the manifest")
    for extra in sorted(tree.directories - _parents(listed)):
        report.problems.append(f"{extra}/ is not part of the set (a directory holding no listed file)")

    # Completeness: exactly the catalog's cases of the recorded kinds, ops and selection.
    catalog = {c.id: c for c in everything}
    ids = [e["id"] for e, s in zip(entries, structures, strict=True) if not s]
    if not entries:
        report.problems.append("the set holds no cases")
    expected_ids: list[str] | None = None
    if selected is not None:
        expected_ids = [c.id for c in selected]
        held = set(ids)
        report.missing = [i for i in expected_ids if i not in held]
        for missing in report.missing:
            report.problems.append(f"case {missing} is missing (this refnorm's catalog holds it for the set's kinds, ops and selection)")
        if not report.missing and len(ids) == len(entries) and len(set(ids)) == len(ids) and set(ids) == set(expected_ids) and ids != expected_ids:
            report.problems.append("the cases are not in generation order (kinds, then ops, then catalog order)")
    wanted = set(expected_ids) if expected_ids is not None else None
    seen: set[str] = set()

    for done, (entry, structure) in enumerate(zip(entries, structures, strict=True)):
        case_id = entry["id"] if isinstance(entry, dict) and isinstance(entry.get("id"), str) else f"cases[{done}]"
        file = entry["file"] if isinstance(entry, dict) and isinstance(entry.get("file"), str) else "?"
        if progress is not None:
            progress(done, len(entries), case_id)
        case_report = CaseReport(case_id, file)
        report.cases.append(case_report)
        if structure:
            case_report.problems += [p.replace("entry", f"cases[{done}]", 1) for p in structure]
            continue
        if case_id in seen:
            case_report.problems.append("listed twice")
            continue
        seen.add(case_id)
        case = catalog.get(case_id)
        if case is None:
            case_report.problems.append("this refnorm's catalog has no such case; the set was made by another version: regenerate it")
            continue
        if wanted is not None and case_id not in wanted:
            case_report.problems.append("not a case of the set's kinds, ops and selection")
            continue
        try:
            _verify_case(directory, entry, case, backend, recompute, case_report, manifest["schema_version"])
        except Exception as error:  # noqa: BLE001 - never a traceback for a bad set
            case_report.problems.append(f"verification stopped: {type(error).__name__}: {error}")
    if progress is not None:
        progress(len(entries), len(entries), "")
