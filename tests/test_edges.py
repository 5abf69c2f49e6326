"""Numbers at the edges (issue 10, "silent wrong numbers"), and the messages that teach (issue 12).

Every reported reproducer is a named test below. Each check is shown to be needed: where a check
rejects an input, ``check_finite=False`` (or the check bypassed) shows the wrong number it prevents.
Then hypothesis over the whole range of magnitudes: a layer call either raises a clean
``ValueError``/``TypeError`` naming an argument, or returns finite values equal to an independent
float64 computation (SN and the plain normalizers against ``tests/oracles/direct_sn.py``), and a
float32 call equals the float64 one on the same inputs. The JVPs and HVPs (issue 15) are held to
the same contract: non-finite or broadcastable tangents refused, right for huge inputs (scale
invariance), and over the whole range finite and the transpose of the backward, or a clean error.
"""

from __future__ import annotations

import functools
import math
import re

import array_api_strict
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from oracles.direct_sn import direct_scope_moments, direct_switch_norm

import refnorm
from refnorm.ops import _validation, layer
from refnorm.ops._validation import smallest_eps

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT64_MAX = float(np.finfo(np.float64).max)


def _layer_inputs(shape=(2, 4, 3, 3), dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    return (
        rng.standard_normal(shape).astype(dtype),
        (1.0 + 0.3 * rng.standard_normal(C)).astype(dtype),
        (0.3 * rng.standard_normal(C)).astype(dtype),
        rng.standard_normal(3).astype(dtype),
        rng.standard_normal(3).astype(dtype),
    )


def _sn(x, gamma, beta, mean_logits, var_logits, **options):
    y, cache, running = refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, **options)
    return y, refnorm.switch_norm_backward(np.ones_like(y), cache), running


# --------------------------------------------------------------------------------------------
# eps: the smallest value the dtype allows, derived (refnorm.ops._validation.smallest_eps)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "eps"), [(np.float32, 1e-46), (np.float32, 1e-40), (np.float64, 1e-310)])
def test_an_eps_that_cannot_keep_the_backward_finite_is_rejected(dtype, eps):
    """The reported cases: constant float32 input with eps = 1e-46 gave all-NaN y, eps = 1e-40
    (float32) or 1e-310 (float64) all-NaN dx."""
    x, gamma, beta, mean_logits, var_logits = _layer_inputs(dtype=dtype)
    with pytest.raises(ValueError, match=rf"eps = {eps!r} is too small for {np.dtype(dtype).name}: expected eps >= "):
        refnorm.switch_norm_forward(np.ones_like(x), gamma, beta, mean_logits, var_logits, eps=eps)


@pytest.mark.parametrize(("dtype", "eps", "nan_in"), [(np.float32, 1e-46, "y"), (np.float32, 1e-40, "dx"), (np.float64, 1e-310, "dx")])
def test_without_the_eps_check_the_reported_eps_gives_nan(monkeypatch, dtype, eps, nan_in):
    """The check is needed: with it bypassed, constant input gives the NaN of the report."""
    monkeypatch.setattr(layer, "check_eps", lambda value, xp, dtype, name="eps": float(value))
    x, gamma, beta, mean_logits, var_logits = _layer_inputs(dtype=dtype)
    with np.errstate(all="ignore"):
        y, cache, _ = refnorm.switch_norm_forward(np.ones_like(x), gamma, beta, mean_logits, var_logits, eps=eps)
        if nan_in == "y":
            assert np.isnan(y).all()
            return
        assert np.isfinite(y).all()
        dy = np.ones_like(y)
        try:
            dx = refnorm.switch_norm_backward(dy, cache).dx
        except ValueError as error:  # the ratios' gradient is the NaN the overflow of r**2 made
            assert "the gradient with respect to the variance ratios is not finite" in str(error)
        else:
            assert np.isnan(dx).all()
        # the same NaN without the logits: IN alone, whose fixed ratio passes no gradient
        y, cache, _ = refnorm.plain_norm_forward(np.ones_like(x), gamma, beta, normalizer="in", eps=eps)
        mixture = cache.mixture
        normalized = layer.normalize_vjp(np.reshape(dy, cache.centered.shape), cache.centered, cache.gamma, mixture.inv_std, mixture.shift)
        B = -0.5 * mixture.inv_std * mixture.inv_std * (mixture.inv_std * normalized.sum_dxhat_centered + mixture.shift * normalized.sum_dxhat)
        assert np.isnan(B).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_smallest_eps_keeps_r_cubed_below_an_eighth_of_the_largest_value(dtype):
    """r = (var + eps)^(-1/2) <= eps^(-1/2); r^3 (the derivative of r is -r^3/2) stays <= max / 8 iff
    eps >= (max / 8)^(-2/3). In the dtype itself, with its roundings: r^3 and 2 r^3 are finite."""
    xp = refnorm._xp.namespace(np.ones(1, dtype))
    bound = smallest_eps(xp, dtype)
    assert bound == pytest.approx((float(np.finfo(dtype).max) / 8) ** (-2 / 3), rel=1e-15)
    assert bound > float(np.finfo(dtype).smallest_normal)  # normal: var + eps > 0 in the dtype
    r = np.asarray(1.0, dtype) / np.sqrt(np.asarray(bound, dtype))
    assert np.isfinite(2 * (r * r * r))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["switch_norm", "sparse_switch_norm", "plain_norm", "exemplar_norm"])
@pytest.mark.parametrize("input_kind", ["constant", "variance-at-eps"])
def test_every_layer_is_finite_at_the_smallest_eps(dtype, op, input_kind):
    """At eps = smallest_eps (rounded up to the dtype), forward and backward are finite, for constant
    input (variance 0, r = eps^(-1/2)) and for a variance of the order of eps."""
    xp = refnorm._xp.namespace(np.ones(1, dtype))
    eps = float(np.nextafter(dtype(smallest_eps(xp, dtype)), dtype(np.inf)))
    x, gamma, beta, mean_logits, var_logits = _layer_inputs(dtype=dtype)
    if input_kind == "constant":
        x = np.ones_like(x)
    else:
        x = (1.0 + math.sqrt(eps) * np.random.default_rng(3).standard_normal(x.shape)).astype(dtype)
    dy = np.random.default_rng(4).standard_normal(x.shape).astype(dtype)
    if op == "switch_norm":
        y, cache, _ = refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, eps=eps)
        grads = refnorm.switch_norm_backward(dy, cache)
    elif op == "sparse_switch_norm":
        y, cache, _, _ = refnorm.sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.3, eps=eps)
        grads = refnorm.sparse_switch_norm_backward(dy, cache)
    elif op == "plain_norm":
        y, cache, _ = refnorm.plain_norm_forward(x, gamma, beta, normalizer="in", eps=eps)
        grads = refnorm.plain_norm_backward(dy, cache)
    else:
        params = refnorm.exemplar_norm_init(x.shape[1], x)._replace(gamma=gamma, beta=beta)
        y, cache, _ = refnorm.exemplar_norm_forward(x, *params, eps=eps)
        grads = refnorm.exemplar_norm_backward(dy, cache)
    assert np.isfinite(y).all()
    for name, gradient in grads._asdict().items():
        assert np.isfinite(gradient).all(), name


