"""What the catalog covers: every rank, convention, mode and normalizer subset, the SparsestMax stage
counts, ties, centres, fixed sides and the edges bug reports hit. A case that stops covering what its
name says fails here."""

from __future__ import annotations

import numpy as np

from refnorm.oracle.catalog import OPS, cases
from refnorm.ops.sparsestmax import max_radius


def _intermediates(case):
    return OPS[case.op].forward(case.inputs(), case.params).intermediates


def test_exemplar_norm_reference_catalog_covers_modes_mixings_inits_ranks_and_edges():
    reference = cases(kind="reference", op="exemplar_norm")
    params = [c.params for c in reference]
    assert {p["init"] for p in params} == {"default", "random"}
    assert {p.get("mixing", "output") for p in params} == {"output", "statistics"}
    assert {p.get("training", True) for p in params} == {True, False}
    assert {p.get("convention", "paper") for p in params} == {"paper", "official"}
    for init in ("default", "random"):
        for mixing in ("output", "statistics"):
            for training in (True, False):
                ranks = {len(p["shape"]) for p in params if (p["init"], p.get("mixing", "output"), p.get("training", True)) == (init, mixing, training)}
                assert ranks == {2, 3, 4, 5}, (init, mixing, training)
    shapes = [tuple(p["shape"]) for p in params]
    assert any(s[0] == 1 for s in shapes) and any(s[1] == 1 for s in shapes) and any(len(s) > 2 and np.prod(s[2:]) == 1 for s in shapes)
    assert {p.get("kernel_size", 3) for p in params} >= {1, 3, 5, 7}
    assert any("gn" in p.get("normalizers", ()) for p in params)
    assert any(p.get("offset", 0) >= 1e4 for p in params), "large offsets"
    assert {np.sign(p["temperature"]) for p in params if "temperature" in p} == {-1.0, 0.0, 1.0}
    assert any(p.get("running") and p.get("training", True) for p in params), "running statistics updated in training"


def test_switch_norm_reference_catalog_covers_ranks_conventions_modes_and_subsets():
    reference = cases(kind="reference", op="switch_norm")
    assert {len(c.params["shape"]) for c in reference} == {2, 3, 4, 5}
    assert {c.params.get("convention", "paper") for c in reference} == {"paper", "official"}
    assert {c.params.get("training", True) for c in reference} == {True, False}
    assert {tuple(c.params["normalizers"]) for c in reference} >= {("in",), ("ln",), ("bn",), ("gn",), ("in", "ln"), ("gn", "bn", "ln", "in")}
    shapes = [tuple(c.params["shape"]) for c in reference]
    assert any(len(s) > 2 and np.prod(s[2:]) == 1 for s in shapes), "H*W = 1"
    assert any(s[0] == 1 for s in shapes) and any(s[1] == 1 for s in shapes), "N = 1 and C = 1"
    assert any(c.params.get("offset", 0) >= 1e4 for c in reference), "large offsets"
    assert any(c.params.get("logit_std", 1) >= 30 for c in reference), "large logits"
    assert any(c.params.get("logits") == "equal" for c in reference), "tied logits"


def test_sparsestmax_samples_take_the_sphere_steps_they_are_named_after():
    covered = set()
    for case in cases(kind="sample", op="sparsestmax"):
        steps = np.asarray(_intermediates(case)["sphere_steps"])
        if "sphere_steps" in case.params:
            assert np.all(steps == case.params["sphere_steps"]), case.id
        covered.add((case.params["variant"], case.params["shape"][-1], int(np.max(steps))))
    for variant in ("paper", "official"):
        assert {steps for v, _, steps in covered if v == variant} >= {0, 1, 2, 3}
        assert {K for v, K, _ in covered if v == variant} >= {2, 3, 4, 5}


def test_sparse_switch_norm_samples_cover_modes_conventions_and_fixed_sides():
    params = [case.params for case in cases(kind="sample", op="sparse_switch_norm")]
    assert {p.get("training", True) for p in params} == {True, False}
    assert {p.get("convention", "paper") for p in params} == {"paper", "official"}
    assert {p.get("variant", "paper") for p in params} == {"paper", "official"}
    assert any(p.get("fixed", (None, None)) != (None, None) for p in params)


