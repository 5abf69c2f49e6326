r"""Exemplar Normalization's ratio generator: five stages from the branch statistics to per-sample ratios.

EN (:mod:`refnorm.ops.exemplarnorm`) gives every sample ``n`` its own importance ratios
:math:`\lambda_n` over the ``K`` normalizers of its set. This module computes them from each
branch's statistics (:math:`\mu^{in}` the instance mean, :math:`\mu_k` the mean of normalizer
``k`` and :math:`r_k = (\sigma^2_k + \epsilon)^{-1/2}`, all broadcast to ``(N, C)``), in five
stages, each a forward function with its hand-derived VJP written right below it and its own
gradient check (the ``*_linearize`` functions at the end, run by ``refnorm check``), and its
hand-derived JVP below that (``*_jvp``; :func:`ratio_generator_jvp` composes them):

1. **embedding** (:func:`embedding`), the spatial mean of every normalized map, ``(N, K, C)``:

   .. math::

       e_{nkc} = \frac1M \sum_i \hat x_{k,nci} = (\mu^{in}_{nc} - \mu_{k,nc})\, r_{k,nc}
       \quad\text{(identically 0 for IN)};

2. **convolution along channels, then ReLU** (:func:`channel_conv`, :func:`relu`): one kernel
   :math:`w` of odd size ``q`` and a bias :math:`b`, shared by all normalizers, zero "same" padding:

   .. math::

       z_{nkc} = b + \sum_{j=0}^{q-1} w_j\, e_{nk,c+j-\lfloor q/2\rfloor}, \qquad a = \max(z, 0);

3. **channel mean** (:func:`channel_mean`), one score per normalizer:
   :math:`s_{nk} = \frac1C \sum_c a_{nkc}`;
4. **standardisation over the normalizers** (:func:`standardize`), with
   :math:`\bar s_n = \frac1K\sum_k s_{nk}` and :math:`\epsilon_r = 10^{-5}`:

   .. math::

       \tilde s_{nk} = (s_{nk} - \bar s_n)\, \rho_n, \qquad
       \rho_n = \Big(\frac1K \sum_{k'} (s_{nk'} - \bar s_n)^2 + \epsilon_r\Big)^{-1/2};

5. **softmax with a learnable temperature** (:func:`tempered_softmax`):
   :math:`\lambda_n = \mathrm{softmax}(\tau\, \tilde s_n)`.

:func:`ratio_generator` runs stages 2–5 from the embedding and keeps every intermediate
(:class:`RatioGenerator`); :func:`ratio_generator_vjp` runs their VJPs in reverse order, down to
the embedding, and :func:`embedding_vjp` takes the gradient on to the branch statistics.
``docs/exemplar-norm.md`` lists each choice as refnorm's reading of the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from .._xp import Array, device, namespace
from .linearized import Linearized
from .simplex import softmax_jvp, softmax_stage, softmax_stage_vjp

EPS_RATIO = 1e-5
""":math:`\\epsilon_r`, added to the variance of the scores before standardising them (SPEC §4)."""


class RatioGenerator(NamedTuple):
    """Every intermediate of the ratio generator (what its VJP needs, and what a port compares)."""

    embedding: Array
    """:math:`e`, shape ``(N, K, C)``."""
    pre_activation: Array
    """:math:`z`, the convolution output before the ReLU, shape ``(N, K, C)``."""
    scores: Array
    """:math:`s`, shape ``(N, K)``."""
    standardized: Array
    """:math:`\\tilde s`, shape ``(N, K)``."""
    score_inv_std: Array
    """:math:`\\rho = (\\operatorname{Var}_k s + \\epsilon_r)^{-1/2}`, shape ``(N, 1)``: the inverse
    standard deviation of the *scores* over the normalizers (not of ``x``, hence not ``inv_std``)."""
    ratios: Array
    """:math:`\\lambda`, shape ``(N, K)``; every row on the simplex."""
    conv_weight: Array
    temperature: Array


class RatioGeneratorGrads(NamedTuple):
    """What :func:`ratio_generator_vjp` returns."""

    dembedding: Array
    dconv_weight: Array
    dconv_bias: Array
    dtemperature: Array


# --------------------------------------------------------------------------------------------
# Stage 1: embedding
# --------------------------------------------------------------------------------------------


class EmbeddingGrads(NamedTuple):
    """What :func:`embedding_vjp` returns: gradients with respect to the statistics, each ``(N, C)``."""

    dmean_in: Array
    """With respect to :math:`\\mu^{in}`."""
    dmeans: tuple[Array, ...]
    """With respect to each :math:`\\mu_k`, broadcast to ``(N, C)``."""
    dvars: tuple[Array, ...]
    """With respect to each :math:`\\sigma^2_k`, broadcast to ``(N, C)``."""


def embedding(mean_in: Array, means: Sequence[Array], inv_stds: Sequence[Array]) -> Array:
    r"""The spatial mean of every normalized map, :math:`e_{nkc} = (\mu^{in}_{nc} - \mu_{k,nc})\, r_{k,nc}`.

    Shape ``(N, K, C)``. Global average pooling of :math:`\hat x_k = (x - \mu_k) r_k` equals
    normalizing the instance mean, because :math:`\mu_k` and :math:`r_k` are constant over space.
    For IN, :math:`\mu_k = \mu^{in}` and the embedding is exactly 0 for every input.

    Parameters
    ----------
    mean_in
        :math:`\mu^{in}`, shape ``(N, C)``.
    means, inv_stds
        :math:`\mu_k` and :math:`r_k = (\sigma^2_k + \epsilon)^{-1/2}` of every normalizer, each
        broadcasting to ``(N, C)``.
    """
    xp = namespace(mean_in)
    return xp.stack([(mean_in - mean) * r for mean, r in zip(means, inv_stds, strict=True)], axis=1)


def embedding_vjp(dembedding: Array, embedding: Array, inv_stds: Sequence[Array]) -> EmbeddingGrads:
    r"""VJP of :func:`embedding`: gradients with respect to :math:`\mu^{in}`, each :math:`\mu_k` and each :math:`\sigma^2_k`.

    With :math:`\bar e = \partial L / \partial e` and
    :math:`\partial r_k / \partial \sigma^2_k = -\tfrac12 r_k^3`:

    .. math::

        \frac{\partial L}{\partial \mu^{in}} = \sum_k \bar e_k r_k, \qquad
        \frac{\partial L}{\partial \mu_k} = -\bar e_k r_k, \qquad
        \frac{\partial L}{\partial \sigma^2_k} = -\tfrac12 \bar e_k e_k r_k^2,

    all of shape ``(N, C)`` (the statistics broadcast to ``(N, C)``; summing to a scope's own
    shape is the statistics' VJP's job). For IN the first two cancel exactly.
    """
    xp = namespace(dembedding, embedding)
    dmean_in = xp.zeros_like(dembedding[:, 0, :])
    dmeans, dvars = [], []
    for k, r in enumerate(inv_stds):
        de = dembedding[:, k, :]
        dmean_in = dmean_in + de * r
        dmeans.append(-de * r)
        dvars.append(-0.5 * de * embedding[:, k, :] * r * r)
    return EmbeddingGrads(dmean_in, tuple(dmeans), tuple(dvars))


def embedding_jvp(
    mean_in_dot: Array,
    means_dot: Sequence[Array | None],
    inv_stds_dot: Sequence[Array | None],
    mean_in: Array,
    means: Sequence[Array],
    inv_stds: Sequence[Array],
) -> Array:
    r"""JVP of :func:`embedding`: :math:`\dot e_k = (\dot\mu^{in} - \dot\mu_k)\, r_k + (\mu^{in} - \mu_k)\, \dot r_k`, shape ``(N, K, C)``.

    A ``None`` tangent of :math:`\mu_k` and :math:`r_k` marks a constant (BN in evaluation: the
    running statistics). The transpose of :func:`embedding_vjp`.
    """
    xp = namespace(mean_in_dot, mean_in)
    tangents = []
    for mean, r, mean_dot, r_dot in zip(means, inv_stds, means_dot, inv_stds_dot, strict=True):
        if mean_dot is None:
            tangents.append(mean_in_dot * r)
        else:
            tangents.append((mean_in_dot - mean_dot) * r + (mean_in - mean) * r_dot)
    return xp.stack(tangents, axis=1)


# --------------------------------------------------------------------------------------------
# Stage 2: shared 1-D convolution along channels, then ReLU
# --------------------------------------------------------------------------------------------


class ChannelConvGrads(NamedTuple):
    """What :func:`channel_conv_vjp` returns."""

    de: Array
    dweight: Array
    dbias: Array


def _zero_pad_last(a: Array, width: int, xp: Any) -> Array:
    """``a`` with ``width`` zeros concatenated on both ends of its last axis."""
    if width == 0:
        return a
    zeros = xp.zeros((*a.shape[:-1], width), dtype=a.dtype, device=device(a))
    return xp.concat([zeros, a, zeros], axis=-1)


def channel_conv(e: Array, weight: Array, bias: Array) -> Array:
    r"""One-channel 1-D cross-correlation along the last axis with zero "same" padding.

    .. math::

        z_{\dots c} = b + \sum_{j=0}^{q-1} w_j\, e_{\dots, c + j - p}, \qquad p = \lfloor q/2 \rfloor,

    with :math:`e` taken as 0 outside ``0 <= c < C``: PyTorch's
    ``conv1d(e.reshape(-1, 1, C), w.reshape(1, 1, q), b.reshape(1), padding=p)``. Every leading
    axis (samples, normalizers) is a separate signal; ``w`` and ``b`` are shared by all of them.

    Written as ``q`` shifted slices of the zero-padded signal: plain array-API slicing, and
    ``O(q N K C)`` work, where the equivalent banded ``(C, C)`` matrix would cost ``O(N K C^2)``.
    """
    xp = namespace(e, weight, bias)
    q, C = weight.shape[0], e.shape[-1]
    padded = _zero_pad_last(e, q // 2, xp)
    z = xp.zeros_like(e) + bias
    for j in range(q):
        z = z + weight[j] * padded[..., j : j + C]
    return z


def channel_conv_vjp(dz: Array, e: Array, weight: Array) -> ChannelConvGrads:
    r"""VJP of :func:`channel_conv`: ``(de, dweight, dbias)``.

    .. math::

        \frac{\partial L}{\partial w_j} = \sum_{\dots, c} \bar z_{\dots c}\, e_{\dots, c + j - p}, \qquad
        \frac{\partial L}{\partial b} = \sum \bar z, \qquad
        \frac{\partial L}{\partial e_{\dots c}} = \sum_j w_j\, \bar z_{\dots, c - j + p}

    (the kernel gradient is the cross-correlation of the input with the upstream gradient; the
    input gradient is the full convolution of the upstream gradient with the kernel, again with
    zeros outside ``0 <= c < C``).
    """
    xp = namespace(dz, e, weight)
    q, C = weight.shape[0], e.shape[-1]
    p = q // 2
    padded_e = _zero_pad_last(e, p, xp)
    dweight = xp.stack([xp.sum(dz * padded_e[..., j : j + C]) for j in range(q)])
    dbias = xp.sum(dz)
    padded_dz = _zero_pad_last(dz, p, xp)
    de = xp.zeros_like(e)
    for j in range(q):
        de = de + weight[j] * padded_dz[..., 2 * p - j : 2 * p - j + C]
    return ChannelConvGrads(de, dweight, dbias)


def channel_conv_jvp(e_dot: Array, weight_dot: Array, bias_dot: Array, e: Array, weight: Array) -> Array:
    r"""JVP of :func:`channel_conv`: the convolution is bilinear in the kernel and the signal, so

    .. math:: \dot z = \dot b + \sum_j \big(w_j\, \dot e_{\dots, c + j - p} + \dot w_j\, e_{\dots, c + j - p}\big),

    the product rule on every tap of the zero-padded signal. The transpose of :func:`channel_conv_vjp`.
    """
    xp = namespace(e_dot, e, weight, weight_dot)
    q, C = weight.shape[0], e.shape[-1]
    padded, padded_dot = _zero_pad_last(e, q // 2, xp), _zero_pad_last(e_dot, q // 2, xp)
    z_dot = xp.zeros_like(e) + bias_dot
    for j in range(q):
        z_dot = z_dot + weight[j] * padded_dot[..., j : j + C] + weight_dot[j] * padded[..., j : j + C]
    return z_dot


def relu(z: Array) -> Array:
    """:math:`\\max(z, 0)`."""
    xp = namespace(z)
    return xp.where(z > 0.0, z, xp.zeros_like(z))


def relu_vjp(da: Array, z: Array) -> Array:
    """VJP of :func:`relu`: ``da`` where ``z > 0``, else 0 (the derivative at ``z = 0`` is taken as 0, as in PyTorch)."""
    xp = namespace(da, z)
    return xp.where(z > 0.0, da, xp.zeros_like(da))


def relu_jvp(z_dot: Array, z: Array) -> Array:
    """JVP of :func:`relu`: ``z_dot`` where ``z > 0``, else 0 (the Jacobian is diagonal: :func:`relu_vjp`'s formula)."""
    return relu_vjp(z_dot, z)


# --------------------------------------------------------------------------------------------
# Stage 3: channel mean
# --------------------------------------------------------------------------------------------


def channel_mean(a: Array) -> Array:
    r"""The score of each normalizer, :math:`s_{nk} = \frac1C \sum_c a_{nkc}` (mean over the last axis)."""
    return namespace(a).mean(a, axis=-1)


def channel_mean_vjp(ds: Array, channels: int) -> Array:
    r"""VJP of :func:`channel_mean`: :math:`\partial L/\partial a_{nkc} = \bar s_{nk} / C`, shape ``(*ds.shape, C)``."""
    xp = namespace(ds)
    return xp.broadcast_to(ds[..., None] / float(channels), (*ds.shape, channels))


def channel_mean_jvp(a_dot: Array) -> Array:
    r"""JVP of :func:`channel_mean` (linear): :math:`\dot s_{nk} = \frac1C \sum_c \dot a_{nkc}`."""
    return channel_mean(a_dot)


# --------------------------------------------------------------------------------------------
# Stage 4: standardisation of the scores over the normalizers
# --------------------------------------------------------------------------------------------


class Standardized(NamedTuple):
    """What :func:`standardize` returns."""

    standardized: Array
    """:math:`\\tilde s`, the shape of the scores."""
    score_inv_std: Array
    """:math:`\\rho`, shape ``(..., 1)``."""


def standardize(s: Array, eps_r: float = EPS_RATIO) -> Standardized:
    r"""Standardise over the last axis: :math:`\tilde s = (s - \bar s)\, \rho`,
    :math:`\rho = \big(\frac1K \sum_k (s_k - \bar s)^2 + \epsilon_r\big)^{-1/2}`.

    Returns ``(standardized, score_inv_std)`` with ``score_inv_std`` :math:`\rho` of shape
    ``(..., 1)``. Equal scores give :math:`\tilde s = 0`. Every row has mean 0 and mean square
    :math:`v / (v + \epsilon_r) < 1` (``v`` the variance of the scores), and a zero-mean vector's
    largest entry is at most :math:`\sqrt{K - 1}` times its root mean square, so
    :math:`\max_k \tilde s_k < \sqrt{K - 1}`: this bounds the largest ratio
    (see :func:`largest_ratio_bound`).
    """
    xp = namespace(s)
    centered = s - xp.mean(s, axis=-1, keepdims=True)
    score_inv_std = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=-1, keepdims=True) + eps_r)
    return Standardized(centered * score_inv_std, score_inv_std)


