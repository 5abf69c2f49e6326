"""Forward mode: the hand-derived JVPs of every op, stage by stage (docs/sn-jvp-hvp.md).

Every stage JVP is the exact transpose of its VJP (the adjoint test, no finite differences); each
layer's JVP is the chain of its public stage JVPs; the JVPs check their tangents like the backwards
check ``dy``; and every op of the catalog has a JVP, which ``tests/test_catalog_gradients.py`` checks
on every sample and reference case (exact adjoint test and finite differences, through
:func:`refnorm.oracle.evaluation.gradcheck_case`) and ``tests/test_interop.py`` against
``torch.func.jvp``.
"""

from __future__ import annotations

import numpy as np
import pytest

import refnorm
from refnorm import ExemplarNormGrads, PlainNormGrads, RunningStats, SwitchNormGrads
from refnorm.ops import exemplarnorm, layer, ratio_generator as rg, statistics, switchnorm
from refnorm.ops.simplex import softmax, softmax_jvp, softmax_vjp
from refnorm.ops.statistics import Layout
from refnorm.oracle.catalog import OPS, cases
from refnorm.oracle.evaluation import gradcheck_case

ADJOINT = 1e-12
"""The exact adjoint test's bound: <u, J v> and <J^T u, v> agree to rounding (float64)."""


def _adjoint_gap(cotangents, outputs, gradients, tangents) -> float:
    """|<u, J v> - <J^T u, v>| relative to the Cauchy-Schwarz bound of either side."""
    forward = sum(float(np.vdot(u, j)) for u, j in zip(cotangents, outputs, strict=True))
    backward = sum(float(np.vdot(g, t)) for g, t in zip(gradients, tangents, strict=True))
    scale = max(
        np.sqrt(sum(float(np.vdot(u, u)) for u in cotangents)) * np.sqrt(sum(float(np.vdot(j, j)) for j in outputs)),
        np.sqrt(sum(float(np.vdot(g, g)) for g in gradients)) * np.sqrt(sum(float(np.vdot(t, t)) for t in tangents)),
    )
    return abs(forward - backward) / scale


def _like(rng, arrays):
    return [rng.standard_normal(np.shape(a)) for a in arrays]


# --------------------------------------------------------------------------------------------
# Every op has a JVP
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_of_the_catalog_has_a_jvp_and_its_declared_second_order(op):
    linearized = OPS[op].forward(cases(kind="sample", op=op)[0].inputs(), cases(kind="sample", op=op)[0].params).linearized
    assert linearized.pushforward is not None
    assert (linearized.hvp is not None) == OPS[op].hvp


@pytest.mark.parametrize("case", cases(kind="sample"), ids=lambda c: c.id)
def test_every_sample_jvp_passes_the_exact_adjoint_test_and_finite_differences(case):
    result = gradcheck_case(case, order=1)
    assert result.passed, result.summary()
    for argument in result.arguments:
        assert argument.adjoint_error is not None and argument.adjoint_error <= ADJOINT, argument.name
        assert argument.jvp and all(r.status == "passed" for r in argument.jvp), argument.name


def test_the_public_linearizations_carry_the_jvp(rng):
    x = rng.standard_normal((2, 4, 3))
    gamma, beta, logits = 1.0 + rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(3)
    params = refnorm.exemplar_norm_init(4, x)
    linearizations = [
        refnorm.switch_norm_linearize(x, gamma, beta, logits, logits),
        refnorm.sparse_switch_norm_linearize(x, gamma, beta, logits, logits, radius=0.2),
        refnorm.plain_norm_linearize(x, gamma, beta, normalizer="ln"),
        refnorm.exemplar_norm_linearize(x, *params),
        exemplarnorm.embedding_linearize(x),
        rg.channel_conv_linearize(rng.standard_normal((2, 3, 4)), rng.standard_normal(3), np.asarray(0.5)),
        rg.channel_mean_linearize(rng.standard_normal((2, 3, 4))),
        rg.standardize_linearize(rng.standard_normal((2, 3))),
        rg.tempered_softmax_linearize(rng.standard_normal((2, 3)), np.asarray(1.5)),
    ]
    assert all(linearized.pushforward is not None for linearized in linearizations)


