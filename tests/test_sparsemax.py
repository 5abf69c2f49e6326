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