def standardize_vjp(dstandardized: Array, standardized: Array, score_inv_std: Array) -> Array:
    r"""VJP of :func:`standardize`, means over the last axis:

    .. math::

        \frac{\partial L}{\partial s} = \rho \Big( h - \bar h - \tilde s\, \overline{h \tilde s} \Big),
        \qquad h = \frac{\partial L}{\partial \tilde s} .

    At equal scores (:math:`\tilde s = 0`, e.g. at the initialisation) this is
    :math:`\epsilon_r^{-1/2} (h - \bar h)`: a gain of about 316.
    """
    xp = namespace(dstandardized, standardized, score_inv_std)
    h = dstandardized
    return score_inv_std * (
        h - xp.mean(h, axis=-1, keepdims=True) - standardized * xp.mean(h * standardized, axis=-1, keepdims=True)
    )


def standardize_jvp(scores_dot: Array, standardized: Array, score_inv_std: Array) -> Array:
    r"""JVP of :func:`standardize`, means over the last axis:

    .. math::

        \dot{\tilde s} = \rho\,(\dot s - \bar{\dot s}) + (s - \bar s)\,\dot\rho
        = \rho \Big( \dot s - \bar{\dot s} - \tilde s\, \overline{\dot s\, \tilde s} \Big),
        \qquad \dot\rho = -\rho^3\, \overline{(s - \bar s)\,\dot s},

    the formula of :func:`standardize_vjp`: the Jacobian is symmetric.
    """
    return standardize_vjp(scores_dot, standardized, score_inv_std)


