"""Statistics: scope moments assembled from instance moments, both conventions, accuracy, VJPs."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from oracles.direct_sn import direct_scope_moments

import refnorm
from refnorm.ops.statistics import (
    InstanceMoments,
    Layout,
    check_convention_defined,
    instance_moments,
    instance_moments_vjp,
    scope_moments,
    scope_moments_vjp,
)

SHAPES = {2: (5, 6), 3: (4, 6, 7), 4: (3, 6, 4, 5), 5: (3, 6, 2, 3, 4)}
EPS64 = np.finfo(np.float64).eps


def _scopes(x, normalizers, convention, groups=None):
    layout = Layout.of(x.shape)
    moments = instance_moments(x, convention=convention)
    return scope_moments(moments, normalizers, convention=convention, layout=layout, groups=groups)


@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("convention", ["paper", "official"])
def test_scope_moments_match_direct_per_scope_moments(rank, convention, rng):
    """Every scope's mean and variance equals np.mean/np.var over the scope's own axes
    (official convention: the closed forms of spec-notes §2.2)."""
    x = rng.standard_normal(SHAPES[rank]) * 2.0 + 0.5
    normalizers = ("ln", "bn", "gn") if rank == 2 else ("in", "ln", "bn", "gn")
    scopes = _scopes(x, normalizers, convention, groups=3)
    for scope, mean, var in zip(normalizers, scopes.means, scopes.variances, strict=True):
        direct_mean, direct_var = direct_scope_moments(x, scope, convention, groups=3)
        np.testing.assert_allclose(mean, direct_mean, rtol=1e-13, atol=1e-14, err_msg=scope)
        np.testing.assert_allclose(var, direct_var, rtol=1e-13, atol=1e-14, err_msg=scope)


def test_official_convention_follows_the_official_code_literally(rng):
    """The official code (devkit/ops/switchable_norm.py) computes var_in with torch's unbiased
    x.var(-1) and builds LN/BN from temp = var_in + mean_in**2. Re-done here line by line."""
    x = rng.standard_normal((4, 5, 3, 3))
    N, C = x.shape[:2]
    x3 = x.reshape(N, C, -1)
    mean_in = x3.mean(-1, keepdims=True)
    var_in = x3.var(-1, ddof=1, keepdims=True)
    mean_ln = mean_in.mean(1, keepdims=True)
    temp = var_in + mean_in**2
    var_ln = temp.mean(1, keepdims=True) - mean_ln**2
    mean_bn = mean_in.mean(0, keepdims=True)
    var_bn = temp.mean(0, keepdims=True) - mean_bn**2

    scopes = _scopes(x, ("in", "ln", "bn"), "official")
    expected = [(mean_in, var_in), (mean_ln, var_ln), (mean_bn, var_bn)]
    for (mean, var), (m, v) in zip(zip(scopes.means, scopes.variances, strict=True), expected, strict=True):
        np.testing.assert_allclose(mean, m[..., 0], rtol=1e-13)
        np.testing.assert_allclose(var, v[..., 0], rtol=1e-12)


def test_official_ln_bn_variances_are_neither_biased_nor_unbiased(rng):
    """Closed form of spec-notes §2.2: var_ln(code) = v_ln + mean_c(v_in) / (M - 1)."""
    x = rng.standard_normal((2, 3, 2, 2))
    scopes = _scopes(x, ("ln",), "official")
    x3 = x.reshape(2, 3, 4)
    biased, unbiased = x3.var(axis=(1, 2)), x3.var(axis=(1, 2), ddof=1)
    closed_form = biased + x3.var(axis=2).mean(axis=1) / 3
    np.testing.assert_allclose(scopes.variances[0][:, 0], closed_form, rtol=1e-13)
    assert np.all(np.abs(scopes.variances[0][:, 0] - biased) > 1e-3)
    assert np.all(np.abs(scopes.variances[0][:, 0] - unbiased) > 1e-3)


def test_paper_scopes_of_a_single_spatial_position_are_defined(rng):
    """M = 1 (H·W = 1): IN variance is 0 in the paper convention; LN/BN are ordinary variances."""
    x = rng.standard_normal((4, 3, 1, 1))
    scopes = _scopes(x, ("in", "ln", "bn"), "paper")
    np.testing.assert_array_equal(scopes.variances[0], np.zeros((4, 3)))
    np.testing.assert_allclose(scopes.variances[2][0], x[:, :, 0, 0].var(axis=0), rtol=1e-13)


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_batch_of_one_gives_bn_statistics_equal_to_in_statistics(convention, rng):
    """N = 1: BN pools a single instance, so its statistics are exactly IN's."""
    x = rng.standard_normal((1, 4, 3, 2))
    scopes = _scopes(x, ("in", "bn"), convention)
    np.testing.assert_array_equal(scopes.means[1], scopes.means[0])
    np.testing.assert_array_equal(scopes.variances[1], scopes.variances[0])


