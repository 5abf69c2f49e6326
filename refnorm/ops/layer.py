r"""One check of a layer call, shared by SN, SSN, the plain normalizers and EN.

A layer call is an input ``x`` of shape ``(N, C, *spatial)``, the affine parameters ``gamma`` and
``beta``, the op's own parameters (SN's logits, EN's kernel, bias and temperature), a running state
and options. :func:`check_layer_call` validates what every layer has in common, once, at the public
entry point, and returns a :class:`LayerConfig`; each op adds its own checks on top (the logits'
length for SN, the kernel size for EN) and then runs its stages, which trust their inputs.

Structure is checked before values: array types, dtypes, shapes and options first, then
:func:`check_finite_parameters` (one reduction per parameter and running field) last. ``x``
itself is checked for NaN and infinity through its instance moments, which every layer computes
anyway (:func:`refnorm.ops.statistics.instance_moments_and_centered`), and for statistics that
overflow through the pooled variances it uses
(:func:`refnorm.ops.running.use_running_statistics`). ``eps`` must keep
:math:`(\sigma^2 + \epsilon)^{-1/2}` and the backward finite in the input's dtype
(:func:`refnorm.ops._validation.smallest_eps`). A backward checks its cache's type and its
upstream gradient (:func:`check_cache`, :func:`check_upstream`: shape, dtype, library, finite).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._validation import (
    check_bool,
    check_eps,
    check_finite,
    check_floating,
    check_record,
    check_same_dtype,
    check_shape,
    check_unit_interval,
    check_values,
    describe,
    namespace_of,
)
from .._xp import Array, namespace
from .conventions import check_convention
from .running import check_running_for_layer, check_state_values
from .statistics import Layout, check_convention_defined, check_normalizers, default_normalizers


@dataclass(frozen=True)
class LayerConfig:
    """Everything about a layer call that is not an array, as far as SN and EN share it."""

    normalizers: tuple[str, ...]
    """The ordered normalizer set, ``("in", "ln", "bn")`` by default."""
    groups: int | None
    """GN's group count (``None`` without GN)."""
    convention: str
    """``"paper"`` or ``"official"`` (:mod:`refnorm.ops.conventions`)."""
    eps: float
    momentum: float
    """EMA weight of the OLD running value."""
    training: bool
    """Batch BN statistics (True) or the running ones (False)."""


def check_layer_input(xp: Any, x: Array, name: str = "x") -> Layout:
    """``TypeError`` unless ``x`` is a real floating array; its :class:`~refnorm.ops.statistics.Layout`."""
    check_floating(xp, x, name)
    return Layout.of(x.shape, name)


def check_layer_arguments(
    xp: Any,
    layout: Layout,
    like: Array,
    parameters: Mapping[str, Array],
    *,
    running: Any,
    training: Any,
    normalizers: Any,
    groups: Any,
    convention: Any,
    eps: Any,
    momentum: Any,
    like_name: str = "x",
    check_finite: Any = True,
) -> LayerConfig:
    """Validate the options, the parameters and the running state of a layer whose input has
    ``layout`` and the dtype of ``like``; return the :class:`LayerConfig`.

    ``parameters`` maps every array argument besides the input by name; each must be a real
    floating array of ``like``'s dtype, and ``gamma`` and ``beta`` (which every layer has; a
    stage checked on its own may have none) must have shape ``(C,)``. The op checks the shapes
    of its other parameters. ``eps`` must lie between :func:`~refnorm.ops._validation.smallest_eps`
    of the dtype and its largest value. Values are not checked here
    (:func:`check_finite_parameters`).
    """
    check_convention(convention)
    normalizers = check_normalizers(default_normalizers(layout) if normalizers is None else normalizers, groups, layout)
    check_convention_defined(convention, normalizers, layout, groups)
    check_bool(training, "training")
    check_bool(check_finite, "check_finite")
    for name, array in parameters.items():
        check_floating(xp, array, name)
    check_same_dtype(like_name, like, list(parameters.items()))
    eps = check_eps(eps, xp, like.dtype)
    momentum = check_unit_interval(momentum, "momentum")
    for name in ("gamma", "beta"):
        if name in parameters:
            check_per_channel(parameters[name], name, layout.C, tuple(like.shape), like_name)
    check_running_for_layer(running, normalizers, training=training, channels=layout.C, like=like, like_name=like_name)
    return LayerConfig(normalizers, groups, convention, eps, momentum, training)


