"""A valid call of every public callable of refnorm and refnorm.testing, for the error-contract tests.

``valid_call(subject)`` returns ``(function, kwargs)``: calling ``function(**kwargs)`` succeeds, and
replacing one keyword by a bad value must raise a clean ``TypeError``/``ValueError`` naming it
(``tests/test_error_contract.py``). Every call builds fresh arrays from a fixed seed, so no test can
see another's data. A *subject* is the public name; records (``RunningStats``, a cache, ...) are
reached through the function that consumes them, and their fields are the keywords.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import refnorm
import refnorm.testing as kit
from refnorm.oracle.catalog import cases

N, C = 3, 4
SHAPE = (N, C, 2, 2)


def _rng() -> np.random.Generator:
    return np.random.default_rng(20260311)


def layer_arrays() -> dict[str, np.ndarray]:
    rng = _rng()
    return {
        "x": rng.standard_normal(SHAPE),
        "gamma": 1.0 + 0.3 * rng.standard_normal(C),
        "beta": 0.3 * rng.standard_normal(C),
        "mean_logits": rng.standard_normal(3),
        "var_logits": rng.standard_normal(3),
    }


def running() -> refnorm.RunningStats:
    rng = _rng()
    return refnorm.RunningStats(0.1 * rng.standard_normal(C), 1.0 + rng.uniform(0, 1, C))


def batch_average() -> refnorm.BatchAverage:
    rng = _rng()
    return refnorm.BatchAverage(2, 0.1 * rng.standard_normal(C), rng.uniform(0, 1, C), 2.0 + rng.uniform(0, 1, C))


def en_params() -> dict[str, np.ndarray]:
    rng = _rng()
    return {
        "gamma": 1.0 + 0.3 * rng.standard_normal(C),
        "beta": 0.3 * rng.standard_normal(C),
        "conv_weight": 0.5 * rng.standard_normal(3),
        "conv_bias": np.asarray(0.5),
        "temperature": np.asarray(1.5),
    }


def logits() -> np.ndarray:
    return _rng().standard_normal((2, 3))


def _sn_forward(**kw: Any) -> Any:
    return refnorm.switch_norm_forward(**{**layer_arrays(), **kw})


def sn_cache() -> refnorm.SwitchNormCache:
    return _sn_forward().cache


def ssn_cache() -> refnorm.SwitchNormCache:
    return refnorm.sparse_switch_norm_forward(**layer_arrays(), radius=0.3).cache


def plain_cache() -> refnorm.SwitchNormCache:
    a = layer_arrays()
    return refnorm.plain_norm_forward(a["x"], a["gamma"], a["beta"], normalizer="bn").cache


def en_cache() -> refnorm.ExemplarNormCache:
    return refnorm.exemplar_norm_forward(layer_arrays()["x"], **en_params()).cache


def sharded_cache() -> Any:
    a = layer_arrays()
    x = a.pop("x")
    return refnorm.switch_norm_sharded_forward([x[:1], x[1:]], **a).cache


def stages() -> refnorm.SparsestMaxStages:
    return refnorm.sparsestmax_forward(logits(), 0.3)[1]


def sparsemax_case() -> Any:
    return next(iter(cases(op="sparsemax", kind="sample")))


def adapter() -> kit.Adapter:
    return kit.refnorm_adapter("sparsemax")


def _linearized_sparsemax(z: Any) -> refnorm.Linearized:
    return refnorm.sparsemax_linearize(z)


def _linearized_sparsestmax(z: Any) -> refnorm.Linearized:
    return refnorm.sparsestmax_linearize(z, radius=0.3)


# --------------------------------------------------------------------------------------------
# Tangents: one per differentiable argument, in the op's gradient container (issue 15)
# --------------------------------------------------------------------------------------------


def sn_tangents() -> refnorm.SwitchNormGrads:
    rng = np.random.default_rng(20260312)
    return refnorm.SwitchNormGrads(
        dx=rng.standard_normal(SHAPE), dgamma=rng.standard_normal(C), dbeta=rng.standard_normal(C),
        dmean_logits=rng.standard_normal(3), dvar_logits=rng.standard_normal(3),
    )  # fmt: skip


def plain_tangents() -> refnorm.PlainNormGrads:
    t = sn_tangents()
    return refnorm.PlainNormGrads(dx=t.dx, dgamma=t.dgamma, dbeta=t.dbeta)


def en_tangents() -> refnorm.ExemplarNormGrads:
    rng = np.random.default_rng(20260313)
    return refnorm.ExemplarNormGrads(
        dx=rng.standard_normal(SHAPE), dgamma=rng.standard_normal(C), dbeta=rng.standard_normal(C),
        dconv_weight=rng.standard_normal(3), dconv_bias=np.asarray(rng.standard_normal()), dtemperature=np.asarray(rng.standard_normal()),
    )  # fmt: skip


def logit_tangent() -> np.ndarray:
    return np.random.default_rng(20260314).standard_normal((2, 3))


# --------------------------------------------------------------------------------------------
# Consumers of records: a record's fields are checked where refnorm takes the record back
# --------------------------------------------------------------------------------------------


def _through_running(**fields: Any) -> Any:
    return _sn_forward(running=refnorm.RunningStats(**fields))


def _through_batch_average(**fields: Any) -> Any:
    return refnorm.accumulate(refnorm.BatchAverage(**fields), np.zeros(C), np.ones(C))


def _through_fixed_sides(**fields: Any) -> Any:
    return refnorm.sparse_switch_norm_forward(**layer_arrays(), radius=0.3, fixed=refnorm.FixedSides(**fields))


def _through_params(**fields: Any) -> Any:
    return refnorm.exemplar_norm_forward(layer_arrays()["x"], *refnorm.ExemplarNormParams(**fields))


def _through_moments(**fields: Any) -> Any:
    return refnorm.scope_moments(refnorm.InstanceMoments(**fields), ("in", "ln", "bn"), layout=refnorm.Layout.of(SHAPE))


def _through_linearized(**fields: Any) -> Any:
    return refnorm.gradcheck(lambda z: refnorm.Linearized(**fields), [logits()])


def _through_sn_cache(**fields: Any) -> Any:
    return refnorm.switch_norm_backward(np.ones(SHAPE), refnorm.SwitchNormCache(**fields))


def _through_en_cache(**fields: Any) -> Any:
    return refnorm.exemplar_norm_backward(np.ones(SHAPE), refnorm.ExemplarNormCache(**fields))


def _through_stages(**fields: Any) -> Any:
    return refnorm.sparsestmax_vjp(np.ones((2, 3)), refnorm.SparsestMaxStages(**fields))


def _through_sn_tangents(**fields: Any) -> Any:
    return refnorm.switch_norm_jvp(refnorm.SwitchNormGrads(**fields), sn_cache())


def _through_plain_tangents(**fields: Any) -> Any:
    return refnorm.plain_norm_jvp(refnorm.PlainNormGrads(**fields), plain_cache())


def _through_en_tangents(**fields: Any) -> Any:
    return refnorm.exemplar_norm_jvp(refnorm.ExemplarNormGrads(**fields), en_cache())


def _call_check(**fields: Any) -> Any:
    return kit.ConformanceCheck(**fields)()


def _linearized_fields() -> dict[str, Any]:
    return refnorm.sparsemax_linearize(logits())._asdict()


# --------------------------------------------------------------------------------------------
# The valid calls
# --------------------------------------------------------------------------------------------


def _layer_options(**extra: Any) -> dict[str, Any]:
    return dict(training=True, normalizers=("in", "ln", "bn"), groups=None, convention="paper", eps=1e-5, **extra)


VALID: dict[str, Callable[[], tuple[Callable[..., Any], dict[str, Any]]]] = {
    # --- the layers
    "switch_norm_forward": lambda: (refnorm.switch_norm_forward, dict(
        **layer_arrays(), running=running(), **_layer_options(momentum=0.9, mean_ratio=refnorm.SOFTMAX, var_ratio=refnorm.SOFTMAX,
                                                               check_finite=True))),
    "switch_norm_backward": lambda: (refnorm.switch_norm_backward, dict(dy=np.ones(SHAPE), cache=sn_cache())),
    "switch_norm_jvp": lambda: (refnorm.switch_norm_jvp, dict(tangents=sn_tangents(), cache=sn_cache())),
    "switch_norm_hvp": lambda: (refnorm.switch_norm_hvp, dict(dy=np.ones(SHAPE), cache=sn_cache(), tangents=sn_tangents())),
    "switch_norm_linearize": lambda: (refnorm.switch_norm_linearize, dict(**layer_arrays())),
    "sparse_switch_norm_forward": lambda: (refnorm.sparse_switch_norm_forward, dict(
        **layer_arrays(), radius=0.3, fixed=refnorm.FixedSides(), variant="paper", running=running(),
        **_layer_options(momentum=None, check_finite=True))),
    "sparse_switch_norm_backward": lambda: (refnorm.sparse_switch_norm_backward, dict(dy=np.ones(SHAPE), cache=ssn_cache())),
    "sparse_switch_norm_jvp": lambda: (refnorm.sparse_switch_norm_jvp, dict(tangents=sn_tangents(), cache=ssn_cache())),
    "sparse_switch_norm_hvp": lambda: (refnorm.sparse_switch_norm_hvp, dict(dy=np.ones(SHAPE), cache=ssn_cache(), tangents=sn_tangents())),
    "sparse_switch_norm_linearize": lambda: (refnorm.sparse_switch_norm_linearize, dict(
        **layer_arrays(), radius=0.3, fixed=refnorm.FixedSides(), variant="paper", convention="paper", momentum=None)),
    "plain_norm_forward": lambda: (refnorm.plain_norm_forward, dict(
        **{k: v for k, v in layer_arrays().items() if k in ("x", "gamma", "beta")}, normalizer="bn", groups=None, running=running(),
        training=True, convention="paper", eps=1e-5, momentum=0.9, check_finite=True)),
    "plain_norm_backward": lambda: (refnorm.plain_norm_backward, dict(dy=np.ones(SHAPE), cache=plain_cache())),
    "plain_norm_jvp": lambda: (refnorm.plain_norm_jvp, dict(tangents=plain_tangents(), cache=plain_cache())),
    "plain_norm_hvp": lambda: (refnorm.plain_norm_hvp, dict(dy=np.ones(SHAPE), cache=plain_cache(), tangents=plain_tangents())),
    "plain_norm_linearize": lambda: (refnorm.plain_norm_linearize, dict(
        **{k: v for k, v in layer_arrays().items() if k in ("x", "gamma", "beta")}, normalizer="ln")),
    "exemplar_norm_forward": lambda: (refnorm.exemplar_norm_forward, dict(
        x=layer_arrays()["x"], **en_params(), running=running(), mixing="output", **_layer_options(momentum=0.9, check_finite=True))),
    "exemplar_norm_backward": lambda: (refnorm.exemplar_norm_backward, dict(dy=np.ones(SHAPE), cache=en_cache())),
    "exemplar_norm_jvp": lambda: (refnorm.exemplar_norm_jvp, dict(tangents=en_tangents(), cache=en_cache())),
    "exemplar_norm_linearize": lambda: (refnorm.exemplar_norm_linearize, dict(x=layer_arrays()["x"], **en_params())),
    "exemplar_norm_init": lambda: (refnorm.exemplar_norm_init, dict(channels=C, like=layer_arrays()["x"], kernel_size=3)),
    "switch_norm_sharded_forward": lambda: (refnorm.switch_norm_sharded_forward, dict(
        xs=[layer_arrays()["x"][:1], layer_arrays()["x"][1:]], **{k: v for k, v in layer_arrays().items() if k != "x"}, running=running(),
        **_layer_options(momentum=0.9, mean_ratio=refnorm.SOFTMAX, var_ratio=refnorm.SOFTMAX, check_finite=True))),
    "switch_norm_sharded_backward": lambda: (refnorm.switch_norm_sharded_backward, dict(
        dys=[np.ones((1, *SHAPE[1:])), np.ones((N - 1, *SHAPE[1:]))], cache=sharded_cache())),
    # --- the simplex maps
    "softmax": lambda: (refnorm.softmax, dict(logits=logits())),
    "softmax_vjp": lambda: (refnorm.softmax_vjp, dict(dratios=np.ones((2, 3)), ratios=refnorm.softmax(logits()))),
    "softmax_jvp": lambda: (refnorm.softmax_jvp, dict(dlogits=np.ones((2, 3)), ratios=refnorm.softmax(logits()))),
    "softmax_hvp": lambda: (refnorm.softmax_hvp, dict(dratios=np.ones((2, 3)), ratios=refnorm.softmax(logits()), dlogits=logit_tangent())),
    "sparsemax": lambda: (refnorm.sparsemax, dict(logits=logits())),
    "sparsemax_vjp": lambda: (refnorm.sparsemax_vjp, dict(dratios=np.ones((2, 3)), ratios=refnorm.sparsemax(logits()))),
    "sparsemax_jvp": lambda: (refnorm.sparsemax_jvp, dict(dlogits=np.ones((2, 3)), ratios=refnorm.sparsemax(logits()))),
    "sparsemax_hvp": lambda: (refnorm.sparsemax_hvp, dict(dratios=np.ones((2, 3)), ratios=refnorm.sparsemax(logits()), dlogits=logit_tangent())),
    "sparsemax_linearize": lambda: (refnorm.sparsemax_linearize, dict(logits=logits())),
    "sparsestmax": lambda: (refnorm.sparsestmax, dict(logits=logits(), radius=0.3, variant="paper")),
    "sparsestmax_forward": lambda: (refnorm.sparsestmax_forward, dict(logits=logits(), radius=0.3, variant="paper")),
    "sparsestmax_vjp": lambda: (refnorm.sparsestmax_vjp, dict(dratios=np.ones((2, 3)), stages=stages())),
    "sparsestmax_jvp": lambda: (refnorm.sparsestmax_jvp, dict(dlogits=np.ones((2, 3)), stages=stages())),
    "sparsestmax_hvp": lambda: (refnorm.sparsestmax_hvp, dict(dratios=np.ones((2, 3)), stages=stages(), dlogits=logit_tangent())),
    "sparsestmax_linearize": lambda: (refnorm.sparsestmax_linearize, dict(logits=logits(), radius=0.3, variant="paper")),
    "FixedRatios": lambda: (lambda **kw: refnorm.FixedRatios(**kw).forward(np.ones(3)), dict(ratios=(0.0, 1.0, 0.0))),
    "SparsestMax": lambda: (lambda **kw: refnorm.SparsestMax(**kw).forward(logits()), dict(radius=0.3, variant="paper")),
    "Softmax": lambda: (lambda **kw: refnorm.Softmax(**kw).forward(logits()), {}),
    "RatioFunction": lambda: (lambda **kw: refnorm.RatioFunction(**kw), {}),
    # --- statistics and running statistics
    "instance_moments": lambda: (refnorm.instance_moments, dict(x=layer_arrays()["x"], convention="paper", check_finite=True, name="x")),
    "scope_moments": lambda: (refnorm.scope_moments, dict(
        moments=refnorm.instance_moments(layer_arrays()["x"]), normalizers=("in", "ln", "bn"), convention="paper",
        layout=refnorm.Layout.of(SHAPE), groups=None, check_finite=True)),
    "Layout": lambda: (refnorm.Layout, dict(N=N, C=C, M=4, ndim=4)),
    "initial_running_stats": lambda: (refnorm.initial_running_stats, dict(channels=C, like=layer_arrays()["x"], mean=0.0, var=1.0)),
    "empty_batch_average": lambda: (refnorm.empty_batch_average, dict(channels=C, like=layer_arrays()["x"])),
    "ema_update": lambda: (refnorm.ema_update, dict(running=running(), batch_mean=np.zeros(C), batch_var=np.ones(C), momentum=0.9)),
    "accumulate": lambda: (refnorm.accumulate, dict(average=batch_average(), batch_mean=np.zeros(C), batch_var=np.ones(C))),
    "finalize": lambda: (refnorm.finalize, dict(average=batch_average())),
    "preset": lambda: (refnorm.preset, dict(name="official", ndim=4, sparse=False)),
    "radius_schedule": lambda: (refnorm.radius_schedule, dict(step=1, total_steps=10)),
    # --- records, through the function that takes them back
    "RunningStats": lambda: (_through_running, running()._asdict()),
    "BatchAverage": lambda: (_through_batch_average, batch_average()._asdict()),
    "FixedSides": lambda: (_through_fixed_sides, dict(mean=None, var=None)),
    "ExemplarNormParams": lambda: (_through_params, en_params()),
    "InstanceMoments": lambda: (_through_moments, refnorm.instance_moments(layer_arrays()["x"])._asdict()),
    "Linearized": lambda: (_through_linearized, _linearized_fields()),
    "SwitchNormCache": lambda: (_through_sn_cache, sn_cache()._asdict()),
    "ExemplarNormCache": lambda: (_through_en_cache, en_cache()._asdict()),
    "SparsestMaxStages": lambda: (_through_stages, stages()._asdict()),
    "SwitchNormGrads": lambda: (_through_sn_tangents, sn_tangents()._asdict()),
    "PlainNormGrads": lambda: (_through_plain_tangents, plain_tangents()._asdict()),
    "ExemplarNormGrads": lambda: (_through_en_tangents, en_tangents()._asdict()),
    # --- the gradient checker
    "gradcheck": lambda: (refnorm.gradcheck, dict(
        fun=_linearized_sparsemax, args=(logits(),), names=("logits",), wrt=None, mode="directional", directions=2, seed=0, rtol=1e-7,
        atol=1e-10, step=1e-2, adjoint_rtol=1e-12, order=None)),
    "assert_gradcheck": lambda: (refnorm.assert_gradcheck, dict(fun=_linearized_sparsemax, args=(logits(),))),
    # --- the conformance kit
    "Adapter": lambda: (kit.Adapter, dict(forward=adapter().forward, backward=adapter().backward, to_numpy=refnorm._xp.to_numpy,
                                          dtype="float64", name="mine", jvp=adapter().jvp, hvp=adapter().hvp)),
    "ConformanceCheck": lambda: (_call_check, dict(adapter=adapter(), case=sparsemax_case(), source="live", check_error_messages=False)),
    "assert_allclose_named": lambda: (kit.assert_allclose_named, dict(
        actual=np.ones(3), expected=np.ones(3), case="sparsemax/a-case", array="output.y", rtol=None, atol=None, dtype=None,
        direction="forward")),
    "check_conformance": lambda: (kit.check_conformance, dict(adapter=adapter(), case=sparsemax_case(), source="live",
                                                              check_error_messages=False)),
    "compare": lambda: (kit.compare, dict(actual=np.ones(3), expected=np.ones(3), rtol=1e-7, atol=0.0, array="output.y")),
    "conformance_checks": lambda: (kit.conformance_checks, dict(
        adapter=adapter(), op="sparsemax", kinds=("sample",), select=None, expected_failures=None, skip=None, source="live",
        check_error_messages=False)),
    "default_tolerance": lambda: (kit.default_tolerance, dict(dtype="float64", direction="forward")),
    "parametrize_conformance": lambda: (kit.parametrize_conformance, dict(adapter=adapter(), op="sparsemax", argname="check")),
    "recommended_tolerances": lambda: (kit.recommended_tolerances, dict(case=sparsemax_case(), reference=None)),
    "refnorm_adapter": lambda: (kit.refnorm_adapter, dict(op="sparsemax", dtype="float64", backend="numpy")),
    "run_conformance": lambda: (kit.run_conformance, dict(
        adapter=adapter(), op="sparsemax", select=None, skip=None, expected_failures=None, kinds=("sample",), source="live",
        check_error_messages=False)),
}  # fmt: skip
"""Every subject's valid call (its keywords are the arguments the error table covers)."""


def valid_call(subject: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``(function, kwargs)`` of a fresh valid call of ``subject``."""
    return VALID[subject]()


RESULT_TYPES = {
    "ExemplarNormOutput", "PlainNormOutput", "SparseSwitchNormOutput", "SwitchNormOutput", "ScopeMoments", "Preset", "GradcheckResult",
    "CaseOutcome", "Comparison", "ConformanceError", "ConformanceReport", "ConformanceRun", "Tolerance",
}  # fmt: skip
"""Public types refnorm only returns (outputs, reports, the kit's verdicts) and never takes back as
an argument (the gradient containers are taken back, as a JVP's or HVP's tangents: they are subjects): there is nothing of theirs for a function to check. Each is an immutable record
(a NamedTuple or a frozen dataclass) or an exception; ``tests/test_error_contract.py`` checks that,
and that passing one where an argument of another type is expected is a ``TypeError``."""
