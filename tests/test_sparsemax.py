"""Sparsemax: the projection onto the simplex, its VJP and JVP (refnorm.ops.sparsestmax)."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracles.official_ssn import official_sparsemax
from oracles.simplex_oracles import bisection_sparsemax

import refnorm
from refnorm.ops.sparsestmax import sparsemax, sparsemax_jvp, sparsemax_linearize, sparsemax_vjp

logit_vectors = st.integers(2, 8).flatmap(
    lambda K: hnp.arrays(np.float64, (K,), elements=st.floats(-5.0, 5.0, allow_nan=False, allow_infinity=False))
)


def any_finite_logits(dtype) -> st.SearchStrategy[np.ndarray]:
    """Vectors of K = 2..6 finite logits of ``dtype``, of any magnitude: the whole float range,
    the extremes (``±finfo.max``, the smallest normal and subnormal numbers) and moderate values
    mixed, with ties among them."""
    info = np.finfo(dtype)
    width = 8 * np.dtype(dtype).itemsize
    extremes = [float(v) for v in (info.max, -info.max, info.tiny, -info.tiny, info.smallest_subnormal, 0.0, 1.0, -1.0)]
    element = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=width),
        st.sampled_from(extremes),
        st.floats(-3.0, 3.0, width=width),
    )
    return st.integers(2, 6).flatmap(lambda K: hnp.arrays(dtype, (K,), elements=element))


def exact_shift(z: np.ndarray) -> np.ndarray:
    """``z - max(z)`` in float64, correctly rounded, ``-inf`` where the difference overflows: the
    oracle's input (sparsemax is translation invariant; an entry at ``-inf`` is outside the support)."""
    z = z.astype(np.float64)
    with np.errstate(over="ignore"):
        return z - np.max(z, axis=-1, keepdims=True)


@given(logit_vectors)
def test_sparsemax_agrees_with_bisection_on_the_threshold(z):
    np.testing.assert_allclose(sparsemax(z), bisection_sparsemax(z), rtol=0, atol=1e-13)


@given(logit_vectors)
def test_sparsemax_output_is_on_simplex(z):
    w = sparsemax(z)
    assert np.all(w >= 0)
    assert abs(np.sum(w) - 1.0) <= 1e-14


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e3])
def test_sparsemax_agrees_with_bisection_over_batch_axes_and_scales(rng, scale):
    z = scale * rng.standard_normal((4, 3, 7))
    np.testing.assert_allclose(sparsemax(z), bisection_sparsemax(z), rtol=0, atol=1e-13 * max(scale, 1.0))


def test_sparsemax_is_translation_invariant_even_for_huge_offsets(rng):
    z = rng.standard_normal((50, 4))
    np.testing.assert_allclose(sparsemax(z + 1e8), sparsemax(z), rtol=0, atol=1e-8)  # 1e8 + z keeps ~1e-8


def test_one_hot_sparsemax_is_exactly_one_hot_where_the_official_code_is_not():
    """The official sparsemax computes ``v_max - (v_max - 1)``, not exactly 1 unless v_max is in
    [0.5, 2] (spec-notes §3.7); refnorm shifts by the maximum first, so a vertex is exact."""
    z = np.array([-1.01, -2.16, -2.08])  # v_max - 1 = -2.01 is not representable exactly
    assert official_sparsemax(z)[0] == 1.0 - 2.0**-52
    np.testing.assert_array_equal(sparsemax(z), [1.0, 0.0, 0.0])


@pytest.mark.parametrize("shape", [(5, 2), (4, 3), (2, 3, 6)])
def test_sparsemax_gradient_matches_finite_differences_and_jvp(backend, rng, shape):
    z = backend.asarray(rng.standard_normal(shape))
    result = refnorm.gradcheck(sparsemax_linearize, (z,), names=("logits",), directions=3, seed=1)
    assert result.passed, result.summary()
    assert result["logits"].checked == 3
    assert result["logits"].adjoint_error <= 1e-12


