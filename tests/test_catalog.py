"""The case catalog: the registry, well-formed cases declared one way, inputs drawn from the seed,
error cases that raise what they promise, and plain normalizers equal to a direct computation.

What the catalog covers is in ``test_catalog_coverage.py``, its cases' gradient checks in
``test_catalog_gradients.py``, and the stability of every case's seed and inputs in
``test_catalog_identity.py``."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import refnorm
from refnorm.cli import main
from refnorm.oracle import golden
from refnorm.oracle.catalog import OPS, Case, CaseMaker, cases
from refnorm.oracle.catalog.base import with_defaults
from refnorm.oracle.evaluation import evaluate

ALL = cases()


NO_REFERENCE_CASES = {"en_channel_mean": "a linear mean over channels: its sample cases exercise all of it"}
NO_ERROR_CASES = dict.fromkeys(
    ("en_channel_conv", "en_channel_mean", "en_standardize", "en_softmax"),
    "an internal stage of EN's ratio generator: it validates nothing, exemplar_norm_forward validates its input first",
)


def test_the_registry_holds_every_op_of_the_families_in_catalog_order():
    assert list(OPS) == [
        "switch_norm", "plain_norm", "sparsemax", "sparsestmax", "sparse_switch_norm", "exemplar_norm",
        "en_embedding", "en_channel_conv", "en_channel_mean", "en_standardize", "en_softmax",
    ]  # fmt: skip
    assert all(name == info.name for name, info in OPS.items())


def test_every_op_has_sample_reference_and_error_cases():
    """Every op has cases of every kind, except the EN stages listed (with the reason) above."""
    for op in OPS:
        assert cases(kind="sample", op=op), f"{op} has no sample cases"
        assert bool(cases(kind="reference", op=op)) != (op in NO_REFERENCE_CASES), f"{op}: reference cases vs NO_REFERENCE_CASES"
        assert bool(cases(kind="error", op=op)) != (op in NO_ERROR_CASES), f"{op}: error cases vs NO_ERROR_CASES"


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


@pytest.mark.parametrize("case", cases(kind="error"), ids=lambda c: c.id)
def test_error_case_raises_the_expected_exception_and_message(case, backend):
    """On every backend; on a lazy one (Dask) a value check is a condition in the graph
    (``refnorm.deferred_checks``), which raises the same error once computed."""
    inputs = case.inputs()
    with pytest.raises(case.raises, match=case.match):
        moved = {name: backend.asarray(array) for name, array in inputs.items()}
        with refnorm.deferred_checks() as checks:
            OPS[case.op].linearize(moved, case.params)
        checks.verify()


def test_a_case_must_be_well_formed():
    with pytest.raises(ValueError, match="kind 'big'"):
        Case("switch_norm", "x", "big", {})
    with pytest.raises(ValueError, match="file names"):
        Case("switch_norm", "a/b", "sample", {})
    with pytest.raises(ValueError, match="raises= and match="):
        Case("switch_norm", "bad", "error", {})
    with pytest.raises(ValueError, match="tolerance_reason"):
        Case("switch_norm", "loose", "sample", {}, tolerances={"float32": {"forward": (1e-3, 1e-3)}})


def test_a_case_maker_puts_base_params_first_and_the_call_params_after():
    case = CaseMaker("sparsemax", "error", base={"shape": (2, 3), "scale": 1.0})("K1", ValueError, "K >= 2", shape=(2, 1), offset=3.0)
    assert list(case.params.items()) == [("shape", (2, 1)), ("scale", 1.0), ("offset", 3.0)]
    assert (case.id, case.kind, case.raises, case.match) == ("sparsemax/K1", "error", ValueError, "K >= 2")


def test_a_case_maker_completes_params_then_derives_the_gradcheck_options_and_shipping_from_them():
    make = CaseMaker(
        "sparsemax", "reference", complete=lambda p: with_defaults(p, scale=2.0), gradcheck=lambda p: {"step": p["scale"] / 10},
        shipped=frozenset({"pre-K3"}), prefix="pre-",
    )  # fmt: skip
    shipped, other = make("K3", shape=(4, 3)), make("K4", shape=(4, 4), scale=3.0, note="why")
    assert (shipped.name, dict(shipped.params), dict(shipped.gradcheck), shipped.ship) == ("pre-K3", {"shape": (4, 3), "scale": 2.0}, {"step": 0.2}, True)
    assert (dict(other.gradcheck), other.ship, other.note) == ({"step": 0.3}, False, "why")
    assert make("K5", shape=(4, 5), gradcheck={"step": 1.0}, ship=True).gradcheck == {"step": 1.0}, "what the call gives wins"


def test_with_defaults_adds_only_the_missing_keys_after_the_given_ones():
    assert list(with_defaults({"b": 1, "a": 2}, a=0, c=3).items()) == [("b", 1), ("a", 2), ("c", 3)]


def test_golden_list_marks_the_cases_on_a_kink_and_the_shipped_ones(capsys):
    assert main(["golden", "list", "--op", "sparsestmax", "--kind", "reference"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["sparsestmax/paper-K3-centre"].endswith("[on a kink]  [shipped]")
    assert lines["sparsestmax/paper-K2-centre"].endswith("[on a kink]")
    assert not lines["sparsestmax/paper-K3-1sph-margin"].endswith("]")


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
