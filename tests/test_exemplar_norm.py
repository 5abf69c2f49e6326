"""Exemplar Normalization (SPEC §4): gradients, properties, backends and errors.

The gradient tests run the catalog's cases (``refnorm check`` runs the same ones), with a
gradcheck seed that differs from the seed the inputs were drawn with: with equal seeds the first
random cotangent equals ``x``, and ``J^T x`` is nearly 0 for a normalization (scale invariance),
which makes that direction a weak test.
"""

from __future__ import annotations

import math

from oracles import en_oracle
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refnorm
from refnorm.ops import exemplarnorm as en
from refnorm.ops import layer
from refnorm.ops import ratio_generator as rg
from refnorm.oracle.catalog import OPS, cases
from refnorm.oracle.evaluation import gradcheck_case
from refnorm.oracle.gradient_check import gradcheck
from refnorm.ops.statistics import Layout

STAGE_OPS = ("en_embedding", "en_channel_conv", "en_channel_mean", "en_standardize", "en_softmax")
SHAPES = {"2d": (3, 4), "3d": (2, 3, 5), "4d": (2, 4, 3, 3), "5d": (2, 3, 2, 3, 2)}
GRADCHECK_SEED_OFFSET = 1000
"""The gradient checks draw their directions from the case's seed plus this (module docstring)."""


def _random_params(rng, C, kernel_size=3, temperature=None):
    return en.ExemplarNormParams(
        gamma=1.0 + 0.5 * rng.standard_normal(C),
        beta=0.5 * rng.standard_normal(C),
        conv_weight=rng.standard_normal(kernel_size),
        conv_bias=np.asarray(0.3 * rng.standard_normal()),
        temperature=np.asarray(rng.uniform(0.5, 2.0) if temperature is None else temperature),
    )


def _running(rng, C):
    return refnorm.RunningStats(0.3 * rng.standard_normal(C), rng.uniform(0.5, 1.5, C))


# --------------------------------------------------------------------------------------------
# Gradients against finite differences
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for op in STAGE_OPS for c in cases("sample", op)], ids=lambda c: c.id)
def test_ratio_generator_stage_vjp_matches_finite_differences(case):
    result = gradcheck_case(case, seed=case.seed + GRADCHECK_SEED_OFFSET)
    assert result.passed, result.summary()


@pytest.mark.parametrize("case", cases("sample", "exemplar_norm"), ids=lambda c: c.id)
def test_exemplar_norm_backward_matches_finite_differences(case):
    result = gradcheck_case(case, seed=case.seed + GRADCHECK_SEED_OFFSET)
    assert result.passed, result.summary()
    assert {a.name for a in result.arguments} == set(en.EXEMPLAR_NORM_ARGUMENTS)


def test_the_catalog_covers_the_required_exemplar_norm_grid():
    params = [c.params for c in cases("sample", "exemplar_norm")]
    for init in ("default", "random"):
        for mixing in ("output", "statistics"):
            for training in (True, False):
                ranks = {len(p["shape"]) for p in params if p.get("init", "random") == init
                         and p.get("mixing", "output") == mixing and p.get("training", True) == training}  # fmt: skip
                assert {2, 3, 4, 5} <= ranks, (init, mixing, training)
                assert any(p["shape"][0] == 1 and p.get("init", "random") == init and p.get("mixing", "output") == mixing
                           and p.get("training", True) == training for p in params), (init, mixing, training)  # fmt: skip


@pytest.mark.parametrize("mixing", ["output", "statistics"])
@pytest.mark.parametrize("training", [True, False])
def test_exemplar_norm_full_jacobian_matches_finite_differences(mixing, training):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 2))
    params = _random_params(rng, 3)
    config = dict(mixing=mixing, training=training, running=_running(rng, 3))
    result = gradcheck(lambda *a: en.exemplar_norm_linearize(*a, **config), (x, *params), names=en.EXEMPLAR_NORM_ARGUMENTS,
                       mode="jacobian", step=1e-4)  # fmt: skip
    assert result.passed, result.summary()


