"""The gradient checker cannot be fooled: a table of wrong backwards, each of which must fail in
both modes (directional and Jacobian) on Switchable Normalization, sparsemax and a plain function,
while the right backward passes in both modes (so the table cannot pass by failing everything).

Each wrong backward is the right one with one planted defect: non-finite values, small relative
errors (a factor 1 + 1e-3), structural mistakes (a missing, swapped, transposed or misshapen
gradient) and a wrong JVP beside a right VJP. Every function here has a JVP (SN's is assembled
from its exact Jacobian), so the adjoint test runs in every row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import refnorm
from refnorm import Linearized, sparsemax_linearize, switch_norm_linearize
from refnorm.ops.switchnorm import SWITCH_NORM_ARGUMENTS

MODES = ("directional", "jacobian")


# --------------------------------------------------------------------------------------------
# The three functions, with right backwards and JVPs
# --------------------------------------------------------------------------------------------


def _exact_jvp(out: np.ndarray, pullback: Callable, shapes: list[tuple[int, ...]]) -> Callable:
    """The JVP of a function with one output array, from its exact Jacobian (one pullback per
    output element), built on first use: J_j t_j summed over the arguments."""
    jacobians: list[np.ndarray] = []

    def pushforward(*tangents):
        if not jacobians:
            rows = []
            for row in range(out.size):
                cotangent = np.zeros(out.size)
                cotangent[row] = 1.0
                rows.append(pullback(cotangent.reshape(out.shape)))
            jacobians.extend(np.stack([np.asarray(r[j]).reshape(-1) for r in rows]) for j in range(len(shapes)))
        return sum(J @ np.asarray(t).reshape(-1) for J, t in zip(jacobians, tangents, strict=True)).reshape(out.shape)

    return pushforward


def sn(*args):
    """Switchable Normalization (training, paper convention) with a JVP from its exact Jacobian."""
    linearized = switch_norm_linearize(*args)
    return linearized._replace(pushforward=_exact_jvp(linearized.out, linearized.pullback, [a.shape for a in args]))


def plain(a, b):
    """out = tanh(a @ b) + a * b, hand-differentiated."""
    t = np.tanh(a @ b)
    sech2 = 1.0 - t * t

    def pullback(v):
        w = v * sech2
        return (w @ b.T + v * b, a.T @ w + v * a)

    def pushforward(da, db):
        return sech2 * (da @ b + a @ db) + da * b + a * db

    return Linearized(out=t + a * b, pullback=pullback, pushforward=pushforward)


def _points() -> dict[str, tuple[Callable, tuple[np.ndarray, ...], tuple[str, ...], tuple[str, str] | None]]:
    """``{name: (fun, point, argument names, two arguments of equal shape or None)}``."""
    rng = np.random.default_rng(20240611)
    sn_point = (rng.standard_normal((2, 3, 2, 2)), 1 + 0.5 * rng.standard_normal(3), rng.standard_normal(3),
                rng.standard_normal(3), rng.standard_normal(3))  # fmt: skip
    # Logits whose sparsemax support is two of three entries per row, with a margin of 0.3 to
    # every kink, so no finite-difference stencil crosses one.
    logits = np.array([[1.0, 0.6, -1.2], [-0.4, 0.9, 0.35], [0.2, -1.1, 0.55]])
    return {
        "switch_norm": (sn, sn_point, SWITCH_NORM_ARGUMENTS, ("gamma", "beta")),
        "sparsemax": (sparsemax_linearize, (logits,), ("logits",), None),
        "plain": (plain, (rng.standard_normal((3, 3)), rng.standard_normal((3, 3))), ("a", "b"), ("a", "b")),
    }


POINTS = _points()


# --------------------------------------------------------------------------------------------
# The wrong backwards
# --------------------------------------------------------------------------------------------


def _largest_zeroed(g: np.ndarray) -> np.ndarray:
    g = np.array(g)
    g.reshape(-1)[int(np.argmax(np.abs(g)))] = 0.0
    return g


def _one(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def plant(g):
        g = np.array(g)
        g.reshape(-1)[g.size // 2] = value
        return g

    return plant


ELEMENTWISE: dict[str, Callable[[np.ndarray], Any]] = {
    "nan everywhere": lambda g: np.full(np.shape(g), np.nan),
    "one nan": _one(np.nan),
    "one inf": _one(np.inf),
    "one -inf": _one(-np.inf),
    "scaled by 1 + 1e-3": lambda g: np.asarray(g) * (1 + 1e-3),
    "largest element zeroed": _largest_zeroed,
    "transposed (last two axes)": lambda g: np.swapaxes(np.asarray(g), -1, -2).copy(),
    "sign flipped": lambda g: -np.asarray(g),
    "constant offset": lambda g: np.asarray(g) + 1e-3 * max(float(np.max(np.abs(g))), 1.0),
    "extra axis (wrong shape)": lambda g: np.asarray(g)[..., None],
    "flattened (wrong shape)": lambda g: np.asarray(g).reshape(-1),
    "float32": lambda g: np.asarray(g, dtype=np.float32),
    "int64": lambda g: np.asarray(g).astype(np.int64),
    "complex": lambda g: np.asarray(g) + 0j,
    "python list": lambda g: np.asarray(g).tolist(),
    "python float": lambda g: float(np.sum(g)),
}
"""A defect planted in the gradient of one argument (the target)."""


def _targeted(fun: Callable, index: int, plant: Callable) -> Callable:
    def wrong(*args):
        right = fun(*args)

        def pullback(v):
            grads = list(right.pullback(v))
            grads[index] = plant(grads[index])
            return tuple(grads)

        return right._replace(pullback=pullback)

    return wrong


def _whole(fun: Callable, make: Callable[[Linearized], Linearized]) -> Callable:
    return lambda *args: make(fun(*args))


def _none_after_first(fun: Callable, index: int) -> Callable:
    """A pullback that returns the target's gradient once, then None (stateful, as a cache bug is)."""

    def wrong(*args):
        right = fun(*args)
        calls = []

        def pullback(v):
            calls.append(1)
            grads = list(right.pullback(v))
            if len(calls) > 1:
                grads[index] = None
            return tuple(grads)

        return right._replace(pullback=pullback)

    return wrong