@pytest.mark.parametrize(
    ("shape", "normalizers", "groups", "message"),
    [
        ((3, 4, 1, 1), ("in", "ln", "bn"), None, "M - 1 = 0"),
        ((3, 4, 1), ("ln",), None, "M - 1 = 0"),
        ((1, 4), ("ln", "bn"), None, "BN variance .* N = 1"),
        ((3, 1), ("ln", "bn"), None, "LN variance .* C = 1"),
        ((3, 4), ("in", "ln"), None, "IN variance .* one element"),
        ((3, 4), ("gn",), 4, "GN variance .* C / G = 1"),
    ],
)
def test_official_convention_refuses_to_divide_by_zero(shape, normalizers, groups, message):
    """Where the official formula divides by zero a ValueError says why (the official code returns NaN)."""
    with pytest.raises(ValueError, match=message):
        check_convention_defined("official", normalizers, Layout.of(shape), groups)


def _mp_scope_statistics(x: np.ndarray):
    """IN/LN/BN means and biased variances of x in 60-digit arithmetic (inputs taken as exact)."""
    mpmath.mp.dps = 60
    N, C = x.shape[:2]
    values = [[[mpmath.mpf(float(v)) for v in x[n, c].ravel()] for c in range(C)] for n in range(N)]

    def moments(elements):
        mean = mpmath.fsum(elements) / len(elements)
        return mean, mpmath.fsum((e - mean) ** 2 for e in elements) / len(elements)

    stats = {
        "in": [[moments(values[n][c]) for c in range(C)] for n in range(N)],
        "ln": [moments([e for c in range(C) for e in values[n][c]]) for n in range(N)],
        "bn": [moments([e for n in range(N) for e in values[n][c]]) for c in range(C)],
    }
    return stats


@pytest.mark.slow
@pytest.mark.parametrize("offset", [1e2, 1e4, 1e6])
def test_float64_moments_are_accurate_for_large_offsets(offset, rng):
    """Mean up to 1e6, std 1: every float64 mean and variance agrees with a 60-digit computation
    within the conditioning limit 10·eps·(1 + |mean|/std), relative."""
    x = rng.standard_normal((2, 3, 2, 3)) + offset
    exact = _mp_scope_statistics(x)
    scopes = _scopes(x, ("in", "ln", "bn"), "paper")
    bound = 10 * EPS64 * (1 + offset)
    worst = 0.0
    for index, scope in enumerate(("in", "ln", "bn")):
        mean, var = np.broadcast_to(scopes.means[index], (2, 3)), np.broadcast_to(scopes.variances[index], (2, 3))
        for n in range(2):
            for c in range(3):
                m, v = {"in": exact["in"][n][c], "ln": exact["ln"][n], "bn": exact["bn"][c]}[scope]
                worst = max(worst, float(abs((mean[n, c] - m) / m)), float(abs((var[n, c] - v) / v)))
    assert worst <= bound, f"relative error {worst:.3g} exceeds the conditioning bound {bound:.3g}"


