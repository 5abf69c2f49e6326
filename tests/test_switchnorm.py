"""Switchable Normalization: forward against a direct implementation, backward against finite
differences, properties, backends, sharded batches and bad input."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from oracles.direct_sn import direct_scope_moments, direct_switch_norm
from hypothesis import assume, given
from hypothesis import strategies as st

import refnorm
from refnorm import FixedRatios, RunningStats, switch_norm_backward, switch_norm_forward
from refnorm.ops import switchnorm, switchnorm_sharded
from refnorm.ops.layer import normalize, normalize_vjp
from refnorm.ops.running import use_running_statistics
from refnorm.ops.statistics import (
    Layout,
    instance_moments_and_centered,
    instance_moments_vjp,
    scope_moments,
    scope_moments_vjp,
)
from refnorm.ops.switchnorm import SWITCH_NORM_ARGUMENTS, SwitchNormConfig, mix, mix_vjp, switch_norm_linearize

SHAPES = {2: (5, 4), 3: (3, 4, 5), 4: (3, 4, 3, 2), 5: (2, 4, 2, 2, 3)}
EPS64 = np.finfo(np.float64).eps


def _params(rng, C, K):
    return 1.0 + 0.5 * rng.standard_normal(C), 0.5 * rng.standard_normal(C), rng.standard_normal(K), rng.standard_normal(K)


def _running(rng, C):
    return RunningStats(0.3 * rng.standard_normal(C), rng.uniform(0.5, 1.5, C))


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("convention", ["paper", "official"])
@pytest.mark.parametrize("training", [True, False])
def test_forward_matches_direct_implementation(rank, convention, training, rng):
    x = rng.standard_normal(SHAPES[rank]) * 1.5 + 0.3
    C = x.shape[1]
    normalizers = ("ln", "bn", "gn") if rank == 2 else ("in", "ln", "bn", "gn")
    gamma, beta, mean_logits, var_logits = _params(rng, C, len(normalizers))
    running = _running(rng, C)
    y, _, _ = switch_norm_forward(
        x, gamma, beta, mean_logits, var_logits,
        normalizers=normalizers, groups=2, convention=convention, training=training, running=running,
    )  # fmt: skip
    expected = direct_switch_norm(
        x, gamma, beta, mean_logits, var_logits,
        normalizers=normalizers, groups=2, convention=convention, training=training, running=running,
    )  # fmt: skip
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_default_normalizers_follow_the_official_logit_order(rng):
    """[in, ln, bn] for input with spatial axes, [ln, bn] for (N, C) input."""
    x4, x2 = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((4, 3))
    assert switch_norm_forward(x4, np.ones(3), np.zeros(3), np.ones(3), np.ones(3)).cache.config.normalizers == ("in", "ln", "bn")
    assert switch_norm_forward(x2, np.ones(3), np.zeros(3), np.ones(2), np.ones(2)).cache.config.normalizers == ("ln", "bn")


def test_eps_is_added_once_to_the_mixed_variance(rng):
    x = rng.standard_normal((2, 3, 4))
    eps = 0.7
    _, cache, _ = switch_norm_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.zeros(3), eps=eps)
    np.testing.assert_allclose(cache.mixture.inv_std, 1.0 / np.sqrt(cache.mixture.var + eps), rtol=1e-15)


def _mp_switch_norm(x, gamma, beta, mean_logits, var_logits, eps):
    """SN (paper convention, [in, ln, bn]) in 60-digit arithmetic, float64 inputs taken as exact."""
    mpmath.mp.dps = 60
    N, C, M = x.shape[0], x.shape[1], x[0, 0].size
    v = [[[mpmath.mpf(float(e)) for e in x[n, c].ravel()] for c in range(C)] for n in range(N)]

    def moments(elements):
        mean = mpmath.fsum(elements) / len(elements)
        return mean, mpmath.fsum((e - mean) ** 2 for e in elements) / len(elements)

    def softmax(z):
        exps = [mpmath.exp(mpmath.mpf(float(zi))) for zi in z]
        return [e / mpmath.fsum(exps) for e in exps]

    w, w_var = softmax(mean_logits), softmax(var_logits)
    ln = [moments([e for c in range(C) for e in v[n][c]]) for n in range(N)]
    bn = [moments([e for n in range(N) for e in v[n][c]]) for c in range(C)]
    y = np.empty((N, C, M))
    for n in range(N):
        for c in range(C):
            stats = [moments(v[n][c]), ln[n], bn[c]]
            mean = mpmath.fsum(w[k] * stats[k][0] for k in range(3))
            var = mpmath.fsum(w_var[k] * stats[k][1] for k in range(3))
            scale = mpmath.mpf(float(gamma[c])) / mpmath.sqrt(var + mpmath.mpf(eps))
            for i in range(M):
                y[n, c, i] = float((v[n][c][i] - mean) * scale + mpmath.mpf(float(beta[c])))
    return y.reshape(x.shape)


@pytest.mark.slow
@pytest.mark.parametrize("offset", [1e3, 1e6])
def test_float64_forward_is_accurate_for_large_offsets(offset, rng):
    """Mean up to 1e6, std 1: y agrees with a 60-digit computation within the float64
    conditioning limit 10·eps·(1 + |mean|/std), relative to max|y|."""
    x = rng.standard_normal((2, 3, 2, 2)) + offset
    gamma, beta, mean_logits, var_logits = _params(rng, 3, 3)
    y, _, _ = switch_norm_forward(x, gamma, beta, mean_logits, var_logits)
    exact = _mp_switch_norm(x, gamma, beta, mean_logits, var_logits, 1e-5)
    error = np.max(np.abs(y - exact)) / np.max(np.abs(exact))
    assert error <= 10 * EPS64 * (1 + offset), f"relative error {error:.3g}"


# --------------------------------------------------------------------------------------------
# Backward: finite differences for every argument
# --------------------------------------------------------------------------------------------

GRADCHECK_CASES = [
    # (shape, normalizers, groups)
    ((5, 4), ("ln", "bn"), None),
    ((5, 4), ("ln", "bn", "gn"), 2),
    ((3, 4, 5), ("in", "ln", "bn"), None),
    ((3, 4, 3, 2), ("in", "ln", "bn"), None),
    ((3, 4, 3, 2), ("in", "ln", "bn", "gn"), 2),
    ((3, 4, 3, 2), ("gn", "in"), 4),
    ((3, 4, 3, 2), ("bn",), None),
    ((3, 4, 3, 2), ("ln", "in"), None),
    ((2, 4, 2, 2, 3), ("in", "ln", "bn"), None),
    ((1, 4, 3, 2), ("in", "ln", "bn"), None),  # N = 1
    ((3, 1, 3, 2), ("in", "ln", "bn"), None),  # C = 1
    ((3, 4, 1, 5), ("in", "ln", "bn"), None),  # a size-1 spatial axis
    ((2, 3, 2, 1, 2), ("in", "ln", "bn"), None),
]


@pytest.mark.parametrize(("shape", "normalizers", "groups"), GRADCHECK_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("convention", ["paper", "official"])
@pytest.mark.parametrize("training", [True, False])
def test_backward_matches_finite_differences_for_every_argument(shape, normalizers, groups, convention, training, rng):
    x = rng.standard_normal(shape)
    gamma, beta, mean_logits, var_logits = _params(rng, shape[1], len(normalizers))
    config = dict(normalizers=normalizers, groups=groups, convention=convention, training=training, running=_running(rng, shape[1]))
    result = refnorm.gradcheck(
        lambda *args: switch_norm_linearize(*args, **config),
        (x, gamma, beta, mean_logits, var_logits),
        names=SWITCH_NORM_ARGUMENTS,
        directions=3,
    )
    assert result.passed, result.summary()
    assert {a.name for a in result.arguments} == set(SWITCH_NORM_ARGUMENTS)


@pytest.mark.parametrize("shape", [(3, 4, 1, 1), (4, 3)])
def test_backward_at_a_single_spatial_position(shape, rng):
    """M = 1 (paper convention; the official one refuses it): the backward is still exact."""
    x = rng.standard_normal(shape)
    normalizers = ("in", "ln", "bn")
    gamma, beta, mean_logits, var_logits = _params(rng, shape[1], 3)
    result = refnorm.gradcheck(
        lambda *args: switch_norm_linearize(*args, normalizers=normalizers),
        (x, gamma, beta, mean_logits, var_logits),
        names=SWITCH_NORM_ARGUMENTS,
    )
    assert result.passed, result.summary()


def test_backward_jacobian_matches_finite_differences_entry_by_entry(rng):
    x = rng.standard_normal((2, 3, 2))
    gamma, beta, mean_logits, var_logits = _params(rng, 3, 3)
    result = refnorm.gradcheck(
        lambda *args: switch_norm_linearize(*args, convention="official"),
        (x, gamma, beta, mean_logits, var_logits),
        names=SWITCH_NORM_ARGUMENTS,
        mode="jacobian",
    )
    assert result.passed, result.summary()


def test_evaluation_mode_passes_no_gradient_through_running_statistics(rng):
    """In evaluation the BN statistics are constants: with a BN-only set dx = gamma * r * dy."""
    x = rng.standard_normal((3, 4, 5))
    running = _running(rng, 4)
    gamma = rng.standard_normal(4)
    y, cache, _ = switch_norm_forward(x, gamma, np.zeros(4), np.zeros(1), np.zeros(1), normalizers=("bn",), training=False, running=running)
    dy = rng.standard_normal(y.shape)
    grads = switch_norm_backward(dy, cache)
    np.testing.assert_allclose(grads.dx, dy * (gamma / np.sqrt(running.var + 1e-5))[None, :, None], rtol=1e-14)


# --------------------------------------------------------------------------------------------
# Backward: the chain of the stage VJPs of docs/sn-backward.md
# --------------------------------------------------------------------------------------------

SN_STAGE_VJPS = ("normalize_vjp", "mix_vjp", "scope_moments_vjp", "instance_moments_vjp")
"""The stage VJPs switch_norm_backward runs, in the order of docs/sn-backward.md (steps 4 to 1)."""


def _by_hand(x, gamma, beta, mean_logits, var_logits, dy, *, running, training, convention, normalizers=None, groups=None):
    """SN forward and backward written out as the chain of public stages and stage VJPs."""
    layout = Layout.of(x.shape)
    normalizers = normalizers or ("in", "ln", "bn")
    config = SwitchNormConfig(normalizers, groups, convention, 1e-5, 0.9, training, refnorm.SOFTMAX, refnorm.SOFTMAX)
    moments, centered = instance_moments_and_centered(x, convention=convention)
    scopes = scope_moments(moments, normalizers, convention=convention, layout=layout, groups=groups)
    scopes, _ = use_running_statistics(scopes, running, training=training, momentum=0.9, channels=layout.C)
    mixture = mix(moments, scopes, mean_logits, var_logits, config)
    y = normalize(centered, gamma, beta, mixture.inv_std, mixture.shift).reshape(x.shape)

    dy3 = dy.reshape(layout.N, layout.C, layout.M)
    normalized = normalize_vjp(dy3, centered, gamma, mixture.inv_std, mixture.shift)
    mixed = mix_vjp(normalized.sum_dxhat, normalized.sum_dxhat_centered, mixture, config)
    dmean_in, dvar_in = scope_moments_vjp(mixed.dmeans, mixed.dvars, moments, scopes, convention=convention, layout=layout, groups=groups)
    dx = instance_moments_vjp(dmean_in, dvar_in, centered, convention=convention, layout=layout)
    dx = dx + normalized.direct_scale[:, :, None] * dy3
    return y, (dx.reshape(x.shape), normalized.dgamma, normalized.dbeta, mixed.dmean_logits, mixed.dvar_logits)


@pytest.mark.parametrize("convention", ["paper", "official"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("rank", [2, 4])
def test_backward_is_the_chain_of_the_public_stage_vjps(rank, training, convention, rng):
    """switch_norm_backward equals the stages of docs/sn-backward.md called one by one, exactly."""
    x = rng.standard_normal(SHAPES[rank]) + 2.0
    normalizers = ("in", "ln", "bn") if rank > 2 else ("ln", "bn")
    gamma, beta, mean_logits, var_logits = _params(rng, x.shape[1], len(normalizers))
    running, dy = _running(rng, x.shape[1]), rng.standard_normal(x.shape)
    options = dict(running=running, training=training, convention=convention, normalizers=normalizers)
    out = switch_norm_forward(x, gamma, beta, mean_logits, var_logits, **options)
    y, grads = _by_hand(x, gamma, beta, mean_logits, var_logits, dy, **options)
    np.testing.assert_array_equal(out.y, y)
    for name, expected in zip(refnorm.SwitchNormGrads._fields, grads, strict=True):
        np.testing.assert_array_equal(getattr(switch_norm_backward(dy, out.cache), name), expected, err_msg=name)


def test_backward_calls_each_stage_vjp_once_in_the_order_of_the_derivation(monkeypatch, rng):
    calls = []
    for name in SN_STAGE_VJPS:
        original = getattr(switchnorm, name)
        monkeypatch.setattr(switchnorm, name, lambda *a, _name=name, _f=original, **k: calls.append(_name) or _f(*a, **k))
    x = rng.standard_normal(SHAPES[4])
    out = switch_norm_forward(x, *_params(rng, x.shape[1], 3))
    switch_norm_backward(rng.standard_normal(x.shape), out.cache)
    assert calls == list(SN_STAGE_VJPS)


def test_the_sharded_backward_runs_the_same_stage_vjps(monkeypatch, rng):
    """SyncSN: every shard runs normalize_vjp and instance_moments_vjp, the pooled arrays the rest once."""
    calls = []
    for name in SN_STAGE_VJPS:
        original = getattr(switchnorm_sharded, name)
        monkeypatch.setattr(switchnorm_sharded, name, lambda *a, _name=name, _f=original, **k: calls.append(_name) or _f(*a, **k))
    xs = [rng.standard_normal((n, 4, 3, 2)) for n in (1, 3)]
    out = refnorm.switch_norm_sharded_forward(xs, *_params(rng, 4, 3))
    refnorm.switch_norm_sharded_backward([rng.standard_normal(x.shape) for x in xs], out.cache)
    assert calls == ["normalize_vjp", "normalize_vjp", "mix_vjp", "scope_moments_vjp", "instance_moments_vjp", "instance_moments_vjp"]


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

shapes_4d = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3))
seeds = st.integers(0, 2**32 - 1)


@given(shape=shapes_4d, seed=seeds, scope=st.sampled_from(["in", "ln", "bn"]), convention=st.sampled_from(["paper", "official"]))
def test_one_hot_ratios_reproduce_the_plain_normalizer(shape, seed, scope, convention):
    """Ratios fixed to a vertex give plain IN, LN or BN: bitwise what SN computes with that single
    normalizer, and within rounding of the direct plain normalization."""
    assume(not (convention == "official" and shape[2] * shape[3] == 1))  # undefined there: raises
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    C = shape[1]
    gamma, beta, mean_logits, var_logits = _params(rng, C, 3)
    index = ("in", "ln", "bn").index(scope)
    vertex = FixedRatios(tuple(float(k == index) for k in range(3)))
    y, _, _ = switch_norm_forward(x, gamma, beta, mean_logits, var_logits, mean_ratio=vertex, var_ratio=vertex, convention=convention)
    single, _, _ = switch_norm_forward(x, gamma, beta, mean_logits[:1], var_logits[:1], normalizers=(scope,), convention=convention)
    np.testing.assert_array_equal(y, single)
    mean, var = direct_scope_moments(x, scope, convention)
    plain = (x - mean[:, :, None, None]) / np.sqrt(var[:, :, None, None] + 1e-5) * gamma[:, None, None] + beta[:, None, None]
    np.testing.assert_allclose(y, plain, rtol=1e-10, atol=1e-10)


@given(shape=shapes_4d, seed=seeds, scale=st.floats(1e-3, 1e3), convention=st.sampled_from(["paper", "official"]))
def test_output_is_invariant_to_a_positive_rescaling_of_x(shape, seed, scale, convention):
    """With eps = 0, y(a·x) = y(x) for every a > 0. eps = 0 itself is rejected as bad input, and so
    is any eps below finfo.max ** (-2/3) (3e-206 in float64, where the backward could overflow), so
    eps is 2**-600, which vanishes when added to any non-zero variance here (numerically eps = 0).
    A single element has variance 0 in every scope, so its eps = 0 output is 0/0 and excluded.
    The homogeneous form y(a·x; a²·eps) = y(x; eps) is checked at the default eps as well."""
    assume(not (convention == "official" and shape[2] * shape[3] == 1))  # undefined there: raises
    assume(np.prod(shape) > 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) + rng.standard_normal()
    gamma, beta, mean_logits, var_logits = _params(rng, shape[1], 3)
    tiny = 2.0**-600
    y = switch_norm_forward(x, gamma, beta, mean_logits, var_logits, eps=tiny, convention=convention).y
    scaled = switch_norm_forward(scale * x, gamma, beta, mean_logits, var_logits, eps=tiny, convention=convention).y
    np.testing.assert_allclose(scaled, y, rtol=1e-10, atol=1e-10)
    y = switch_norm_forward(x, gamma, beta, mean_logits, var_logits, convention=convention).y
    scaled = switch_norm_forward(scale * x, gamma, beta, mean_logits, var_logits, eps=1e-5 * scale**2, convention=convention).y
    np.testing.assert_allclose(scaled, y, rtol=1e-10, atol=1e-10)


@given(
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    seed=seeds,
    convention=st.sampled_from(["paper", "official"]),
    training=st.booleans(),
)
def test_sharded_batch_equals_the_concatenated_batch(sizes, seed, convention, training):
    """SyncSN form: shards whose BN statistics are pooled give exactly SN on the concatenation,
    forward (outputs, running statistics) and backward (every gradient)."""
    rng = np.random.default_rng(seed)
    C = 3
    xs = [rng.standard_normal((n, C, 2, 3)) for n in sizes]
    dys = [rng.standard_normal(x.shape) for x in xs]
    gamma, beta, mean_logits, var_logits = _params(rng, C, 3)
    running = _running(rng, C)
    kwargs = dict(convention=convention, training=training, running=running)
    whole = switch_norm_forward(np.concatenate(xs), gamma, beta, mean_logits, var_logits, **kwargs)
    sharded = refnorm.switch_norm_sharded_forward(xs, gamma, beta, mean_logits, var_logits, **kwargs)
    np.testing.assert_allclose(np.concatenate(sharded.ys), whole.y, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(sharded.running.mean, whole.running.mean, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(sharded.running.var, whole.running.var, rtol=1e-14, atol=1e-15)
    grads = refnorm.switch_norm_sharded_backward(dys, sharded.cache)
    expected = switch_norm_backward(np.concatenate(dys), whole.cache)
    np.testing.assert_allclose(np.concatenate(grads.dxs), expected.dx, rtol=1e-12, atol=1e-13)
    for name in ("dgamma", "dbeta", "dmean_logits", "dvar_logits"):
        np.testing.assert_allclose(getattr(grads, name), getattr(expected, name), rtol=1e-12, atol=1e-13, err_msg=name)


def test_sharded_backward_matches_finite_differences(rng):
    """The sharded form differentiated directly (every shard's x is an argument)."""
    xs = [rng.standard_normal((n, 3, 4)) for n in (1, 2)]
    gamma, beta, mean_logits, var_logits = _params(rng, 3, 3)

    def linearize(x0, x1, gamma, beta, mean_logits, var_logits):
        out = refnorm.switch_norm_sharded_forward([x0, x1], gamma, beta, mean_logits, var_logits, convention="official")
        return refnorm.Linearized(
            out=out.ys,
            pullback=lambda dys: (*(g := refnorm.switch_norm_sharded_backward(dys, out.cache)).dxs, g.dgamma, g.dbeta, g.dmean_logits, g.dvar_logits),
        )

    result = refnorm.gradcheck(linearize, (*xs, gamma, beta, mean_logits, var_logits), names=("x0", "x1", *SWITCH_NORM_ARGUMENTS[1:]))
    assert result.passed, result.summary()


@pytest.mark.parametrize("training", [True, False])
def test_inputs_are_never_mutated(training, rng):
    x = rng.standard_normal((3, 4, 2, 2))
    gamma, beta, mean_logits, var_logits = _params(rng, 4, 3)
    running = _running(rng, 4)
    dy = rng.standard_normal(x.shape)
    arrays = [x, gamma, beta, mean_logits, var_logits, running.mean, running.var, dy]
    copies = [a.copy() for a in arrays]
    out = switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=running, training=training)
    switch_norm_backward(dy, out.cache)
    for original, copy in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(original, copy)
    if training:  # the update is a new value; evaluation hands the (immutable) state back unchanged
        assert out.running is not running
        assert not np.array_equal(out.running.mean, running.mean)


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("convention", ["paper", "official"])
def test_every_backend_gives_the_numpy_results(backend, training, convention, rng):
    host = dict(x=rng.standard_normal((3, 4, 2, 3)), gamma=rng.standard_normal(4), beta=rng.standard_normal(4),
                mean_logits=rng.standard_normal(4), var_logits=rng.standard_normal(4))  # fmt: skip
    running = _running(rng, 4)
    dy = rng.standard_normal(host["x"].shape)
    kwargs = dict(normalizers=("in", "ln", "bn", "gn"), groups=2, convention=convention, training=training)
    expected = switch_norm_forward(*host.values(), running=running, **kwargs)
    expected_grads = switch_norm_backward(dy, expected.cache)

    arrays = [backend.asarray(a) for a in host.values()]
    device_running = RunningStats(backend.asarray(running.mean), backend.asarray(running.var))
    out = switch_norm_forward(*arrays, running=device_running, **kwargs)
    grads = switch_norm_backward(backend.asarray(dy), out.cache)
    np.testing.assert_allclose(backend.to_numpy(out.y), expected.y, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(out.running.var), expected.running.var, rtol=1e-13, atol=1e-13)
    for name, value in grads._asdict().items():
        np.testing.assert_allclose(backend.to_numpy(value), getattr(expected_grads, name), rtol=1e-12, atol=1e-12, err_msg=name)