def _raises(v):
    raise RuntimeError("backward kernel not implemented for this layout")


def _wrong_backwards(function: str) -> list[tuple[str, Callable, set[str]]]:
    """``(defect, wrong fun, the arguments that must fail)`` for one of :data:`POINTS`."""
    fun, point, names, pair = POINTS[function]
    target = names[0]
    every = set(names)
    table = [(f"{defect} ({target})", _targeted(fun, 0, plant), {target}) for defect, plant in ELEMENTWISE.items()]
    table += [
        ("missing argument (fewer gradients)", _whole(fun, lambda r: r._replace(pullback=lambda v: tuple(r.pullback(v))[:-1])), every),
        ("an extra gradient", _whole(fun, lambda r: r._replace(pullback=lambda v: (*r.pullback(v), np.zeros(1)))), every),
        ("a bare array instead of a tuple", _whole(fun, lambda r: r._replace(pullback=lambda v: np.asarray(r.pullback(v)[0]))), every),
        ("the pullback raises", _whole(fun, lambda r: r._replace(pullback=_raises)), every),
        (f"None for {target} after the first call", _none_after_first(fun, 0), {target}),
        ("wrong JVP (scaled by 1 + 1e-6), right VJP",
         _whole(fun, lambda r: r._replace(pushforward=lambda *t: np.asarray(r.pushforward(*t)) * (1 + 1e-6))), every),
        ("JVP returns NaN, right VJP", _whole(fun, lambda r: r._replace(pushforward=lambda *t: np.full(np.shape(r.out), np.nan))), every),
        ("JVP of the wrong shape, right VJP",
         _whole(fun, lambda r: r._replace(pushforward=lambda *t: np.asarray(r.pushforward(*t)).reshape(-1))), every),
        ("the JVP raises, right VJP", _whole(fun, lambda r: r._replace(pushforward=lambda *t: _raises(t))), every),
    ]  # fmt: skip
    if pair is not None:
        i, j = names.index(pair[0]), names.index(pair[1])

        def swapped(r):
            def pullback(v):
                grads = list(r.pullback(v))
                grads[i], grads[j] = grads[j], grads[i]
                return tuple(grads)

            return r._replace(pullback=pullback)

        table.append((f"gradients of {pair[0]} and {pair[1]} swapped", _whole(fun, swapped), set(pair)))
    return table