def test_an_eps_that_overflows_the_dtype_is_rejected():
    x, gamma, beta, mean_logits, var_logits = _layer_inputs(dtype=np.float32)
    with pytest.raises(ValueError, match=r"eps = 1e\+39 overflows float32; expected eps <= 3\.40282e\+38"):
        refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, eps=1e39)


# --------------------------------------------------------------------------------------------
# Statistics that overflow
# --------------------------------------------------------------------------------------------


def _far_apart():
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    x = x.copy()
    x[0] += 3e154
    return x, gamma, beta, mean_logits, var_logits


def test_instance_means_so_far_apart_that_the_bn_variance_overflows_are_rejected_naming_x():
    """The report: x[0] += 3e154 on a (2, 4, 3, 3) input."""
    with pytest.raises(ValueError, match=r"x has values so far apart that the (LN|BN) variance overflows float64"):
        refnorm.switch_norm_forward(*_far_apart())


def test_without_the_check_the_far_apart_input_gives_the_reported_zeros_and_nan():
    """check_finite=False is the caller's opt-out for trusted data, and shows what the check prevents:
    var_bn = inf, y[1] exactly 0 (true value about -0.58), dx NaN."""
    x, gamma, beta, mean_logits, var_logits = _far_apart()
    with np.errstate(all="ignore"):
        y, cache, _ = refnorm.switch_norm_forward(x, np.ones(4), np.zeros(4), np.zeros(3), np.zeros(3), check_finite=False)
        assert np.isinf(cache.arrays()["var_bn"]).all()
        assert (y[1] == 0).all()
        with pytest.raises(ValueError, match=r"the gradient with respect to the variance ratios is not finite"):
            refnorm.switch_norm_backward(np.ones_like(y), cache)


@pytest.mark.parametrize("op", ["exemplar_norm", "plain_norm", "switch_norm_sharded"])
def test_every_layer_rejects_pooled_statistics_that_overflow(op):
    x, gamma, beta, mean_logits, var_logits = _far_apart()
    with pytest.raises(ValueError, match=r"x(s)? has values so far apart that the (LN|BN) variance overflows float64"):
        if op == "exemplar_norm":
            refnorm.exemplar_norm_forward(x, *refnorm.exemplar_norm_init(4, x))
        elif op == "plain_norm":
            refnorm.plain_norm_forward(x, gamma, beta, normalizer="bn")
        else:
            refnorm.switch_norm_sharded_forward([x[:1], x[1:]], gamma, beta, mean_logits, var_logits)


def test_instance_moments_that_overflow_are_rejected_without_a_numpy_warning():
    """x * 1e300: the instance variance overflows. The suite runs with warnings as errors, so this
    also proves NumPy's RuntimeWarning does not precede refnorm's ValueError."""
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    with pytest.raises(ValueError, match=r"x contains NaN or infinity, or values so large \(or so far apart\) that a mean or variance overflows float64"):
        refnorm.switch_norm_forward(x * 1e300, gamma, beta, mean_logits, var_logits)


def test_huge_input_whose_statistics_are_finite_is_accepted_and_exact():
    """Not a false positive: x scaled by 1e150 (variances about 1e300, finite) normalizes exactly like
    x, with eps scaled alike (y(a x; a^2 eps) = y(x; eps))."""
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    y, _, _ = refnorm.switch_norm_forward(x * 1e150, gamma, beta, mean_logits, var_logits, eps=1e-5 * 1e300)
    reference, _, _ = refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, eps=1e-5)
    np.testing.assert_allclose(y, reference, rtol=1e-12, atol=1e-12)


def test_ratio_generator_scores_that_overflow_are_rejected_naming_the_kernel():
    """A kernel of 1e300 made the scores' spread overflow: the standardised scores came out 0 and the
    ratios uniform, silently."""
    x = _layer_inputs()[0]
    params = refnorm.exemplar_norm_init(4, x)._replace(conv_weight=np.array([1e300, -2e300, 3e300]))
    with pytest.raises(ValueError, match=r"conv_weight and conv_bias are so large that the ratio generator's scores overflow float64"):
        refnorm.exemplar_norm_forward(x, *params)
    with np.errstate(all="ignore"):
        out = refnorm.exemplar_norm_forward(x, *params, check_finite=False)  # what the check prevents
    np.testing.assert_array_equal(out.cache.generator.standardized, 0.0)


# --------------------------------------------------------------------------------------------
# Running statistics, FixedRatios, BatchAverage
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("var", "match"), [(-1.0, r"running\.var has a negative entry \(-1\.0\)"), (np.nan, r"running\.var contains NaN")])
def test_evaluation_rejects_a_negative_or_nan_running_variance(var, match):
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    running = refnorm.RunningStats(np.zeros(4), np.full(4, var))
    with pytest.raises(ValueError, match=match):
        refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=running, training=False)


def test_a_nan_running_mean_in_training_does_not_flow_into_the_new_state():
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    running = refnorm.RunningStats(np.full(4, np.nan), np.ones(4))
    with pytest.raises(ValueError, match=r"running\.mean contains NaN or infinity"):
        refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=running)


@pytest.mark.parametrize(("count", "error", "match"), [(-1, ValueError, r"average\.count must be an int >= 0, got -1"),
                                                       (1.5, TypeError, r"average\.count must be an int, got float \(1\.5\)")])  # fmt: skip
def test_batch_average_count_must_be_a_nonnegative_int(count, error, match):
    average = refnorm.BatchAverage(count, np.zeros(4), np.zeros(4), np.zeros(4))
    with pytest.raises(error, match=match):
        refnorm.accumulate(average, np.ones(4), np.ones(4))
    with pytest.raises(error, match=match):
        refnorm.finalize(average)