# --------------------------------------------------------------------------------------------
# Every stage JVP is the transpose of its VJP
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_instance_moments_jvp_is_the_transpose_of_its_vjp(convention, rng):
    x = rng.standard_normal((3, 4, 5)) + 3.0
    layout = Layout.of(x.shape)
    _, centered = statistics.instance_moments_and_centered(x, convention=convention)
    x_dot = rng.standard_normal(centered.shape)
    moments_dot, centered_dot = statistics.instance_moments_jvp(x_dot, centered, convention=convention, layout=layout)
    dmean, dvar = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    dx = statistics.instance_moments_vjp(dmean, dvar, centered, convention=convention, layout=layout)
    assert _adjoint_gap([dmean, dvar], [moments_dot.mean, moments_dot.var], [dx], [x_dot]) <= ADJOINT
    np.testing.assert_allclose(centered_dot, x_dot - moments_dot.mean[:, :, None], rtol=0, atol=0)


@pytest.mark.parametrize("convention", ["paper", "official"])
@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 2, 2)])
@pytest.mark.parametrize("constant", [(), ("bn",)])
def test_scope_moments_jvp_is_the_transpose_of_its_vjp(convention, shape, constant, rng):
    normalizers, groups = ("in", "ln", "bn", "gn") if len(shape) > 2 else ("ln", "bn", "gn"), 2
    x = rng.standard_normal(shape) + 1.0
    layout = Layout.of(x.shape)
    moments = statistics.instance_moments(x, convention=convention)
    scopes = statistics.scope_moments(moments, normalizers, convention=convention, layout=layout, groups=groups)
    moments_dot = statistics.InstanceMoments(rng.standard_normal((3, 4)), rng.standard_normal((3, 4)))
    scopes_dot = statistics.scope_moments_jvp(moments_dot, moments, scopes, convention=convention, layout=layout, groups=groups, constant=constant)
    dmeans = tuple(None if s in constant else rng.standard_normal(m.shape) for s, m in zip(normalizers, scopes.means))
    dvars = tuple(None if s in constant else rng.standard_normal(m.shape) for s, m in zip(normalizers, scopes.means))
    dmean_in, dvar_in = statistics.scope_moments_vjp(dmeans, dvars, moments, scopes, convention=convention, layout=layout, groups=groups)
    kept = [i for i, s in enumerate(normalizers) if s not in constant]
    assert all(scopes_dot.means[i] is None for i, s in enumerate(normalizers) if s in constant)
    cotangents = [dmeans[i] for i in kept] + [dvars[i] for i in kept]
    outputs = [scopes_dot.means[i] for i in kept] + [scopes_dot.variances[i] for i in kept]
    assert _adjoint_gap(cotangents, outputs, [dmean_in, dvar_in], [moments_dot.mean, moments_dot.var]) <= ADJOINT


def test_normalize_jvp_is_the_transpose_of_its_vjp(rng):
    centered, gamma, scale, shift = rng.standard_normal((3, 4, 5)), rng.standard_normal(4), rng.uniform(0.5, 2, (3, 4)), rng.standard_normal((3, 4))
    beta = rng.standard_normal(4)
    centered_dot, gamma_dot, beta_dot, scale_dot, shift_dot = _like(rng, [centered, gamma, beta, scale, shift])
    y_dot = layer.normalize_jvp(centered, gamma, scale, shift, centered_dot, gamma_dot, beta_dot, scale_dot, shift_dot)
    dy = rng.standard_normal(centered.shape)
    grads = layer.normalize_vjp(dy, centered, gamma, scale, shift)
    # normalize_vjp returns the parameters' gradients and the sums the statistics' gradients are made of:
    # dL/dscale = sum_i dxhat (x - mu_in) = P, dL/dshift = sum_i dxhat = G, dL/dcentered = direct_scale dy.
    gradients = [grads.direct_scale[:, :, None] * dy, grads.dgamma, grads.dbeta, grads.sum_dxhat_centered, grads.sum_dxhat]
    assert _adjoint_gap([dy], [y_dot], gradients, [centered_dot, gamma_dot, beta_dot, scale_dot, shift_dot]) <= ADJOINT