# --------------------------------------------------------------------------------------------
# Stage 5: softmax with a learnable temperature
# --------------------------------------------------------------------------------------------


class TemperedSoftmaxGrads(NamedTuple):
    """What :func:`tempered_softmax_vjp` returns."""

    dstandardized: Array
    dtemperature: Array


def tempered_softmax(standardized: Array, temperature: Array) -> Array:
    r"""The ratios :math:`\lambda = \mathrm{softmax}(\tau \tilde s)` over the last axis (``tau`` multiplies)."""
    return softmax_stage(temperature * standardized)


def tempered_softmax_vjp(dratios: Array, ratios: Array, standardized: Array, temperature: Array) -> TemperedSoftmaxGrads:
    r"""VJP of :func:`tempered_softmax`: ``(dstandardized, dtemperature)``.

    With :math:`h = \partial L/\partial\lambda` and the softmax VJP
    :math:`\ell = \lambda \odot (h - \langle \lambda, h \rangle)` (:func:`refnorm.ops.simplex.softmax_vjp`):

    .. math::

        \frac{\partial L}{\partial \tilde s} = \tau\, \ell, \qquad
        \frac{\partial L}{\partial \tau} = \sum_{n,k} \ell_{nk}\, \tilde s_{nk} .
    """
    xp = namespace(dratios, ratios, standardized, temperature)
    dlogits = softmax_stage_vjp(dratios, ratios)
    return TemperedSoftmaxGrads(temperature * dlogits, xp.sum(dlogits * standardized))