def check_per_channel(array: Array, name: str, channels: int, shape: tuple[int, ...], like_name: str = "x") -> None:
    """``ValueError`` unless ``array`` (``gamma``, ``beta``) has shape ``(C,)``. When its length is the
    input's last axis instead, the message says that refnorm expects channels first: the input is
    probably channels-last (NHWC)."""
    if tuple(array.shape) == (channels,):
        return
    message = f"{name} has shape {tuple(array.shape)}, expected (C,) = ({channels},)"
    if len(shape) > 2 and tuple(array.shape) == (shape[-1],):
        order = (0, len(shape) - 1, *range(1, len(shape) - 1))
        message += (
            f"; {like_name} has shape {shape} and refnorm expects channels first, (N, C, *spatial): if {like_name} "
            f"is channels-last (N, *spatial, C), move its channels to axis 1 first (xp.permute_dims({like_name}, {order}))"
        )
    raise ValueError(message)


def check_layer_call(
    x: Any,
    parameters: Mapping[str, Any],
    *,
    running: Any,
    training: Any,
    normalizers: Any,
    groups: Any,
    convention: Any,
    eps: Any,
    momentum: Any,
    check_finite: Any = True,
) -> tuple[Any, Layout, LayerConfig]:
    """Validate a layer call on one input ``x``: the array namespace of ``x`` and ``parameters``
    (a ``TypeError`` naming any non-array or a second array library), ``x``'s dtype and shape, then
    :func:`check_layer_arguments`. Returns ``(xp, layout, config)``."""
    xp = namespace_of({"x": x, **parameters})
    layout = check_layer_input(xp, x, "x")
    config = check_layer_arguments(
        xp, layout, x, parameters,
        running=running, training=training, normalizers=normalizers, groups=groups, convention=convention,
        eps=eps, momentum=momentum, check_finite=check_finite,
    )  # fmt: skip
    return xp, layout, config


def check_finite_parameters(xp: Any, parameters: Mapping[str, Array], running: Any = None) -> None:
    """``ValueError`` naming the first parameter that holds NaN or infinity, then the first field of
    the running state that is not finite or, for a variance, negative (the last check of a call)."""
    for name, array in parameters.items():
        check_finite(xp, array, name)
    if running is not None:
        check_state_values(xp, running, "running")


def check_cache(cache: Any, expected: type, forward: str) -> None:
    """``TypeError`` unless ``cache`` is the cache ``forward`` returns (a backward fed another op's
    cache, ``None``, or the forward's whole output instead of its ``cache``)."""
    if not isinstance(cache, expected):
        message = f"cache must be the {expected.__name__} that {forward} returns, got {describe(cache)}"
        if isinstance(getattr(cache, "cache", None), expected):
            message += f"; pass its .cache ({forward} returns y, cache, ...)"
        raise TypeError(message)
    check_record(cache, "cache")


def check_ratio_gradient(xp: Any, dratios: Array, what: str, along: str | None = None) -> None:
    """``ValueError`` naming ``dy`` when the gradient with respect to a layer's ratios overflowed
    (``along``: its derivative along the tangents, in an HVP, naming ``along``).

    It sums the upstream gradient against statistics, ``sum_nc dL/dsigma^2 * sigma^2_k``, which
    in float32 exceeds the dtype's range for inputs whose statistics are about ``1e13`` apart
    (``(max|x| / sqrt(var + eps))^3`` beyond ``3e38``), even where the final gradient would fit (a
    ratio on the boundary of the simplex multiplies it by 0). The ratio function's VJP would see
    NaN; this says why, at the stage that overflowed.
    """
    # In float64 there is no wider dtype to point to: the statistics themselves are too large.
    names = along or "dy"
    remedy = f"rescale x or {names}" if dratios.dtype == xp.float64 else "compute this layer in float64"
    quantity = f"the gradient with respect to the {what}" if along is None else f"the derivative along the tangents of the gradient with respect to the {what}"
    check_values(
        xp, dratios, names,
        message=f"{quantity} is not finite: {names} against the forward's statistics overflow{'s' if along is None else ''} "
        f"{dratios.dtype} ({remedy}), or the forward ran with check_finite=False on input it refuses",
    )  # fmt: skip


