"""A small PyTorch Switchable Normalization, and the adapters that let refnorm check it.

This is the worked example of ``refnorm.testing`` (see ``test_torch_switchnorm.py`` beside it):

* :func:`switch_norm` is an ordinary PyTorch implementation of SN (IN, LN and BN in any subset
  and order, both variance conventions, training and evaluation), differentiated by autograd.
* :class:`SwitchNorm` wraps it as an ``nn.Module`` (parameters, running buffers).
* :func:`adapter` is everything the conformance kit needs: call the implementation on the
  case's inputs, return named arrays; backward through ``torch.autograd.grad``, forward mode
  through ``torch.func.jvp`` and the second order by double backward (the gradient of
  ``<gradient, tangent>``, what MAML and gradient penalties compute).
* :class:`_HandWrittenBackward` is the same layer with the textbook hand-derived backward, written
  in torch operations on the statistics the forward saved, detached. It carries two planted bugs
  the kit must catch:

  - :func:`planted_bug_adapter` reproduces the official SyncSN bug (spec-notes §2.6): with the
    official, unbiased instance variance in the forward, the backward is still the derivative of
    the biased-variance forward, so ``grad.x`` is off by O(1/(H·W - 1)) in the official convention;
  - :func:`detached_statistics_adapter`: in the paper convention its first order is exact, but
    the double backward, which differentiates the backward's own operations, sees the detached
    statistics as constants and misses every path through them: ``hvp.*`` is wrong.

Statistics are assembled from the per-instance moments the way the official code does, but with
the law of total variance (``var_ln = mean_c(var_in) + mean_c((mean_in - mean_ln)^2)``) instead of
the official ``mean_c(var_in + mean_in^2) - mean_ln^2``, which in float32 loses every digit for
inputs with a mean of 1e4 (refnorm's ``offset1e4`` cases would catch that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from refnorm.testing import Adapter


def _moments(x: torch.Tensor, normalizers: Sequence[str], convention: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{name: (mean, var)}`` per normalizer, broadcastable to ``(N, C)``, in the convention's variance."""
    N, C = x.shape[:2]
    x3 = x.reshape(N, C, -1)
    official = convention == "official"
    spatial = x.ndim > 2
    mean_in = x3.mean(dim=2)
    var_in = x3.var(dim=2, correction=1 if official and spatial else 0)
    moments = {"in": (mean_in, var_in)}
    for name, dim, count in (("ln", 1, C), ("bn", 0, N)):
        mean = mean_in.mean(dim=dim, keepdim=True)
        var = (var_in + (mean_in - mean) ** 2).mean(dim=dim, keepdim=True)
        if official and not spatial:  # SwitchNorm1d: unbiased over the C features / the N samples
            var = var * count / (count - 1)
        moments[name] = (mean, var)
    return {name: moments[name] for name in normalizers}


def switch_norm(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    mean_logits: torch.Tensor,
    var_logits: torch.Tensor,
    *,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    training: bool = True,
    normalizers: Sequence[str] = ("in", "ln", "bn"),
    convention: str = "paper",
    eps: float = 1e-5,
    momentum: float = 0.9,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SN forward: ``y`` and a dict of named intermediates (refnorm's names) and new running statistics."""
    if "gn" in normalizers:
        raise NotImplementedError("this example implements IN, LN and BN, not GN")
    N, C = x.shape[:2]
    moments = _moments(x, normalizers, convention)
    extras: dict[str, torch.Tensor] = {}
    if "bn" in normalizers and running_mean is not None:
        batch_mean, batch_var = (m.reshape(C) for m in moments["bn"])
        if training:
            extras["new_running_mean"] = momentum * running_mean + (1 - momentum) * batch_mean.detach()
            extras["new_running_var"] = momentum * running_var + (1 - momentum) * batch_var.detach()
        else:
            moments["bn"] = (running_mean.reshape(1, C), running_var.reshape(1, C))
            extras["new_running_mean"], extras["new_running_var"] = running_mean, running_var
    mean_ratios = torch.softmax(mean_logits, dim=0)
    var_ratios = torch.softmax(var_logits, dim=0)
    mean = sum(w * moments[k][0] for w, k in zip(mean_ratios, normalizers)).expand(N, C)
    var = sum(w * moments[k][1] for w, k in zip(var_ratios, normalizers)).expand(N, C)
    x3 = x.reshape(N, C, -1)
    xhat = (x3 - mean[:, :, None]) / torch.sqrt(var[:, :, None] + eps)
    y = gamma[None, :, None] * xhat + beta[None, :, None]
    for k, (m, v) in moments.items():
        extras[f"mean_{k}"], extras[f"var_{k}"] = m, v
    extras.update(xhat=xhat.reshape(x.shape), mean_ratios=mean_ratios, var_ratios=var_ratios, mean=mean, var=var)
    return y.reshape(x.shape), extras


class SwitchNorm(torch.nn.Module):
    """``nn.Module`` form: official initialisation (logits 1, gamma 1, beta 0); running buffers."""

    def __init__(self, channels: int, normalizers: Sequence[str] = ("in", "ln", "bn"), convention: str = "paper", momentum: float = 0.9):
        super().__init__()
        self.normalizers, self.convention, self.momentum = tuple(normalizers), convention, momentum
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))
        self.mean_weight = torch.nn.Parameter(torch.ones(len(normalizers)))
        self.var_weight = torch.nn.Parameter(torch.ones(len(normalizers)))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, extras = switch_norm(
            x, self.weight, self.bias, self.mean_weight, self.var_weight,
            running_mean=self.running_mean, running_var=self.running_var, training=self.training,
            normalizers=self.normalizers, convention=self.convention, momentum=self.momentum,
        )  # fmt: skip
        if self.training and "new_running_mean" in extras:
            self.running_mean.copy_(extras["new_running_mean"])
            self.running_var.copy_(extras["new_running_var"])
        return y


