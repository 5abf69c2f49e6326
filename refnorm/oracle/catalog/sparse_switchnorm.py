"""The catalog of Sparse Switchable Normalization: the op and its named cases."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import math

import numpy as np

from ...ops.sparse_switchnorm import FixedSides, radius_schedule, sparse_switch_norm_forward
from ...ops.sparsestmax import SparsestMaxStages, max_radius
from ...ops.switchnorm import SWITCH_NORM_ARGUMENTS, linearization
from .base import (
    CENTRE_KINK, LARGE_OFFSET, MARGIN, MODES, ONE_HOT_KINK, ONE_HOT_LOGITS, REFERENCE_SHAPES, Case, CaseMaker, Forward, OpInfo,
    drop_inputs, explicit_values, logit_row, new_running_arrays, normalization_config, normalization_inputs,
    offset_gradcheck_options, replace_input, with_default_normalizers, with_defaults, with_element,
)  # fmt: skip
from .seeds import case_seed

# --------------------------------------------------------------------------------------------
# Sparse Switchable Normalization
# --------------------------------------------------------------------------------------------


def _sparse_switch_norm_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """SN's inputs, with logits scaled by ``logit_scale`` (small: ratios inside the simplex).

    ``margin``: each logit vector is then redrawn (``logit_scale * N(0, 1)``, the stream going on)
    until its SparsestMax stages survive moves of ``margin`` (:func:`~refnorm.oracle.catalog.base.stages_survive`),
    with ``sphere_steps = (mean, var)`` sphere steps if given. ``mean_logits`` / ``var_logits``: explicit values.
    """
    inputs = normalization_inputs(rng, params, logits=len(params["normalizers"]))
    scale = params.get("logit_scale", 1.0)
    for name in ("mean_logits", "var_logits"):
        inputs[name] = scale * inputs[name]
    if params.get("margin"):
        steps = params.get("sphere_steps", (None, None))
        for name, wanted in zip(("mean_logits", "var_logits"), steps, strict=True):
            inputs[name] = logit_row(rng, inputs[name].shape[0], radius=params["radius"], variant=params.get("variant", "paper"),
                                     scale=scale, steps=wanted, margin=params["margin"])  # fmt: skip
    for name in ("mean_logits", "var_logits"):
        if name in params:
            inputs[name] = explicit_values(params[name], inputs[name].shape)
    return inputs


def _sparse_switch_norm_forward(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Forward:
    """SSN once at ``inputs``: SN's configuration with SSN's momentum default (``None``: the convention's
    SSN preset, 0.997 official), radius, variant and fixed sides. The intermediates add each free
    side's SparsestMax stages and the new fixed sides (``new_fixed_mean``, ``new_fixed_var``; -1: free)."""
    config = dict(
        normalization_config(inputs, params),
        normalizers=params["normalizers"],
        momentum=params.get("momentum"),
        radius=params["radius"],
        variant=params.get("variant", "paper"),
        fixed=FixedSides(*params.get("fixed", (None, None))),
    )
    y, cache, running, fixed = sparse_switch_norm_forward(*SPARSE_SWITCH_NORM.arguments_of(inputs), **config)
    linearized = linearization(y, cache)
    named = cache.arrays()
    for side, aux in (("mean", cache.mixture.mean_aux), ("var", cache.mixture.var_aux)):
        if isinstance(aux, SparsestMaxStages):
            named.update({f"{side}_ratio_{key}": value for key, value in aux.arrays().items()})
        index = getattr(fixed, side)  # an int or None, or a 0-d integer array on lazy or traced input (-1: free)
        named[f"new_fixed_{side}"] = np.asarray(-1 if index is None else index) if index is None or isinstance(index, int) else index
    return Forward(linearized, {**named, **new_running_arrays(running)})


SPARSE_SWITCH_NORM = OpInfo(
    name="sparse_switch_norm",
    arguments=SWITCH_NORM_ARGUMENTS,
    make_inputs=_sparse_switch_norm_inputs,
    forward=_sparse_switch_norm_forward,
    description="Sparse Switchable Normalization: SN with SparsestMax ratios and fixed sides",
    hvp=True,
)