def tempered_softmax_jvp(standardized_dot: Array, temperature_dot: Array, ratios: Array, standardized: Array, temperature: Array) -> Array:
    r"""JVP of :func:`tempered_softmax`: the softmax JVP of the logits' tangent
    :math:`(\tau \tilde s)^\cdot = \tau \dot{\tilde s} + \dot\tau\, \tilde s`,

    .. math:: \dot\lambda = \lambda \odot \big(\ell - \langle \lambda, \ell \rangle\big), \qquad \ell = \tau \dot{\tilde s} + \dot\tau\, \tilde s .
    """
    return softmax_jvp(temperature * standardized_dot + temperature_dot * standardized, ratios)


def largest_ratio_bound(K: int, temperature: float = 1.0) -> float:
    r"""Supremum of :math:`\max_k \lambda_k` for ``K`` normalizers at a fixed temperature :math:`\tau`.

    Standardised scores satisfy :math:`\max_k \tilde s_k < \sqrt{K-1}`, approached when one score
    leads and the others tie at :math:`-1/\sqrt{K-1}`; then

    .. math::

        \max_k \lambda_k < \Big(1 + (K-1)\, e^{-|\tau| K / \sqrt{K-1}}\Big)^{-1},

    0.8066 for ``K = 3`` and ``tau = 1``: EN cannot select a single normalizer unless the
    temperature grows. A negative :math:`\tau` favours the lowest score, with the same bound
    (:math:`-\tilde s` is standardised too). ``K = 1`` gives 1.
    """
    if K == 1:
        return 1.0
    return 1.0 / (1.0 + (K - 1) * math.exp(-abs(temperature) * K / math.sqrt(K - 1)))


