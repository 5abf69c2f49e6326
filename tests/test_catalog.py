"""The case catalog: well-formed cases, error cases that raise what they promise, reference cases
whose backward passes the gradient checker, and plain normalizers equal to a direct computation."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import refnorm
from refnorm.oracle import golden
from refnorm.oracle.catalog import KINDS, OPS, Case, cases
from refnorm.oracle.evaluation import evaluate

ALL = cases()


NO_REFERENCE_CASES = {"en_channel_mean": "a linear mean over channels: its sample cases exercise all of it"}
NO_ERROR_CASES = dict.fromkeys(
    ("en_channel_conv", "en_channel_mean", "en_standardize", "en_softmax"),
    "an internal stage of EN's ratio generator: it validates nothing, exemplar_norm_forward validates its input first",
)


def test_every_op_has_sample_reference_and_error_cases():
    """Every op has cases of every kind, except the EN stages listed (with the reason) above."""
    for op in OPS:
        assert cases(kind="sample", op=op), f"{op} has no sample cases"
        assert bool(cases(kind="reference", op=op)) != (op in NO_REFERENCE_CASES), f"{op}: reference cases vs NO_REFERENCE_CASES"
        assert bool(cases(kind="error", op=op)) != (op in NO_ERROR_CASES), f"{op}: error cases vs NO_ERROR_CASES"


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


def test_case_ids_are_unique_and_usable_as_file_names():
    ids = [c.id for c in ALL]
    assert len(ids) == len(set(ids))
    for case in ALL:
        assert re.fullmatch(r"[a-z_]+/[A-Za-z0-9][A-Za-z0-9._+=-]*", case.id), case.id


def test_case_params_survive_a_json_round_trip():
    """As golden manifests write them: standard JSON (non-finite floats as {"float": "nan"}), read
    back to the same values and types (tuples stay tuples, NaN stays NaN)."""
    for case in ALL:
        text = json.dumps(golden._json_params(case.id, dict(case.params)), allow_nan=False)
        back = golden.params_from_json(json.loads(text))
        assert repr(back) == repr(dict(case.params)), case.id
        assert golden.same_params(back, case.params), case.id


def test_a_non_finite_parameter_is_written_as_a_tagged_string():
    assert golden._json_params("x", {"radius": math.nan, "r": (math.inf, -math.inf, 0.5)}) == {
        "radius": {"float": "nan"}, "r": [{"float": "inf"}, {"float": "-inf"}, 0.5]
    }
    assert math.isnan(golden.params_from_json({"float": "nan"}))
    assert golden.params_from_json({"float": "1.5"}) == {"float": "1.5"}, "only the three names are tags"
    assert golden.same_params({"radius": math.nan}, {"radius": float("nan")})
    assert not golden.same_params({"radius": math.nan}, {"radius": math.inf})


def test_inputs_are_drawn_deterministically_from_the_seed():
    for case in ALL:
        first, second = (OPS[case.op].make_inputs(np.random.default_rng(case.seed), case.params) for _ in range(2))
        given = case.inputs()  # drawn once per case and remembered
        assert first.keys() == second.keys()
        if case.edit is None:
            assert given.keys() == first.keys(), case.id
        for name in first:
            assert np.array_equal(first[name], second[name], equal_nan=True), (case.id, name)
            if case.edit is None:
                assert np.array_equal(given[name], first[name], equal_nan=True), (case.id, name)


def test_inputs_are_fresh_copies_every_time():
    case = cases(kind="sample", op="switch_norm")[0]
    first = case.inputs()
    first["x"][...] = np.nan
    assert np.all(np.isfinite(case.inputs()["x"]))


def test_reference_catalog_covers_ranks_conventions_modes_and_subsets():
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


@pytest.mark.parametrize("case", cases(kind="error"), ids=lambda c: c.id)
def test_error_case_raises_the_expected_exception_and_message(case, backend):
    inputs = case.inputs()
    with pytest.raises(case.raises, match=case.match):
        moved = {name: backend.asarray(array) for name, array in inputs.items()}
        OPS[case.op].linearize(moved, case.params)


def _gradcheck(case):
    op = OPS[case.op]
    inputs = case.inputs()

    def linearized(*point):
        return op.linearize({**inputs, **dict(zip(op.arguments, point, strict=True))}, case.params)

    return refnorm.gradcheck(linearized, [inputs[n] for n in op.arguments], names=op.arguments, seed=case.seed, **case.gradcheck)


@pytest.mark.parametrize("case", [c for c in cases(kind="reference") if not c.kink], ids=lambda c: c.id)
def test_reference_case_backward_passes_the_gradient_checker(case):
    result = _gradcheck(case)
    assert result.passed, f"{case.id}\n{result}"


@pytest.mark.parametrize("case", [c for c in cases() if c.kink], ids=lambda c: c.id)
def test_a_case_on_a_kink_is_on_one_and_agrees_with_finite_differences_elsewhere(case):
    """A case that declares a kink (Case.kink) has directions the checker skips as crossing it, and
    no direction that fails: arguments the kink does not involve still check."""
    result = _gradcheck(case)
    directions = [d for argument in result.arguments for d in argument.directions]
    assert not [d for d in directions if d.status == "failed"], f"{case.id}\n{result}"
    assert any(d.status == "skipped" for d in directions), f"{case.id} claims a kink, but no direction crosses one\n{result}"


def test_a_case_must_be_well_formed():
    with pytest.raises(ValueError, match="kind 'big'"):
        Case("switch_norm", "x", "big", {})
    with pytest.raises(ValueError, match="file names"):
        Case("switch_norm", "a/b", "sample", {})
    with pytest.raises(ValueError, match="raises= and match="):
        Case("switch_norm", "bad", "error", {})
    with pytest.raises(ValueError, match="tolerance_reason"):
        Case("switch_norm", "loose", "sample", {}, tolerances={"float32": {"forward": (1e-3, 1e-3)}})


def test_unknown_kind_or_op_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown kind 'samples'"):
        cases(kind="samples")
    with pytest.raises(ValueError, match="unknown op 'batch_norm'"):
        cases(op="batch_norm")


def _direct(x, gamma, beta, normalizer, groups, eps):
    """IN / LN / BN / GN computed directly with NumPy over each scope's axes (biased variance)."""
    N, C = x.shape[:2]
    spatial = tuple(range(2, x.ndim))
    if normalizer == "gn":
        grouped = x.reshape(N, groups, -1)
        mean = grouped.mean(axis=2, keepdims=True)
        var = grouped.var(axis=2, keepdims=True)
        xhat = ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)
    else:
        axes = {"in": spatial, "ln": (1, *spatial), "bn": (0, *spatial)}[normalizer]
        mean = x.mean(axis=axes, keepdims=True)
        xhat = (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    shape = (1, C) + (1,) * len(spatial)
    return gamma.reshape(shape) * xhat + beta.reshape(shape)


@pytest.mark.parametrize("normalizer, groups", [("in", None), ("ln", None), ("bn", None), ("gn", 2)])
def test_plain_norm_in_training_is_the_textbook_normalizer(normalizer, groups, rng):
    x = rng.standard_normal((3, 4, 2, 5)) * 2.0 + 0.5
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    y = refnorm.plain_norm_forward(x, gamma, beta, normalizer=normalizer, groups=groups).y
    np.testing.assert_allclose(y, _direct(x, gamma, beta, normalizer, groups, 1e-5), rtol=1e-12, atol=1e-12)


def test_plain_norm_is_switch_norm_with_one_normalizer(rng):
    x = rng.standard_normal((3, 4, 2, 2))
    gamma, beta, logit = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(1)
    plain = evaluate("plain_norm", {"shape": x.shape, "normalizer": "ln", "convention": "official"}, {"x": x, "gamma": gamma, "beta": beta})
    sn = evaluate("switch_norm", {"shape": x.shape, "normalizers": ("ln",), "convention": "official"},
                  {"x": x, "gamma": gamma, "beta": beta, "mean_logits": logit, "var_logits": logit})  # fmt: skip
    np.testing.assert_array_equal(plain.outputs["y"], sn.outputs["y"])  # softmax of one logit is exactly 1
    for name in ("x", "gamma", "beta"):
        np.testing.assert_allclose(plain.gradients[name], sn.gradients[name], rtol=1e-13, atol=1e-13)
