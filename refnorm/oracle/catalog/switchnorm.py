"""The catalog of Switchable Normalization and the plain normalizers (IN, LN, BN, GN): the ops and their named cases."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ...ops.plainnorm import PLAIN_NORM_ARGUMENTS, plain_norm_forward
from ...ops.plainnorm import linearization as plain_norm_linearization
from ...ops.switchnorm import SWITCH_NORM_ARGUMENTS, switch_norm_forward
from ...ops.switchnorm import linearization as switch_norm_linearization
from .base import (
    LARGE_OFFSET, MODES, REFERENCE_SHAPES, Case, CaseMaker, Forward, OpInfo, drop_inputs, new_running_arrays,
    normalization_config, normalization_inputs, offset_gradcheck_options, replace_input, with_default_normalizers, with_element,
)  # fmt: skip

# --------------------------------------------------------------------------------------------
# Switchable Normalization
# --------------------------------------------------------------------------------------------


def _switch_norm_forward(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Forward:
    config = dict(normalization_config(inputs, params), normalizers=params["normalizers"])
    y, cache, running = switch_norm_forward(*SWITCH_NORM.arguments_of(inputs), **config)
    return Forward(switch_norm_linearization(y, cache), {**cache.arrays(), **new_running_arrays(running)})


SWITCH_NORM = OpInfo(
    name="switch_norm",
    arguments=SWITCH_NORM_ARGUMENTS,
    make_inputs=lambda rng, params: normalization_inputs(rng, params, logits=len(params["normalizers"])),
    forward=_switch_norm_forward,
    description="Switchable Normalization with softmax ratios",
    hvp=True,
)

_SHAPES = {"2d": (3, 4), "3d": (2, 3, 5), "4d": (2, 4, 3, 3), "5d": (2, 2, 2, 3, 2)}
"""The sample cases' shape per input rank."""


def _switch_norm_samples() -> Iterator[Case]:
    case = CaseMaker("switch_norm", "sample")
    for convention in ("paper", "official"):
        for mode, training in MODES:
            for rank, shape in _SHAPES.items():
                normalizers = ("ln", "bn") if rank == "2d" else ("in", "ln", "bn")
                yield case(f"{convention}-{mode}-{rank}", shape=shape, normalizers=normalizers, convention=convention, training=training)
    yield case("paper-train-gn", shape=(2, 4, 3, 2), normalizers=("in", "ln", "bn", "gn"), groups=2)
    yield case("official-train-gn-first", shape=(2, 6, 2, 2), normalizers=("gn", "bn"), groups=3, convention="official")
    yield case("paper-train-N1", shape=(1, 3, 2, 2), normalizers=("in", "ln", "bn"))
    yield case("paper-train-C1", shape=(3, 1, 2, 2), normalizers=("in", "ln", "bn"))
    yield case("paper-train-M1", shape=(3, 4, 1, 1), normalizers=("in", "ln", "bn"))
    yield case("paper-eval-M1", shape=(3, 4, 1, 1), normalizers=("in", "ln", "bn"), training=False)


_SUBSETS = {
    "in": (("in",), None),
    "ln": (("ln",), None),
    "bn": (("bn",), None),
    "gn": (("gn",), 2),
    "in-ln": (("in", "ln"), None),
    "ln-bn": (("ln", "bn"), None),
    "bn-in": (("bn", "in"), None),
    "in-ln-bn-gn": (("in", "ln", "bn", "gn"), 2),
    "gn-bn-ln-in": (("gn", "bn", "ln", "in"), 4),
}
"""Normalizer subsets of the reference catalog (name -> (set, GN groups)); order is logit order."""


_SHIPPED_SWITCH_NORM = frozenset({
    "paper-train-rank4", "official-eval-rank5", "official-train-set-gn-bn-ln-in", "paper-train-HW1", "paper-eval-HW1",
    "paper-train-2d-C1", "paper-train-2d-N1", "official-train-batch1", "paper-train-channels1", "paper-train-all1",
    "paper-train-offset1e4", "official-eval-offset1e4", "official-train-logits30", "official-train-equal-logits",
    "official-train-2d-ema0.997",
})  # fmt: skip
"""The switch_norm reference cases in the shipped golden set: one per rank and convention side, a GN
order, and the edge cases of the bug reports."""