# --------------------------------------------------------------------------------------------
# The generator, composed
# --------------------------------------------------------------------------------------------


def ratio_generator(embedding: Array, conv_weight: Array, conv_bias: Array, temperature: Array) -> RatioGenerator:
    """Stages 2–5: the per-sample ratios ``(N, K)`` from the embedding ``(N, K, C)`` (stage 1), with
    every intermediate."""
    z = channel_conv(embedding, conv_weight, conv_bias)
    s = channel_mean(relu(z))
    standardized, score_inv_std = standardize(s)
    ratios = tempered_softmax(standardized, temperature)
    return RatioGenerator(embedding, z, s, standardized, score_inv_std, ratios, conv_weight, temperature)


def ratio_generator_vjp(dratios: Array, generator: RatioGenerator) -> RatioGeneratorGrads:
    """VJP of :func:`ratio_generator`: the stages' VJPs in reverse order (softmax with temperature,
    standardisation, channel mean, ReLU, convolution), down to the embedding."""
    dstandardized, dtemperature = tempered_softmax_vjp(dratios, generator.ratios, generator.standardized, generator.temperature)
    dscores = standardize_vjp(dstandardized, generator.standardized, generator.score_inv_std)
    dactivation = channel_mean_vjp(dscores, generator.embedding.shape[-1])
    dpre_activation = relu_vjp(dactivation, generator.pre_activation)
    dembedding, dconv_weight, dconv_bias = channel_conv_vjp(dpre_activation, generator.embedding, generator.conv_weight)
    return RatioGeneratorGrads(dembedding, dconv_weight, dconv_bias, dtemperature)


