"""The PyTorch side of the benchmark: SN, SSN and EN forward passes that autograd differentiates.

Each function is the plain PyTorch a port would write, with the semantics refnorm is compared
under (``python -m benchmarks``):

* :func:`switch_norm` is the official ``SwitchNorm2d.forward`` (switchablenorms/Switchable-
  Normalization, ``devkit/ops/switchable_norm.py``) as a function: ``torch.var``'s unbiased
  instance variance, LN and BN statistics from the instance moments, softmax ratios, running
  statistics updated in training. refnorm runs the same math with ``convention="official"``.
* :func:`sparse_switch_norm` is the official ``SSN2d.forward`` (switchablenorms/Sparse_SwitchNorm):
  SN with the official recursive, one-vector SparsestMax (``utils/ssn_utils.py``) for the ratios.
  refnorm runs ``variant="official"``.
* :func:`exemplar_norm` is refnorm's definition of EN (``docs/exemplar-norm.md``; there is no
  official code), written with the same closed forms refnorm uses (the embedding as the
  normalized instance mean, the mixture as one affine map of ``x - mean_in``), so that the two
  sides compute the same math and the comparison measures the implementations.

Nothing here is imported by refnorm or its tests; torch is optional for the benchmark.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _instance_and_scope_moments(x3: torch.Tensor, unbiased: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The official code's IN, LN and BN statistics of ``x3`` ``(N, C, M)``, each ``(·, ·, 1)``."""
    mean_in = x3.mean(-1, keepdim=True)
    var_in = x3.var(-1, keepdim=True, correction=1 if unbiased else 0)
    mean_ln = mean_in.mean(1, keepdim=True)
    temp = var_in + mean_in**2
    var_ln = temp.mean(1, keepdim=True) - mean_ln**2
    mean_bn = mean_in.mean(0, keepdim=True)
    var_bn = temp.mean(0, keepdim=True) - mean_bn**2
    return {"in": (mean_in, var_in), "ln": (mean_ln, var_ln), "bn": (mean_bn, var_bn)}


def _mixed_normalization(x, weight, bias, moments, mean_ratios, var_ratios, running, momentum, eps):
    """``weight * (x - mean) / sqrt(var + eps) + bias`` with the mixed statistics; updates ``running``."""
    N, C = x.shape[:2]
    if running is not None:
        with torch.no_grad():
            running[0].mul_(momentum).add_((1 - momentum) * moments["bn"][0].reshape(C))
            running[1].mul_(momentum).add_((1 - momentum) * moments["bn"][1].reshape(C))
    mean = sum(w * moments[k][0] for w, k in zip(mean_ratios, ("in", "ln", "bn"), strict=True))
    var = sum(w * moments[k][1] for w, k in zip(var_ratios, ("in", "ln", "bn"), strict=True))
    x3 = x.view(N, C, -1)
    x3 = (x3 - mean) / (var + eps).sqrt()
    return x3.view(x.shape) * weight.view(1, C, *([1] * (x.ndim - 2))) + bias.view(1, C, *([1] * (x.ndim - 2)))


def switch_norm(x, weight, bias, mean_weight, var_weight, running=None, *, momentum=0.9, eps=1e-5):
    """The official ``SwitchNorm2d`` forward in training mode (IN, LN, BN; official convention)."""
    N, C = x.shape[:2]
    moments = _instance_and_scope_moments(x.view(N, C, -1), unbiased=True)
    mean_ratios = torch.softmax(mean_weight, 0)
    var_ratios = torch.softmax(var_weight, 0)
    return _mixed_normalization(x, weight, bias, moments, mean_ratios, var_ratios, running, momentum, eps)


# --------------------------------------------------------------------------------------------
# SSN: the official one-vector SparsestMax (utils/ssn_utils.py), differentiated by autograd
# --------------------------------------------------------------------------------------------


