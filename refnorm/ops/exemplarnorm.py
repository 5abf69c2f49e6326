r"""Exemplar Normalization (EN): the layer, its forward and its hand-derived backward, stage by stage.

EN (Zhang et al., CVPR 2020) gives every *sample* its own importance ratios over the normalizer
set. The paper's method section is not available and no public implementation exists, so this
module is refnorm's definition (SPEC §4); ``docs/exemplar-norm.md`` labels every choice as
refnorm's reading of the paper, lists the alternatives and derives the backward.

Input ``x`` has shape ``(N, C, *spatial)``, ``M`` spatial positions. For every normalizer ``k``
of the set :math:`\Omega` (default IN, LN, BN; any ordered subset of IN, LN, BN, GN) the scope
statistics :math:`\mu_k, \sigma^2_k` come from :mod:`refnorm.ops.statistics` (BN from the running
statistics in evaluation), and

.. math::

    r_k = (\sigma^2_k + \epsilon)^{-1/2}, \qquad \hat x_k = (x - \mu_k)\, r_k .

The ratios :math:`\lambda_n` come from the five-stage ratio generator of
:mod:`refnorm.ops.ratio_generator`. **Mixing** (``mixing="output"``, the default):

.. math::

    y_{nci} = \gamma_c \sum_k \lambda_{nk}\, \hat x_{k,nci} + \beta_c ;

(``mixing="statistics"``, SN's form with the per-sample ratios):

.. math::

    \mu_{nc} = \sum_k \lambda_{nk} \mu_{k,nc}, \quad
    \sigma^2_{nc} = \sum_k \lambda_{nk} \sigma^2_{k,nc}, \quad
    y_{nci} = \gamma_c \frac{x_{nci} - \mu_{nc}}{\sqrt{\sigma^2_{nc} + \epsilon}} + \beta_c .

Both mixtures are computed from the centred input :math:`x - \mu^{in}` with one ``(N, C)``
scale and shift, because every branch's statistics are constant over space:
:math:`\hat x_k = r_k (x - \mu^{in}) + e_k` (:math:`e_k` the embedding). That is exact and keeps
EN's cost at one pass over ``x`` per step, like SN, instead of ``K``.

:func:`exemplar_norm_forward` runs these stages, and :func:`exemplar_norm_backward` their VJPs in
reverse order:

1. the statistics of every branch, :math:`\mu^{in}, \mu_k, \sigma^2_k, r_k` and the centred input
   (:func:`branch_statistics`; backward :func:`branch_statistics_vjp`);
2. the embedding :math:`e` (:func:`~refnorm.ops.ratio_generator.embedding`; backward
   :func:`~refnorm.ops.ratio_generator.embedding_vjp`);
3. the rest of the ratio generator, :math:`e \to z \to s \to \tilde s \to \lambda`
   (:func:`~refnorm.ops.ratio_generator.ratio_generator`; backward
   :func:`~refnorm.ops.ratio_generator.ratio_generator_vjp`);
4. the mixing, one scale and shift per instance (:func:`mix`; backward :func:`mix_vjp`);
5. normalize and affine, :math:`y = \gamma\,(\text{scale}\,(x - \mu^{in}) + \text{shift}) + \beta`
   (:func:`~refnorm.ops.layer.normalize`, shared with SN; backward
   :func:`~refnorm.ops.layer.normalize_vjp`).

Parameters of a layer: ``gamma``, ``beta`` ``(C,)``; ``conv_weight`` :math:`w` ``(q,)`` (odd
``q <= C``, default 3); ``conv_bias`` :math:`b` and ``temperature`` :math:`\tau`, both 0-d.
:func:`exemplar_norm_init` gives SPEC §4's initialisation (``w = 0``, ``b = 1``, ``tau = 1``:
every score equal, so uniform ratios at the start).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._validation import (
    check_choice,
    check_floating,
    check_int,
    check_shape,
    check_values,
    describe,
    namespace_of,
    overflow_checked_afterwards,
)
from .._xp import Array, full_like_on, namespace
from .layer import (
    LayerConfig,
    check_cache,
    check_finite_parameters,
    check_layer_call,
    check_ratio_gradient,
    check_tangents,
    check_upstream,
    check_upstream_sum,
    constant_scopes,
    normalize,
    normalize_jvp,
    normalize_vjp,
)
from .linearized import Linearized
from .ratio_generator import (
    RatioGenerator,
    embedding,
    embedding_jvp,
    embedding_vjp,
    ratio_generator,
    ratio_generator_jvp,
    ratio_generator_vjp,
)
from .running import BatchAverage, RunningStats, use_running_statistics
from .statistics import (
    InstanceMoments,
    Layout,
    ScopeMoments,
    instance_moments_and_centered,
    instance_moments_jvp,
    instance_moments_vjp,
    reduce_to_scope,
    scope_moments,
    scope_moments_jvp,
    scope_moments_vjp,
)

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
class ExemplarNormConfig(LayerConfig):
    """Everything about an EN call that is not an array: the layer options and the mixing."""

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


class BranchGrads(NamedTuple):
    """Gradients with respect to the branch statistics, each ``(N, C)``: what :func:`branch_statistics_vjp` takes."""

    dmean_in: Array
    """With respect to :math:`\\mu^{in}` where it appears directly (in the embedding)."""
    dmeans: tuple[Array, ...]
    """With respect to each :math:`\\mu_k`, broadcast to ``(N, C)``."""
    dvars: tuple[Array, ...]
    """With respect to each :math:`\\sigma^2_k`, broadcast to ``(N, C)``."""


class MixedBranches(NamedTuple):
    """The mixed normalization as a per-instance affine map of the centred input,
    :math:`\\hat x = \\text{scale} \\cdot (x - \\mu^{in}) + \\text{shift}`, and what its VJP needs."""

    mixing: str
    ratios: Array
    """:math:`\\lambda`, shape ``(N, K)``."""
    embedding: Array
    """:math:`e`, shape ``(N, K, C)``."""
    scale: Array
    """Shape ``(N, C)``."""
    shift: Array
    """Shape ``(N, C)``."""
    mean: Array | None
    """Statistics mixing only: :math:`\\mu_{nc}`, the mixed mean (``None`` for output mixing)."""
    var: Array | None
    """Statistics mixing only: :math:`\\sigma^2_{nc}`, the mixed variance without ``eps``."""


class MixedBranchesGrads(NamedTuple):
    """What :func:`mix_vjp` returns, each gradient ``(N, K)`` or ``(N, C)``."""

    dratios: Array
    dmeans: tuple[Array, ...]
    dvars: tuple[Array, ...]


class ExemplarNormCache(NamedTuple):
    """What :func:`exemplar_norm_backward` needs (the centred input, not ``x``)."""

    centered: Array
    """:math:`x - \\mu^{in}`, shape ``(N, C, M)``."""
    gamma: Array
    branches: Branches
    generator: RatioGenerator
    mixture: MixedBranches
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
# Initialisation and the one check of an EN call
# --------------------------------------------------------------------------------------------


def _check_kernel_size(kernel_size: Any, channels: int, name: str) -> int:
    """``ValueError`` unless the kernel size is an odd positive int no larger than ``channels``."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral):  # a NumPy integer too, as check_int
        raise TypeError(f"{name} must be a positive odd int, got {describe(kernel_size)}")
    kernel_size = int(kernel_size)
    if kernel_size < 1:
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
    channels = check_int(channels, "channels", 1)
    kernel_size = _check_kernel_size(kernel_size, channels, "kernel_size")
    xp = namespace_of({"like": like})
    check_floating(xp, like, "like")
    return ExemplarNormParams(
        gamma=full_like_on(like, (channels,), 1.0, xp),
        beta=full_like_on(like, (channels,), 0.0, xp),
        conv_weight=full_like_on(like, (kernel_size,), 0.0, xp),
        conv_bias=full_like_on(like, (), 1.0, xp),
        temperature=full_like_on(like, (), 1.0, xp),
    )