@pytest.mark.parametrize("training", [True, False])
def test_mix_jvp_is_the_transpose_of_its_vjp(training, rng):
    """Stage 3 as the map from the statistics and the logits to stage 4's per-instance scale
    ``r`` and shift ``r (mu_in - mu)``, whose cotangents are normalize_vjp's sums ``P`` and ``G``:
    mix_vjp returns the logits' and the scopes' gradients, and the shift's own dependence on
    ``mu_in`` gives ``r G`` (which the backward cancels against the centred input's)."""
    x = rng.standard_normal((3, 4, 2, 2))
    running = RunningStats(rng.standard_normal(4), rng.uniform(0.5, 1.5, 4))
    out = refnorm.switch_norm_forward(x, *_sn_params(rng, 4, 3), running=running, training=training)
    mixture, config = out.cache.mixture, out.cache.config
    constant = layer.constant_scopes(config)
    scopes = mixture.scopes
    moments_dot = statistics.InstanceMoments(rng.standard_normal((3, 4)), rng.standard_normal((3, 4)))
    scopes_dot = statistics.ScopeMoments(
        scopes.normalizers,
        tuple(None if s in constant else rng.standard_normal(m.shape) for s, m in zip(scopes.normalizers, scopes.means)),
        tuple(None if s in constant else rng.standard_normal(v.shape) for s, v in zip(scopes.normalizers, scopes.variances)),
    )
    mean_logits_dot, var_logits_dot = _like(rng, [mixture.mean_ratios, mixture.var_ratios])
    mixture_dot = switchnorm.mix_jvp(moments_dot, scopes_dot, mean_logits_dot, var_logits_dot, mixture, config)
    G, P = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    grads = switchnorm.mix_vjp(G, P, mixture, config)
    moving = [k for k, s in enumerate(scopes.normalizers) if s not in constant]
    gradients = [mixture.inv_std * G, grads.dmean_logits, grads.dvar_logits] + [grads.dmeans[k] for k in moving] + [grads.dvars[k] for k in moving]
    tangents = [moments_dot.mean, mean_logits_dot, var_logits_dot] + [scopes_dot.means[k] for k in moving] + [scopes_dot.variances[k] for k in moving]
    assert _adjoint_gap([P, G], [mixture_dot.inv_std, mixture_dot.shift], gradients, tangents) <= ADJOINT


def _sn_params(rng, C, K):
    return 1.0 + 0.5 * rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal(K), rng.standard_normal(K)


def test_channel_conv_jvp_is_the_transpose_of_its_vjp(rng):
    e, w, b = rng.standard_normal((2, 3, 6)), rng.standard_normal(5), np.asarray(0.3)
    e_dot, w_dot, b_dot = _like(rng, [e, w, b])
    z_dot = rg.channel_conv_jvp(e_dot, w_dot, b_dot, e, w)
    dz = rng.standard_normal(z_dot.shape)
    de, dw, db = rg.channel_conv_vjp(dz, e, w)
    assert _adjoint_gap([dz], [z_dot], [de, dw, db], [e_dot, w_dot, b_dot]) <= ADJOINT