def test_dx_includes_the_path_through_the_ratio_generator(monkeypatch):
    """Dropping the embedding's VJP (D7's stop-gradient alternative) must be caught by the check."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 3, 3))
    params = _random_params(rng, 4)
    assert _check_x(x, params).passed

    def stopped(dembedding, embedding, inv_stds):
        dmean_in, dmeans, dvars = true_vjp(dembedding, embedding, inv_stds)
        return rg.EmbeddingGrads(0.0 * dmean_in, tuple(0.0 * d for d in dmeans), tuple(0.0 * d for d in dvars))

    true_vjp = en.embedding_vjp
    monkeypatch.setattr(en, "embedding_vjp", stopped)
    assert not _check_x(x, params).passed


def _check_x(x, params):
    return gradcheck(en.exemplar_norm_linearize, (x, *params), names=en.EXEMPLAR_NORM_ARGUMENTS, wrt=["x"], step=1e-4, seed=9)


# --------------------------------------------------------------------------------------------
# The backward is the chain of the stage VJPs of docs/exemplar-norm.md §4
# --------------------------------------------------------------------------------------------

EN_STAGE_VJPS = (
    "normalize_vjp", "mix_vjp", "ratio_generator_vjp", "embedding_vjp", "branch_statistics_vjp",
    "scope_moments_vjp", "instance_moments_vjp",
)  # fmt: skip
"""What exemplar_norm_backward runs, in order (branch_statistics_vjp runs the last two)."""

GENERATOR_STAGE_VJPS = ("tempered_softmax_vjp", "standardize_vjp", "channel_mean_vjp", "relu_vjp", "channel_conv_vjp")
"""What ratio_generator_vjp runs: the VJPs of stages 5 to 2."""


@pytest.mark.parametrize("mixing", ["output", "statistics"])
@pytest.mark.parametrize("training", [True, False])
def test_backward_is_the_chain_of_the_public_stage_vjps(training, mixing):
    """exemplar_norm_backward equals its stages called one by one, every stage VJP of the ratio generator included, exactly."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 4, 2, 3)) + 1.5
    params = _random_params(rng, 4)
    running, dy = _running(rng, 4), rng.standard_normal(x.shape)
    out = en.exemplar_norm_forward(x, *params, running=running, training=training, mixing=mixing)
    grads = en.exemplar_norm_backward(dy, out.cache)

    layout, config = Layout.of(x.shape), out.cache.config
    branches, centered, _ = en.branch_statistics(x, running, layout, config)
    e = rg.embedding(branches.moments.mean, branches.scopes.means, branches.inv_stds)
    z = rg.channel_conv(e, params.conv_weight, params.conv_bias)
    scores = rg.channel_mean(rg.relu(z))
    standardized, score_inv_std = rg.standardize(scores)
    ratios = rg.tempered_softmax(standardized, params.temperature)
    mixture = en.mix(branches, ratios, e, mixing, config.eps)
    np.testing.assert_array_equal(layer.normalize(centered, params.gamma, params.beta, mixture.scale, mixture.shift).reshape(x.shape), out.y)

    dy3 = dy.reshape(3, 4, 6)
    normalized = layer.normalize_vjp(dy3, centered, params.gamma, mixture.scale, mixture.shift)
    dratios, dmeans_mix, dvars_mix = en.mix_vjp(normalized.sum_dxhat, normalized.sum_dxhat_centered, mixture, branches)
    dstandardized, dtemperature = rg.tempered_softmax_vjp(dratios, ratios, standardized, params.temperature)
    dscores = rg.standardize_vjp(dstandardized, standardized, score_inv_std)
    dpre_activation = rg.relu_vjp(rg.channel_mean_vjp(dscores, 4), z)
    dembedding, dconv_weight, dconv_bias = rg.channel_conv_vjp(dpre_activation, e, params.conv_weight)
    dmean_in, dmeans_emb, dvars_emb = rg.embedding_vjp(dembedding, e, branches.inv_stds)
    statistics = en.BranchGrads(
        dmean_in, tuple(a + b for a, b in zip(dmeans_mix, dmeans_emb)), tuple(a + b for a, b in zip(dvars_mix, dvars_emb))
    )
    dx = en.branch_statistics_vjp(statistics, branches, centered, layout, config) + normalized.direct_scale[:, :, None] * dy3
    expected = (dx.reshape(x.shape), normalized.dgamma, normalized.dbeta, dconv_weight, dconv_bias, dtemperature)
    for name, value in zip(en.ExemplarNormGrads._fields, expected, strict=True):
        np.testing.assert_array_equal(getattr(grads, name), value, err_msg=name)