def test_finalize_says_the_count_it_was_given():
    with pytest.raises(ValueError, match=r"finalize needs at least one accumulated batch, got count = 0"):
        refnorm.finalize(refnorm.empty_batch_average(4, np.zeros(1)))


@pytest.mark.parametrize(("ratios", "error"), [((np.nan, 1.0), ValueError), ("10", TypeError), ((0.5, math.inf), ValueError), ((True, False), TypeError)])
def test_fixed_ratios_must_be_a_finite_point_of_the_simplex(ratios, error):
    with pytest.raises(error, match=r"FixedRatios needs ratios"):
        refnorm.FixedRatios(ratios)


def test_fixed_ratios_forward_checks_the_logit_length():
    """Called directly (it is public), not only through the layers that check at entry."""
    with pytest.raises(ValueError, match=r"logits has shape \(4, 3\), expected \(\.\.\., K\) with K = 2 entries"):
        refnorm.FixedRatios((0.5, 0.5)).forward(np.zeros((4, 3)))


# --------------------------------------------------------------------------------------------
# dy in every backward
# --------------------------------------------------------------------------------------------


def _backwards():
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    sharded = refnorm.switch_norm_sharded_forward([x[:1], x[1:]], gamma, beta, mean_logits, var_logits).cache
    return {
        "switch_norm": lambda dy: refnorm.switch_norm_backward(dy, refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits).cache),
        "sparse_switch_norm": lambda dy: refnorm.sparse_switch_norm_backward(
            dy, refnorm.sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.3).cache),
        "plain_norm": lambda dy: refnorm.plain_norm_backward(dy, refnorm.plain_norm_forward(x, gamma, beta, normalizer="gn", groups=2).cache),
        "exemplar_norm": lambda dy: refnorm.exemplar_norm_backward(dy, refnorm.exemplar_norm_forward(x, *refnorm.exemplar_norm_init(4, x)).cache),
        "switch_norm_sharded": lambda dy: refnorm.switch_norm_sharded_backward([dy[:1], dy[1:]], sharded),
    }  # fmt: skip


@pytest.mark.parametrize("backward", sorted(_backwards()))
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_every_backward_rejects_a_non_finite_upstream_gradient(backward, value):
    dy = np.ones((2, 4, 3, 3))
    dy[1, 2, 0, 1] = value
    with pytest.raises(ValueError, match=r"dys?(\[1\])? contains NaN or infinity"):
        _backwards()[backward](dy)


# --------------------------------------------------------------------------------------------
# Tangents in every JVP and HVP, dy in every HVP (issue 15's functions under issue 10's contract)
# --------------------------------------------------------------------------------------------


def _second_order():
    """Every layer's JVP and HVP at one point: ``name: (call(dy, tangents), tangents)``."""
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    rng = np.random.default_rng(7)
    sn = refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits).cache
    ssn = refnorm.sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.3).cache
    plain = refnorm.plain_norm_forward(x, gamma, beta, normalizer="gn", groups=2).cache
    params = refnorm.exemplar_norm_init(4, x)
    en = refnorm.exemplar_norm_forward(x, *params).cache
    sn_t = refnorm.SwitchNormGrads(*(rng.standard_normal(a.shape) for a in (x, gamma, beta, mean_logits, var_logits)))
    plain_t = refnorm.PlainNormGrads(sn_t.dx, sn_t.dgamma, sn_t.dbeta)
    en_t = refnorm.ExemplarNormGrads(*(rng.standard_normal(np.shape(a)) for a in (x, *params)))
    return {
        "switch_norm_jvp": (lambda dy, t: refnorm.switch_norm_jvp(t, sn), sn_t),
        "sparse_switch_norm_jvp": (lambda dy, t: refnorm.sparse_switch_norm_jvp(t, ssn), sn_t),
        "plain_norm_jvp": (lambda dy, t: refnorm.plain_norm_jvp(t, plain), plain_t),
        "exemplar_norm_jvp": (lambda dy, t: refnorm.exemplar_norm_jvp(t, en), en_t),
        "switch_norm_hvp": (lambda dy, t: refnorm.switch_norm_hvp(dy, sn, t), sn_t),
        "sparse_switch_norm_hvp": (lambda dy, t: refnorm.sparse_switch_norm_hvp(dy, ssn, t), sn_t),
        "plain_norm_hvp": (lambda dy, t: refnorm.plain_norm_hvp(dy, plain, t), plain_t),
    }


SECOND_ORDER_FIELDS = [(name, field) for name, (_, t) in _second_order().items() for field in t._fields]