def _switch_norm_references() -> Iterator[Case]:
    case = CaseMaker(
        "switch_norm", "reference", complete=with_default_normalizers, gradcheck=offset_gradcheck_options, shipped=_SHIPPED_SWITCH_NORM
    )
    # Every rank, convention and mode with the default normalizer set.
    for convention in ("paper", "official"):
        for mode, training in MODES:
            for rank, shape in REFERENCE_SHAPES.items():
                yield case(f"{convention}-{mode}-rank{len(shape)}", shape=shape, convention=convention, training=training)
    # Every normalizer subset (and logit orders other than the official one).
    for convention in ("paper", "official"):
        for mode, training in MODES:
            for label, (normalizers, groups) in _SUBSETS.items():
                yield case(
                    f"{convention}-{mode}-set-{label}", shape=(3, 4, 3, 2), normalizers=normalizers, groups=groups,
                    convention=convention, training=training,
                )  # fmt: skip
    # GN at its extremes: one group is LN, C groups is IN.
    yield case("paper-train-gn-groups1", shape=(2, 4, 2, 3), normalizers=("gn", "ln"), groups=1, note="GN with one group equals LN")
    yield case("paper-train-gn-groupsC", shape=(2, 4, 2, 3), normalizers=("gn", "in"), groups=4, note="GN with C groups equals IN")
    # Edge cases from bug reports: H*W = 1, N = 1, C = 1, size-1 axes.
    hw1 = "H*W = 1 (N x C x 1 x 1 after global pooling): the official code returns NaN here (SN issue #5)"
    for mode, training in MODES:
        yield case(f"paper-{mode}-HW1", shape=(4, 3, 1, 1), training=training, note=hw1)
        yield case(f"paper-{mode}-L1", shape=(4, 3, 1), training=training, note="(N, C, 1): one position")
        yield case(f"paper-{mode}-2d-C1", shape=(5, 1), training=training, note="(N, 1): LN over a single feature")
        yield case(f"paper-{mode}-2d-N1", shape=(1, 4), training=training, note="(1, C): BN over a single sample")
        for convention in ("paper", "official"):
            yield case(f"{convention}-{mode}-batch1", shape=(1, 4, 3, 3), convention=convention, training=training, note="a batch of one")
            yield case(f"{convention}-{mode}-channels1", shape=(3, 1, 4, 2), convention=convention, training=training, note="one channel")
            yield case(f"{convention}-{mode}-H1", shape=(2, 3, 1, 5), convention=convention, training=training, note="size-1 height")
            yield case(f"{convention}-{mode}-W1", shape=(2, 3, 5, 1), convention=convention, training=training, note="size-1 width")
            yield case(f"{convention}-{mode}-5d-HW1", shape=(2, 3, 4, 1, 1), convention=convention, training=training, note="3-d input, D > 1, H = W = 1")
    yield case("paper-train-all1", shape=(1, 1, 1, 1), note="every axis of size 1: every variance is 0, y = beta")
    yield case("paper-eval-all1", shape=(1, 1, 1, 1), training=False, note="every axis of size 1, running statistics")
    # Large offsets, small scales, large logits, ties, eps.
    for convention in ("paper", "official"):
        for mode, training in MODES:
            yield case(f"{convention}-{mode}-offset1e4", shape=(3, 4, 3, 3), convention=convention, training=training, offset=1e4,
                       note="mean 1e4, std 1: E[x^2] - mean^2 would lose 8 of float64's 16 digits and all of float32's", conditioning=LARGE_OFFSET)  # fmt: skip
        yield case(f"{convention}-train-2d-offset1e4", shape=(6, 5), convention=convention, offset=1e4, conditioning=LARGE_OFFSET)
    yield case("paper-train-scale1e-3", shape=(3, 4, 3, 3), scale=1e-3, note="variance 1e-6 below eps = 1e-5: eps dominates")
    yield case("official-eval-scale1e3", shape=(3, 4, 3, 3), scale=1e3, convention="official", training=False, note="variance 1e6",
               conditioning="std 1e3: the statistics are ~1e2 to 1e6, and a float32 default atol of 1e-5 is below their rounding")  # fmt: skip
    for convention in ("paper", "official"):
        yield case(f"{convention}-train-logits30", shape=(3, 4, 3, 2), convention=convention, logit_std=30.0,
                   note="logits of size ~30: ratios within 1e-13 of a vertex")  # fmt: skip
        yield case(f"{convention}-train-equal-logits", shape=(3, 4, 3, 2), convention=convention, logits="equal",
                   note="all logits 1 (the official initialisation): uniform ratios, a tie")  # fmt: skip
    yield case("paper-eval-logits30", shape=(3, 4, 3, 2), training=False, logit_std=30.0)
    yield case("paper-train-eps1e-3", shape=(3, 4, 3, 2), eps=1e-3)
    yield case("official-eval-eps0.1", shape=(3, 4, 3, 2), eps=0.1, convention="official", training=False)
    # Running statistics updated in training (the new state is part of the golden values).
    yield case("paper-train-ema0.9", shape=(3, 4, 3, 2), running=True, momentum=0.9, note="EMA update, PyTorch momentum 0.1")
    yield case("official-train-ema0.997", shape=(3, 4, 2, 2, 2), running=True, momentum=0.997, convention="official",
               note="official SwitchNorm3d momentum")  # fmt: skip
    yield case("official-train-4d-ema0.9", shape=(3, 4, 3, 2), running=True, momentum=0.9, convention="official",
               note="official SwitchNorm2d: 4-D input, momentum 0.9, the running statistics updated in training")  # fmt: skip
    yield case("official-train-2d-ema0.997", shape=(6, 5), running=True, momentum=0.997, convention="official",
               note="official SwitchNorm1d: unbiased LN over C, BN over N")  # fmt: skip
    yield case("paper-train-ema0", shape=(3, 4, 3, 2), running=True, momentum=0.0, note="momentum 0: running = batch statistics")


