"""The catalog of Exemplar Normalization and the stages of its ratio generator: the ops and their named cases."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import functools

import numpy as np

from ...ops import exemplarnorm as en
from ...ops import ratio_generator as rg
from ...ops.linearized import Linearized
from ...ops.running import RunningStats
from .base import (
    LARGE_OFFSET, MODES, REFERENCE_SHAPES, Case, CaseMaker, Forward, OpInfo, drop_inputs, explicit_values, new_running_arrays,
    offset_gradcheck_options, output_only, replace_input, with_defaults, with_element,
)  # fmt: skip

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


def _en_gradcheck_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The first finite-difference step of an EN case: smaller at the initialisation (above)."""
    return _EN_STEP_EQUAL_SCORES if params.get("init") == "default" else _EN_STEP


def _running_inputs(rng: np.random.Generator, params: Mapping[str, Any], C: int) -> dict[str, np.ndarray]:
    """Running statistics in evaluation, and in training with ``running=True`` (then updated by the op)."""
    if params.get("training", True) and not params.get("running", False):
        return {}
    return {
        "running_mean": params.get("offset", 0.0) + 0.3 * rng.standard_normal(C),
        "running_var": params.get("scale", 1.0) ** 2 * rng.uniform(0.5, 1.5, C),
    }


def _running(inputs: Mapping[str, Any]) -> RunningStats | None:
    return RunningStats(inputs["running_mean"], inputs["running_var"]) if "running_mean" in inputs else None


def _exemplar_norm_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``params["init"]``: ``"default"`` (SPEC §4: gamma 1, beta 0, w 0, b 1, tau 1) or ``"random"``;
    a parameter named in ``params`` (``temperature=8.0``) takes that value."""
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
    for name in ("conv_weight", "conv_bias", "temperature"):
        if name in params:
            inputs[name] = explicit_values(params[name], inputs[name].shape)
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
        momentum=params.get("momentum", 0.9),
    )


def _exemplar_norm_forward(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Forward:
    """EN once at ``inputs``; the active set is the ReLU's sign pattern, as in :func:`~refnorm.exemplar_norm_linearize`."""
    y, cache, running = en.exemplar_norm_forward(*EXEMPLAR_NORM.arguments_of(inputs), **_exemplar_norm_config(inputs, params))
    return Forward(en.linearization(y, cache), {**cache.arrays(), **new_running_arrays(running)})


EXEMPLAR_NORM = OpInfo(
    name="exemplar_norm",
    arguments=en.EXEMPLAR_NORM_ARGUMENTS,
    make_inputs=_exemplar_norm_inputs,
    forward=_exemplar_norm_forward,
    description="Exemplar Normalization: per-sample ratios from the ratio generator (SPEC §4)",
)


_EN_CLOSE_SCORES = (
    "the standardisation divides the scores' deviations by their spread over the normalizers; close scores "
    "(with q = 1 the IN and LN scores coincide) amplify the float32 rounding of the scores by 1 / spread"
)


def _exemplar_norm_samples() -> Iterator[Case]:
    case = CaseMaker("exemplar_norm", "sample", gradcheck=_en_gradcheck_options)
    shapes = {"2d": (3, 4), "3d": (2, 3, 5), "4d": (2, 4, 3, 3), "5d": (2, 3, 2, 3, 2)}
    for init in ("default", "random"):
        for mixing in ("output", "statistics"):
            for mode, training in MODES:
                for rank, shape in {**shapes, "N1": (1, 4, 3, 2)}.items():
                    yield case(f"{init}-{mixing}-{mode}-{rank}", shape=shape, init=init, mixing=mixing, training=training)
    yield case("random-output-train-gn", shape=(2, 4, 3, 2), normalizers=("in", "ln", "bn", "gn"), groups=2)
    yield case("random-statistics-train-gn-first", shape=(2, 6, 2, 2), normalizers=("gn", "bn"), groups=3, mixing="statistics")
    yield case("random-output-train-official", shape=(2, 4, 3, 3), convention="official")
    yield case("random-statistics-eval-official", shape=(2, 4, 3, 3), convention="official", mixing="statistics", training=False)
    yield case("random-output-train-q1", shape=(2, 4, 3), kernel_size=1, conditioning=_EN_CLOSE_SCORES)
    yield case("random-output-train-q5", shape=(2, 5, 3), kernel_size=5)
    yield case("random-output-train-M1", shape=(3, 4, 1, 1))
    yield case("random-output-train-C1", shape=(3, 1, 2, 2), kernel_size=1)
    yield case("random-output-train-K1", shape=(2, 4, 3), normalizers=("bn",))
    yield case("random-output-train-offset", shape=(2, 4, 3, 3), offset=1e4, conditioning=LARGE_OFFSET)


