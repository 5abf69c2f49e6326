"""Dask arrays as a backend: every catalog case equals NumPy, no op computes behind the caller's
back, any chunking works, value checks are skipped or deferred into the graph, SSN's fixed state
stays lazy, and golden sets generated on Dask are NumPy's.

Skipped, with the reason, when Dask is not installed (``pip install 'refnorm[dask]'``). The
distributed scheduler is ``tests/test_cluster.py``'s subject; ``docs/scaling-out.md`` is the page.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from same_values import assert_same_to_rounding, keyed_results, ratio_derivatives, sweep

import refnorm
from refnorm.cli import main
from refnorm.oracle.catalog import OPS, cases
from refnorm.oracle.evaluation import dask_chunks, evaluate_case

dask = pytest.importorskip("dask", reason="Dask is not installed (pip install 'refnorm[dask]')")
da = pytest.importorskip("dask.array", reason="Dask is not installed (pip install 'refnorm[dask]')")


class CountingScheduler:
    """A Dask scheduler that counts the graphs it is asked to compute (and computes them synchronously).

    Installed with ``dask.config.set(scheduler=...)``, it sees every compute of the block:
    ``.compute()``, ``dask.compute``, and the implicit ones of ``bool()``, ``float()``, ``int()``
    and ``np.asarray()`` on a Dask array.
    """

    def __init__(self) -> None:
        self.computes = 0

    def __call__(self, dsk, keys, **kwargs):
        self.computes += 1
        return dask.get(dsk, keys, **kwargs)


def lazy(host: np.ndarray, chunks=None):
    """``host`` as a Dask array, by default in the chunks the evaluation uses (halves along N and space)."""
    return da.from_array(host, chunks=dask_chunks(host.shape) if chunks is None else chunks)


def layer_inputs(rng: np.random.Generator, shape=(6, 4, 3, 2), K: int = 3):
    C = shape[1]
    return (rng.standard_normal(shape) * 2.0 + 0.5, 1.0 + 0.5 * rng.standard_normal(C), 0.5 * rng.standard_normal(C),
            0.3 * rng.standard_normal(K), 0.3 * rng.standard_normal(K))  # fmt: skip


# --------------------------------------------------------------------------------------------
# Every case
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("op", sorted(OPS))
def test_every_sample_and_reference_case_on_dask_equals_numpy_to_float64_rounding(op: str):
    """Inputs chunked along the batch and every spatial axis (``dask_chunks``); outputs,
    intermediates and gradients of one ``dask.compute`` against the NumPy evaluation.

    On Dask's synchronous scheduler: a scheduler chooses where and when tasks run, not what they
    compute, so the values are the same on any (the threaded scheduler runs the other tests here,
    the distributed one ``test_cluster.py``), and ~1000 tiny tasks per case run faster without
    thread hand-offs."""
    selected = sweep(op, "sample", "reference")
    assert selected
    with dask.config.set(scheduler="synchronous"):
        for case in selected:
            assert_same_to_rounding(keyed_results(evaluate_case(case, backend="dask")), keyed_results(evaluate_case(case)), case)


# --------------------------------------------------------------------------------------------
# No compute behind the caller's back
# --------------------------------------------------------------------------------------------


def _first_sample(op: str):
    return cases(kind="sample", op=op)[0]


@pytest.mark.parametrize("op", sorted(OPS))
def test_an_ops_forward_backward_jvp_and_hvp_trigger_no_compute(op: str):
    """Building the graphs of the forward (with its value checks and intermediates), of the
    backward, of the JVP and (for an op with a second order) of the HVP computes nothing, inside
    ``deferred_checks`` or not: the caller decides when and where (a cluster) to compute."""
    case = _first_sample(op)
    inputs = {name: lazy(a) for name, a in case.inputs().items()}
    tangents = tuple(da.ones_like(inputs[name]) for name in OPS[op].arguments)
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler), refnorm.deferred_checks() as checks:
        linearized, _ = OPS[op].forward(inputs, case.params)
        out = linearized.out
        cotangent = tuple(da.ones_like(o) for o in out) if isinstance(out, tuple | list) else da.ones_like(out)
        grads = linearized.pullback(cotangent)
        pushed = linearized.pushforward(*tangents)
        second = linearized.hvp(cotangent, *tangents) if OPS[op].hvp else ()
    assert scheduler.computes == 0, f"{scheduler.computes} computes ({len(checks)} deferred checks)"
    assert all(isinstance(g, da.Array) for g in (*grads, *second) if g is not None)
    assert all(isinstance(a, da.Array) for a in ((out, pushed) if not isinstance(out, tuple | list) else (*out, *pushed)))


def test_the_ratio_functions_derivatives_trigger_no_compute_and_equal_numpy(rng):
    host = {"logits": rng.standard_normal((6, 3)), "dratios": rng.standard_normal((6, 3)), "dlogits": rng.standard_normal((6, 3))}
    host["logits"][0] = [0.0, 9.0, 0.0]  # a row at a vertex of the simplex
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        built = ratio_derivatives(**{name: lazy(a) for name, a in host.items()})
    assert scheduler.computes == 0
    (computed,) = dask.compute(built)
    for name, expected in ratio_derivatives(**host).items():
        for what, a, e in zip(("value", "vjp", "jvp", "hvp"), computed[name], expected, strict=True):
            np.testing.assert_allclose(a, e, rtol=1e-13, atol=1e-13, err_msg=f"{name} {what}")


def test_layers_with_running_statistics_and_the_sharded_form_trigger_no_compute(rng):
    x, gamma, beta, mean_logits, var_logits = (lazy(a) for a in layer_inputs(rng))
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        running = refnorm.initial_running_stats(4, x)
        y, cache, running = refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=running)
        refnorm.switch_norm_backward(da.ones_like(y), cache)
        y, cache, _ = refnorm.switch_norm_forward(x, gamma, beta, mean_logits, var_logits, running=running, training=False)
        refnorm.switch_norm_backward(da.ones_like(y), cache)
        average = refnorm.accumulate(refnorm.empty_batch_average(4, x), da.ones(4), da.ones(4))
        refnorm.finalize(average)
        ys, sharded, _ = refnorm.switch_norm_sharded_forward([x[:2], x[2:]], gamma, beta, mean_logits, var_logits)
        refnorm.switch_norm_sharded_backward([da.ones_like(part) for part in ys], sharded)
        out = refnorm.sparse_switch_norm_forward(x, gamma, beta, mean_logits, var_logits, radius=0.4)
        refnorm.sparse_switch_norm_backward(da.ones_like(out.y), out.cache)
        params = refnorm.exemplar_norm_init(4, x)
        en = refnorm.exemplar_norm_forward(x, gamma, beta, *params[2:])
        refnorm.exemplar_norm_backward(da.ones_like(en.y), en.cache)
    assert scheduler.computes == 0


# --------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------

CHUNKINGS = {
    "batch": (2, 4, 3, 2),
    "batch-unequal": ((1, 3, 2), 4, 3, 2),
    "space": (6, 4, 1, 1),
    "channels": (6, 1, 3, 2),
    "every-element": (1, 1, 1, 1),
}
"""Chunks of a ``(6, 4, 3, 2)`` input: along the batch (SyncSN's shards, equal and not), space,
channels (LN and EN's channel convolution read across channel chunks), and one element per chunk."""


@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_sn_ssn_and_en_give_the_numpy_values_for_any_chunking(chunks, rng):
    host = layer_inputs(rng)
    x = da.from_array(host[0], chunks=chunks)
    params = (lazy(a) for a in host[1:])
    gamma, beta, mean_logits, var_logits = params
    dy = rng.standard_normal(host[0].shape)
    lazy_dy = da.from_array(dy, chunks=chunks)
    en_params = refnorm.exemplar_norm_init(4, host[0])._replace(conv_weight=np.array([0.3, -0.2, 0.5]), conv_bias=np.array(0.1))
    runs = {
        "sn": (lambda *a: refnorm.switch_norm_forward(*a), refnorm.switch_norm_backward, host, (x, gamma, beta, mean_logits, var_logits)),
        "ssn": (lambda *a: refnorm.sparse_switch_norm_forward(*a, radius=0.4)[:2], refnorm.sparse_switch_norm_backward, host,
                (x, gamma, beta, mean_logits, var_logits)),
        "en": (lambda *a: refnorm.exemplar_norm_forward(*a)[:2], refnorm.exemplar_norm_backward, (host[0], *en_params),
               (x, *(lazy(np.asarray(p)) for p in en_params))),
    }  # fmt: skip
    for name, (forward, backward, eager_args, lazy_args) in runs.items():
        y, cache = forward(*eager_args)[:2]
        lazy_y, lazy_cache = forward(*lazy_args)[:2]
        expected = {"y": y, **{f"d{i}": g for i, g in enumerate(backward(dy, cache))}}
        computed = dask.compute({"y": lazy_y, **{f"d{i}": g for i, g in enumerate(backward(lazy_dy, lazy_cache))}})[0]
        for key, value in expected.items():
            np.testing.assert_allclose(computed[key], value, rtol=1e-12, atol=1e-12, err_msg=f"{name} {key}")


def test_outputs_keep_the_inputs_batch_chunks(rng):
    """y (and dx) are chunked like x along the batch: each worker's rows stay on it."""
    host = layer_inputs(rng)
    x = da.from_array(host[0], chunks=((1, 3, 2), 4, 3, 2))
    y, cache, _ = refnorm.switch_norm_forward(x, *(lazy(a) for a in host[1:]))
    assert y.chunks[0] == (1, 3, 2)
    assert refnorm.switch_norm_backward(da.ones_like(y), cache).dx.chunks[0] == (1, 3, 2)


# --------------------------------------------------------------------------------------------
# Value checks: skipped, or deferred into the graph
# --------------------------------------------------------------------------------------------


def test_values_are_available_for_eager_arrays_and_not_for_dask_arrays():
    from refnorm._xp import all_finite, values_available

    eager, lazy_array = np.ones(3), da.ones(3)
    assert values_available(eager) and not values_available(lazy_array)
    assert not values_available(lazy_array.sum()), "a 0-d Dask array is lazy too"
    with pytest.raises(TypeError, match="all_finite needs an array whose values are available"):
        all_finite(da, lazy_array)


def _with_nan(rng):
    host = layer_inputs(rng)
    x = host[0].copy()
    x[1, 2, 0, 1] = np.nan
    return (x, *host[1:])


def test_a_value_check_is_skipped_on_dask_without_a_compute(rng):
    host = _with_nan(rng)
    with pytest.raises(ValueError, match="x contains NaN or infinity"):
        refnorm.switch_norm_forward(*host)
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        y, _, _ = refnorm.switch_norm_forward(*(lazy(a) for a in host))
    assert scheduler.computes == 0
    reached = np.isnan(y.compute()).any(axis=(2, 3))
    expected = np.zeros((6, 4), dtype=bool)
    expected[1, :] = expected[:, 2] = True  # the instance (1, 2), its sample's LN and its channel's BN
    np.testing.assert_array_equal(reached, expected, err_msg="unchecked, the NaN spreads through every scope that pools it")


def test_deferred_checks_raise_the_eager_error_once_computed(rng):
    host = _with_nan(rng)
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        with refnorm.deferred_checks() as checks:
            refnorm.switch_norm_forward(*(lazy(a) for a in host))
        assert scheduler.computes == 0 and len(checks) > 0
        with pytest.raises(ValueError, match="x contains NaN or infinity, or values so large"):
            checks.verify()
    assert scheduler.computes == 1, "one compute decides every check"


def test_deferred_checks_are_computed_with_the_results_in_one_pass(rng):
    host = layer_inputs(rng)
    with refnorm.deferred_checks() as checks:
        y, _, _ = refnorm.switch_norm_forward(*(lazy(a) for a in host))
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        y, flags = dask.compute(y, checks.conditions)
    checks.verify(flags)
    assert scheduler.computes == 1
    np.testing.assert_allclose(y, refnorm.switch_norm_forward(*host).y, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match=f"values holds 1 computed conditions, expected {len(checks)}"):
        checks.verify([True])


def test_a_check_on_eager_arrays_still_raises_at_once_inside_deferred_checks(rng):
    with refnorm.deferred_checks() as checks, pytest.raises(ValueError, match="x contains NaN"):
        refnorm.switch_norm_forward(*_with_nan(rng))
    assert len(checks) == 0


def test_a_deferred_check_of_a_parameter_names_it(rng):
    host = layer_inputs(rng)
    gamma = host[1].copy()
    gamma[0] = np.inf
    with refnorm.deferred_checks() as checks:
        out = refnorm.sparse_switch_norm_forward(*(lazy(a) for a in (host[0], gamma, *host[2:])), radius=0.3)
    with pytest.raises(ValueError, match="gamma contains NaN or infinity"):
        checks.verify()
    assert isinstance(out.y, da.Array)


def test_a_deferred_check_words_its_message_as_numpy_does(rng):
    """The message of a failed deferred check names the argument and the offending entry, as the
    eager check does (the few reductions it needs are computed once the condition has failed)."""
    host = layer_inputs(rng)
    running = refnorm.initial_running_stats(4, host[0])._replace(var=np.array([1.0, -0.5, 1.0, 1.0]))
    with pytest.raises(ValueError) as eager:
        refnorm.switch_norm_forward(*host, running=running, training=False)
    lazy_running = refnorm.RunningStats(*(lazy(np.asarray(a)) for a in running))
    with refnorm.deferred_checks() as checks:
        refnorm.switch_norm_forward(*(lazy(a) for a in host), running=lazy_running, training=False)
    with pytest.raises(ValueError) as deferred:
        checks.verify()
    assert str(deferred.value) == str(eager.value) == "running.var has a negative entry (-0.5); expected every entry >= 0"


def test_the_jvp_and_hvp_defer_their_tangent_and_upstream_checks(rng):
    host = layer_inputs(rng)
    y, cache, _ = refnorm.switch_norm_forward(*(lazy(a) for a in host))
    dx = rng.standard_normal(host[0].shape)
    dx[2, 1, 0, 0] = np.inf
    tangents = refnorm.SwitchNormGrads(lazy(dx), *(lazy(np.ones_like(a)) for a in host[1:]))
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        with refnorm.deferred_checks() as pushed_checks:
            refnorm.switch_norm_jvp(tangents, cache)
        with refnorm.deferred_checks() as second_checks:
            refnorm.switch_norm_hvp(da.ones_like(y) * np.nan, cache, tangents._replace(dx=lazy(np.zeros_like(dx))))
        assert scheduler.computes == 0
        with pytest.raises(ValueError, match=r"^tangents\.dx contains NaN or infinity; refnorm needs finite inputs$"):
            pushed_checks.verify()
        with pytest.raises(ValueError, match=r"^dy contains NaN or infinity; refnorm needs finite inputs$"):
            second_checks.verify()


# --------------------------------------------------------------------------------------------
# SSN's fixed state
# --------------------------------------------------------------------------------------------


def test_ssn_fixed_state_is_a_lazy_index_and_round_trips_once_computed(rng):
    host = layer_inputs(rng)
    logits = np.array([0.0, 9.0, 0.0])  # SparsestMax of these is the LN vertex at this radius
    host = (*host[:3], logits, host[4])
    eager = refnorm.sparse_switch_norm_forward(*host, radius=0.5)
    assert eager.fixed == refnorm.FixedSides(mean=1, var=None)
    out = refnorm.sparse_switch_norm_forward(*(lazy(a) for a in host), radius=0.5)
    assert all(isinstance(side, da.Array) and side.shape == () for side in out.fixed)
    computed = refnorm.FixedSides(*dask.compute(*out.fixed))
    assert (int(computed.mean), int(computed.var)) == (1, -1)
    assert computed.resolved() == eager.fixed
    following = refnorm.sparse_switch_norm_forward(*(lazy(a) for a in host), radius=0.5, fixed=computed)
    assert following.fixed.mean == 1 and isinstance(following.fixed.var, da.Array)
    with pytest.raises(TypeError, match="fixed.mean is a lazy or traced Array: its value decides which ratio function"):
        refnorm.sparse_switch_norm_forward(*(lazy(a) for a in host), radius=0.5, fixed=out.fixed)


# --------------------------------------------------------------------------------------------
# Golden sets
# --------------------------------------------------------------------------------------------


def test_golden_generate_on_dask_gives_numpys_values(tmp_path: Path, capsys):
    """A set generated on Dask (schema version 2: tangents, JVPs and HVPs too) verifies on NumPy
    (every array recomputed there and equal to float64 rounding, every error case raising) and on
    Dask."""
    subset = ["--op", "sparse_switch_norm", "--kind", "sample", "--kind", "error"]  # every ratio function, fixed sides, value checks
    assert main(["golden", "generate", "--out", str(tmp_path / "set"), "--backend", "dask", "--quiet", *subset]) == 0
    assert main(["golden", "verify", str(tmp_path / "set"), "--quiet", "--failures-only", *subset]) == 0
    assert main(["golden", "verify", str(tmp_path / "set"), "--backend", "dask", "--quiet", "--failures-only", *subset]) == 0
    assert "0 failed" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert (manifest["schema_version"], manifest["backend"]) == (2, "dask")
    stored = {key.split(".", 1)[0] for case in manifest["cases"] if case["kind"] == "sample" for key in case["arrays"]}
    assert {"tangent", "jvp", "hvp"} <= stored
