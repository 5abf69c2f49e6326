"""SparsestMax: both variants against independent oracles, edge cases, derivatives, backends, errors."""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracles.official_ssn import official_algorithm_sparsestmax, official_jacobian, official_sparsemax
from oracles.simplex_oracles import bisection_sparsemax, brute_force_sparsestmax, objective, slsqp_sparsestmax

import refnorm
from refnorm.oracle.catalog import OPS
from refnorm.ops import _sparsestmax_fast
from refnorm.ops.sparsestmax import (
    SparsestMax,
    _sparsestmax_stages,
    _stages_jvp,
    _stages_vjp,
    max_radius,
    sparsemax,
    sparsestmax,
    sparsestmax_forward,
    sparsestmax_jvp,
    sparsestmax_linearize,
    sparsestmax_vjp,
)

VARIANTS = ("paper", "official")


def distance_from_centre(p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p - 1.0 / p.shape[-1], axis=-1)


def sphere_steps(stages) -> np.ndarray:
    return np.asarray(stages.sphere_steps())


def logits_with_sphere_steps(rng, shape, radius, variant, steps) -> np.ndarray:
    """Random logits whose every row takes exactly ``steps`` sphere steps (drawn by the catalog)."""
    params = dict(shape=shape, radius=radius, variant=variant, sphere_steps=steps)
    return OPS["sparsestmax"].make_inputs(rng, params)["logits"]


# --------------------------------------------------------------------------------------------
# The "paper" variant solves the stated projection problem
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [2, 3, 4])
def test_paper_variant_equals_brute_force_face_enumeration(rng, K):
    """300 random logits and radii per K: the output is the minimiser found by enumerating faces."""
    for _ in range(300):
        z = rng.standard_normal(K) * rng.choice([0.3, 1.0, 3.0])
        radius = rng.uniform(0.0, max_radius(K))
        expected = brute_force_sparsestmax(z, radius)
        actual = sparsestmax(z, radius)
        assert objective(actual, z) == pytest.approx(objective(expected, z), rel=1e-12, abs=1e-13)
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-10, err_msg=f"z={z!r}, radius={radius!r}")


@pytest.mark.parametrize("K", [3, 4])
def test_paper_variant_is_never_beaten_by_a_numerical_optimiser(rng, K):
    """SLSQP from the vertices and random starts finds no feasible point closer to z."""
    for _ in range(25):
        z = rng.standard_normal(K)
        radius = rng.uniform(0.0, max_radius(K))
        actual = sparsestmax(z, radius)
        found = slsqp_sparsestmax(z, radius, starts=4, rng=rng)
        assert found is not None
        assert objective(actual, z) <= objective(found, z) + 1e-10


@given(
    st.integers(2, 6).flatmap(
        lambda K: hnp.arrays(np.float64, (3, K), elements=st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False))
    ),
    st.floats(0.0, 0.999),
    st.sampled_from(VARIANTS),
)
def test_sparsestmax_output_is_on_simplex_and_outside_the_ball(z, fraction, variant):
    """On the simplex always; at distance >= r from the centre unless the zero-distance guard fired
    (tied logits), in which case the output is the centre of its support."""
    radius = fraction * max_radius(z.shape[-1])
    p, stages = sparsestmax_forward(z, radius, variant=variant)
    assert np.all(p >= 0)
    np.testing.assert_allclose(np.sum(p, axis=-1), 1.0, rtol=0, atol=1e-14)
    degenerate = stages.degenerate[:, 0]
    assert np.all(distance_from_centre(p)[~degenerate] >= radius - 1e-13)
    support = p[degenerate] > 0
    centres = support / np.sum(support, axis=-1, keepdims=True)
    np.testing.assert_allclose(p[degenerate], centres, atol=1e-13)
    if variant == "paper":
        for row in np.flatnonzero(~degenerate):
            best = brute_force_sparsestmax(z[row], radius)
            assert objective(p[row], z[row]) == pytest.approx(objective(best, z[row]), rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("K", [2, 3, 5])
def test_paper_variant_is_sparsemax_at_the_smallest_scale_that_reaches_the_radius(rng, K):
    """The minimiser is ``sparsemax(beta z)`` with the smallest ``beta >= 1`` whose distance from the
    centre reaches ``r`` (KKT conditions; docs/sparsestmax.md): bisection on ``beta``, 50 rows."""
    z = rng.standard_normal((50, K))
    radius = rng.uniform(0.0, 0.95 * max_radius(K), size=(50, 1))

    def inside(beta):
        return np.linalg.norm(bisection_sparsemax(beta * z) - 1.0 / K, axis=-1, keepdims=True) < radius

    low, high = np.ones((50, 1)), np.ones((50, 1))
    while np.any(inside(high)):
        high = np.where(inside(high), 2.0 * high, high)
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = np.where(inside(middle), middle, low), np.where(inside(middle), high, middle)
    expected = bisection_sparsemax(high * z)
    for row in range(50):
        np.testing.assert_allclose(sparsestmax(z[row], float(radius[row, 0])), expected[row], atol=1e-10)


# --------------------------------------------------------------------------------------------
# The "official" variant reproduces the official code
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [2, 3, 4, 5])
def test_official_variant_reproduces_the_official_algorithm(rng, K):
    """Forward and gradient against the plain per-vector transcription of the official algorithm,
    with the centre in the input's dtype (tests/oracles/official_ssn.py; the released code's float32
    centre moves its float64 outputs by up to ~2e-7: tests/test_official_ssn.py).

    Where the official code misses a one-hot sparsemax computed as ``(1 - 2^-52, 0, ...)`` it
    leaves the simplex (spec-notes §3.7); refnorm returns the exact vertex there instead.
    """
    missed_vertices = 0
    for _ in range(300):
        z = rng.standard_normal(K) * rng.choice([0.3, 1.0, 3.0])
        radius = rng.uniform(0.0, max_radius(K))
        p, stages = sparsestmax_forward(z, radius, variant="official")
        official_stages: list = []
        expected = official_algorithm_sparsestmax(z, radius, stages=official_stages)
        if abs(np.sum(expected) - 1.0) > 1e-12:
            missed_vertices += 1
            w = official_sparsemax(z)
            assert np.sum(w > 0) == 1 and np.max(w) > 1.0 - 1e-15
            np.testing.assert_array_equal(p, (w > 0).astype(float))
            continue
        np.testing.assert_allclose(p, expected, rtol=0, atol=1e-11, err_msg=f"z={z!r}, radius={radius!r}")
        # Gradient: refnorm's masked stage composition against explicit K x K matrices. The sphere
        # factors rho/n amplify rounding; refnorm's exact zeros (edges) leave official residue.
        g = rng.standard_normal(K)
        gain = math.prod(stage[1] / stage[2] for stage in official_stages if stage[0] == "sphere")
        expected_gradient = official_jacobian(official_stages, K).T @ g
        np.testing.assert_allclose(sparsestmax_vjp(g, stages), expected_gradient, rtol=0, atol=1e-13 * max(gain, 1.0) * np.linalg.norm(g))
    assert missed_vertices < 30


