"""JAX arrays as a backend: every op's forward and backward under ``jax.jit``, every catalog case
equal to NumPy, and JAX's autodiff through refnorm's own forward equal to the hand-derived backward.

JAX's ``jax.vjp`` of refnorm's forward (ordinary ``jax.numpy`` code when given JAX arrays) is a third
differentiation, independent of refnorm's backward and of PyTorch's autograd
(``tests/test_interop.py``). Skipped, with the reason, when JAX is not installed
(``pip install 'refnorm[jax]'``). float64 is enabled (``jax_enable_x64``), as everywhere in the
suite. Eager JAX arrays are also the ``jax`` backend of the other tests' ``backend`` fixture.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from same_values import assert_same_to_rounding, keyed_results, ratio_derivatives, sweep

import refnorm
from refnorm.cli import main
from refnorm.oracle.catalog import OPS, Case
from refnorm.oracle.evaluation import Evaluation, evaluate_case
from refnorm.oracle.tolerances import compare, default_tolerance

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install 'refnorm[jax]')")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

AUTODIFF_RATIO = 1e-3
"""JAX's autodiff against the hand backward, JVP and HVP, as a fraction of the conformance kit's
float64 tolerance of that direction (``|a - e| <= 1e-5 + 1e-5 |e|`` for all three): within
``1e-8 (1 + |e|)``, as in the PyTorch autograd, ``torch.func.jvp`` and double-backward tests. Two
differentiations of one float64 function agree far inside it."""


def _traced(case: Case, inputs: Mapping[str, Any], cotangent: Any, tangents: tuple[Any, ...]) -> Callable[..., Any]:
    """``arguments -> (out, (intermediates, hand gradients, hand JVP, hand HVP))``: refnorm's forward at
    ``case``, its hand backward of ``cotangent``, its hand pushforward of ``tangents`` and (for an op
    with a second order, else ``None``) its hand HVP, for ``jax.vjp(..., has_aux=True)``."""
    op = OPS[case.op]

    def traced(*arguments: Any) -> Any:
        linearized, intermediates = op.forward({**inputs, **dict(zip(op.arguments, arguments, strict=True))}, case.params)
        hand = tuple(linearized.pullback(cotangent))
        jvp = linearized.pushforward(*tangents)
        hvp = tuple(linearized.hvp(cotangent, *tangents)) if linearized.hvp is not None else None
        return linearized.out, ({name: a for name, a in intermediates.items() if a is not None}, hand, jvp, hvp)

    return traced


def _forward_backward_and_autodiff(case: Case, reference: Evaluation, *, second_order: bool) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """``arguments -> (out, intermediates, hand gradients, hand JVP, hand HVP, autodiff gradients,
    autodiff JVP, autodiff HVP)`` at ``case`` with the reference's upstream gradient and tangents:
    one forward, differentiated by hand and by JAX in reverse mode (``jax.vjp``) and forward mode
    (``jax.jvp``), and, with ``second_order``, forward over reverse (``jax.jvp`` of ``jax.vjp``;
    ``None`` otherwise)."""
    op = OPS[case.op]
    inputs = {name: jnp.asarray(a) for name, a in case.inputs().items()}
    upstream = tuple(jnp.asarray(a) for a in reference.upstream.values())
    cotangent = upstream if len(reference.outputs) > 1 else upstream[0]
    tangents = tuple(jnp.asarray(reference.tangents[name]) for name in op.arguments)

    def out(*arguments: Any) -> Any:
        return op.forward({**inputs, **dict(zip(op.arguments, arguments, strict=True))}, case.params)[0].out

    def autodiff_gradient(*arguments: Any) -> Any:
        return jax.vjp(out, *arguments)[1](cotangent)

    def run(*arguments: Any) -> Any:
        y, pullback, (intermediates, hand, jvp, hvp) = jax.vjp(_traced(case, inputs, cotangent, tangents), *arguments, has_aux=True)
        autodiff_jvp = jax.jvp(out, arguments, tangents)[1]
        autodiff_hvp = jax.jvp(autodiff_gradient, arguments, tangents)[1] if second_order and hvp is not None else None
        return y, intermediates, hand, jvp, hvp, pullback(cotangent), autodiff_jvp, autodiff_hvp

    return run, tuple(inputs[name] for name in op.arguments)


def _autodiff_ratio(autodiff: Mapping[str, Any], hand: Mapping[str, np.ndarray], direction: str, case: Case) -> float:
    """The worst of JAX's autodiff against refnorm's hand derivative (the NumPy evaluation), as a
    fraction of the conformance kit's float64 tolerance of ``direction``; asserts it is below
    :data:`AUTODIFF_RATIO`."""
    tolerance = default_tolerance("float64", direction)
    worst = 0.0
    for key, expected in hand.items():
        comparison = compare(np.asarray(autodiff[key]), expected, rtol=tolerance.rtol, atol=tolerance.atol, array=key)
        assert comparison.ratio < AUTODIFF_RATIO, f"{case.id}: JAX autodiff vs the hand {direction}: {comparison.describe()}"
        worst = max(worst, comparison.ratio)
    return worst


def _check_case(case: Case, *, jit: bool) -> dict[str, float]:
    """One case: JAX's outputs, intermediates, hand gradients, hand JVP and hand HVP equal NumPy's to
    float64 rounding (XLA's own summation order: see ``same_values``), and JAX's autodiff equals the
    hand derivatives: ``jax.vjp`` the backward, ``jax.jvp`` the JVP, and (under ``jit``) ``jax.jvp``
    of ``jax.vjp`` the HVP. Returns the worst rounding error and autodiff ratios. ``jit``: all of
    it in one ``jax.jit``; otherwise traced eagerly by ``jax.vjp`` (tracers all the same: no value
    checks, SSN's fixed state in the graph)."""
    op = OPS[case.op]
    reference = evaluate_case(case)
    run, arguments = _forward_backward_and_autodiff(case, reference, second_order=jit)
    out, intermediates, hand, jvp, hvp, autodiff, autodiff_jvp, autodiff_hvp = (jax.jit(run) if jit else run)(*arguments)
    outputs = tuple(out) if isinstance(out, tuple | list) else (out,)
    jvps = tuple(jvp) if isinstance(out, tuple | list) else (jvp,)
    autodiff_jvps = tuple(autodiff_jvp) if isinstance(out, tuple | list) else (autodiff_jvp,)
    jax_results = {
        **{f"output.{name}": np.asarray(a) for name, a in zip(reference.outputs, outputs, strict=True)},
        **{f"intermediate.{name}": np.asarray(a) for name, a in intermediates.items()},
        **{f"grad.{name}": np.asarray(g) for name, g in zip(op.arguments, hand, strict=True) if g is not None},
        **{f"jvp.{name}": np.asarray(a) for name, a in zip(reference.outputs, jvps, strict=True)},
        **({f"hvp.{name}": np.asarray(h) for name, h in zip(op.arguments, hvp, strict=True) if h is not None} if hvp is not None else {}),
    }
    worst = {"rounding": assert_same_to_rounding(jax_results, keyed_results(reference), case, "jit" if jit else "jax.vjp", widen_ill_conditioned=True)}
    gradients = {f"grad.{name}": g for name, g in zip(op.arguments, autodiff, strict=True)}
    worst["vjp"] = _autodiff_ratio(gradients, reference.backward_arrays(), "backward", case)
    worst["jvp"] = _autodiff_ratio(dict(zip((f"jvp.{name}" for name in reference.outputs), autodiff_jvps, strict=True)), reference.jvp_arrays(), "jvp", case)
    if autodiff_hvp is not None:
        second = {f"hvp.{name}": h for name, h in zip(op.arguments, autodiff_hvp, strict=True)}
        worst["hvp"] = _autodiff_ratio(second, reference.hvp_arrays(), "hvp", case)
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("op", sorted(OPS))
def test_every_sample_case_runs_under_jit_and_jax_autodiff_equals_the_hand_derivatives(op: str):
    """Forward, hand backward, hand JVP and hand HVP, and JAX's ``jax.vjp``, ``jax.jvp`` and
    forward-over-reverse of the forward, all in one ``jax.jit``, with default arguments otherwise,
    in every configuration of the sample catalog."""
    for case in sweep(op, "sample"):
        _check_case(case, jit=True)


@pytest.mark.slow
@pytest.mark.parametrize("op", sorted(op for op in OPS if sweep(op, "reference")))
def test_every_reference_case_on_jax_equals_numpy_and_jax_autodiff_equals_the_hand_derivatives(op: str):
    """The broad catalog (every rank, convention, normalizer subset, edge case), traced by ``jax.vjp``
    without ``jit``, hand JVP and HVP included, JAX's ``jax.vjp`` and ``jax.jvp`` against the hand
    backward and JVP. Without ``jit``, and without JAX's second order (which the sample sweep
    checks): one compilation per case costs more here than JAX's cache of compiled primitives,
    which the cases' shared shapes reuse (the whole reference catalog: 6 minutes traced, 11
    compiled with forward over reverse)."""
    for case in sweep(op, "reference"):
        _check_case(case, jit=False)


def test_the_ratio_functions_derivatives_run_under_jit_and_equal_numpy(rng):
    """``softmax_*``, ``sparsemax_*`` and ``sparsestmax_*`` (VJP, JVP, HVP), all in one ``jax.jit``."""
    host = {"logits": rng.standard_normal((5, 3)), "dratios": rng.standard_normal((5, 3)), "dlogits": rng.standard_normal((5, 3))}
    host["logits"][0] = [0.0, 9.0, 0.0]  # a row at a vertex of the simplex

    compiled = jax.jit(ratio_derivatives)(*(jnp.asarray(a) for a in host.values()))
    for name, expected in ratio_derivatives(**host).items():
        for what, a, e in zip(("value", "vjp", "jvp", "hvp"), compiled[name], expected, strict=True):
            np.testing.assert_allclose(np.asarray(a), e, rtol=1e-13, atol=1e-13, err_msg=f"{name} {what}")


# --------------------------------------------------------------------------------------------
# What jit changes: value checks, SSN's fixed state
# --------------------------------------------------------------------------------------------


def layer_inputs(rng: np.random.Generator, shape=(4, 3, 2, 2)):
    C = shape[1]
    return tuple(jnp.asarray(a) for a in (rng.standard_normal(shape), 1.0 + 0.5 * rng.standard_normal(C), 0.5 * rng.standard_normal(C),
                                          0.3 * rng.standard_normal(3), 0.3 * rng.standard_normal(3)))  # fmt: skip


def test_values_are_available_for_eager_jax_arrays_and_not_for_tracers():
    from refnorm._xp import values_available

    seen = []
    jax.jit(lambda a: seen.append(values_available(a)) or a)(jnp.ones(3))
    jax.grad(lambda a: seen.append(values_available(a)) or jnp.sum(a))(jnp.ones(3))
    assert values_available(jnp.ones(3)) and seen == [False, False]


def test_a_value_check_raises_eagerly_and_is_skipped_under_jit(rng):
    x, *params = layer_inputs(rng)
    x = x.at[0, 0, 0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="x contains NaN or infinity"):
        refnorm.switch_norm_forward(x, *params)
    y = jax.jit(lambda *a: refnorm.switch_norm_forward(*a).y)(x, *params)
    assert bool(jnp.isnan(y).any()), "under jit there is no value to check: the NaN reaches y"


def test_a_training_step_with_running_statistics_compiles_once_and_equals_eager(rng):
    """The pattern of docs/interop.md: forward, backward and the new running state in one jitted step."""
    x, gamma, beta, mean_logits, var_logits = layer_inputs(rng)

    def step(x, gamma, beta, mean_logits, var_logits, running):
        y, cache, running = refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=running)
        return y, refnorm.switch_norm_backward(jnp.ones_like(y), cache), running

    running = refnorm.initial_running_stats(3, x)
    compiled, eager = jax.jit(step)(x, gamma, beta, mean_logits, var_logits, running), step(x, gamma, beta, mean_logits, var_logits, running)
    for a, b in zip(jax.tree.leaves(compiled), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-13)


def test_ssn_fixed_state_under_jit_is_an_index_array_that_the_next_call_takes_resolved(rng):
    x, gamma, beta, _, var_logits = layer_inputs(rng)
    mean_logits = jnp.asarray([0.0, 9.0, 0.0])  # SparsestMax gives the LN vertex at radius 0.5

    @jax.jit
    def forward(x, mean_logits, var_logits):
        return refnorm.sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.5).fixed

    fixed = forward(x, mean_logits, var_logits)
    assert [int(side) for side in fixed] == [1, -1]
    assert fixed.resolved() == refnorm.FixedSides(mean=1) == refnorm.sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.5).fixed
    step = jax.jit(lambda x, fixed: refnorm.sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.5, fixed=fixed).y,
                   static_argnames="fixed")  # fmt: skip
    np.testing.assert_allclose(np.asarray(step(x, fixed=fixed.resolved())),
                               np.asarray(refnorm.sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.5, fixed=fixed).y),
                               rtol=1e-13, atol=1e-13)  # fmt: skip
    with pytest.raises(TypeError, match="fixed.mean is a lazy or traced .*Tracer.*: its value decides which ratio function"):
        jax.jit(lambda x, fixed: refnorm.sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.5, fixed=fixed).y)(x, fixed)


# --------------------------------------------------------------------------------------------
# Golden sets
# --------------------------------------------------------------------------------------------


def test_golden_generate_on_jax_gives_numpys_values(tmp_path: Path, capsys):
    """A set generated on JAX (eager, float64; schema version 2: tangents, JVPs and HVPs too)
    verifies on NumPy (every array recomputed there and equal to float64 rounding, every error case
    raising) and on JAX."""
    subset = ["--op", "sparse_switch_norm", "--kind", "sample", "--kind", "error"]  # every ratio function, fixed sides, value checks
    assert main(["golden", "generate", "--out", str(tmp_path / "set"), "--backend", "jax", "--quiet", *subset]) == 0
    assert main(["golden", "verify", str(tmp_path / "set"), "--quiet", "--failures-only", *subset]) == 0
    assert main(["golden", "verify", str(tmp_path / "set"), "--backend", "jax", "--quiet", "--failures-only", *subset]) == 0
    assert "0 failed" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert (manifest["schema_version"], manifest["backend"]) == (2, "jax")
    stored = {key.split(".", 1)[0] for case in manifest["cases"] if case["kind"] == "sample" for key in case["arrays"]}
    assert {"tangent", "jvp", "hvp"} <= stored