def _embedding_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    shape = tuple(params["shape"])
    x = rng.standard_normal(shape) * params.get("scale", 1.0) + params.get("offset", 0.0)
    return {"x": x, **_running_inputs(rng, params, shape[1])}


def _embedding_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    config = _exemplar_norm_config(inputs, params)
    del config["mixing"], config["momentum"]
    return config


EN_EMBEDDING = OpInfo(
    name="en_embedding",
    arguments=("x",),
    make_inputs=_embedding_inputs,
    forward=lambda inputs, params: output_only(en.embedding_linearize(inputs["x"], **_embedding_config(inputs, params)), "embedding"),
    description="EN ratio generator, stage 1: spatial mean of each normalized map, as a function of x",
)


def _embedding_samples() -> Iterator[Case]:
    case = CaseMaker("en_embedding", "sample")
    yield case("train-4d", shape=(2, 4, 3, 3))
    yield case("eval-4d", shape=(2, 4, 3, 3), training=False)
    yield case("train-2d", shape=(3, 4))
    yield case("train-3d-gn", shape=(2, 4, 5), normalizers=("in", "ln", "bn", "gn"), groups=2)
    yield case("official-eval-5d", shape=(2, 3, 2, 2, 3), convention="official", training=False)
    yield case("train-N1", shape=(1, 4, 3, 2))


