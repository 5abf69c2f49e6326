"""A case's identity: its seed, params and drawn inputs follow from its id, never from other cases.

Golden files hold each case's seed, params, notes and the arrays drawn from its seed, and consumers
pin those files. ``tests/data/catalog_snapshot.json`` (written by ``tests/catalog_snapshot.py``)
records every case as the golden files know it; the tests here require every recorded case to be
unchanged, and every seed to be independent of the catalog's order and of the other cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

import refnorm.oracle.catalog as catalog
from catalog_snapshot import inputs_sha256, load, record
from refnorm.oracle.catalog import Case, CaseMaker, cases, exemplarnorm, sparse_switchnorm, sparsestmax, switchnorm
from refnorm.oracle.catalog.base import REFERENCE_SHAPES
from refnorm.oracle.catalog.seeds import DERIVED_SEEDS, FROZEN_SEEDS, case_seed, derived_seed

SNAPSHOT = {r["id"]: r for r in load()}
ALL = cases()


def test_every_case_of_the_snapshot_is_still_in_the_catalog_unchanged():
    """The golden files depend on these records: seed, params (with their order), notes, kink, ship,
    gradient-checker options, conditioning, tolerances, expected error and the drawn inputs. A
    refactoring of the catalog must leave every one as it is."""
    current = {c.id: c for c in ALL}
    missing = sorted(set(SNAPSHOT) - set(current))
    assert not missing, f"cases removed or renamed: {missing}"
    changed = [i for i, r in SNAPSHOT.items() if json.dumps(record(current[i])) != json.dumps(r)]
    assert not changed, f"cases whose record differs from tests/data/catalog_snapshot.json: {changed}"


def test_every_case_is_in_the_snapshot():
    """New cases are recorded too (``python tests/catalog_snapshot.py --add-new``), so that later changes to them are caught."""
    assert [c.id for c in ALL if c.id not in SNAPSHOT] == []


def test_the_cases_of_refnorm_0_1_keep_their_frozen_seeds():
    assert {c.id: c.seed for c in ALL if c.id in FROZEN_SEEDS} == dict(FROZEN_SEEDS)
    assert all(SNAPSHOT[i]["seed"] == seed for i, seed in FROZEN_SEEDS.items())


SHARED_INPUTS = {"sparse_switch_norm/official-train-4d-edge": "sparse_switch_norm/paper-train-4d-edge"}
"""Cases declared with another case's seed, to see the same inputs (``seed=case_seed(other)``)."""


def test_every_case_draws_from_the_seed_of_its_id():
    """Frozen for the cases of refnorm 0.1.0, derived from the id for the others; nothing else, whatever the order."""
    assert {c.id: c.seed for c in ALL} == {c.id: case_seed(SHARED_INPUTS.get(c.id, c.id)) for c in ALL}


def test_a_case_without_a_frozen_seed_draws_from_its_id():
    case = Case("sparsemax", "K9-example", "sample", {"shape": (2, 9)})
    assert case.seed == derived_seed("sparsemax/K9-example") == case_seed(case.id)
    assert Case("sparsemax", "K9-example", "reference", {"shape": (4, 9)}).seed == case.seed, "the seed depends on the id only"
    assert Case("sparsemax", "K9-other", "sample", {"shape": (2, 9)}).seed != case.seed


def test_the_derived_seed_is_the_sha256_of_the_id_with_the_top_bit_set():
    """Pinned: ``printf %s sparsemax/K9-example | sha256sum`` starts 63691e09; with bit 31 set that is 0xe3691e09.
    A change here re-seeds every case added after refnorm 0.1.0."""
    assert derived_seed("sparsemax/K9-example") == 0xE3691E09
    assert derived_seed("sparsemax/K9-example") == int.from_bytes(hashlib.sha256(b"sparsemax/K9-example").digest()[:4], "big") | 2**31


@pytest.mark.parametrize("hash_seed", ["0", "1", "random"])
def test_the_derived_seed_is_the_same_in_every_process(hash_seed):
    """No use of Python's salted ``hash()``: another interpreter, with another hash seed, derives the same seeds."""
    ids = ["sparsemax/K9-example", "switch_norm/paper-train-new", "exemplar_norm/a-case=with+odd.chars"]
    program = "from refnorm.oracle.catalog.seeds import derived_seed; import sys; print(*[derived_seed(i) for i in sys.argv[1:]])"
    environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
    completed = subprocess.run([sys.executable, "-c", program, *ids], capture_output=True, text=True, check=True, env=environment)
    assert completed.stdout.split() == [str(derived_seed(i)) for i in ids]


