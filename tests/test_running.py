"""Running BN statistics: the EMA convention, batch average, evaluation mode, presets."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from oracles.direct_sn import direct_scope_moments

import refnorm
from refnorm import RunningStats, accumulate, ema_update, empty_batch_average, finalize, switch_norm_forward


def test_momentum_weights_the_old_value(rng):
    """Official convention: running <- m * running + (1 - m) * batch; PyTorch's p is 1 - m."""
    old = RunningStats(rng.standard_normal(3), rng.uniform(1, 2, 3))
    batch_mean, batch_var = rng.standard_normal(3), rng.uniform(1, 2, 3)
    new = ema_update(old, batch_mean, batch_var, momentum=0.9)
    np.testing.assert_allclose(new.mean, 0.9 * old.mean + 0.1 * batch_mean, rtol=1e-15)
    torch_momentum = 0.1  # torch.nn.BatchNorm2d(momentum=0.1): new = (1 - p) * old + p * batch
    np.testing.assert_allclose(new.var, (1 - torch_momentum) * old.var + torch_momentum * batch_var, rtol=1e-15)


def test_training_forward_returns_the_ema_of_the_batch_bn_statistics(rng):
    x = rng.standard_normal((4, 3, 2, 2))
    old = refnorm.initial_running_stats(3, x, var=0.0)
    out = switch_norm_forward(x, np.ones(3), np.zeros(3), np.ones(3), np.ones(3), running=old, momentum=0.997, convention="official")
    mean_bn, var_bn = direct_scope_moments(x, "bn", "official")
    np.testing.assert_allclose(out.running.mean, 0.003 * mean_bn[0], rtol=1e-12)
    np.testing.assert_allclose(out.running.var, 0.003 * var_bn[0], rtol=1e-12)
    np.testing.assert_array_equal(old.var, np.zeros(3))  # the old state is untouched


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_evaluation_with_the_batch_statistics_reproduces_training(convention, rng):
    """Running statistics equal to this batch's BN statistics make evaluation equal training."""
    x = rng.standard_normal((4, 3, 3, 2))
    args = (x, rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3))
    trained = switch_norm_forward(*args, running=refnorm.initial_running_stats(3, x), momentum=0.0, convention=convention)
    evaluated = switch_norm_forward(*args, running=trained.running, training=False, convention=convention)
    np.testing.assert_allclose(evaluated.y, trained.y, rtol=1e-13, atol=1e-13)


def test_batch_average_is_the_pooled_statistic_of_all_batches(rng):
    """Equal-size batches: finalize gives the BN mean and (biased) variance of their concatenation,
    and equals the official formula avg(mean^2 + var) - mean^2 (spec-notes §2.4)."""
    batches = [rng.standard_normal((4, 3, 2, 2)) * 2 + rng.standard_normal() for _ in range(5)]
    average = empty_batch_average(3, batches[0])
    means, variances = [], []
    for x in batches:
        out = switch_norm_forward(x, np.ones(3), np.zeros(3), np.ones(3), np.ones(3), running=average)
        average = out.running
        mean, var = direct_scope_moments(x, "bn")
        means.append(mean[0])
        variances.append(var[0])
    final = finalize(average)
    assert average.count == 5
    pooled_mean, pooled_var = direct_scope_moments(np.concatenate(batches), "bn")
    np.testing.assert_allclose(final.mean, pooled_mean[0], rtol=1e-13)
    np.testing.assert_allclose(final.var, pooled_var[0], rtol=1e-12)
    means, variances = np.array(means), np.array(variances)
    official = (means**2 + variances).mean(axis=0) - means.mean(axis=0) ** 2
    np.testing.assert_allclose(final.var, official, rtol=1e-12)


def test_batch_average_stays_accurate_for_large_offsets(rng):
    """Chan's update keeps the float64 conditioning limit 10·eps·(1 + |mean|/std) for batch means
    around 1e8 (checked against exact rational arithmetic); the official E[x^2] - mean^2 form
    loses every digit there."""
    offset = 1e8
    batch_means = offset + rng.standard_normal((4, 2))
    batch_vars = rng.uniform(0.5, 1.5, (4, 2))
    average = empty_batch_average(2, batch_means)
    for mean, var in zip(batch_means, batch_vars, strict=True):
        average = accumulate(average, mean, var)
    final = finalize(average)

    exact = []
    for c in range(2):
        means = [Fraction(float(m)) for m in batch_means[:, c]]
        grand = sum(means) / 4
        exact.append(float(sum(Fraction(float(v)) for v in batch_vars[:, c]) / 4 + sum((m - grand) ** 2 for m in means) / 4))
    exact = np.array(exact)
    bound = 10 * np.finfo(np.float64).eps * (1 + offset)
    assert np.max(np.abs(final.var - exact) / exact) <= bound
    naive = (batch_means**2 + batch_vars).mean(axis=0) - batch_means.mean(axis=0) ** 2
    assert np.max(np.abs(naive - exact) / exact) > 1e3 * bound


def test_finalize_needs_a_batch():
    with pytest.raises(ValueError, match="count = 0"):
        finalize(empty_batch_average(3, np.ones(1)))


@pytest.mark.parametrize(("ndim", "sparse", "momentum"), [(4, False, 0.9), (2, False, 0.997), (5, False, 0.997), (4, True, 0.997)])
def test_official_preset_momentum(ndim, sparse, momentum):
    preset = refnorm.preset("official", ndim=ndim, sparse=sparse)
    assert (preset.momentum, preset.eps, preset.running_var_init) == (momentum, 1e-5, 0.0)


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="unknown preset 'pytorch'"):
        refnorm.preset("pytorch")


def test_running_statistics_are_created_on_the_input_device(backend):
    like = backend.asarray(np.ones(2))
    running = refnorm.initial_running_stats(3, like)
    assert refnorm._xp.device(running.mean) == refnorm._xp.device(like)
    assert running.var.dtype == like.dtype