@pytest.mark.parametrize(
    "stage",
    ["relu", "channel_mean", "standardize", "tempered_softmax", "embedding"],
)
def test_every_ratio_generator_stage_jvp_is_the_transpose_of_its_vjp(stage, rng):
    if stage == "relu":
        z = rng.standard_normal((2, 3, 4))
        t, u = _like(rng, [z, z])
        assert _adjoint_gap([u], [rg.relu_jvp(t, z)], [rg.relu_vjp(u, z)], [t]) <= ADJOINT
    elif stage == "channel_mean":
        a = rng.standard_normal((2, 3, 4))
        t, u = rng.standard_normal(a.shape), rng.standard_normal((2, 3))
        assert _adjoint_gap([u], [rg.channel_mean_jvp(t)], [rg.channel_mean_vjp(u, 4)], [t]) <= ADJOINT
    elif stage == "standardize":
        s = rng.standard_normal((4, 3))
        standardized, rho = rg.standardize(s)
        t, u = _like(rng, [s, s])
        assert _adjoint_gap([u], [rg.standardize_jvp(t, standardized, rho)], [rg.standardize_vjp(u, standardized, rho)], [t]) <= ADJOINT
    elif stage == "tempered_softmax":
        s, tau = rng.standard_normal((4, 3)), np.asarray(1.7)
        ratios = rg.tempered_softmax(s, tau)
        s_dot, tau_dot, u = rng.standard_normal(s.shape), np.asarray(rng.standard_normal()), rng.standard_normal(s.shape)
        grads = rg.tempered_softmax_vjp(u, ratios, s, tau)
        out = rg.tempered_softmax_jvp(s_dot, tau_dot, ratios, s, tau)
        assert _adjoint_gap([u], [out], [grads.dstandardized, grads.dtemperature], [s_dot, tau_dot]) <= ADJOINT
    else:
        mean_in = rng.standard_normal((3, 4))
        means = (mean_in, rng.standard_normal((3, 1)), rng.standard_normal((1, 4)))
        inv_stds = (rng.uniform(0.5, 2, (3, 4)), rng.uniform(0.5, 2, (3, 1)), rng.uniform(0.5, 2, (1, 4)))
        e = rg.embedding(mean_in, means, inv_stds)
        mean_in_dot = rng.standard_normal((3, 4))
        means_dot, inv_stds_dot = _like(rng, means), _like(rng, inv_stds)
        out = rg.embedding_jvp(mean_in_dot, means_dot, inv_stds_dot, mean_in, means, inv_stds)
        u = rng.standard_normal(e.shape)
        grads = rg.embedding_vjp(u, e, inv_stds)
        # embedding_vjp's gradients are broadcast to (N, C) and are with respect to the variances:
        # dL/dr_k = dL/dsigma2_k / (dr_k/dsigma2_k), dr_k/dsigma2_k = -r_k^3 / 2.
        dr = [dvar / (-0.5 * r**3) for dvar, r in zip(grads.dvars, inv_stds)]
        tangents = [mean_in_dot, *(np.broadcast_to(m, (3, 4)) for m in means_dot), *(np.broadcast_to(v, (3, 4)) for v in inv_stds_dot)]
        assert _adjoint_gap([u], [out], [grads.dmean_in, *grads.dmeans, *dr], tangents) <= ADJOINT


def test_softmax_jvp_is_the_transpose_of_its_vjp(rng):
    z = rng.standard_normal((3, 4))
    w = softmax(z)
    t, u = _like(rng, [z, z])
    assert _adjoint_gap([u], [softmax_jvp(t, w)], [softmax_vjp(u, w)], [t]) <= ADJOINT


# --------------------------------------------------------------------------------------------
# Each layer's JVP is the chain of its public stage JVPs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("convention", ["paper", "official"])
def test_switch_norm_jvp_is_the_chain_of_the_public_stage_jvps(training, convention, rng):
    """switch_norm_jvp equals the stages of docs/sn-jvp-hvp.md called one by one, exactly."""
    x = rng.standard_normal((3, 4, 3, 2)) + 2.0
    args = (x, *_sn_params(rng, 4, 3))
    running = RunningStats(rng.standard_normal(4), rng.uniform(0.5, 1.5, 4))
    y, cache, _ = refnorm.switch_norm_forward(*args, running=running, training=training, convention=convention)
    t = SwitchNormGrads(*_like(rng, args))
    layout, config, mixture = cache.layout, cache.config, cache.mixture
    moments_dot, centered_dot = statistics.instance_moments_jvp(t.dx.reshape(3, 4, 6), cache.centered, convention=convention, layout=layout)
    scopes_dot = statistics.scope_moments_jvp(
        moments_dot, mixture.moments, mixture.scopes, convention=convention, layout=layout, constant=() if training else ("bn",)
    )
    mixture_dot = switchnorm.mix_jvp(moments_dot, scopes_dot, t.dmean_logits, t.dvar_logits, mixture, config)
    y_dot = layer.normalize_jvp(
        cache.centered, cache.gamma, mixture.inv_std, mixture.shift, centered_dot, t.dgamma, t.dbeta, mixture_dot.inv_std, mixture_dot.shift
    )
    np.testing.assert_array_equal(refnorm.switch_norm_jvp(t, cache), y_dot.reshape(x.shape))