def test_naive_second_moment_formula_misses_the_accuracy_bound(rng):
    """E[x^2] - mean^2 on mean 1e6, std 1 loses ~12 digits: orders of magnitude past the bound
    that refnorm's two-pass, law-of-total-variance assembly meets."""
    offset = 1e6
    x = rng.standard_normal((2, 3, 2, 3)) + offset
    exact = _mp_scope_statistics(x)
    x3 = x.reshape(2, 3, -1)
    naive_ln = (x3**2).mean(axis=(1, 2)) - x3.mean(axis=(1, 2)) ** 2
    refnorm_ln = _scopes(x, ("ln",), "paper").variances[0][:, 0]
    exact_ln = np.array([float(exact["ln"][n][1]) for n in range(2)])
    bound = 10 * EPS64 * (1 + offset)
    naive_error = np.max(np.abs(naive_ln - exact_ln) / exact_ln)
    refnorm_error = np.max(np.abs(refnorm_ln - exact_ln) / exact_ln)
    assert refnorm_error <= bound
    assert naive_error > 1e3 * bound, f"naive error {naive_error:.3g} unexpectedly within 1000x the bound"


def _statistics_linearize(normalizers, convention, groups):
    """x -> (every scope mean, every scope variance), with the statistics VJP as pullback."""

    def linearize(x):
        layout = Layout.of(x.shape)
        moments = instance_moments(x, convention=convention)
        scopes = scope_moments(moments, normalizers, convention=convention, layout=layout, groups=groups)
        xp = refnorm._xp.namespace(x)
        centered = xp.reshape(x, (layout.N, layout.C, layout.M)) - moments.mean[:, :, None]

        def pullback(cotangent):
            K = len(normalizers)
            dmean_in, dvar_in = scope_moments_vjp(
                cotangent[:K], cotangent[K:], moments, scopes, convention=convention, layout=layout, groups=groups
            )
            dx = instance_moments_vjp(dmean_in, dvar_in, centered, convention=convention, layout=layout)
            return (xp.reshape(dx, x.shape),)

        return refnorm.Linearized(out=scopes.means + scopes.variances, pullback=pullback)

    return linearize


@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("convention", ["paper", "official"])
def test_statistics_vjp_matches_finite_differences(rank, convention, rng):
    x = rng.standard_normal(SHAPES[rank])
    normalizers = ("ln", "bn", "gn") if rank == 2 else ("in", "ln", "bn", "gn")
    result = refnorm.gradcheck(_statistics_linearize(normalizers, convention, 2), [x], names=["x"], directions=4)
    assert result.passed, result.summary()


def test_statistics_jacobian_matches_finite_differences_entry_by_entry(rng):
    x = rng.standard_normal((2, 4, 3))
    result = refnorm.gradcheck(
        _statistics_linearize(("in", "ln", "bn", "gn"), "official", 2), [x], names=["x"], mode="jacobian"
    )
    assert result.passed, result.summary()


def test_statistics_run_identically_on_every_backend(backend, rng):
    host = rng.standard_normal((3, 4, 2, 5))
    expected = _scopes(host, ("in", "ln", "bn", "gn"), "official", groups=2)
    x = backend.asarray(host)
    actual = _scopes(x, ("in", "ln", "bn", "gn"), "official", groups=2)
    for got, want in zip(actual.means + actual.variances, expected.means + expected.variances, strict=True):
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-14, atol=1e-15)


def test_instance_moments_are_two_pass(rng):
    """The instance variance is the mean of squared deviations from the mean (no E[x^2] - mean^2)."""
    x = rng.standard_normal((2, 3, 4)) + 1e8
    moments = instance_moments(x)
    assert isinstance(moments, InstanceMoments)
    np.testing.assert_allclose(moments.var, ((x - x.mean(axis=2, keepdims=True)) ** 2).mean(axis=2), rtol=1e-15)