def _spy(monkeypatch, module, names, calls):
    for name in names:
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _name=name, _f=original, **k: calls.append(_name) or _f(*a, **k))


def test_backward_calls_each_stage_vjp_once_in_the_order_of_the_derivation(monkeypatch):
    rng = np.random.default_rng(22)
    x = rng.standard_normal((2, 4, 3, 3))
    out = en.exemplar_norm_forward(x, *_random_params(rng, 4))
    calls = []
    _spy(monkeypatch, en, EN_STAGE_VJPS, calls)
    _spy(monkeypatch, rg, GENERATOR_STAGE_VJPS, calls)
    en.exemplar_norm_backward(rng.standard_normal(x.shape), out.cache)
    assert calls == [*EN_STAGE_VJPS[:3], *GENERATOR_STAGE_VJPS, *EN_STAGE_VJPS[3:]]


# --------------------------------------------------------------------------------------------
# The definition, against a literal transcription of SPEC §4
# --------------------------------------------------------------------------------------------

ORACLE_CASES = [
    ((3, 4), ("ln", "bn"), None),
    ((2, 3, 5), ("in", "ln", "bn"), None),
    ((2, 4, 3, 3), ("in", "ln", "bn"), None),
    ((2, 6, 5), ("in", "ln", "bn", "gn"), 3),
    ((1, 4, 2, 2, 2), ("in", "ln", "bn"), None),
    ((3, 4, 1, 1), ("bn", "ln"), None),
]


@pytest.mark.parametrize("shape, normalizers, groups", ORACLE_CASES)
@pytest.mark.parametrize("mixing", ["output", "statistics"])
@pytest.mark.parametrize("training", [True, False])
def test_forward_matches_the_literal_definition(shape, normalizers, groups, mixing, training):
    rng = np.random.default_rng(sum(shape))
    C = shape[1]
    x = 2.0 * rng.standard_normal(shape) + 1.0
    params = _random_params(rng, C)
    running = None if training else _running(rng, C)
    y, cache, _ = en.exemplar_norm_forward(x, *params, normalizers=normalizers, groups=groups, mixing=mixing,
                                           training=training, running=running)  # fmt: skip
    expected, intermediates = en_oracle.exemplar_norm(x, *params, normalizers=normalizers, groups=groups, mixing=mixing,
                                                      running=None if running is None else tuple(running))  # fmt: skip
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-13)
    arrays = cache.arrays()
    for name, value in intermediates.items():
        np.testing.assert_allclose(arrays[name], value, rtol=0, atol=1e-13, err_msg=name)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mixing", ["output", "statistics"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("selected", ["in", "ln", "bn", "gn"])
def test_one_hot_ratios_give_the_selected_plain_normalizer(selected, training, mixing):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 2, 3))
    gamma, beta = 1.0 + 0.5 * rng.standard_normal(4), 0.5 * rng.standard_normal(4)
    running = _running(rng, 4)
    normalizers = ("in", "ln", "bn", "gn")
    config = en.ExemplarNormConfig(normalizers, 2, "paper", 1e-5, 0.9, training, mixing)
    branches, centered, _ = en.branch_statistics(x, None if training else running, Layout.of(x.shape), config)
    ratios = np.zeros((3, 4))
    ratios[:, normalizers.index(selected)] = 1.0
    mixture = en.mix(branches, ratios, rg.embedding(branches.moments.mean, branches.scopes.means, branches.inv_stds), mixing, 1e-5)
    xhat = (mixture.scale[:, :, None] * centered + mixture.shift[:, :, None]).reshape(x.shape)
    expected = en_oracle.plain_normalizer(x, selected, groups=2, running=None if training else tuple(running))
    np.testing.assert_allclose(gamma[None, :, None, None] * xhat + beta[None, :, None, None],
                               gamma[None, :, None, None] * expected + beta[None, :, None, None], rtol=0, atol=1e-13)  # fmt: skip


