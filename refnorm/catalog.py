"""The op registry and the catalog of named cases every check runs over.

Modelled on PyTorch's OpInfo: each op is described once (:class:`OpInfo`: its differentiable
arguments, how to draw inputs for a case, how to evaluate it), and a :class:`Case` names one
point of an op's configuration space. ``refnorm check`` runs the gradient checker over the
``"sample"`` cases.

Inputs are always drawn on the host with ``numpy.random.default_rng(case.seed)`` in float64, so
every backend (and every golden file) sees bit-identical inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import exemplarnorm as en
from .gradient_check import Linearized
from .running import RunningStats
from .switchnorm import SWITCH_NORM_ARGUMENTS, switch_norm_forward, switch_norm_linearize

KINDS = ("sample", "reference", "error")


@dataclass(frozen=True)
class OpInfo:
    """How to draw inputs for, and evaluate, one op.

    ``make_inputs(rng, params)`` returns host float64 arrays by name: the differentiable
    ``arguments`` (in order) and any state the op needs (e.g. running statistics).
    ``linearize(inputs, params)`` evaluates the op at ``inputs`` (arrays of any backend, same
    names) and returns its :class:`~refnorm.gradient_check.Linearized`.
    ``intermediates(inputs, params)`` returns the forward's named intermediates and new state
    (per-scope statistics, ratios, ``xhat``, ...), so a port can see which stage diverged.
    """

    name: str
    arguments: tuple[str, ...]
    make_inputs: Callable[[np.random.Generator, Mapping[str, Any]], dict[str, np.ndarray]]
    linearize: Callable[[Mapping[str, Any], Mapping[str, Any]], Linearized]
    intermediates: Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]
    description: str = ""


@dataclass(frozen=True)
class Case:
    """One named configuration of one op."""

    op: str
    name: str
    kind: str
    params: Mapping[str, Any]
    seed: int = 0
    gradcheck: Mapping[str, Any] = field(default_factory=dict)
    """Keyword overrides for :func:`refnorm.gradcheck` (e.g. a tolerance for a large-offset case)."""
    raises: type[Exception] | None = None
    """``"error"`` cases: the exception the op must raise."""
    match: str | None = None
    """``"error"`` cases: a regular expression the exception message must match."""

    @property
    def id(self) -> str:
        return f"{self.op}/{self.name}"

    def inputs(self) -> dict[str, np.ndarray]:
        """The case's host inputs, drawn from its seed."""
        return OPS[self.op].make_inputs(np.random.default_rng(self.seed), self.params)


# --------------------------------------------------------------------------------------------
# Switchable Normalization
# --------------------------------------------------------------------------------------------


def _switch_norm_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    shape = tuple(params["shape"])
    C = shape[1]
    K = len(params["normalizers"])
    inputs = {
        "x": rng.standard_normal(shape) * params.get("scale", 1.0) + params.get("offset", 0.0),
        "gamma": 1.0 + 0.5 * rng.standard_normal(C),
        "beta": 0.5 * rng.standard_normal(C),
        "mean_logits": rng.standard_normal(K),
        "var_logits": rng.standard_normal(K),
    }
    if not params.get("training", True):
        inputs["running_mean"] = params.get("offset", 0.0) + 0.3 * rng.standard_normal(C)
        inputs["running_var"] = params.get("scale", 1.0) ** 2 * rng.uniform(0.5, 1.5, C)
    return inputs


def _switch_norm_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    running = None
    if "running_mean" in inputs:
        running = RunningStats(inputs["running_mean"], inputs["running_var"])
    return dict(
        running=running,
        training=params.get("training", True),
        normalizers=tuple(params["normalizers"]),
        groups=params.get("groups"),
        convention=params.get("convention", "paper"),
        eps=params.get("eps", 1e-5),
    )


