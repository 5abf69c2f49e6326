"""The checker's forward-mode and second-order tests fail closed: a table of wrong JVPs and HVPs
(each must fail), the right ones pass, the kink guard skips and never passes, and the new options
are validated."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import refnorm
from refnorm import Linearized, SwitchNormGrads
from refnorm.ops.switchnorm import SWITCH_NORM_ARGUMENTS, switch_norm_forward, switch_norm_hvp, switch_norm_linearize


def _sn_point(seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((2, 4, 3, 2)), 1.0 + 0.5 * rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(3), rng.standard_normal(3)]


def _with_hvp(edit: Callable[[Callable, tuple], Callable]) -> Callable[..., Linearized]:
    """SN whose hvp is ``edit(right_hvp, point)``."""

    def fun(*args):
        right = switch_norm_linearize(*args)
        return right._replace(hvp=edit(right.hvp, args))

    return fun


def _scaled(hvp, args):
    return lambda dy, *t: tuple(h * (1 + 1e-3) for h in hvp(dy, *t))


def _element_zeroed(hvp, args):
    def wrong(dy, *t):
        x, *rest = hvp(dy, *t)
        x = x.copy()
        x.reshape(-1)[np.argmax(np.abs(x))] = 0.0
        return (x, *rest)

    return wrong


def _set(position, value):
    def edit(hvp, args):
        def wrong(dy, *t):
            parts = list(hvp(dy, *t))
            parts[position] = value(parts[position])
            return tuple(parts)

        return wrong

    return edit


def _statistics_detached(hvp, args):
    """Only the direct paths: the point's tangent of x dropped (what a double backward through a
    backward on detached statistics computes, roughly)."""
    return lambda dy, dx, *t: hvp(dy, np.zeros_like(dx), *t)


def _skew(hvp, args):
    """An antisymmetric coupling of x and gamma added: H + S with S^T = -S."""
    rng = np.random.default_rng(3)
    coupling = 1e-2 * rng.standard_normal((args[0].size, args[1].size))

    def wrong(dy, dx, dgamma, *t):
        hx, hgamma, *rest = hvp(dy, dx, dgamma, *t)
        return (hx + (coupling @ dgamma).reshape(hx.shape), hgamma - coupling.T @ dx.reshape(-1), *rest)

    return wrong


def _raises(hvp, args):
    def wrong(dy, *t):
        raise RuntimeError("no second order today")

    return wrong


WRONG_HVPS = {
    "scaled by 1 + 1e-3": (_scaled, "second order"),
    "largest element of x's zeroed": (_element_zeroed, "second order"),
    "NaN in x's": (_set(0, lambda h: np.where(np.arange(h.size).reshape(h.shape) == 5, np.nan, h)), "NaN at"),
    "inf in gamma's": (_set(1, lambda h: np.full_like(h, np.inf)), "inf at"),
    "float32 for the logits": (_set(3, lambda h: h.astype(np.float32)), "dtype float32"),
    "transposed x": (_set(0, lambda h: np.swapaxes(h, -1, -2)), "shape"),
    "None for beta, whose gradient exists": (_set(2, lambda h: None), "returned None for beta"),
    "a missing argument": (lambda hvp, args: lambda dy, *t: hvp(dy, *t)[:4], "returned 4 arrays, expected one per argument"),
    "not a tuple": (lambda hvp, args: lambda dy, *t: np.concatenate([h.reshape(-1) for h in hvp(dy, *t)]), "expected a tuple"),
    "raises": (_raises, "raised RuntimeError: no second order today"),
    "the statistics detached": (_statistics_detached, "second order"),
    "an antisymmetric part": (_skew, "not symmetric"),
    "independent of the tangent": (lambda hvp, args: lambda dy, *t: hvp(dy, *(np.ones_like(a) for a in t)), "second order"),
}


@pytest.mark.parametrize("defect", sorted(WRONG_HVPS))
def test_every_wrong_hvp_fails_the_second_order_check(defect):
    edit, message = WRONG_HVPS[defect]
    result = refnorm.gradcheck(_with_hvp(edit), _sn_point(), names=SWITCH_NORM_ARGUMENTS, order=2)
    assert not result.passed, f"{defect} passed:\n{result.summary()}"
    failures = [f for a in result.arguments for f in a.failures]
    assert any(message in f for f in failures), f"{defect}: no failure says {message!r}:\n{result.summary()}"
    for argument in result.arguments:
        assert all(d.status != "failed" for d in argument.directions), f"{defect}: the first order of {argument.name} is right"


def test_the_right_hvp_passes_with_every_check_reported():
    result = refnorm.gradcheck(switch_norm_linearize, _sn_point(), names=SWITCH_NORM_ARGUMENTS, order=2)
    assert result.passed, result.summary()
    assert result.order == 2
    for argument in result.arguments:
        assert argument.adjoint_error <= 1e-12 and argument.symmetry_error <= 1e-12
        assert len(argument.jvp) == 3 and all(r.status == "passed" for r in argument.jvp)
        # the derivative of this argument's gradient, along each of the 3 directions of every argument
        assert len(argument.hvp) == 3 * len(SWITCH_NORM_ARGUMENTS) and all(r.status == "passed" for r in argument.hvp)
    summary = result.summary()
    assert all(column in summary.splitlines()[0] for column in ("adjoint", "jvp fd", "hvp fd", "symmetry"))


def test_a_wrong_block_of_the_hessian_fails_the_argument_whose_gradient_it_differentiates():
    """A wrong derivative of gamma's gradient along x fails gamma (and the symmetry test along x),
    not the arguments whose gradients are right."""

    def fun(*args):
        right = switch_norm_linearize(*args)

        def wrong(dy, dx, dgamma, *t):
            hx, hgamma, *rest = right.hvp(dy, dx, dgamma, *t)
            return (hx, hgamma + 1e-2 * dx.reshape(dx.shape[0], dx.shape[1], -1).sum(axis=(0, 2)), *rest)

        return right._replace(hvp=wrong)

    result = refnorm.gradcheck(fun, _sn_point(), names=SWITCH_NORM_ARGUMENTS, order=2)
    assert any("the derivative of the gradient of gamma" in f for f in result["gamma"].failures)
    for name in ("beta", "mean_logits", "var_logits"):
        assert result[name].passed, result.summary()


def test_a_jvp_consistent_with_a_wrong_vjp_fails_the_jvp_finite_differences():
    """JVP and VJP both scaled by 1.001: the adjoint test cannot see it, the finite differences of the
    JVP (and of the VJP) do."""

    def fun(*args):
        right = switch_norm_linearize(*args)
        return Linearized(
            out=right.out,
            pullback=lambda dy: tuple(1.001 * g for g in right.pullback(dy)),
            pushforward=lambda *t: 1.001 * right.pushforward(*t),
        )

    result = refnorm.gradcheck(fun, _sn_point(), names=SWITCH_NORM_ARGUMENTS)
    assert all(a.adjoint_error <= 1e-12 for a in result.arguments)
    assert all(any("JVP: ||analytic - numeric||" in f for f in a.failures) for a in result.arguments), result.summary()


def test_a_nonfinite_jvp_fails_with_a_message_saying_where():
    def fun(*args):
        right = switch_norm_linearize(*args)

        def pushforward(*t):
            y = np.array(right.pushforward(*t))
            y.reshape(-1)[3] = np.nan
            return y

        return right._replace(pushforward=pushforward)

    result = refnorm.gradcheck(fun, _sn_point(), names=SWITCH_NORM_ARGUMENTS)
    assert not result.passed
    assert all(any("holds NaN at" in f for f in a.failures) for a in result.arguments)


def _square_times_abs(x: np.ndarray) -> Linearized:
    """x |x| elementwise: f' = 2|x| is continuous, f'' = 2 sign(x) jumps at 0; the active set is the sign pattern."""
    return Linearized(
        out=x * np.abs(x),
        pullback=lambda v: (2.0 * np.abs(x) * v,),
        pushforward=lambda t: 2.0 * np.abs(x) * t,
        active_set=np.sign(x),
        hvp=lambda v, t: (2.0 * np.sign(x) * v * t,),
    )