@pytest.mark.parametrize("mixing", ["output", "statistics"])
def test_a_generator_forced_to_one_hot_selects_one_plain_normalizer_per_sample(mixing):
    """A large temperature makes the softmax exactly one-hot; each sample is then its winner's normalizer."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4, 3, 3)) * rng.uniform(0.5, 3.0, (6, 1, 1, 1))
    params = _random_params(rng, 4, temperature=1e4)._replace(conv_bias=np.asarray(-0.1))
    y, cache, _ = en.exemplar_norm_forward(x, *params, mixing=mixing)
    ratios = cache.generator.ratios
    assert np.all((ratios == 0.0) | (ratios == 1.0)), "precondition: the ratios must be exactly one-hot"
    winners = np.argmax(ratios, axis=1)
    assert len(set(winners.tolist())) > 1, "precondition: different samples should select different normalizers"
    for n, k in enumerate(winners):
        expected = en_oracle.plain_normalizer(x, ("in", "ln", "bn")[k])[n]
        np.testing.assert_allclose(y[n], params.gamma[:, None, None] * expected + params.beta[:, None, None], rtol=0, atol=1e-13)


@pytest.mark.parametrize("rank", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_equal_ratios_with_statistics_mixing_equal_switch_norm_with_uniform_ratios(rank, training):
    rng = np.random.default_rng(8)
    shape = SHAPES[rank]
    C = shape[1]
    x = rng.standard_normal(shape) + 3.0
    gamma, beta = 1.0 + 0.5 * rng.standard_normal(C), 0.5 * rng.standard_normal(C)
    params = en.exemplar_norm_init(C, x)._replace(gamma=gamma, beta=beta)
    running = _running(rng, C)
    y, cache, en_running = en.exemplar_norm_forward(x, *params, mixing="statistics", training=training, running=running)
    K = len(cache.config.normalizers)
    np.testing.assert_array_equal(cache.generator.ratios, np.full((shape[0], K), 1.0 / K))
    logits = np.zeros(K)
    sn_y, sn_cache, sn_running = refnorm.switch_norm_forward(x, gamma, beta, logits, logits, training=training, running=running)
    np.testing.assert_allclose(y, sn_y, rtol=0, atol=1e-13)
    np.testing.assert_allclose(en_running.mean, sn_running.mean, rtol=0, atol=1e-15)
    np.testing.assert_allclose(en_running.var, sn_running.var, rtol=0, atol=1e-15)
    # With a zero kernel no gradient flows back through the embedding, so dx, dgamma, dbeta are SN's.
    dy = rng.standard_normal(shape)
    grads, sn_grads = en.exemplar_norm_backward(dy, cache), refnorm.switch_norm_backward(dy, sn_cache)
    for name in ("dx", "dgamma", "dbeta"):
        np.testing.assert_allclose(getattr(grads, name), getattr(sn_grads, name), rtol=1e-12, atol=1e-12, err_msg=name)


@given(
    x=hnp.arrays(np.float64, st.sampled_from([(2, 3, 4), (3, 4, 2, 2), (1, 5, 3)]), elements=st.floats(-100, 100)),
    mixing=st.sampled_from(["output", "statistics"]),
)
def test_default_initialisation_gives_uniform_ratios_for_every_input(x, mixing):
    y, cache, _ = en.exemplar_norm_forward(x, *en.exemplar_norm_init(x.shape[1], x), mixing=mixing)
    np.testing.assert_array_equal(cache.generator.ratios, np.full((x.shape[0], 3), 1.0 / 3.0))
    np.testing.assert_array_equal(cache.generator.standardized, 0.0)


@given(seed=st.integers(0, 2**32 - 1), rank=st.sampled_from(list(SHAPES)), temperature=st.floats(-5.0, 5.0))
def test_ratios_are_on_the_simplex_and_below_the_cap(seed, rank, temperature):
    rng = np.random.default_rng(seed)
    shape = SHAPES[rank]
    x = rng.standard_normal(shape) * rng.uniform(0.1, 10.0)
    params = _random_params(rng, shape[1], temperature=temperature)
    _, cache, _ = en.exemplar_norm_forward(x, *params)
    ratios = cache.generator.ratios
    K = ratios.shape[1]
    assert np.all(ratios >= 0.0)
    np.testing.assert_allclose(ratios.sum(axis=1), 1.0, rtol=0, atol=4e-16 * K)
    assert np.all(ratios.max(axis=1) <= rg.largest_ratio_bound(K, temperature) + 1e-15)


def test_ratios_differ_across_samples_once_parameters_are_non_trivial():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 8, 5, 5)) * rng.uniform(0.5, 2.0, (4, 1, 1, 1)) + rng.standard_normal((4, 1, 1, 1))
    _, cache, _ = en.exemplar_norm_forward(x, *_random_params(rng, 8))
    ratios = cache.generator.ratios
    assert np.min(np.ptp(ratios, axis=0)) > 1e-3, ratios


@pytest.mark.parametrize("K, temperature", [(3, 1.0), (2, 1.0), (3, 2.0), (4, 0.5), (5, 3.0)])
def test_standardised_scores_cap_the_largest_ratio(K, temperature):
    """The bound of docs/exemplar-norm.md: approached by one leading score and K - 1 tied ones."""
    bound = rg.largest_ratio_bound(K, temperature)
    # The extreme standardised vector (sqrt(K-1), -1/sqrt(K-1), ...), pushed through a softmax.
    extreme = np.array([math.sqrt(K - 1)] + [-1.0 / math.sqrt(K - 1)] * (K - 1))
    weights = np.exp(temperature * extreme)
    assert bound == pytest.approx(weights[0] / weights.sum(), rel=1e-14)
    leading = np.zeros((1, K))
    leading[0, 0] = 1e3  # the spread dwarfs eps_r, so the standardised scores approach the extreme vector
    standardized, _ = rg.standardize(leading)
    ratios = rg.tempered_softmax(standardized, np.asarray(temperature))
    assert ratios[0, 0] == pytest.approx(bound, rel=1e-9)
    assert ratios[0, 0] < bound


def test_the_cap_is_0807_for_three_normalizers_at_unit_temperature():
    """spec-notes §4.3 (checked numerically there): max observed 0.80662 vs bound 0.80662."""
    assert rg.largest_ratio_bound(3, 1.0) == pytest.approx(0.80662, abs=5e-6)


def test_in_embedding_is_identically_zero():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 5, 4)) * 7.0 + 100.0
    _, cache, _ = en.exemplar_norm_forward(x, *_random_params(rng, 5))
    np.testing.assert_array_equal(cache.generator.embedding[:, 0, :], 0.0)


def test_while_every_relu_is_active_a_pointwise_kernel_scores_in_ln_and_gn_alike():
    """LN's and GN's embeddings sum to 0 over the channels they pool, and IN's is 0: with q = 1
    and no ReLU clipping their scores all equal the bias; only BN's score depends on the sample."""
    rng = np.random.default_rng(19)
    x = rng.standard_normal((4, 6, 5, 5)) * rng.uniform(0.5, 3.0, (4, 1, 1, 1)) + rng.standard_normal((4, 6, 1, 1))
    params = en.ExemplarNormParams(np.ones(6), np.zeros(6), np.array([2.0]), np.asarray(10.0), np.asarray(1.0))
    _, cache, _ = en.exemplar_norm_forward(x, *params, normalizers=("in", "ln", "bn", "gn"), groups=2)
    assert np.all(cache.generator.pre_activation > 0.0), "precondition: every ReLU active"
    scores = cache.generator.scores
    np.testing.assert_allclose(scores[:, [0, 1, 3]], 10.0, rtol=0, atol=1e-14)
    assert np.all(np.abs(scores[:, 2] - 10.0) > 1e-3) and np.ptp(scores[:, 2]) > 1e-1, scores[:, 2]