def _switch_norm_errors() -> Iterator[Case]:
    case = CaseMaker("switch_norm", "error", base=dict(shape=(2, 4, 3, 3), normalizers=("in", "ln", "bn")))

    yield case("x-rank1", ValueError, r"x has shape \(4,\), expected \(N, C, \*spatial\) with rank >= 2",
               edit=replace_input("x", lambda x: x[0, :, 0, 0]), shape=(2, 4, 3, 3))  # fmt: skip
    yield case("x-empty-axis", ValueError, r"x has shape \(2, 0, 3, 3\), expected every axis to have size >= 1",
               edit=replace_input("x", lambda x: x[:, :0]))  # fmt: skip
    yield case("x-integer", TypeError, r"x has dtype (\w+\.)?int64, expected a real floating dtype", edit=replace_input("x", lambda x: np.round(x).astype(np.int64)))
    yield case("gamma-float32", TypeError, r"gamma has dtype (\w+\.)?float32, expected (\w+\.)?float64 \(the dtype of x\)",
               edit=replace_input("gamma", lambda g: g.astype(np.float32)), note="refnorm never promotes silently")  # fmt: skip
    yield case("gamma-shape", ValueError, r"gamma has shape \(5,\), expected \(C,\) = \(4,\)", edit=replace_input("gamma", lambda g: np.append(g, 1.0)))
    yield case("beta-shape", ValueError, r"beta has shape \(1, 4\), expected \(C,\) = \(4,\)", edit=replace_input("beta", lambda b: b[None, :]))
    yield case("mean-logits-length", ValueError, r"mean_logits has shape \(2,\), expected one logit per normalizer",
               edit=replace_input("mean_logits", lambda w: w[:2]))  # fmt: skip
    yield case("var-logits-length", ValueError, r"var_logits has shape \(4,\), expected one logit per normalizer",
               edit=replace_input("var_logits", lambda w: np.append(w, 0.0)))  # fmt: skip
    yield case("x-nan", ValueError, r"x contains NaN or infinity", edit=replace_input("x", with_element(np.nan)))
    yield case("gamma-inf", ValueError, r"gamma contains NaN or infinity", edit=replace_input("gamma", with_element(np.inf)))
    yield case("unknown-normalizer", ValueError, r"unknown normalizer 'xn'", normalizers=("in", "xn"))
    yield case("repeated-normalizer", ValueError, r"repeats a name", normalizers=("in", "in"))
    yield case("empty-normalizers", ValueError, r"normalizers is empty", normalizers=())
    yield case("normalizers-string", TypeError, r"normalizers must be a sequence of names", normalizers="in")
    yield case("gn-without-groups", ValueError, r"'gn' but groups is None", normalizers=("gn", "bn"))
    yield case("groups-not-dividing", ValueError, r"groups = 3 does not divide the channel count C = 4", normalizers=("gn",), groups=3)
    yield case("groups-without-gn", ValueError, r"groups = 2 was given but 'gn' is not in normalizers", groups=2)
    yield case("unknown-convention", ValueError, r"unknown convention 'pytorch'", convention="pytorch")
    yield case("eps-zero", ValueError, r"eps must be a finite number > 0, got 0", eps=0)
    yield case("eps-string", TypeError, r"eps must be a Python number, got str", eps="1e-5")
    yield case("momentum-above-1", ValueError, r"momentum must lie in \[0, 1\], got 1.5", momentum=1.5)
    yield case("training-string", TypeError, r"training must be a bool, got str", training="yes")
    yield case("official-HW1", ValueError, r"divides the instance variance by M - 1 = 0", shape=(4, 3, 1, 1), convention="official",
               note="the official code returns NaN here (SN issue #5); refnorm says why")  # fmt: skip
    yield case("official-2d-C1", ValueError, r"LN variance of \(N, C\) input unbiased over its scope, which divides by zero for C = 1",
               shape=(5, 1), normalizers=("ln", "bn"), convention="official")  # fmt: skip
    yield case("official-2d-N1", ValueError, r"BN variance of \(N, C\) input unbiased over its scope, which divides by zero for N = 1",
               shape=(1, 4), normalizers=("ln", "bn"), convention="official")  # fmt: skip
    yield case("eval-without-running", ValueError, r"evaluation mode with 'bn' in normalizers needs running statistics",
               training=False, edit=drop_inputs("running_mean", "running_var"))  # fmt: skip
    yield case("running-mean-shape", ValueError, r"running.mean has shape \(3,\), expected \(C,\) = \(4,\)",
               training=False, edit=replace_input("running_mean", lambda m: m[:3]))  # fmt: skip
    # The error contract of refnorm 0.2: numbers at the edges, teaching messages.
    yield case("eps-below-dtype-bound", ValueError, r"eps = 1e-310 is too small for (\w+\.)?float(64|32): expected eps >= ", eps=1e-310,
               note="below finfo.max ** (-2/3), constant input would give dx NaN: (var + eps)^(-1/2) squared overflows")  # fmt: skip
    yield case("x-pooled-variance-overflow", ValueError, r"x (has values so far apart that the BN variance overflows|contains NaN or infinity)",
               edit=replace_input("x", lambda x: np.concatenate([x[:1] + 3e154, x[1:]])),
               note="x[0] += 3e154: the BN variance overflows, and y[1] would be 0 instead of about -0.58 (float32: x itself overflows)")  # fmt: skip
    yield case("running-var-negative", ValueError, r"running\.var has a negative entry", training=False,
               edit=replace_input("running_var", lambda v: np.concatenate([v[:1], -v[1:2], v[2:]])))  # fmt: skip
    yield case("running-mean-nan-training", ValueError, r"running\.mean contains NaN or infinity", running=True,
               edit=replace_input("running_mean", with_element(np.nan)), note="a NaN running mean must not flow into the new running state")  # fmt: skip
    yield case("gamma-channels-last", ValueError, r"gamma has shape \(4,\), expected \(C,\) = \(3,\); x has shape \(2, 3, 3, 4\) and refnorm expects channels first",
               edit=replace_input("x", lambda x: np.moveaxis(x, 1, -1)), note="an NHWC input: the message says how to move the channels")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Plain normalizers (IN, LN, BN, GN): SN with a single normalizer and a fixed ratio of 1