@pytest.mark.parametrize(("function", "field"), SECOND_ORDER_FIELDS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_every_jvp_and_hvp_rejects_a_non_finite_tangent(function, field, value):
    call, tangents = _second_order()[function]
    bad = np.array(getattr(tangents, field), copy=True)
    bad.flat[-1] = value
    with pytest.raises(ValueError, match=rf"^tangents\.{field} contains NaN or infinity"):
        call(np.ones((2, 4, 3, 3)), tangents._replace(**{field: bad}))


@pytest.mark.parametrize("function", [name for name in _second_order() if name.endswith("hvp")])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_every_hvp_rejects_a_non_finite_upstream_gradient(function, value):
    call, tangents = _second_order()[function]
    dy = np.ones((2, 4, 3, 3))
    dy[1, 2, 0, 1] = value
    with pytest.raises(ValueError, match=r"^dy contains NaN or infinity"):
        call(dy, tangents)


@pytest.mark.parametrize(("function", "field"), SECOND_ORDER_FIELDS)
def test_every_jvp_and_hvp_refuses_a_tangent_that_would_only_broadcast(function, field):
    """A tangent of shape (1, ...) or () where its argument has more elements would broadcast into
    a plausible, wrong result; it is refused naming the field and its argument's shape."""
    call, tangents = _second_order()[function]
    good = getattr(tangents, field)
    broadcastable = good.reshape(-1)[:1].reshape((1,) * good.ndim) if good.size > 1 else good[None]
    with pytest.raises(ValueError, match=rf"^tangents\.{field} has shape {re.escape(str(broadcastable.shape))}, expected the shape of its argument = "):
        call(np.ones((2, 4, 3, 3)), tangents._replace(**{field: broadcastable}))


def _derivatives_at_scale(op, s, dtype):
    """Every derivative of ``op`` at ``x * s`` with ``eps * s^2`` and the x tangent ``* s`` (the dx
    HVP block ``* s``): by the scale invariance y(s x; s^2 eps) = y(x; eps), each equals its value
    at s = 1."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 2, 2))
    gamma, beta, tangent_x, dy = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    small = [rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(3), rng.standard_normal(3)]
    cast = lambda *arrays: [np.asarray(a, dtype) for a in arrays]
    x, gamma, beta, tangent_x, dy = cast(x * s, gamma, beta, tangent_x * s, dy)
    eps = 1e-5 * s * s
    if op == "exemplar_norm":
        params = refnorm.exemplar_norm_init(4, x)._replace(gamma=gamma, beta=beta, conv_weight=np.asarray([0.7, -1.1, 0.4], dtype),
                                                          conv_bias=np.asarray(0.3, dtype), temperature=np.asarray(1.3, dtype))  # fmt: skip
        cache = refnorm.exemplar_norm_forward(x, *params, eps=eps).cache
        tangents = refnorm.ExemplarNormGrads(tangent_x, *cast(small[0], small[1], small[2], 0.5, -0.2))
        return {"jvp": refnorm.exemplar_norm_jvp(tangents, cache)}
    if op == "plain_norm":
        cache = refnorm.plain_norm_forward(x, gamma, beta, normalizer="bn", eps=eps).cache
        tangents = refnorm.PlainNormGrads(tangent_x, *cast(small[0], small[1]))
        jvp, hvp = refnorm.plain_norm_jvp, refnorm.plain_norm_hvp
    else:
        logits = cast(*rng.standard_normal((2, 3)))
        forward = refnorm.switch_norm_forward if op == "switch_norm" else functools.partial(refnorm.sparse_switch_norm_forward, radius=0.3)
        cache = forward(x, gamma, beta, *logits, eps=eps).cache
        tangents = refnorm.SwitchNormGrads(tangent_x, *cast(*small))
        jvp, hvp = (refnorm.switch_norm_jvp, refnorm.switch_norm_hvp) if op == "switch_norm" else (refnorm.sparse_switch_norm_jvp, refnorm.sparse_switch_norm_hvp)
    second = hvp(dy, cache, tangents)
    return {"jvp": jvp(tangents, cache), "hvp.dx": second.dx * s, **{f"hvp.{k}": v for k, v in second._asdict().items() if k != "dx"}}


@pytest.mark.parametrize(("dtype", "s"), [(np.float64, 1e105), (np.float64, 1e150), (np.float32, 1e15)])
@pytest.mark.parametrize("op", ["switch_norm", "sparse_switch_norm", "plain_norm", "exemplar_norm"])
def test_jvp_and_hvp_are_right_for_inputs_whose_variances_are_huge(op, dtype, s):
    """The JVPs formed r' = -1/2 r^3 var' with r^3 first: for variances beyond about 1e205 (x around
    1e103 in float64, 1e13 in float32) r^3 is subnormal and loses its digits, and beyond about 1e210
    it is 0, so every JVP and HVP lost its path through the variance: 17 % to 47 % wrong at x = 1e110
    while the forward and the backward were exact. r (r^2 var') keeps every intermediate normal."""
    at_scale, reference = _derivatives_at_scale(op, s, dtype), _derivatives_at_scale(op, 1.0, dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-4
    for name, value in at_scale.items():
        assert np.isfinite(value).all(), name
        np.testing.assert_allclose(value, reference[name], rtol=rtol, atol=rtol * float(np.max(np.abs(reference[name]))), err_msg=name)


def test_softmax_hvp_rejects_a_nan_cotangent_it_used_to_turn_into_nan():
    """softmax_hvp checked the shapes and dtypes of dratios and dlogits but not dratios' values: a NaN
    in dratios returned a NaN Hessian-vector product. softmax_vjp and softmax_jvp refused it already."""
    ratios = refnorm.softmax(np.array([[0.3, -1.0, 2.0]]))
    dratios = np.array([[np.nan, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"^dratios contains NaN or infinity"):
        refnorm.softmax_hvp(dratios, ratios, np.ones((1, 3)))
    with np.errstate(invalid="ignore"):  # what the unchecked formula gives: NaN everywhere
        ratios_dot = refnorm.softmax_jvp(np.ones((1, 3)), ratios)
        centred = dratios - np.sum(ratios * dratios, axis=-1, keepdims=True)
        unchecked = ratios_dot * centred - ratios * np.sum(ratios_dot * dratios, axis=-1, keepdims=True)
    assert np.isnan(unchecked).all()


def test_softmax_hvp_names_a_bad_ratios_not_the_cotangent_that_fails_to_match_it():
    """An integer ``ratios`` was reported as "dratios has dtype float64, expected int64 (the dtype of ratios)"."""
    with pytest.raises(TypeError, match=r"^ratios has dtype int64, expected a real floating dtype"):
        refnorm.softmax_hvp(np.ones((1, 3)), np.array([[0, 1, 0]]), np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"^ratios has shape \(\), expected \(\.\.\., K\)"):
        refnorm.softmax_hvp(np.ones((1, 3)), np.asarray(0.5), np.ones((1, 3)))


def test_an_hvp_given_an_en_cache_says_en_has_no_second_order():
    x = _layer_inputs()[0]
    en = refnorm.exemplar_norm_forward(x, *refnorm.exemplar_norm_init(4, x)).cache
    t = refnorm.SwitchNormGrads(x, np.ones(4), np.ones(4), np.ones(3), np.ones(3))
    with pytest.raises(TypeError, match=r"got ExemplarNormCache: refnorm defines no second order for EN \(docs/sn-jvp-hvp\.md says why\); EN's forward mode is exemplar_norm_jvp"):
        refnorm.switch_norm_hvp(np.ones_like(x), en, t)


def test_ssn_jvp_and_hvp_name_themselves_and_their_forward():
    """They delegate to SN's stages; their messages say sparse_switch_norm_*, not switch_norm_*."""
    x = _layer_inputs()[0]
    with pytest.raises(TypeError, match=r"^cache must be the SwitchNormCache that sparse_switch_norm_forward returns, got None"):
        refnorm.sparse_switch_norm_jvp(refnorm.SwitchNormGrads(x, x, x, x, x), None)
    ssn = refnorm.sparse_switch_norm_forward(*_layer_inputs(), radius=0.3).cache
    with pytest.raises(TypeError, match=r"differentiable argument of sparse_switch_norm_hvp \(dx, dgamma, dbeta, dmean_logits, dvar_logits\), got tuple"):
        refnorm.sparse_switch_norm_hvp(np.ones_like(x), ssn, (x,))


def test_another_ops_gradients_as_tangents_are_told_which_fields_differ():
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    plain = refnorm.plain_norm_forward(x, gamma, beta, normalizer="ln").cache
    sn_t = refnorm.SwitchNormGrads(x, gamma, beta, mean_logits, var_logits)
    with pytest.raises(TypeError, match=r"got SwitchNormGrads with an extra dmean_logits, dvar_logits$"):
        refnorm.plain_norm_jvp(sn_t, plain)
    with pytest.raises(TypeError, match=r"got dict; build one with PlainNormGrads\(\*\*\{\.\.\.\}\)$"):
        refnorm.plain_norm_jvp({"dx": x, "dgamma": gamma, "dbeta": beta}, plain)


def test_the_reported_softmax_vjp_broadcast_is_rejected():
    """softmax_vjp(ones(3), full((4, 3), 1/3)) returned shape (4, 3)."""
    with pytest.raises(ValueError, match=r"dratios has shape \(3,\), expected the shape of ratios = \(4, 3\)"):
        refnorm.softmax_vjp(np.ones(3), np.full((4, 3), 1 / 3))


# --------------------------------------------------------------------------------------------
# Sparsemax and SparsestMax: exact for any finite logits (the other helper's shift by the maximum)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logits", "dtype", "expected"),
    [
        ([9e307, 0.0, 0.0], np.float64, [1.0, 0.0, 0.0]),
        ([2e38, 0.0, 0.0], np.float32, [1.0, 0.0, 0.0]),
        ([FLOAT64_MAX, -FLOAT64_MAX], np.float64, [1.0, 0.0]),
        ([FLOAT32_MAX, -FLOAT32_MAX, 0.0], np.float32, [1.0, 0.0, 0.0]),
        ([1e300 + 0.0, 1e300, -1e300], np.float64, [0.5, 0.5, 0.0]),
    ],
)
def test_sparsemax_and_sparsestmax_are_exact_for_huge_finite_logits(logits, dtype, expected):
    z = np.asarray(logits, dtype)
    np.testing.assert_array_equal(refnorm.sparsemax(z), np.asarray(expected, dtype))
    np.testing.assert_array_equal(refnorm.sparsestmax(z, 0.0), np.asarray(expected, dtype))
    assert np.isfinite(refnorm.sparsestmax(z, 0.5)).all()


def test_ssn_with_huge_logits_mixes_with_the_vertex_not_zero_ratios():
    """The report: sparsemax([9e307, 0, 0]) was [0, 0, 0] and SSN mixed with zero ratios."""
    x, gamma, beta, _, _ = _layer_inputs()
    huge = np.array([9e307, 0.0, 0.0])
    y, cache, _, fixed = refnorm.sparse_switch_norm_forward(x, gamma, beta, huge, huge, radius=0.3)
    np.testing.assert_array_equal(cache.mixture.mean_ratios, [1.0, 0.0, 0.0])
    plain, _, _ = refnorm.plain_norm_forward(x, gamma, beta, normalizer="in")
    np.testing.assert_allclose(y, plain, rtol=1e-13, atol=1e-13)
    assert fixed == refnorm.FixedSides(mean=0, var=0)


# --------------------------------------------------------------------------------------------
# Messages that teach (issue 12)
# --------------------------------------------------------------------------------------------


def test_channels_last_input_is_told_to_move_its_channels():
    """NHWC: gamma's length equals x's last axis, not its axis 1."""
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 16))
    with pytest.raises(ValueError, match=r"gamma has shape \(16,\), expected \(C,\) = \(3,\); x has shape \(2, 3, 3, 16\) and refnorm expects channels first, \(N, C, \*spatial\): if x is channels-last \(N, \*spatial, C\), move its channels to axis 1 first \(xp\.permute_dims\(x, \(0, 3, 1, 2\)\)\)"):  # fmt: skip
        refnorm.switch_norm_forward(x, np.ones(16), np.zeros(16), np.zeros(3), np.zeros(3))


def test_a_mismatch_that_is_not_channels_last_gets_no_layout_hint():
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 16))
    with pytest.raises(ValueError, match=r"gamma has shape \(5,\), expected \(C,\) = \(3,\)$"):
        refnorm.switch_norm_forward(x, np.ones(5), np.zeros(3), np.zeros(3), np.zeros(3))


