"""The gradient checker is itself tested: it passes correct backwards and fails wrong ones,
including the bugs of the official SyncSN backward (spec-notes §2.6; docs/known-bugs.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import refnorm
from refnorm import Linearized, Softmax, switch_norm_backward, switch_norm_forward
from refnorm.ops.switchnorm import SWITCH_NORM_ARGUMENTS, switch_norm_linearize


def _sn_point(rng, shape=(3, 4, 3, 3)):
    C = shape[1]
    return (rng.standard_normal(shape), 1 + 0.5 * rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal(3), rng.standard_normal(3))


def test_checker_passes_the_sn_backward(rng):
    result = refnorm.gradcheck(switch_norm_linearize, _sn_point(rng), names=SWITCH_NORM_ARGUMENTS)
    assert result.passed
    assert result.max_rel_error < 1e-8
    assert "ok" in result.summary()


def _biased_backward_of_the_unbiased_forward(*args):
    """The official SyncSN bug: the forward uses the unbiased IN variance (official convention),
    the hand-written backward is the derivative of the biased-variance forward."""
    y, cache, _ = switch_norm_forward(*args, convention="official")
    wrong_cache = cache._replace(config=dataclasses.replace(cache.config, convention="paper"))
    return Linearized(out=y, pullback=lambda dy: tuple(switch_norm_backward(dy, wrong_cache)))


def test_checker_fails_the_biased_unbiased_mix_up_of_the_official_syncsn(rng):
    result = refnorm.gradcheck(_biased_backward_of_the_unbiased_forward, _sn_point(rng), names=SWITCH_NORM_ARGUMENTS)
    assert not result.passed
    assert not result["x"].passed
    assert result["x"].max_rel_error > 1e-3  # spec-notes §2.6: ~2e-2 at H = W = 3
    assert "analytic" in result["x"].failures[0]
    assert result["gamma"].passed and result["beta"].passed  # the affine gradients are right


@dataclasses.dataclass(frozen=True)
class _AliasedSoftmax(Softmax):
    """Softmax whose VJP is written into the array holding the ratios, as the official SyncSN
    backward does (``mean_weight_Diff = mean_weight``): entries 1..K-1 read overwritten ratios."""

    def vjp(self, dratios, ratios, aux):
        w = np.array(ratios)  # the saved softmax output
        g = np.asarray(dratios)
        for k in range(len(w)):
            w[k] = w[k] * (g[k] - np.dot(w, g))  # w[:k] were already overwritten with gradients
        return w


def test_checker_fails_the_softmax_gradient_aliasing_bug(rng):
    aliased = _AliasedSoftmax()
    result = refnorm.gradcheck(  # first order: the second order of a wrong first order is not defined (tests/test_hvp.py)
        lambda *args: switch_norm_linearize(*args, mean_ratio=aliased, var_ratio=aliased), _sn_point(rng), names=SWITCH_NORM_ARGUMENTS, order=1
    )
    assert not result["mean_logits"].passed
    assert not result["var_logits"].passed
    assert result["x"].passed  # the input gradient is computed before the corruption


def _abs_with_kink(x):
    """|x| elementwise: smooth except at 0; the active set is the sign pattern."""
    return Linearized(out=np.abs(x), pullback=lambda v: (np.sign(x) * v,), active_set=np.sign(x))


def test_a_direction_crossing_a_kink_is_skipped_never_passed():
    x = np.array([1e-12, 2.0, -3.0])
    result = refnorm.gradcheck(_abs_with_kink, [x], names=["x"], directions=4)
    argument = result["x"]
    assert argument.skipped == 4  # every random direction moves x[0] across 0
    assert argument.checked == 0
    assert not argument.passed and not result.passed
    assert all(d.status == "skipped" and "kink" in d.note for d in argument.directions)


def test_a_point_away_from_the_kink_is_checked():
    result = refnorm.gradcheck(_abs_with_kink, [np.array([0.5, 2.0, -3.0])], names=["x"])
    assert result.passed and result["x"].skipped == 0


def test_a_wrong_jvp_fails_the_adjoint_test(rng):
    A = rng.standard_normal((4, 3))

    def linear(x, wrong):
        return Linearized(out=A @ x, pullback=lambda v: (A.T @ v,), pushforward=lambda u: (A + wrong) @ u)

    good = refnorm.gradcheck(lambda x: linear(x, 0.0), [rng.standard_normal(3)], names=["x"])
    assert good.passed and good["x"].adjoint_error < 1e-14
    bad = refnorm.gradcheck(lambda x: linear(x, 1e-6), [rng.standard_normal(3)], names=["x"])
    assert not bad.passed and "JVP and VJP disagree" in bad["x"].failures[-1]


def test_jacobian_mode_names_the_worst_entry(rng):
    def one_wrong_entry(x):
        def pullback(v):
            grad = 2 * x * v
            grad[1, 2] += 1e-3 * v[1, 2]  # a wrong diagonal entry of the Jacobian of x**2
            return (grad,)

        return Linearized(out=x**2, pullback=pullback)

    result = refnorm.gradcheck(one_wrong_entry, [rng.standard_normal((2, 3))], names=["x"], mode="jacobian")
    assert not result.passed
    assert result["x"].worst_entry == ((1, 2), (1, 2))
    assert "d out(1, 2) / d x(1, 2)" in result["x"].failures[0]


def test_jacobian_mode_passes_a_correct_backward(rng):
    result = refnorm.gradcheck(switch_norm_linearize, _sn_point(rng, (2, 3, 2)), names=SWITCH_NORM_ARGUMENTS, mode="jacobian")
    assert result.passed, result.summary()


def test_constant_arguments_that_are_not_representable_get_a_sensible_step(rng):
    """gamma = 1.1 everywhere has a rounding-noise std (~1e-16); the step must not shrink to it."""
    x, _, beta, mean_logits, var_logits = _sn_point(rng, (3, 6, 3, 3))
    gamma, beta = np.full(6, 1.1), np.resize(beta, 6)
    assert np.std(gamma) > 0  # the rounding noise this test is about
    result = refnorm.gradcheck(switch_norm_linearize, (x, gamma, beta, mean_logits, var_logits), names=SWITCH_NORM_ARGUMENTS)
    assert result.passed, result.summary()
    assert all(d.step > 1e-4 for d in result["gamma"].directions)


def test_a_zero_gradient_is_judged_in_absolute_terms(rng):
    """A gradient that is zero has no scale: its relative error is NaN ("not applicable", also as
    the maximum, never a silent 0), and a backward that wrongly returns zero still fails on the
    absolute error."""

    def f(x, k, zero_k_gradient):
        out = x * (1.0 + 0.0 * k) + (0.0 if zero_k_gradient else 1e-3) * k
        return Linearized(out=out, pullback=lambda v: (v, np.zeros_like(k)))

    x, k = rng.standard_normal(4), rng.standard_normal(4)
    right = refnorm.gradcheck(lambda x, k: f(x, k, True), [x, k], names=["x", "k"])
    assert right.passed and all(np.isnan(d.rel_error) for d in right["k"].directions)
    assert np.isnan(right["k"].max_rel_error) and right["x"].max_rel_error < 1e-9
    assert right.max_rel_error == right["x"].max_rel_error, "an argument where nothing applies does not hide the others"
    assert "n/a" in right.summary().splitlines()[2]
    wrong = refnorm.gradcheck(lambda x, k: f(x, k, False), [x, k], names=["x", "k"])
    assert not wrong["k"].passed and wrong["x"].passed


def test_checker_refuses_float32_points(rng):
    x = rng.standard_normal(3).astype(np.float32)
    with pytest.raises(TypeError, match="gradcheck needs float64 arguments"):
        refnorm.gradcheck(lambda x: Linearized(out=x, pullback=lambda v: (v,)), [x])


def test_checker_reports_unknown_wrt_names(rng):
    with pytest.raises(ValueError, match="wrt names unknown arguments"):
        refnorm.gradcheck(switch_norm_linearize, _sn_point(rng), names=SWITCH_NORM_ARGUMENTS, wrt=["gama"])


def test_checker_refuses_to_check_an_argument_without_gradient(rng):
    def f(x, k):
        return Linearized(out=k * x, pullback=lambda v: (k * v, None))

    with pytest.raises(ValueError, match="no gradient \\(None\\) for k"):
        refnorm.gradcheck(f, [rng.standard_normal(3), np.ones(3)], names=["x", "k"], wrt=["x", "k"])
    # By default k is not checked as a gradient, but None claims the output does not depend on k,
    # and it does (out = k * x): that claim fails (tests/test_audit_checker.py).
    result = refnorm.gradcheck(f, [rng.standard_normal(3), np.ones(3)], names=["x", "k"])
    assert [a.name for a in result.arguments] == ["x", "k"] and result["x"].passed and not result["k"].passed


def test_checker_works_on_strict_arrays(rng):
    import array_api_strict as xp

    point = [xp.asarray(a) for a in _sn_point(rng, (2, 3, 4))]
    result = refnorm.gradcheck(switch_norm_linearize, point, names=SWITCH_NORM_ARGUMENTS)
    assert result.passed, result.summary()


def test_assert_gradcheck_raises_with_the_report(rng):
    with pytest.raises(refnorm.oracle.gradient_check.GradcheckError, match="gradient check failed"):
        refnorm.assert_gradcheck(_biased_backward_of_the_unbiased_forward, _sn_point(rng), names=SWITCH_NORM_ARGUMENTS)


def test_checker_fails_logit_gradients_multiplied_by_the_number_of_shards(rng):
    """The official SyncSN sums the logit gradients across devices inside its backward, and the
    training script sums every gradient across devices again: with S devices the logits get S times
    their gradient. Planted on the sharded form with two shards."""
    xs = [rng.standard_normal((2, 4, 3, 3)) for _ in range(2)]
    _, gamma, beta, mean_logits, var_logits = _sn_point(rng)

    def summed_twice(x0, x1, gamma, beta, mean_logits, var_logits):
        out = refnorm.switch_norm_sharded_forward([x0, x1], gamma, beta, mean_logits, var_logits)

        def pullback(dys):
            grads = refnorm.switch_norm_sharded_backward(dys, out.cache)
            shards = len(out.ys)
            return (*grads.dxs, grads.dgamma, grads.dbeta, shards * grads.dmean_logits, shards * grads.dvar_logits)

        return Linearized(out=out.ys, pullback=pullback)

    names = ("x0", "x1", "gamma", "beta", "mean_logits", "var_logits")
    result = refnorm.gradcheck(summed_twice, (*xs, gamma, beta, mean_logits, var_logits), names=names)
    assert not result["mean_logits"].passed and not result["var_logits"].passed
    assert all(result[name].passed for name in ("x0", "x1", "gamma", "beta"))


def test_checker_fails_the_training_backward_in_evaluation_mode(rng):
    """The official SyncSN backward has no training flag: it always adds the BN-branch terms, also in
    evaluation mode, where the BN statistics are the running buffers (constants)."""
    x, gamma, beta, mean_logits, var_logits = _sn_point(rng)
    running = refnorm.RunningStats(mean=0.3 * rng.standard_normal(4), var=rng.uniform(0.5, 1.5, 4))

    def evaluation_forward_training_backward(*args):
        y, cache, _ = switch_norm_forward(*args, training=False, running=running)
        wrong = cache._replace(config=dataclasses.replace(cache.config, training=True))
        return Linearized(out=y, pullback=lambda dy: tuple(switch_norm_backward(dy, wrong)))

    result = refnorm.gradcheck(evaluation_forward_training_backward, (x, gamma, beta, mean_logits, var_logits), names=SWITCH_NORM_ARGUMENTS)
    assert not result["x"].passed
    assert all(result[name].passed for name in ("gamma", "beta", "mean_logits", "var_logits"))


def test_the_summary_says_which_tolerances_judged_it():
    """A pass at a huge atol must not look like a pass at the default one."""
    x = np.array([0.3, 0.1, -0.2])
    assert refnorm.gradcheck(refnorm.sparsemax_linearize, [x]).summary().endswith("judged with rtol 1e-07, atol 1e-10 (directional mode)")
    loose = refnorm.gradcheck(refnorm.sparsemax_linearize, [x], atol=1e3, mode="jacobian")
    assert loose.summary().splitlines()[-1] == "judged with rtol 1e-07, atol 1000 (jacobian mode)"
