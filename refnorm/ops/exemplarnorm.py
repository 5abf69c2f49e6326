r"""Exemplar Normalization (EN): forward, hand-derived backward, and the ratio generator's stages.

EN (Zhang et al., CVPR 2020) gives every *sample* its own importance ratios over the normalizer
set. The paper's method section is not available and no public implementation exists, so this
module is refnorm's definition (SPEC §4); ``docs/exemplar-norm.md`` labels every choice as
refnorm's reading of the paper and lists the alternatives.

Input ``x`` has shape ``(N, C, *spatial)``, ``M`` spatial positions. For every normalizer ``k``
of the set :math:`\Omega` (default IN, LN, BN; any ordered subset of IN, LN, BN, GN) the scope
statistics :math:`\mu_k, \sigma^2_k` come from :mod:`refnorm.ops.statistics` (BN from the running
statistics in evaluation), and

.. math::

    r_k = (\sigma^2_k + \epsilon)^{-1/2}, \qquad \hat x_k = (x - \mu_k)\, r_k .

**Ratio generator** (five stages, each with its own VJP below):

.. math::

    e_{nkc} = \frac1M \sum_i \hat x_{k,nci} = (\mu^{in}_{nc} - \mu_{k,nc})\, r_{k,nc}
    \quad\text{(embedding; identically 0 for IN)}

.. math::

    z_{nkc} = b + \sum_{j=0}^{q-1} w_j\, e_{nk,c+j-\lfloor q/2\rfloor}, \qquad
    a = \max(z, 0) \quad\text{(shared 1-D convolution along channels, zero padding, then ReLU)}

.. math::

    s_{nk} = \frac1C \sum_c a_{nkc}, \qquad
    \tilde s_{nk} = \frac{s_{nk} - \bar s_n}{\sqrt{\frac1K \sum_{k'} (s_{nk'} - \bar s_n)^2 + \epsilon_r}}, \qquad
    \lambda_n = \mathrm{softmax}(\tau\, \tilde s_n),

with :math:`\bar s_n = \frac1K\sum_k s_{nk}` and :math:`\epsilon_r = 10^{-5}`.

**Mixing** (``mixing="output"``, the default):

.. math::

    y_{nci} = \gamma_c \sum_k \lambda_{nk}\, \hat x_{k,nci} + \beta_c ;

(``mixing="statistics"``, SN's form with the per-sample ratios):

.. math::

    \mu_{nc} = \sum_k \lambda_{nk} \mu_{k,nc}, \quad
    \sigma^2_{nc} = \sum_k \lambda_{nk} \sigma^2_{k,nc}, \quad
    y_{nci} = \gamma_c \frac{x_{nci} - \mu_{nc}}{\sqrt{\sigma^2_{nc} + \epsilon}} + \beta_c .

Both mixtures are computed from the centred input :math:`x - \mu^{in}` with one ``(N, C)``
scale and shift, because every branch's statistics are constant over space:
:math:`\hat x_k = r_k (x - \mu^{in}) + e_k`. That is exact and keeps EN's cost at one pass over
``x`` per step, like SN, instead of ``K``.

Parameters of a layer: ``gamma``, ``beta`` ``(C,)``; ``conv_weight`` :math:`w` ``(q,)`` (odd
``q <= C``, default 3); ``conv_bias`` :math:`b` and ``temperature`` :math:`\tau`, both 0-d.
:func:`exemplar_norm_init` gives SPEC §4's initialisation (``w = 0``, ``b = 1``, ``tau = 1``:
every score equal, so uniform ratios at the start).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._validation import (
    check_choice,
    check_finite,
    check_floating,
    check_positive_number,
    check_same_dtype,
    check_shape,
    check_unit_interval,
)
from .._xp import Array, device, full_like_on, namespace
from .conventions import check_convention
from .linearized import Linearized
from .running import BatchAverage, RunningStats, check_running_for_layer, use_running_statistics
from .simplex import softmax, softmax_vjp
from .statistics import (
    InstanceMoments,
    Layout,
    ScopeMoments,
    check_convention_defined,
    check_normalizers,
    default_normalizers,
    instance_moments_and_centered,
    instance_moments_vjp,
    instance_moments_vjp_coefficients,
    reduce_to_scope,
    scope_moments,
    scope_moments_vjp,
)

EPS_RATIO = 1e-5
""":math:`\\epsilon_r`, added to the variance of the scores before standardising them (SPEC §4)."""

MIXING = ("output", "statistics")
"""Names accepted by ``mixing=``: mix the normalized outputs (default) or the statistics."""

EXEMPLAR_NORM_ARGUMENTS = ("x", "gamma", "beta", "conv_weight", "conv_bias", "temperature")
"""The differentiable arguments of :func:`exemplar_norm_forward`, in order."""


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------


class ExemplarNormParams(NamedTuple):
    """The learnable parameters of one EN layer, in the positional order of the forward.

    ``exemplar_norm_forward(x, *params)`` works. A PyTorch port stores ``conv_weight`` as a
    ``Conv1d(1, 1, q)`` weight ``(1, 1, q)`` and ``conv_bias`` as its bias ``(1,)``.
    """

    gamma: Array
    """:math:`\\gamma`, shape ``(C,)``."""
    beta: Array
    """:math:`\\beta`, shape ``(C,)``."""
    conv_weight: Array
    """:math:`w`, shape ``(q,)``, ``q`` odd and ``<= C``."""
    conv_bias: Array
    """:math:`b`, shape ``()``."""
    temperature: Array
    """:math:`\\tau`, shape ``()``."""


@dataclass(frozen=True)
class ExemplarNormConfig:
    """Everything about an EN call that is not an array."""

    normalizers: tuple[str, ...]
    groups: int | None
    convention: str
    eps: float
    momentum: float
    training: bool
    mixing: str


class Branches(NamedTuple):
    """The statistics of every normalizer branch, aligned with ``scopes.normalizers``."""

    moments: InstanceMoments
    """:math:`\\mu^{in}, s`, shape ``(N, C)``."""
    scopes: ScopeMoments
    """:math:`\\mu_k, \\sigma^2_k` as used (BN = running statistics in evaluation), each
    broadcasting to ``(N, C)``."""
    inv_stds: tuple[Array, ...]
    """:math:`r_k = (\\sigma^2_k + \\epsilon)^{-1/2}`, each of the shape of its scope statistic."""


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
    inv_scale: Array
    """:math:`(\\operatorname{Var}_k s + \\epsilon_r)^{-1/2}`, shape ``(N, 1)``."""
    ratios: Array
    """:math:`\\lambda`, shape ``(N, K)``; every row on the simplex."""
    conv_weight: Array
    temperature: Array


class Mixture(NamedTuple):
    """The mixed normalization as a per-instance affine map of the centred input.

    :math:`\\hat x = \\text{scale} \\cdot (x - \\mu^{in}) + \\text{shift}`, both ``(N, C)``.
    """

    scale: Array
    shift: Array
    mean: Array | None
    """Statistics mixing only: :math:`\\mu_{nc}`, the mixed mean (``None`` for output mixing)."""
    var: Array | None
    """Statistics mixing only: :math:`\\sigma^2_{nc}`, the mixed variance without ``eps``."""


class ExemplarNormCache(NamedTuple):
    """What :func:`exemplar_norm_backward` needs (the centred input, not ``x``)."""

    centered: Array
    """:math:`x - \\mu^{in}`, shape ``(N, C, M)``."""
    gamma: Array
    branches: Branches
    generator: RatioGenerator
    mixture: Mixture
    layout: Layout
    shape: tuple[int, ...]
    """The shape of ``x``."""
    config: ExemplarNormConfig

    def arrays(self) -> dict[str, Array]:
        """Every intermediate as a flat ``name -> array`` mapping (for ``.npz`` dumps and golden files).

        ``xhat`` is the mixed normalized map, ``y = gamma * xhat + beta``; ``mean_bn`` and
        ``var_bn`` are the statistics actually used (the running ones in evaluation).
        """
        xp = namespace(self.centered)
        branches, generator, mixture = self.branches, self.generator, self.mixture
        named = {"instance_mean": branches.moments.mean, "instance_var": branches.moments.var}
        for scope, mean, var in zip(branches.scopes.normalizers, branches.scopes.means, branches.scopes.variances, strict=True):
            named[f"mean_{scope}"] = mean
            named[f"var_{scope}"] = var
        named.update(
            embedding=generator.embedding,
            pre_activation=generator.pre_activation,
            scores=generator.scores,
            standardized=generator.standardized,
            ratios=generator.ratios,
        )
        if mixture.mean is not None:
            named.update(mean=mixture.mean, var=mixture.var)
        xhat = mixture.scale[:, :, None] * self.centered + mixture.shift[:, :, None]
        named["xhat"] = xp.reshape(xhat, self.shape)
        return named


class ExemplarNormOutput(NamedTuple):
    """``y, cache, running = exemplar_norm_forward(...)``."""

    y: Array
    cache: ExemplarNormCache
    running: RunningStats | BatchAverage | None
    """The new running state (``None`` when none was given or BN is not in the set)."""


class ExemplarNormGrads(NamedTuple):
    """Gradients of the loss with respect to every EN input."""

    dx: Array
    dgamma: Array
    dbeta: Array
    dconv_weight: Array
    dconv_bias: Array
    dtemperature: Array


# --------------------------------------------------------------------------------------------
# Initialisation and validation
# --------------------------------------------------------------------------------------------


def _check_kernel_size(kernel_size: Any, channels: int, name: str) -> int:
    """``ValueError`` unless the kernel size is an odd positive int no larger than ``channels``."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"{name} must be a positive odd int, got {kernel_size!r}")
    if kernel_size % 2 == 0:
        raise ValueError(
            f"{name} = {kernel_size} is even; expected an odd kernel size q, so that the 'same' zero padding "
            "of q // 2 channels is symmetric and output channel c is centred on input channel c"
        )
    if kernel_size > channels:
        raise ValueError(
            f"{name} = {kernel_size} is larger than the C = {channels} channels the convolution slides along; "
            f"expected an odd kernel size q <= C"
        )
    return kernel_size