def test_evaluation_without_running_statistics_points_to_initial_running_stats():
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    with pytest.raises(ValueError, match=r"start from refnorm\.initial_running_stats\(C, x\) \(C = 4\)"):
        refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, training=False)
    running = refnorm.initial_running_stats(4, x)  # the advice works
    refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, training=False, running=running)


def test_a_mean_var_tuple_is_told_how_to_build_running_stats():
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    pair = (np.zeros(4), np.ones(4))
    with pytest.raises(TypeError, match=r"got tuple; build one from a \(mean, var\) pair with refnorm\.RunningStats\(mean, var\)"):
        refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=pair)
    refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=refnorm.RunningStats(*pair))  # the advice works


@pytest.mark.parametrize(("fixed", "side"), [(refnorm.FixedSides(), "mean"), (refnorm.FixedSides(mean=0), "var")])
def test_ssn_with_one_normalizer_says_which_sides_logits_are_wrong(fixed, side):
    x, gamma, beta, _, _ = _layer_inputs()
    with pytest.raises(ValueError, match=rf"^{side}_logits has shape \(1,\), expected \(\.\.\., K\) with K >= 2: the {side} ratios come from SparsestMax"):
        refnorm.sparse_switch_norm_forward(x, gamma, beta, np.zeros(1), np.zeros(1), radius=0.3, normalizers=("bn",), fixed=fixed)


def test_ssn_with_one_normalizer_and_both_sides_fixed_is_the_plain_normalizer():
    x, gamma, beta, _, _ = _layer_inputs()
    fixed = refnorm.FixedSides(mean=0, var=0)
    y, _, _, _ = refnorm.sparse_switch_norm_forward(x, gamma, beta, np.zeros(1), np.zeros(1), radius=0.3, normalizers=("bn",), fixed=fixed)
    np.testing.assert_allclose(y, refnorm.plain_norm_forward(x, gamma, beta, normalizer="bn").y, rtol=1e-14, atol=1e-14)