def official_sparsemax(v: torch.Tensor, z: float = 1.0) -> torch.Tensor:
    """``sparsemax(v, z)`` of the official code (one vector)."""
    v_sorted, _ = torch.sort(v, descending=True)
    cssv = torch.cumsum(v_sorted, dim=0) - z
    ind = torch.arange(1, 1 + len(v), dtype=v.dtype, device=v.device)
    cond = v_sorted - cssv / ind > 0
    rho = ind.masked_select(cond)[-1]
    tau = cssv.masked_select(cond)[-1] / rho
    return torch.clamp(v - tau, min=0)


def official_sparsestmax(v: torch.Tensor, rad_in: float = 0.0, u_in: torch.Tensor | None = None) -> torch.Tensor:
    """``sparsestmax(v, rad_in, u_in)`` of the official code (recursive, one vector)."""
    w = official_sparsemax(v)
    if max(w) - min(w) == 1:
        return w
    ind = (w > 0).to(v.dtype)
    u = ind / torch.sum(ind)
    rad = rad_in if u_in is None else math.sqrt(rad_in**2 - float(torch.sum((u - u_in) ** 2)))
    distance = torch.norm(w - u)
    if distance >= rad:
        return w
    p = rad * (w - u) / distance + u
    if min(p) < 0:
        return official_sparsestmax(p, rad, u)
    return p.clamp(min=0, max=1)


def sparse_switch_norm(x, weight, bias, mean_weight, var_weight, running=None, *, radius, momentum=0.997, eps=1e-5):
    """The official ``SSN2d`` forward in training mode, neither side fixed yet."""
    N, C = x.shape[:2]
    moments = _instance_and_scope_moments(x.view(N, C, -1), unbiased=True)
    mean_ratios = official_sparsestmax(mean_weight, radius)
    var_ratios = official_sparsestmax(var_weight, radius)
    return _mixed_normalization(x, weight, bias, moments, mean_ratios, var_ratios, running, momentum, eps)


# --------------------------------------------------------------------------------------------
# EN: refnorm's definition (output mixing, IN/LN/BN, paper convention)
# --------------------------------------------------------------------------------------------


def exemplar_norm(x, gamma, beta, conv_weight, conv_bias, temperature, running=None, *, momentum=0.9, eps=1e-5, eps_r=1e-5):
    """EN forward (``docs/exemplar-norm.md`` §1): ratio generator, then output mixing."""
    N, C = x.shape[:2]
    x3 = x.view(N, C, -1)
    moments = _instance_and_scope_moments(x3, unbiased=False)
    if running is not None:
        with torch.no_grad():
            running[0].mul_(momentum).add_((1 - momentum) * moments["bn"][0].reshape(C))
            running[1].mul_(momentum).add_((1 - momentum) * moments["bn"][1].reshape(C))
    mean_in = moments["in"][0]
    inv_stds = [(var + eps).rsqrt() for _, var in moments.values()]
    # Embedding: the spatial mean of each branch's normalized map, (mean_in - mean_k) * r_k: (N, K, C).
    embedding = torch.stack([((mean_in - mean) * r).expand(N, C, 1)[..., 0] for (mean, _), r in zip(moments.values(), inv_stds, strict=True)], 1)
    K = embedding.shape[1]
    q = conv_weight.shape[0]
    z = F.conv1d(embedding.reshape(N * K, 1, C), conv_weight.view(1, 1, q), conv_bias.view(1), padding=q // 2).view(N, K, C)
    scores = torch.relu(z).mean(-1)
    centered = scores - scores.mean(1, keepdim=True)
    standardized = centered / (centered.pow(2).mean(1, keepdim=True) + eps_r).sqrt()
    ratios = torch.softmax(temperature * standardized, 1)  # (N, K)
    scale = sum(ratios[:, k, None, None] * inv_stds[k] for k in range(K))
    shift = sum(ratios[:, k, None, None] * embedding[:, k, :, None] for k in range(K))
    y3 = (gamma.view(1, C, 1) * scale) * (x3 - mean_in) + (gamma.view(1, C, 1) * shift + beta.view(1, C, 1))
    return y3.view(x.shape)
