"""A literal NumPy transcription of SPEC §4, independent of refnorm's code, for the EN tests.

Nothing here imports refnorm: the scope statistics are ``np.mean``/``np.var`` over the scope's
axes (biased, the paper convention), every normalized map ``xhat_k`` is materialised, the
embedding is its spatial mean, the convolution is ``np.correlate`` on the zero-padded signal, and
the two mixing modes are written exactly as the SPEC states them. refnorm folds the mixture into
one affine map per instance and pools statistics from instance moments; agreement with this file
checks those rewrites.
"""

from __future__ import annotations

import numpy as np

EPS_R = 1e-5


def scope_statistics(x3: np.ndarray, scope: str, groups: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Biased mean and variance of ``x3`` ``(N, C, M)`` over the scope, shaped to broadcast against it."""
    N, C, M = x3.shape
    if scope == "in":
        return x3.mean(axis=2, keepdims=True), x3.var(axis=2, keepdims=True)
    if scope == "ln":
        return x3.mean(axis=(1, 2), keepdims=True), x3.var(axis=(1, 2), keepdims=True)
    if scope == "bn":
        return x3.mean(axis=(0, 2), keepdims=True), x3.var(axis=(0, 2), keepdims=True)
    if scope == "gn":
        grouped = x3.reshape(N, groups, (C // groups) * M)
        mean = np.repeat(grouped.mean(axis=2), C // groups, axis=1)[:, :, None]
        var = np.repeat(grouped.var(axis=2), C // groups, axis=1)[:, :, None]
        return mean, var
    raise ValueError(scope)


def plain_normalizer(x: np.ndarray, scope: str, *, groups=None, running=None, eps=1e-5) -> np.ndarray:
    """``(x - mu_k) / sqrt(var_k + eps)`` in ``x``'s shape; BN from ``running = (mean, var)`` if given."""
    x3 = x.reshape(x.shape[0], x.shape[1], -1)
    if scope == "bn" and running is not None:
        mean, var = running[0][None, :, None], running[1][None, :, None]
    else:
        mean, var = scope_statistics(x3, scope, groups)
    return ((x3 - mean) / np.sqrt(var + eps)).reshape(x.shape)


def exemplar_norm(x, gamma, beta, conv_weight, conv_bias, temperature, *, normalizers, groups=None,
                  mixing="output", running=None, eps=1e-5):  # fmt: skip
    """EN forward, literally. ``running = (mean, var)`` means evaluation mode. Returns ``(y, intermediates)``."""
    N, C = x.shape[:2]
    x3 = x.reshape(N, C, -1)
    K = len(normalizers)
    means, variances, xhats = [], [], []
    for scope in normalizers:
        if scope == "bn" and running is not None:
            mean, var = running[0][None, :, None], running[1][None, :, None]
        else:
            mean, var = scope_statistics(x3, scope, groups)
        means.append(np.broadcast_to(mean, (N, C, 1)))
        variances.append(np.broadcast_to(var, (N, C, 1)))
        xhats.append((x3 - mean) / np.sqrt(var + eps))

    embedding = np.stack([xhat.mean(axis=2) for xhat in xhats], axis=1)  # (N, K, C)
    q = conv_weight.shape[0]
    pre_activation = np.empty((N, K, C))
    for n in range(N):
        for k in range(K):
            padded = np.pad(embedding[n, k], q // 2)
            pre_activation[n, k] = conv_bias + np.correlate(padded, conv_weight, mode="valid")
    scores = np.maximum(pre_activation, 0.0).mean(axis=2)
    standardized = (scores - scores.mean(axis=1, keepdims=True)) / np.sqrt(scores.var(axis=1, keepdims=True) + EPS_R)
    logits = temperature * standardized
    ratios = np.exp(logits - logits.max(axis=1, keepdims=True))
    ratios /= ratios.sum(axis=1, keepdims=True)

    lam = ratios[:, :, None, None]  # (N, K, 1, 1)
    if mixing == "output":
        xhat = sum(lam[:, k] * xhats[k] for k in range(K))
    else:
        mean = sum(lam[:, k] * means[k] for k in range(K))
        var = sum(lam[:, k] * variances[k] for k in range(K))
        xhat = (x3 - mean) / np.sqrt(var + eps)
    y = gamma[None, :, None] * xhat + beta[None, :, None]
    intermediates = dict(embedding=embedding, pre_activation=pre_activation, scores=scores, standardized=standardized, ratios=ratios)
    return y.reshape(x.shape), intermediates