def test_the_two_variants_differ_when_sparsemax_is_already_sparse():
    """z = (0.1262, -0.6546, 0.1083), r = 0.3672 (spec-notes §3.3).

    sparsemax(z) = (0.509, 0, 0.491) lies on an edge at distance 0.408 >= r from the simplex centre
    u0 = 1/3, so it already satisfies the constraint: the "paper" variant (the minimiser) returns it.
    The official code measures the distance from the centre of the sparsemax *support*, the edge
    midpoint (1/2, 0, 1/2), where it is only 0.013 < r, and pushes the point along the edge to
    distance r from that midpoint: (1/2 + r/sqrt(2), 0, 1/2 - r/sqrt(2)) = (0.760, 0, 0.240),
    feasible but farther from z.
    """
    z = np.array([0.1262, -0.6546, 0.1083])
    radius = 0.3672
    edge_direction = np.array([1.0, 0.0, -1.0]) / math.sqrt(2.0)

    paper = sparsestmax(z, radius, variant="paper")
    official = sparsestmax(z, radius, variant="official")

    np.testing.assert_allclose(paper, bisection_sparsemax(z), atol=1e-15)
    np.testing.assert_allclose(official, np.array([0.5, 0.0, 0.5]) + radius * edge_direction, atol=1e-15)
    np.testing.assert_allclose(official, official_algorithm_sparsestmax(z, radius), atol=1e-15)
    assert np.max(np.abs(paper - official)) > 0.25
    assert objective(paper, z) < objective(official, z)


def test_the_variants_agree_when_sparsemax_has_full_support(rng):
    """With every entry in the sparsemax support, the support centre is the simplex centre."""
    z = 0.05 * rng.standard_normal((200, 4))
    assert np.all(sparsemax(z) > 0)
    for radius in (0.1, 0.3, 0.6, 0.8):
        np.testing.assert_array_equal(sparsestmax(z, radius, variant="paper"), sparsestmax(z, radius, variant="official"))