def _sparse_switch_norm_samples() -> Iterator[Case]:
    case = CaseMaker("sparse_switch_norm", "sample")
    base = dict(shape=(2, 4, 3, 3), normalizers=("in", "ln", "bn"), radius=0.3, logit_scale=0.3)
    for variant, convention in (("paper", "paper"), ("official", "official")):
        for mode, training in MODES:
            yield case(f"{variant}-{mode}-4d", **base, variant=variant, convention=convention, training=training)
    # The same input under both variants: the variance logits' sparsemax is on an edge, inside the
    # official ball about the edge midpoint but outside the paper's ball about the centre.
    edge = {**base, "radius": 0.45, "logit_scale": 0.5}
    yield case("paper-train-4d-edge", **edge, variant="paper", convention="official")
    yield case("official-train-4d-edge", **edge, variant="official", convention="official", seed=case_seed("sparse_switch_norm/paper-train-4d-edge"))
    yield case("paper-train-mean-fixed", **base, fixed=(1, None))
    yield case("official-eval-both-fixed", **base, fixed=(0, 2), training=False, variant="official", convention="official")
    yield case("paper-train-2d", shape=(6, 4), normalizers=("ln", "bn"), radius=0.1, logit_scale=0.5)
    yield case("paper-train-gn", shape=(2, 4, 2, 2), normalizers=("in", "ln", "bn", "gn"), groups=2, radius=0.4, logit_scale=0.3)


def _with_reference_defaults(params: Mapping[str, Any]) -> dict[str, Any]:
    """A reference case's params with the default normalizers, radius 0.3, logit scale 0.5 and, for
    drawn logits, a margin (:data:`~refnorm.oracle.catalog.base.MARGIN` times the logit scale) that
    keeps them away from SparsestMax's kinks."""
    params = with_defaults(with_default_normalizers(params), radius=0.3, logit_scale=0.5)
    if "mean_logits" in params or params.get("logits") == "equal":
        return params  # explicit logits, placed where they are on purpose
    # The large-offset cases start the finite differences with a 10 times larger step
    # (offset_gradcheck_options): their logits keep a margin 4 times larger.
    widen = 4.0 if offset_gradcheck_options(params) else 1.0
    return with_defaults(params, margin=widen * MARGIN * params["logit_scale"])


