"""Sparse Switchable Normalization: SN with SparsestMax ratios, fixed sides, the radius schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

import refnorm
from refnorm.ops.running import RunningStats
from refnorm.ops.simplex import FixedRatios
from refnorm.ops.sparse_switchnorm import (
    FixedSides,
    is_vertex,
    radius_schedule,
    sparse_switch_norm_backward,
    sparse_switch_norm_forward,
    sparse_switch_norm_linearize,
)
from refnorm.ops.sparsestmax import SparsestMax, sparsemax, sparsestmax
from refnorm.ops.switchnorm import switch_norm_forward

ARGUMENTS = ("x", "gamma", "beta", "mean_logits", "var_logits")
EPS = 1e-5


def layer_inputs(rng, shape=(3, 4, 2, 3), K=3, logit_scale=0.3):
    C = shape[1]
    return (
        rng.standard_normal(shape) * 2.0 + 0.5,
        1.0 + 0.5 * rng.standard_normal(C),
        0.5 * rng.standard_normal(C),
        logit_scale * rng.standard_normal(K),
        logit_scale * rng.standard_normal(K),
    )


def plain_normalization(x, gamma, beta, axes, ddof=0):
    """IN (axes (2, 3)), LN ((1, 2, 3)) or BN ((0, 2, 3)) written out directly."""
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.var(x, axis=axes, keepdims=True, ddof=ddof)
    return gamma[None, :, None, None] * (x - mean) / np.sqrt(var + EPS) + beta[None, :, None, None]


SCOPE_AXES = {0: (2, 3), 1: (1, 2, 3), 2: (0, 2, 3)}


@pytest.mark.parametrize(("vertex", "name"), [(0, "IN"), (1, "LN"), (2, "BN")])
def test_both_sides_fixed_to_a_vertex_is_plain_in_ln_or_bn(rng, vertex, name):
    x, gamma, beta, mean_logits, var_logits = layer_inputs(rng)
    y, _, _, fixed = sparse_switch_norm_forward(
        x, gamma, beta, mean_logits, var_logits, radius=0.3, fixed=FixedSides(vertex, vertex), eps=EPS
    )
    np.testing.assert_allclose(y, plain_normalization(x, gamma, beta, SCOPE_AXES[vertex]), rtol=1e-12, atol=1e-12, err_msg=name)
    assert fixed == FixedSides(vertex, vertex)


def test_instance_side_fixed_in_the_official_convention_is_in_with_unbiased_variance(rng):
    x, gamma, beta, mean_logits, var_logits = layer_inputs(rng)
    y = sparse_switch_norm_forward(
        x, gamma, beta, mean_logits, var_logits, radius=0.0, fixed=FixedSides(0, 0), convention="official", eps=EPS
    ).y
    np.testing.assert_allclose(y, plain_normalization(x, gamma, beta, (2, 3), ddof=1), rtol=1e-12, atol=1e-12)


def test_bn_fixed_in_evaluation_uses_the_running_statistics(rng):
    x, gamma, beta, mean_logits, var_logits = layer_inputs(rng)
    running = RunningStats(rng.standard_normal(4), rng.uniform(0.5, 2.0, 4))
    y, _, new_running, _ = sparse_switch_norm_forward(
        x, gamma, beta, mean_logits, var_logits, radius=0.5, fixed=FixedSides(2, 2), running=running, training=False, eps=EPS
    )
    expected = gamma[None, :, None, None] * (x - running.mean[None, :, None, None]) / np.sqrt(running.var[None, :, None, None] + EPS)
    np.testing.assert_allclose(y, expected + beta[None, :, None, None], rtol=1e-12, atol=1e-12)
    assert new_running is running


def test_free_side_ratios_are_sparsestmax_of_its_logits(rng):
    x, gamma, beta, mean_logits, var_logits = layer_inputs(rng)
    for variant in ("paper", "official"):
        cache = sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.45, variant=variant).cache
        np.testing.assert_array_equal(cache.mixture.mean_ratios, sparsestmax(mean_logits, 0.45, variant=variant))
        np.testing.assert_array_equal(cache.mixture.var_ratios, sparsestmax(var_logits, 0.45, variant=variant))
        assert cache.config.mean_ratio == SparsestMax(0.45, variant)


def test_radius_zero_is_sn_with_sparsemax_ratios(rng):
    x, gamma, beta, mean_logits, var_logits = layer_inputs(rng)
    y = sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.0).y
    expected = switch_norm_forward(
        x, gamma, beta, mean_logits, var_logits,
        mean_ratio=FixedRatios(tuple(sparsemax(mean_logits))), var_ratio=FixedRatios(tuple(sparsemax(var_logits))),
    ).y  # fmt: skip
    np.testing.assert_array_equal(y, expected)


# --------------------------------------------------------------------------------------------
# Fixing
# --------------------------------------------------------------------------------------------


def test_a_fixed_side_ignores_its_logits_and_gets_no_gradient(rng):
    x, gamma, beta, mean_logits, var_logits = layer_inputs(rng)
    first = sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.3, fixed=FixedSides(mean=1))
    second = sparse_switch_norm_forward(x, gamma, beta, mean_logits + 5.0 * rng.standard_normal(3), var_logits, radius=0.3, fixed=FixedSides(mean=1))
    np.testing.assert_array_equal(first.y, second.y)
    grads = sparse_switch_norm_backward(rng.standard_normal(x.shape), first.cache)
    assert np.all(grads.dmean_logits == 0.0)
    assert np.max(np.abs(grads.dvar_logits)) > 1e-6  # the free side still learns


@pytest.mark.parametrize("training", [True, False])
def test_a_side_that_reaches_a_vertex_becomes_fixed_at_that_vertex(rng, training):
    x, gamma, beta, _, _ = layer_inputs(rng)
    mean_logits, var_logits = np.array([0.3, 0.9, 0.1]), np.array([0.2, -0.4, 0.5])
    running = RunningStats(np.zeros(4), np.ones(4))
    given = FixedSides()
    out = sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.82, running=running, training=training, fixed=given)
    assert out.fixed == FixedSides(mean=1, var=2)
    assert given == FixedSides()
    grads = sparse_switch_norm_backward(rng.standard_normal(x.shape), out.cache)
    assert np.all(grads.dmean_logits == 0.0) and np.all(grads.dvar_logits == 0.0)


def test_official_variant_fixes_a_side_on_an_edge_at_a_smaller_radius(rng):
    """sparsemax(2.0, 1.5, -1.0) = (0.75, 0.25, 0) is on an edge: the official sphere about the
    edge midpoint reaches the vertex at r >= 1/sqrt(2) = 0.707; the paper's only at sqrt(2/3) = 0.816."""
    x, gamma, beta, _, _ = layer_inputs(rng)
    logits = np.array([2.0, 1.5, -1.0])
    official = sparse_switch_norm_forward(x, gamma, beta, logits, logits, radius=0.72, variant="official").fixed
    paper = sparse_switch_norm_forward(x, gamma, beta, logits, logits, radius=0.72, variant="paper").fixed
    assert official == FixedSides(0, 0)
    assert paper == FixedSides()
    assert sparse_switch_norm_forward(x, gamma, beta, logits, logits, radius=0.82, variant="paper").fixed == FixedSides(0, 0)