def test_the_kink_guard_skips_second_order_directions_that_cross_a_kink_and_never_passes_them():
    x = np.array([1e-12, 0.8, -0.5])  # the first entry sits on the kink of the second derivative
    result = refnorm.gradcheck(_square_times_abs, [x], names=["x"], order=2)
    argument = result["x"]
    assert argument.hvp and all(r.status == "skipped" for r in argument.hvp)
    assert not argument.passed
    assert "every second-order finite-difference direction crosses a kink" in "; ".join(argument.failures)


def test_the_kink_guard_lets_a_smooth_point_pass():
    result = refnorm.gradcheck(_square_times_abs, [np.array([0.9, 0.8, -0.5])], names=["x"], order=2)
    assert result.passed, result.summary()


@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(order=3), ValueError, "order must be 1, 2 or None"),
        (dict(order=0), ValueError, "order must be an int >= 1"),
        (dict(order="2"), TypeError, "order must be an int"),
        (dict(order=True), TypeError, "order must be an int"),
        (dict(order=2, mode="jacobian"), ValueError, "order=2 is checked in directional mode only"),
    ],
)
def test_the_order_option_is_validated(options, error, match):
    with pytest.raises(error, match=match):
        refnorm.gradcheck(switch_norm_linearize, _sn_point(), names=SWITCH_NORM_ARGUMENTS, **options)


def test_order_2_needs_an_hvp():
    def no_second_order(*args):
        return switch_norm_linearize(*args)._replace(hvp=None)

    with pytest.raises(ValueError, match="fun's Linearized has no hvp"):
        refnorm.gradcheck(no_second_order, _sn_point(), names=SWITCH_NORM_ARGUMENTS, order=2)


def test_an_hvp_that_is_not_callable_is_a_type_error():
    with pytest.raises(TypeError, match="has an hvp that is"):
        refnorm.gradcheck(lambda *a: switch_norm_linearize(*a)._replace(hvp=3), _sn_point(), names=SWITCH_NORM_ARGUMENTS)


def test_order_1_runs_no_second_order_and_order_none_every_derivative_the_op_has():
    first = refnorm.gradcheck(switch_norm_linearize, _sn_point(), names=SWITCH_NORM_ARGUMENTS, order=1)
    assert first.order == 1 and all(not a.hvp and a.symmetry_error is None and a.jvp for a in first.arguments)
    every = refnorm.gradcheck(switch_norm_linearize, _sn_point(), names=SWITCH_NORM_ARGUMENTS)
    assert every.order == 2 and all(a.hvp for a in every.arguments)


def test_the_hvp_through_the_public_function_is_what_the_linearization_returns():
    point = _sn_point()
    y, cache, _ = switch_norm_forward(*point)
    rng = np.random.default_rng(0)
    dy, tangents = rng.standard_normal(y.shape), [rng.standard_normal(a.shape) for a in point]
    for a, b in zip(switch_norm_linearize(*point).hvp(dy, *tangents), switch_norm_hvp(dy, cache, SwitchNormGrads(*tangents)), strict=True):
        np.testing.assert_array_equal(a, b)
