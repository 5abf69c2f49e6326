"""The PyTorch example checked with refnorm's conformance kit (skipped without PyTorch).

This is the file another project copies: an adapter for its implementation, one decorated test
per dtype, and the list of what it does not implement (skipped, with the reason) or gets wrong
on purpose (strict expected failures, with the reason).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the PyTorch example needs torch (pip install torch)")

from torch_switchnorm import SwitchNorm, adapter, detached_statistics_adapter, planted_bug_adapter  # noqa: E402

from refnorm.oracle.catalog import cases  # noqa: E402
from refnorm.testing import ConformanceError, check_conformance, parametrize_conformance  # noqa: E402

NOT_IMPLEMENTED = {"switch_norm/*gn*": "the example implements IN, LN and BN, not GN"}

# torch.func.jvp loads its forward-mode decompositions on first use, compiling them with
# torch.jit.script, which torch 2.13 itself deprecates (pyproject turns every warning into an error).
TORCH_JIT_DEPRECATION = "ignore:`torch.jit.script` is deprecated:DeprecationWarning"


# Forward, backward, forward mode (torch.func.jvp) and second order (double backward), every case.
@pytest.mark.filterwarnings(TORCH_JIT_DEPRECATION)
@parametrize_conformance(adapter(dtype=torch.float64), op="switch_norm", skip=NOT_IMPLEMENTED)
def test_float64_switchnorm_matches_refnorm(check):
    check()


@pytest.mark.filterwarnings(TORCH_JIT_DEPRECATION)
@parametrize_conformance(adapter(dtype=torch.float32), op="switch_norm", skip=NOT_IMPLEMENTED)
def test_float32_switchnorm_matches_refnorm(check):
    check()


# The example keeps its code short and validates nothing. refnorm's error cases list what a careful
# implementation rejects; these are the ones it does not, each with the reason. They are strict
# expected failures: once the example starts rejecting one, the run says so.
DOES_NOT_VALIDATE = {
    **dict.fromkeys(
        ["switch_norm/x-empty-axis", "switch_norm/*-shape", "switch_norm/*-logits-length", "switch_norm/gamma-channels-last"],
        "shapes are not checked: torch broadcasts them or fails with a RuntimeError",
    ),
    **dict.fromkeys(["switch_norm/x-integer", "switch_norm/gamma-float32"], "dtypes are not checked: torch promotes them"),
    **dict.fromkeys(
        ["switch_norm/x-nan", "switch_norm/gamma-inf", "switch_norm/x-pooled-variance-overflow", "switch_norm/running-*-n*"],
        "values are not checked: NaN and infinity propagate",
    ),
    **dict.fromkeys(
        ["switch_norm/*normalizer*", "switch_norm/groups-not-dividing", "switch_norm/unknown-convention", "switch_norm/eps-zero",
         "switch_norm/eps-below-dtype-bound",
         "switch_norm/momentum-above-1", "switch_norm/training-string", "switch_norm/eval-without-running"],
        "options are not checked",
    ),  # fmt: skip
    "switch_norm/official-*": "like the official code, divides by zero (NaN) where the official variance is undefined",
}


@parametrize_conformance(adapter(), op="switch_norm", kinds=("error",), skip=NOT_IMPLEMENTED, expected_failures=DOES_NOT_VALIDATE)
def test_switchnorm_rejects_bad_input_like_refnorm(check):
    check()


TRAINING_CASES = [c for c in cases(kind="sample", op="switch_norm") if "-train-" in c.name and "gn" not in c.name and len(c.params["shape"]) > 2]


@pytest.mark.parametrize("case", [c for c in TRAINING_CASES if c.params.get("convention") == "official"], ids=lambda c: c.id)
def test_the_planted_syncsn_backward_bug_is_caught(case):
    with pytest.raises(ConformanceError) as raised:
        check_conformance(planted_bug_adapter(), case)
    error = raised.value
    assert [m.array for m in error.mismatches] == ["grad.x"], "the input gradient is the one the mix-up breaks, and only it"
    assert "grad.x: " in str(error) and error.missing == () and error.extra == ()
    for array in ("output.y", "intermediate.var_in", "grad.gamma", "grad.beta", "grad.mean_logits", "grad.var_logits"):
        assert array in error.agreeing, f"{array} is right in the buggy layer, and the kit says so"


@pytest.mark.parametrize("case", [c for c in TRAINING_CASES if c.params.get("convention", "paper") == "paper"], ids=lambda c: c.id)
def test_the_planted_bug_is_harmless_where_the_forward_is_biased(case):
    check_conformance(planted_bug_adapter(), case)


@pytest.mark.parametrize("case", [c for c in TRAINING_CASES if c.params.get("convention", "paper") == "paper"], ids=lambda c: c.id)
def test_the_detached_statistics_backward_is_right_to_first_order(case):
    report = check_conformance(detached_statistics_adapter(hvp=False), case)
    assert {c.array.split(".")[0] for c in report.comparisons} == {"output", "intermediate", "grad"}


@pytest.mark.parametrize("case", [c for c in TRAINING_CASES if c.params.get("convention", "paper") == "paper"], ids=lambda c: c.id)
def test_the_detached_statistics_are_caught_by_the_second_order(case):
    with pytest.raises(ConformanceError) as raised:
        check_conformance(detached_statistics_adapter(), case)
    error = raised.value
    assert error.mismatches and all(m.array.startswith("hvp.") for m in error.mismatches), "only the second order is wrong"
    assert "hvp.x" in [m.array for m in error.mismatches], "the paths through the statistics reach the input's second order"
    for array in ("output.y", "grad.x", "grad.gamma", "grad.mean_logits", "grad.var_logits"):
        assert array in error.agreeing, f"{array} is right in the layer, and the kit says so"


def test_the_module_updates_its_running_statistics_like_the_function():
    layer = SwitchNorm(4)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float32)
    layer(x)
    assert not torch.equal(layer.running_mean, torch.zeros(4))
    layer.eval()
    assert layer(x).shape == x.shape
