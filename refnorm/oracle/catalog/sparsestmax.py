"""The catalog of Sparsemax and SparsestMax: the ops and their named cases."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import math

import numpy as np

from ...ops.linearized import Linearized
from ...ops.sparsestmax import max_radius, sparsemax, sparsemax_linearize, sparsestmax_forward, sparsestmax_linearize
from .base import Case, OpInfo, _explicit, _replace, _with_element

# --------------------------------------------------------------------------------------------
# Sparsemax and SparsestMax
# --------------------------------------------------------------------------------------------


def _sparsemax_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Logits ``scale * N(0, 1)`` (plus ``offset`` if given), or the explicit values ``logits``."""
    shape = tuple(params["shape"])
    if "logits" in params:
        return {"logits": _explicit(params["logits"], shape)}
    logits = params.get("scale", 1.0) * rng.standard_normal(shape)
    return {"logits": logits + params["offset"] if "offset" in params else logits}


def _sparsemax_linearize(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Linearized:
    return sparsemax_linearize(inputs["logits"])


def _sparsemax_intermediates(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"ratios": sparsemax(inputs["logits"])}


SPARSEMAX = OpInfo(
    name="sparsemax",
    arguments=("logits",),
    make_inputs=_sparsemax_inputs,
    linearize=_sparsemax_linearize,
    intermediates=_sparsemax_intermediates,
    description="Euclidean projection onto the simplex (last axis)",
)


def _host_arrays(value: Any) -> list[np.ndarray]:
    """The arrays of a nested tuple (an active set), as host arrays."""
    if isinstance(value, tuple | list):
        return [a for item in value for a in _host_arrays(item)]
    return [np.asarray(value)]


def _stages_survive(row: np.ndarray, radius: float, variant: str, margin: float) -> bool:
    """Whether moving the logits ``row`` (shape ``(1, K)``) by ``margin`` along every axis, both
    ways, and along every sign pattern keeps every SparsestMax stage the same (supports, sphere
    steps, edge sides, vertex, distance-zero flag): then the point is at least ~``margin`` away from
    any kink, and neither a finite-difference stencil nor float32 rounding crosses one."""
    K = row.shape[-1]
    signs = np.array(np.meshgrid(*[(-1.0, 1.0)] * K, indexing="ij")).reshape(K, -1).T
    moves = np.concatenate([np.eye(K), -np.eye(K), signs]) * margin
    points = np.concatenate([row, row + moves])
    _, stages = sparsestmax_forward(points, radius, variant=variant)
    return all(np.all(a == a[:1]) for a in _host_arrays(stages.active_set()))


def _logit_row(rng: np.random.Generator, K: int, *, radius: float, variant: str, scale: float, steps: int | None, margin: float) -> np.ndarray:
    """One logit vector ``scale * N(0, 1)``, redrawn until it takes ``steps`` sphere steps (if not
    ``None``) and its stages survive moves of ``margin`` (if > 0)."""
    for _attempt in range(10_000):
        row = scale * rng.standard_normal((1, K))
        if steps is not None:
            _, stages = sparsestmax_forward(row, radius, variant=variant)
            if int(stages.sphere_steps()[0]) != steps:
                continue
        if margin > 0 and not _stages_survive(row, radius, variant, margin):
            continue
        return row[0]
    raise RuntimeError(f"no logits with {steps} sphere steps and margin {margin} found at radius {radius} ({variant})")  # a catalog bug


def _sparsestmax_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Logits ``scale * N(0, 1)``, or the explicit values ``logits``.

    With ``sphere_steps`` each row is redrawn until it takes exactly that many sphere steps; with
    ``margin`` also until moving any logit by ``margin`` keeps every stage (:func:`_stages_survive`).
    """
    shape = tuple(params["shape"])
    if "logits" in params:
        return {"logits": _explicit(params["logits"], shape)}
    scale = params.get("scale", 1.0)
    wanted, margin = params.get("sphere_steps"), params.get("margin", 0.0)
    if wanted is None and not margin:
        return {"logits": scale * rng.standard_normal(shape)}
    rows = [
        _logit_row(rng, shape[-1], radius=params["radius"], variant=params["variant"], scale=scale, steps=wanted, margin=margin)
        for _ in range(int(np.prod(shape[:-1])))
    ]
    return {"logits": np.reshape(np.stack(rows), shape)}


def _sparsestmax_linearize(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Linearized:
    return sparsestmax_linearize(inputs["logits"], radius=params["radius"], variant=params["variant"])


def _sparsestmax_intermediates(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    ratios, stages = sparsestmax_forward(inputs["logits"], params["radius"], variant=params["variant"])
    return {"ratios": ratios, **stages.arrays()}


SPARSESTMAX = OpInfo(
    name="sparsestmax",
    arguments=("logits",),
    make_inputs=_sparsestmax_inputs,
    linearize=_sparsestmax_linearize,
    intermediates=_sparsestmax_intermediates,
    description="SparsestMax: projection onto the simplex outside a ball about its centre (paper / official)",
)


def _sparsemax_samples() -> Iterator[Case]:
    yield Case("sparsemax", "K2", "sample", dict(shape=(4, 2)))
    yield Case("sparsemax", "K3", "sample", dict(shape=(5, 3)))
    yield Case("sparsemax", "K6-batch", "sample", dict(shape=(2, 3, 6)))
    yield Case("sparsemax", "K5-sparse", "sample", dict(shape=(4, 5), scale=3.0))


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
    for variant in ("paper", "official"):
        for name, shape, radius, steps in configurations:
            params = dict(shape=shape, radius=radius, variant=variant)
            if steps is not None:
                params["sphere_steps"] = steps
            yield Case("sparsestmax", f"{variant}-{name}", "sample", params)


_VECTOR_AXES = "size-1 and missing batch axes: sparsemax ports squeezed size-1 axes in the backward (deep-spin/entmax#13) or failed on 1-D input (aced125/sparsemax#2)"
_ONE_HOT_LOGITS = (
    "one-hot logits (what the official SSN writes into a side's logits once it is fixed): sparsemax is the vertex, and "
    "every other entry sits exactly on the support threshold (z_j = tau), a kink"
)
_ONE_HOT_KINK = (
    "the entries other than the 1 equal the sparsemax threshold: raising one of them enters it into the support, lowering "
    "it does not, so the one-sided derivatives differ; refnorm counts entries at the threshold as outside the support "
    "(docs/sparsestmax.md), which makes the output a vertex with gradient 0"
)
_CENTRE_KINK = (
    "the sphere step's direction is undefined at distance zero from its centre: any perturbation sends the output to a "
    "point of the sphere, a jump; refnorm returns the sparsemax stage there (SPEC §3) and its Jacobian"
)
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
    seed = iter(range(5000, 5500))

    def case(name: str, note: str = "", kink: str = "", ship: bool = False, gradcheck: Mapping[str, Any] | None = None, **params: Any) -> Case:
        return Case("sparsemax", name, "reference", params, seed=next(seed), note=note, kink=kink, ship=ship, gradcheck=gradcheck or {})

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
    yield case("K3-one-hot-logits", shape=(3, 3), logits=one_hot, note=_ONE_HOT_LOGITS, kink=_ONE_HOT_KINK, ship=True)
    yield case("K3-two-hot-logits", shape=(3, 3), logits=tuple(tuple(2.0 * v for v in row) for row in one_hot),
               note="logits 2 * one-hot: the vertex with a margin of 1 to the support threshold (gradient 0, smooth)")  # fmt: skip


def _sparsemax_errors() -> Iterator[Case]:
    def case(name: str, raises: type[Exception], match: str, edit: Any = None, note: str = "", **params: Any) -> Case:
        return Case("sparsemax", name, "error", {"shape": (2, 3), **params}, raises=raises, match=match, edit=edit, note=note)

    yield case("K1", ValueError, r"logits has shape \(2, 1\), expected \(\.\.\., K\) with K >= 2", shape=(2, 1))
    yield case("scalar", ValueError, r"logits has shape \(\), expected \(\.\.\., K\) with K >= 2", shape=())
    yield case("integer", TypeError, r"logits has dtype (\w+\.)?int64, expected a real floating dtype",
               edit=_replace("logits", lambda z: np.round(z).astype(np.int64)))  # fmt: skip
    yield case("nan", ValueError, r"logits contains NaN or infinity", edit=_replace("logits", _with_element(np.nan)))
    yield case("minus-inf", ValueError, r"logits contains NaN or infinity", edit=_replace("logits", _with_element(-np.inf, (1, 2))),
               note="-inf logits (attention masks) gave NaN in ports (deep-spin/entmax#17); refnorm refuses them")  # fmt: skip


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

_MARGIN = 0.05
"""Rows of the reference cases keep their stages under moves of ``_MARGIN * scale`` (:func:`_stages_survive`)."""


def _sparsestmax_references() -> Iterator[Case]:
    seed = iter(range(5500, 6500))

    def case(name: str, variant: str, note: str = "", kink: str = "", ship: bool = False, gradcheck: Mapping[str, Any] | None = None,
             **params: Any) -> Case:
        return Case("sparsestmax", f"{variant}-{name}", "reference", dict(params, variant=variant), seed=next(seed),
                    note=note, kink=kink, ship=ship, gradcheck=gradcheck or {})  # fmt: skip

    for variant in ("paper", "official"):
        for name, K, radius, scale, steps in _SPARSESTMAX_STAGES:
            yield case(f"{name}-margin", variant, shape=(4, K), radius=radius, scale=scale, sphere_steps=steps, margin=_MARGIN * scale,
                       note=f"{steps} sphere steps in every row, each row at least {_MARGIN * scale:g} from any stage change",
                       ship=name in ("K3-2sph", "K5-4sph"))  # fmt: skip
        yield case("K4-mixed-rank3", variant, shape=(2, 3, 4), radius=0.5, scale=0.3, margin=_MARGIN * 0.3,
                   note="rows with different numbers of sphere steps in one batch, two batch axes")  # fmt: skip
        yield case("K3-vector", variant, shape=(3,), radius=0.6, scale=0.3, sphere_steps=2, margin=_MARGIN * 0.3, note=_VECTOR_AXES)
        yield case("K4-batch1", variant, shape=(1, 1, 4), radius=0.5, scale=0.1, sphere_steps=2, margin=_MARGIN * 0.1, note=_VECTOR_AXES)
        yield case("K3-r0", variant, shape=(6, 3), radius=0.0, margin=_MARGIN, note="radius 0: sparsemax (outputs within rounding of a vertex snap to it)")
        yield case("K3-r-max", variant, shape=(4, 3), radius=max_radius(3),
                   note="radius exactly sqrt((K-1)/K), the largest distance from the centre: the one-hot vertex at the argmax", ship=True)  # fmt: skip
        yield case("K3-r0.95", variant, shape=(4, 3), radius=0.95, note="radius beyond sqrt(2/3): one-hot")
        yield case("K5-r1", variant, shape=(3, 5), radius=1.0, note="radius 1 (the end of the official schedule), beyond sqrt(4/5): one-hot")
        yield case("K4-logits1e4", variant, shape=(4, 4), radius=0.5, scale=1e4, note="logits spread 1e4: sparsemax is already a vertex", ship=variant == "paper")
        # The official sphere is centred on the support's centre, which a tie puts at distance zero: radius 0 there.
        radius = 0.25 if variant == "paper" else 0.0
        yield case("K4-offset8e6-ties", variant, shape=(3, 4), radius=radius, logits=_BIG_OFFSET_TIES, note=_BIG_OFFSET_NOTE, gradcheck=_BIG_OFFSET_STEP)
        yield case("K3-tie-below-top", variant, shape=(1, 3), radius=0.5, logits=((1.2, 1.0, 1.0),),
                   note="tied logits that are not the largest: an ordinary sphere step (the output keeps the tie)")  # fmt: skip
        yield case("K3-centre", variant, shape=(2, 3), radius=0.3, logits=((1.0, 1.0, 1.0), (-0.5, -0.5, -0.5)),
                   note="equal logits (the official initialisation, ones(3)): sparsemax is the centre, distance zero; the official code returns NaN",
                   kink=_CENTRE_KINK, ship=True)  # fmt: skip
        yield case("K2-centre", variant, shape=(1, 2), radius=0.2, logits=((0.3, 0.3),), note="K = 2 tie: the centre", kink=_CENTRE_KINK)
        yield case("K4-face-centre", variant, shape=(1, 4), radius=0.7, logits=((2.0, 2.0, 2.0, -5.0),),
                   note="three-way tie on a face: the face centre after the first stage", kink=_CENTRE_KINK)  # fmt: skip
        yield case("K3-edge-midpoint", variant, shape=(1, 3), radius=0.6, logits=((1.0, 1.0, 0.0),),
                   note="tie on an edge: the second stage is at distance zero from the edge midpoint", kink=_CENTRE_KINK)  # fmt: skip
        one_hot = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
        yield case("K3-one-hot-logits", variant, shape=(3, 3), radius=0.3, logits=one_hot, note=_ONE_HOT_LOGITS, kink=_ONE_HOT_KINK, ship=True)
        yield case("K3-one-hot-logits-r0.9", variant, shape=(3, 3), radius=0.9, logits=one_hot,
                   note="one-hot logits beyond the largest distance: the vertex at the argmax, constant (smooth)")  # fmt: skip
    # Where the variants differ on tied logits: the paper variant measures from the simplex centre
    # (the edge midpoint is 0.41 away: outside the ball), the official one from the support centre,
    # which is the edge midpoint itself (distance zero).
    top_tie = dict(shape=(1, 3), radius=0.3, logits=((2.0, 2.0, 0.0),))
    yield case("K3-tie-top-edge", "paper", **top_tie, note="a top tie on an edge, outside the paper's ball: the output is sparsemax's edge midpoint")
    yield case("K3-tie-top-edge", "official", **top_tie, note="a top tie on an edge: the official ball is centred on the edge midpoint itself",
               kink=_CENTRE_KINK)  # fmt: skip


def _sparsestmax_errors() -> Iterator[Case]:
    def case(name: str, raises: type[Exception], match: str, edit: Any = None, note: str = "", **params: Any) -> Case:
        return Case("sparsestmax", name, "error", {"shape": (2, 3), "radius": 0.5, "variant": "paper", **params},
                    raises=raises, match=match, edit=edit, note=note)  # fmt: skip

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
               edit=_replace("logits", lambda z: np.round(z).astype(np.int64)))  # fmt: skip
    yield case("nan", ValueError, r"logits contains NaN or infinity", edit=_replace("logits", _with_element(np.nan)))
    yield case("inf", ValueError, r"logits contains NaN or infinity", edit=_replace("logits", _with_element(np.inf, (1, 1))))