def test_arrays_of_two_libraries_are_named_by_library():
    """Not "Multiple namespaces for array inputs: [<module ...>]"."""
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    with pytest.raises(TypeError, match=r"^x, beta, mean_logits, var_logits are numpy arrays; gamma is an array_api_strict array: the array arguments must all come from one array library$"):  # fmt: skip
        refnorm.switch_norm_forward(x, array_api_strict.asarray(gamma), beta, mean_logits, var_logits)


def test_a_torch_tensor_among_numpy_arrays_is_named_by_library():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the test mixes a torch tensor into a call")
    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    with pytest.raises(TypeError, match=r"^x, beta, mean_logits, var_logits are numpy arrays; gamma is a torch array: the array arguments must all come from one array library$"):  # fmt: skip
        refnorm.switch_norm_forward(x, torch.from_numpy(gamma), beta, mean_logits, var_logits)


def test_a_torch_input_with_numpy_running_statistics_is_a_type_error():
    """A reported crash (AttributeError: 'Float64DType' object has no attribute 'is_floating_point')."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the test passes torch tensors")
    x, gamma, beta, mean_logits, var_logits = (torch.from_numpy(a) for a in _layer_inputs())
    with pytest.raises(TypeError, match=r"x is a torch array; running\.mean, running\.var are numpy arrays"):
        refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=refnorm.RunningStats(np.zeros(4), np.ones(4)))


def test_the_namespace_helper_names_required_and_optional_arguments():
    with pytest.raises(TypeError, match=r"^a must be an array \(NumPy"):
        _validation.namespace_of({"a": None, "b": np.ones(2)})
    assert _validation.namespace_of({"a": None, "b": np.ones(2)}, optional=("a",)) is not None
    with pytest.raises(TypeError, match=r"^a must be an array or None"):
        _validation.namespace_of({"a": 1.0}, optional=("a",))


# --------------------------------------------------------------------------------------------
# Hypothesis over the magnitudes: a clean error, or the right finite numbers
# --------------------------------------------------------------------------------------------

ARGUMENTS = ("x", "gamma", "beta", "mean_logits", "var_logits", "running", "eps", "momentum", "normalizer", "normalizers", "convention",
             "conv_weight", "training")


def _magnitude(low: int, high: int) -> st.SearchStrategy[float]:
    return st.integers(low, high).map(lambda e: 10.0**e)


@st.composite
def edge_calls(draw, exponent: int = 150):
    """An SN call at the edges: magnitudes up to ``10**exponent`` (``x``), ``10**(2 exponent)``
    (logits, running variances), eps from far below the dtype's bound to 100."""
    shape = draw(st.sampled_from([(2, 3, 2, 2), (1, 4, 3), (3, 2, 1, 1), (4, 3), (2, 1, 2, 3)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    scale = draw(_magnitude(-exponent, exponent)) * draw(st.sampled_from([1.0, 0.0]))
    offsets = draw(st.sampled_from(["none", "common", "per-instance", "per-channel"]))
    offset = draw(_magnitude(-exponent, exponent + 4)) * draw(st.sampled_from([1.0, -1.0]))
    x = scale * rng.standard_normal(shape)
    if offsets == "common":
        x = x + offset
    elif offsets == "per-instance":
        x = x + offset * rng.standard_normal(shape[:2] + (1,) * (len(shape) - 2))
    elif offsets == "per-channel":
        x = x + offset * rng.standard_normal((1, shape[1]) + (1,) * (len(shape) - 2))
    C = shape[1]
    normalizers = ("ln", "bn") if len(shape) == 2 else ("in", "ln", "bn")
    logit_scale = draw(_magnitude(-3, 2 * exponent))
    running_var = draw(st.sampled_from([1.0, 0.0, 10.0 ** (-2 * exponent), 1e-10, 1e10, 10.0 ** (2 * exponent)]))
    call = dict(
        x=x,
        gamma=draw(_magnitude(-3, 3)) * rng.standard_normal(C),
        beta=draw(_magnitude(-3, 3)) * rng.standard_normal(C),
        mean_logits=logit_scale * rng.standard_normal(len(normalizers)),
        var_logits=logit_scale * rng.standard_normal(len(normalizers)),
        running=refnorm.RunningStats(rng.standard_normal(C), running_var * rng.uniform(0.5, 1.5, C)),
        training=draw(st.booleans()),
        normalizers=normalizers,
        convention=draw(st.sampled_from(["paper", "paper", "official"])),
        eps=draw(st.one_of(_magnitude(-25, 2), _magnitude(-25, 2), _magnitude(-25, 2), _magnitude(-320, -26))),
        momentum=draw(st.sampled_from([0.0, 0.5, 0.9, 0.997, 1.0])),
    )
    return call


def _clean(error: Exception, names: tuple[str, ...] = ARGUMENTS) -> None:
    event(f"raised {type(error).__name__}: {' '.join(str(error).split()[:3])}")
    assert isinstance(error, TypeError | ValueError), repr(error)
    assert any(name in str(error) for name in names), f"names no argument: {error}"


def assert_close_at_any_magnitude(actual, expected, call, dtype, *, amplification: float = 1.0) -> None:
    """``actual`` equals ``expected`` within a first-order bound on the rounding of
    y = gamma xhat + beta at the conditioning of the input.

    refnorm assembles the pooled variances from the instance means (SPEC §1), each rounded to an ulp
    of max|x|, so a variance carries an error of about u max|x| sqrt(var), and xhat a relative one
    of about u kappa with kappa = max|x| / sqrt(var + eps) (the smallest variance a normalizer
    uses): |dy| <= 16 u kappa (|y| + |gamma| + |beta|). (The direct two-pass oracle is better
    conditioned there: its mean's error enters the variance to second order only.) Where 16 u kappa
    exceeds 1e-3 the input is too ill-conditioned for two algorithms to agree (constant input at
    eps = 1e-30: refnorm's xhat is exactly 0, NumPy's variance is 1e-34 of rounding), and only
    finiteness (asserted by the caller) is claimed; hypothesis reports how often.
    """
    u = float(np.finfo(dtype).eps)
    x = np.asarray(call["x"], np.float64)
    gamma, beta = (float(np.max(np.abs(np.asarray(call[k], np.float64)))) for k in ("gamma", "beta"))
    with np.errstate(over="ignore"):
        kappa = float(np.max(np.abs(x))) / math.sqrt(_smallest_variance(call) + call["eps"])
        rel = 16.0 * u * amplification * (1.0 + kappa)
    if not rel <= 1e-3:
        event("too ill-conditioned to compare two algorithms")
        return
    event("compared")
    error = np.abs(np.asarray(actual, np.float64) - expected)
    allowed = rel * (np.abs(expected) + gamma + beta) + 1e-300
    worst = np.unravel_index(int(np.argmax(error - allowed)), error.shape)
    assert np.all(error <= allowed), f"at {worst}: {actual[worst]!r} vs {expected[worst]!r}, allowed {allowed[worst]:.3g} (kappa {kappa:.3g})"


def _largest_statistic(call) -> float:
    """The scale of the statistics the ratios multiply, float64: the input's largest magnitude, and in
    evaluation the running statistics' (BN's mean and standard deviation: a running variance near
    float32's maximum makes the sum against it overflow float32 while the ratio that weights it is 0)."""
    largest = float(np.max(np.abs(np.asarray(call["x"], np.float64))))
    if not call["training"] and "bn" in call["normalizers"]:
        running = call["running"]
        largest = max(largest, float(np.max(np.abs(np.asarray(running.mean, np.float64)))), math.sqrt(float(np.max(np.asarray(running.var, np.float64)))))
    return largest


def _smallest_variance(call) -> float:
    """The smallest variance any normalizer of the call uses (direct scope moments, float64): the
    mixed variance is at least this, so kappa is an upper bound for every op."""
    x = np.asarray(call["x"], np.float64)
    smallest = math.inf
    with np.errstate(all="ignore"):
        for scope in call["normalizers"]:
            if scope == "bn" and not call["training"]:
                var = np.asarray(call["running"].var, np.float64)
            else:
                official = call["convention"] == "official" and x.ndim > 2
                var = direct_scope_moments(x, scope, "official" if official else "paper")[1]
            smallest = min(smallest, float(np.min(var)))
    return smallest if math.isfinite(smallest) else 0.0


@settings(max_examples=400, deadline=None)
@given(call=edge_calls())
def test_switch_norm_at_any_magnitude_is_right_or_a_clean_error(call):
    """float64 SN across the whole range (offsets to 1e154, scales 1e-150..1e150, eps 1e-320..100,
    logits to 1e300, running variances from 0 to 1e300): a clean error naming an argument, or finite
    y equal to the direct oracle and a finite new running state equal to the EMA. (Bad options and
    bad running statistics are the error table's: tests/test_error_contract.py.)"""
    try:
        y, cache, running = refnorm.switch_norm_forward(**call)
    except Exception as error:  # noqa: BLE001 - the contract: only clean, named errors
        _clean(error)
        return
    event("returned")
    assert np.isfinite(y).all()
    options = {k: call[k] for k in ("normalizers", "convention", "eps", "training")}
    if not call["training"]:
        options["running"] = tuple(call["running"])
    with np.errstate(all="ignore"):
        expected = direct_switch_norm(call["x"], call["gamma"], call["beta"], call["mean_logits"], call["var_logits"], **options)
    assume(np.isfinite(expected).all())  # the direct formula itself overflows where refnorm's two-pass does not
    assert_close_at_any_magnitude(y, expected, call, np.float64)
    if call["training"]:
        mean_bn, var_bn = direct_scope_moments(call["x"], "bn", call["convention"])
        m = call["momentum"]
        assert np.isfinite(running.mean).all() and np.isfinite(running.var).all()
        size = float(np.max(np.abs(call["x"])))  # np.var rounds where refnorm's constant-instance variance is exactly 0
        np.testing.assert_allclose(running.mean, m * call["running"].mean + (1 - m) * mean_bn[0], rtol=1e-12, atol=1e-13 * size)
        np.testing.assert_allclose(running.var, m * call["running"].var + (1 - m) * var_bn[0], rtol=1e-12, atol=1e-13 * size * size)


@settings(max_examples=150, deadline=None)
@given(call=edge_calls(exponent=18), op=st.sampled_from(["switch_norm", "sparse_switch_norm", "exemplar_norm", "plain_norm"]))
def test_float32_at_any_magnitude_equals_float64_or_is_a_clean_error(call, op):
    """Every layer in float32 on the same (float32-rounded) values as a float64 call: a clean error, or
    finite y equal to the float64 y within the conditioning bound, and a finite backward."""
    with np.errstate(over="ignore"):  # values beyond float32's range become inf: bad input for float32
        call32 = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) else v) for k, v in call.items()}
        call32["running"] = refnorm.RunningStats(*(np.asarray(a, np.float32) for a in call["running"]))
    rounded = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in call32.items()}
    rounded["running"] = refnorm.RunningStats(*(np.asarray(a, np.float64) for a in call32["running"]))

    def run(arguments):
        arguments = dict(arguments)
        if op == "switch_norm":
            y, cache, _ = refnorm.switch_norm_forward(**arguments)
            return y, lambda dy: refnorm.switch_norm_backward(dy, cache)
        if op == "sparse_switch_norm":
            y, cache, _, _ = refnorm.sparse_switch_norm_forward(**arguments, radius=0.3)
            return y, lambda dy: refnorm.sparse_switch_norm_backward(dy, cache)
        if op == "plain_norm":
            arguments.pop("normalizers"), arguments.pop("mean_logits"), arguments.pop("var_logits")
            y, cache, _ = refnorm.plain_norm_forward(**arguments, normalizer="bn")
            return y, lambda dy: refnorm.plain_norm_backward(dy, cache)
        x = arguments.pop("x")
        mean_logits = arguments.pop("mean_logits")
        arguments.pop("var_logits")
        C = x.shape[1]
        kernel = 1 if C < 3 else 3
        params = refnorm.exemplar_norm_init(C, x, kernel_size=kernel)._replace(gamma=arguments.pop("gamma"), beta=arguments.pop("beta"))
        params = params._replace(conv_weight=(np.resize(mean_logits, kernel) * 0.5).astype(x.dtype))
        y, cache, _ = refnorm.exemplar_norm_forward(x, *params, **arguments)
        return y, lambda dy: refnorm.exemplar_norm_backward(dy, cache)

    try:
        y32, backward32 = run(call32)
    except Exception as error:  # noqa: BLE001
        _clean(error)
        return
    event("returned")
    assert np.isfinite(y32).all()
    try:
        y64, backward64 = run(rounded)
    except Exception as error:  # noqa: BLE001 - float32 accepted what float64 refuses: must not happen
        raise AssertionError(f"float32 returned, float64 raised {error!r}") from None
    # EN: the ratios' standardisation amplifies score differences by up to eps_r^(-1/2) = 316
    amplification = 316.0 if op == "exemplar_norm" else 1.0
    assert_close_at_any_magnitude(y32, y64, rounded, np.float32, amplification=amplification)
    dy = np.random.default_rng(1).standard_normal(y32.shape).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # refnorm does not check its outputs (docs/errors.md)
        try:
            grads32 = backward32(dy)
        except ValueError as error:  # the gradient with respect to the ratios overflowed float32
            grads32 = None
            assert re.match(r"the gradient with respect to the [\w -]+ ratios is not finite: dy against the forward's statistics overflows float32", str(error)), error
    grads64 = backward64(dy.astype(np.float64))
    largest = max(float(np.max(np.abs(g))) for g in grads64)
    if largest > FLOAT32_MAX / 1e3:
        event("a gradient (nearly) beyond float32's range")
        return
    if grads32 is None:  # allowed where the sums against the statistics exceed float32 (kappa^3 beyond its range)
        with np.errstate(over="ignore"):
            kappa = _largest_statistic(rounded) / math.sqrt(_smallest_variance(rounded) + rounded["eps"])
        assert kappa**3 > FLOAT32_MAX / 1e9, f"the float32 backward refused at kappa {kappa:.3g}, where float64's gradients fit float32"
        event("float32 backward refused: its sums against the statistics overflow")
        return
    for name, gradient in grads32._asdict().items():
        assert np.isfinite(gradient).all(), f"{name} is not finite; float64's largest gradient is {largest:.3g}"