@pytest.mark.parametrize("mixing", ["output", "statistics"])
@pytest.mark.parametrize("training", [True, False])
def test_exemplar_norm_jvp_is_the_chain_of_the_public_stage_jvps(mixing, training, rng):
    x = rng.standard_normal((3, 4, 3, 2))
    params = refnorm.ExemplarNormParams(1.0 + rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(3), np.asarray(0.2), np.asarray(1.3))
    running = RunningStats(rng.standard_normal(4), rng.uniform(0.5, 1.5, 4))
    _, cache, _ = refnorm.exemplar_norm_forward(x, *params, running=running, training=training, mixing=mixing)
    t = ExemplarNormGrads(*_like(rng, [x, *params]))
    branches, generator, mixture = cache.branches, cache.generator, cache.mixture
    branches_dot, centered_dot = exemplarnorm.branch_statistics_jvp(t.dx.reshape(3, 4, 6), branches, cache.centered, cache.layout, cache.config)
    e_dot = rg.embedding_jvp(
        branches_dot.moments.mean, branches_dot.scopes.means, branches_dot.inv_stds, branches.moments.mean, branches.scopes.means, branches.inv_stds
    )
    z_dot = rg.channel_conv_jvp(e_dot, t.dconv_weight, t.dconv_bias, generator.embedding, generator.conv_weight)
    scores_dot = rg.channel_mean_jvp(rg.relu_jvp(z_dot, generator.pre_activation))
    standardized_dot = rg.standardize_jvp(scores_dot, generator.standardized, generator.score_inv_std)
    ratios_dot = rg.tempered_softmax_jvp(standardized_dot, t.dtemperature, generator.ratios, generator.standardized, generator.temperature)
    mixture_dot = exemplarnorm.mix_jvp(branches, branches_dot, ratios_dot, e_dot, mixture)
    y_dot = layer.normalize_jvp(cache.centered, cache.gamma, mixture.scale, mixture.shift, centered_dot, t.dgamma, t.dbeta, mixture_dot.scale, mixture_dot.shift)
    np.testing.assert_array_equal(refnorm.exemplar_norm_jvp(t, cache), y_dot.reshape(x.shape))


def test_plain_norm_jvp_is_switch_norms_with_the_fixed_ratio_unmoved(rng):
    x, gamma, beta = rng.standard_normal((3, 4, 5)), rng.standard_normal(4), rng.standard_normal(4)
    _, cache, _ = refnorm.plain_norm_forward(x, gamma, beta, normalizer="gn", groups=2)
    t = PlainNormGrads(*_like(rng, [x, gamma, beta]))
    zero = np.zeros(1)
    np.testing.assert_array_equal(refnorm.plain_norm_jvp(t, cache), refnorm.switch_norm_jvp(SwitchNormGrads(*t, zero, zero), cache))


def test_sparse_switch_norm_jvp_is_zero_along_the_logits_of_a_fixed_side(rng):
    x = rng.standard_normal((2, 4, 3))
    args = (x, *_sn_params(rng, 4, 3))
    _, cache, _, _ = refnorm.sparse_switch_norm_forward(*args, radius=0.3, fixed=refnorm.FixedSides(mean=1))
    zeros = [np.zeros_like(a) for a in args]
    along_mean_logits = SwitchNormGrads(*zeros[:3], rng.standard_normal(3), zeros[4])
    np.testing.assert_array_equal(refnorm.sparse_switch_norm_jvp(along_mean_logits, cache), np.zeros_like(x))


def test_the_jvp_is_linear_in_the_tangents(rng):
    x = rng.standard_normal((3, 4, 2, 2))
    args = (x, *_sn_params(rng, 4, 3))
    _, cache, _ = refnorm.switch_norm_forward(*args)
    t1, t2 = SwitchNormGrads(*_like(rng, args)), SwitchNormGrads(*_like(rng, args))
    combined = SwitchNormGrads(*(2.0 * a - 3.0 * b for a, b in zip(t1, t2)))
    np.testing.assert_allclose(
        refnorm.switch_norm_jvp(combined, cache),
        2.0 * refnorm.switch_norm_jvp(t1, cache) - 3.0 * refnorm.switch_norm_jvp(t2, cache),
        rtol=1e-12, atol=1e-12,
    )  # fmt: skip


