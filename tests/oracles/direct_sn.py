"""An independent, direct NumPy implementation of the SN statistics and forward, for the tests.

refnorm assembles every scope from per-instance moments; this module computes each scope's
moments directly over the scope's axes with ``np.mean``/``np.var``, and the official convention
from the closed forms of spec-notes §2.2. Agreement of the two is the forward's second algorithm.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax


def direct_scope_moments(x: np.ndarray, scope: str, convention: str = "paper", groups: int | None = None):
    """(mean, var) of one scope, computed directly over its axes; shapes broadcast to (N, C)."""
    N, C = x.shape[:2]
    x3 = x.reshape(N, C, -1)
    M = x3.shape[2]
    if scope == "in":
        mean, var = x3.mean(axis=2), x3.var(axis=2)
    elif scope == "ln":
        mean, var = x3.mean(axis=(1, 2))[:, None], x3.var(axis=(1, 2))[:, None]
    elif scope == "bn":
        mean, var = x3.mean(axis=(0, 2))[None, :], x3.var(axis=(0, 2))[None, :]
    elif scope == "gn":
        grouped = x3.reshape(N, groups, (C // groups) * M)
        mean = np.repeat(grouped.mean(axis=2), C // groups, axis=1)
        var = np.repeat(grouped.var(axis=2), C // groups, axis=1)
    else:
        raise ValueError(scope)
    if convention == "paper":
        return mean, var
    if x.ndim == 2:
        # Official (N, C) input: every scope variance unbiased over its own scope (SwitchNorm1d).
        count = {"ln": C, "bn": N, "gn": C // groups if groups else None}[scope]
        return mean, var * count / (count - 1)
    # Official input with spatial axes (spec-notes §2.2 closed forms): the IN variance is
    # unbiased, and every pooled scope adds 1/(M-1) of the mean within-instance variance it pools.
    in_var = x3.var(axis=2)
    extra = {
        "in": in_var,
        "ln": in_var.mean(axis=1, keepdims=True),
        "bn": in_var.mean(axis=0, keepdims=True),
        "gn": np.repeat(in_var.reshape(N, groups, -1).mean(axis=2), C // groups, axis=1) if groups else None,
    }[scope]
    return mean, var + extra / (M - 1)


def direct_switch_norm(
    x, gamma, beta, mean_logits, var_logits, *, normalizers, convention="paper", eps=1e-5, groups=None,
    running=None, training=True, mean_ratios=None, var_ratios=None,
):  # fmt: skip
    """SN forward written directly from the paper's equations (softmax from SciPy)."""
    w = softmax(mean_logits) if mean_ratios is None else np.asarray(mean_ratios)
    w_var = softmax(var_logits) if var_ratios is None else np.asarray(var_ratios)
    N, C = x.shape[:2]
    mean = np.zeros((N, C))
    var = np.zeros((N, C))
    for k, scope in enumerate(normalizers):
        if scope == "bn" and not training:
            m, v = running[0][None, :], running[1][None, :]
        else:
            m, v = direct_scope_moments(x, scope, convention, groups)
        mean = mean + w[k] * m
        var = var + w_var[k] * v
    shape = (N, C) + (1,) * (x.ndim - 2)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    affine_shape = (1, C) + (1,) * (x.ndim - 2)
    return gamma.reshape(affine_shape) * xhat + beta.reshape(affine_shape)