TABLE = [(function, defect, wrong, failing) for function in POINTS for defect, wrong, failing in _wrong_backwards(function)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("function", "defect", "wrong", "failing"), TABLE, ids=[f"{f}: {d}" for f, d, _, _ in TABLE])
def test_every_wrong_backward_fails(function, defect, wrong, failing, mode):
    _, point, names, _ = POINTS[function]
    result = refnorm.gradcheck(wrong, point, names=names, mode=mode)
    assert not result.passed, f"{defect} passed in {mode} mode:\n{result.summary()}"
    for name in failing:
        assert not result[name].passed, f"{defect}: {name} passed in {mode} mode:\n{result.summary()}"
        assert result[name].failures, "a failed argument says why"
    for name in set(names) - failing:
        assert result[name].passed, f"{defect} failed {name}, whose gradient is right:\n{result.summary()}"
    with pytest.raises(refnorm.oracle.gradient_check.GradcheckError, match="gradient check failed"):
        refnorm.assert_gradcheck(wrong, point, names=names, mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("function", list(POINTS))
def test_the_right_backward_passes(function, mode):
    fun, point, names, _ = POINTS[function]
    result = refnorm.gradcheck(fun, point, names=names, mode=mode)
    assert result.passed, result.summary()
    assert all(argument.checked > 0 and argument.skipped == 0 for argument in result.arguments)
    assert all(argument.adjoint_error is not None and argument.adjoint_error < 1e-12 for argument in result.arguments)
    assert result.max_abs_error < 1e-6


def test_the_table_covers_every_defect_on_every_function():
    defects = {function: {d for f, d, _, _ in TABLE if f == function} for function in POINTS}
    assert all(len(found) >= len(ELEMENTWISE) + 9 for found in defects.values())
    assert any("swapped" in d for d in defects["switch_norm"]) and any("swapped" in d for d in defects["plain"])


# --------------------------------------------------------------------------------------------
# Non-finite values where the op, not the backward, is at fault
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_non_finite_output_at_the_point_fails_every_argument(mode):
    def f(x):
        return Linearized(out=np.log(x - 1.0), pullback=lambda v: (v / (x - 1.0),))

    with np.errstate(all="ignore"):
        result = refnorm.gradcheck(f, [np.array([2.0, 1.0, 3.0])], names=["x"], mode=mode)
    assert not result.passed
    assert "the output at the point holds -inf at (1,)" in result["x"].failures[0]


@pytest.mark.parametrize("mode", MODES)
def test_a_function_that_is_not_finite_next_to_the_point_fails_naming_where(mode):
    """sqrt at 1e-9 with a step that reaches below 0: NaN in the finite differences, never a pass."""

    def f(x):
        with np.errstate(invalid="ignore"):
            return Linearized(out=np.sqrt(x), pullback=lambda v: (0.5 * v / np.sqrt(x),))

    result = refnorm.gradcheck(f, [np.array([1e-9, 4.0])], names=["x"], mode=mode, step=1.0)
    assert not result.passed
    failure = result["x"].failures[0]
    assert "finite-difference derivative is nan" in failure
    assert ("Jacobian entry d out(0,) / d x(0,)" in failure) if mode == "jacobian" else failure.startswith("direction 0")
    assert np.isnan(result["x"].max_abs_error) and np.isnan(result.max_abs_error)


@pytest.mark.parametrize("mode", MODES)
def test_fun_raising_next_to_the_point_fails_instead_of_raising(mode):
    def f(x):
        if np.any(x != x0):
            raise ValueError("x moved")
        return Linearized(out=2 * x, pullback=lambda v: (2 * v,))

    x0 = np.array([1.0, 2.0])
    result = refnorm.gradcheck(f, [x0], names=["x"], mode=mode)
    assert not result.passed
    assert "fun raised ValueError at a point the finite differences evaluate: x moved" in result["x"].failures[0]


def test_finite_gradients_whose_dot_product_overflows_fail():
    def f(x):
        return Linearized(out=x, pullback=lambda v: (v * 1e308,))

    result = refnorm.gradcheck(f, [np.array([1.0, 2.0, 3.0])], names=["x"])
    assert not result.passed


@pytest.mark.parametrize("mode", MODES)
def test_an_output_with_no_elements_fails(mode):
    def f(x):
        return Linearized(out=x[:0], pullback=lambda v: (np.zeros_like(x),))

    result = refnorm.gradcheck(f, [np.ones(3)], names=["x"], mode=mode)
    assert not result.passed and "the output has no elements" in result["x"].failures[0]


def test_an_argument_with_no_elements_fails():
    def f(x, k):
        return Linearized(out=2 * x + np.sum(k), pullback=lambda v: (2 * v, np.zeros(0)))

    result = refnorm.gradcheck(f, [np.ones(3), np.zeros(0)], names=["x", "k"])
    assert result["x"].passed and not result["k"].passed and not result.passed
    assert result["k"].checked == 0 and "no elements" in result["k"].failures[0]


def test_a_fun_whose_pullback_answers_nothing_usable_fails_every_argument():
    def f(x, k):
        return Linearized(out=x * k, pullback=lambda v: "gradients")

    result = refnorm.gradcheck(f, [np.ones(3), np.ones(3)], names=["x", "k"])
    assert [a.name for a in result.arguments] == ["x", "k"] and not any(a.passed for a in result.arguments)
    assert "returned a str, expected a tuple with one gradient per argument (2)" in result["x"].failures[0]


# --------------------------------------------------------------------------------------------
# The checker's own arguments
# --------------------------------------------------------------------------------------------


def _identity(x):
    return Linearized(out=x, pullback=lambda v: (v,))


X = np.array([0.5, -1.0, 2.0])

BAD_OPTIONS = [
    (dict(rtol=0.0), ValueError, "rtol must be finite and in \\(0, 1\\)"),
    (dict(rtol=-1e-7), ValueError, "rtol"),
    (dict(rtol=1.0), ValueError, "a zero gradient passes"),
    (dict(rtol=float("nan")), ValueError, "rtol"),
    (dict(rtol=float("inf")), ValueError, "rtol"),
    (dict(rtol="1e-7"), TypeError, "rtol must be a real number, got a str"),
    (dict(rtol=True), TypeError, "rtol must be a real number, got a bool"),
    (dict(atol=-1e-10), ValueError, "atol must be finite and in \\[0, inf\\)"),
    (dict(atol=float("nan")), ValueError, "atol"),
    (dict(atol=float("inf")), ValueError, "atol"),
    (dict(atol=None), TypeError, "atol must be a real number, got None"),
    (dict(step=0), ValueError, "step must be finite and in \\(0, 1\\]"),
    (dict(step=-0.01), ValueError, "step"),
    (dict(step=2.0), ValueError, "step"),
    (dict(step=float("nan")), ValueError, "step"),
    (dict(step=[0.01]), TypeError, "step must be a real number, got a list"),
    (dict(adjoint_rtol=0.0), ValueError, "adjoint_rtol"),
    (dict(adjoint_rtol=1.5), ValueError, "adjoint_rtol"),
    (dict(directions=0), ValueError, "directions must be an int >= 1"),
    (dict(directions=-2), ValueError, "directions"),
    (dict(directions=2.0), TypeError, "directions must be an int, got a float"),
    (dict(directions=True), TypeError, "directions must be an int, got a bool"),
    (dict(seed=-1), ValueError, "seed must be an int >= 0"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(seed=None), TypeError, "seed must be an int, got None"),
    (dict(mode="Jacobian"), ValueError, "unknown mode 'Jacobian'"),
    (dict(mode=None), ValueError, "unknown mode None"),
    (dict(names=["x", "y"]), ValueError, "names has 2 entries, expected one per argument \\(1\\)"),
    (dict(names="x"), TypeError, "names must be a list or tuple of strings, got a str"),
    (dict(names=[1]), TypeError, "names must hold strings only"),
    (dict(names=None, wrt=["arg0", "arg0"]), ValueError, "wrt names an argument twice"),
    (dict(names=["x"], wrt="x"), TypeError, "wrt must be a list or tuple of strings, got a str"),
    (dict(names=["x"], wrt=[]), ValueError, "wrt is empty"),
    (dict(names=["x"], wrt=["y"]), ValueError, "wrt names unknown arguments \\['y'\\]"),
]


@pytest.mark.parametrize(("options", "error", "match"), BAD_OPTIONS, ids=[repr(o) for o, _, _ in BAD_OPTIONS])
def test_every_option_is_validated(options, error, match):
    with pytest.raises(error, match=match):
        refnorm.gradcheck(_identity, [X], **options)
    with pytest.raises(error, match=match):
        refnorm.assert_gradcheck(_identity, [X], **options)


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="names names an argument twice"):
        refnorm.gradcheck(lambda a, b: Linearized(a + b, lambda v: (v, v)), [X, X], names=["x", "x"])