@given(seed=st.integers(0, 2**32 - 1))
def test_output_mixing_of_in_and_ln_has_per_sample_variance_at_most_one(seed):
    """Both maps have mean 0 and mean square <= 1 over a sample's (c, i); Minkowski bounds the mixture."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 6, 4, 4)) * rng.uniform(0.2, 3.0, (3, 6, 1, 1)) + rng.uniform(0.0, 3.0) * rng.standard_normal((3, 6, 1, 1))
    params = _random_params(rng, 6)._replace(gamma=np.ones(6), beta=np.zeros(6))
    y, _, _ = en.exemplar_norm_forward(x, *params, normalizers=("in", "ln"))
    assert np.all(y.reshape(3, -1).var(axis=1) <= 1.0 + 1e-12)


def test_bias_and_temperature_gradients_vanish_at_initialisation():
    """Standardisation removes the common bias while every ReLU is active, and tau multiplies s_std = 0."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 4, 3, 3))
    y, cache, _ = en.exemplar_norm_forward(x, *en.exemplar_norm_init(4, x))
    grads = en.exemplar_norm_backward(rng.standard_normal(y.shape), cache)
    assert abs(float(grads.dtemperature)) == 0.0
    assert abs(float(grads.dconv_bias)) < 1e-12 * float(np.linalg.norm(grads.dconv_weight))
    assert np.linalg.norm(grads.dconv_weight) > 0.0