def _sparse_switch_norm_references() -> Iterator[Case]:
    case = CaseMaker("sparse_switch_norm", "reference", complete=_with_reference_defaults, gradcheck=offset_gradcheck_options)
    # Every rank, mode and convention, with the variant of the same name (SSN2d is official + official).
    for convention in ("paper", "official"):
        for mode, training in MODES:
            for rank, shape in REFERENCE_SHAPES.items():
                yield case(f"{convention}-{mode}-rank{len(shape)}", shape=shape, convention=convention, variant=convention, training=training,
                           ship=rank == "4d" and convention == "official" and training)  # fmt: skip
    yield case("paper-variant-official-convention-train-4d", shape=(3, 4, 3, 2), variant="paper", convention="official")
    yield case("official-variant-paper-convention-eval-4d", shape=(3, 4, 3, 2), variant="official", convention="paper", training=False)
    # The official radius schedule r = step / total_steps (train_imagenet.py), K = 3: from sparsemax
    # (r = 0) through one and two sphere steps to one-hot (r >= sqrt(2/3)), where both sides become fixed.
    for step in (0, 2, 6, 10, 14, 16, 17, 20):
        radius = radius_schedule(step, 20)
        beyond = radius >= max_radius(3)
        yield case(f"official-schedule-{step}of20", shape=(3, 4, 3, 2), convention="official", variant="official", radius=radius,
                   note=f"official radius schedule r = step / total_steps = {step}/20" + ("; beyond sqrt(2/3): one-hot ratios, both sides become fixed" if beyond else ""),
                   ship=step == 17)  # fmt: skip
    for convention, variant in (("paper", "paper"), ("official", "official")):
        for mode, training in MODES:
            yield case(f"{convention}-{mode}-steps1-2", shape=(3, 4, 3, 2), convention=convention, variant=variant, training=training,
                       radius=0.5, logit_scale=0.3, sphere_steps=(1, 2), note="mean ratios after one sphere step, variance ratios after two")  # fmt: skip
    # Fixed sides (the state the official SSN reaches): their logits are ignored and get no gradient.
    for convention, variant in (("paper", "paper"), ("official", "official")):
        for mode, training in MODES:
            yield case(f"{convention}-{mode}-fixed-mean", shape=(3, 4, 3, 2), convention=convention, variant=variant, training=training, fixed=(1, None))
            yield case(f"{convention}-{mode}-fixed-var", shape=(3, 4, 3, 2), convention=convention, variant=variant, training=training, fixed=(None, 2))
            yield case(f"{convention}-{mode}-fixed-both", shape=(3, 4, 3, 2), convention=convention, variant=variant, training=training, fixed=(0, 2))
    yield case("paper-train-2d-fixed-var", shape=(6, 3), fixed=(None, 1), note="(N, C) input: K = 2 (ln, bn), the variance fixed to BN")
    yield case("official-train-fixed-mean-r0.9", shape=(3, 4, 3, 2), convention="official", variant="official", fixed=(2, None), radius=0.9,
               note="one side fixed, the other reaches a vertex at this radius and becomes fixed too")  # fmt: skip
    one_hot = (0.0, 1.0, 0.0)
    yield case("official-train-one-hot-logits", shape=(3, 4, 3, 2), convention="official", variant="official", mean_logits=one_hot, var_logits=one_hot,
               radius=0.5, note=ONE_HOT_LOGITS + "; both sides become fixed to LN", kink=ONE_HOT_KINK, ship=True)  # fmt: skip
    yield case("official-train-one-hot-logits-fixed", shape=(3, 4, 3, 2), convention="official", variant="official", mean_logits=one_hot,
               var_logits=one_hot, radius=0.5, fixed=(1, 1), note="the state after fixing: one-hot logits, both sides fixed to LN (no ratio gradient)")  # fmt: skip
    # The official initialisation: equal logits. Smooth at r = 0; at r > 0 sparsemax is the centre.
    yield case("official-train-equal-logits-r0", shape=(3, 4, 3, 2), convention="official", variant="official", logits="equal", radius=0.0,
               note="logits ones(3), the official initialisation, at the first step of the schedule (r = 0): uniform ratios")  # fmt: skip
    yield case("official-train-equal-logits-r0.1", shape=(3, 4, 3, 2), convention="official", variant="official", logits="equal", radius=0.1,
               note="logits ones(3) at r > 0: sparsemax is the centre, distance zero; the released official code does not return NaN here: "
                    "its centre is float32(1/3), ~1e-8 from sparsemax's 1/3, so it steps to float32(1/3) - r/sqrt(3) = 0.2756 in every "
                    "ratio (sum 1 - sqrt(3) r, off the simplex), in float32 and float64", kink=CENTRE_KINK, ship=True)  # fmt: skip
    yield case("paper-train-logits30", shape=(3, 4, 3, 2), logit_scale=30.0, note="logits of size ~30: sparsemax already a vertex, both sides become fixed")
    # Normalizer sets (K = 2, 4) and GN.
    yield case("paper-train-set-in-ln", shape=(3, 4, 3, 2), normalizers=("in", "ln"), radius=0.5, note="K = 2: a sphere step inside the edge has Jacobian 0")
    yield case("official-eval-set-in-ln-bn-gn", shape=(3, 4, 3, 2), normalizers=("in", "ln", "bn", "gn"), groups=2, convention="official",
               variant="official", training=False, radius=0.6, logit_scale=0.2)  # fmt: skip
    yield case("paper-train-set-gn-bn-ln-in", shape=(2, 4, 2, 3), normalizers=("gn", "bn", "ln", "in"), groups=4, radius=0.7, logit_scale=0.1,
               sphere_steps=(3, 2), note="K = 4 in another logit order, three and two sphere steps")  # fmt: skip
    # Edge cases from bug reports.
    hw1 = "H*W = 1 (N x C x 1 x 1): the official SSN returns NaN here (its IN variance is unbiased); paper convention"
    for mode, training in MODES:
        yield case(f"paper-{mode}-HW1", shape=(4, 3, 1, 1), training=training, note=hw1, ship=not training)
        yield case(f"paper-{mode}-batch1", shape=(1, 4, 3, 2), training=training, note="a batch of one: BN equals IN in training")
        yield case(f"official-{mode}-channels1", shape=(3, 1, 4, 2), convention="official", variant="official", training=training, note="one channel")
        yield case(f"paper-{mode}-2d-N1", shape=(1, 4), training=training, note="(1, C): BN over a single sample")
    yield case("paper-train-2d-C1", shape=(5, 1), note="(N, 1): LN over a single feature")
    yield case("official-train-H1", shape=(2, 3, 1, 5), convention="official", variant="official", note="size-1 height")
    # Logits of scale 1 here: the finite differences of the logits then take steps twice as large,
    # further above the rounding noise of a mean of 1e4 (some directional derivatives are ~1e-5).
    for convention, variant in (("paper", "paper"), ("official", "official")):
        for mode, training in MODES:
            yield case(f"{convention}-{mode}-offset1e4", shape=(3, 4, 3, 3), convention=convention, variant=variant, training=training, offset=1e4,
                       logit_scale=1.0, note="mean 1e4, std 1", conditioning=LARGE_OFFSET, ship=convention == "official" and training)  # fmt: skip
    yield case("official-train-offset1e4-interior", shape=(3, 4, 3, 3), convention="official", variant="official", offset=1e4,
               logit_scale=0.2, radius=0.1, conditioning=LARGE_OFFSET,
               note="mean 1e4, std 1, with both ratio vectors inside the simplex (every normalizer weighted): the float32 "
                    "cancellation of every scope's statistics reaches y, where official-train-offset1e4's vertex ratios use IN alone")  # fmt: skip
    yield case("paper-train-eps1e-3", shape=(3, 4, 3, 2), eps=1e-3)
    yield case("official-train-ema0.997", shape=(3, 4, 2, 2, 2), running=True, momentum=0.997, convention="official", variant="official",
               note="official SSN momentum: the running statistics are updated in training")  # fmt: skip
    yield case("official-train-4d-ema-default", shape=(3, 4, 3, 2), running=True, convention="official", variant="official",
               note="official SSN2d, 4-D input, no momentum given: the official SSN preset's 0.997 (not SN's 0.9)")  # fmt: skip
    yield case("paper-train-ema-default", shape=(3, 4, 3, 2), running=True, note="no momentum given: the paper preset's 0.9")