def test_vertex_detection_uses_a_tolerance():
    assert is_vertex(np.array([1.0 - 2.0**-52, 2.0**-52, 0.0]))
    assert is_vertex(np.array([0.0, 1.0 - 1e-7, 1e-7], dtype=np.float32))
    assert not is_vertex(np.array([0.999, 0.001, 0.0]))
    assert not is_vertex(np.array([1.0 - 1e-12, 1e-12, 0.0]))


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("convention", ["paper", "official"])
@pytest.mark.parametrize("training", [True, False])
def test_ssn_gradients_match_finite_differences_for_every_argument(rng, variant, convention, training):
    """Mean ratios on the sphere inside the triangle (one sphere step); variance ratios sparsemax on
    an edge, outside the ball about u0 (paper) but inside the one about the edge midpoint (official)."""
    x, gamma, beta, _, _ = layer_inputs(rng)
    mean_logits, var_logits = np.array([0.2, -0.1, 0.05]), np.array([-0.3, 0.4, 0.1])
    running = None if training else RunningStats(rng.standard_normal(4), rng.uniform(0.5, 2.0, 4))

    def linearized(*args):
        return sparse_switch_norm_linearize(*args, radius=0.3, variant=variant, convention=convention, training=training, running=running)

    result = refnorm.gradcheck(linearized, (x, gamma, beta, mean_logits, var_logits), names=ARGUMENTS, directions=3, seed=4)
    assert result.passed, result.summary()
    assert all(result[name].checked == 3 for name in ARGUMENTS)
    # Not trivially zero: the mean ratios lie on the sphere inside the triangle (one sphere step).
    cache = sparse_switch_norm_forward(
        x, gamma, beta, mean_logits, var_logits, radius=0.3, variant=variant, convention=convention, training=training, running=running
    ).cache
    assert int(cache.mixture.mean_aux.sphere_steps()) == 1
    assert np.min(cache.mixture.mean_ratios) > 0
    grads = sparse_switch_norm_backward(rng.standard_normal(x.shape), cache)
    assert np.max(np.abs(grads.dmean_logits)) > 1e-6


