r"""Running BN statistics, returned as new values (never updated in place).

Two ways to estimate the BN statistics used in evaluation (spec-notes §2.4):

* **Exponential moving average** (:class:`RunningStats`, :func:`ema_update`), with the official
  momentum convention: ``momentum`` weights the OLD value,

  .. math:: r \leftarrow m\, r + (1 - m)\, b .

  PyTorch's ``BatchNorm(momentum=p)`` is ``m = 1 - p`` here (official 0.9 = PyTorch 0.1).
* **Batch average** (:class:`BatchAverage`, :func:`accumulate`, :func:`finalize`): forward ``T``
  batches in training mode without updating any parameter, then

  .. math::

      \mu = \frac1T \sum_t \mu_t, \qquad
      \sigma^2 = \frac1T \sum_t (\mu_t^2 + \sigma_t^2) - \mu^2 ,

  the pooled variance of all ``T`` batches (law of total variance), as the official
  ``sn_helper`` computed it. refnorm accumulates the equivalent
  :math:`\sigma^2 = \frac1T\sum_t \sigma^2_t + \frac1T \sum_t (\mu_t - \mu)^2` with Chan's
  update for the spread of the batch means, so no ``E[x^2] - \mu^2`` cancellation occurs for
  features with large offsets.

The variance stored is the BN variance of the layer's convention (what training used), so an
evaluation with running statistics equal to one batch's statistics reproduces training mode.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

from ._validation import (
    check_finite_number,
    check_floating,
    check_int,
    check_nonnegative_number,
    check_same_dtype,
    check_shape,
    check_unit_interval,
    check_values,
    describe,
    namespace_of,
    overflow_checked_afterwards,
)
from .._xp import Array, full_like_on, namespace
from .statistics import ScopeMoments


class RunningStats(NamedTuple):
    """Running BN mean and variance, each of shape ``(C,)``.

    Build one from a ``(mean, var)`` pair with ``RunningStats(mean, var)``, or fresh ones with
    :func:`initial_running_stats`. Every function that takes one checks it: arrays of the layer
    input's library, dtype and device, shape ``(C,)``, finite, ``var >= 0``.
    """

    mean: Array
    var: Array


class BatchAverage(NamedTuple):
    """Accumulator of the batch-average mode: ``count`` batches seen so far.

    ``mean`` is the mean of the batch means, ``spread`` the sum of their squared deviations from it
    (Chan et al.), ``var_sum`` the sum of the batch variances. Start from
    :func:`empty_batch_average`, add batches with :func:`accumulate` (or a training forward), and
    finalise with :func:`finalize`. ``count`` is a non-negative int; ``spread`` and ``var_sum`` are
    ``>= 0``.
    """

    count: int
    mean: Array
    spread: Array
    var_sum: Array


# --------------------------------------------------------------------------------------------
# Checks of a running state (every public function below, and the layers, call them)
# --------------------------------------------------------------------------------------------


def _fields(state: RunningStats | BatchAverage) -> tuple[str, ...]:
    return ("mean", "var") if isinstance(state, RunningStats) else ("mean", "spread", "var_sum")


def check_state_type(state: Any, name: str, expected: tuple[type, ...]) -> None:
    """``TypeError`` unless ``state`` is one of ``expected``; a ``(mean, var)`` pair is told how to
    become a :class:`RunningStats`."""
    if isinstance(state, expected):
        return
    message = f"{name} must be {' or '.join(kind.__name__ for kind in expected)}, got {describe(state)}"
    if RunningStats in expected and type(state) in (tuple, list) and len(state) == 2:
        message += "; build one from a (mean, var) pair with refnorm.RunningStats(mean, var)"
    elif BatchAverage in expected and type(state) in (tuple, list):
        message += "; start one with refnorm.empty_batch_average(C, x)"
    raise TypeError(message)


def check_state_arrays(
    state: RunningStats | BatchAverage,
    name: str,
    *,
    batch: dict[str, Any] | None = None,
    like: Array | None = None,
    like_name: str = "x",
    channels: int | None = None,
) -> tuple[Any, int]:
    """Check the arrays of a running state (and of a ``batch`` of new statistics, by name): one
    library with ``like``, real floating, the dtype of ``like`` (else of ``{name}.mean``), shape
    ``(C,)`` with ``C = channels`` (else the length of ``{name}.mean``); a :class:`BatchAverage`'s
    ``count`` a non-negative int. Returns the namespace and ``C``. Values are not looked at
    (:func:`check_state_values`)."""
    arrays = {f"{name}.{field}": getattr(state, field) for field in _fields(state)}
    arrays.update(batch or {})
    xp = namespace_of({like_name: like, **arrays} if like is not None else arrays)
    for array_name, array in arrays.items():
        check_floating(xp, array, array_name)
    reference_name, reference = (like_name, like) if like is not None else (f"{name}.mean", state.mean)
    if channels is None:
        if reference.ndim != 1:
            raise ValueError(f"{reference_name} has shape {tuple(reference.shape)}, expected (C,), one entry per channel")
        channels = int(reference.shape[0])
    for array_name, array in arrays.items():
        check_shape(array, array_name, (channels,), "(C,)")
    check_same_dtype(reference_name, reference, [item for item in arrays.items() if item[0] != reference_name])
    if isinstance(state, BatchAverage):
        check_int(state.count, f"{name}.count", 0)
    return xp, channels


def check_state_values(xp: Any, state: RunningStats | BatchAverage, name: str) -> None:
    """``ValueError`` naming the field of a running state that is not finite, or a variance
    (``var``; a :class:`BatchAverage`'s ``spread`` and ``var_sum``) with a negative entry."""
    for field in _fields(state):
        check_values(xp, getattr(state, field), f"{name}.{field}", nonnegative=field != "mean")


def _check_batch_values(xp: Any, batch_mean: Array, batch_var: Array) -> None:
    check_values(xp, batch_mean, "batch_mean")
    check_values(xp, batch_var, "batch_var", nonnegative=True)


def _like(like: Any, name: str = "like") -> Any:
    xp = namespace_of({name: like})
    check_floating(xp, like, name)
    return xp


def _fits(value: float, name: str, xp: Any, like: Array) -> None:
    largest = float(xp.finfo(like.dtype).max)
    if abs(value) > largest:
        raise ValueError(f"{name} = {value!r} overflows {like.dtype} (the dtype of like); expected |{name}| <= {largest:.6g}")


# --------------------------------------------------------------------------------------------
# The public functions
# --------------------------------------------------------------------------------------------


def initial_running_stats(channels: int, like: Array, *, mean: float = 0.0, var: float = 1.0) -> RunningStats:
    """Fresh running statistics of shape ``(channels,)`` with the dtype and device of ``like``.

    The official code starts both at zero (``var=0.0``); PyTorch's BatchNorm starts the variance at
    one. See :func:`refnorm.ops.conventions.preset`.

    Parameters
    ----------
    channels
        ``C``, an int >= 1.
    like
        Any real floating array (usually the layer input ``x``).
    mean, var
        The initial values: finite numbers, ``var >= 0``.
    """
    channels = check_int(channels, "channels", 1)
    xp = _like(like)
    mean = check_finite_number(mean, "mean")
    var = check_nonnegative_number(var, "var")
    _fits(mean, "mean", xp, like)
    _fits(var, "var", xp, like)
    return RunningStats(full_like_on(like, (channels,), mean, xp), full_like_on(like, (channels,), var, xp))


def empty_batch_average(channels: int, like: Array) -> BatchAverage:
    """An accumulator that has seen no batch (``channels`` an int >= 1, ``like`` a real floating array)."""
    channels = check_int(channels, "channels", 1)
    xp = _like(like)
    zeros = full_like_on(like, (channels,), 0.0, xp)
    return BatchAverage(count=0, mean=zeros, spread=zeros, var_sum=zeros)


def ema_update(running: RunningStats, batch_mean: Array, batch_var: Array, momentum: float) -> RunningStats:
    """``momentum * running + (1 - momentum) * batch`` for mean and variance (a new value).

    ``running`` a :class:`RunningStats`; ``batch_mean`` and ``batch_var`` ``(C,)`` arrays of its
    library and dtype, finite, ``batch_var >= 0``; ``momentum`` in ``[0, 1]``.
    """
    check_state_type(running, "running", (RunningStats,))
    xp, _ = check_state_arrays(running, "running", batch={"batch_mean": batch_mean, "batch_var": batch_var})
    momentum = check_unit_interval(momentum, "momentum")
    check_state_values(xp, running, "running")
    _check_batch_values(xp, batch_mean, batch_var)
    return _ema_update(running, batch_mean, batch_var, momentum)


def _ema_update(running: RunningStats, batch_mean: Array, batch_var: Array, momentum: float) -> RunningStats:
    """:func:`ema_update` on checked arguments."""
    return RunningStats(
        mean=momentum * running.mean + (1.0 - momentum) * batch_mean,
        var=momentum * running.var + (1.0 - momentum) * batch_var,
    )


def accumulate(average: BatchAverage, batch_mean: Array, batch_var: Array) -> BatchAverage:
    """Add one batch's BN mean and variance to the batch-average accumulator (a new value).

    ``average`` a :class:`BatchAverage`; ``batch_mean`` and ``batch_var`` ``(C,)`` arrays of its
    library and dtype, finite, ``batch_var >= 0``. ``ValueError`` naming ``batch_mean`` or
    ``batch_var`` when the pooled spread or the sum of variances would overflow the dtype.
    """
    check_state_type(average, "average", (BatchAverage,))
    xp, _ = check_state_arrays(average, "average", batch={"batch_mean": batch_mean, "batch_var": batch_var})
    check_state_values(xp, average, "average")
    _check_batch_values(xp, batch_mean, batch_var)
    return _accumulate(xp, average, batch_mean, batch_var, check=True)


def _accumulate(
    xp: Any, average: BatchAverage, batch_mean: Array, batch_var: Array, *, check: bool, names: tuple[str, str] = ("batch_mean", "batch_var")
) -> BatchAverage:
    """:func:`accumulate` on checked arguments: Chan's update of the mean and the spread of the batch
    means; ``check``: ``ValueError`` naming ``names`` (of the batch mean and variance) when a sum overflowed."""
    count = average.count + 1
    with overflow_checked_afterwards() if check else contextlib.nullcontext():
        delta = batch_mean - average.mean
        mean = average.mean + delta / float(count)
        spread = average.spread + delta * (batch_mean - mean)
        var_sum = average.var_sum + batch_var
    if check:
        mean_name, var_name = names
        check_values(xp, spread, mean_name, message=f"{mean_name} lies so far from the accumulated mean that their spread overflows {spread.dtype}")
        check_values(xp, var_sum, var_name, message=f"{var_name} added to the accumulated variances overflows {var_sum.dtype}")
    return BatchAverage(count=count, mean=mean, spread=spread, var_sum=var_sum)


def finalize(average: BatchAverage) -> RunningStats:
    """Running statistics from ``T = average.count`` accumulated batches (see the module docstring).

    ``ValueError`` for an accumulator that has seen no batch (``count = 0``).
    """
    check_state_type(average, "average", (BatchAverage,))
    xp, _ = check_state_arrays(average, "average")
    if average.count < 1:
        raise ValueError(f"finalize needs at least one accumulated batch, got count = {average.count}")
    check_state_values(xp, average, "average")
    T = float(average.count)
    return RunningStats(mean=average.mean, var=(average.var_sum + average.spread) / T)


def check_running(running: Any, channels: int, like: Array, name: str = "running", like_name: str = "x") -> Any:
    """``TypeError``/``ValueError`` unless ``running`` is a :class:`RunningStats` or
    :class:`BatchAverage` of ``(C,)`` arrays of ``like``'s library, dtype and device. Returns the
    namespace (values: :func:`check_state_values`)."""
    check_state_type(running, name, (RunningStats, BatchAverage))
    xp, _ = check_state_arrays(running, name, like=like, like_name=like_name, channels=channels)
    return xp


def check_running_for_layer(
    running: Any, normalizers: tuple[str, ...], *, training: bool, channels: int, like: Array, like_name: str = "x"
) -> None:
    """Validate a layer's running state (structure only; :func:`check_state_values` checks the
    values): ``(C,)`` arrays of ``like``'s library and dtype whenever one is given, and, in
    evaluation with BN in the set, finalised statistics (a :class:`BatchAverage` must go through
    :func:`finalize` first). Shared by SN and EN."""
    if running is not None:
        check_running(running, channels, like, like_name=like_name)
    if "bn" not in normalizers or training:
        return
    if running is None:
        raise ValueError(
            "evaluation mode with 'bn' in normalizers needs running statistics; got running=None. Pass the running "
            f"state a training call returned, or start from refnorm.initial_running_stats(C, x) (C = {channels})"
        )
    if isinstance(running, BatchAverage):
        raise ValueError("running is a BatchAverage accumulator; call refnorm.finalize(running) before evaluation")


def use_running_statistics(
    scopes: ScopeMoments,
    running: RunningStats | BatchAverage | None,
    *,
    training: bool,
    momentum: float,
    channels: int,
    check_finite: bool = False,
    name: str = "x",
) -> tuple[ScopeMoments, RunningStats | BatchAverage | None]:
    """The scope statistics a layer normalizes with, and its new running state (SPEC §2).

    Training: the batch statistics are used unchanged, and ``running`` (if given) takes in the
    batch BN mean and variance (the update of :func:`ema_update` for :class:`RunningStats`, of
    :func:`accumulate` for :class:`BatchAverage`). Evaluation: the BN pair is replaced by
    ``running`` reshaped to ``(1, C)``, and the running state is returned unchanged. Without
    ``"bn"`` in the set, or in training without ``running``, the new state is ``None``. Shared by
    SN and EN, on arguments their entry point has checked.

    ``check_finite``: ``ValueError`` naming the layer input ``name`` when a variance computed from
    it overflowed: instance means so far apart that a pooled variance is infinite (``x[0] += 3e154``
    in float64 makes the BN variance overflow; its output would be 0 where it should be -0.58).
    The instance moments are finite already (stage 1), and the running statistics were checked at
    the entry point, so only the pooled variances of the input that are used are checked.
    """
    xp = namespace(scopes.means[0])
    used = list(zip(scopes.normalizers, scopes.variances, strict=True))
    if "bn" in scopes.normalizers and not training:
        used = [(scope, var) for scope, var in used if scope != "bn"]  # the running BN variance is used instead
    if check_finite:
        for scope, var in used:
            if scope != "in":  # the instance variance is stage 1's, checked there
                check_values(
                    xp, var, name,
                    message=f"{name} has values so far apart that the {scope.upper()} variance overflows {var.dtype}; "
                    f"refnorm needs input whose pooled statistics are finite (rescale or centre {name})",
                )  # fmt: skip
    if "bn" not in scopes.normalizers:
        return scopes, None
    bn = scopes.normalizers.index("bn")
    if training:
        if running is None:
            return scopes, None
        batch_mean = xp.reshape(scopes.means[bn], (channels,))
        batch_var = xp.reshape(scopes.variances[bn], (channels,))
        if isinstance(running, BatchAverage):
            names = (f"{name} (its BN mean)", f"{name} (its BN variance)")
            return scopes, _accumulate(xp, running, batch_mean, batch_var, check=check_finite, names=names)
        return scopes, _ema_update(running, batch_mean, batch_var, momentum)
    means, variances = list(scopes.means), list(scopes.variances)
    means[bn] = xp.reshape(running.mean, (1, channels))
    variances[bn] = xp.reshape(running.var, (1, channels))
    return ScopeMoments(scopes.normalizers, tuple(means), tuple(variances)), running