def _sparse_switch_norm_errors() -> Iterator[Case]:
    case = CaseMaker("sparse_switch_norm", "error", base=dict(shape=(2, 4, 3, 3), normalizers=("in", "ln", "bn"), radius=0.3, logit_scale=0.5))
    yield case("radius-negative", ValueError, r"radius must be a finite number >= 0, got -0\.5", radius=-0.5)
    yield case("radius-nan", ValueError, r"radius must be a finite number >= 0, got nan", radius=math.nan)
    yield case("radius-inf", ValueError, r"radius must be a finite number >= 0, got inf", radius=math.inf)
    yield case("radius-string", TypeError, r"radius must be a Python number, got str", radius="0.3")
    yield case("unknown-variant", ValueError, r"unknown variant 'sparse'; expected one of 'paper', 'official'", variant="sparse")
    yield case("fixed-mean-3", ValueError, r"fixed\.mean = 3, expected None or a normalizer index in \[0, 3\)", fixed=(3, None))
    yield case("fixed-var-negative", ValueError, r"fixed\.var = -1, expected None or a normalizer index in \[0, 3\)", fixed=(None, -1))
    yield case("fixed-bool", ValueError, r"fixed\.mean = True, expected None or a normalizer index", fixed=(True, None),
               note="True is not the index 1")  # fmt: skip
    yield case("single-normalizer", ValueError, r"logits has shape \(1,\), expected \(\.\.\., K\) with K >= 2", normalizers=("bn",),
               note="SparsestMax needs at least two normalizers to choose from")  # fmt: skip
    yield case("mean-logits-rank2", ValueError, r"mean_logits has shape \(1, 3\), expected \(K,\), one logit per normalizer",
               edit=replace_input("mean_logits", lambda w: w[None, :]))  # fmt: skip
    yield case("var-logits-length", ValueError, r"var_logits has shape \(4,\), expected one logit per normalizer",
               edit=replace_input("var_logits", lambda w: np.append(w, 0.0)))  # fmt: skip
    yield case("mean-logits-integer", TypeError, r"mean_logits has dtype (\w+\.)?int64, expected a real floating dtype",
               edit=replace_input("mean_logits", lambda w: np.round(w).astype(np.int64)))  # fmt: skip
    yield case("var-logits-nan", ValueError, r"var_logits contains NaN or infinity", edit=replace_input("var_logits", with_element(np.nan, (1,))))
    yield case("x-integer", TypeError, r"x has dtype (\w+\.)?int64, expected a real floating dtype", edit=replace_input("x", lambda x: np.round(x).astype(np.int64)))
    yield case("gamma-shape", ValueError, r"gamma has shape \(5,\), expected \(C,\) = \(4,\)", edit=replace_input("gamma", lambda g: np.append(g, 1.0)))
    yield case("official-HW1", ValueError, r"divides the instance variance by M - 1 = 0", shape=(4, 3, 1, 1), convention="official",
               note="the official SSN returns NaN here (SN issue #5); refnorm says why")  # fmt: skip
    yield case("eval-without-running", ValueError, r"evaluation mode with 'bn' in normalizers needs running statistics",
               training=False, edit=drop_inputs("running_mean", "running_var"))  # fmt: skip
    yield case("momentum-above-1", ValueError, r"momentum must lie in \[0, 1\], got 1\.5", momentum=1.5)
    yield case("single-normalizer-var-side", ValueError, r"var_logits has shape \(1,\), expected \(\.\.\., K\) with K >= 2: the var ratios",
               normalizers=("bn",), fixed=(0, None), note="the mean side is fixed, so it is the variance logits that need K >= 2")  # fmt: skip
    yield case("eps-below-dtype-bound", ValueError, r"eps = 1e-310 is too small for (\w+\.)?float(64|32)", eps=1e-310)




CASE_SOURCES = (_sparse_switch_norm_samples, _sparse_switch_norm_references, _sparse_switch_norm_errors)
"""This family's case sources, in catalog order."""