def test_the_edge_pair_of_ssn_samples_shows_the_variants_differ():
    ratios = {}
    for case in cases(kind="sample", op="sparse_switch_norm"):
        if case.name.endswith("-train-4d-edge"):
            ratios[case.params["variant"]] = _intermediates(case)["var_ratios"]
    assert set(ratios) == {"paper", "official"}
    assert np.max(np.abs(ratios["paper"] - ratios["official"])) > 0.1


def test_sparsestmax_reference_cases_cover_every_stage_count_ties_the_centre_and_one_hot():
    reference = cases(kind="reference", op="sparsestmax")
    covered = set()
    for case in reference:
        steps = np.asarray(_intermediates(case)["sphere_steps"])
        if "sphere_steps" in case.params:
            assert np.all(steps == case.params["sphere_steps"]), case.id
        for count in np.unique(steps):
            covered.add((case.params["variant"], case.params["shape"][-1], int(count)))
    for variant in ("paper", "official"):
        for K in (2, 3, 4, 5):
            assert {s for v, k, s in covered if (v, k) == (variant, K)} == set(range(K)), (variant, K)
        radii = {(c.params["radius"], c.params["shape"][-1]) for c in reference if c.params["variant"] == variant}
        assert (0.0, 3) in radii and any(r == max_radius(K) for r, K in radii) and any(r > max_radius(K) for r, K in radii)
        names = {c.name for c in reference if c.params["variant"] == variant}
        assert {f"{variant}-K3-centre", f"{variant}-K3-one-hot-logits", f"{variant}-K3-tie-below-top", f"{variant}-K4-logits1e4"} <= names
    degenerate = [c for c in reference if np.any(_intermediates(c)["degenerate"])]
    assert degenerate and all(c.kink for c in degenerate), "every case at distance zero from a centre says it is on a kink"


def test_sparsemax_reference_cases_cover_K_axes_ties_large_logits_and_one_hot():
    reference = cases(kind="reference", op="sparsemax")
    shapes = [tuple(c.params["shape"]) for c in reference]
    assert {s[-1] for s in shapes} >= {2, 3, 4, 5, 8}
    assert (3,) in shapes and any(1 in s[:-1] for s in shapes) and any(len(s) >= 4 for s in shapes)
    assert any(c.params.get("scale", 1) >= 1e4 for c in reference)
    assert any(np.max(np.abs(c.inputs()["logits"])) >= 2.0**23 for c in reference)
    ties = [c for c in reference if "logits" in c.params and any(len(set(row)) < len(row) for row in c.params["logits"])]
    assert ties


def test_sparse_switch_norm_reference_cases_cover_ranks_fixed_sides_schedule_and_stage_counts():
    reference = cases(kind="reference", op="sparse_switch_norm")
    params = [c.params for c in reference]
    for convention in ("paper", "official"):
        for training in (True, False):
            ranks = {len(p["shape"]) for p in params if (p.get("convention", "paper"), p.get("training", True)) == (convention, training)}
            assert ranks == {2, 3, 4, 5}, (convention, training)
    assert {(p.get("variant", "paper"), p.get("convention", "paper")) for p in params} == {
        ("paper", "paper"), ("official", "official"), ("paper", "official"), ("official", "paper")
    }
    fixed = {tuple(p.get("fixed", (None, None))) for p in params}
    assert {(1, None), (None, 2), (0, 2)} <= fixed
    for training in (True, False):
        assert {tuple(p["fixed"]) for p in params if "fixed" in p and p.get("training", True) == training} >= {(1, None), (None, 2), (0, 2)}
    assert any(p["radius"] == 0.0 for p in params) and any(p["radius"] >= max_radius(3) for p in params)
    steps, newly_fixed = set(), set()
    for case in reference:
        named = _intermediates(case)
        for side in ("mean", "var"):
            if f"{side}_ratio_sphere_steps" in named:
                steps.add(int(named[f"{side}_ratio_sphere_steps"]))
            if case.params.get("fixed", (None, None))[side == "var"] is None and int(named[f"new_fixed_{side}"]) >= 0:
                newly_fixed.add(side)
    assert steps >= {0, 1, 2, 3} and newly_fixed == {"mean", "var"}
