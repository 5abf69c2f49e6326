"""Second order: the hand-derived Hessian-vector products of SN, SSN, the plain normalizers and the
simplex maps, forward-over-reverse, stage by stage (docs/sn-jvp-hvp.md).

Every stage's ``*_vjp_jvp`` is the derivative of its VJP (finite differences of the VJP, which is
smooth in its point); every layer's HVP is the chain of the public stages; the Hessian is exactly
symmetric; and ``tests/test_catalog_gradients.py`` checks the HVP of every sample and reference case
against finite differences of the backward and for symmetry (through
:func:`refnorm.oracle.evaluation.gradcheck_case`), ``tests/test_interop.py`` against PyTorch's double
backward. EN has no second order in refnorm.
"""

from __future__ import annotations

import numpy as np
import pytest

import refnorm
from refnorm import PlainNormGrads, RunningStats, SwitchNormGrads
from refnorm.ops import layer, statistics, switchnorm
from refnorm.ops.simplex import softmax, softmax_hvp, softmax_vjp
from refnorm.ops.sparsestmax import sparsestmax_forward, sparsestmax_hvp, sparsestmax_vjp
from refnorm.ops.statistics import Layout
from refnorm.oracle.catalog import OPS, cases
from refnorm.oracle.evaluation import gradcheck_case

SYMMETRY = 1e-12


def _like(rng, arrays):
    return [rng.standard_normal(np.shape(a)) for a in arrays]


def _sn_params(rng, C, K):
    return 1.0 + 0.5 * rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal(K), rng.standard_normal(K)


def _central(f, h=1e-5):
    """(f(h) - f(-h)) / 2h, Richardson-extrapolated once, for functions returning a list of arrays."""

    def d(step):
        plus, minus = f(step), f(-step)
        return [(p - m) / (2 * step) for p, m in zip(plus, minus, strict=True)]

    coarse, fine = d(h), d(h / 2)
    return [(4 * b - a) / 3 for a, b in zip(coarse, fine, strict=True)]


def _close(actual, expected, rtol=1e-8):
    """Normwise: ||actual - expected|| <= rtol ||expected|| (and an absolute floor of rtol)."""
    for a, e in zip(actual, expected, strict=True):
        assert np.linalg.norm(np.ravel(a - e)) <= rtol * max(np.linalg.norm(np.ravel(e)), 1.0), (np.linalg.norm(np.ravel(a - e)), np.linalg.norm(np.ravel(e)))


# --------------------------------------------------------------------------------------------
# The ratio functions' second derivatives
# --------------------------------------------------------------------------------------------


def test_softmax_hvp_is_the_derivative_of_softmax_vjp(rng):
    z, g, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    numeric = _central(lambda s: [softmax_vjp(g, softmax(z + s * t))])
    _close([softmax_hvp(g, softmax(z), t)], numeric)


def test_softmax_hvp_is_a_symmetric_matrix(rng):
    z, g = rng.standard_normal(5), rng.standard_normal(5)
    w = softmax(z)
    H = np.stack([softmax_hvp(g, w, e) for e in np.eye(5)], axis=1)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-15)


def test_softmax_hvp_checks_shapes_instead_of_broadcasting(rng):
    w = softmax(rng.standard_normal(3))
    with pytest.raises(ValueError, match=r"dlogits has shape \(4, 3\), expected the shape of ratios = \(3,\)"):
        softmax_hvp(rng.standard_normal(3), w, rng.standard_normal((4, 3)))


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_sparsestmax_hvp_is_the_derivative_of_its_vjp_within_a_piece(variant):
    for case in cases(op="sparsestmax"):
        if case.kind == "error" or case.kink or not case.params.get("margin"):
            continue
        if case.params["variant"] != variant:
            continue
        rng = np.random.default_rng(case.seed)
        z = case.inputs()["logits"]
        radius = case.params["radius"]
        g, t = rng.standard_normal(z.shape), rng.standard_normal(z.shape)
        t *= 1e-2 / np.abs(t).max()  # inside the margin: the stages stay the same along the stencil
        numeric = _central(lambda s: [sparsestmax_vjp(g, sparsestmax_forward(z + s * t, radius, variant=variant)[1])], h=1e-3)
        _close([sparsestmax_hvp(g, sparsestmax_forward(z, radius, variant=variant)[1], t)], numeric, rtol=1e-7)