# --------------------------------------------------------------------------------------------
# The adapter for refnorm's conformance kit
# --------------------------------------------------------------------------------------------

ARGUMENTS = ("x", "gamma", "beta", "mean_logits", "var_logits")


def _options(params: Mapping[str, Any]) -> dict[str, Any]:
    """refnorm's case parameters (``refnorm golden list``) as this implementation's keywords."""
    return dict(
        training=params.get("training", True),
        normalizers=tuple(params["normalizers"]),
        convention=params.get("convention", "paper"),
        eps=params.get("eps", 1e-5),
        momentum=params.get("momentum", 0.9),
    )


def _tensors(inputs: Mapping[str, np.ndarray], requires_grad: bool = False) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(a).requires_grad_(requires_grad and name in ARGUMENTS) for name, a in inputs.items()}


def _call(layer: Any, tensors: Mapping[str, torch.Tensor], params: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return layer(
        *(tensors[name] for name in ARGUMENTS),
        running_mean=tensors.get("running_mean"), running_var=tensors.get("running_var"), **_options(params),
    )  # fmt: skip


def adapter(
    layer: Any = switch_norm, *, dtype: torch.dtype = torch.float64, name: str = "torch-switchnorm", jvp: bool = True, hvp: bool = True
) -> Adapter:
    """The conformance-kit adapter of ``layer`` (a function with :func:`switch_norm`'s signature):
    forward, backward, and unless switched off the JVP (``torch.func.jvp``, which a custom
    ``autograd.Function`` without a ``jvp`` cannot run) and the second order (double backward)."""

    def forward(inputs: dict[str, np.ndarray], params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            y, extras = _call(layer, _tensors(inputs), params)
        return {"y": y, **extras}

    def backward(inputs: dict[str, np.ndarray], params: Mapping[str, Any], upstream: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        tensors = _tensors(inputs, requires_grad=True)
        y, _ = _call(layer, tensors, params)
        grads = torch.autograd.grad(y, [tensors[n] for n in ARGUMENTS], grad_outputs=torch.from_numpy(upstream["y"]))
        return dict(zip(ARGUMENTS, grads))

    def forward_mode(inputs: dict[str, np.ndarray], params: Mapping[str, Any], tangents: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        tensors = _tensors(inputs)

        def y_of(*arguments: torch.Tensor) -> torch.Tensor:
            return _call(layer, {**tensors, **dict(zip(ARGUMENTS, arguments))}, params)[0]

        _, y_dot = torch.func.jvp(y_of, tuple(tensors[n] for n in ARGUMENTS), tuple(torch.from_numpy(tangents[n]) for n in ARGUMENTS))
        return {"y": y_dot}

    def second_order(
        inputs: dict[str, np.ndarray], params: Mapping[str, Any], upstream: dict[str, np.ndarray], tangents: dict[str, np.ndarray]
    ) -> dict[str, torch.Tensor]:
        # Double backward: the gradient of <gradient, tangent>, the gradient built with create_graph=True.
        tensors = _tensors(inputs, requires_grad=True)
        arguments = [tensors[n] for n in ARGUMENTS]
        y, _ = _call(layer, tensors, params)
        grads = torch.autograd.grad(y, arguments, grad_outputs=torch.from_numpy(upstream["y"]), create_graph=True)
        # A gradient that does not depend on the point (beta's) has no graph: its derivative is 0.
        moving = [(g, torch.from_numpy(tangents[n])) for n, g in zip(ARGUMENTS, grads) if g.requires_grad]
        second = torch.autograd.grad([g for g, _ in moving], arguments, grad_outputs=[t for _, t in moving], allow_unused=True)
        return {n: torch.zeros_like(t) if h is None else h for n, t, h in zip(ARGUMENTS, arguments, second)}

    return Adapter(
        forward, backward, to_numpy=lambda t: t.detach().cpu().numpy(), dtype=str(dtype).removeprefix("torch."), name=name,
        jvp=forward_mode if jvp else None, hvp=second_order if hvp else None,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# A hand-written backward on detached statistics, and the two bugs it plants: the SyncSN
# biased/unbiased mix-up (first order, spec-notes §2.6) and the detached statistics (second order)
# --------------------------------------------------------------------------------------------


class _HandWrittenBackward(torch.autograd.Function):
    """Training-mode SN whose backward is hand-written the way ``devkit/ops/syncsn_layer.py`` does:
    the derivative of the *biased*-variance forward, whatever convention the forward used (the
    first planted bug, in the official convention), in torch operations on the statistics the
    forward saved, detached (the second: the double backward, which differentiates these
    operations, sees the statistics as constants)."""

    @staticmethod
    def forward(ctx: Any, x, gamma, beta, mean_logits, var_logits, normalizers, convention, eps):  # type: ignore[override]
        y, extras = switch_norm(x, gamma, beta, mean_logits, var_logits, normalizers=normalizers, convention=convention, eps=eps)
        ctx.normalizers = normalizers
        # Saved detached, to save memory: right for the gradient, wrong for the gradient's gradient.
        statistics = (extras["xhat"], extras["var"], extras["mean_ratios"], extras["var_ratios"],
                      *(extras[f"{s}_{k}"] for k in normalizers for s in ("mean", "var")))  # fmt: skip
        ctx.save_for_backward(x, gamma, *(t.detach() for t in statistics))
        ctx.eps = eps
        return y, extras

    @staticmethod
    def backward(ctx: Any, dy, _extras):  # type: ignore[override]
        x, gamma, xhat, var, w, w2, *stats = ctx.saved_tensors
        normalizers = ctx.normalizers
        N, C = x.shape[:2]
        M = x[0, 0].numel()
        g = dy.reshape(N, C, M)
        xhat3 = xhat.reshape(N, C, M)
        x3 = x.reshape(N, C, M)
        r = 1.0 / torch.sqrt(var + ctx.eps)
        ghat = gamma[None, :, None] * g
        A = -r * ghat.sum(2)  # dL/dmu
        B = -0.5 * r**2 * (ghat * xhat3).sum(2)  # dL/dsigma^2
        means = dict(zip(normalizers, stats[0::2]))
        variances = dict(zip(normalizers, stats[1::2]))
        dx = r[:, :, None] * ghat
        for k, (wk, w2k) in enumerate(zip(w, w2)):
            scope = normalizers[k]
            dims, count = {"in": ((), M), "ln": ((1,), C * M), "bn": ((0,), N * M)}[scope]
            a = A.sum(dim=dims, keepdim=True) if dims else A
            b = B.sum(dim=dims, keepdim=True) if dims else B
            # the biased-variance derivative: 2 (x - mu_k) / count, the bug when the forward divided by M - 1
            dx = dx + (wk * a)[:, :, None] / count + (w2k * b)[:, :, None] * 2 * (x3 - means[scope][:, :, None]) / count
        dmean_ratios = torch.stack([(A * means[k]).sum() for k in normalizers])
        dvar_ratios = torch.stack([(B * variances[k]).sum() for k in normalizers])
        dmean_logits = w * (dmean_ratios - (w * dmean_ratios).sum())
        dvar_logits = w2 * (dvar_ratios - (w2 * dvar_ratios).sum())
        dgamma = (g * xhat3).sum((0, 2))
        dbeta = g.sum((0, 2))
        return dx.reshape(x.shape), dgamma, dbeta, dmean_logits, dvar_logits, None, None, None


def planted_bug_switch_norm(x, gamma, beta, mean_logits, var_logits, *, running_mean=None, running_var=None, training=True,
                            normalizers=("in", "ln", "bn"), convention="paper", eps=1e-5, momentum=0.9):  # fmt: skip
    """:func:`switch_norm` (training mode) with the SyncSN biased/unbiased backward mix-up."""
    if not training or x.ndim == 2:
        raise NotImplementedError("the planted-bug layer reproduces SyncSN: training mode, spatial input only")
    return _HandWrittenBackward.apply(x, gamma, beta, mean_logits, var_logits, tuple(normalizers), convention, eps)


def planted_bug_adapter() -> Adapter:
    """The SyncSN mix-up, checked to first order (a custom ``autograd.Function`` without a ``jvp`` has no forward mode)."""
    return adapter(planted_bug_switch_norm, name="torch-switchnorm-with-syncsn-backward", jvp=False, hvp=False)


def detached_statistics_adapter(*, hvp: bool = True) -> Adapter:
    """The hand-written backward in the paper convention, where it is right to first order, with its
    double backward (``hvp=True``) missing the paths through the detached statistics."""
    return adapter(planted_bug_switch_norm, name="torch-switchnorm-with-detached-statistics", jvp=False, hvp=hvp)