def test_ssn_gradients_with_one_side_fixed_and_gn(rng):
    x, gamma, beta, _, _ = layer_inputs(rng, shape=(2, 4, 2, 2))
    mean_logits, var_logits = 0.3 * rng.standard_normal(4), 0.3 * rng.standard_normal(4)

    def linearized(*args):
        return sparse_switch_norm_linearize(*args, radius=0.4, fixed=FixedSides(var=3), normalizers=("in", "ln", "bn", "gn"), groups=2)

    result = refnorm.gradcheck(linearized, (x, gamma, beta, mean_logits, var_logits), names=ARGUMENTS, directions=3, seed=5)
    assert result.passed, result.summary()


def test_ssn_runs_on_every_backend(backend, rng):
    host = layer_inputs(rng)
    dy = rng.standard_normal(host[0].shape)
    expected = sparse_switch_norm_forward(*host, radius=0.3)
    expected_grads = sparse_switch_norm_backward(dy, expected.cache)
    out = sparse_switch_norm_forward(*(backend.asarray(a) for a in host), radius=0.3)
    grads = sparse_switch_norm_backward(backend.asarray(dy), out.cache)
    np.testing.assert_allclose(backend.to_numpy(out.y), expected.y, rtol=0, atol=1e-13)
    for name, value, reference in zip(expected_grads._fields, grads, expected_grads, strict=True):
        np.testing.assert_allclose(backend.to_numpy(value), reference, rtol=0, atol=1e-12, err_msg=name)
    # On lazy input (Dask) a free side's new state is a 0-d integer array (-1: still free).
    computed = FixedSides(*(side if side is None or isinstance(side, int) else backend.to_numpy(side) for side in out.fixed))
    assert computed.resolved() == expected.fixed


# --------------------------------------------------------------------------------------------
# Running statistics, schedule, errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("convention", "momentum"), [("official", 0.997), ("paper", 0.9)])
def test_default_momentum_is_the_ssn_preset(rng, convention, momentum):
    x, gamma, beta, mean_logits, var_logits = layer_inputs(rng)
    running = RunningStats(np.zeros(4), np.ones(4))
    out = sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.2, running=running, convention=convention)
    bn = out.cache.mixture.scopes.normalizers.index("bn")
    batch_mean = out.cache.mixture.scopes.means[bn][0]
    np.testing.assert_allclose(out.running.mean, (1.0 - momentum) * batch_mean, rtol=1e-14)


