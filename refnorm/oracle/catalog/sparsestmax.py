"""The catalog of sparsemax and SparsestMax: the ops and their named cases."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import functools
import math

import numpy as np

from ...ops.linearized import Linearized
from ...ops.sparsestmax import max_radius, sparsemax_linearize, sparsestmax_forward, sparsestmax_hvp, sparsestmax_jvp, sparsestmax_vjp
from .base import (
    CENTRE_KINK, MARGIN, ONE_HOT_KINK, ONE_HOT_LOGITS, Case, CaseMaker, Forward, OpInfo, explicit_values, logit_row, replace_input,
    with_defaults, with_element,
)  # fmt: skip

# --------------------------------------------------------------------------------------------
# Sparsemax and SparsestMax
# --------------------------------------------------------------------------------------------


def _sparsemax_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Logits ``scale * N(0, 1)`` (plus ``offset`` if given), or the explicit values ``logits``."""
    shape = tuple(params["shape"])
    if "logits" in params:
        return {"logits": explicit_values(params["logits"], shape)}
    logits = params.get("scale", 1.0) * rng.standard_normal(shape)
    return {"logits": logits + params["offset"] if "offset" in params else logits}


def _sparsemax_forward(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Forward:
    linearized = sparsemax_linearize(inputs["logits"])
    return Forward(linearized, {"ratios": linearized.out})


SPARSEMAX = OpInfo(
    name="sparsemax",
    arguments=("logits",),
    make_inputs=_sparsemax_inputs,
    forward=_sparsemax_forward,
    description="Euclidean projection onto the simplex (last axis)",
    hvp=True,
)


def _sparsestmax_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Logits ``scale * N(0, 1)``, or the explicit values ``logits``.

    With ``sphere_steps`` each row is redrawn until it takes exactly that many sphere steps; with
    ``margin`` also until moving any logit by ``margin`` keeps every stage (:func:`~refnorm.oracle.catalog.base.stages_survive`).
    """
    shape = tuple(params["shape"])
    if "logits" in params:
        return {"logits": explicit_values(params["logits"], shape)}
    scale = params.get("scale", 1.0)
    wanted, margin = params.get("sphere_steps"), params.get("margin", 0.0)
    if wanted is None and not margin:
        return {"logits": scale * rng.standard_normal(shape)}
    rows = [
        logit_row(rng, shape[-1], radius=params["radius"], variant=params["variant"], scale=scale, steps=wanted, margin=margin)
        for _ in range(int(np.prod(shape[:-1])))
    ]
    return {"logits": np.reshape(np.stack(rows), shape)}


def _sparsestmax_forward(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Forward:
    ratios, stages = sparsestmax_forward(inputs["logits"], params["radius"], variant=params["variant"])
    linearized = Linearized(
        out=ratios,
        pullback=lambda dratios: (sparsestmax_vjp(dratios, stages),),
        pushforward=lambda dlogits: sparsestmax_jvp(dlogits, stages),
        active_set=stages.active_set(),
        hvp=lambda dratios, dlogits: (sparsestmax_hvp(dratios, stages, dlogits),),
    )
    return Forward(linearized, {"ratios": ratios, **stages.arrays()})


SPARSESTMAX = OpInfo(
    name="sparsestmax",
    arguments=("logits",),
    make_inputs=_sparsestmax_inputs,
    forward=_sparsestmax_forward,
    description="SparsestMax: projection onto the simplex outside a ball about its centre (paper / official)",
    hvp=True,
)


def _sparsemax_samples() -> Iterator[Case]:
    case = CaseMaker("sparsemax", "sample")
    yield case("K2", shape=(4, 2))
    yield case("K3", shape=(5, 3))
    yield case("K6-batch", shape=(2, 3, 6))
    yield case("K5-sparse", shape=(4, 5), scale=3.0)


def _sparsestmax_samples() -> Iterator[Case]:
    # (name, shape, radius, sphere steps every row takes); None: K=3 beyond the largest distance.
    configurations = [
        ("K2-0sph", (4, 2), 0.2, 0),
        ("K2-1sph", (3, 2), 0.5, 1),
        ("K3-0sph", (4, 3), 0.3, 0),
        ("K3-1sph", (4, 3), 0.3, 1),
        ("K3-2sph", (3, 3), 0.5, 2),
        ("K4-2sph", (3, 4), 0.6, 2),
        ("K5-3sph-batch", (2, 2, 5), 0.75, 3),
        ("K3-one-hot", (4, 3), 0.9, None),
    ]
    case = CaseMaker("sparsestmax", "sample")
    for variant in ("paper", "official"):
        for name, shape, radius, steps in configurations:
            sphere_steps = {} if steps is None else {"sphere_steps": steps}
            yield case(f"{variant}-{name}", shape=shape, radius=radius, variant=variant, **sphere_steps)


_VECTOR_AXES = "size-1 and missing batch axes: sparsemax ports squeezed size-1 axes in the backward (deep-spin/entmax#13) or failed on 1-D input (aced125/sparsemax#2)"
_BIG_OFFSET = 2.0**23
"""A common logit offset of about 8.4e6 (below)."""
_BIG_OFFSET_TIES = tuple(
    tuple(_BIG_OFFSET + v for v in row) for row in ((0.0, 0.0, 0.0, -8.0), (-8.0, 0.0, 0.0, -8.0), (0.0, -8.0, 0.0, 0.0))
)
_BIG_OFFSET_NOTE = (
    "logits 2^23 + ties (and -8): exactly representable in float32, but the cumulative sum of a three-way tie, 3 * 2^23 - 1, "
    "is not, so a float32 port that does not shift by the maximum gets the threshold wrong by ~1/3 (tfa's sparsemax returned "
    "NaN for float32 logits around 1e8, tensorflow/addons#2314). 2^23, not 1e8: float64 finite differences still resolve "
    "perturbations of the logits here (1.9e-9), so the gradient is checked too"
)
_BIG_OFFSET_STEP = {"step": 3e-2}
"""At |z| = 2^23 a perturbation of the logits is resolved only to 1.9e-9, so the finite differences take the largest
starting step the ties' smooth piece allows (1e-1 leaves it: entries of a three-way tie have a margin of 1/3)."""


def _sparsemax_references() -> Iterator[Case]:
    case = CaseMaker("sparsemax", "reference")
    for K, shape in ((2, (6, 2)), (3, (6, 3)), (4, (5, 4)), (5, (4, 5)), (8, (3, 8))):
        yield case(f"K{K}-rows{shape[0]}", shape=shape, ship=K == 3)
    yield case("K4-dense", shape=(5, 4), scale=0.1, note="logits within ~0.3 of each other: every entry in the support")
    yield case("K5-scale3", shape=(5, 5), scale=3.0, note="logits spread ~3: supports of one or two entries")
    yield case("K3-vector", shape=(3,), note=_VECTOR_AXES, ship=True)
    yield case("K4-batch1", shape=(1, 4), note=_VECTOR_AXES, ship=True)
    yield case("K3-rank3-size1", shape=(3, 1, 3), note=_VECTOR_AXES)
    yield case("K2-rank3-size1-axes", shape=(1, 1, 2), note=_VECTOR_AXES)
    yield case("K4-rank4", shape=(2, 3, 2, 4), note="three leading batch axes")
    yield case("K5-logits1e4", shape=(6, 5), scale=1e4, note="logits spread 1e4: exactly one-hot outputs", ship=True)
    yield case("K4-offset8e6-ties", shape=(3, 4), logits=_BIG_OFFSET_TIES, note=_BIG_OFFSET_NOTE, gradcheck=_BIG_OFFSET_STEP, ship=True)
    ties = ((2.0, 2.0, 0.5, -1.0), (0.5, 3.0, 3.0, 3.0), (1.0, 1.0, 1.0, 1.0), (0.25, -0.5, 0.25, 0.0))
    yield case("K4-ties", shape=(4, 4), logits=ties, note="tied logits inside the support (sort order among ties must not matter)", ship=True)
    one_hot = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    yield case("K3-one-hot-logits", shape=(3, 3), logits=one_hot, note=ONE_HOT_LOGITS, kink=ONE_HOT_KINK, ship=True)
    yield case("K3-two-hot-logits", shape=(3, 3), logits=tuple(tuple(2.0 * v for v in row) for row in one_hot),
               note="logits 2 * one-hot: the vertex with a margin of 1 to the support threshold (gradient 0, smooth)")  # fmt: skip


def _sparsemax_errors() -> Iterator[Case]:
    case = CaseMaker("sparsemax", "error", base={"shape": (2, 3)})
    yield case("K1", ValueError, r"logits has shape \(2, 1\), expected \(\.\.\., K\) with K >= 2", shape=(2, 1))
    yield case("scalar", ValueError, r"logits has shape \(\), expected \(\.\.\., K\) with K >= 2", shape=())
    yield case("integer", TypeError, r"logits has dtype (\w+\.)?int64, expected a real floating dtype",
               edit=replace_input("logits", lambda z: np.round(z).astype(np.int64)))  # fmt: skip
    yield case("nan", ValueError, r"logits contains NaN or infinity", edit=replace_input("logits", with_element(np.nan)))
    yield case("minus-inf", ValueError, r"logits contains NaN or infinity", edit=replace_input("logits", with_element(-np.inf, (1, 2))),
               note="-inf logits (attention masks) gave NaN in ports (deep-spin/entmax#17); refnorm refuses them")  # fmt: skip
    yield case("empty-batch", ValueError, r"logits has shape \(0, 3\), expected no axis of size 0", shape=(0, 3))


_SPARSESTMAX_STAGES = (
    # (name, K, radius, scale of the logits, sphere steps every row takes)
    ("K2-0sph", 2, 0.2, 1.0, 0),
    ("K2-1sph", 2, 0.5, 1.0, 1),
    ("K3-0sph", 3, 0.3, 1.0, 0),
    ("K3-1sph", 3, 0.35, 0.3, 1),
    ("K3-2sph", 3, 0.6, 0.3, 2),
    ("K4-0sph", 4, 0.3, 1.0, 0),
    ("K4-1sph", 4, 0.2, 0.1, 1),
    ("K4-2sph", 4, 0.5, 0.1, 2),
    ("K4-3sph", 4, 0.7, 0.1, 3),
    ("K5-0sph", 5, 0.3, 1.0, 0),
    ("K5-1sph", 5, 0.2, 0.1, 1),
    ("K5-2sph", 5, 0.35, 0.1, 2),
    ("K5-3sph", 5, 0.6, 0.1, 3),
    ("K5-4sph", 5, 0.6, 0.1, 4),
)
"""Reference SparsestMax configurations: every number of sphere stages K allows, K = 2..5."""


def _sparsestmax_reference(variant: str) -> CaseMaker:
    """The sparsestmax reference cases of one variant: named ``<variant>-...``, with ``variant`` after the other params."""
    return CaseMaker("sparsestmax", "reference", prefix=f"{variant}-", complete=functools.partial(with_defaults, variant=variant))


def _sparsestmax_references() -> Iterator[Case]:
    for variant in ("paper", "official"):
        case = _sparsestmax_reference(variant)
        for name, K, radius, scale, steps in _SPARSESTMAX_STAGES:
            yield case(f"{name}-margin", shape=(4, K), radius=radius, scale=scale, sphere_steps=steps, margin=MARGIN * scale,
                       note=f"{steps} sphere steps in every row, each row at least {MARGIN * scale:g} from any stage change",
                       ship=name in ("K3-2sph", "K5-4sph"))  # fmt: skip
        yield case("K4-mixed-rank3", shape=(2, 3, 4), radius=0.5, scale=0.3, margin=MARGIN * 0.3,
                   note="rows with different numbers of sphere steps in one batch, two batch axes")  # fmt: skip
        yield case("K3-vector", shape=(3,), radius=0.6, scale=0.3, sphere_steps=2, margin=MARGIN * 0.3, note=_VECTOR_AXES)
        yield case("K4-batch1", shape=(1, 1, 4), radius=0.5, scale=0.1, sphere_steps=2, margin=MARGIN * 0.1, note=_VECTOR_AXES)
        yield case("K3-r0", shape=(6, 3), radius=0.0, margin=MARGIN, note="radius 0: sparsemax (outputs within rounding of a vertex snap to it)")
        yield case("K3-r-max", shape=(4, 3), radius=max_radius(3),
                   note="radius exactly sqrt((K-1)/K), the largest distance from the centre: the one-hot vertex at the argmax", ship=True)  # fmt: skip
        yield case("K3-r0.95", shape=(4, 3), radius=0.95, note="radius beyond sqrt(2/3): one-hot")
        yield case("K5-r1", shape=(3, 5), radius=1.0, note="radius 1 (the end of the official schedule), beyond sqrt(4/5): one-hot")
        yield case("K4-logits1e4", shape=(4, 4), radius=0.5, scale=1e4, note="logits spread 1e4: sparsemax is already a vertex", ship=variant == "paper")
        # The official sphere is centred on the support's centre, which a tie puts at distance zero: radius 0 there.
        radius = 0.25 if variant == "paper" else 0.0
        yield case("K4-offset8e6-ties", shape=(3, 4), radius=radius, logits=_BIG_OFFSET_TIES, note=_BIG_OFFSET_NOTE, gradcheck=_BIG_OFFSET_STEP)
        yield case("K3-tie-below-top", shape=(1, 3), radius=0.5, logits=((1.2, 1.0, 1.0),),
                   note="tied logits that are not the largest: an ordinary sphere step (the output keeps the tie)")  # fmt: skip
        yield case("K3-centre", shape=(2, 3), radius=0.3, logits=((1.0, 1.0, 1.0), (-0.5, -0.5, -0.5)),
                   note="equal logits (the official initialisation, ones(3)): sparsemax is the centre, distance zero; the released official code, "
                        "whose centre is float32(1/3), returns float32(1/3) - r/sqrt(3) = 0.1601 three times here (sum 1 - sqrt(3) r, off "
                        "the simplex) in float32 and float64, not NaN",
                   kink=CENTRE_KINK, ship=True)  # fmt: skip
        yield case("K2-centre", shape=(1, 2), radius=0.2, logits=((0.3, 0.3),), note="K = 2 tie: the centre", kink=CENTRE_KINK)
        yield case("K4-face-centre", shape=(1, 4), radius=0.7, logits=((2.0, 2.0, 2.0, -5.0),),
                   note="three-way tie on a face: the face centre after the first stage", kink=CENTRE_KINK)  # fmt: skip
        yield case("K3-edge-midpoint", shape=(1, 3), radius=0.6, logits=((1.0, 1.0, 0.0),),
                   note="tie on an edge: the second stage is at distance zero from the edge midpoint", kink=CENTRE_KINK)  # fmt: skip
        one_hot = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
        yield case("K3-one-hot-logits", shape=(3, 3), radius=0.3, logits=one_hot, note=ONE_HOT_LOGITS, kink=ONE_HOT_KINK, ship=True)
        yield case("K3-one-hot-logits-r0.9", shape=(3, 3), radius=0.9, logits=one_hot,
                   note="one-hot logits beyond the largest distance: the vertex at the argmax, constant (smooth)")  # fmt: skip
    # Where the variants differ on tied logits: the paper variant measures from the simplex centre
    # (the edge midpoint is 0.41 away: outside the ball), the official one from the support centre,
    # which is the edge midpoint itself (distance zero).
    top_tie = dict(shape=(1, 3), radius=0.3, logits=((2.0, 2.0, 0.0),))
    paper, official = _sparsestmax_reference("paper"), _sparsestmax_reference("official")
    yield paper("K3-tie-top-edge", **top_tie, note="a top tie on an edge, outside the paper's ball: the output is sparsemax's edge midpoint")
    yield official("K3-tie-top-edge", **top_tie, note="a top tie on an edge: the official ball is centred on the edge midpoint itself", kink=CENTRE_KINK)


def _sparsestmax_errors() -> Iterator[Case]:
    case = CaseMaker("sparsestmax", "error", base={"shape": (2, 3), "radius": 0.5, "variant": "paper"})
    yield case("radius-negative", ValueError, r"radius must be a finite number >= 0, got -0\.1", radius=-0.1)
    yield case("radius-nan", ValueError, r"radius must be a finite number >= 0, got nan", radius=math.nan)
    yield case("radius-inf", ValueError, r"radius must be a finite number >= 0, got inf", radius=math.inf,
               note="an infinite radius is refused, although any radius >= sqrt((K-1)/K) gives the one-hot vertex")  # fmt: skip
    yield case("radius-string", TypeError, r"radius must be a Python number, got str", radius="0.5")
    yield case("radius-bool", TypeError, r"radius must be a Python number, got bool", radius=True)
    yield case("unknown-variant", ValueError, r"unknown variant 'definition'; expected one of 'paper', 'official'", variant="definition")
    yield case("K1", ValueError, r"logits has shape \(2, 1\), expected \(\.\.\., K\) with K >= 2", shape=(2, 1))
    yield case("scalar", ValueError, r"logits has shape \(\), expected \(\.\.\., K\) with K >= 2", shape=())
    yield case("integer", TypeError, r"logits has dtype (\w+\.)?int64, expected a real floating dtype",
               edit=replace_input("logits", lambda z: np.round(z).astype(np.int64)))  # fmt: skip
    yield case("nan", ValueError, r"logits contains NaN or infinity", edit=replace_input("logits", with_element(np.nan)))
    yield case("inf", ValueError, r"logits contains NaN or infinity", edit=replace_input("logits", with_element(np.inf, (1, 1))))
    yield case("empty-batch", ValueError, r"logits has shape \(0, 3\), expected no axis of size 0", shape=(0, 3))




CASE_SOURCES = (
    _sparsemax_samples,
    _sparsemax_references,
    _sparsemax_errors,
    _sparsestmax_samples,
    _sparsestmax_references,
    _sparsestmax_errors,
)
"""This family's case sources, in catalog order."""