def test_sparsestmax_hvp_is_zero_at_a_vertex_and_on_an_edge(rng):
    one_hot = sparsestmax_forward(np.array([[3.0, 0.0, -1.0]]), 0.9)[1]
    assert not np.any(sparsestmax_hvp(rng.standard_normal((1, 3)), one_hot, rng.standard_normal((1, 3))))
    edge = sparsestmax_forward(np.array([[0.3, 0.1]]), 0.5)[1]  # K = 2: the sphere inside the edge is two points
    assert not np.any(sparsestmax_hvp(rng.standard_normal((1, 2)), edge, rng.standard_normal((1, 2))))


def test_sparsemax_hvp_is_zero(rng):
    z = rng.standard_normal((4, 5))
    ratios = refnorm.sparsemax(z)
    assert not np.any(refnorm.sparsemax_hvp(rng.standard_normal(z.shape), ratios, rng.standard_normal(z.shape)))


# --------------------------------------------------------------------------------------------
# Each stage's *_vjp_jvp is the derivative of its VJP
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_instance_moments_vjp_jvp_is_the_derivative_of_its_vjp(convention, rng):
    x, x_dot = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    dmean, dvar, dmean_dot, dvar_dot = (rng.standard_normal((3, 4)) for _ in range(4))
    layout = Layout.of(x.shape)

    def vjp(s):
        _, centered = statistics.instance_moments_and_centered(x + s * x_dot, convention=convention)
        return [statistics.instance_moments_vjp(dmean + s * dmean_dot, dvar + s * dvar_dot, centered, convention=convention, layout=layout)]

    _, centered = statistics.instance_moments_and_centered(x, convention=convention)
    _, centered_dot = statistics.instance_moments_jvp(x_dot, centered, convention=convention, layout=layout)
    analytic = statistics.instance_moments_vjp_jvp(dvar, dmean_dot, dvar_dot, centered, centered_dot, convention=convention, layout=layout)
    _close([analytic], _central(vjp))


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_scope_moments_vjp_jvp_is_the_derivative_of_its_vjp(convention, rng):
    normalizers, groups = ("in", "ln", "bn", "gn"), 2
    x, x_dot = rng.standard_normal((3, 4, 2)) + 1.0, rng.standard_normal((3, 4, 2))
    layout = Layout.of(x.shape)
    shapes = {"in": (3, 4), "ln": (3, 1), "bn": (1, 4), "gn": (3, 4)}
    dmeans, dvars = tuple(rng.standard_normal(shapes[s]) for s in normalizers), tuple(rng.standard_normal(shapes[s]) for s in normalizers)
    dmeans_dot, dvars_dot = tuple(rng.standard_normal(shapes[s]) for s in normalizers), tuple(rng.standard_normal(shapes[s]) for s in normalizers)

    def statistics_at(s):
        moments = statistics.instance_moments(x + s * x_dot, convention=convention)
        return moments, statistics.scope_moments(moments, normalizers, convention=convention, layout=layout, groups=groups)

    def vjp(s):
        moments, scopes = statistics_at(s)
        moved = (tuple(a + s * b for a, b in zip(dmeans, dmeans_dot)), tuple(a + s * b for a, b in zip(dvars, dvars_dot)))
        return list(statistics.scope_moments_vjp(*moved, moments, scopes, convention=convention, layout=layout, groups=groups))

    moments, scopes = statistics_at(0.0)
    _, centered = statistics.instance_moments_and_centered(x, convention=convention)
    moments_dot, _ = statistics.instance_moments_jvp(x_dot, centered, convention=convention, layout=layout)
    scopes_dot = statistics.scope_moments_jvp(moments_dot, moments, scopes, convention=convention, layout=layout, groups=groups)
    analytic = statistics.scope_moments_vjp_jvp(
        dvars, dmeans_dot, dvars_dot, moments, scopes, moments_dot, scopes_dot, convention=convention, layout=layout, groups=groups
    )
    _close(list(analytic), _central(vjp))


def test_normalize_vjp_jvp_is_the_derivative_of_its_vjp(rng):
    dy = rng.standard_normal((3, 4, 5))
    point = [rng.standard_normal((3, 4, 5)), rng.standard_normal(4), rng.uniform(0.5, 2, (3, 4)), rng.standard_normal((3, 4))]
    centered_dot, gamma_dot, scale_dot, shift_dot = _like(rng, point)
    moved = [centered_dot, gamma_dot, scale_dot, shift_dot]
    numeric = _central(lambda s: list(layer.normalize_vjp(dy, *(p + s * m for p, m in zip(point, moved)))))
    analytic = layer.normalize_vjp_jvp(dy, *point, centered_dot, gamma_dot, scale_dot, shift_dot)
    _close(list(analytic), numeric)