def _array_inputs(names_and_shapes: Mapping[str, str]) -> Callable[[np.random.Generator, Mapping[str, Any]], dict[str, np.ndarray]]:
    """``make_inputs`` drawing ``loc + scale * N(0, 1)`` arrays of the shapes named in ``params``."""

    def make(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        inputs = {}
        for name, shape_key in names_and_shapes.items():
            shape = tuple(params.get(shape_key, ()))
            inputs[name] = np.asarray(params.get(f"{name}_loc", 0.0) + params.get(f"{name}_scale", 1.0) * rng.standard_normal(shape))
        return inputs

    return make


def _channel_conv_forward(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Forward:
    """Stage 2 once, as :func:`~refnorm.ops.ratio_generator.channel_conv_linearize` (active set: the ReLU's sign pattern),
    keeping the pre-activation ``z`` as an intermediate."""
    embedding, conv_weight, conv_bias = EN_CHANNEL_CONV.arguments_of(inputs)
    z = rg.channel_conv(embedding, conv_weight, conv_bias)
    linearized = Linearized(
        out=rg.relu(z),
        pullback=lambda da: rg.channel_conv_vjp(rg.relu_vjp(da, z), embedding, conv_weight),
        pushforward=lambda e_dot, w_dot, b_dot: rg.relu_jvp(rg.channel_conv_jvp(e_dot, w_dot, b_dot, embedding, conv_weight), z),
        active_set=z > 0.0,
    )
    return Forward(linearized, {"pre_activation": z})


EN_CHANNEL_CONV = OpInfo(
    name="en_channel_conv",
    arguments=("embedding", "conv_weight", "conv_bias"),
    make_inputs=_array_inputs({"embedding": "shape", "conv_weight": "kernel", "conv_bias": "bias"}),
    forward=_channel_conv_forward,
    description="EN ratio generator, stage 2: shared 1-D convolution along channels (zero 'same' padding), then ReLU",
)


def _channel_conv_samples() -> Iterator[Case]:
    case = CaseMaker("en_channel_conv", "sample")
    yield case("q3", shape=(2, 3, 5), kernel=(3,))
    yield case("q1", shape=(2, 3, 4), kernel=(1,))
    yield case("q5-C5", shape=(2, 2, 5), kernel=(5,))
    yield case("q3-C3-N1", shape=(1, 3, 3), kernel=(3,))
    yield case("q3-all-active", shape=(2, 3, 6), kernel=(3,), conv_bias_loc=10.0)


EN_CHANNEL_MEAN = OpInfo(
    name="en_channel_mean",
    arguments=("activation",),
    make_inputs=_array_inputs({"activation": "shape"}),
    forward=lambda inputs, params: output_only(rg.channel_mean_linearize(inputs["activation"]), "scores"),
    description="EN ratio generator, stage 3: mean over channels",
)


def _channel_mean_samples() -> Iterator[Case]:
    case = CaseMaker("en_channel_mean", "sample")
    yield case("2x3x5", shape=(2, 3, 5))
    yield case("1x2x1", shape=(1, 2, 1))


EN_STANDARDIZE = OpInfo(
    name="en_standardize",
    arguments=("scores",),
    make_inputs=_array_inputs({"scores": "shape"}),
    forward=lambda inputs, params: output_only(rg.standardize_linearize(inputs["scores"]), "standardized"),
    description="EN ratio generator, stage 4: standardisation of the scores over the normalizers (eps_r = 1e-5)",
)


def _standardize_samples() -> Iterator[Case]:
    case = CaseMaker("en_standardize", "sample")
    yield case("K3", shape=(4, 3))
    yield case("K2", shape=(3, 2))
    yield case("K4", shape=(2, 4))
    # Scores spread by ~sqrt(eps_r), and exactly equal scores (the initialisation): small first
    # steps, for the reason given at _EN_STEP_EQUAL_SCORES.
    near_equal = dict(shape=(3, 3), scores_loc=1.0, scores_scale=3e-3)
    yield case("K3-near-equal", **near_equal, gradcheck={"step": 1e-3}, conditioning=_EN_CLOSE_SCORES)
    yield case("K3-equal", shape=(3, 3), scores_loc=1.0, scores_scale=0.0, gradcheck=_EN_STEP_EQUAL_SCORES)


EN_SOFTMAX = OpInfo(
    name="en_softmax",
    arguments=("standardized", "temperature"),
    make_inputs=_array_inputs({"standardized": "shape", "temperature": "temperature_shape"}),
    forward=lambda inputs, params: output_only(rg.tempered_softmax_linearize(inputs["standardized"], inputs["temperature"]), "ratios"),
    description="EN ratio generator, stage 5: softmax of the standardised scores times a learnable temperature",
)


def _softmax_samples() -> Iterator[Case]:
    case = CaseMaker("en_softmax", "sample")
    yield case("K3", shape=(4, 3), temperature_loc=1.0, temperature_scale=0.3)
    yield case("K2-negative-tau", shape=(3, 2), temperature_loc=-1.0, temperature_scale=0.3)
    yield case("K4-hot", shape=(2, 4), temperature_loc=5.0, temperature_scale=0.3)


def _exemplar_norm_references() -> Iterator[Case]:
    case = CaseMaker("exemplar_norm", "reference", complete=functools.partial(with_defaults, init="random"), gradcheck=_en_gradcheck_options)
    # Both initialisations, both mixings, both modes, every rank (paper convention, default normalizers).
    for init in ("default", "random"):
        for mixing in ("output", "statistics"):
            for mode, training in MODES:
                for rank, shape in REFERENCE_SHAPES.items():
                    yield case(f"{init}-{mixing}-{mode}-rank{len(shape)}", shape=shape, init=init, mixing=mixing, training=training,
                               ship=init == "random" and rank == "4d")  # fmt: skip
    # The official convention at every rank.
    for mode, training in MODES:
        for rank, shape in REFERENCE_SHAPES.items():
            # The rank-2 training case has samples whose scores lie within ~1e-2 of each other.
            close = _EN_CLOSE_SCORES if (rank, training) == ("2d", True) else ""
            yield case(f"official-output-{mode}-rank{len(shape)}", shape=shape, convention="official", training=training, conditioning=close)
    yield case("official-statistics-train-rank4", shape=(3, 4, 3, 2), convention="official", mixing="statistics")
    # Edge cases from bug reports: N = 1, C = 1, M = 1, size-1 axes.
    for mixing in ("output", "statistics"):
        for mode, training in MODES:
            yield case(f"random-{mixing}-{mode}-batch1", shape=(1, 4, 3, 2), mixing=mixing, training=training,
                       note="a batch of one: BN equals IN in training", conditioning=_EN_CLOSE_SCORES, ship=mixing == "output" and training)  # fmt: skip
            yield case(f"random-{mixing}-{mode}-HW1", shape=(4, 3, 1, 1), mixing=mixing, training=training,
                       note="H*W = 1: every IN variance is 0 (where the official SN code divides by zero, SN issue #5)",
                       ship=mixing == "output" and training)  # fmt: skip
    yield case("random-output-train-channels1", shape=(3, 1, 2, 2), kernel_size=1, note="one channel: LN equals IN, kernel size 1")
    yield case("default-output-train-channels1", shape=(3, 1, 4), init="default", kernel_size=1, note="one channel at the initialisation")
    yield case("random-output-train-H1", shape=(2, 3, 1, 5), note="size-1 height")
    yield case("random-statistics-eval-5d-HW1", shape=(2, 3, 4, 1, 1), mixing="statistics", training=False, note="3-d input, D > 1, H = W = 1")
    yield case("random-output-train-2d-N1", shape=(1, 4), note="(1, C): BN over a single sample")
    yield case("random-output-train-2d-C1", shape=(5, 1), kernel_size=1, note="(N, 1): LN over a single feature", conditioning=_EN_CLOSE_SCORES)
    yield case("random-output-train-all1", shape=(1, 1, 1, 1), kernel_size=1, note="every axis of size 1: every variance 0, y = beta")
    # Normalizer sets and GN.
    yield case("random-output-train-set-in-ln-bn-gn", shape=(3, 4, 3, 2), normalizers=("in", "ln", "bn", "gn"), groups=2)
    yield case("random-statistics-eval-set-gn-bn", shape=(2, 6, 2, 2), normalizers=("gn", "bn"), groups=3, training=False, convention="official")
    yield case("random-output-train-set-ln-bn", shape=(3, 4, 3, 2), normalizers=("ln", "bn"), note="K = 2: the standardised scores are +-1 (nearly)")
    yield case("random-output-train-set-bn", shape=(3, 4, 3), normalizers=("bn",), note="K = 1: the ratio is 1, the generator gets no gradient")
    yield case("random-output-train-gn-groupsC", shape=(2, 4, 2, 3), normalizers=("gn", "in", "ln"), groups=4,
               note="GN with C groups equals IN: two tied scores", conditioning=_EN_CLOSE_SCORES)  # fmt: skip
    # Kernel sizes (odd, <= C), including q = C.
    yield case("random-output-train-q1-rank4", shape=(3, 4, 3, 2), kernel_size=1, conditioning=_EN_CLOSE_SCORES)
    yield case("random-output-train-q5-C5", shape=(2, 5, 3, 2), kernel_size=5, note="kernel as wide as the channel axis")
    yield case("random-statistics-train-q7-C8", shape=(2, 8, 3), kernel_size=7)
    yield case("default-output-train-q7-C8", shape=(2, 8, 3), kernel_size=7, init="default")
    # Temperatures: negative, zero, large (near one-hot ratios).
    yield case("random-output-train-tau-negative", shape=(3, 4, 3, 2), temperature=-1.5, note="a negative temperature favours the lowest score",
               conditioning=_EN_CLOSE_SCORES)  # fmt: skip
    yield case("random-output-train-tau0", shape=(3, 4, 3, 2), temperature=0.0, note="temperature 0: uniform ratios, but a gradient for tau")
    yield case("random-statistics-train-tau8", shape=(3, 4, 3, 2), temperature=8.0, mixing="statistics", note="temperature 8: nearly one-hot ratios")
    # Large offsets, output mixing. Statistics mixing is left out: there the mixed mean weighs
    # statistics of size 1e4 by the ratios, so the embedding's cancellation at mean 1e4 (~1e-12),
    # amplified by the standardisation of close (or, at the initialisation, equal) scores, puts the
    # float64 finite differences of the generator's parameters above the checker's rtol for some
    # directions at every starting step tried (1e-4 to 1e-1). Its forward is SN's mixture.
    for mode, training in MODES:
        yield case(f"random-output-{mode}-offset1e4", shape=(3, 4, 3, 3), training=training, offset=1e4,
                   note="mean 1e4, std 1", conditioning=LARGE_OFFSET, ship=training)  # fmt: skip
    yield case("default-output-train-offset1e4", shape=(3, 4, 3, 3), init="default", offset=1e4, conditioning=LARGE_OFFSET)
    # Small and large scales, eps, running statistics.
    yield case("random-output-train-scale1e-3", shape=(3, 4, 3, 3), scale=1e-3, note="variance 1e-6 below eps = 1e-5: eps dominates",
               conditioning=_EN_CLOSE_SCORES)  # fmt: skip
    yield case("random-output-eval-scale1e3", shape=(3, 4, 3, 3), scale=1e3, training=False, note="variance 1e6",
               conditioning="std 1e3: the statistics are ~1e2 to 1e6, and a float32 default atol of 1e-5 is below their rounding")  # fmt: skip
    yield case("random-output-train-eps1e-3", shape=(3, 4, 3, 2), eps=1e-3)
    yield case("random-output-train-ema0.9", shape=(3, 4, 3, 2), running=True, momentum=0.9, note="EMA update of the running statistics in training")
    yield case("random-statistics-train-official-ema0.997", shape=(3, 4, 2, 2, 2), running=True, momentum=0.997, convention="official",
               mixing="statistics")  # fmt: skip


def _exemplar_norm_errors() -> Iterator[Case]:
    case = CaseMaker("exemplar_norm", "error", base=dict(shape=(2, 4, 3, 3)))
    kernel = "the kernel size of conv_weight"
    yield case("kernel-even", ValueError, kernel + r" = 2 is even; expected an odd kernel size q", edit=replace_input("conv_weight", lambda w: w[:2]),
               note="an even kernel has no centre: 'same' zero padding would shift the channels")  # fmt: skip
    yield case("kernel-4-even", ValueError, kernel + r" = 4 is even", edit=replace_input("conv_weight", lambda w: np.append(w, 0.0)))
    yield case("kernel-larger-than-C", ValueError, kernel + r" = 5 is larger than the C = 4 channels", edit=replace_input("conv_weight", lambda w: np.zeros(5)))
    yield case("kernel-empty", ValueError, kernel + r" must be a positive odd int, got 0", edit=replace_input("conv_weight", lambda w: w[:0]))
    yield case("conv-weight-rank3", ValueError, r"conv_weight has shape \(1, 1, 3\), expected \(q,\)", edit=replace_input("conv_weight", lambda w: w[None, None, :]),
               note="a PyTorch Conv1d(1, 1, q) weight must be reshaped to (q,)")  # fmt: skip
    yield case("conv-bias-shape", ValueError, r"conv_bias has shape \(1,\), expected a scalar, shape = \(\)", edit=replace_input("conv_bias", lambda b: b[None]))
    yield case("temperature-shape", ValueError, r"temperature has shape \(3,\), expected a scalar, shape = \(\)",
               edit=replace_input("temperature", lambda t: np.full(3, t)))  # fmt: skip
    yield case("temperature-nan", ValueError, r"temperature contains NaN or infinity", edit=replace_input("temperature", lambda t: np.asarray(np.nan)))
    yield case("conv-weight-inf", ValueError, r"conv_weight contains NaN or infinity", edit=replace_input("conv_weight", with_element(np.inf, (1,))))
    yield case("x-nan", ValueError, r"x contains NaN or infinity", edit=replace_input("x", with_element(np.nan, (1, 2))))
    yield case("gamma-shape", ValueError, r"gamma has shape \(3,\), expected \(C,\) = \(4,\)", edit=replace_input("gamma", lambda g: g[:3]))
    yield case("beta-shape", ValueError, r"beta has shape \(4, 1\), expected \(C,\) = \(4,\)", edit=replace_input("beta", lambda b: b[:, None]))
    yield case("gamma-float32", TypeError, r"gamma has dtype (\w+\.)?float32, expected (\w+\.)?float64 \(the dtype of x\)",
               edit=replace_input("gamma", lambda g: g.astype(np.float32)))  # fmt: skip
    yield case("x-integer", TypeError, r"x has dtype (\w+\.)?int64, expected a real floating dtype", edit=replace_input("x", lambda x: np.round(x).astype(np.int64)))
    yield case("x-rank1", ValueError, r"x has shape \(4,\), expected \(N, C, \*spatial\) with rank >= 2", edit=replace_input("x", lambda x: x[0, :, 0, 0]))
    yield case("unknown-mixing", ValueError, r"unknown mixing 'both'; expected one of 'output', 'statistics'", mixing="both")
    yield case("unknown-normalizer", ValueError, r"unknown normalizer 'xn'", normalizers=("in", "xn"))
    yield case("gn-without-groups", ValueError, r"'gn' but groups is None", normalizers=("in", "gn"))
    yield case("groups-not-dividing", ValueError, r"groups = 3 does not divide the channel count C = 4", normalizers=("gn", "ln"), groups=3)
    yield case("unknown-convention", ValueError, r"unknown convention 'pytorch'", convention="pytorch")
    yield case("eps-zero", ValueError, r"eps must be a finite number > 0, got 0", eps=0)
    yield case("momentum-negative", ValueError, r"momentum must lie in \[0, 1\], got -0\.1", momentum=-0.1)
    yield case("training-string", TypeError, r"training must be a bool, got str", training="no")
    yield case("official-HW1", ValueError, r"divides the instance variance by M - 1 = 0", shape=(4, 3, 1, 1), convention="official",
               note="the official SN code returns NaN here (SN issue #5); refnorm says why")  # fmt: skip
    yield case("eval-without-running", ValueError, r"evaluation mode with 'bn' in normalizers needs running statistics",
               training=False, edit=drop_inputs("running_mean", "running_var"))  # fmt: skip
    yield case("running-var-shape", ValueError, r"running\.var has shape \(5,\), expected \(C,\) = \(4,\)",
               training=False, edit=replace_input("running_var", lambda v: np.append(v, 1.0)))  # fmt: skip
    yield case("eps-below-dtype-bound", ValueError, r"eps = 1e-310 is too small for (\w+\.)?float(64|32)", eps=1e-310)
    yield case("x-pooled-variance-overflow", ValueError, r"x (has values so far apart that the BN variance overflows|contains NaN or infinity)",
               edit=replace_input("x", lambda x: np.concatenate([x[:1] + 3e154, x[1:]])))  # fmt: skip
    yield case("running-var-negative", ValueError, r"running\.var has a negative entry", training=False,
               edit=replace_input("running_var", lambda v: -v - 1.0))  # fmt: skip


# The stages of the ratio generator. Their sample cases exercise each stage's VJP; the reference
# cases below add inputs the composed EN cannot produce or that localise an edge to one stage.
# en_channel_mean has none: it is a linear mean, fully exercised by its samples. Only
# en_embedding validates its input (normalizers, convention, shape); the other stages are
# internal steps whose input exemplar_norm_forward has validated, so they have no error cases.


def _embedding_references() -> Iterator[Case]:
    case = CaseMaker("en_embedding", "reference", gradcheck=offset_gradcheck_options)
    for rank, shape in REFERENCE_SHAPES.items():
        # (N, C) = (5, 3): one row's three features have variance 1e-3, so its LN-normalized values
        # curve on the scale of their std, 0.03; a first step of 1e-3 keeps the finite
        # differences in their asymptotic range (1e-2 fails some directions as too noisy to decide).
        yield case(f"paper-train-rank{len(shape)}", shape=shape, gradcheck={"step": 1e-3} if rank == "2d" else None)
    yield case("official-train-rank4", shape=(3, 4, 3, 2), convention="official")
    yield case("paper-train-gn-groupsC", shape=(2, 4, 2, 3), normalizers=("in", "ln", "gn"), groups=4, note="GN with C groups: its embedding is IN's, 0")
    yield case("paper-train-HW1", shape=(4, 3, 1, 1), note="H*W = 1")
    yield case("paper-train-C1", shape=(3, 1, 2, 2), note="one channel")
    yield case("paper-eval-offset1e4", shape=(3, 4, 3, 3), training=False, offset=1e4, conditioning=LARGE_OFFSET)


def _embedding_errors() -> Iterator[Case]:
    case = CaseMaker("en_embedding", "error", base={"shape": (2, 4, 3, 3)})
    yield case("x-rank1", ValueError, r"x has shape \(4,\), expected \(N, C, \*spatial\) with rank >= 2", edit=replace_input("x", lambda x: x[0, :, 0, 0]))
    yield case("unknown-normalizer", ValueError, r"unknown normalizer 'xn'", normalizers=("in", "xn"))
    yield case("gn-without-groups", ValueError, r"'gn' but groups is None", normalizers=("gn",))
    yield case("unknown-convention", ValueError, r"unknown convention 'pytorch'", convention="pytorch")
    yield case("official-HW1", ValueError, r"divides the instance variance by M - 1 = 0", shape=(4, 3, 1, 1), convention="official")
    yield case("eval-without-running", ValueError, r"needs running statistics", training=False, edit=drop_inputs("running_mean", "running_var"))
    yield case("nan-x", ValueError, r"x contains NaN or infinity", edit=replace_input("x", with_element(float("nan"))))


def _channel_conv_references() -> Iterator[Case]:
    case = CaseMaker("en_channel_conv", "reference")
    yield case("q7-C8", shape=(2, 3, 8), kernel=(7,))
    yield case("q1-C1", shape=(3, 2, 1), kernel=(1,), note="one channel")
    yield case("q3-N1-K1", shape=(1, 1, 4), kernel=(3,), note="one sample, one normalizer")


def _standardize_references() -> Iterator[Case]:
    case = CaseMaker("en_standardize", "reference")
    yield case("K5", shape=(3, 5))
    yield case("K1", shape=(3, 1), note="one normalizer: standardised scores 0, gradient 0")
    yield case("K3-spread1e3", shape=(3, 3), scores_scale=1e3, note="scores spread 1e3: eps_r negligible, the standardisation scale-free")


def _softmax_references() -> Iterator[Case]:
    case = CaseMaker("en_softmax", "reference")
    yield case("K5-tau8", shape=(3, 5), temperature_loc=8.0, temperature_scale=0.0, note="temperature 8: nearly one-hot ratios")
    yield case("K3-tau0", shape=(3, 3), temperature_loc=0.0, temperature_scale=0.0, note="temperature 0: uniform ratios, the temperature still gets a gradient")


CASE_SOURCES = (
    _exemplar_norm_samples,
    _exemplar_norm_references,
    _exemplar_norm_errors,
    _embedding_samples,
    _embedding_references,
    _embedding_errors,
    _channel_conv_samples,
    _channel_conv_references,
    _channel_mean_samples,
    _standardize_samples,
    _standardize_references,
    _softmax_samples,
    _softmax_references,
)
"""This family's case sources, in catalog order (EN, then the stages of its ratio generator in forward order)."""