def _switch_norm_linearize(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Linearized:
    args = [inputs[name] for name in SWITCH_NORM_ARGUMENTS]
    return switch_norm_linearize(*args, **_switch_norm_config(inputs, params))


def _switch_norm_intermediates(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    args = [inputs[name] for name in SWITCH_NORM_ARGUMENTS]
    _, cache, running = switch_norm_forward(*args, **_switch_norm_config(inputs, params))
    named = cache.arrays()
    if running is not None:
        named.update(new_running_mean=running.mean, new_running_var=running.var)
    return named


SWITCH_NORM = OpInfo(
    name="switch_norm",
    arguments=SWITCH_NORM_ARGUMENTS,
    make_inputs=_switch_norm_inputs,
    linearize=_switch_norm_linearize,
    intermediates=_switch_norm_intermediates,
    description="Switchable Normalization with softmax ratios",
)


def _switch_norm_samples() -> Iterator[Case]:
    shapes = {"2d": (3, 4), "3d": (2, 3, 5), "4d": (2, 4, 3, 3), "5d": (2, 2, 2, 3, 2)}
    for convention in ("paper", "official"):
        for training in (True, False):
            mode = "train" if training else "eval"
            for rank, shape in shapes.items():
                normalizers = ("ln", "bn") if rank == "2d" else ("in", "ln", "bn")
                yield Case(
                    "switch_norm", f"{convention}-{mode}-{rank}", "sample",
                    dict(shape=shape, normalizers=normalizers, convention=convention, training=training),
                )  # fmt: skip
    yield Case("switch_norm", "paper-train-gn", "sample", dict(shape=(2, 4, 3, 2), normalizers=("in", "ln", "bn", "gn"), groups=2))
    yield Case("switch_norm", "official-train-gn-first", "sample", dict(shape=(2, 6, 2, 2), normalizers=("gn", "bn"), groups=3, convention="official"))
    yield Case("switch_norm", "paper-train-N1", "sample", dict(shape=(1, 3, 2, 2), normalizers=("in", "ln", "bn")))
    yield Case("switch_norm", "paper-train-C1", "sample", dict(shape=(3, 1, 2, 2), normalizers=("in", "ln", "bn")))
    yield Case("switch_norm", "paper-train-M1", "sample", dict(shape=(3, 4, 1, 1), normalizers=("in", "ln", "bn")))
    yield Case("switch_norm", "paper-eval-M1", "sample", dict(shape=(3, 4, 1, 1), normalizers=("in", "ln", "bn"), training=False))


# --------------------------------------------------------------------------------------------
# Exemplar Normalization and the stages of its ratio generator
# --------------------------------------------------------------------------------------------

# The standardisation of the scores curves on the scale sqrt(eps_r) ~ 3e-3, so the finite
# differences of EN need a first step well below the default 1e-2 to be in their asymptotic range.
# At SPEC §4's initialisation all scores are equal (a gain of eps_r ** -0.5 ~ 316): 1e-4 (1e-3
# fails some rank-2 cases as "too noisy to decide"). With random parameters a sample's scores
# often spread by only ~1e-2: 1e-3 (smaller steps only add rounding error). Both pass every case
# with two seeds. Only the step changes; the tolerances stay.
_EN_STEP_EQUAL_SCORES = {"step": 1e-4}
_EN_STEP = {"step": 1e-3}


def _running_inputs(rng: np.random.Generator, params: Mapping[str, Any], C: int) -> dict[str, np.ndarray]:
    if params.get("training", True):
        return {}
    return {
        "running_mean": params.get("offset", 0.0) + 0.3 * rng.standard_normal(C),
        "running_var": params.get("scale", 1.0) ** 2 * rng.uniform(0.5, 1.5, C),
    }


def _running(inputs: Mapping[str, Any]) -> RunningStats | None:
    return RunningStats(inputs["running_mean"], inputs["running_var"]) if "running_mean" in inputs else None


def _exemplar_norm_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``params["init"]``: ``"default"`` (SPEC §4: gamma 1, beta 0, w 0, b 1, tau 1) or ``"random"``."""
    shape = tuple(params["shape"])
    C = shape[1]
    q = params.get("kernel_size", 3)
    # Every value is drawn whatever the init, so a case's x does not depend on it.
    inputs = {
        "x": rng.standard_normal(shape) * params.get("scale", 1.0) + params.get("offset", 0.0),
        "gamma": 1.0 + 0.5 * rng.standard_normal(C),
        "beta": 0.5 * rng.standard_normal(C),
        "conv_weight": rng.standard_normal(q),
        "conv_bias": np.asarray(0.3 * rng.standard_normal()),
        "temperature": np.asarray(rng.uniform(0.5, 2.0)),
    }
    if params.get("init", "random") == "default":
        defaults = en.exemplar_norm_init(C, inputs["x"], kernel_size=q)
        inputs.update({name: np.asarray(value) for name, value in zip(defaults._fields, defaults, strict=True)})
    return {**inputs, **_running_inputs(rng, params, C)}


def _exemplar_norm_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    normalizers = params.get("normalizers")
    return dict(
        running=_running(inputs),
        training=params.get("training", True),
        normalizers=None if normalizers is None else tuple(normalizers),
        groups=params.get("groups"),
        mixing=params.get("mixing", "output"),
        convention=params.get("convention", "paper"),
        eps=params.get("eps", 1e-5),
    )


def _exemplar_norm_linearize(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Linearized:
    args = [inputs[name] for name in en.EXEMPLAR_NORM_ARGUMENTS]
    return en.exemplar_norm_linearize(*args, **_exemplar_norm_config(inputs, params))


def _exemplar_norm_intermediates(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    args = [inputs[name] for name in en.EXEMPLAR_NORM_ARGUMENTS]
    _, cache, running = en.exemplar_norm_forward(*args, **_exemplar_norm_config(inputs, params))
    named = cache.arrays()
    if running is not None:
        named.update(new_running_mean=running.mean, new_running_var=running.var)
    return named


EXEMPLAR_NORM = OpInfo(
    name="exemplar_norm",
    arguments=en.EXEMPLAR_NORM_ARGUMENTS,
    make_inputs=_exemplar_norm_inputs,
    linearize=_exemplar_norm_linearize,
    intermediates=_exemplar_norm_intermediates,
    description="Exemplar Normalization: per-sample ratios from the ratio generator (SPEC §4)",
)


def _exemplar_norm_samples() -> Iterator[Case]:
    def case(name: str, **params: Any) -> Case:
        step = _EN_STEP_EQUAL_SCORES if params.get("init") == "default" else _EN_STEP
        return Case("exemplar_norm", name, "sample", params, gradcheck=step)

    shapes = {"2d": (3, 4), "3d": (2, 3, 5), "4d": (2, 4, 3, 3), "5d": (2, 3, 2, 3, 2)}
    for init in ("default", "random"):
        for mixing in ("output", "statistics"):
            for training in (True, False):
                mode = "train" if training else "eval"
                for rank, shape in {**shapes, "N1": (1, 4, 3, 2)}.items():
                    yield case(f"{init}-{mixing}-{mode}-{rank}", shape=shape, init=init, mixing=mixing, training=training)
    yield case("random-output-train-gn", shape=(2, 4, 3, 2), normalizers=("in", "ln", "bn", "gn"), groups=2)
    yield case("random-statistics-train-gn-first", shape=(2, 6, 2, 2), normalizers=("gn", "bn"), groups=3, mixing="statistics")
    yield case("random-output-train-official", shape=(2, 4, 3, 3), convention="official")
    yield case("random-statistics-eval-official", shape=(2, 4, 3, 3), convention="official", mixing="statistics", training=False)
    yield case("random-output-train-q1", shape=(2, 4, 3), kernel_size=1)
    yield case("random-output-train-q5", shape=(2, 5, 3), kernel_size=5)
    yield case("random-output-train-M1", shape=(3, 4, 1, 1))
    yield case("random-output-train-C1", shape=(3, 1, 2, 2), kernel_size=1)
    yield case("random-output-train-K1", shape=(2, 4, 3), normalizers=("bn",))
    yield case("random-output-train-offset", shape=(2, 4, 3, 3), offset=1e4)


def _embedding_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    shape = tuple(params["shape"])
    x = rng.standard_normal(shape) * params.get("scale", 1.0) + params.get("offset", 0.0)
    return {"x": x, **_running_inputs(rng, params, shape[1])}


def _embedding_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    config = _exemplar_norm_config(inputs, params)
    del config["mixing"]
    return config


EN_EMBEDDING = OpInfo(
    name="en_embedding",
    arguments=("x",),
    make_inputs=_embedding_inputs,
    linearize=lambda inputs, params: en.embedding_linearize(inputs["x"], **_embedding_config(inputs, params)),
    intermediates=lambda inputs, params: {"embedding": en.embedding_linearize(inputs["x"], **_embedding_config(inputs, params)).out},
    description="EN ratio generator, stage 1: spatial mean of each normalized map, as a function of x",
)


def _embedding_samples() -> Iterator[Case]:
    yield Case("en_embedding", "train-4d", "sample", dict(shape=(2, 4, 3, 3)))
    yield Case("en_embedding", "eval-4d", "sample", dict(shape=(2, 4, 3, 3), training=False))
    yield Case("en_embedding", "train-2d", "sample", dict(shape=(3, 4)))
    yield Case("en_embedding", "train-3d-gn", "sample", dict(shape=(2, 4, 5), normalizers=("in", "ln", "bn", "gn"), groups=2))
    yield Case("en_embedding", "official-eval-5d", "sample", dict(shape=(2, 3, 2, 2, 3), convention="official", training=False))
    yield Case("en_embedding", "train-N1", "sample", dict(shape=(1, 4, 3, 2)))


def _array_inputs(names_and_shapes: Mapping[str, str]) -> Callable[[np.random.Generator, Mapping[str, Any]], dict[str, np.ndarray]]:
    """``make_inputs`` drawing ``loc + scale * N(0, 1)`` arrays of the shapes named in ``params``."""

    def make(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        inputs = {}
        for name, shape_key in names_and_shapes.items():
            shape = tuple(params.get(shape_key, ()))
            inputs[name] = np.asarray(params.get(f"{name}_loc", 0.0) + params.get(f"{name}_scale", 1.0) * rng.standard_normal(shape))
        return inputs

    return make


EN_CHANNEL_CONV = OpInfo(
    name="en_channel_conv",
    arguments=("embedding", "conv_weight", "conv_bias"),
    make_inputs=_array_inputs({"embedding": "shape", "conv_weight": "kernel", "conv_bias": "bias"}),
    linearize=lambda inputs, params: en.channel_conv_linearize(inputs["embedding"], inputs["conv_weight"], inputs["conv_bias"]),
    intermediates=lambda inputs, params: {
        "pre_activation": en.channel_conv(inputs["embedding"], inputs["conv_weight"], inputs["conv_bias"])
    },
    description="EN ratio generator, stage 2: shared 1-D convolution along channels (zero 'same' padding), then ReLU",
)


def _channel_conv_samples() -> Iterator[Case]:
    yield Case("en_channel_conv", "q3", "sample", dict(shape=(2, 3, 5), kernel=(3,)))
    yield Case("en_channel_conv", "q1", "sample", dict(shape=(2, 3, 4), kernel=(1,)))
    yield Case("en_channel_conv", "q5-C5", "sample", dict(shape=(2, 2, 5), kernel=(5,)))
    yield Case("en_channel_conv", "q3-C3-N1", "sample", dict(shape=(1, 3, 3), kernel=(3,)))
    yield Case("en_channel_conv", "q3-all-active", "sample", dict(shape=(2, 3, 6), kernel=(3,), conv_bias_loc=10.0))


EN_CHANNEL_MEAN = OpInfo(
    name="en_channel_mean",
    arguments=("activation",),
    make_inputs=_array_inputs({"activation": "shape"}),
    linearize=lambda inputs, params: en.channel_mean_linearize(inputs["activation"]),
    intermediates=lambda inputs, params: {"scores": en.channel_mean(inputs["activation"])},
    description="EN ratio generator, stage 3: mean over channels",
)


def _channel_mean_samples() -> Iterator[Case]:
    yield Case("en_channel_mean", "2x3x5", "sample", dict(shape=(2, 3, 5)))
    yield Case("en_channel_mean", "1x2x1", "sample", dict(shape=(1, 2, 1)))


EN_STANDARDIZE = OpInfo(
    name="en_standardize",
    arguments=("scores",),
    make_inputs=_array_inputs({"scores": "shape"}),
    linearize=lambda inputs, params: en.standardize_linearize(inputs["scores"]),
    intermediates=lambda inputs, params: {"standardized": en.standardize(inputs["scores"])[0]},
    description="EN ratio generator, stage 4: standardisation of the scores over the normalizers (eps_r = 1e-5)",
)


def _standardize_samples() -> Iterator[Case]:
    yield Case("en_standardize", "K3", "sample", dict(shape=(4, 3)))
    yield Case("en_standardize", "K2", "sample", dict(shape=(3, 2)))
    yield Case("en_standardize", "K4", "sample", dict(shape=(2, 4)))
    # Scores spread by ~sqrt(eps_r), and exactly equal scores (the initialisation): small first
    # steps, for the reason given at _EN_STEP_EQUAL_SCORES.
    near_equal = dict(shape=(3, 3), scores_loc=1.0, scores_scale=3e-3)
    yield Case("en_standardize", "K3-near-equal", "sample", near_equal, gradcheck={"step": 1e-3})
    yield Case("en_standardize", "K3-equal", "sample", dict(shape=(3, 3), scores_loc=1.0, scores_scale=0.0), gradcheck=_EN_STEP_EQUAL_SCORES)


EN_SOFTMAX = OpInfo(
    name="en_softmax",
    arguments=("standardized", "temperature"),
    make_inputs=_array_inputs({"standardized": "shape", "temperature": "temperature_shape"}),
    linearize=lambda inputs, params: en.tempered_softmax_linearize(inputs["standardized"], inputs["temperature"]),
    intermediates=lambda inputs, params: {"ratios": en.tempered_softmax(inputs["standardized"], inputs["temperature"])},
    description="EN ratio generator, stage 5: softmax of the standardised scores times a learnable temperature",
)


def _softmax_samples() -> Iterator[Case]:
    yield Case("en_softmax", "K3", "sample", dict(shape=(4, 3), temperature_loc=1.0, temperature_scale=0.3))
    yield Case("en_softmax", "K2-negative-tau", "sample", dict(shape=(3, 2), temperature_loc=-1.0, temperature_scale=0.3))
    yield Case("en_softmax", "K4-hot", "sample", dict(shape=(2, 4), temperature_loc=5.0, temperature_scale=0.3))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

OPS: dict[str, OpInfo] = {
    op.name: op for op in (SWITCH_NORM, EXEMPLAR_NORM, EN_EMBEDDING, EN_CHANNEL_CONV, EN_CHANNEL_MEAN, EN_STANDARDIZE, EN_SOFTMAX)
}
"""Every op refnorm implements, by name."""

_CASE_SOURCES: tuple[Callable[[], Iterator[Case]], ...] = (
    _switch_norm_samples,
    _exemplar_norm_samples,
    _embedding_samples,
    _channel_conv_samples,
    _channel_mean_samples,
    _standardize_samples,
    _softmax_samples,
)


def cases(kind: str | None = None, op: str | None = None) -> list[Case]:
    """The catalog's cases, optionally only one ``kind`` (``"sample"``, ...) and/or one ``op``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if op is not None and op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {tuple(OPS)}")
    selected = [c for source in _CASE_SOURCES for c in source() if (kind is None or c.kind == kind) and (op is None or c.op == op)]
    ids = [c.id for c in selected]
    if len(set(ids)) != len(ids):
        raise RuntimeError("the catalog has duplicate case ids")  # a bug in refnorm, not in the caller
    return selected