def test_derived_seeds_never_equal_a_seed_written_by_hand():
    assert all(s not in DERIVED_SEEDS for s in FROZEN_SEEDS.values())
    assert all(derived_seed(f"op/case-{i}") in DERIVED_SEEDS for i in range(1000))


def test_seeds_are_unique_except_the_frozen_sample_and_error_seeds():
    """Every reference case, and every case added after refnorm 0.1.0, has a seed of its own.

    The shared seeds are those of 0.1.0 and stay for its golden files: every sample and error case
    drew from 0, and the two ``sparse_switch_norm/*-train-4d-edge`` samples from 3 (on purpose: the
    same input under both variants). Sharing a seed never couples two cases' stability (each
    case's seed is fixed by its own id whatever the other cases do); it only means that samples of
    the same op and shape see the same numbers under different configurations, which is how they
    compare a convention or a mode on one input, and an error case's inputs are then edited anyway.
    """
    counts = Counter(c.seed for c in ALL)
    shared = {c.id for c in ALL if counts[c.seed] > 1}
    assert {c.seed for c in ALL if c.id in shared} <= {0, 3}
    assert all(FROZEN_SEEDS.get(i) in (0, 3) and SNAPSHOT[i]["kind"] in ("sample", "error") for i in shared)
    assert len({c.seed for c in ALL if c.kind == "reference"}) == len([c for c in ALL if c.kind == "reference"])


def _seeds_and_inputs(selected: list[Case]) -> dict[str, tuple[int, str]]:
    return {c.id: (c.seed, inputs_sha256(c)) for c in selected}


@pytest.fixture(scope="module")
def baseline() -> dict[str, tuple[int, str]]:
    return _seeds_and_inputs(ALL)


def test_reordering_the_case_sources_changes_no_case(baseline, monkeypatch):
    monkeypatch.setattr(catalog, "CASE_SOURCES", tuple(reversed(catalog.CASE_SOURCES)))
    assert _seeds_and_inputs(cases()) == baseline


def test_inserting_cases_first_in_the_sources_changes_no_other_case(baseline, monkeypatch):
    """Where a counter used to hand out seeds, a case inserted first re-seeded every later one.

    The tables the sources loop over get a new first entry, so that new cases come first in the SN
    samples and in the SN, plain-norm, SSN, EN, EN-embedding and SparsestMax references.
    """
    for family in (switchnorm, sparse_switchnorm, exemplarnorm):
        monkeypatch.setattr(family, "REFERENCE_SHAPES", {"6d": (2, 2, 1, 2, 1, 2), **REFERENCE_SHAPES})
    monkeypatch.setattr(switchnorm, "_SHAPES", {"6d": (2, 2, 1, 2, 1, 2), **switchnorm._SHAPES})
    monkeypatch.setattr(sparsestmax, "_SPARSESTMAX_STAGES", (("K6-1sph", 6, 0.3, 0.1, 1), *sparsestmax._SPARSESTMAX_STAGES))
    grown = cases()
    inserted = [c for c in grown if c.id not in baseline]
    assert {c.op for c in inserted} == {"switch_norm", "plain_norm", "sparse_switch_norm", "exemplar_norm", "en_embedding", "sparsestmax"}
    assert all(c.seed == derived_seed(c.id) for c in inserted)
    assert _seeds_and_inputs([c for c in grown if c.id in baseline]) == baseline


def test_a_new_source_in_front_changes_no_other_case(baseline, monkeypatch):
    extra = CaseMaker("sparsemax", "reference")("K7-inserted", shape=(2, 7))
    monkeypatch.setattr(catalog, "CASE_SOURCES", (lambda: iter([extra]), *catalog.CASE_SOURCES))
    assert _seeds_and_inputs([c for c in cases() if c.id != extra.id]) == baseline


def test_removing_cases_changes_no_other_case(baseline, monkeypatch):
    monkeypatch.setattr(catalog, "CASE_SOURCES", catalog.CASE_SOURCES[1::2])
    after = _seeds_and_inputs(cases())
    assert after == {i: baseline[i] for i in after} and len(after) < len(baseline)


def test_a_case_can_draw_another_cases_inputs_by_naming_its_seed():
    paper, official = (next(c for c in ALL if c.id == f"sparse_switch_norm/{v}-train-4d-edge") for v in ("paper", "official"))
    assert official.seed == case_seed(paper.id)
    for name, array in paper.inputs().items():
        np.testing.assert_array_equal(array, official.inputs()[name])


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "3"])
def test_a_seed_outside_0_to_2_pow_32_is_refused(seed):
    with pytest.raises(ValueError, match="seed must be an int in"):
        Case("sparsemax", "K3", "sample", {"shape": (2, 3)}, seed=seed)
