"""Cases the official layers need that the catalog lacked (issue 12): the running statistics of an
official 4-D layer updated in training, and a float32-hard SSN case whose ratios weight every
normalizer."""

from __future__ import annotations

import numpy as np
import pytest

from refnorm.oracle.catalog import OPS, cases
from refnorm.oracle.evaluation import evaluate, evaluate_case
from refnorm.oracle.tolerances import DEFAULT_TOLERANCES, compare, recommended_tolerances


def _case(case_id: str):
    return next(c for c in cases() if c.id == case_id)


@pytest.mark.parametrize(
    ("case_id", "momentum"),
    [("switch_norm/official-train-4d-ema0.9", 0.9), ("sparse_switch_norm/official-train-4d-ema-default", 0.997)],
)
def test_an_official_4d_training_case_updates_the_running_statistics(case_id, momentum):
    """SwitchNorm2d's momentum is 0.9; SSN2d's, given no momentum, is its preset's 0.997 (not SN's 0.9)."""
    case = _case(case_id)
    assert case.kind == "reference" and case.params["convention"] == "official" and len(case.params["shape"]) == 4
    assert case.params.get("training", True) and case.params["running"]
    inputs = case.inputs()
    named = OPS[case.op].forward(inputs, case.params).intermediates
    for side in ("mean", "var"):
        batch = np.asarray(named[f"{side}_bn"])[0]
        expected = momentum * inputs[f"running_{side}"] + (1 - momentum) * batch
        np.testing.assert_allclose(np.asarray(named[f"new_running_{side}"]), expected, rtol=1e-14, atol=0)


def test_every_official_rank_has_a_training_case_with_running_statistics():
    for op in ("switch_norm", "sparse_switch_norm"):
        ranks = {len(c.params["shape"]) for c in cases(kind="reference", op=op)
                 if c.params.get("convention") == "official" and c.params.get("training", True) and c.params.get("running")}  # fmt: skip
        assert {4, 5} <= ranks, f"{op}: official training cases with running statistics only at ranks {sorted(ranks)}"


def test_the_float32_ssn_offset_case_weights_every_normalizer_and_needs_its_wider_tolerance():
    """official-train-offset1e4 has vertex ratios (the variance on IN alone), which hides how float32
    cancellation enters LN's and BN's statistics; this case keeps both ratio vectors inside."""
    case = _case("sparse_switch_norm/official-train-offset1e4-interior")
    reference = evaluate_case(case)
    for side in ("mean", "var"):
        ratios = reference.intermediates[f"{side}_ratios"]
        assert ratios.min() > 0.1, f"{side} ratios {ratios}: not inside the simplex"
        assert int(reference.intermediates[f"new_fixed_{side}"]) == -1
    single = evaluate(case.op, case.params, reference.inputs, upstream=reference.upstream, dtype=np.float32)
    default = DEFAULT_TOLERANCES["float32"]["forward"]
    assert not compare(single.outputs["y"], reference.outputs["y"], rtol=default.rtol, atol=default.atol).passed
    widened = recommended_tolerances(case, reference)
    # the forward-mode and second-order values inherit the cancellation (each direction is measured on its own)
    assert set(widened.widened) == {"float32.forward", "float32.backward", "float32.jvp", "float32.hvp"} and case.conditioning
    vertex = recommended_tolerances(_case("sparse_switch_norm/official-train-offset1e4"))
    assert widened.get("float32", "backward").atol > vertex.get("float32", "backward").atol, "harder than the vertex case"
