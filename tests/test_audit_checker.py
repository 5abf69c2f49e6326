"""Audit, class 2 (the checker): wrong derivatives that passed ``refnorm.gradcheck`` before.

A pullback, pushforward or hvp that updates its cotangent or tangents in place moved the checker's
own directions: ``v *= 2`` followed by ``return (2 v,)`` (twice the right gradient) doubled the
numeric side ``d/dt <v, f(a + t u)>`` as well, and passed. The checker now hands the op copies and
fails a derivative that changes them.
"""

from __future__ import annotations

import numpy as np
import pytest

from refnorm import Linearized, gradcheck

MODES = ("directional", "jacobian")


@pytest.fixture
def point() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((3, 4))


def _doubling_pullback(v):
    """Twice the right gradient of ``2 a``, hidden by doubling the cotangent in place."""
    v *= 2.0
    return (2.0 * v,)


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_pullback_that_doubles_its_cotangent_in_place_fails(point, mode):
    result = gradcheck(lambda a: Linearized(out=2.0 * a, pullback=_doubling_pullback), [point], mode=mode)
    assert not result.passed
    assert "modified its cotangent in place" in result.summary()


@pytest.mark.parametrize("mode", MODES)
def test_a_right_pullback_that_mutates_its_cotangent_fails(point, mode):
    """Mutating an input is a defect of its own (no input is ever mutated), even with a right value."""

    def pullback(v):
        v *= 2.0
        return (v,)

    result = gradcheck(lambda a: Linearized(out=2.0 * a, pullback=pullback), [point], mode=mode)
    assert not result.passed
    assert "modified its cotangent in place" in result.summary()


def test_a_pushforward_that_doubles_its_tangent_cannot_vouch_for_a_doubled_pullback(point):
    """A wrong pullback (4 v for 2 a) beside a pushforward that doubles ``u`` in place: the adjoint
    test and the JVP's finite differences agreed with the wrong pullback."""

    def pushforward(u):
        u *= 2.0
        return 2.0 * u

    result = gradcheck(lambda a: Linearized(out=2.0 * a, pullback=lambda v: (4.0 * v,), pushforward=pushforward), [point])
    assert not result.passed
    assert "modified its tangents in place" in result.summary()


def test_an_hvp_that_mutates_its_tangents_fails(point):
    """out = a^3 / 3: pullback v a^2, hvp 2 v a t; this hvp doubles t in place and halves its answer."""

    def fun(a):
        def hvp(v, t):
            t *= 2.0
            return (v * a * t,)

        return Linearized(out=a**3 / 3.0, pullback=lambda v: (v * a * a,), hvp=hvp)

    result = gradcheck(fun, [point], order=2)
    assert not result.passed
    assert "modified its cotangent or tangents in place" in result.summary()


def test_the_same_derivatives_without_mutation_pass(point):
    """The control: the right pullback, pushforward and hvp of the functions above pass."""
    assert gradcheck(lambda a: Linearized(out=2.0 * a, pullback=lambda v: (2.0 * v,), pushforward=lambda u: 2.0 * u), [point]).passed
    cube = lambda a: Linearized(out=a**3 / 3.0, pullback=lambda v: (v * a * a,), hvp=lambda v, t: (2.0 * v * a * t,))  # noqa: E731
    assert gradcheck(cube, [point], order=2).passed


# --------------------------------------------------------------------------------------------
# None for an argument the output depends on
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_none_gradient_for_an_argument_the_output_depends_on_fails(point, mode):
    """``out = a * b`` with a pullback answering ``(v b, None)``: by default only ``a`` was checked,
    and the verdict passed although the derivative along ``b`` is missing."""
    b = np.random.default_rng(4).standard_normal(point.shape)
    result = gradcheck(lambda a, b: Linearized(out=a * b, pullback=lambda v: (v * b, None)), [point, b], names=["a", "b"], mode=mode)
    assert not result.passed
    assert result["a"].passed
    assert "no gradient (None) for b, yet the output depends on it" in result.summary()


def test_a_none_gradient_for_an_argument_the_output_ignores_passes(point):
    """The control: None for an argument the output does not depend on is a true claim."""
    b = np.random.default_rng(4).standard_normal(point.shape)
    result = gradcheck(lambda a, b: Linearized(out=2.0 * a, pullback=lambda v: (2.0 * v, None)), [point, b], names=["a", "b"])
    assert result.passed and [r.name for r in result.arguments] == ["a"]


def test_wrt_leaves_an_argument_out_on_purpose(point):
    """Naming the arguments to check is the caller's choice: nothing is claimed about the others."""
    b = np.random.default_rng(4).standard_normal(point.shape)
    result = gradcheck(lambda a, b: Linearized(out=a * b, pullback=lambda v: (v * b, None)), [point, b], names=["a", "b"], wrt=["a"])
    assert result.passed
