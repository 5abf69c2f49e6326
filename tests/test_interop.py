"""PyTorch CPU tensors go straight into refnorm (through array-api-compat) and give NumPy's values.

Skipped, with the reason, when PyTorch is not installed. CuPy is covered by the ``backend``
fixture of the other tests and by ``tests/test_golden.py`` when a GPU is present.
"""

from __future__ import annotations

import numpy as np
import pytest

import refnorm
from refnorm.oracle.catalog import OPS, cases
from refnorm.testing import check_conformance, refnorm_adapter

torch = pytest.importorskip("torch", reason="PyTorch is not installed; the interop tests pass torch tensors to refnorm")


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_case_on_torch_tensors_equals_numpy(op: str):
    adapter = refnorm_adapter(op, backend="torch")
    for case in cases(op=op):
        check_conformance(adapter, case, check_error_messages=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_switch_norm_takes_and_returns_torch_tensors(dtype, rng):
    x = rng.standard_normal((2, 4, 3, 3))
    gamma, beta, logits = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(3)
    as_torch = [torch.from_numpy(a).to(dtype) for a in (x, gamma, beta, logits, logits)]
    running = refnorm.initial_running_stats(4, as_torch[0])
    y, cache, new_running = refnorm.switch_norm_forward(*as_torch, running=running)
    grads = refnorm.switch_norm_backward(torch.ones_like(y), cache)
    assert isinstance(y, torch.Tensor) and y.dtype == dtype
    assert all(isinstance(g, torch.Tensor) and g.dtype == dtype for g in grads)
    assert isinstance(new_running.mean, torch.Tensor)
    y_np, cache_np, _ = refnorm.switch_norm_forward(x, gamma, beta, logits, logits, running=refnorm.initial_running_stats(4, x))
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(y.numpy(), y_np, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grads.dx.numpy(), refnorm.switch_norm_backward(np.ones_like(y_np), cache_np).dx, rtol=tolerance, atol=tolerance)


def test_gradcheck_accepts_torch_tensors(rng):
    x = torch.from_numpy(rng.standard_normal((2, 3, 2, 2)))
    params = [torch.from_numpy(rng.standard_normal(n)) for n in (3, 3)]
    result = refnorm.gradcheck(
        lambda *a: refnorm.plain_norm_linearize(*a, normalizer="gn", groups=3), (x, *params), names=("x", "gamma", "beta")
    )
    assert result.passed, result


def test_mixing_torch_and_numpy_is_refused():
    x = torch.zeros((2, 3, 2, 2), dtype=torch.float64)
    with pytest.raises(TypeError, match=r"x is a torch array; gamma, beta are numpy arrays: the array arguments must all come from one"):
        refnorm.plain_norm_forward(x, np.ones(3), np.zeros(3), normalizer="bn")


def _autograd_adapter(op: str):
    """refnorm's own forward run on torch tensors, differentiated by torch autograd: an independent
    check of the hand-derived backward (autodiff of the same array-API forward)."""
    from refnorm.oracle.evaluation import evaluate
    from refnorm.testing import Adapter

    info = OPS[op]

    def forward(inputs, params):
        evaluation = evaluate(op, params, inputs, backend="torch")
        return {**evaluation.outputs, **evaluation.intermediates}

    def backward(inputs, params, upstream):
        tensors = {n: torch.from_numpy(a).requires_grad_(n in info.arguments) for n, a in inputs.items()}
        out = info.linearize(tensors, params).out
        leaves = [tensors[n] for n in info.arguments]
        if not out.requires_grad:  # e.g. SparsestMax snapped to a vertex: a constant, gradient 0
            return {n: torch.zeros_like(t) for n, t in zip(info.arguments, leaves)}
        grads = torch.autograd.grad(out, leaves, grad_outputs=torch.from_numpy(upstream["y"]), allow_unused=True)
        return {n: torch.zeros_like(t) if g is None else g for n, t, g in zip(info.arguments, leaves, grads)}

    return Adapter(forward, backward, name=f"torch-autograd-through-refnorm-{op}")


@pytest.mark.parametrize("op", sorted(OPS))
def test_torch_autograd_through_refnorms_forward_equals_the_hand_derived_backward(op: str):
    adapter = _autograd_adapter(op)
    for case in cases(kind="sample", op=op) + cases(kind="reference", op=op):
        report = check_conformance(adapter, case)
        # far inside the default tolerance: both are float64 evaluations of the same function
        worst = max(report.comparisons, key=lambda c: c.ratio)
        assert worst.ratio < 1e-3, f"{case.id}: {worst.describe()}"