def test_float32_input_stays_float32(backend, rng):
    """No silent upcast: float32 in, float32 out, float32 intermediates and gradients."""
    host = [rng.standard_normal((2, 3, 4)), np.ones(3), np.zeros(3), np.ones(3), np.ones(3)]
    arrays = [backend.asarray(a, dtype=backend.xp.float32) for a in host]
    out = switch_norm_forward(*arrays)
    grads = switch_norm_backward(backend.asarray(np.ones((2, 3, 4)), dtype=backend.xp.float32), out.cache)
    assert out.y.dtype == backend.xp.float32
    assert all(value.dtype == backend.xp.float32 for value in out.cache.arrays().values())
    assert all(value.dtype == backend.xp.float32 for value in grads)
    np.testing.assert_allclose(backend.to_numpy(out.y), switch_norm_forward(*host).y, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _good(rng):
    return dict(
        x=rng.standard_normal((2, 4, 3, 3)), gamma=np.ones(4), beta=np.zeros(4), mean_logits=np.ones(3), var_logits=np.ones(3)
    )


BAD_INPUTS = [
    # (description, change to the good call, exception, message pattern)
    ("rank 1 x", dict(x=np.ones(4)), ValueError, r"x has shape \(4,\), expected \(N, C, \*spatial\)"),
    ("gamma channels", dict(gamma=np.ones(5)), ValueError, r"gamma has shape \(5,\), expected \(C,\) = \(4,\)"),
    ("beta channels", dict(beta=np.ones(3)), ValueError, r"beta has shape \(3,\), expected \(C,\) = \(4,\)"),
    ("logit length", dict(mean_logits=np.ones(2)), ValueError, r"mean_logits has shape \(2,\), expected one logit per normalizer"),
    ("var logit length", dict(var_logits=np.ones(4)), ValueError, r"var_logits has shape \(4,\)"),
    ("groups not dividing C", dict(normalizers=("in", "gn"), groups=3, mean_logits=np.ones(2), var_logits=np.ones(2)), ValueError, "groups = 3 does not divide the channel count C = 4"),
    ("gn without groups", dict(normalizers=("gn",), mean_logits=np.ones(1), var_logits=np.ones(1)), ValueError, "'gn' but groups is None"),
    ("unknown normalizer", dict(normalizers=("in", "xn", "bn")), ValueError, "unknown normalizer 'xn'"),
    ("repeated normalizer", dict(normalizers=("in", "in", "bn")), ValueError, "repeats a name"),
    ("unknown convention", dict(convention="pytorch"), ValueError, "unknown convention 'pytorch'"),
    ("eps zero", dict(eps=0.0), ValueError, "eps must be a finite number > 0"),
    ("eps negative", dict(eps=-1e-5), ValueError, "eps must be a finite number > 0"),
    ("momentum", dict(momentum=1.5), ValueError, r"momentum must lie in \[0, 1\]"),
    ("integer x", dict(x=np.ones((2, 4, 3, 3), dtype=np.int64)), TypeError, "x has dtype int64, expected a real floating dtype"),
    ("mixed dtypes", dict(gamma=np.ones(4, dtype=np.float32)), TypeError, "gamma has dtype float32, expected float64"),
    ("NaN in x", dict(x=np.full((2, 4, 3, 3), np.nan)), ValueError, "x contains NaN or infinity"),
    ("inf in x", dict(x=np.full((2, 4, 3, 3), np.inf)), ValueError, "x contains NaN or infinity"),
    ("official at M = 1", dict(x=np.ones((2, 4, 1, 1)), convention="official"), ValueError, "M - 1 = 0"),
    ("official (N, C) with N = 1", dict(x=np.ones((1, 4)), mean_logits=np.ones(2), var_logits=np.ones(2), convention="official"), ValueError, "N = 1"),
    ("running of the wrong shape", dict(running=RunningStats(np.zeros(3), np.ones(3))), ValueError, r"running.mean has shape \(3,\), expected \(C,\) = \(4,\)"),
    ("running of the wrong type", dict(running=(np.zeros(4), np.ones(4))), TypeError, "running must be RunningStats or BatchAverage"),
    ("evaluation without running", dict(training=False), ValueError, "needs running statistics"),
    ("evaluation with an accumulator", dict(training=False, running=refnorm.empty_batch_average(4, np.ones(1))), ValueError, "finalize"),
    ("not a ratio function", dict(mean_ratio="softmax"), TypeError, "mean_ratio must be a ratio function"),
    ("non-array x", dict(x=[[1.0, 2.0]]), TypeError, "x must be an array"),
    ("arrays of two libraries", dict(gamma=__import__("array_api_strict").ones(4)), TypeError, "must all come from one array library"),
]


@pytest.mark.parametrize(("description", "change", "exception", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_a_clear_error(description, change, exception, message, rng):
    call = {**_good(rng), **change}
    positional = [call.pop(name) for name in SWITCH_NORM_ARGUMENTS]
    with pytest.raises(exception, match=message):
        switch_norm_forward(*positional, **call)


def test_backward_rejects_an_upstream_gradient_of_the_wrong_shape(rng):
    out = switch_norm_forward(**_good(rng))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4, 3\), expected the output's shape"):
        switch_norm_backward(np.ones((2, 4, 3)), out.cache)
