"""Every catalog case's backward against finite differences, through the one helper that gradient-checks a case
(:func:`refnorm.oracle.evaluation.gradcheck_case`, which ``refnorm check`` runs too), and that helper's own contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import refnorm
from refnorm import Linearized
from refnorm.cli import main
from refnorm.oracle import catalog, evaluation
from refnorm.oracle.catalog import OPS, cases
from refnorm.oracle.evaluation import gradcheck_case


@pytest.mark.parametrize("case", cases(kind="sample"), ids=lambda case: case.id)
def test_sample_case_passes_the_gradient_check_off_every_kink(case):
    """Samples are small smooth points: every direction checked, none skipped as crossing a kink."""
    result = gradcheck_case(case)
    assert result.passed, result.summary()
    assert all(argument.skipped == 0 for argument in result.arguments)


@pytest.mark.parametrize("case", [c for c in cases(kind="reference") if not c.kink], ids=lambda c: c.id)
def test_reference_case_backward_passes_the_gradient_checker(case):
    result = gradcheck_case(case)
    assert result.passed, f"{case.id}\n{result}"


@pytest.mark.parametrize("case", [c for c in cases() if c.kink], ids=lambda c: c.id)
def test_a_case_on_a_kink_is_on_one_and_agrees_with_finite_differences_elsewhere(case):
    """A case that declares a kink (Case.kink) has directions the checker skips as crossing it, and
    no direction that fails: arguments the kink does not involve still check."""
    result = gradcheck_case(case)
    directions = [d for argument in result.arguments for d in argument.directions]
    assert not [d for d in directions if d.status == "failed"], f"{case.id}\n{result}"
    assert any(d.status == "skipped" for d in directions), f"{case.id} claims a kink, but no direction crosses one\n{result}"


@pytest.mark.parametrize("op", sorted(OPS))
def test_refnorm_check_lists_and_passes_every_sample_case_of_an_op(capsys, op):
    """One direction per argument: the accuracy of each sample is the test above's; this one is about the command."""
    assert main(["check", "--op", op, "--directions", "1"]) == 0
    printed = capsys.readouterr().out
    for case in cases(kind="sample", op=op):
        assert case.id in printed
    assert "0 failed" in printed


# --------------------------------------------------------------------------------------------
# gradcheck_case
# --------------------------------------------------------------------------------------------

SN_SAMPLE = cases(kind="sample", op="switch_norm")[0]
OFFSET_CASE = next(c for c in cases(kind="reference", op="switch_norm") if c.gradcheck)


def test_gradcheck_case_is_refnorm_gradcheck_at_the_cases_arguments_with_its_seed_and_options():
    """The same result as calling the checker by hand: the op's arguments as the point, named after them."""
    op = OPS[OFFSET_CASE.op]
    inputs = OFFSET_CASE.inputs()
    by_hand = refnorm.gradcheck(
        lambda *point: op.linearize({**inputs, **dict(zip(op.arguments, point))}, OFFSET_CASE.params),
        [inputs[name] for name in op.arguments], names=op.arguments, seed=OFFSET_CASE.seed, **OFFSET_CASE.gradcheck,
    )  # fmt: skip
    result = gradcheck_case(OFFSET_CASE)
    assert [a.name for a in result.arguments] == list(op.arguments) == [a.name for a in by_hand.arguments]
    assert [d.analytic for a in result.arguments for d in a.directions] == [d.analytic for a in by_hand.arguments for d in a.directions]


def test_gradcheck_case_passes_the_seed_the_case_options_and_the_overrides_in_that_order(monkeypatch):
    seen = {}

    def spy(fun, args, **options):
        seen.update(options)
        return "result"

    monkeypatch.setattr(evaluation, "gradcheck", spy)
    assert gradcheck_case(OFFSET_CASE) == "result"
    assert seen == {"names": OPS["switch_norm"].arguments, "directions": 3, "seed": OFFSET_CASE.seed, **OFFSET_CASE.gradcheck}
    gradcheck_case(OFFSET_CASE, directions=5, seed=7, step=0.5, wrt=["x"])
    assert (seen["directions"], seen["seed"], seen["step"], seen["wrt"]) == (5, 7, 0.5, ["x"])


def test_gradcheck_case_fails_a_wrong_backward(monkeypatch):
    op = OPS["switch_norm"]

    def doubled(inputs, params):
        forward = op.forward(inputs, params)
        good = forward.linearized
        return forward._replace(linearized=Linearized(good.out, lambda dy: tuple(2 * g for g in good.pullback(dy))))

    monkeypatch.setitem(catalog.OPS, "switch_norm", dataclasses.replace(op, forward=doubled))
    assert not gradcheck_case(SN_SAMPLE).passed


def test_gradcheck_case_runs_on_another_backend_with_the_same_result():
    numpy_result, strict_result = gradcheck_case(SN_SAMPLE), gradcheck_case(SN_SAMPLE, backend="array-api-strict")
    assert strict_result.passed
    np.testing.assert_allclose(
        [d.analytic for a in strict_result.arguments for d in a.directions], [d.analytic for a in numpy_result.arguments for d in a.directions],
        rtol=1e-12, atol=1e-14,
    )  # fmt: skip


def test_gradcheck_case_refuses_an_error_case():
    case = cases(kind="error", op="switch_norm")[0]
    with pytest.raises(ValueError, match=f"{case.id} is an error case"):
        gradcheck_case(case)
