"""refnorm on a real Dask cluster: ``distributed.LocalCluster`` with two worker processes.

A batch chunked along N over the workers *is* SyncSN's sharded layer: the forward and backward of
SN, SSN and EN computed there equal NumPy's, with no warning from the scheduler (ops never compute
behind the caller's back, which on a cluster showed as "Detected different `run_spec` for key"),
and the sharded form (``switch_norm_sharded_forward``/``_backward``) on the chunks gives the same
numbers, for chunks of unequal sizes too. ``docs/scaling-out.md`` is the page.

Skipped, with the reason, without ``distributed`` (``pip install 'refnorm[dask]'``). The cluster
starts once for the module (a few seconds), on ports the operating system chooses.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import numpy as np
import pytest

import refnorm

dask = pytest.importorskip("dask", reason="Dask is not installed (pip install 'refnorm[dask]')")
da = pytest.importorskip("dask.array", reason="Dask is not installed (pip install 'refnorm[dask]')")
distributed = pytest.importorskip("distributed", reason="distributed is not installed (pip install 'refnorm[dask]')")

CHUNKS = (2, 5, 3)
"""Batch chunks of unequal sizes: one per task, spread over the two workers."""


class Recorded(logging.Handler):
    """Every log record of WARNING or above (the scheduler runs in this process and logs there)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, scheduler_port=0, dashboard_address=":0", worker_dashboard_address=None
    )  # fmt: skip
    with cluster, distributed.Client(cluster) as connected:
        yield connected


def layer_inputs(seed: int = 0, shape=(sum(CHUNKS), 4, 3, 3)):
    rng = np.random.default_rng(seed)
    C = shape[1]
    return (rng.standard_normal(shape) * 2.0 + 0.5, 1.0 + 0.5 * rng.standard_normal(C), 0.5 * rng.standard_normal(C),
            0.3 * rng.standard_normal(3), 0.3 * rng.standard_normal(3))  # fmt: skip


def on_cluster(host: np.ndarray):
    """A host array as a Dask array chunked along the batch only (``CHUNKS``), every other axis whole."""
    return da.from_array(host, chunks=(CHUNKS, *host.shape[1:])) if host.ndim > 1 else da.from_array(host)


def test_sn_ssn_and_en_on_two_worker_processes_equal_numpy_without_a_warning(client: distributed.Client):
    host = layer_inputs()
    dy = np.random.default_rng(1).standard_normal(host[0].shape)
    en_params = refnorm.exemplar_norm_init(4, host[0])._replace(conv_weight=np.array([0.3, -0.2, 0.5]), conv_bias=np.array(0.1))
    layers = {
        "sn": (lambda *a: refnorm.switch_norm_forward(*a)[:2], refnorm.switch_norm_backward, host),
        "ssn": (lambda *a: refnorm.sparse_switch_norm_forward(*a, radius=0.4)[:2], refnorm.sparse_switch_norm_backward, host),
        "en": (lambda *a: refnorm.exemplar_norm_forward(*a)[:2], refnorm.exemplar_norm_backward, (host[0], *map(np.asarray, en_params))),
    }
    recorded = Recorded()
    logging.getLogger("distributed").addHandler(recorded)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for name, (forward, backward, arguments) in layers.items():
                y, cache = forward(*arguments)
                expected = (y, *backward(dy, cache))
                lazy_y, lazy_cache = forward(*map(on_cluster, arguments))
                computed = client.compute((lazy_y, *backward(on_cluster(dy), lazy_cache)), sync=True)
                for index, (value, reference) in enumerate(zip(computed, expected, strict=True)):
                    np.testing.assert_allclose(value, reference, rtol=1e-12, atol=1e-12, err_msg=f"{name} result {index}")
    finally:
        logging.getLogger("distributed").removeHandler(recorded)
    assert not [str(w.message) for w in caught]
    assert not [record.getMessage()[:300] for record in recorded.records]
    assert len(client.scheduler_info()["workers"]) == 2


def test_the_sharded_form_equals_a_batch_chunked_array_on_the_cluster(client: distributed.Client):
    """SyncSN's shards are the Dask chunks: the pooled statistics are the batch's, exactly, for
    chunks of 2, 5 and 3 samples (the official SyncSN averages per-device statistics as if every
    device held the same batch)."""
    x, gamma, beta, mean_logits, var_logits = layer_inputs(seed=2)
    dy = np.random.default_rng(3).standard_normal(x.shape)
    bounds = np.cumsum((0, *CHUNKS))
    shards = [x[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
    running = refnorm.initial_running_stats(4, x)
    ys, sharded, sharded_running = refnorm.switch_norm_sharded_forward(shards, gamma, beta, mean_logits, var_logits, running=running)
    sharded_grads = refnorm.switch_norm_sharded_backward([dy[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)], sharded)
    lazy = [on_cluster(a) for a in (x, gamma, beta, mean_logits, var_logits)]
    y, cache, new_running = refnorm.switch_norm_forward(*lazy, running=refnorm.initial_running_stats(4, lazy[0]))
    grads = refnorm.switch_norm_backward(on_cluster(dy), cache)
    y, grads, new_running = client.compute((y, grads, new_running), sync=True)
    np.testing.assert_allclose(y, np.concatenate(ys), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(grads.dx, np.concatenate(sharded_grads.dxs), rtol=1e-12, atol=1e-12)
    for name in ("dgamma", "dbeta", "dmean_logits", "dvar_logits"):
        np.testing.assert_allclose(getattr(grads, name), getattr(sharded_grads, name), rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(new_running.mean, sharded_running.mean, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(new_running.var, sharded_running.var, rtol=1e-13, atol=1e-13)


def test_deferred_value_checks_are_decided_on_the_cluster(client: distributed.Client):
    x, *params = layer_inputs(seed=4)
    x = x.copy()
    x[6, 1, 2, 0] = np.inf  # in the second chunk, on the other worker than the first
    with refnorm.deferred_checks() as checks:
        refnorm.switch_norm_forward(on_cluster(x), *map(on_cluster, params))
    flags = client.compute(checks.conditions, sync=True)
    with pytest.raises(ValueError, match="x contains NaN or infinity"):
        checks.verify(flags)