def test_arrays_on_two_devices_are_named():
    """array-api-strict's second device stands for a GPU next to the host."""
    import array_api_strict as strict

    x, gamma, beta, mean_logits, var_logits = _layer_inputs()
    on = [strict.asarray(a) for a in (x, gamma, beta, mean_logits, var_logits)]
    on[1] = strict.asarray(gamma, device=strict.Device("device1"))
    with pytest.raises(ValueError, match=r"^gamma is on device .*device1.*, but x is on .*; expected every array on one device$"):
        refnorm.switch_norm_forward(*on)


@settings(max_examples=300, deadline=None)
@given(call=edge_calls(), seed=st.integers(0, 2**16))
def test_jvp_and_hvp_at_any_magnitude_are_finite_and_adjoint_or_a_clean_error(call, seed):
    """float64 SN across the range of ``edge_calls``: where the forward returns, its JVP along
    unit-scale tangents, its backward and its HVP are finite (or a clean error naming an argument),
    and the JVP is the transpose of the backward, <dy, J t> = sum_a <dL/da, t_a>, within the
    rounding of the terms the two sides sum.

    Those terms are larger than the result: the direct term r gamma dy (r <= (min var + eps)^(-1/2))
    and the paths through the statistics, which multiply it by up to (1 + kappa)^2 (kappa =
    max|x| r) and, for the logits, by the statistics themselves (up to max|x|), cancel to the
    result. So the identity holds within 64 u (A ||dy|| ||t|| + its scale) with A = r gamma
    (1 + kappa)^2 (1 + max|x|) and the scale ||dy|| ||J t|| + sum_a ||dL/da|| ||t_a||; where that
    bound exceeds 1e-3 of the scale the draw is too ill-conditioned to say anything, and only
    finiteness is asserted. Where A itself approaches float64's range, the derivatives may exceed
    it (docs/errors.md, "Outputs": refnorm does not check its outputs), and only clean errors are
    asserted. Hypothesis reports how often each happens."""
    try:
        y, cache, _ = refnorm.switch_norm_forward(**call)
    except Exception as error:  # noqa: BLE001 - the forward's edges are the test above
        _clean(error)
        return
    rng = np.random.default_rng(seed)
    arguments = (call["x"], call["gamma"], call["beta"], call["mean_logits"], call["var_logits"])
    tangents = refnorm.SwitchNormGrads(*(rng.standard_normal(a.shape) for a in arguments))
    dy = rng.standard_normal(y.shape)
    size = np.float64(np.max(np.abs(call["x"])))
    with np.errstate(over="ignore", invalid="ignore"):  # an infinite bound: beyond float64's range, below
        r = 1.0 / np.sqrt(np.float64(_smallest_variance(call)) + call["eps"])
        amplification = r * np.max(np.abs(call["gamma"])) * (1.0 + size * r) ** 2 * (1.0 + size)
        bound = float(64.0 * np.finfo(np.float64).eps * amplification * np.linalg.norm(dy) * math.sqrt(sum(float(np.vdot(t, t)) for t in tangents)))
        representable = bool(amplification * (1.0 + size * r) * (1.0 + r) < FLOAT64_MAX / 1e6)  # the HVP's terms too
    try:
        with np.errstate(**({} if representable else {"over": "ignore", "invalid": "ignore"})):
            y_dot = refnorm.switch_norm_jvp(tangents, cache)
            grads = refnorm.switch_norm_backward(dy, cache)
            hvp = refnorm.switch_norm_hvp(dy, cache, tangents)
    except Exception as error:  # noqa: BLE001 - the contract: only clean, named errors
        _clean(error, ("dy", "tangents"))  # dy against statistics of 1e206 overflows the ratios' gradient
        return
    if not representable:
        event("derivatives may exceed float64's range")
        return
    event("returned")
    assert np.isfinite(y_dot).all(), "the JVP is not finite"
    for name, array in (*grads._asdict().items(), *((f"hvp.{k}", v) for k, v in hvp._asdict().items())):
        assert np.isfinite(array).all(), f"{name} is not finite"
    pairs = [(dy, y_dot)] + [(g, t) for g, t in zip(grads, tangents, strict=True)]
    with np.errstate(over="ignore", invalid="ignore"):  # a scale beyond float64: too ill-conditioned, below
        scale = sum(float(np.linalg.norm(a) * np.linalg.norm(b)) for a, b in pairs)
        products = [float(np.vdot(dy, y_dot))] + [-float(np.vdot(g, t)) for g, t in zip(grads, tangents, strict=True)]
    bound += 64.0 * float(np.finfo(np.float64).eps) * scale  # the rounding of the dot products themselves
    if not (bound <= 1e-3 * scale and math.isfinite(scale)):
        event("too ill-conditioned to compare")
        return
    event("adjoint compared")
    mismatch = math.fsum(products)
    assert abs(mismatch) <= bound, f"<dy, J t> - <J^T dy, t> = {mismatch:.3g}, allowed {bound:.3g} (scale {scale:.3g})"