# --------------------------------------------------------------------------------------------
# Radius zero, the largest radius, and the other defined edge cases
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_radius_zero_gives_sparsemax_exactly(rng, variant):
    """Exactly, bit for bit (away from the 32-eps neighbourhood of a vertex, where both are the vertex)."""
    z = rng.standard_normal((50, 5)) * 2.0
    p, stages = sparsestmax_forward(z, 0.0, variant=variant)
    np.testing.assert_array_equal(p, sparsemax(z))
    assert np.all(sphere_steps(stages) == 0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("K", [2, 3, 4, 6])
def test_radius_at_or_beyond_the_largest_distance_gives_one_hot_at_the_argmax(rng, K, variant):
    z = rng.standard_normal((20, K))
    for radius in (math.sqrt((K - 1) / K), 1.0, 10.0):
        p, stages = sparsestmax_forward(z, radius, variant=variant)
        np.testing.assert_array_equal(p, np.eye(K)[np.argmax(z, axis=-1)])
        assert np.all(sparsestmax_vjp(rng.standard_normal((20, K)), stages) == 0.0)


def test_ties_beyond_the_largest_distance_pick_the_first_maximal_entry():
    np.testing.assert_array_equal(sparsestmax(np.array([0.5, 2.0, 2.0]), 0.9), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(sparsestmax(np.array([1.0, 1.0, 1.0, 1.0]), 0.9), [1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_distance_zero_returns_the_sparsemax_output_without_nan(rng, variant, dtype):
    """Equal logits (the official initialisation, ones(3)) put sparsemax at the centre: the direction
    of the sphere step is undefined. The output is the sparsemax output, with its Jacobian. The
    released official code centres its sphere on float32(1/3) and returns a point off the simplex,
    sum 1 - sqrt(3) r, for ones(3) in float32 and float64 (tests/test_official_ssn.py, notebook 02)."""
    z = np.ones((2, 3), dtype=dtype)
    p, stages = sparsestmax_forward(z, 0.1, variant=variant)
    assert p.dtype == dtype
    np.testing.assert_array_equal(p, sparsemax(z))
    np.testing.assert_allclose(p, 1.0 / 3.0, rtol=1e-6)
    assert np.all(stages.degenerate)
    g = rng.standard_normal((2, 3)).astype(dtype)
    dz = sparsestmax_vjp(g, stages)
    np.testing.assert_allclose(dz, g - np.mean(g, axis=-1, keepdims=True), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("z", "radius", "expected", "why"),
    [
        ([1.0, 1.0, 0.0], 0.6, [0.5, 0.5, 0.0], "tie on an edge: the edge midpoint (second-stage distance zero)"),
        ([2.0, 2.0, 2.0, -5.0], 0.7, [1 / 3, 1 / 3, 1 / 3, 0.0], "three-way tie: the face centre"),
        ([0.3, 0.3], 0.2, [0.5, 0.5], "K = 2 tie: the centre"),
    ],
)
def test_ties_inside_the_ball_return_the_face_centre(z, radius, expected, why):
    for variant in VARIANTS:
        p, stages = sparsestmax_forward(np.array(z), radius, variant=variant)
        np.testing.assert_allclose(p, expected, atol=1e-15, err_msg=why)
        assert bool(stages.degenerate[0]), why


def test_ties_below_the_top_are_ordinary():
    """Tied entries that are not both largest leave the direction defined (no guard)."""
    p, stages = sparsestmax_forward(np.array([1.2, 1.0, 1.0]), 0.5)
    assert not bool(stages.degenerate[0])
    assert p[1] == p[2]
    assert distance_from_centre(p) == pytest.approx(0.5, abs=1e-15)


def test_output_within_rounding_of_a_vertex_snaps_to_the_vertex(rng):
    """K = 2 at a radius one ulp below the largest distance: the sphere point is 1e-16 from a vertex."""
    radius = math.nextafter(math.sqrt(0.5), 0.0)
    z = np.array([[0.1, 0.3], [0.9, 0.2]])
    p, stages = sparsestmax_forward(z, radius)
    np.testing.assert_array_equal(p, [[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(stages.vertex, p)
    assert np.all(sparsestmax_vjp(rng.standard_normal((2, 2)), stages) == 0.0)


def test_sparsemax_output_within_rounding_of_a_vertex_snaps_too(rng):
    """At radius 0 the only difference from sparsemax: (1.1e-16, 1 - 1.1e-16) is the vertex (0, 1)."""
    z = np.array([0.0, 1.0 - 2.0**-53])
    assert 0.0 < sparsemax(z)[0] < 1e-15
    p, stages = sparsestmax_forward(z, 0.0)
    np.testing.assert_array_equal(p, [0.0, 1.0])
    assert np.all(sparsestmax_vjp(rng.standard_normal(2), stages) == 0.0)


@pytest.mark.parametrize(
    ("radius", "expected"),
    [
        (0.03, [0.525, 0.475]),  # sparsemax is 0.025 sqrt(2) = 0.0354 from the centre: outside the ball
        (0.05, [0.5 + 0.05 / math.sqrt(2.0), 0.5 - 0.05 / math.sqrt(2.0)]),  # one sphere step along (1, -1)
        (0.7, [0.5 + 0.7 / math.sqrt(2.0), 0.5 - 0.7 / math.sqrt(2.0)]),
        (0.71, [1.0, 0.0]),  # beyond sqrt(1/2)
    ],
)
def test_k2_closed_form(radius, expected):
    for variant in VARIANTS:
        np.testing.assert_allclose(sparsestmax(np.array([0.30, 0.25]), radius, variant=variant), expected, atol=1e-15)


def test_very_large_logits(rng):
    offsets = rng.standard_normal((30, 3))
    for radius in (0.0, 0.4):
        # Translation invariance: 1e8 + offsets is offsets up to the input's own rounding (1.5e-8).
        np.testing.assert_allclose(sparsestmax(offsets + 1e8, radius), sparsestmax(offsets, radius), atol=1e-6)
    np.testing.assert_array_equal(sparsestmax(np.array([1e300, -1e300, 0.0]), 0.3), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(sparsestmax(np.array([3e7, 1e8, -1e8]), 0.3), [0.0, 1.0, 0.0])


def test_very_small_logits(rng):
    """Nearly equal logits: sparsemax is u0 + (z - mean z), the sphere step goes straight out along
    z - mean z; below rounding (1e-300) the guard returns the centre."""
    z = 1e-8 * rng.standard_normal((20, 4))
    direction = (z - np.mean(z, axis=-1, keepdims=True)) / np.linalg.norm(z - np.mean(z, axis=-1, keepdims=True), axis=-1, keepdims=True)
    np.testing.assert_allclose(sparsestmax(z, 0.2), 0.25 + 0.2 * direction, atol=1e-7)
    p, stages = sparsestmax_forward(np.array([1e-300, 0.0, -1e-300]), 0.2)
    np.testing.assert_allclose(p, 1.0 / 3.0, atol=1e-16)
    assert bool(stages.degenerate[0])


# --------------------------------------------------------------------------------------------
# Any finite logits (issue 10)
# --------------------------------------------------------------------------------------------


def any_finite_logits(dtype) -> st.SearchStrategy[np.ndarray]:
    """Vectors of K = 2..5 finite logits of ``dtype`` of any magnitude, extremes and ties included."""
    info = np.finfo(dtype)
    width = 8 * np.dtype(dtype).itemsize
    extremes = [float(v) for v in (info.max, -info.max, info.tiny, -info.tiny, info.smallest_subnormal, 0.0, 1.0, -1.0)]
    element = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=width),
        st.sampled_from(extremes),
        st.floats(-3.0, 3.0, width=width),
    )
    return st.integers(2, 5).flatmap(lambda K: hnp.arrays(dtype, (K,), elements=element))


def moderate_equivalent(z: np.ndarray) -> np.ndarray:
    """Logits of moderate size with the same SparsestMax: ``z - max z`` correctly rounded in ``z``'s
    dtype, with every entry more than 3 below the maximum (``-inf`` where the difference overflows)
    at -3. Both maps are translation invariant, and an entry more than 1 below the maximum is outside
    the support of every sparsemax stage (the sharpened logits of docs/sparsestmax.md §2 keep it
    there), so its value does not matter."""
    with np.errstate(over="ignore"):
        return np.maximum(z - np.max(z), np.asarray(-3.0, dtype=z.dtype))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(data=st.data())
def test_sparsestmax_of_any_finite_logits_is_that_of_the_shifted_logits(variant, dtype, data):
    """No NaN and no warning; on the simplex; the result, stage by stage, of the moderate logits
    with the same answer (bit for bit); and, for the paper variant, the brute-force minimiser,
    away from near-ties (a sphere step at distance n from its centre amplifies rounding by 1/n)."""
    z = data.draw(any_finite_logits(dtype))
    radius = data.draw(st.floats(0.0, 0.999)) * max_radius(z.size)
    p, stages = sparsestmax_forward(z, radius, variant=variant)
    eps = float(np.finfo(dtype).eps)
    assert p.dtype == dtype and np.all(np.isfinite(p)) and np.all(p >= 0)
    assert abs(float(np.sum(p, dtype=np.float64)) - 1.0) <= 8 * z.size * eps
    moderate, moderate_stages = sparsestmax_forward(moderate_equivalent(z), radius, variant=variant)
    np.testing.assert_array_equal(p, moderate)
    for (name, value), (_, expected) in zip(stages.arrays().items(), moderate_stages.arrays().items(), strict=True):
        np.testing.assert_array_equal(value, expected, err_msg=name)
    assert np.all(np.isfinite(sparsestmax_vjp(np.linspace(-1.0, 1.0, z.size, dtype=dtype), stages)))
    distances = [float(stage.distance[0]) for stage in stages.stages if hasattr(stage, "distance") and bool(stage.applied[0])]
    if variant == "paper" and dtype == np.float64 and not bool(stages.degenerate[0]) and min(distances, default=1.0) > 1e-6:
        best = brute_force_sparsestmax(moderate_equivalent(z), radius)
        shifted = moderate_equivalent(z)
        assert objective(p, shifted) == pytest.approx(objective(best, shifted), rel=1e-9, abs=1e-12)


EDGE_CASES = [
    # (logits, dtype, radius, expected, why): the expected outputs follow from the definition by hand.
    ([9e307, 0.0, 0.0], np.float64, 0.3, [1.0, 0.0, 0.0], "issue 10: sparsemax was [0, 0, 0], and SSN mixed with zero ratios"),
    ([2e38, 0.0, 0.0], np.float32, 0.3, [1.0, 0.0, 0.0], "issue 10, float32"),
    ([np.finfo(np.float64).max, -np.finfo(np.float64).max], np.float64, 0.3, [1.0, 0.0], "z - max z overflows"),
    ([-np.finfo(np.float32).max, np.finfo(np.float32).max], np.float32, 0.3, [0.0, 1.0], "z - max z overflows, float32"),
    ([-np.finfo(np.float64).max] * 3, np.float64, 0.3, [1 / 3] * 3, "a three-way tie at -finfo.max: the centre (degenerate)"),
    ([-np.finfo(np.float64).max] * 3, np.float64, 0.9, [1.0, 0.0, 0.0], "the same beyond the largest radius: the first index"),
    ([np.finfo(np.float32).max] * 2 + [-np.finfo(np.float32).max], np.float32, 0.3, [0.5, 0.5, 0.0],
     "a tie at finfo.max: the edge midpoint (paper: 0.41 from the centre, outside the ball; official: degenerate)"),
    ([1e308, 1e-308, -1e-308], np.float64, 0.5, [1.0, 0.0, 0.0], "huge and tiny mixed"),
    ([np.finfo(np.float64).smallest_subnormal, 0.0, -np.finfo(np.float64).smallest_subnormal], np.float64, 0.3, [1 / 3] * 3,
     "subnormal differences: a tie to rounding, the centre"),
]  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("logits", "dtype", "radius", "expected", "why"), EDGE_CASES, ids=[case[4] for case in EDGE_CASES])
def test_sparsestmax_is_exact_at_the_edges_of_the_float_range(variant, logits, dtype, radius, expected, why):
    z = np.asarray(logits, dtype=dtype)
    p, stages = sparsestmax_forward(z, radius, variant=variant)
    assert p.dtype == dtype
    np.testing.assert_allclose(p, expected, rtol=0, atol=float(np.finfo(dtype).eps), err_msg=why)
    g = np.linspace(-1.0, 2.0, z.size, dtype=dtype)
    assert np.all(np.isfinite(sparsestmax_vjp(g, stages))) and np.all(np.isfinite(sparsestmax_jvp(g, stages))), why


def test_the_ssn_ratio_function_of_huge_logits_is_a_vertex_not_zeros():
    """Issue 10: SSN mixed its statistics with the zero ratios sparsemax returned for [9e307, 0, 0]."""
    ratios, _ = SparsestMax(0.3, "official").forward(np.array([9e307, 0.0, 0.0]))
    np.testing.assert_array_equal(ratios, [1.0, 0.0, 0.0])


# --------------------------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------------------------

STAGE_CASES = [
    # (K, radius, sphere steps)
    (2, 0.2, 0),
    (2, 0.5, 1),
    (3, 0.3, 0),
    (3, 0.3, 1),
    (3, 0.5, 2),
    (4, 0.45, 1),
    (4, 0.6, 2),
    (5, 0.75, 3),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("K", "radius", "steps"), STAGE_CASES)
def test_sparsestmax_gradient_matches_finite_differences_and_jvp(rng, variant, K, radius, steps):
    z = logits_with_sphere_steps(rng, (3, K), radius, variant, steps)
    result = refnorm.gradcheck(
        lambda logits: sparsestmax_linearize(logits, radius=radius, variant=variant), (z,), names=("logits",), directions=4, seed=2
    )
    assert result.passed, result.summary()
    assert result["logits"].checked == 4
    assert result["logits"].adjoint_error <= 1e-12


@pytest.mark.parametrize("variant", VARIANTS)
def test_vjp_and_jvp_are_adjoint_on_a_large_mixed_batch(rng, variant):
    """<v, J u> computed with the JVP equals <J^T v, u> computed with the VJP, to rounding."""
    z = rng.standard_normal((2000, 4)) * rng.choice([0.3, 1.0, 3.0], size=(2000, 1))
    _, stages = sparsestmax_forward(z, 0.55, variant=variant)
    assert set(np.unique(sphere_steps(stages))) == {0, 1, 2, 3}
    u, v = rng.standard_normal((2, 2000, 4))
    jvp_side = np.sum(v * sparsestmax_jvp(u, stages), axis=-1)
    vjp_side = np.sum(sparsestmax_vjp(v, stages) * u, axis=-1)
    gains = np.linalg.norm(sparsestmax_jvp(u, stages), axis=-1) * np.linalg.norm(v, axis=-1) + 1.0
    assert np.all(np.abs(jvp_side - vjp_side) <= 1e-13 * gains)


@pytest.mark.parametrize(
    ("z", "radius", "variant", "why"),
    [
        ([0.4, 0.1, -0.2], 0.5, "paper", "two sphere steps for K = 3: the output is on an edge"),
        ([0.1262, -0.6546, 0.1083], 0.3672, "official", "official sphere about an edge midpoint"),
        ([0.6, 0.1], 0.5, "paper", "K = 2: the sphere is two points"),
        ([0.6, 0.1], 0.5, "official", "K = 2: the sphere is two points"),
        ([2.0, 0.1, -1.0], 0.2, "paper", "sparsemax vertex"),
        ([0.4, 0.1, -0.2], 0.9, "official", "radius beyond the largest distance"),
    ],
)
def test_outputs_on_an_edge_or_a_vertex_have_exactly_zero_gradient(rng, z, radius, variant, why):
    z = np.array([z])
    p, stages = sparsestmax_forward(z, radius, variant=variant)
    assert np.sum(p > 0) <= 2, why
    g = rng.standard_normal(z.shape)
    assert np.all(sparsestmax_vjp(g, stages) == 0.0), why
    assert np.all(sparsestmax_jvp(g, stages) == 0.0), why


def test_outputs_inside_a_face_of_three_or_more_have_nonzero_gradient(rng):
    """The sphere inside a face with |S| >= 3 has a non-trivial tangent space (a test that fails if
    the VJP returned zeros): one sphere step for K = 3, two for K = 4 ending inside a triangle."""
    for K, radius, steps in ((3, 0.3, 1), (4, 0.6, 2)):
        z = logits_with_sphere_steps(rng, (40, K), radius, "paper", steps)
        p, stages = sparsestmax_forward(z, radius)
        in_big_face = np.sum(p > 0, axis=-1) >= 3
        assert np.sum(in_big_face) >= 5
        gradient = sparsestmax_vjp(rng.standard_normal(z.shape), stages)
        assert np.all(np.max(np.abs(gradient[in_big_face]), axis=-1) > 1e-3)
        assert np.all(gradient[~in_big_face] == 0.0)


def test_a_direction_that_changes_a_support_is_reported_as_skipped():
    """z3 sits exactly at the sparsemax threshold (tau = 0): every direction moves it in or out."""
    z = np.array([[0.6, 0.4, 0.0]])
    result = refnorm.gradcheck(lambda logits: sparsestmax_linearize(logits, radius=0.0), (z,), names=("logits",), directions=4)
    assert result["logits"].skipped == 4
    assert not result.passed  # nothing was checked: never reported as passed


def test_a_direction_that_changes_the_stage_count_is_reported_as_skipped(rng):
    """The radius equals the distance of sparsemax from the centre: 0 sphere steps on one side of
    every direction, 1 on the other."""
    z = 0.3 * rng.standard_normal((1, 4))
    radius = float(distance_from_centre(sparsemax(z))[0])
    result = refnorm.gradcheck(lambda logits: sparsestmax_linearize(logits, radius=radius), (z,), names=("logits",), directions=4)
    assert result["logits"].skipped == 4
    assert not result.passed


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_direction_that_moves_the_output_to_the_other_end_of_an_edge_is_reported_as_skipped(variant):
    """z1 and z3 differ by 1e-9: the output sits on the edge {1, 3} at distance rho from its
    midpoint, on the side of the larger logit. Every direction swaps the order within the stencil
    and the output jumps to the other point, with every support unchanged; the sign of the sphere
    direction in the active set catches it."""
    z = np.array([[0.5, -1.0, 0.5 + 1e-9]])
    p, stages = sparsestmax_forward(z, 0.6, variant=variant)
    assert p[0, 1] == 0.0 and p[0, 2] > 0.8
    result = refnorm.gradcheck(lambda logits: sparsestmax_linearize(logits, radius=0.6, variant=variant), (z,), names=("logits",), directions=4)
    assert result["logits"].skipped == 4
    assert not result.passed


# --------------------------------------------------------------------------------------------
# Batches, backends, dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_batch_of_100000_vectors_runs_in_one_call(rng, variant):
    z = rng.standard_normal((100_000, 3))
    radius = 0.5
    p, stages = sparsestmax_forward(z, radius, variant=variant)
    assert p.shape == z.shape
    assert np.all(p >= 0)
    np.testing.assert_allclose(np.sum(p, axis=-1), 1.0, rtol=0, atol=1e-14)
    assert np.all(distance_from_centre(p) >= radius - 1e-13)
    for row in rng.choice(100_000, size=100, replace=False):
        expected = brute_force_sparsestmax(z[row], radius) if variant == "paper" else official_algorithm_sparsestmax(z[row], radius)
        np.testing.assert_allclose(p[row], expected, atol=1e-10)


def test_leading_batch_axes_are_independent(rng):
    z = rng.standard_normal((3, 4, 5))
    p, stages = sparsestmax_forward(z, 0.6)
    flat = sparsestmax(np.reshape(z, (12, 5)), 0.6)
    np.testing.assert_array_equal(np.reshape(p, (12, 5)), flat)
    assert sphere_steps(stages).shape == (3, 4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sparsestmax_runs_on_every_backend(backend, rng, variant):
    host = rng.standard_normal((4, 5, 3)) * rng.choice([0.3, 1.0, 3.0], size=(4, 5, 1))
    g = rng.standard_normal(host.shape)
    expected, expected_stages = sparsestmax_forward(host, 0.45, variant=variant)
    p, stages = sparsestmax_forward(backend.asarray(host), 0.45, variant=variant)
    np.testing.assert_allclose(backend.to_numpy(p), expected, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(backend.to_numpy(stages.sphere_steps()), sphere_steps(expected_stages))
    np.testing.assert_allclose(backend.to_numpy(sparsestmax_vjp(backend.asarray(g), stages)), sparsestmax_vjp(g, expected_stages), atol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(sparsestmax_jvp(backend.asarray(g), stages)), sparsestmax_jvp(g, expected_stages), atol=1e-13)
    if backend.device is not None:
        assert refnorm._xp.device(p) == backend.device


def test_sparsestmax_gradient_check_runs_through_every_backend(backend, rng):
    backend.skip_if_lazy("the gradient checker evaluates the op at ~100 points, each a graph build and a compute (a minute in all)")
    z = backend.asarray(logits_with_sphere_steps(rng, (2, 4), 0.6, "paper", 2))
    result = refnorm.gradcheck(lambda logits: sparsestmax_linearize(logits, radius=0.6), (z,), names=("logits",), directions=2)
    assert result.passed, result.summary()


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_is_computed_in_float32(backend, rng, variant):
    host = logits_with_sphere_steps(rng, (6, 4), 0.45, variant, 1)
    p, stages = sparsestmax_forward(backend.asarray(host, backend.xp.float32), 0.45, variant=variant)
    assert p.dtype == backend.xp.float32
    for name, array in stages.arrays().items():
        assert array.dtype in (backend.xp.float32, backend.xp.bool, backend.xp.int64), name
    np.testing.assert_allclose(backend.to_numpy(p), sparsestmax(host, 0.45, variant=variant), atol=1e-5)


# --------------------------------------------------------------------------------------------
# The speed-only layout (refnorm/ops/_sparsestmax_fast.py) runs the same code to the same bits
# --------------------------------------------------------------------------------------------


def _logit_batches(rng, K, dtype):
    """Rows of every kind for one K: random at four scales, ties (top, below the top, all), one-hot,
    near-ties, huge offsets and the extremes of the float range."""
    big = float(np.finfo(dtype).max)
    rows = [rng.standard_normal((300, K)) * rng.choice([0.05, 0.3, 1.0, 3.0], size=(300, 1))]
    rows.append(np.round(rng.standard_normal((100, K)), 1))  # many ties
    rows.append(np.eye(K)[rng.integers(0, K, 50)])
    rows.append(np.ones((10, K)))
    rows.append(1e-12 * rng.standard_normal((20, K)))
    rows.append(1e8 + rng.standard_normal((20, K)))
    rows.append(rng.choice([big, -big, 0.0, 1.0], size=(50, K)))
    return np.concatenate(rows).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("K", [2, 3, 4, 5, 7])
def test_the_fast_layout_gives_the_reference_results_bit_for_bit(rng, K, dtype):
    """Outputs, every stage record, the active set, the VJP and the JVP: equal bit for bit (``==``,
    so a zero's sign may differ), both variants, radii from 0 to beyond the largest, ~550 rows."""
    import array_api_compat.numpy as xp

    z = _logit_batches(rng, K, dtype)
    g, t = rng.standard_normal((2, *z.shape)).astype(dtype)
    for variant in VARIANTS:
        for radius in (0.0, 0.2, 0.45, 0.6, 0.75, max_radius(K)):
            expected, stages = _sparsestmax_stages(z, radius, variant, xp)
            fast, fast_stages = _sparsestmax_fast.run(_sparsestmax_stages, z, radius, variant, xp=xp)
            where = f"K={K}, {variant}, radius {radius}"
            np.testing.assert_array_equal(fast, expected, err_msg=where)
            for (name, value), (_, reference) in zip(fast_stages.arrays().items(), stages.arrays().items(), strict=True):
                np.testing.assert_array_equal(value, reference, err_msg=f"{where}: {name}")
            np.testing.assert_equal(fast_stages.active_set(), stages.active_set(), err_msg=where)
            np.testing.assert_array_equal(_sparsestmax_fast.run(_stages_vjp, g, fast_stages, xp=xp), _stages_vjp(g, stages, xp), err_msg=where)
            np.testing.assert_array_equal(_sparsestmax_fast.run(_stages_jvp, t, fast_stages, xp=xp), _stages_jvp(t, stages, xp), err_msg=where)


def test_large_numpy_batches_of_short_vectors_take_the_fast_layout_and_others_do_not():
    """What the public functions dispatch on: the shape and the library, never the values."""
    import array_api_compat.numpy as xp

    assert _sparsestmax_fast.applies(np.zeros((_sparsestmax_fast.LARGE_BATCH, 3)), xp)
    assert _sparsestmax_fast.applies(np.zeros((16, 16, 7)), xp)
    assert not _sparsestmax_fast.applies(np.zeros((_sparsestmax_fast.LARGE_BATCH - 1, 3)), xp)
    assert not _sparsestmax_fast.applies(np.zeros((1000, 8)), xp)
    assert not _sparsestmax_fast.applies(np.zeros(3), xp)


def test_the_fast_layout_keeps_every_record_simplex_axis_major(rng):
    """The layout is the whole point of the fast path: a record in the usual layout would make every
    later reduction run one row at a time (the values would still be right)."""
    z = rng.standard_normal((2000, 3))
    ratios, stages = sparsestmax_forward(z, 0.5, variant="official")
    assert ratios.flags.c_contiguous  # given back in the usual layout
    for name, value in stages.arrays().items():
        if value.ndim == 2 and value.shape[-1] == 3:
            assert value.strides[0] < value.strides[1], name
    assert sparsestmax_vjp(z, stages).flags.c_contiguous


def test_every_array_the_fast_layout_selects_or_sorts_is_simplex_axis_major(rng):
    """A single ``(..., K)`` intermediate in the usual layout (a comparison of two arrays that are
    not per-position, say) silently makes the reductions after it run row by row; this catches it
    where the arrays pass through the namespace."""
    import array_api_compat.numpy as xp

    def check(*arrays):
        for a in arrays:
            if isinstance(a, np.ndarray) and a.ndim == 2 and a.shape[-1] == 3:
                assert a.strides[0] < a.strides[1], f"an array in the usual layout: strides {a.strides}"

    class Checked(_sparsestmax_fast.SimplexAxisMajor):
        def where(self, condition, x1, x2, /):
            check(condition, x1, x2)
            result = super().where(condition, x1, x2)
            check(result)
            return result

        def sort(self, x, /, **options):
            check(x)
            return super().sort(x, **options)

        def cumulative_sum(self, x, /, **options):
            check(x)
            return super().cumulative_sum(x, **options)

    z, g = rng.standard_normal((2, 500, 3))
    for variant in VARIANTS:
        for radius in (0.0, 0.5, 0.9):
            major = _sparsestmax_fast.to_simplex_axis_major(z, xp)
            _, stages = _sparsestmax_stages(major, radius, variant, Checked(xp))
            _stages_vjp(_sparsestmax_fast.to_simplex_axis_major(g, xp), stages, Checked(xp))
            _stages_jvp(_sparsestmax_fast.to_simplex_axis_major(g, xp), stages, Checked(xp))


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logits", "radius", "variant", "error", "match"),
    [
        (np.zeros((2, 3)), -0.1, "paper", ValueError, "radius must be a finite number >= 0"),
        (np.zeros((2, 3)), math.nan, "paper", ValueError, "radius"),
        (np.zeros((2, 3)), math.inf, "paper", ValueError, "radius"),
        (np.zeros((2, 3)), np.array(0.5), "paper", TypeError, "radius must be a Python number"),
        (np.zeros((2, 3)), True, "paper", TypeError, "radius"),
        (np.zeros((2, 1)), 0.5, "paper", ValueError, "K >= 2"),
        (np.zeros(()), 0.5, "paper", ValueError, "K >= 2"),
        (np.zeros((2, 3), dtype=np.int64), 0.5, "paper", TypeError, "floating"),
        (np.array([[0.0, np.nan, 1.0]]), 0.5, "paper", ValueError, "NaN"),
        (np.zeros((2, 3)), 0.5, "definition", ValueError, "unknown variant 'definition'"),
    ],
)
def test_sparsestmax_rejects_bad_input(logits, radius, variant, error, match):
    with pytest.raises(error, match=match):
        sparsestmax_forward(logits, radius, variant=variant)


def test_the_ratio_function_validates_when_constructed():
    with pytest.raises(ValueError, match="radius"):
        SparsestMax(-1.0)
    with pytest.raises(ValueError, match="variant"):
        SparsestMax(0.5, "official-ish")
    assert SparsestMax(1, "official") == SparsestMax(1.0, "official")


@pytest.fixture(scope="module")
def stages_of_a_batch():
    return sparsestmax_forward(np.array([[0.4, 0.1, -0.2], [0.3, 0.2, 0.1]]), 0.5)[1]


@pytest.mark.parametrize("derivative", [sparsestmax_vjp, sparsestmax_jvp], ids=["vjp", "jvp"])
@pytest.mark.parametrize(
    ("vector", "error", "match"),
    [
        (np.asarray(1.0), ValueError, r"has shape \(\), expected the shape of the forward's ratios = \(2, 3\)"),
        (np.ones(3), ValueError, r"has shape \(3,\), expected the shape of the forward's ratios = \(2, 3\)"),
        (np.ones((4, 2, 3)), ValueError, "expected the shape of the forward's ratios"),
        (np.array([[0.0, np.nan, 1.0], [0.0, 0.0, 0.0]]), ValueError, "contains NaN or infinity"),
        (np.array([[0.0, -np.inf, 1.0], [0.0, 0.0, 0.0]]), ValueError, "contains NaN or infinity"),
        (np.ones((2, 3), dtype=np.float32), TypeError, "has dtype float32, expected float64"),
        (np.ones((2, 3), dtype=np.int64), TypeError, "expected a real floating dtype"),
        (np.ones((2, 3), dtype=np.complex128), TypeError, "expected a real floating dtype"),
        ([[1.0, 0.0, 0.0]] * 2, TypeError, "must be an array"),
        (None, TypeError, "must be an array"),
    ],
)
def test_sparsestmax_derivatives_reject_a_bad_cotangent_or_tangent_naming_it(derivative, stages_of_a_batch, vector, error, match):
    name = "dratios" if derivative is sparsestmax_vjp else "dlogits"
    with pytest.raises(error, match=match) as raised:
        derivative(vector, stages_of_a_batch)
    assert str(raised.value).startswith(name) or f"{name} " in str(raised.value)


@pytest.mark.parametrize("stages", [None, (), np.zeros((2, 3)), "stages"])
@pytest.mark.parametrize("derivative", [sparsestmax_vjp, sparsestmax_jvp], ids=["vjp", "jvp"])
def test_sparsestmax_derivatives_need_the_recorded_stages(derivative, stages):
    with pytest.raises(TypeError, match="stages must be the SparsestMaxStages that sparsestmax_forward returned"):
        derivative(np.ones((2, 3)), stages)


@pytest.mark.parametrize("logits", [np.ones(3, dtype=np.complex128), np.ones(3, dtype=bool), [0.1, 0.2, 0.3], 0.5, None])
def test_sparsestmax_rejects_non_floating_logits_with_a_type_error_naming_them(logits):
    with pytest.raises(TypeError, match="^logits "):
        sparsestmax_forward(logits, 0.3)
