"""A record of every catalog case as golden files see it, and the snapshot of those records.

Golden files store each case's seed, params, note, kink, tolerances and expected error, and arrays
drawn from its seed; consumers pin them. ``tests/data/catalog_snapshot.json`` holds the record of
every case as it was when the snapshot was taken, and ``tests/test_catalog_identity.py`` requires
every case in it to be unchanged. A refactoring of the catalog must leave it as it is.

Adding cases: ``python tests/catalog_snapshot.py --add-new`` appends the records of the cases the
snapshot does not hold yet, and never rewrites a record it holds (changing one is a change to
golden files, made by hand and explained in the commit).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from refnorm.oracle.catalog import Case, cases
from refnorm.oracle.golden import _json_params

SNAPSHOT = Path(__file__).parent / "data" / "catalog_snapshot.json"


def _ordered(case: Case, mapping: Any) -> list[list[Any]]:
    """A mapping as ``[key, JSON value]`` pairs, so the snapshot also keeps the key order."""
    return [[str(key), _json_params(case.id, value, str(key))] for key, value in dict(mapping).items()]


def inputs_sha256(case: Case) -> str:
    """sha256 of the case's inputs (drawn from its seed, edited for error cases): names, dtypes, shapes, bytes."""
    digest = hashlib.sha256()
    for name, array in sorted(case.inputs().items()):
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def record(case: Case) -> dict[str, Any]:
    """Everything about a case that golden files depend on, as JSON values."""
    return {
        "id": case.id,
        "kind": case.kind,
        "seed": case.seed,
        "params": _ordered(case, case.params),
        "note": case.note,
        "kink": case.kink,
        "ship": case.ship,
        "gradcheck": _ordered(case, case.gradcheck),
        "conditioning": case.conditioning,
        "tolerances": _ordered(case, {dtype: dict(kinds) for dtype, kinds in case.tolerances.items()}),
        "tolerance_reason": case.tolerance_reason,
        "raises": None if case.raises is None else case.raises.__name__,
        "match": case.match,
        "inputs_sha256": inputs_sha256(case),
    }


def load() -> list[dict[str, Any]]:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))["cases"]


def _write(records: list[dict[str, Any]]) -> None:
    SNAPSHOT.parent.mkdir(exist_ok=True)
    # One case per line: a change to a case is a one-line diff.
    about = json.dumps(__doc__.split("\n\n")[1].replace("\n", " "))
    lines = ",\n".join(json.dumps(r, allow_nan=False) for r in records)
    SNAPSHOT.write_text(f'{{"about": {about},\n"cases": [\n{lines}\n]}}\n', encoding="utf-8")


def main(argv: list[str]) -> int:
    if argv == ["--create"] and not SNAPSHOT.exists():
        _write([record(c) for c in cases()])
        return 0
    if argv == ["--add-new"]:
        held = load()
        known = {r["id"] for r in held}
        added = [record(c) for c in cases() if c.id not in known]
        _write(held + added)
        print(f"added {len(added)} cases: {', '.join(r['id'] for r in added) or 'none'}")
        return 0
    print("usage: python tests/catalog_snapshot.py --add-new  (or --create, once, when there is no snapshot)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