def test_the_jvp_runs_on_every_backend_with_numpys_values(backend, rng):
    x = rng.standard_normal((2, 4, 3, 2))
    args = (x, *_sn_params(rng, 4, 3))
    t = _like(rng, args)
    _, cache, _ = refnorm.switch_norm_forward(*(backend.asarray(a) for a in args))
    _, host_cache, _ = refnorm.switch_norm_forward(*args)
    on_backend = refnorm.switch_norm_jvp(SwitchNormGrads(*(backend.asarray(a) for a in t)), cache)
    np.testing.assert_allclose(backend.to_numpy(on_backend), refnorm.switch_norm_jvp(SwitchNormGrads(*t), host_cache), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# The tangents are checked as the backwards check dy
# --------------------------------------------------------------------------------------------


def _sn_cache(rng):
    x = rng.standard_normal((2, 4, 3))
    args = (x, *_sn_params(rng, 4, 3))
    return args, refnorm.switch_norm_forward(*args).cache


@pytest.mark.parametrize(
    "edit, error, match",
    [
        (lambda t: tuple(t), TypeError, r"tangents must be a SwitchNormGrads holding one tangent per differentiable argument of switch_norm_jvp"),
        (lambda t: t._replace(dx=t.dx[:, :2]), ValueError, r"tangents\.dx has shape \(2, 2, 3\), expected the shape of its argument = \(2, 4, 3\)"),
        (lambda t: t._replace(dgamma=t.dgamma[None]), ValueError, r"tangents\.dgamma has shape \(1, 4\), expected the shape of its argument = \(4,\)"),
        (lambda t: t._replace(dmean_logits=t.dmean_logits.astype(np.float32)), TypeError, r"tangents\.dmean_logits has dtype float32, expected float64"),
        (lambda t: t._replace(dvar_logits=np.array([1.0, np.nan, 0.0])), ValueError, r"tangents\.dvar_logits contains NaN or infinity"),
        (lambda t: t._replace(dbeta=np.arange(4)), TypeError, r"tangents\.dbeta has dtype int64, expected a real floating dtype"),
        (lambda t: t._replace(dx=[0.0]), TypeError, r"tangents\.dx must be an array"),
    ],
    ids=["tuple", "dx-shape", "dgamma-broadcastable", "float32", "nan", "integer", "list"],
)
def test_a_bad_tangent_is_a_clean_error_naming_it(edit, error, match, rng):
    args, cache = _sn_cache(rng)
    tangents = SwitchNormGrads(*_like(rng, args))
    with pytest.raises(error, match=match):
        refnorm.switch_norm_jvp(edit(tangents), cache)


def test_a_jvp_given_another_ops_cache_names_the_cache_it_needs(rng):
    x = rng.standard_normal((2, 4, 3))
    en_cache = refnorm.exemplar_norm_forward(x, *refnorm.exemplar_norm_init(4, x)).cache
    args, sn_cache = _sn_cache(rng)
    with pytest.raises(TypeError, match="cache must be the SwitchNormCache that switch_norm_forward returns"):
        refnorm.switch_norm_jvp(SwitchNormGrads(*_like(rng, args)), en_cache)
    with pytest.raises(TypeError, match="cache must be the ExemplarNormCache that exemplar_norm_forward returns"):
        refnorm.exemplar_norm_jvp(ExemplarNormGrads(*_like(rng, [x, *refnorm.exemplar_norm_init(4, x)])), sn_cache)


def test_plain_norm_jvp_wants_the_plain_normalizers_container(rng):
    x = rng.standard_normal((2, 4, 3))
    _, cache, _ = refnorm.plain_norm_forward(x, np.ones(4), np.zeros(4), normalizer="ln")
    with pytest.raises(TypeError, match="tangents must be a PlainNormGrads"):
        refnorm.plain_norm_jvp(SwitchNormGrads(x, np.ones(4), np.ones(4), np.ones(1), np.ones(1)), cache)


def test_a_jvp_never_mutates_its_tangents(rng):
    args, cache = _sn_cache(rng)
    tangents = SwitchNormGrads(*_like(rng, args))
    copies = [a.copy() for a in tangents]
    refnorm.switch_norm_jvp(tangents, cache)
    for before, after in zip(copies, tangents, strict=True):
        np.testing.assert_array_equal(before, after)