def exemplar_norm_init(channels: int, like: Array, *, kernel_size: int = 3) -> ExemplarNormParams:
    """SPEC §4's initial parameters, with the dtype and device of ``like``.

    ``gamma = 1``, ``beta = 0``, ``conv_weight = 0`` (``kernel_size`` taps), ``conv_bias = 1``,
    ``temperature = 1``. The zero kernel makes every pre-activation equal to the bias; the bias
    1 keeps the ReLU active, so the gradient reaches the kernel; all scores are then equal and
    the ratios are exactly uniform, ``1 / K``, for every input.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    kernel_size = _check_kernel_size(kernel_size, channels, "kernel_size")
    xp = namespace(like)
    return ExemplarNormParams(
        gamma=full_like_on(like, (channels,), 1.0, xp),
        beta=full_like_on(like, (channels,), 0.0, xp),
        conv_weight=full_like_on(like, (kernel_size,), 0.0, xp),
        conv_bias=full_like_on(like, (), 1.0, xp),
        temperature=full_like_on(like, (), 1.0, xp),
    )


def _check_arguments(
    x: Array,
    params: ExemplarNormParams,
    *,
    running: Any,
    training: bool,
    normalizers: Any,
    groups: int | None,
    mixing: str,
    convention: str,
    eps: float,
    momentum: float,
    check_finite_input: bool,
) -> tuple[Any, Layout, ExemplarNormConfig]:
    """Validate an EN call; return the namespace, the layout of ``x`` and the config."""
    xp = namespace(x, *params)
    check_floating(xp, x, "x")
    layout = Layout.of(x.shape)
    check_convention(convention)
    check_choice(mixing, "mixing", MIXING)
    normalizers = check_normalizers(default_normalizers(layout) if normalizers is None else normalizers, groups, layout)
    check_convention_defined(convention, normalizers, layout, groups)
    eps = check_positive_number(eps, "eps")
    momentum = check_unit_interval(momentum, "momentum")
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")

    for name, array in zip(ExemplarNormParams._fields, params, strict=True):
        check_floating(xp, array, name)
    check_same_dtype("x", x, list(zip(ExemplarNormParams._fields, params, strict=True)))
    check_shape(params.gamma, "gamma", (layout.C,), "(C,)")
    check_shape(params.beta, "beta", (layout.C,), "(C,)")
    if params.conv_weight.ndim != 1:
        raise ValueError(
            f"conv_weight has shape {tuple(params.conv_weight.shape)}, expected (q,): one kernel of odd size q "
            "shared by all normalizers (a PyTorch Conv1d(1, 1, q) weight reshaped to (q,))"
        )
    _check_kernel_size(int(params.conv_weight.shape[0]), layout.C, "the kernel size of conv_weight")
    check_shape(params.conv_bias, "conv_bias", (), "a scalar, shape")
    check_shape(params.temperature, "temperature", (), "a scalar, shape")

    check_running_for_layer(running, normalizers, training=training, channels=layout.C, like=x)

    if check_finite_input:  # x itself is checked through its instance moments (branch_statistics)
        for name, array in zip(ExemplarNormParams._fields, params, strict=True):
            check_finite(xp, array, name)
    config = ExemplarNormConfig(normalizers, groups, convention, eps, momentum, training, mixing)
    return xp, layout, config


# --------------------------------------------------------------------------------------------
# Stage 0: the statistics of every branch
# --------------------------------------------------------------------------------------------


def branch_statistics(
    x: Array, running: RunningStats | BatchAverage | None, layout: Layout, config: ExemplarNormConfig, *, check_finite: bool = False
) -> tuple[Branches, Array, RunningStats | BatchAverage | None]:
    r"""Scope statistics :math:`\mu_k, \sigma^2_k`, :math:`r_k = (\sigma^2_k + \epsilon)^{-1/2}`,
    the centred input :math:`x - \mu^{in}` ``(N, C, M)`` and the new running state.

    Exactly SN's statistics (:func:`refnorm.ops.statistics.scope_moments`, two-pass, either
    convention); in evaluation the BN pair is the running statistics. ``eps`` is added to every
    branch's own variance (each :math:`\hat x_k` is a plain normalizer). The centred input is the
    one the instance variance is computed from (one pass over ``x`` for both); ``check_finite``
    rejects NaN or infinity in ``x`` through the instance moments
    (:func:`refnorm.ops.statistics.instance_moments`).
    """
    xp = namespace(x)
    moments, centered = instance_moments_and_centered(x, convention=config.convention, check_finite=check_finite)
    scopes = scope_moments(moments, config.normalizers, convention=config.convention, layout=layout, groups=config.groups)
    scopes, new_running = use_running_statistics(
        scopes, running, training=config.training, momentum=config.momentum, channels=layout.C
    )
    inv_stds = tuple(1.0 / xp.sqrt(var + config.eps) for var in scopes.variances)
    return Branches(moments, scopes, inv_stds), centered, new_running


def branch_statistics_vjp(
    dmean_in: Array,
    dmeans: Sequence[Array],
    dvars: Sequence[Array],
    branches: Branches,
    centered: Array,
    layout: Layout,
    config: ExemplarNormConfig,
) -> Array:
    r"""Gradient with respect to ``x`` (shape ``(N, C, M)``) of everything that depends on the statistics.

    ``dmean_in`` is the gradient with respect to :math:`\mu^{in}` where it appears directly (the
    embedding); ``dmeans[k]``, ``dvars[k]`` are the gradients with respect to :math:`\mu_k` and
    :math:`\sigma^2_k` broadcast to ``(N, C)``. Each is summed to its scope's shape
    (:func:`refnorm.ops.statistics.reduce_to_scope`; BN in evaluation is a constant and dropped), then
    :func:`refnorm.ops.statistics.scope_moments_vjp` and
    :func:`refnorm.ops.statistics.instance_moments_vjp` carry them to ``x``:

    .. math::

        \frac{\partial L}{\partial x_{nci}} = \frac1M \frac{\partial L}{\partial \mu^{in}_{nc}}
        + \frac{2 (x_{nci} - \mu^{in}_{nc})}{M - d} \frac{\partial L}{\partial s_{nc}} .
    """
    dmean_moments, dvar_moments = _instance_moment_gradients(dmean_in, dmeans, dvars, branches, layout, config)
    return instance_moments_vjp(dmean_moments, dvar_moments, centered, convention=config.convention, layout=layout)


def _instance_moment_gradients(
    dmean_in: Array, dmeans: Sequence[Array], dvars: Sequence[Array], branches: Branches, layout: Layout, config: ExemplarNormConfig
) -> tuple[Array, Array]:
    """The first steps of :func:`branch_statistics_vjp`: the gradients with respect to the instance
    moments :math:`\\mu^{in}, s`, both ``(N, C)``, before :func:`refnorm.ops.statistics.instance_moments_vjp`."""
    xp = namespace(dmean_in)
    scope_dmeans: list[Array | None] = []
    scope_dvars: list[Array | None] = []
    for scope, dmean, dvar in zip(branches.scopes.normalizers, dmeans, dvars, strict=True):
        if scope == "bn" and not config.training:
            scope_dmeans.append(None)
            scope_dvars.append(None)
            continue
        scope_dmeans.append(reduce_to_scope(dmean, scope, config.groups, xp))
        scope_dvars.append(reduce_to_scope(dvar, scope, config.groups, xp))
    dmean_moments, dvar_moments = scope_moments_vjp(
        tuple(scope_dmeans), tuple(scope_dvars), branches.moments, branches.scopes,
        convention=config.convention, layout=layout, groups=config.groups,
    )  # fmt: skip
    return dmean_moments + dmean_in, dvar_moments


# --------------------------------------------------------------------------------------------
# Ratio generator, stage 1: embedding
# --------------------------------------------------------------------------------------------


def embedding(branches: Branches) -> Array:
    r"""The spatial mean of every normalized map, :math:`e_{nkc} = (\mu^{in}_{nc} - \mu_{k,nc})\, r_{k,nc}`.

    Shape ``(N, K, C)``. Global average pooling of :math:`\hat x_k` equals normalizing the instance
    mean, because :math:`\mu_k` and :math:`r_k` are constant over space. For IN,
    :math:`\mu_k = \mu^{in}` and the embedding is exactly 0 for every input.
    """
    xp = namespace(branches.moments.mean)
    mean_in = branches.moments.mean
    return xp.stack([(mean_in - mean) * r for mean, r in zip(branches.scopes.means, branches.inv_stds, strict=True)], axis=1)


def embedding_vjp(dembedding: Array, embedding: Array, branches: Branches) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
    r"""VJP of :func:`embedding`: gradients with respect to :math:`\mu^{in}`, each :math:`\mu_k` and each :math:`\sigma^2_k`.

    With :math:`\bar e = \partial L / \partial e` and
    :math:`\partial r_k / \partial \sigma^2_k = -\tfrac12 r_k^3`:

    .. math::

        \frac{\partial L}{\partial \mu^{in}} = \sum_k \bar e_k r_k, \qquad
        \frac{\partial L}{\partial \mu_k} = -\bar e_k r_k, \qquad
        \frac{\partial L}{\partial \sigma^2_k} = -\tfrac12 \bar e_k e_k r_k^2,

    all of shape ``(N, C)`` (the statistics broadcast to ``(N, C)``; summing to a scope's own
    shape is :func:`branch_statistics_vjp`'s job). For IN the first two cancel exactly.
    """
    xp = namespace(dembedding, embedding)
    dmean_in = xp.zeros_like(branches.moments.mean)
    dmeans, dvars = [], []
    for k, r in enumerate(branches.inv_stds):
        de = dembedding[:, k, :]
        dmean_in = dmean_in + de * r
        dmeans.append(-de * r)
        dvars.append(-0.5 * de * embedding[:, k, :] * r * r)
    return dmean_in, tuple(dmeans), tuple(dvars)


# --------------------------------------------------------------------------------------------
# Ratio generator, stage 2: shared 1-D convolution along channels, then ReLU
# --------------------------------------------------------------------------------------------


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


def channel_conv_vjp(dz: Array, e: Array, weight: Array) -> tuple[Array, Array, Array]:
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
    return de, dweight, dbias


def relu(z: Array) -> Array:
    """:math:`\\max(z, 0)`."""
    xp = namespace(z)
    return xp.where(z > 0.0, z, xp.zeros_like(z))


def relu_vjp(da: Array, z: Array) -> Array:
    """VJP of :func:`relu`: ``da`` where ``z > 0``, else 0 (the derivative at ``z = 0`` is taken as 0, as in PyTorch)."""
    xp = namespace(da, z)
    return xp.where(z > 0.0, da, xp.zeros_like(da))


# --------------------------------------------------------------------------------------------
# Ratio generator, stage 3: channel mean
# --------------------------------------------------------------------------------------------


def channel_mean(a: Array) -> Array:
    r"""The score of each normalizer, :math:`s_{nk} = \frac1C \sum_c a_{nkc}` (mean over the last axis)."""
    return namespace(a).mean(a, axis=-1)


def channel_mean_vjp(ds: Array, channels: int) -> Array:
    r"""VJP of :func:`channel_mean`: :math:`\partial L/\partial a_{nkc} = \bar s_{nk} / C`, shape ``(*ds.shape, C)``."""
    xp = namespace(ds)
    return xp.broadcast_to(ds[..., None] / float(channels), (*ds.shape, channels))


# --------------------------------------------------------------------------------------------
# Ratio generator, stage 4: standardisation of the scores over the normalizers
# --------------------------------------------------------------------------------------------


def standardize(s: Array, eps_r: float = EPS_RATIO) -> tuple[Array, Array]:
    r"""Standardise over the last axis: :math:`\tilde s = (s - \bar s)\, \rho`,
    :math:`\rho = \big(\frac1K \sum_k (s_k - \bar s)^2 + \epsilon_r\big)^{-1/2}`.

    Returns ``(standardized, inv_scale)`` with ``inv_scale`` :math:`\rho` of shape ``(..., 1)``.
    Equal scores give :math:`\tilde s = 0`. Every row has mean 0 and mean square
    :math:`v / (v + \epsilon_r) < 1` (``v`` the variance of the scores), and a zero-mean vector's
    largest entry is at most :math:`\sqrt{K - 1}` times its root mean square, so
    :math:`\max_k \tilde s_k < \sqrt{K - 1}`: this bounds the largest ratio
    (see :func:`largest_ratio_bound`).
    """
    xp = namespace(s)
    centered = s - xp.mean(s, axis=-1, keepdims=True)
    inv_scale = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=-1, keepdims=True) + eps_r)
    return centered * inv_scale, inv_scale


def standardize_vjp(dstandardized: Array, standardized: Array, inv_scale: Array) -> Array:
    r"""VJP of :func:`standardize`, means over the last axis:

    .. math::

        \frac{\partial L}{\partial s} = \rho \Big( h - \bar h - \tilde s\, \overline{h \tilde s} \Big),
        \qquad h = \frac{\partial L}{\partial \tilde s} .

    At equal scores (:math:`\tilde s = 0`, e.g. at the initialisation) this is
    :math:`\epsilon_r^{-1/2} (h - \bar h)`: a gain of about 316.
    """
    xp = namespace(dstandardized, standardized, inv_scale)
    h = dstandardized
    return inv_scale * (
        h - xp.mean(h, axis=-1, keepdims=True) - standardized * xp.mean(h * standardized, axis=-1, keepdims=True)
    )


# --------------------------------------------------------------------------------------------
# Ratio generator, stage 5: softmax with a learnable temperature
# --------------------------------------------------------------------------------------------


def tempered_softmax(standardized: Array, temperature: Array) -> Array:
    r"""The ratios :math:`\lambda = \mathrm{softmax}(\tau \tilde s)` over the last axis (``tau`` multiplies)."""
    return softmax(temperature * standardized)


def tempered_softmax_vjp(dratios: Array, ratios: Array, standardized: Array, temperature: Array) -> tuple[Array, Array]:
    r"""VJP of :func:`tempered_softmax`: ``(dstandardized, dtemperature)``.

    With :math:`g = \partial L/\partial\lambda` and the softmax VJP
    :math:`\ell = \lambda \odot (g - \langle \lambda, g \rangle)` (:func:`refnorm.ops.simplex.softmax_vjp`):

    .. math::

        \frac{\partial L}{\partial \tilde s} = \tau\, \ell, \qquad
        \frac{\partial L}{\partial \tau} = \sum_{n,k} \ell_{nk}\, \tilde s_{nk} .
    """
    xp = namespace(dratios, ratios, standardized, temperature)
    dlogits = softmax_vjp(dratios, ratios)
    return temperature * dlogits, xp.sum(dlogits * standardized)


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
# The ratio generator, composed
# --------------------------------------------------------------------------------------------


def ratio_generator(branches: Branches, conv_weight: Array, conv_bias: Array, temperature: Array) -> RatioGenerator:
    """Stages 1–5: per-sample ratios ``(N, K)`` from the branch statistics, with every intermediate."""
    e = embedding(branches)
    z = channel_conv(e, conv_weight, conv_bias)
    s = channel_mean(relu(z))
    standardized, inv_scale = standardize(s)
    ratios = tempered_softmax(standardized, temperature)
    return RatioGenerator(e, z, s, standardized, inv_scale, ratios, conv_weight, temperature)


def ratio_generator_vjp(dratios: Array, generator: RatioGenerator) -> tuple[Array, Array, Array, Array]:
    """VJP of :func:`ratio_generator` down to the embedding: ``(dembedding, dconv_weight, dconv_bias, dtemperature)``.

    The stages' VJPs in reverse order: softmax with temperature, standardisation, channel mean,
    ReLU, convolution.
    """
    dstandardized, dtemperature = tempered_softmax_vjp(dratios, generator.ratios, generator.standardized, generator.temperature)
    dscores = standardize_vjp(dstandardized, generator.standardized, generator.inv_scale)
    dactivation = channel_mean_vjp(dscores, generator.embedding.shape[-1])
    dpre_activation = relu_vjp(dactivation, generator.pre_activation)
    dembedding, dconv_weight, dconv_bias = channel_conv_vjp(dpre_activation, generator.embedding, generator.conv_weight)
    return dembedding, dconv_weight, dconv_bias, dtemperature


# --------------------------------------------------------------------------------------------
# Mixing
# --------------------------------------------------------------------------------------------


def mix(branches: Branches, ratios: Array, embedding: Array, mixing: str, eps: float) -> Mixture:
    r"""The mixed normalization :math:`\hat x = \text{scale}\,(x - \mu^{in}) + \text{shift}`, per instance.

    Output mixing, from :math:`\hat x_k = r_k (x - \mu^{in}) + e_k`:
    :math:`\text{scale} = \sum_k \lambda_k r_k`, :math:`\text{shift} = \sum_k \lambda_k e_k`.

    Statistics mixing: :math:`\mu = \sum_k \lambda_k \mu_k`,
    :math:`\sigma^2 = \sum_k \lambda_k \sigma^2_k`, :math:`r = (\sigma^2 + \epsilon)^{-1/2}`;
    :math:`\text{scale} = r`, :math:`\text{shift} = r (\mu^{in} - \mu)` (``eps`` once, on the mixed
    variance, as in SN).

    ``ratios`` has shape ``(N, K)``; any point of the simplex per row is accepted (the tests pass
    one-hot rows to recover the plain normalizers).
    """
    check_choice(mixing, "mixing", MIXING)
    xp = namespace(ratios, embedding)
    mean_in = branches.moments.mean
    scopes = branches.scopes
    K = len(scopes.normalizers)
    if mixing == "output":
        scale = xp.zeros_like(mean_in)
        shift = xp.zeros_like(mean_in)
        for k in range(K):
            scale = scale + ratios[:, k : k + 1] * branches.inv_stds[k]
            shift = shift + ratios[:, k : k + 1] * embedding[:, k, :]
        return Mixture(scale, shift, None, None)
    mean = xp.zeros_like(mean_in)
    var = xp.zeros_like(mean_in)
    for k in range(K):
        mean = mean + ratios[:, k : k + 1] * scopes.means[k]
        var = var + ratios[:, k : k + 1] * scopes.variances[k]
    inv_std = 1.0 / xp.sqrt(var + eps)
    return Mixture(inv_std, inv_std * (mean_in - mean), mean, var)


def mix_vjp(
    sum_ghat_centered: Array, sum_ghat: Array, mixture: Mixture, branches: Branches, ratios: Array, embedding: Array, mixing: str
) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
    r"""VJP of the mixture at fixed centred input: ``(dratios, dmeans, dvars)``.

    Inputs are the per-instance sums :math:`P = \sum_i \hat g_{nci} (x_{nci} - \mu^{in}_{nc})` and
    :math:`G = \sum_i \hat g_{nci}`, with :math:`\hat g = \gamma g`. Output mixing, per branch (the
    branch sees the upstream gradient :math:`\lambda_k \hat g`, and
    :math:`\sum_i \hat g \hat x_k = r_k P + e_k G`):

    .. math::

        \frac{\partial L}{\partial \lambda_{nk}} = \sum_c (r_k P + e_k G), \quad
        \frac{\partial L}{\partial \mu_k} = -\lambda_k r_k G, \quad
        \frac{\partial L}{\partial \sigma^2_k} = -\tfrac12 \lambda_k r_k^2 (r_k P + e_k G).

    Statistics mixing (SN's :math:`A, B` with per-sample ratios; :math:`\sum_i \hat g \hat x = rP + \text{shift}\,G`):

    .. math::

        A = -r G, \quad B = -\tfrac12 r^2 (r P + \text{shift}\, G), \quad
        \frac{\partial L}{\partial \lambda_{nk}} = \sum_c (A \mu_k + B \sigma^2_k), \quad
        \frac{\partial L}{\partial \mu_k} = \lambda_k A, \quad
        \frac{\partial L}{\partial \sigma^2_k} = \lambda_k B .

    The direct term :math:`\partial L / \partial x \mathrel{+}= \text{scale}\cdot\hat g` (statistics
    held fixed) is added by :func:`exemplar_norm_backward`. ``dmeans``/``dvars`` are ``(N, C)``.
    """
    check_choice(mixing, "mixing", MIXING)
    xp = namespace(sum_ghat_centered, sum_ghat, ratios)
    scopes = branches.scopes
    K = len(scopes.normalizers)
    dratios, dmeans, dvars = [], [], []
    if mixing == "output":
        for k in range(K):
            r, e, lam = branches.inv_stds[k], embedding[:, k, :], ratios[:, k : k + 1]
            sum_ghat_xhat = r * sum_ghat_centered + e * sum_ghat
            dratios.append(xp.sum(sum_ghat_xhat, axis=1))
            dmeans.append(-lam * r * sum_ghat)
            dvars.append(-0.5 * lam * r * r * sum_ghat_xhat)
    else:
        r = mixture.scale
        A = -r * sum_ghat
        B = -0.5 * r * r * (r * sum_ghat_centered + mixture.shift * sum_ghat)
        for k in range(K):
            lam = ratios[:, k : k + 1]
            dratios.append(xp.sum(A * scopes.means[k] + B * scopes.variances[k], axis=1))
            dmeans.append(lam * A)
            dvars.append(lam * B)
    return xp.stack(dratios, axis=1), tuple(dmeans), tuple(dvars)


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------


def exemplar_norm_forward(
    x: Array,
    gamma: Array,
    beta: Array,
    conv_weight: Array,
    conv_bias: Array,
    temperature: Array,
    *,
    running: RunningStats | BatchAverage | None = None,
    training: bool = True,
    normalizers: Sequence[str] | None = None,
    groups: int | None = None,
    mixing: str = "output",
    convention: str = "paper",
    eps: float = 1e-5,
    momentum: float = 0.9,
    check_finite: bool = True,
) -> ExemplarNormOutput:
    r"""Exemplar Normalization forward (see the module docstring for the equations).

    Parameters
    ----------
    x
        Input ``(N, C, *spatial)``, any rank >= 2, float32 or float64.
    gamma, beta
        Affine parameters, shape ``(C,)``.
    conv_weight
        Kernel :math:`w` of the shared 1-D convolution along channels, shape ``(q,)``, ``q`` odd
        and ``<= C`` (cross-correlation, as PyTorch's ``conv1d``).
    conv_bias
        Its bias :math:`b`, shape ``()``.
    temperature
        :math:`\tau`, shape ``()``; multiplies the standardised scores. Any finite value.
    running
        Running BN statistics. Training: updated and returned (:class:`RunningStats` by the EMA,
        :class:`BatchAverage` by accumulation). Evaluation: used as the BN statistics, for the
        normalized map and for the embedding (required when ``"bn"`` is in the set).
    training
        Batch BN statistics (True) or running ones (False). Ratios are always computed per sample.
    normalizers
        Ordered subset of ``("in", "ln", "bn", "gn")``; default ``("in", "ln", "bn")``, or
        ``("ln", "bn")`` for ``(N, C)`` input (as SN).
    groups
        GN group count (required with ``"gn"``); must divide ``C``.
    mixing
        ``"output"`` (default): mix the normalized maps. ``"statistics"``: mix means and variances
        with the same per-sample ratios (SN's form).
    convention
        ``"paper"`` (biased variances, default) or ``"official"`` (the official SN code's
        statistics; see :mod:`refnorm.ops.conventions`).
    eps
        Added to each branch's variance (and, for statistics mixing, once to the mixed variance).
    momentum
        EMA weight of the OLD running value (official convention; PyTorch's ``p`` is ``1 - p``).
    check_finite
        Reject NaN/inf in the inputs; switch off only for trusted data. ``x`` is checked through its
        instance moments, which the forward computes anyway (no extra pass over ``x``), the
        parameters elementwise.

    Returns
    -------
    ExemplarNormOutput
        ``(y, cache, running)``: the output, every intermediate (``cache.arrays()``), and the new
        running state.
    """
    params = ExemplarNormParams(gamma, beta, conv_weight, conv_bias, temperature)
    xp, layout, config = _check_arguments(
        x, params, running=running, training=training, normalizers=normalizers, groups=groups, mixing=mixing,
        convention=convention, eps=eps, momentum=momentum, check_finite_input=check_finite,
    )  # fmt: skip
    branches, centered, new_running = branch_statistics(x, running, layout, config, check_finite=check_finite)
    generator = ratio_generator(branches, conv_weight, conv_bias, temperature)
    mixture = mix(branches, generator.ratios, generator.embedding, config.mixing, config.eps)
    # y = gamma * xhat + beta with xhat = scale * centered + shift, folded into one affine map.
    y = (gamma[None, :] * mixture.scale)[:, :, None] * centered + (gamma[None, :] * mixture.shift + beta[None, :])[:, :, None]
    cache = ExemplarNormCache(centered, gamma, branches, generator, mixture, layout, tuple(x.shape), config)
    return ExemplarNormOutput(xp.reshape(y, x.shape), cache, new_running)


def exemplar_norm_backward(dy: Array, cache: ExemplarNormCache) -> ExemplarNormGrads:
    r"""Hand-derived backward of :func:`exemplar_norm_forward` (``docs/exemplar-norm.md`` derives it).

    With :math:`g = \partial L/\partial y`, :math:`\hat x = \text{scale}(x - \mu^{in}) + \text{shift}`
    the mixed map and the per-instance sums :math:`G = \sum_i g`,
    :math:`P = \sum_i g\, (x - \mu^{in})`:

    .. math::

        \frac{\partial L}{\partial \beta_c} = \sum_n G_{nc}, \qquad
        \frac{\partial L}{\partial \gamma_c} = \sum_n (\text{scale}_{nc} P_{nc} + \text{shift}_{nc} G_{nc}) .

    Then, with :math:`\hat g = \gamma g`: :func:`mix_vjp` gives :math:`\partial L/\partial\lambda`
    and the mixing's gradients with respect to every :math:`\mu_k, \sigma^2_k`;
    :func:`ratio_generator_vjp` carries :math:`\partial L/\partial\lambda` back through the five
    stages (giving the kernel, bias and temperature gradients and :math:`\partial L/\partial e`);
    :func:`embedding_vjp` maps :math:`\partial L/\partial e` to :math:`\mu^{in}, \mu_k, \sigma^2_k`;
    :func:`branch_statistics_vjp` takes the sum of both paths to ``x``, and

    .. math::

        \frac{\partial L}{\partial x} = \text{scale}\cdot \hat g
        + \text{(statistics path)} .

    The statistics path is ``offset + slope (x - mu_in)`` per instance
    (:func:`refnorm.ops.statistics.instance_moments_vjp_coefficients`), so ``dx`` is computed in one
    expression with the direct term.

    No gradient is stopped: ``dx`` includes the path through the ratio generator. In evaluation
    the BN statistics are constants (they still enter the ratio and mixing gradients).
    """
    xp = namespace(dy, cache.centered)
    check_floating(xp, dy, "dy")
    check_shape(dy, "dy", cache.shape, "the output's shape")
    check_same_dtype("the output", cache.centered, [("dy", dy)])
    layout, config, branches, generator, mixture = cache.layout, cache.config, cache.branches, cache.generator, cache.mixture
    gamma = cache.gamma

    g = xp.reshape(dy, (layout.N, layout.C, layout.M))
    sum_g = xp.sum(g, axis=2)
    sum_g_centered = xp.vecdot(g, cache.centered, axis=-1)
    dbeta = xp.sum(sum_g, axis=0)
    dgamma = xp.sum(mixture.scale * sum_g_centered + mixture.shift * sum_g, axis=0)

    dratios, dmeans_mix, dvars_mix = mix_vjp(
        gamma[None, :] * sum_g_centered, gamma[None, :] * sum_g, mixture, branches, generator.ratios, generator.embedding,
        config.mixing,
    )  # fmt: skip
    dembedding, dconv_weight, dconv_bias, dtemperature = ratio_generator_vjp(dratios, generator)
    dmean_in, dmeans_emb, dvars_emb = embedding_vjp(dembedding, generator.embedding, branches)
    dmeans = tuple(a + b for a, b in zip(dmeans_mix, dmeans_emb, strict=True))
    dvars = tuple(a + b for a, b in zip(dvars_mix, dvars_emb, strict=True))
    # dx = scale gamma g (statistics held fixed) + offset + slope (x - mu_in) (through them): one sweep.
    dmean_moments, dvar_moments = _instance_moment_gradients(dmean_in, dmeans, dvars, branches, layout, config)
    offset, slope = instance_moments_vjp_coefficients(dmean_moments, dvar_moments, convention=config.convention, layout=layout)
    direct = gamma[None, :] * mixture.scale
    dx = direct[:, :, None] * g + slope[:, :, None] * cache.centered + offset[:, :, None]
    return ExemplarNormGrads(
        dx=xp.reshape(dx, dy.shape),
        dgamma=dgamma,
        dbeta=dbeta,
        dconv_weight=dconv_weight,
        dconv_bias=dconv_bias,
        dtemperature=dtemperature,
    )


# --------------------------------------------------------------------------------------------
# For the gradient checker
# --------------------------------------------------------------------------------------------


def exemplar_norm_linearize(
    x: Array, gamma: Array, beta: Array, conv_weight: Array, conv_bias: Array, temperature: Array, **config: Any
) -> Linearized:
    """EN at a point, as :func:`refnorm.gradcheck` consumes it (``config`` as in the forward).

    The active set is the ReLU's sign pattern ``z > 0``: a direction that flips it crosses a kink
    and is reported as skipped.
    """
    y, cache, _ = exemplar_norm_forward(x, gamma, beta, conv_weight, conv_bias, temperature, **config)
    return Linearized(
        out=y,
        pullback=lambda dy: tuple(exemplar_norm_backward(dy, cache)),
        active_set=cache.generator.pre_activation > 0.0,
    )


def embedding_linearize(
    x: Array,
    *,
    running: RunningStats | None = None,
    training: bool = True,
    normalizers: Sequence[str] | None = None,
    groups: int | None = None,
    convention: str = "paper",
    eps: float = 1e-5,
) -> Linearized:
    """Stage 1 as a function of ``x`` alone: ``e(x)``, shape ``(N, K, C)``, through every branch's statistics."""
    xp = namespace(x)
    check_floating(xp, x, "x")
    check_finite(xp, x, "x")
    layout = Layout.of(x.shape)
    normalizers = check_normalizers(default_normalizers(layout) if normalizers is None else normalizers, groups, layout)
    check_convention_defined(convention, normalizers, layout, groups)
    eps = check_positive_number(eps, "eps")
    check_running_for_layer(running, normalizers, training=training, channels=layout.C, like=x)
    config = ExemplarNormConfig(normalizers, groups, convention, eps, 0.9, training, "output")
    branches, centered, _ = branch_statistics(x, running, layout, config)
    e = embedding(branches)

    def pullback(de: Array) -> tuple[Array]:
        dmean_in, dmeans, dvars = embedding_vjp(de, e, branches)
        return (xp.reshape(branch_statistics_vjp(dmean_in, dmeans, dvars, branches, centered, layout, config), x.shape),)

    return Linearized(out=e, pullback=pullback)


def channel_conv_linearize(e: Array, conv_weight: Array, conv_bias: Array) -> Linearized:
    """Stage 2, ``relu(channel_conv(e, w, b))``; the active set is the ReLU's sign pattern."""
    z = channel_conv(e, conv_weight, conv_bias)
    return Linearized(
        out=relu(z),
        pullback=lambda da: channel_conv_vjp(relu_vjp(da, z), e, conv_weight),
        active_set=z > 0.0,
    )


def channel_mean_linearize(activation: Array) -> Linearized:
    """Stage 3, the channel mean."""
    return Linearized(out=channel_mean(activation), pullback=lambda ds: (channel_mean_vjp(ds, activation.shape[-1]),))


def standardize_linearize(scores: Array) -> Linearized:
    """Stage 4, the standardisation over the normalizers (``eps_r`` = :data:`EPS_RATIO`)."""
    standardized, inv_scale = standardize(scores)
    return Linearized(out=standardized, pullback=lambda dstd: (standardize_vjp(dstd, standardized, inv_scale),))


def tempered_softmax_linearize(standardized: Array, temperature: Array) -> Linearized:
    """Stage 5, ``softmax(tau * s_std)``, in both arguments."""
    ratios = tempered_softmax(standardized, temperature)
    return Linearized(out=ratios, pullback=lambda dratios: tempered_softmax_vjp(dratios, ratios, standardized, temperature))