def check_exemplar_norm_call(
    x: Any,
    params: ExemplarNormParams,
    *,
    running: Any,
    training: Any,
    normalizers: Any,
    groups: Any,
    mixing: Any,
    convention: Any,
    eps: Any,
    momentum: Any,
    check_finite: bool,
) -> tuple[Layout, ExemplarNormConfig]:
    """Validate an EN call: the layer check SN shares (:func:`refnorm.ops.layer.check_layer_call`),
    then the mixing, the kernel and the scalar parameters, then finite parameters."""
    parameters = params._asdict()
    xp, layout, layer = check_layer_call(
        x, parameters,
        running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=momentum, check_finite=check_finite,
    )  # fmt: skip
    check_choice(mixing, "mixing", MIXING)
    if params.conv_weight.ndim != 1:
        raise ValueError(
            f"conv_weight has shape {tuple(params.conv_weight.shape)}, expected (q,): one kernel of odd size q "
            "shared by all normalizers (a PyTorch Conv1d(1, 1, q) weight reshaped to (q,))"
        )
    _check_kernel_size(int(params.conv_weight.shape[0]), layout.C, "the kernel size of conv_weight")
    check_shape(params.conv_bias, "conv_bias", (), "a scalar, shape")
    check_shape(params.temperature, "temperature", (), "a scalar, shape")
    if check_finite:  # x itself is checked through its instance moments (branch_statistics)
        check_finite_parameters(xp, parameters, running)
    return layout, ExemplarNormConfig(**vars(layer), mixing=mixing)