def test_radius_schedule_is_the_official_linear_schedule():
    epochs, iterations = 100, 7
    assert radius_schedule(0, epochs * iterations) == 0.0
    assert radius_schedule(epochs * iterations, epochs * iterations) == 1.0
    epoch, i = 81, 4
    assert radius_schedule(epoch * iterations + i, epochs * iterations) == (epoch * iterations + i) / (epochs * iterations)
    # Every K = 3 side is fixed once r passes sqrt(2/3): at 81.6 % of training.
    first_fixed = next(step for step in range(epochs * iterations) if radius_schedule(step, epochs * iterations) >= math.sqrt(2.0 / 3.0))
    assert first_fixed / (epochs * iterations) == pytest.approx(0.8165, abs=2e-3)


@pytest.mark.parametrize(
    ("step", "total", "error"),
    [(-1, 10, ValueError), (11, 10, ValueError), (0, 0, ValueError), (1.5, 10, TypeError), (True, 10, TypeError)],
)
def test_radius_schedule_rejects_bad_steps(step, total, error):
    with pytest.raises(error):
        radius_schedule(step, total)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(radius=-0.5), ValueError, "radius"),
        (dict(radius=math.nan), ValueError, "radius"),
        (dict(variant="sparse"), ValueError, "unknown variant"),
        (dict(fixed=FixedSides(mean=3)), ValueError, r"fixed.mean = 3, expected None or a normalizer index in \[0, 3\)"),
        (dict(fixed=(0, None)), TypeError, "FixedSides"),
        (dict(mean_logits=np.ones((1, 3))), ValueError, "mean_logits has shape"),
        (dict(var_logits=np.array([0.0, np.nan, 1.0])), ValueError, "var_logits contains NaN"),
        (dict(mean_logits=np.ones(3, dtype=np.int64)), TypeError, "mean_logits has dtype"),
    ],
)
def test_ssn_rejects_bad_arguments(rng, change, error, match):
    x, gamma, beta, mean_logits, var_logits = layer_inputs(rng)
    arguments = dict(x=x, gamma=gamma, beta=beta, mean_logits=mean_logits, var_logits=var_logits, radius=0.3)
    arguments.update(change)
    with pytest.raises(error, match=match):
        sparse_switch_norm_forward(**arguments)


def test_training_over_the_official_schedule_fixes_both_sides_and_keeps_them_fixed(rng):
    """The official recipe through the public names: logits start at ones (equal: the zero-distance
    guard keeps the sparsemax gradient, no NaN), the radius grows linearly, and every side is
    fixed once r passes sqrt(2/3) at the latest; a fixed side stays fixed."""
    x, gamma, beta, _, _ = layer_inputs(rng)
    mean_logits, var_logits = np.ones(3), np.ones(3)
    target = rng.standard_normal(x.shape)
    running = refnorm.initial_running_stats(4, x, var=0.0)
    fixed, history = refnorm.FixedSides(), []
    total = 60
    for step in range(total):
        radius = refnorm.radius_schedule(step, total)
        y, cache, running, fixed = refnorm.sparse_switch_norm_forward(
            x + 0.1 * rng.standard_normal(x.shape), gamma, beta, mean_logits, var_logits,
            radius=radius, fixed=fixed, variant="official", convention="official", running=running,
        )  # fmt: skip
        grads = refnorm.sparse_switch_norm_backward(y - target, cache)
        assert all(np.all(np.isfinite(g)) for g in grads)
        mean_logits, var_logits = mean_logits - 0.5 * grads.dmean_logits, var_logits - 0.5 * grads.dvar_logits
        history.append((radius, fixed))
    assert fixed.mean is not None and fixed.var is not None
    assert all(f == fixed for r, f in history if r >= math.sqrt(2.0 / 3.0))
    first = {side: next(i for i, (_, f) in enumerate(history) if getattr(f, side) is not None) for side in ("mean", "var")}
    for side, index in first.items():
        assert all(getattr(f, side) == getattr(fixed, side) for _, f in history[index:])