# --------------------------------------------------------------------------------------------
# Each layer's HVP is the chain of the public stages
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("convention", ["paper", "official"])
def test_switch_norm_hvp_is_the_chain_of_the_public_stages(training, convention, rng):
    """The JVP's stages 1-3 for the point's tangents, then each VJP stage followed by its derivative."""
    x = rng.standard_normal((3, 4, 3, 2)) + 2.0
    args = (x, *_sn_params(rng, 4, 3))
    running = RunningStats(rng.standard_normal(4), rng.uniform(0.5, 1.5, 4))
    _, cache, _ = refnorm.switch_norm_forward(*args, running=running, training=training, convention=convention)
    t, dy = SwitchNormGrads(*_like(rng, args)), rng.standard_normal(x.shape)
    layout, config, mixture = cache.layout, cache.config, cache.mixture
    options = dict(convention=convention, layout=layout)
    dy3 = dy.reshape(3, 4, 6)
    moments_dot, centered_dot = statistics.instance_moments_jvp(t.dx.reshape(3, 4, 6), cache.centered, **options)
    scopes_dot = statistics.scope_moments_jvp(moments_dot, mixture.moments, mixture.scopes, constant=layer.constant_scopes(config), **options)
    mixture_dot = switchnorm.mix_jvp(moments_dot, scopes_dot, t.dmean_logits, t.dvar_logits, mixture, config)
    normalized = layer.normalize_vjp(dy3, cache.centered, cache.gamma, mixture.inv_std, mixture.shift)
    normalized_dot = layer.normalize_vjp_jvp(dy3, cache.centered, cache.gamma, mixture.inv_std, mixture.shift, centered_dot, t.dgamma,
                                             mixture_dot.inv_std, mixture_dot.shift)  # fmt: skip
    mixed = switchnorm.mix_vjp(normalized.sum_dxhat, normalized.sum_dxhat_centered, mixture, config)
    mixed_dot = switchnorm.mix_vjp_jvp(normalized, normalized_dot, mixture, mixture_dot, t.dmean_logits, t.dvar_logits, config)
    dmean_in, dvar_in = statistics.scope_moments_vjp(mixed.dmeans, mixed.dvars, mixture.moments, mixture.scopes, **options)
    dmean_in_dot, dvar_in_dot = statistics.scope_moments_vjp_jvp(mixed.dvars, mixed_dot.dmeans, mixed_dot.dvars, mixture.moments, mixture.scopes,
                                                                 mixture_dot.moments, mixture_dot.scopes, **options)  # fmt: skip
    dx_dot = statistics.instance_moments_vjp_jvp(dvar_in, dmean_in_dot, dvar_in_dot, cache.centered, centered_dot, **options)
    dx_dot = dx_dot + normalized_dot.direct_scale[:, :, None] * dy3
    expected = SwitchNormGrads(dx_dot.reshape(x.shape), normalized_dot.dgamma, normalized_dot.dbeta, mixed_dot.dmean_logits, mixed_dot.dvar_logits)
    for name, a, b in zip(SwitchNormGrads._fields, refnorm.switch_norm_hvp(dy, cache, t), expected, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_the_hvp_calls_the_backwards_stages_in_the_order_of_the_derivation(monkeypatch, rng):
    calls = []
    for name in ("instance_moments_jvp", "scope_moments_jvp", "mix_jvp", "normalize_vjp", "normalize_vjp_jvp", "mix_vjp", "mix_vjp_jvp",
                 "scope_moments_vjp", "scope_moments_vjp_jvp", "instance_moments_vjp_jvp"):  # fmt: skip
        original = getattr(switchnorm, name)
        monkeypatch.setattr(switchnorm, name, lambda *a, _name=name, _f=original, **k: calls.append(_name) or _f(*a, **k))
    x = rng.standard_normal((2, 4, 3))
    args = (x, *_sn_params(rng, 4, 3))
    _, cache, _ = refnorm.switch_norm_forward(*args)
    refnorm.switch_norm_hvp(rng.standard_normal(x.shape), cache, SwitchNormGrads(*_like(rng, args)))
    assert calls == [
        "instance_moments_jvp", "scope_moments_jvp", "mix_jvp",
        "normalize_vjp", "normalize_vjp_jvp", "mix_vjp", "mix_vjp_jvp", "scope_moments_vjp", "scope_moments_vjp_jvp", "instance_moments_vjp_jvp",
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Properties of the Hessian
# --------------------------------------------------------------------------------------------


def _hessian_form(hvp, v1, v2) -> tuple[float, float, float]:
    """<v1, H v2>, <v2, H v1> and the Cauchy-Schwarz scale."""
    h2, h1 = hvp(v2), hvp(v1)
    first = sum(float(np.vdot(a, b)) for a, b in zip(v1, h2, strict=True))
    second = sum(float(np.vdot(a, b)) for a, b in zip(v2, h1, strict=True))
    norm = lambda parts: np.sqrt(sum(float(np.vdot(p, p)) for p in parts))  # noqa: E731
    return first, second, max(norm(v1) * norm(h2), norm(v2) * norm(h1))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("convention", ["paper", "official"])
@pytest.mark.parametrize("normalizers, groups", [(("in", "ln", "bn"), None), (("gn", "bn", "ln", "in"), 2), (("bn",), None)])
def test_the_switch_norm_hessian_is_symmetric(training, convention, normalizers, groups, rng):
    x = rng.standard_normal((3, 4, 3, 2)) + 1.0
    args = (x, *_sn_params(rng, 4, len(normalizers)))
    running = RunningStats(rng.standard_normal(4), rng.uniform(0.5, 1.5, 4))
    _, cache, _ = refnorm.switch_norm_forward(*args, normalizers=normalizers, groups=groups, running=running, training=training, convention=convention)
    dy = rng.standard_normal(x.shape)
    first, second, scale = _hessian_form(lambda v: refnorm.switch_norm_hvp(dy, cache, SwitchNormGrads(*v)), _like(rng, args), _like(rng, args))
    assert abs(first - second) <= SYMMETRY * scale


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_the_sparse_switch_norm_hessian_is_symmetric_within_a_piece(variant):
    for case in cases(kind="reference", op="sparse_switch_norm"):
        if case.kink or case.params.get("variant", "paper") != variant:
            continue
        linearized = OPS[case.op].linearize(case.inputs(), case.params)
        rng = np.random.default_rng(case.seed)
        point = OPS[case.op].arguments_of(case.inputs())
        dy = rng.standard_normal(np.shape(linearized.out))
        first, second, scale = _hessian_form(lambda v: linearized.hvp(dy, *v), _like(rng, point), _like(rng, point))
        assert abs(first - second) <= SYMMETRY * max(scale, 1.0), case.id


def test_the_hvp_of_beta_is_exactly_zero(rng):
    x = rng.standard_normal((2, 4, 3))
    args = (x, *_sn_params(rng, 4, 3))
    _, cache, _ = refnorm.switch_norm_forward(*args)
    hvp = refnorm.switch_norm_hvp(rng.standard_normal(x.shape), cache, SwitchNormGrads(*_like(rng, args)))
    assert not np.any(hvp.dbeta)


def test_the_hvp_is_bilinear_in_the_upstream_gradient_and_the_tangents(rng):
    x = rng.standard_normal((2, 4, 3, 2))
    args = (x, *_sn_params(rng, 4, 3))
    _, cache, _ = refnorm.switch_norm_forward(*args)
    dy1, dy2 = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    t1, t2 = SwitchNormGrads(*_like(rng, args)), SwitchNormGrads(*_like(rng, args))
    combined = refnorm.switch_norm_hvp(2 * dy1 - dy2, cache, SwitchNormGrads(*(a + 3 * b for a, b in zip(t1, t2))))
    parts = [refnorm.switch_norm_hvp(dy, cache, t) for dy in (dy1, dy2) for t in (t1, t2)]
    expected = [2 * a + 6 * b - c - 3 * d for a, b, c, d in zip(*parts)]
    for a, b in zip(combined, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_plain_norm_hvp_is_switch_norms_with_the_fixed_ratio_unmoved(rng):
    x, gamma, beta = rng.standard_normal((3, 4, 5)), rng.standard_normal(4), rng.standard_normal(4)
    _, cache, _ = refnorm.plain_norm_forward(x, gamma, beta, normalizer="bn")
    t, dy = PlainNormGrads(*_like(rng, [x, gamma, beta])), rng.standard_normal(x.shape)
    zero = np.zeros(1)
    full = refnorm.switch_norm_hvp(dy, cache, SwitchNormGrads(*t, zero, zero))
    for a, b in zip(refnorm.plain_norm_hvp(dy, cache, t), full[:3], strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_hvp_runs_on_every_backend_with_numpys_values(backend, rng):
    x = rng.standard_normal((2, 4, 3, 2))
    args = (x, *_sn_params(rng, 4, 3))
    t, dy = _like(rng, args), rng.standard_normal(x.shape)
    _, cache, _ = refnorm.switch_norm_forward(*(backend.asarray(a) for a in args))
    _, host_cache, _ = refnorm.switch_norm_forward(*args)
    on_backend = refnorm.switch_norm_hvp(backend.asarray(dy), cache, SwitchNormGrads(*(backend.asarray(a) for a in t)))
    for a, b in zip(on_backend, refnorm.switch_norm_hvp(dy, host_cache, SwitchNormGrads(*t)), strict=True):
        np.testing.assert_allclose(backend.to_numpy(a), b, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Errors, and what has no second order
# --------------------------------------------------------------------------------------------


def test_a_bad_upstream_gradient_or_tangent_is_a_clean_error(rng):
    x = rng.standard_normal((2, 4, 3))
    args = (x, *_sn_params(rng, 4, 3))
    _, cache, _ = refnorm.switch_norm_forward(*args)
    tangents = SwitchNormGrads(*_like(rng, args))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4\), expected the output's shape = \(2, 4, 3\)"):
        refnorm.switch_norm_hvp(x[:, :, 0], cache, tangents)
    with pytest.raises(ValueError, match=r"tangents\.dx has shape \(2, 4\), expected the shape of its argument = \(2, 4, 3\)"):
        refnorm.switch_norm_hvp(x, cache, tangents._replace(dx=x[:, :, 0]))
    with pytest.raises(TypeError, match="tangents must be a SwitchNormGrads"):
        refnorm.switch_norm_hvp(x, cache, tuple(tangents))


def test_exemplar_norm_has_no_second_order():
    case = cases(kind="sample", op="exemplar_norm")[0]
    linearized = OPS["exemplar_norm"].linearize(case.inputs(), case.params)
    assert linearized.hvp is None and not OPS["exemplar_norm"].hvp
    with pytest.raises(ValueError, match="order=2 checks the second order, but fun's Linearized has no hvp"):
        gradcheck_case(case, order=2)


def test_the_second_order_check_catches_the_softmax_aliasing_bug(rng):
    """The official SyncSN writes softmax's VJP into the ratios' array (tests/test_gradcheck.py): a
    wrong first order whose derivative does not match the backward's finite differences either."""
    from test_gradcheck import _AliasedSoftmax, _sn_point

    aliased = _AliasedSoftmax()
    result = refnorm.gradcheck(
        lambda *args: refnorm.switch_norm_linearize(*args, mean_ratio=aliased, var_ratio=aliased),
        _sn_point(rng), names=refnorm.ops.switchnorm.SWITCH_NORM_ARGUMENTS, order=2,
    )  # fmt: skip
    assert not result["mean_logits"].passed
    assert any("second order" in f for f in result["mean_logits"].failures)


# --------------------------------------------------------------------------------------------
# Over the input space
# --------------------------------------------------------------------------------------------

from hypothesis import given, strategies as st  # noqa: E402


@given(
    shape=st.sampled_from([(2, 4), (3, 2, 3), (1, 4, 2, 2), (2, 1, 3), (3, 4, 1, 1)]),
    normalizers=st.sampled_from([("in", "ln", "bn"), ("ln", "bn"), ("bn", "ln"), ("gn", "in"), ("in",)]),
    training=st.booleans(),
    offset=st.sampled_from([0.0, 3.0, -40.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_jvp_is_the_transpose_of_the_backward_and_the_hessian_is_symmetric(shape, normalizers, training, offset, seed):
    if len(shape) == 2 and "in" in normalizers:
        normalizers = ("ln", "bn")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) + offset
    C, K = shape[1], len(normalizers)
    groups = 1 if "gn" in normalizers else None
    args = (x, *_sn_params(rng, C, K))
    running = RunningStats(offset + rng.standard_normal(C), rng.uniform(0.5, 1.5, C))
    y, cache, _ = refnorm.switch_norm_forward(*args, normalizers=normalizers, groups=groups, running=running, training=training)
    dy, t1, t2 = rng.standard_normal(y.shape), SwitchNormGrads(*_like(rng, args)), SwitchNormGrads(*_like(rng, args))
    grads = refnorm.switch_norm_backward(dy, cache)
    forward = float(np.vdot(dy, refnorm.switch_norm_jvp(t1, cache)))
    backward = sum(float(np.vdot(g, t)) for g, t in zip(grads, t1))
    gradient_norm = np.sqrt(sum(float(np.vdot(g, g)) for g in grads)) * np.sqrt(sum(float(np.vdot(t, t)) for t in t1))
    assert abs(forward - backward) <= 1e-12 * max(gradient_norm, 1.0)
    first, second, scale = _hessian_form(lambda v: refnorm.switch_norm_hvp(dy, cache, SwitchNormGrads(*v)), list(t1), list(t2))
    assert abs(first - second) <= SYMMETRY * max(scale, gradient_norm, 1.0)