# --------------------------------------------------------------------------------------------


def _plain_norm_forward(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Forward:
    config = dict(normalization_config(inputs, params), normalizer=params["normalizer"])
    y, cache, running = plain_norm_forward(*PLAIN_NORM.arguments_of(inputs), **config)
    return Forward(plain_norm_linearization(y, cache), {**cache.arrays(), **new_running_arrays(running)})


PLAIN_NORM = OpInfo(
    name="plain_norm",
    arguments=PLAIN_NORM_ARGUMENTS,
    make_inputs=lambda rng, params: normalization_inputs(rng, params, logits=None),
    forward=_plain_norm_forward,
    description="One normalizer alone: instance, layer, batch or group normalization",
    hvp=True,
)


def _plain_norm_samples() -> Iterator[Case]:
    case = CaseMaker("plain_norm", "sample")
    for normalizer, groups in (("in", None), ("ln", None), ("bn", None), ("gn", 2)):
        yield case(f"paper-train-{normalizer}", shape=(2, 4, 3, 3), normalizer=normalizer, groups=groups)
    yield case("official-train-bn", shape=(2, 4, 3, 3), normalizer="bn", convention="official")
    yield case("paper-eval-bn", shape=(2, 4, 3, 3), normalizer="bn", training=False)
    yield case("paper-train-2d-ln", shape=(3, 4), normalizer="ln")


_SHIPPED_PLAIN_NORM = frozenset({
    "gn-official-train-4d", "bn-paper-eval-5d", "bn-paper-train-N1", "ln-paper-train-C1", "in-paper-train-HW1",
    "bn-paper-train-running", "bn-official-train-offset1e4",
})  # fmt: skip
"""The plain_norm reference cases in the shipped golden set."""


def _plain_norm_references() -> Iterator[Case]:
    case = CaseMaker("plain_norm", "reference", gradcheck=offset_gradcheck_options, shipped=_SHIPPED_PLAIN_NORM)

    for normalizer, groups in (("in", None), ("ln", None), ("bn", None), ("gn", 2)):
        for convention in ("paper", "official"):
            for mode, training in MODES:
                for rank, shape in REFERENCE_SHAPES.items():
                    if rank == "2d" and normalizer in ("in", "gn"):
                        continue  # IN of (N, C) input is x itself; GN of it is not in the official code
                    shape = (3, 4, *shape[2:]) if normalizer == "gn" else shape
                    yield case(f"{normalizer}-{convention}-{mode}-{rank}", shape=shape, normalizer=normalizer, groups=groups,
                               convention=convention, training=training)  # fmt: skip
    yield case("bn-paper-train-N1", shape=(1, 3, 2, 2), normalizer="bn", note="BN of a batch of one is IN")
    yield case("ln-paper-train-C1", shape=(3, 1, 2, 2), normalizer="ln", note="LN of one channel is IN")
    yield case("in-paper-train-HW1", shape=(3, 4, 1, 1), normalizer="in", note="IN of a single position: variance 0, y = beta")
    yield case("bn-paper-train-running", shape=(4, 3, 2, 2), normalizer="bn", running=True, momentum=0.9)
    yield case("bn-official-train-offset1e4", shape=(4, 3, 3, 3), normalizer="bn", convention="official", offset=1e4, conditioning=LARGE_OFFSET)
    yield case("ln-paper-eval-offset1e4", shape=(4, 3, 3, 3), normalizer="ln", training=False, offset=1e4, conditioning=LARGE_OFFSET)


def _plain_norm_errors() -> Iterator[Case]:
    case = CaseMaker("plain_norm", "error", base=dict(shape=(2, 4, 3, 3), normalizer="bn"))

    yield case("unknown-normalizer", ValueError, r"unknown normalizer 'bm'", normalizer="bm")
    yield case("normalizer-tuple", TypeError, r"normalizer must be one name such as 'bn', got \('in', 'ln'\); for a mixture use switch_norm",
               normalizer=("in", "ln"))  # fmt: skip
    yield case("gn-without-groups", ValueError, r"'gn' but groups is None", normalizer="gn")
    yield case("gamma-shape", ValueError, r"gamma has shape \(3,\), expected \(C,\) = \(4,\)", edit=replace_input("gamma", lambda g: g[:3]))
    yield case("x-integer", TypeError, r"x has dtype (\w+\.)?int32, expected a real floating dtype", edit=replace_input("x", lambda x: x.astype(np.int32)))
    yield case("official-HW1", ValueError, r"M - 1 = 0", shape=(2, 4, 1, 1), normalizer="in", convention="official")
    yield case("eval-without-running", ValueError, r"needs running statistics", training=False, edit=drop_inputs("running_mean", "running_var"))
    yield case("eps-below-dtype-bound", ValueError, r"eps = 1e-300 is too small for (\w+\.)?float(64|32)", eps=1e-300)
    yield case("running-var-nan", ValueError, r"running\.var contains NaN or infinity", training=False, edit=replace_input("running_var", with_element(np.nan)))




CASE_SOURCES = (
    _switch_norm_samples,
    _switch_norm_references,
    _switch_norm_errors,
    _plain_norm_samples,
    _plain_norm_references,
    _plain_norm_errors,
)
"""This family's case sources, in catalog order."""
