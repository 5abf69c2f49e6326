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

from typing import Any, NamedTuple

from ._validation import check_floating, check_shape, check_unit_interval
from .._xp import Array, full_like_on, namespace
from .statistics import ScopeMoments


class RunningStats(NamedTuple):
    """Running BN mean and variance, each of shape ``(C,)``."""

    mean: Array
    var: Array


class BatchAverage(NamedTuple):
    """Accumulator of the batch-average mode: ``count`` batches seen so far.

    ``mean`` is the mean of the batch means, ``spread`` the sum of their squared deviations from it
    (Chan et al.), ``var_sum`` the sum of the batch variances. Finalise with :func:`finalize`.
    """

    count: int
    mean: Array
    spread: Array
    var_sum: Array


def initial_running_stats(channels: int, like: Array, *, mean: float = 0.0, var: float = 1.0) -> RunningStats:
    """Fresh running statistics of shape ``(channels,)`` with the dtype and device of ``like``.

    The official code starts both at zero (``var=0.0``); PyTorch's BatchNorm starts the variance at
    one. See :func:`refnorm.ops.conventions.preset`.
    """
    xp = namespace(like)
    return RunningStats(full_like_on(like, (channels,), mean, xp), full_like_on(like, (channels,), var, xp))


def empty_batch_average(channels: int, like: Array) -> BatchAverage:
    """An accumulator that has seen no batch."""
    xp = namespace(like)
    zeros = full_like_on(like, (channels,), 0.0, xp)
    return BatchAverage(count=0, mean=zeros, spread=zeros, var_sum=zeros)


def ema_update(running: RunningStats, batch_mean: Array, batch_var: Array, momentum: float) -> RunningStats:
    """``momentum * running + (1 - momentum) * batch`` for mean and variance (a new value)."""
    momentum = check_unit_interval(momentum, "momentum")
    return RunningStats(
        mean=momentum * running.mean + (1.0 - momentum) * batch_mean,
        var=momentum * running.var + (1.0 - momentum) * batch_var,
    )


def accumulate(average: BatchAverage, batch_mean: Array, batch_var: Array) -> BatchAverage:
    """Add one batch's BN mean and variance to the batch-average accumulator (a new value)."""
    count = average.count + 1
    delta = batch_mean - average.mean
    mean = average.mean + delta / float(count)
    return BatchAverage(
        count=count,
        mean=mean,
        spread=average.spread + delta * (batch_mean - mean),
        var_sum=average.var_sum + batch_var,
    )


def finalize(average: BatchAverage) -> RunningStats:
    """Running statistics from ``T = average.count`` accumulated batches (see the module docstring)."""
    if average.count < 1:
        raise ValueError("finalize needs at least one accumulated batch, got count = 0")
    T = float(average.count)
    return RunningStats(mean=average.mean, var=(average.var_sum + average.spread) / T)


def check_running(running: Any, channels: int, like: Array, name: str = "running") -> None:
    """``TypeError``/``ValueError`` unless ``running`` holds ``(C,)`` arrays of ``like``'s dtype."""
    if not isinstance(running, RunningStats | BatchAverage):
        raise TypeError(f"{name} must be RunningStats or BatchAverage, got {type(running).__name__}")
    fields = ("mean", "var") if isinstance(running, RunningStats) else ("mean", "spread", "var_sum")
    xp = namespace(like)
    for field in fields:
        array = getattr(running, field)
        check_floating(xp, array, f"{name}.{field}")
        check_shape(array, f"{name}.{field}", (channels,), "(C,)")
        if array.dtype != like.dtype:
            raise TypeError(f"{name}.{field} has dtype {array.dtype}, expected {like.dtype} (the dtype of x)")


def check_running_for_layer(running: Any, normalizers: tuple[str, ...], *, training: bool, channels: int, like: Array) -> None:
    """Validate a layer's running state: ``(C,)`` arrays of ``like``'s dtype when BN is in the set,
    and, in evaluation, finalised statistics (a :class:`BatchAverage` must go through
    :func:`finalize` first). Shared by SN and EN."""
    if "bn" not in normalizers:
        return
    if running is not None:
        check_running(running, channels, like)
    if not training:
        if running is None:
            raise ValueError("evaluation mode with 'bn' in normalizers needs running statistics; got running=None")
        if isinstance(running, BatchAverage):
            raise ValueError("running is a BatchAverage accumulator; call refnorm.ops.running.finalize() before evaluation")


def use_running_statistics(
    scopes: ScopeMoments,
    running: RunningStats | BatchAverage | None,
    *,
    training: bool,
    momentum: float,
    channels: int,
) -> tuple[ScopeMoments, RunningStats | BatchAverage | None]:
    """The scope statistics a layer normalizes with, and its new running state (SPEC §2).

    Training: the batch statistics are used unchanged, and ``running`` (if given) takes in the
    batch BN mean and variance (:func:`ema_update` for :class:`RunningStats`, :func:`accumulate`
    for :class:`BatchAverage`). Evaluation: the BN pair is replaced by ``running`` reshaped to
    ``(1, C)``, and the running state is returned unchanged. Without ``"bn"`` in the set, or in
    training without ``running``, the new state is ``None``. Shared by SN and EN.
    """
    if "bn" not in scopes.normalizers:
        return scopes, None
    bn = scopes.normalizers.index("bn")
    xp = namespace(scopes.means[bn])
    if training:
        if running is None:
            return scopes, None
        batch_mean = xp.reshape(scopes.means[bn], (channels,))
        batch_var = xp.reshape(scopes.variances[bn], (channels,))
        if isinstance(running, BatchAverage):
            return scopes, accumulate(running, batch_mean, batch_var)
        return scopes, ema_update(running, batch_mean, batch_var, momentum)
    means, variances = list(scopes.means), list(scopes.variances)
    means[bn] = xp.reshape(running.mean, (1, channels))
    variances[bn] = xp.reshape(running.var, (1, channels))
    return ScopeMoments(scopes.normalizers, tuple(means), tuple(variances)), running