def check_upstream(dy: Any, like: Array, shape: tuple[int, ...], name: str = "dy", *, values: bool = True) -> Any:
    """The one check of a backward: ``dy`` is a real floating array of the output's ``shape``, of the
    library, dtype and device of ``like`` (an array of the forward's cache), and finite (one
    reduction: a NaN in ``dy`` would make every gradient NaN). Returns the array namespace.

    ``values=False`` leaves out the last check, for a backward that makes it at no cost of its own
    after :func:`normalize_vjp` (:func:`check_upstream_sum`)."""
    xp = namespace_of({name: dy, "the forward's cache": like})
    check_floating(xp, dy, name)
    check_shape(dy, name, shape, "the output's shape")
    check_same_dtype("the output", like, [(name, dy)])
    if values:
        check_values(xp, dy, name)
    return xp


def check_upstream_sum(xp: Any, dbeta: Array, name: str = "dy") -> None:
    r"""``dy``'s value check without a pass of its own: :func:`normalize_vjp`'s
    :math:`\partial L/\partial\beta_c = \sum_{n,i} dy_{nci}` sums every element of ``dy``, so it is
    finite exactly when every element is and no sum overflows (a NaN stays NaN, an infinity stays
    infinite or becomes NaN). A ``(C,)`` check instead of a reduction over ``dy``: a whole read of a
    full-size array saved in every backward."""
    check_values(
        xp, dbeta, name,
        message=f"{name} contains NaN or infinity, or values so large that its sum over the batch and space overflows {dbeta.dtype}; "
        "refnorm needs finite inputs",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The last stage of every layer: normalize with one scale and shift per instance, then the affine
# --------------------------------------------------------------------------------------------


def normalize(centered: Array, gamma: Array, beta: Array, scale: Array, shift: Array) -> Array:
    r"""The normalized map :math:`\hat x = \text{scale}\,(x - \mu^{in}) + \text{shift}` and the
    output :math:`y = \gamma \hat x + \beta`, shape ``(N, C, M)``.

    Every layer's normalized map is an affine function of the centred input
    :math:`x - \mu^{in}` (``centered``, kept by the instance moments) with one ``scale`` and one
    ``shift`` per instance ``(N, C)``, because every statistic is constant over space: SN's
    :math:`\hat x = (x - \mu) r` has :math:`\text{scale} = r`, :math:`\text{shift} = r(\mu^{in} - \mu)`.
    The two affine maps are folded into one,
    :math:`y = (\gamma\,\text{scale})(x - \mu^{in}) + (\gamma\,\text{shift} + \beta)`: one pass.
    """
    return (gamma[None, :] * scale)[:, :, None] * centered + (gamma[None, :] * shift + beta[None, :])[:, :, None]


class NormalizeGrads(NamedTuple):
    """What :func:`normalize_vjp` returns."""

    dgamma: Array
    r""":math:`\partial L/\partial\gamma_c = \sum_{n,i} dy_{nci}\,\hat x_{nci}`."""
    dbeta: Array
    r""":math:`\partial L/\partial\beta_c = \sum_{n,i} dy_{nci}`."""
    sum_dxhat: Array
    r""":math:`G_{nc} = \sum_i \partial L/\partial \hat x_{nci} = \gamma_c \sum_i dy_{nci}`, shape ``(N, C)``."""
    sum_dxhat_centered: Array
    r""":math:`P_{nc} = \sum_i \partial L/\partial \hat x_{nci}\,(x_{nci} - \mu^{in}_{nc})`, shape ``(N, C)``."""
    direct_scale: Array
    r""":math:`\gamma_c\,\text{scale}_{nc}`, shape ``(N, C)``: the *direct term* of the input gradient,
    the gradient with respect to ``x`` with every statistic held fixed, is ``direct_scale * dy``
    (per instance). The layer's backward adds it to the paths through the statistics in its
    last line."""


def normalize_vjp(dy: Array, centered: Array, gamma: Array, scale: Array, shift: Array) -> NormalizeGrads:
    r"""VJP of :func:`normalize`. With :math:`\partial L/\partial \hat x = \gamma\, dy`:

    .. math::

        \frac{\partial L}{\partial\beta_c} = \sum_{n,i} dy_{nci}, \qquad
        \frac{\partial L}{\partial\gamma_c} = \sum_{n,i} dy_{nci}\hat x_{nci}
        = \sum_n \Big(\text{scale}_{nc} \sum_i dy_{nci}(x_{nci} - \mu^{in}_{nc})
        + \text{shift}_{nc} \sum_i dy_{nci}\Big),

    the two per-instance sums :math:`G = \sum_i \partial L/\partial\hat x` and
    :math:`P = \sum_i \partial L/\partial\hat x\,(x - \mu^{in})`, through which the statistics get
    their gradient (each layer's ``mix_vjp`` takes them), and the direct term's factor
    :math:`\gamma\,\text{scale}`: with the statistics held fixed,
    :math:`\partial \hat x_{nci}/\partial x_{nci} = \text{scale}_{nc}`. Two passes over full-size
    arrays: :math:`\sum_i dy` and the contraction :math:`\sum_i dy\,(x - \mu^{in})` (``vecdot``:
    no product array). ``dy`` has shape ``(N, C, M)``.
    """
    xp = namespace(dy, centered)
    sum_dy = xp.sum(dy, axis=2)
    sum_dy_centered = xp.vecdot(dy, centered, axis=-1)
    return NormalizeGrads(
        dgamma=xp.sum(scale * sum_dy_centered + shift * sum_dy, axis=0),
        dbeta=xp.sum(sum_dy, axis=0),
        sum_dxhat=gamma[None, :] * sum_dy,
        sum_dxhat_centered=gamma[None, :] * sum_dy_centered,
        direct_scale=gamma[None, :] * scale,
    )


# --------------------------------------------------------------------------------------------
# Forward mode and second order (docs/sn-jvp-hvp.md): the tangents' one check, and stage 4's
# JVP and the derivative of its VJP
# --------------------------------------------------------------------------------------------


def check_tangents(tangents: Any, expected: type, shapes: Mapping[str, tuple[int, ...]], like: Array, function: str, name: str = "tangents") -> Any:
    """The one check of a JVP's or HVP's tangents: ``tangents`` is the op's gradient container
    ``expected`` (``SwitchNormGrads``, ...), holding for every differentiable argument a finite real
    floating array of that argument's shape (``shapes``, by field) and of the library and dtype of
    ``like`` (an array of the forward's cache). Shapes must be equal, not broadcastable. Returns the
    array namespace; ``function`` names the JVP or HVP in messages.
    """
    if not isinstance(tangents, expected):
        raise TypeError(
            f"{name} must be {'an' if expected.__name__[0] in 'AEIOU' else 'a'} {expected.__name__} holding one tangent per differentiable argument of {function} "
            f"({', '.join(expected._fields)}), got {_other_container(tangents, expected)}"
        )
    xp = namespace_of({**{f"{name}.{field}": getattr(tangents, field) for field in expected._fields}, "the forward's cache": like})
    for field in expected._fields:
        value = getattr(tangents, field)
        check_floating(xp, value, f"{name}.{field}")
        check_same_dtype("the forward's arguments", like, [(f"{name}.{field}", value)])
        check_shape(value, f"{name}.{field}", tuple(shapes[field]), "the shape of its argument")
        check_finite(xp, value, f"{name}.{field}")
    return xp


def _other_container(value: Any, expected: type) -> str:
    """What a tangents argument of the wrong type is, for :func:`check_tangents`'s message: a record's
    fields that are missing or extra (another op's gradient container), or how to build the
    container from a mapping."""
    kind = type(value).__name__
    fields = getattr(type(value), "_fields", None)
    if isinstance(value, Mapping):
        return f"{kind}; build one with {expected.__name__}(**{{...}})"
    if not isinstance(fields, tuple):
        return describe(value)
    missing = [f for f in expected._fields if f not in fields]
    extra = [f for f in fields if f not in expected._fields]
    parts = ([f"no {', '.join(missing)}"] if missing else []) + ([f"an extra {', '.join(extra)}"] if extra else [])
    if not parts:
        return f"{kind} of {type(value).__module__} (another class with the same fields)"
    return f"{kind} with {' and '.join(parts)}"


def normalize_jvp(
    centered: Array, gamma: Array, scale: Array, shift: Array, centered_dot: Array, gamma_dot: Array, beta_dot: Array, scale_dot: Array, shift_dot: Array
) -> Array:
    r"""JVP of :func:`normalize`: the tangent of :math:`y = (\gamma\,\text{scale})(x - \mu^{in}) + (\gamma\,\text{shift} + \beta)`.

    .. math::

        \dot y = (\dot\gamma\,\text{scale} + \gamma\,\dot{\text{scale}})(x - \mu^{in})
        + \gamma\,\text{scale}\,(x - \mu^{in})^\cdot
        + \dot\gamma\,\text{shift} + \gamma\,\dot{\text{shift}} + \dot\beta,

    shape ``(N, C, M)``; ``scale``, ``shift`` and their tangents are ``(N, C)``.
    """
    g = gamma[None, :]
    g_dot = gamma_dot[None, :]
    return (
        (g_dot * scale + g * scale_dot)[:, :, None] * centered
        + (g * scale)[:, :, None] * centered_dot
        + (g_dot * shift + g * shift_dot + beta_dot[None, :])[:, :, None]
    )


def normalize_vjp_jvp(
    dy: Array, centered: Array, gamma: Array, scale: Array, shift: Array, centered_dot: Array, gamma_dot: Array, scale_dot: Array, shift_dot: Array
) -> NormalizeGrads:
    r"""The derivative of :func:`normalize_vjp` along a tangent of the point, ``dy`` held fixed
    (forward-over-reverse), in a :class:`NormalizeGrads` of tangents.

    Only :math:`P_0 = \sum_i dy\,(x - \mu^{in})` depends on the point among the per-instance sums
    (:math:`\dot P_0 = \sum_i dy\,(x - \mu^{in})^\cdot`); with :math:`G_0 = \sum_i dy`:

    .. math::

        \dot{\bar\gamma} = \sum_n (\dot{\text{scale}}\,P_0 + \text{scale}\,\dot P_0 + \dot{\text{shift}}\,G_0), \quad
        \dot{\bar\beta} = 0, \quad
        \dot G = \dot\gamma\, G_0, \quad
        \dot P = \dot\gamma\, P_0 + \gamma\, \dot P_0, \quad
        (\gamma\,\text{scale})^\cdot = \dot\gamma\,\text{scale} + \gamma\,\dot{\text{scale}} .

    """
    xp = namespace(dy, centered)
    sum_dy = xp.sum(dy, axis=2)
    sum_dy_centered = xp.vecdot(dy, centered, axis=-1)
    sum_dy_centered_dot = xp.vecdot(dy, centered_dot, axis=-1)
    return NormalizeGrads(
        dgamma=xp.sum(scale_dot * sum_dy_centered + scale * sum_dy_centered_dot + shift_dot * sum_dy, axis=0),
        dbeta=xp.zeros_like(gamma),
        sum_dxhat=gamma_dot[None, :] * sum_dy,
        sum_dxhat_centered=gamma_dot[None, :] * sum_dy_centered + gamma[None, :] * sum_dy_centered_dot,
        direct_scale=gamma_dot[None, :] * scale + gamma[None, :] * scale_dot,
    )


def constant_scopes(config: LayerConfig) -> tuple[str, ...]:
    """The scopes whose statistics are constants of the call: BN in evaluation (the running statistics).

    Their tangents are ``None`` in the JVPs, as their cotangents are in the VJPs."""
    return () if config.training else ("bn",)