def test_sparsemax_jacobian_is_the_projector_on_the_support(rng):
    """``J = diag(s) - s s^T / |S|``, built explicitly, against the VJP and the JVP column by column."""
    z = np.array([[0.9, 0.5, -1.0, 0.7]])
    w = sparsemax(z)
    s = (w[0] > 0).astype(float)
    jacobian = np.diag(s) - np.outer(s, s) / s.sum()
    eye = np.eye(4)
    vjp_rows = np.stack([sparsemax_vjp(eye[i : i + 1], w)[0] for i in range(4)])
    jvp_columns = np.stack([sparsemax_jvp(eye[i : i + 1], w)[0] for i in range(4)], axis=1)
    np.testing.assert_allclose(vjp_rows, jacobian.T, atol=1e-15)
    np.testing.assert_allclose(jvp_columns, jacobian, atol=1e-15)


def test_sparsemax_gradient_is_exactly_zero_at_a_vertex(rng):
    z = np.array([[3.0, 0.2, -1.0], [0.0, 2.5, 1.0]])
    w = sparsemax(z)
    np.testing.assert_array_equal(w, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert np.all(sparsemax_vjp(rng.standard_normal((2, 3)), w) == 0.0)
    assert np.all(sparsemax_jvp(rng.standard_normal((2, 3)), w) == 0.0)


def test_sparsemax_runs_on_every_backend_in_float32_without_upcast(backend, rng):
    host = rng.standard_normal((6, 4))
    w = sparsemax(backend.asarray(host, backend.xp.float32))
    assert w.dtype == backend.xp.float32
    np.testing.assert_allclose(backend.to_numpy(w), sparsemax(host), atol=2e-6)


@pytest.mark.parametrize(
    ("logits", "error", "match"),
    [
        (np.array([1.0]), ValueError, "K >= 2"),
        (np.array(1.0), ValueError, "K >= 2"),
        (np.array([1, 2, 3]), TypeError, "floating"),
        (np.array([1.0, np.nan]), ValueError, "NaN"),
        (np.array([1.0, np.inf]), ValueError, "infinity"),
        ([1.0, 2.0], TypeError, "array"),
    ],
)
def test_sparsemax_rejects_bad_logits(logits, error, match):
    with pytest.raises(error, match=match):
        sparsemax(logits)


# --------------------------------------------------------------------------------------------
# Any finite logits (issue 10): shifted by their maximum, never overflowing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(data=st.data())
def test_sparsemax_of_any_finite_logits_is_on_the_simplex_and_equals_bisection_after_shifting(dtype, data):
    """No NaN, no warning (the suite runs with warnings as errors), on the simplex, and the
    bisection oracle's sparsemax of the correctly rounded ``z - max z`` (in float64) to rounding."""
    z = data.draw(any_finite_logits(dtype))
    w = sparsemax(z)
    eps = float(np.finfo(dtype).eps)
    assert w.dtype == dtype
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    assert abs(float(np.sum(w, dtype=np.float64)) - 1.0) <= 4 * z.size * eps
    np.testing.assert_allclose(w, bisection_sparsemax(exact_shift(z)), rtol=0, atol=8 * z.size * eps)


_F64, _F32 = np.finfo(np.float64), np.finfo(np.float32)
EDGE_LOGITS = [
    # (logits, dtype, expected, why): the expected values follow from the definition by hand.
    ([9e307, 0.0, 0.0], np.float64, [1.0, 0.0, 0.0], "issue 10: was [0, 0, 0] (9e307 - 0 - 0 - 1 summed past finfo.max)"),
    ([2e38, 0.0, 0.0], np.float32, [1.0, 0.0, 0.0], "issue 10: the float32 form of the same"),
    ([_F64.max, -_F64.max], np.float64, [1.0, 0.0], "z - max z overflows: -2 finfo.max"),
    ([-_F32.max, _F32.max], np.float32, [0.0, 1.0], "the same, float32, maximum second"),
    ([-_F64.max] * 3, np.float64, [1 / 3] * 3, "all at -finfo.max: the centre"),
    ([_F32.max] * 3, np.float32, [1 / 3] * 3, "all at finfo.max: the centre"),
    ([_F64.max, _F64.max, -_F64.max], np.float64, [0.5, 0.5, 0.0], "a tie at finfo.max: the edge midpoint"),
    ([1e300, 1e300, 1e300 - 1e285], np.float64, [0.5, 0.5, 0.0], "a tie at 1e300, the third entry ~7 ulp below (> 1)"),
    ([1e308, 1e-308, -1e-308], np.float64, [1.0, 0.0, 0.0], "huge and tiny mixed"),
    ([-_F64.max, -_F64.max, 0.0], np.float64, [0.0, 0.0, 1.0], "two at -finfo.max below a zero"),
    ([_F64.smallest_subnormal, 0.0, -_F64.smallest_subnormal], np.float64, [1 / 3] * 3, "subnormal differences: the centre"),
    ([_F32.max, np.nextafter(_F32.max, 0, dtype=np.float32)], np.float32, [1.0, 0.0], "neighbours at finfo.max are 2e31 apart"),
]


@pytest.mark.parametrize(("logits", "dtype", "expected", "why"), EDGE_LOGITS, ids=[case[3] for case in EDGE_LOGITS])
def test_sparsemax_is_exact_at_the_edges_of_the_float_range(logits, dtype, expected, why):
    z = np.asarray(logits, dtype=dtype)
    w = sparsemax(z)
    assert w.dtype == dtype
    np.testing.assert_allclose(w, expected, rtol=0, atol=float(np.finfo(dtype).eps), err_msg=why)
    g = np.linspace(-1.0, 2.0, z.size, dtype=dtype)
    assert np.all(np.isfinite(sparsemax_vjp(g, w))), why


# --------------------------------------------------------------------------------------------
# Cotangents and tangents: shape, dtype and values checked, never broadcast
# --------------------------------------------------------------------------------------------

_RATIOS = np.full((4, 3), 1 / 3)


@pytest.mark.parametrize("derivative", [sparsemax_vjp, sparsemax_jvp], ids=["vjp", "jvp"])
@pytest.mark.parametrize(
    ("vector", "ratios", "error", "match"),
    [
        (np.ones(3), _RATIOS, ValueError, r"has shape \(3,\), expected the shape of ratios = \(4, 3\)"),
        (np.ones((4, 3)), np.full(3, 1 / 3), ValueError, r"has shape \(4, 3\), expected the shape of ratios = \(3,\)"),
        (np.ones((4, 1, 3)), _RATIOS, ValueError, "expected the shape of ratios"),
        (np.full((4, 3), np.nan), _RATIOS, ValueError, "contains NaN or infinity"),
        (np.full((4, 3), np.inf), _RATIOS, ValueError, "contains NaN or infinity"),
        (np.ones((4, 3), dtype=np.float32), _RATIOS, TypeError, "has dtype float32, expected float64"),
        (np.ones((4, 3), dtype=np.int64), _RATIOS, TypeError, "expected a real floating dtype"),
        (np.ones((4, 3), dtype=np.complex128), _RATIOS, TypeError, "expected a real floating dtype"),
        ([[1.0, 0.0, 0.0]], _RATIOS, TypeError, "must be an array"),
    ],
)
def test_sparsemax_derivatives_reject_a_bad_cotangent_or_tangent_naming_it(derivative, vector, ratios, error, match):
    name = "dratios" if derivative is sparsemax_vjp else "dlogits"
    with pytest.raises(error, match=match) as raised:
        derivative(vector, ratios)
    assert str(raised.value).startswith(name) or f"{name} " in str(raised.value)


@pytest.mark.parametrize(
    ("ratios", "error", "match"),
    [
        (np.full(3, np.nan), ValueError, "ratios contains NaN"),
        (np.ones(3, dtype=np.int64), TypeError, "ratios has dtype"),
        (np.ones((3, 1)), ValueError, r"ratios has shape \(3, 1\), expected \(\.\.\., K\) with K >= 2"),
        (None, TypeError, "ratios must be an array"),
    ],
)
def test_sparsemax_vjp_rejects_bad_ratios_naming_them(ratios, error, match):
    with pytest.raises(error, match=match):
        sparsemax_vjp(np.ones(3), ratios)


@pytest.mark.parametrize("logits", [np.ones(3, dtype=np.complex128), np.ones(3, dtype=bool), 3.0, None])
def test_sparsemax_rejects_non_floating_logits_with_a_type_error_naming_them(logits):
    with pytest.raises(TypeError, match="^logits "):
        sparsemax(logits)