def test_evaluation_with_the_batch_statistics_reproduces_training():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 4, 2, 2))
    params = _random_params(rng, 4)
    y_train, cache, _ = en.exemplar_norm_forward(x, *params)
    bn = cache.branches.scopes.normalizers.index("bn")
    batch = refnorm.RunningStats(cache.branches.scopes.means[bn].reshape(4), cache.branches.scopes.variances[bn].reshape(4))
    y_eval, _, returned = en.exemplar_norm_forward(x, *params, training=False, running=batch)
    np.testing.assert_allclose(y_eval, y_train, rtol=0, atol=1e-14)
    assert returned is batch


def test_running_statistics_update_like_switch_norm():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((3, 4, 2, 2)) + 2.0
    running = _running(rng, 4)
    _, _, new = en.exemplar_norm_forward(x, *_random_params(rng, 4), running=running, momentum=0.7)
    _, _, sn_new = refnorm.switch_norm_forward(x, np.ones(4), np.zeros(4), np.zeros(3), np.zeros(3), running=running, momentum=0.7)
    np.testing.assert_array_equal(new.mean, sn_new.mean)
    np.testing.assert_array_equal(new.var, sn_new.var)
    average = refnorm.empty_batch_average(4, x)
    accumulated = en.exemplar_norm_forward(x, *_random_params(rng, 4), running=average).running
    assert isinstance(accumulated, refnorm.BatchAverage) and accumulated.count == 1


def test_inputs_are_never_mutated():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2, 4, 3, 3))
    params = _random_params(rng, 4)
    running = _running(rng, 4)
    dy = rng.standard_normal(x.shape)
    originals = [a.copy() for a in (x, *params, *running, dy)]
    for training in (True, False):
        for mixing in ("output", "statistics"):
            y, cache, _ = en.exemplar_norm_forward(x, *params, running=running, training=training, mixing=mixing)
            en.exemplar_norm_backward(dy, cache)
    for before, after in zip(originals, (x, *params, *running, dy), strict=True):
        np.testing.assert_array_equal(before, after)