def check_generated_scores(xp: Any, generator: RatioGenerator) -> None:
    """``ValueError`` naming ``conv_weight`` and ``conv_bias`` when the ratio generator's scores overflow:
    their spread over the normalizers is infinite (so their inverse standard deviation is 0 and the
    standardised scores would be 0: uniform ratios, silently) or a score is not finite."""
    message = (
        f"conv_weight and conv_bias are so large that the ratio generator's scores overflow {generator.ratios.dtype} "
        "(their spread over the normalizers is infinite); expected parameters whose scores stay finite"
    )
    check_values(xp, generator.score_inv_std, "conv_weight", positive=True, message=message)
    check_values(xp, generator.ratios, "conv_weight", message=message)


# --------------------------------------------------------------------------------------------
# Step 1: the statistics of every branch
# --------------------------------------------------------------------------------------------


def branch_statistics(
    x: Array, running: RunningStats | BatchAverage | None, layout: Layout, config: LayerConfig, *, check_finite: bool = False
) -> tuple[Branches, Array, RunningStats | BatchAverage | None]:
    r"""Scope statistics :math:`\mu_k, \sigma^2_k`, :math:`r_k = (\sigma^2_k + \epsilon)^{-1/2}`,
    the centred input :math:`x - \mu^{in}` ``(N, C, M)`` and the new running state.

    Exactly SN's statistics (:func:`~refnorm.ops.statistics.instance_moments_and_centered`, then
    :func:`~refnorm.ops.statistics.scope_moments`; two-pass, either convention); in evaluation the
    BN pair is the running statistics. ``eps`` is added to every branch's own variance (each
    :math:`\hat x_k` is a plain normalizer). ``check_finite`` rejects NaN or infinity in ``x``
    through the instance moments.
    """
    xp = namespace(x)
    moments, centered = instance_moments_and_centered(x, convention=config.convention, check_finite=check_finite)
    scopes = scope_moments(moments, config.normalizers, convention=config.convention, layout=layout, groups=config.groups, check_finite=False)
    scopes, new_running = use_running_statistics(
        scopes, running, training=config.training, momentum=config.momentum, channels=layout.C, check_finite=check_finite
    )
    inv_stds = tuple(1.0 / xp.sqrt(var + config.eps) for var in scopes.variances)
    return Branches(moments, scopes, inv_stds), centered, new_running


