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


# --------------------------------------------------------------------------------------------
# Forward mode and second order: torch.func.jvp and double backward through refnorm's own forward
# --------------------------------------------------------------------------------------------


def _torch_inputs(inputs, info, requires_grad=False):
    return {n: torch.from_numpy(a).requires_grad_(requires_grad and n in info.arguments) for n, a in inputs.items()}


def _forward_mode_adapter(op: str):
    """refnorm's forward on torch tensors, pushed forward by ``torch.func.jvp``: an independent check of
    the hand-derived JVP (forward-mode autodiff of the same array-API forward)."""
    from refnorm.testing import Adapter

    info = OPS[op]

    def forward(inputs, params):
        with torch.no_grad():
            return {"y": info.linearize(_torch_inputs(inputs, info), params).out}

    def jvp(inputs, params, tangents):
        tensors = _torch_inputs(inputs, info)
        primals = tuple(tensors[n] for n in info.arguments)
        _, pushed = torch.func.jvp(
            lambda *point: info.linearize(info.with_arguments(tensors, point), params).out,
            primals, tuple(torch.from_numpy(tangents[n]) for n in info.arguments),
        )  # fmt: skip
        return {"y": pushed}

    return Adapter(forward, jvp=jvp, name=f"torch.func.jvp-through-refnorm-{op}")


def _double_backward_adapter(op: str):
    """refnorm's forward on torch tensors, differentiated twice by autograd (the gradient of
    ``<gradient, tangent>``): an independent check of the hand-derived second order."""
    from refnorm.testing import Adapter

    info = OPS[op]

    def forward(inputs, params):
        with torch.no_grad():
            return {"y": info.linearize(_torch_inputs(inputs, info), params).out}

    def hvp(inputs, params, upstream, tangents):
        tensors = _torch_inputs(inputs, info, requires_grad=True)
        leaves = [tensors[n] for n in info.arguments]
        out = info.linearize(tensors, params).out
        zeros = {n: torch.zeros_like(t) for n, t in zip(info.arguments, leaves)}
        if not out.requires_grad:  # a constant (SparsestMax at a vertex): every derivative is 0
            return zeros
        grads = torch.autograd.grad(out, leaves, grad_outputs=torch.from_numpy(upstream["y"]), create_graph=True, allow_unused=True)
        moving = [(g, torch.from_numpy(tangents[n])) for n, g in zip(info.arguments, grads) if g is not None and g.requires_grad]
        if not moving:  # the gradients do not depend on the point: the second order is 0
            return zeros
        second = torch.autograd.grad([g for g, _ in moving], leaves, grad_outputs=[t for _, t in moving], allow_unused=True)
        return {n: zeros[n] if h is None else h for n, h in zip(info.arguments, second)}

    return Adapter(forward, hvp=hvp, name=f"torch-double-backward-through-refnorm-{op}")


# torch.func.jvp loads its forward-mode decompositions on first use, compiling them with
# torch.jit.script, which torch 2.13 itself deprecates (pyproject turns every warning into an error).
TORCH_JIT_DEPRECATION = "ignore:`torch.jit.script` is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(TORCH_JIT_DEPRECATION)
@pytest.mark.parametrize("op", sorted(OPS))
def test_torch_func_jvp_through_refnorms_forward_equals_the_hand_derived_jvp(op: str):
    adapter = _forward_mode_adapter(op)
    for case in cases(kind="sample", op=op) + cases(kind="reference", op=op):
        report = check_conformance(adapter, case)
        jvp = [c for c in report.comparisons if c.array.startswith("jvp.")]
        assert jvp, case.id
        # far inside the default tolerance: both are float64 evaluations of the same derivative
        worst = max(jvp, key=lambda c: c.ratio)
        assert worst.ratio < 1e-3, f"{case.id}: {worst.describe()}"


@pytest.mark.parametrize("op", sorted(op for op, info in OPS.items() if info.hvp))
def test_torch_double_backward_through_refnorms_forward_equals_the_hand_derived_hvp(op: str):
    adapter = _double_backward_adapter(op)
    for case in cases(kind="sample", op=op) + cases(kind="reference", op=op):
        report = check_conformance(adapter, case)
        hvp = [c for c in report.comparisons if c.array.startswith("hvp.")]
        assert len(hvp) == len(OPS[op].arguments), case.id
        worst = max(hvp, key=lambda c: c.ratio)
        assert worst.ratio < 1e-3, f"{case.id}: {worst.describe()}"