def test_channel_conv_is_pytorch_cross_correlation_with_same_zero_padding():
    e = np.arange(1.0, 6.0)[None, None, :]  # one signal of length C = 5
    w = np.array([1.0, 10.0, 100.0])
    # z[c] = b + w0 e[c-1] + w1 e[c] + w2 e[c+1], zeros outside
    expected = 0.5 + np.array([10 * 1 + 100 * 2, 1 + 10 * 2 + 100 * 3, 2 + 30 + 400, 3 + 40 + 500, 4 + 50])
    np.testing.assert_array_equal(rg.channel_conv(e, w, np.asarray(0.5))[0, 0], expected)


def test_parameter_count_is_2c_plus_q_plus_2():
    params = en.exemplar_norm_init(64, np.zeros(1), kernel_size=3)
    assert sum(int(np.size(p)) for p in params) == 2 * 64 + 3 + 2


# --------------------------------------------------------------------------------------------
# Backends and dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mixing", ["output", "statistics"])
@pytest.mark.parametrize("training", [True, False])
def test_runs_on_every_backend_and_matches_numpy(backend, mixing, training):
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 4, 3, 2))
    params = _random_params(rng, 4)
    running = _running(rng, 4)
    dy = rng.standard_normal(x.shape)
    config = dict(mixing=mixing, training=training)
    y, cache, new = en.exemplar_norm_forward(x, *params, running=running, **config)
    grads = en.exemplar_norm_backward(dy, cache)

    on = backend.asarray
    b_running = refnorm.RunningStats(on(running.mean), on(running.var))
    b_y, b_cache, b_new = en.exemplar_norm_forward(on(x), *(on(p) for p in params), running=b_running, **config)
    b_grads = en.exemplar_norm_backward(on(dy), b_cache)
    assert refnorm._xp.device(b_y) == refnorm._xp.device(on(x))
    np.testing.assert_allclose(backend.to_numpy(b_y), y, rtol=0, atol=1e-13)
    for name, value in b_cache.arrays().items():
        np.testing.assert_allclose(backend.to_numpy(value), cache.arrays()[name], rtol=0, atol=1e-13, err_msg=name)
    for name, value in zip(grads._fields, grads, strict=True):
        np.testing.assert_allclose(backend.to_numpy(getattr(b_grads, name)), value, rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(backend.to_numpy(b_new.mean), new.mean, rtol=0, atol=1e-15)


@pytest.mark.parametrize("mixing", ["output", "statistics"])
def test_gradient_check_passes_on_every_backend(backend, mixing):
    backend.skip_if_lazy("the gradient checker evaluates the op at ~100 points, each a graph build and a compute (a minute in all)")
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 4, 3))
    params = _random_params(rng, 4)
    arguments = [backend.asarray(a) for a in (x, *params)]
    result = gradcheck(lambda *a: en.exemplar_norm_linearize(*a, mixing=mixing), arguments,
                       names=en.EXEMPLAR_NORM_ARGUMENTS, step=1e-3, seed=21)  # fmt: skip
    assert result.passed, result.summary()


def test_catalog_cases_are_serialisable_and_deterministic():
    import json

    for case in [c for op in ("exemplar_norm", *STAGE_OPS) for c in cases("sample", op)]:
        json.dumps(dict(case.params))
        first, second = case.inputs(), case.inputs()
        assert first.keys() == second.keys()
        for name in first:
            assert first[name].dtype == np.float64
            np.testing.assert_array_equal(first[name], second[name])
        assert set(OPS[case.op].forward(first, case.params).intermediates)


