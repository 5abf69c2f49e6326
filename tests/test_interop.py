"""PyTorch CPU tensors go straight into refnorm (through array-api-compat) and give NumPy's values.

Skipped, with the reason, when PyTorch is not installed. CuPy is covered by the ``backend``
fixture of the other tests and by ``tests/test_golden.py`` when a GPU is present.
"""

from __future__ import annotations

import numpy as np
import pytest

import refnorm
from refnorm.catalog import OPS, cases
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
    with pytest.raises(TypeError):
        refnorm.plain_norm_forward(x, np.ones(3), np.zeros(3), normalizer="bn")