def branch_statistics_vjp(grads: BranchGrads, branches: Branches, centered: Array, layout: Layout, config: LayerConfig) -> Array:
    r"""VJP of :func:`branch_statistics`: the gradient with respect to ``x`` (shape ``(N, C, M)``) of
    everything that depends on the statistics.

    Each ``grads.dmeans[k]``, ``grads.dvars[k]`` is summed to its scope's shape
    (:func:`~refnorm.ops.statistics.reduce_to_scope`; BN in evaluation is a constant and dropped),
    :func:`~refnorm.ops.statistics.scope_moments_vjp` takes them to the instance moments, where
    ``grads.dmean_in`` is added, and :func:`~refnorm.ops.statistics.instance_moments_vjp` to ``x``:

    .. math::

        \frac{\partial L}{\partial x_{nci}} = \frac1M \frac{\partial L}{\partial \mu^{in}_{nc}}
        + \frac{2 (x_{nci} - \mu^{in}_{nc})}{M - d} \frac{\partial L}{\partial s_{nc}} .
    """
    xp = namespace(grads.dmean_in)
    dmeans: list[Array | None] = []
    dvars: list[Array | None] = []
    for scope, dmean, dvar in zip(branches.scopes.normalizers, grads.dmeans, grads.dvars, strict=True):
        if scope == "bn" and not config.training:  # the running statistics: constants
            dmeans.append(None)
            dvars.append(None)
            continue
        dmeans.append(reduce_to_scope(dmean, scope, config.groups, xp))
        dvars.append(reduce_to_scope(dvar, scope, config.groups, xp))
    dmean_in, dvar_in = scope_moments_vjp(
        tuple(dmeans), tuple(dvars), branches.moments, branches.scopes,
        convention=config.convention, layout=layout, groups=config.groups,
    )  # fmt: skip
    return instance_moments_vjp(dmean_in + grads.dmean_in, dvar_in, centered, convention=config.convention, layout=layout)


def branch_statistics_jvp(x_dot: Array, branches: Branches, centered: Array, layout: Layout, config: LayerConfig) -> tuple[Branches, Array]:
    r"""JVP of :func:`branch_statistics`: the tangents of every branch's statistics and of the centred input.

    :func:`~refnorm.ops.statistics.instance_moments_jvp`, then
    :func:`~refnorm.ops.statistics.scope_moments_jvp` and
    :math:`\dot r_k = -\tfrac12 r_k^3\, \dot\sigma^2_k`. In evaluation the BN statistics are constants:
    their tangents are ``None``. ``x_dot`` has shape ``(N, C, M)``. Returns a :class:`Branches` of
    tangents and the centred input's tangent.
    """
    moments_dot, centered_dot = instance_moments_jvp(x_dot, centered, convention=config.convention, layout=layout)
    scopes_dot = scope_moments_jvp(
        moments_dot, branches.moments, branches.scopes,
        convention=config.convention, layout=layout, groups=config.groups, constant=constant_scopes(config),
    )  # fmt: skip
    inv_stds_dot = tuple(
        # r (r^2 var_dot), not r^3 var_dot: r^3 is subnormal for huge variances (switchnorm.mix_jvp)
        None if var_dot is None else -0.5 * r * (var_dot * (r * r)) for r, var_dot in zip(branches.inv_stds, scopes_dot.variances, strict=True)
    )
    return Branches(moments_dot, scopes_dot, inv_stds_dot), centered_dot


# --------------------------------------------------------------------------------------------
# Step 4: mixing
# --------------------------------------------------------------------------------------------


def mix(branches: Branches, ratios: Array, embedding: Array, mixing: str, eps: float) -> MixedBranches:
    r"""The mixed normalization :math:`\hat x = \text{scale}\,(x - \mu^{in}) + \text{shift}`, per instance.

    Output mixing, from :math:`\hat x_k = r_k (x - \mu^{in}) + e_k`:
    :math:`\text{scale} = \sum_k \lambda_k r_k`, :math:`\text{shift} = \sum_k \lambda_k e_k`.

    Statistics mixing: :math:`\mu = \sum_k \lambda_k \mu_k`,
    :math:`\sigma^2 = \sum_k \lambda_k \sigma^2_k`, :math:`r = (\sigma^2 + \epsilon)^{-1/2}`;
    :math:`\text{scale} = r`, :math:`\text{shift} = r (\mu^{in} - \mu)` (``eps`` once, on the mixed
    variance, as in SN).

    ``ratios`` has shape ``(N, K)``; any point of the simplex per row is accepted (the tests pass
    one-hot rows to recover the plain normalizers). ``mixing`` is ``"output"`` or ``"statistics"``.
    """
    xp = namespace(ratios, embedding)
    mean_in = branches.moments.mean
    scopes = branches.scopes
    if mixing == "output":
        scale = xp.zeros_like(mean_in)
        shift = xp.zeros_like(mean_in)
        for k in range(len(scopes.normalizers)):
            scale = scale + ratios[:, k : k + 1] * branches.inv_stds[k]
            shift = shift + ratios[:, k : k + 1] * embedding[:, k, :]
        return MixedBranches(mixing, ratios, embedding, scale, shift, None, None)
    mean = xp.zeros_like(mean_in)
    var = xp.zeros_like(mean_in)
    for k in range(len(scopes.normalizers)):
        mean = mean + ratios[:, k : k + 1] * scopes.means[k]
        var = var + ratios[:, k : k + 1] * scopes.variances[k]
    inv_std = 1.0 / xp.sqrt(var + eps)
    return MixedBranches(mixing, ratios, embedding, inv_std, inv_std * (mean_in - mean), mean, var)