def ratio_generator_jvp(embedding_dot: Array, conv_weight_dot: Array, conv_bias_dot: Array, temperature_dot: Array, generator: RatioGenerator) -> Array:
    """JVP of :func:`ratio_generator`: the tangent of the ratios ``(N, K)``, the stages' JVPs in forward
    order (convolution, ReLU, channel mean, standardisation, softmax with temperature)."""
    z_dot = channel_conv_jvp(embedding_dot, conv_weight_dot, conv_bias_dot, generator.embedding, generator.conv_weight)
    scores_dot = channel_mean_jvp(relu_jvp(z_dot, generator.pre_activation))
    standardized_dot = standardize_jvp(scores_dot, generator.standardized, generator.score_inv_std)
    return tempered_softmax_jvp(standardized_dot, temperature_dot, generator.ratios, generator.standardized, generator.temperature)


# --------------------------------------------------------------------------------------------
# Every stage on its own, for the gradient checker (stage 1, through the statistics of x, is
# refnorm.ops.exemplarnorm.embedding_linearize)
# --------------------------------------------------------------------------------------------


def channel_conv_linearize(e: Array, conv_weight: Array, conv_bias: Array) -> Linearized:
    """Stage 2, ``relu(channel_conv(e, w, b))``; the active set is the ReLU's sign pattern."""
    z = channel_conv(e, conv_weight, conv_bias)
    return Linearized(
        out=relu(z),
        pullback=lambda da: tuple(channel_conv_vjp(relu_vjp(da, z), e, conv_weight)),
        pushforward=lambda e_dot, w_dot, b_dot: relu_jvp(channel_conv_jvp(e_dot, w_dot, b_dot, e, conv_weight), z),
        active_set=z > 0.0,
    )


def channel_mean_linearize(activation: Array) -> Linearized:
    """Stage 3, the channel mean."""
    return Linearized(
        out=channel_mean(activation), pullback=lambda ds: (channel_mean_vjp(ds, activation.shape[-1]),), pushforward=channel_mean_jvp
    )


def standardize_linearize(scores: Array) -> Linearized:
    """Stage 4, the standardisation over the normalizers (``eps_r`` = :data:`EPS_RATIO`)."""
    standardized, score_inv_std = standardize(scores)
    return Linearized(
        out=standardized,
        pullback=lambda dstd: (standardize_vjp(dstd, standardized, score_inv_std),),
        pushforward=lambda scores_dot: standardize_jvp(scores_dot, standardized, score_inv_std),
    )


def tempered_softmax_linearize(standardized: Array, temperature: Array) -> Linearized:
    """Stage 5, ``softmax(tau * s_std)``, in both arguments."""
    ratios = tempered_softmax(standardized, temperature)
    return Linearized(
        out=ratios,
        pullback=lambda dratios: tuple(tempered_softmax_vjp(dratios, ratios, standardized, temperature)),
        pushforward=lambda s_dot, tau_dot: tempered_softmax_jvp(s_dot, tau_dot, ratios, standardized, temperature),
    )
