"""The catalog entries and the ``refnorm check`` rows of sparsemax, sparsestmax and SSN."""

from __future__ import annotations

import json

import numpy as np
import pytest

import refnorm
from refnorm.oracle.catalog import OPS, cases
from refnorm.ops.sparsestmax import max_radius
from refnorm.cli import main

NEW_OPS = ("sparsemax", "sparsestmax", "sparse_switch_norm")
SAMPLES = [case for op in NEW_OPS for case in cases(kind="sample", op=op)]


def test_the_new_ops_are_registered():
    assert set(NEW_OPS) <= set(OPS)
    assert {case.op for case in SAMPLES} == set(NEW_OPS)


@pytest.mark.parametrize("case", SAMPLES, ids=lambda case: case.id)
def test_sample_case_passes_the_gradient_check(case):
    op = OPS[case.op]
    inputs = case.inputs()

    def linearized(*point):
        return op.linearize({**inputs, **dict(zip(op.arguments, point, strict=True))}, case.params)

    result = refnorm.gradcheck(linearized, [inputs[name] for name in op.arguments], names=op.arguments, seed=case.seed, **case.gradcheck)
    assert result.passed, result.summary()
    assert all(argument.skipped == 0 for argument in result.arguments)


@pytest.mark.parametrize("case", SAMPLES, ids=lambda case: case.id)
def test_sample_case_is_deterministic_and_serialisable(case):
    first, second = case.inputs(), case.inputs()
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    json.dumps(dict(case.params))
    assert OPS[case.op].intermediates(first, case.params)


def test_sparsestmax_samples_take_the_sphere_steps_they_are_named_after():
    covered = set()
    for case in cases(kind="sample", op="sparsestmax"):
        steps = np.asarray(OPS["sparsestmax"].intermediates(case.inputs(), case.params)["sphere_steps"])
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


@pytest.mark.parametrize("op", NEW_OPS)
def test_refnorm_check_lists_and_passes_the_new_ops(capsys, op):
    assert main(["check", "--op", op, "--directions", "2"]) == 0
    printed = capsys.readouterr().out
    for case in cases(kind="sample", op=op):
        assert case.id in printed
    assert "0 failed" in printed


def test_the_edge_pair_of_ssn_samples_shows_the_variants_differ():
    ratios = {}
    for case in cases(kind="sample", op="sparse_switch_norm"):
        if case.name.endswith("-train-4d-edge"):
            ratios[case.params["variant"]] = OPS[case.op].intermediates(case.inputs(), case.params)["var_ratios"]
    assert set(ratios) == {"paper", "official"}
    assert np.max(np.abs(ratios["paper"] - ratios["official"])) > 0.1


def _intermediates(case):
    return OPS[case.op].intermediates(case.inputs(), case.params)


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


def test_golden_list_marks_the_cases_on_a_kink_and_the_shipped_ones(capsys):
    assert main(["golden", "list", "--op", "sparsestmax", "--kind", "reference"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["sparsestmax/paper-K3-centre"].endswith("[on a kink]  [shipped]")
    assert lines["sparsestmax/paper-K2-centre"].endswith("[on a kink]")
    assert not lines["sparsestmax/paper-K3-1sph-margin"].endswith("]")