def mix_vjp(sum_dxhat: Array, sum_dxhat_centered: Array, mixture: MixedBranches, branches: Branches) -> MixedBranchesGrads:
    r"""VJP of the mixing: ``(dratios, dmeans, dvars)``, from the per-instance sums of
    :func:`~refnorm.ops.layer.normalize_vjp`, :math:`G = \sum_i \partial L/\partial\hat x`
    (``sum_dxhat``) and :math:`P = \sum_i \partial L/\partial\hat x\,(x - \mu^{in})`
    (``sum_dxhat_centered``).

    Output mixing, :math:`\hat x = \sum_k \lambda_k \hat x_k`: branch ``k`` receives
    :math:`\lambda_k\,\partial L/\partial\hat x`, and :math:`\sum_i \partial L/\partial\hat x\,\hat x_k = r_k P + e_k G`:

    .. math::

        \frac{\partial L}{\partial \lambda_{nk}} = \sum_c (r_k P + e_k G), \quad
        \frac{\partial L}{\partial \mu_k} = -\lambda_k r_k G, \quad
        \frac{\partial L}{\partial \sigma^2_k} = -\tfrac12 \lambda_k r_k^2 (r_k P + e_k G).

    Statistics mixing (SN's :math:`A, B` with per-sample ratios;
    :math:`\sum_i \partial L/\partial\hat x\,\hat x = rP + \text{shift}\,G`):

    .. math::

        A = -r G, \quad B = -\tfrac12 r^2 (r P + \text{shift}\, G), \quad
        \frac{\partial L}{\partial \lambda_{nk}} = \sum_c (A \mu_k + B \sigma^2_k), \quad
        \frac{\partial L}{\partial \mu_k} = \lambda_k A, \quad
        \frac{\partial L}{\partial \sigma^2_k} = \lambda_k B .

    ``dmeans``/``dvars`` are ``(N, C)``; the direct term (statistics held fixed) is
    :func:`~refnorm.ops.layer.normalize_vjp`'s ``dx``.
    """
    xp = namespace(sum_dxhat, sum_dxhat_centered)
    G, P, ratios = sum_dxhat, sum_dxhat_centered, mixture.ratios
    scopes = branches.scopes
    dratios, dmeans, dvars = [], [], []
    if mixture.mixing == "output":
        for k in range(len(scopes.normalizers)):
            r, e, lam = branches.inv_stds[k], mixture.embedding[:, k, :], ratios[:, k : k + 1]
            sum_dxhat_xhat = r * P + e * G  # the sum over i of dL/dxhat times this branch's xhat_k
            dratios.append(xp.sum(sum_dxhat_xhat, axis=1))
            dmeans.append(-lam * r * G)
            dvars.append(-0.5 * lam * r * r * sum_dxhat_xhat)
    else:
        r = mixture.scale
        A = -r * G
        B = -0.5 * r * r * (r * P + mixture.shift * G)
        for k in range(len(scopes.normalizers)):
            lam = ratios[:, k : k + 1]
            dratios.append(xp.sum(A * scopes.means[k] + B * scopes.variances[k], axis=1))
            dmeans.append(lam * A)
            dvars.append(lam * B)
    return MixedBranchesGrads(xp.stack(dratios, axis=1), tuple(dmeans), tuple(dvars))