BAD_POINTS = [
    (X, TypeError, "args must be a list or tuple of arrays"),
    ([], ValueError, "args is empty"),
    ([[0.5, 1.0]], TypeError, "args\\[0\\] \\(arg0\\) is a list, expected an array"),
    ([1.5], TypeError, "args\\[0\\] \\(arg0\\) is a float, expected an array"),
    ([None], TypeError, "is None, expected an array"),
    ([X.astype(np.float32)], TypeError, "argument arg0 has dtype float32; gradcheck needs float64 arguments"),
    ([X.astype(np.int64)], TypeError, "gradcheck needs float64 arguments"),
    ([X + 0j], TypeError, "gradcheck needs float64 arguments"),
    ([np.array([1.0, np.nan])], ValueError, "argument arg0 holds NaN at \\(1,\\); gradcheck needs a finite point"),
    ([np.array([np.inf, 1.0])], ValueError, "argument arg0 holds inf at \\(0,\\)"),
]


@pytest.mark.parametrize(("args", "error", "match"), BAD_POINTS, ids=[m for _, _, m in BAD_POINTS])
def test_the_point_is_validated(args, error, match):
    with pytest.raises(error, match=match):
        refnorm.gradcheck(_identity, args)


def test_fun_must_be_callable_and_return_a_linearized():
    with pytest.raises(TypeError, match="fun must be callable"):
        refnorm.gradcheck(None, [X])
    with pytest.raises(TypeError, match="fun must return a refnorm.Linearized, got a tuple"):
        refnorm.gradcheck(lambda x: (x, lambda v: (v,)), [X])
    with pytest.raises(TypeError, match="pullback that is a str"):
        refnorm.gradcheck(lambda x: Linearized(x, "pullback"), [X])
    with pytest.raises(TypeError, match="fun's output has dtype int64"):
        refnorm.gradcheck(lambda x: Linearized(np.ones(3, dtype=np.int64), lambda v: (v,)), [X])
    with pytest.raises(TypeError, match="fun's output is a str, expected an array \\(or a tuple of arrays\\)"):
        refnorm.gradcheck(lambda x: Linearized("y", lambda v: (v,)), [X])
    with pytest.raises(TypeError, match="fun's output is a float, expected an array"):
        refnorm.gradcheck(lambda x: Linearized([1.0, 2.0], lambda v: (v,)), [X])


def test_an_error_of_fun_at_the_point_itself_propagates():
    def f(x):
        raise ValueError("logits contains NaN")

    with pytest.raises(ValueError, match="logits contains NaN"):
        refnorm.gradcheck(f, [X])


def test_the_inputs_are_not_mutated():
    point = [X.copy()]
    refnorm.gradcheck(_identity, point, mode="jacobian")
    refnorm.gradcheck(_identity, point)
    assert np.array_equal(point[0], X)
