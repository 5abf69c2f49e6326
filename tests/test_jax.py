"""JAX arrays as a backend: every op's forward and backward under ``jax.jit``, every catalog case
equal to NumPy, and JAX's autodiff through refnorm's own forward equal to the hand-derived backward.

JAX's ``jax.vjp`` of refnorm's forward (ordinary ``jax.numpy`` code when given JAX arrays) is a third
differentiation, independent of refnorm's backward and of PyTorch's autograd
(``tests/test_interop.py``). Skipped, with the reason, when JAX is not installed
(``pip install 'refnorm[jax]'``). float64 is enabled (``jax_enable_x64``), as everywhere in the
suite. Eager JAX arrays are also the ``jax`` backend of the other tests' ``backend`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

import refnorm
from refnorm.oracle.catalog import OPS, Case, cases
from refnorm.oracle.evaluation import Evaluation, evaluate_case
from refnorm.oracle.tolerances import compare, default_tolerance
from same_values import assert_same_to_rounding, keyed_results

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install 'refnorm[jax]')")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

AUTODIFF_RATIO = 1e-3
"""JAX's autodiff against the hand backward, as a fraction of the float64 backward tolerance of
the conformance kit (``|a - e| <= 1e-5 + 1e-5 |e|``): within ``1e-8 (1 + |e|)``, as in the PyTorch
autograd test. Two differentiations of one float64 function agree far inside it."""


def _traced(case: Case, inputs: Mapping[str, Any], cotangent: Any) -> Callable[..., Any]:
    """``arguments -> (out, (intermediates, hand gradients))``: refnorm's forward at ``case`` and its hand
    backward of ``cotangent``, for ``jax.vjp(..., has_aux=True)``."""
    op = OPS[case.op]

    def traced(*arguments: Any) -> Any:
        linearized, intermediates = op.forward({**inputs, **dict(zip(op.arguments, arguments, strict=True))}, case.params)
        hand = linearized.pullback(cotangent)
        return linearized.out, ({name: a for name, a in intermediates.items() if a is not None}, tuple(hand))

    return traced


def _forward_backward_and_autodiff(case: Case, reference: Evaluation) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """``arguments -> (out, intermediates, hand gradients, autodiff gradients)`` at ``case`` with the
    reference's upstream gradient: one forward, differentiated twice."""
    op = OPS[case.op]
    inputs = {name: jnp.asarray(a) for name, a in case.inputs().items()}
    upstream = tuple(jnp.asarray(a) for a in reference.upstream.values())
    cotangent = upstream if len(reference.outputs) > 1 else upstream[0]

    def run(*arguments: Any) -> Any:
        out, pullback, (intermediates, hand) = jax.vjp(_traced(case, inputs, cotangent), *arguments, has_aux=True)
        return out, intermediates, hand, pullback(cotangent)

    return run, tuple(inputs[name] for name in op.arguments)


def _check_case(case: Case, *, jit: bool) -> float:
    """One case: JAX's outputs, intermediates and hand gradients equal NumPy's to float64 rounding
    (XLA's own summation order: see ``same_values``), and JAX's autodiff equals the hand backward.
    Returns the worst autodiff ratio. ``jit``: all of it in one ``jax.jit``; otherwise traced
    eagerly by ``jax.vjp`` (tracers all the same: no value checks, SSN's fixed state in the graph)."""
    op = OPS[case.op]
    reference = evaluate_case(case)
    run, arguments = _forward_backward_and_autodiff(case, reference)
    out, intermediates, hand, autodiff = (jax.jit(run) if jit else run)(*arguments)
    outputs = tuple(out) if isinstance(out, tuple | list) else (out,)
    jax_results = {
        **{f"output.{name}": np.asarray(a) for name, a in zip(reference.outputs, outputs, strict=True)},
        **{f"intermediate.{name}": np.asarray(a) for name, a in intermediates.items()},
        **{f"grad.{name}": np.asarray(g) for name, g in zip(op.arguments, hand, strict=True) if g is not None},
    }
    assert_same_to_rounding(jax_results, keyed_results(reference), case, "jit" if jit else "jax.vjp", widen_ill_conditioned=True)
    tolerance = default_tolerance("float64", "backward")
    worst = 0.0
    for name, gradient in zip(op.arguments, autodiff, strict=True):
        if name not in reference.gradients:
            continue
        comparison = compare(np.asarray(gradient), reference.gradients[name], rtol=tolerance.rtol, atol=tolerance.atol, array=f"grad.{name}")
        assert comparison.ratio < AUTODIFF_RATIO, f"{case.id}: jax.vjp vs the hand backward: {comparison.describe()}"
        worst = max(worst, comparison.ratio)
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("op", sorted(OPS))
def test_every_sample_case_runs_under_jit_and_jax_autodiff_equals_the_hand_backward(op: str):
    """Forward, hand backward and ``jax.vjp`` of the forward, all in one ``jax.jit``, with default
    arguments otherwise, in every configuration of the sample catalog."""
    for case in cases(kind="sample", op=op):
        _check_case(case, jit=True)


@pytest.mark.slow
@pytest.mark.parametrize("op", sorted(op for op in OPS if cases(kind="reference", op=op)))
def test_every_reference_case_on_jax_equals_numpy_and_jax_autodiff_equals_the_hand_backward(op: str):
    """The broad catalog (every rank, convention, normalizer subset, edge case), traced by ``jax.vjp``
    without ``jit``: one compilation per case (``jit``) costs more here than JAX's cache of
    compiled primitives, which the cases' shared shapes reuse."""
    for case in cases(kind="reference", op=op):
        _check_case(case, jit=False)


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