def test_float32_stays_float32(backend):
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 4, 3, 3))
    params = _random_params(rng, 4)
    y64, cache64, _ = en.exemplar_norm_forward(x, *params)
    dy = rng.standard_normal(x.shape)
    grads64 = en.exemplar_norm_backward(dy, cache64)

    f32 = backend.xp.float32
    y, cache, _ = en.exemplar_norm_forward(backend.asarray(x, f32), *(backend.asarray(p, f32) for p in params))
    grads = en.exemplar_norm_backward(backend.asarray(dy, f32), cache)
    assert y.dtype == f32 and all(g.dtype == f32 for g in grads)
    # float32 rounding (unit roundoff 6e-8) amplified by at most a few hundred through the
    # standardisation of the scores: 1e-4 of each array's scale.
    np.testing.assert_allclose(backend.to_numpy(y), y64, rtol=0, atol=1e-4 * np.max(np.abs(y64)))
    for name, value in zip(grads64._fields, grads64, strict=True):
        got = backend.to_numpy(getattr(grads, name))
        np.testing.assert_allclose(got, value, rtol=0, atol=1e-4 * max(np.max(np.abs(value)), 1.0), err_msg=name)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _good():
    rng = np.random.default_rng(18)
    return rng.standard_normal((2, 4, 3, 3)), _random_params(rng, 4)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(conv_weight=np.zeros(2)), ValueError, r"kernel size of conv_weight = 2 is even; expected an odd kernel size"),
        (dict(conv_weight=np.zeros(4)), ValueError, r"= 4 is even"),
        (dict(conv_weight=np.zeros(5)), ValueError, r"= 5 is larger than the C = 4 channels"),
        (dict(conv_weight=np.zeros((1, 1, 3))), ValueError, r"conv_weight has shape \(1, 1, 3\), expected \(q,\)"),
        (dict(conv_weight=np.zeros(0)), ValueError, r"positive odd int"),
        (dict(gamma=np.ones(3)), ValueError, r"gamma has shape \(3,\), expected \(C,\) = \(4,\)"),
        (dict(beta=np.ones((4, 1))), ValueError, r"beta has shape \(4, 1\), expected \(C,\) = \(4,\)"),
        (dict(conv_bias=np.ones(1)), ValueError, r"conv_bias has shape \(1,\), expected a scalar, shape = \(\)"),
        (dict(temperature=np.ones(3)), ValueError, r"temperature has shape \(3,\), expected a scalar, shape = \(\)"),
        (dict(temperature=np.asarray(np.nan)), ValueError, r"temperature contains NaN"),
        (dict(conv_weight=np.asarray([0.0, np.inf, 0.0])), ValueError, r"conv_weight contains NaN or infinity"),
        (dict(gamma=np.ones(4, dtype=np.float32)), TypeError, r"gamma has dtype float32, expected float64"),
        (dict(temperature=1.0), TypeError, r"temperature must be an array"),
    ],
)
def test_bad_parameters_raise_clear_errors(change, error, match):
    x, params = _good()
    with pytest.raises(error, match=match):
        en.exemplar_norm_forward(x, *params._replace(**change))


@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(mixing="both"), ValueError, r"unknown mixing 'both'; expected one of 'output', 'statistics'"),
        (dict(training=False), ValueError, r"evaluation mode with 'bn' in normalizers needs running statistics"),
        (dict(normalizers=("in", "xn")), ValueError, r"unknown normalizer 'xn'"),
        (dict(normalizers=("in", "gn")), ValueError, r"groups is None"),
        (dict(eps=0.0), ValueError, r"eps must be a finite number > 0"),
        (dict(convention="pytorch"), ValueError, r"unknown convention 'pytorch'"),
    ],
)
def test_bad_options_raise_clear_errors(options, error, match):
    x, params = _good()
    with pytest.raises(error, match=match):
        en.exemplar_norm_forward(x, *params, **options)


def test_nan_input_raises_a_clear_error():
    x, params = _good()
    x = x.copy()
    x[1, 2, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or infinity"):
        en.exemplar_norm_forward(x, *params)


def test_backward_rejects_a_wrongly_shaped_upstream_gradient():
    x, params = _good()
    _, cache, _ = en.exemplar_norm_forward(x, *params)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4, 9\), expected the output's shape = \(2, 4, 3, 3\)"):
        en.exemplar_norm_backward(np.zeros((2, 4, 9)), cache)


@pytest.mark.parametrize(
    "kernel_size, match", [(2, r"kernel_size = 2 is even"), (7, r"kernel_size = 7 is larger than the C = 4"), (0, r"positive odd int")]
)
def test_initialiser_rejects_bad_kernel_sizes(kernel_size, match):
    with pytest.raises(ValueError, match=match):
        en.exemplar_norm_init(4, np.zeros(1), kernel_size=kernel_size)
