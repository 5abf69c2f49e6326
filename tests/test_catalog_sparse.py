"""The catalog entries and the ``refnorm check`` rows of sparsemax, sparsestmax and SSN."""

from __future__ import annotations

import json

import numpy as np
import pytest

import refnorm
from refnorm.catalog import OPS, cases
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