def mix_jvp(branches: Branches, branches_dot: Branches, ratios_dot: Array, embedding_dot: Array, mixture: MixedBranches) -> MixedBranches:
    r"""JVP of :func:`mix`: a :class:`MixedBranches` of tangents (a ``None`` statistic tangent is a constant).

    Output mixing, :math:`\text{scale} = \sum_k \lambda_k r_k`, :math:`\text{shift} = \sum_k \lambda_k e_k`:

    .. math::

        \dot{\text{scale}} = \sum_k (\dot\lambda_k r_k + \lambda_k \dot r_k), \qquad
        \dot{\text{shift}} = \sum_k (\dot\lambda_k e_k + \lambda_k \dot e_k).

    Statistics mixing (SN's :func:`refnorm.ops.switchnorm.mix_jvp` with per-sample ratios):

    .. math::

        \dot\mu = \sum_k (\dot\lambda_k \mu_k + \lambda_k \dot\mu_k), \quad
        \dot\sigma^2 = \sum_k (\dot\lambda_k \sigma^2_k + \lambda_k \dot\sigma^2_k), \quad
        \dot r = -\tfrac12 r^3 \dot\sigma^2, \quad
        \dot{\text{shift}} = \dot r\,(\mu^{in} - \mu) + r\,(\dot\mu^{in} - \dot\mu).
    """
    xp = namespace(ratios_dot, embedding_dot)
    ratios = mixture.ratios
    scopes, scopes_dot = branches.scopes, branches_dot.scopes
    zeros = xp.zeros_like(branches.moments.mean)
    if mixture.mixing == "output":
        scale_dot, shift_dot = zeros, zeros
        for k in range(len(scopes.normalizers)):
            lam, lam_dot = ratios[:, k : k + 1], ratios_dot[:, k : k + 1]
            scale_dot = scale_dot + lam_dot * branches.inv_stds[k]
            if branches_dot.inv_stds[k] is not None:
                scale_dot = scale_dot + lam * branches_dot.inv_stds[k]
            shift_dot = shift_dot + lam_dot * mixture.embedding[:, k, :] + lam * embedding_dot[:, k, :]
        return MixedBranches(mixture.mixing, ratios_dot, embedding_dot, scale_dot, shift_dot, None, None)
    mean_dot, var_dot = zeros, zeros
    for k in range(len(scopes.normalizers)):
        lam, lam_dot = ratios[:, k : k + 1], ratios_dot[:, k : k + 1]
        mean_dot = mean_dot + lam_dot * scopes.means[k]
        var_dot = var_dot + lam_dot * scopes.variances[k]
        if scopes_dot.means[k] is not None:
            mean_dot = mean_dot + lam * scopes_dot.means[k]
            var_dot = var_dot + lam * scopes_dot.variances[k]
    r = mixture.scale
    inv_std_dot = -0.5 * r * (var_dot * (r * r))  # not r^3 first: subnormal for huge variances (switchnorm.mix_jvp)
    shift_dot = inv_std_dot * (branches.moments.mean - mixture.mean) + r * (branches_dot.moments.mean - mean_dot)
    return MixedBranches(mixture.mixing, ratios_dot, embedding_dot, inv_std_dot, shift_dot, mean_dot, var_dot)


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
    r"""Exemplar Normalization forward (see the module docstring for the equations and stages).

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
    layout, config = check_exemplar_norm_call(
        x, params, running=running, training=training, normalizers=normalizers, groups=groups, mixing=mixing,
        convention=convention, eps=eps, momentum=momentum, check_finite=check_finite,
    )  # fmt: skip
    xp = namespace(x)
    branches, centered, new_running = branch_statistics(x, running, layout, config, check_finite=check_finite)
    e = embedding(branches.moments.mean, branches.scopes.means, branches.inv_stds)
    with overflow_checked_afterwards() if check_finite else contextlib.nullcontext():
        generator = ratio_generator(e, conv_weight, conv_bias, temperature)
    if check_finite:  # the embedding is bounded; scores that overflow come from the kernel and bias
        check_generated_scores(xp, generator)
    mixture = mix(branches, generator.ratios, e, config.mixing, config.eps)
    y = normalize(centered, gamma, beta, mixture.scale, mixture.shift)
    cache = ExemplarNormCache(centered, gamma, branches, generator, mixture, layout, tuple(x.shape), config)
    return ExemplarNormOutput(xp.reshape(y, x.shape), cache, new_running)


def exemplar_norm_backward(dy: Array, cache: ExemplarNormCache) -> ExemplarNormGrads:
    r"""Hand-derived backward of :func:`exemplar_norm_forward`: the stages' VJPs in reverse order
    (``docs/exemplar-norm.md`` derives each).

    * step 5, :func:`~refnorm.ops.layer.normalize_vjp`: :math:`\partial L/\partial\beta`,
      :math:`\partial L/\partial\gamma`, the per-instance sums :math:`G, P` and the direct term's
      factor :math:`\gamma\,\text{scale}`;
    * step 4, :func:`mix_vjp`: :math:`\partial L/\partial\lambda` and the mixing's gradients with
      respect to every :math:`\mu_k, \sigma^2_k`;
    * step 3, :func:`~refnorm.ops.ratio_generator.ratio_generator_vjp`: back through the generator's
      stages 5 to 2, giving the kernel, bias and temperature gradients and :math:`\partial L/\partial e`;
    * step 2, :func:`~refnorm.ops.ratio_generator.embedding_vjp`: :math:`\partial L/\partial e` to
      :math:`\mu^{in}, \mu_k, \sigma^2_k`, added to the mixing's;
    * step 1, :func:`branch_statistics_vjp`: both paths through the statistics to ``x``, to which the
      direct term :math:`\gamma\,\text{scale}\cdot dy` (every statistic held fixed) is added.

    No gradient is stopped: ``dx`` includes the path through the ratio generator. In evaluation
    the BN statistics are constants (they still enter the ratio and mixing gradients).
    """
    check_cache(cache, ExemplarNormCache, "exemplar_norm_forward")
    layout, config = cache.layout, cache.config
    branches, generator, mixture = cache.branches, cache.generator, cache.mixture
    xp = check_upstream(dy, cache.centered, cache.shape, values=False)
    dy3 = xp.reshape(dy, (layout.N, layout.C, layout.M))
    with overflow_checked_afterwards():  # dy is checked through its sums, right after
        normalized = normalize_vjp(dy3, cache.centered, cache.gamma, mixture.scale, mixture.shift)
    check_upstream_sum(xp, normalized.dbeta)
    with overflow_checked_afterwards():
        mixed = mix_vjp(normalized.sum_dxhat, normalized.sum_dxhat_centered, mixture, branches)
    check_ratio_gradient(xp, mixed.dratios, "per-sample ratios")
    generated = ratio_generator_vjp(mixed.dratios, generator)
    embedded = embedding_vjp(generated.dembedding, generator.embedding, branches.inv_stds)
    statistics = BranchGrads(  # the mixing's and the embedding's paths to the statistics, summed
        dmean_in=embedded.dmean_in,
        dmeans=tuple(a + b for a, b in zip(mixed.dmeans, embedded.dmeans, strict=True)),
        dvars=tuple(a + b for a, b in zip(mixed.dvars, embedded.dvars, strict=True)),
    )
    # Both paths through the statistics to x, plus the direct term gamma scale dy (statistics held fixed).
    dx = branch_statistics_vjp(statistics, branches, cache.centered, layout, config)
    dx = dx + normalized.direct_scale[:, :, None] * dy3
    return ExemplarNormGrads(
        dx=xp.reshape(dx, dy.shape),
        dgamma=normalized.dgamma,
        dbeta=normalized.dbeta,
        dconv_weight=generated.dconv_weight,
        dconv_bias=generated.dconv_bias,
        dtemperature=generated.dtemperature,
    )


def exemplar_norm_jvp(tangents: ExemplarNormGrads, cache: ExemplarNormCache) -> Array:
    r"""Hand-derived JVP of :func:`exemplar_norm_forward`: the tangent of ``y`` along ``tangents``, the
    stages' JVPs in forward order.

    ``tangents`` is an ``ExemplarNormGrads(dx=..., dgamma=..., dbeta=..., dconv_weight=...,
    dconv_bias=..., dtemperature=...)`` of tangents, each of its argument's shape and dtype (and
    finite). The stages:

    * step 1, :func:`branch_statistics_jvp`: :math:`\dot\mu^{in}, \dot\mu_k, \dot\sigma^2_k, \dot r_k`
      and the centred input's tangent (none for BN in evaluation);
    * step 2, :func:`~refnorm.ops.ratio_generator.embedding_jvp`: :math:`\dot e`;
    * step 3, :func:`~refnorm.ops.ratio_generator.ratio_generator_jvp`: :math:`\dot\lambda`, through
      the convolution, the ReLU, the channel mean, the standardisation and the tempered softmax;
    * step 4, :func:`mix_jvp`: the tangents of the per-instance scale and shift;
    * step 5, :func:`~refnorm.ops.layer.normalize_jvp`: :math:`\dot y`.

    The transpose of :func:`exemplar_norm_backward`. EN has no second order in refnorm
    (``docs/sn-jvp-hvp.md`` says why).
    """
    check_cache(cache, ExemplarNormCache, "exemplar_norm_forward")
    layout, config = cache.layout, cache.config
    branches, generator, mixture = cache.branches, cache.generator, cache.mixture
    shapes = {
        "dx": cache.shape, "dgamma": (layout.C,), "dbeta": (layout.C,), "dconv_weight": tuple(generator.conv_weight.shape),
        "dconv_bias": (), "dtemperature": (),
    }  # fmt: skip
    xp = check_tangents(tangents, ExemplarNormGrads, shapes, cache.centered, "exemplar_norm_jvp")
    x_dot = xp.reshape(tangents.dx, (layout.N, layout.C, layout.M))
    branches_dot, centered_dot = branch_statistics_jvp(x_dot, branches, cache.centered, layout, config)
    e_dot = embedding_jvp(
        branches_dot.moments.mean, branches_dot.scopes.means, branches_dot.inv_stds,
        branches.moments.mean, branches.scopes.means, branches.inv_stds,
    )  # fmt: skip
    ratios_dot = ratio_generator_jvp(e_dot, tangents.dconv_weight, tangents.dconv_bias, tangents.dtemperature, generator)
    mixture_dot = mix_jvp(branches, branches_dot, ratios_dot, e_dot, mixture)
    y_dot = normalize_jvp(
        cache.centered, cache.gamma, mixture.scale, mixture.shift,
        centered_dot, tangents.dgamma, tangents.dbeta, mixture_dot.scale, mixture_dot.shift,
    )  # fmt: skip
    return xp.reshape(y_dot, cache.shape)


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
    return linearization(y, cache)


def linearization(y: Array, cache: ExemplarNormCache) -> Linearized:
    """An EN forward's output with its backward and JVP (no HVP), and the ReLU's sign pattern as the active set."""
    return Linearized(
        out=y,
        pullback=lambda dy: tuple(exemplar_norm_backward(dy, cache)),
        pushforward=lambda *tangents: exemplar_norm_jvp(ExemplarNormGrads(*tangents), cache),
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
    """The ratio generator's stage 1 as a function of ``x`` alone: ``e(x)``, shape ``(N, K, C)``,
    through every branch's statistics (:func:`branch_statistics`, then
    :func:`~refnorm.ops.ratio_generator.embedding`; the other stages' ``*_linearize`` are in
    :mod:`refnorm.ops.ratio_generator`)."""
    xp, layout, config = check_layer_call(
        x, {}, running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=0.9,
    )  # fmt: skip
    branches, centered, _ = branch_statistics(x, running, layout, config, check_finite=True)
    e = embedding(branches.moments.mean, branches.scopes.means, branches.inv_stds)

    def pullback(de: Array) -> tuple[Array]:
        dmean_in, dmeans, dvars = embedding_vjp(de, e, branches.inv_stds)
        dx = branch_statistics_vjp(BranchGrads(dmean_in, dmeans, dvars), branches, centered, layout, config)
        return (xp.reshape(dx, x.shape),)

    def pushforward(x_dot: Array) -> Array:
        branches_dot, _ = branch_statistics_jvp(xp.reshape(x_dot, centered.shape), branches, centered, layout, config)
        return embedding_jvp(
            branches_dot.moments.mean, branches_dot.scopes.means, branches_dot.inv_stds,
            branches.moments.mean, branches.scopes.means, branches.inv_stds,
        )  # fmt: skip

    return Linearized(out=e, pullback=pullback, pushforward=pushforward)
