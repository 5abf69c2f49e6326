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

from .gradient_check import Linearized
from .running import RunningStats
from .sparse_switchnorm import FixedSides, sparse_switch_norm_forward, sparse_switch_norm_linearize
from .sparsestmax import SparsestMaxStages, sparsemax, sparsemax_linearize, sparsestmax_forward, sparsestmax_linearize
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
# Sparsemax and SparsestMax
# --------------------------------------------------------------------------------------------


def _sparsemax_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {"logits": params.get("scale", 1.0) * rng.standard_normal(tuple(params["shape"]))}


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


def _sparsestmax_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Logits ``scale * N(0, 1)``; with ``sphere_steps``, each row is redrawn until it takes exactly that many."""
    shape = tuple(params["shape"])
    scale = params.get("scale", 1.0)
    wanted = params.get("sphere_steps")
    if wanted is None:
        return {"logits": scale * rng.standard_normal(shape)}
    rows = []
    for _ in range(int(np.prod(shape[:-1]))):
        for _attempt in range(10_000):
            row = scale * rng.standard_normal((1, shape[-1]))
            _, stages = sparsestmax_forward(row, params["radius"], variant=params["variant"])
            if int(stages.sphere_steps()[0]) == wanted:
                rows.append(row[0])
                break
        else:
            raise RuntimeError(f"no logits with {wanted} sphere steps found for {dict(params)}")  # a catalog bug
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


# --------------------------------------------------------------------------------------------
# Sparse Switchable Normalization
# --------------------------------------------------------------------------------------------


def _sparse_switch_norm_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """SN's inputs, with logits scaled by ``logit_scale`` (small: ratios inside the simplex)."""
    inputs = _switch_norm_inputs(rng, params)
    for name in ("mean_logits", "var_logits"):
        inputs[name] = params.get("logit_scale", 1.0) * inputs[name]
    return inputs


def _sparse_switch_norm_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return dict(
        _switch_norm_config(inputs, params),
        radius=params["radius"],
        variant=params.get("variant", "paper"),
        fixed=FixedSides(*params.get("fixed", (None, None))),
    )


def _sparse_switch_norm_linearize(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Linearized:
    args = [inputs[name] for name in SWITCH_NORM_ARGUMENTS]
    return sparse_switch_norm_linearize(*args, **_sparse_switch_norm_config(inputs, params))


def _sparse_switch_norm_intermediates(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    args = [inputs[name] for name in SWITCH_NORM_ARGUMENTS]
    _, cache, running, fixed = sparse_switch_norm_forward(*args, **_sparse_switch_norm_config(inputs, params))
    named = cache.arrays()
    for side, aux in (("mean", cache.mixture.mean_aux), ("var", cache.mixture.var_aux)):
        if isinstance(aux, SparsestMaxStages):
            named.update({f"{side}_ratio_{key}": value for key, value in aux.arrays().items()})
        named[f"new_fixed_{side}"] = np.asarray(-1 if getattr(fixed, side) is None else getattr(fixed, side))
    if running is not None:
        named.update(new_running_mean=running.mean, new_running_var=running.var)
    return named


SPARSE_SWITCH_NORM = OpInfo(
    name="sparse_switch_norm",
    arguments=SWITCH_NORM_ARGUMENTS,
    make_inputs=_sparse_switch_norm_inputs,
    linearize=_sparse_switch_norm_linearize,
    intermediates=_sparse_switch_norm_intermediates,
    description="Sparse Switchable Normalization: SN with SparsestMax ratios and fixed sides",
)


def _sparse_switch_norm_samples() -> Iterator[Case]:
    base = dict(shape=(2, 4, 3, 3), normalizers=("in", "ln", "bn"), radius=0.3, logit_scale=0.3)
    for variant, convention in (("paper", "paper"), ("official", "official")):
        for training in (True, False):
            mode = "train" if training else "eval"
            params = dict(base, variant=variant, convention=convention, training=training)
            yield Case("sparse_switch_norm", f"{variant}-{mode}-4d", "sample", params)
    # The same input under both variants: the variance logits' sparsemax is on an edge, inside the
    # official ball about the edge midpoint but outside the paper's ball about the centre.
    for variant in ("paper", "official"):
        params = dict(base, radius=0.45, logit_scale=0.5, variant=variant, convention="official")
        yield Case("sparse_switch_norm", f"{variant}-train-4d-edge", "sample", params, seed=3)
    yield Case("sparse_switch_norm", "paper-train-mean-fixed", "sample", dict(base, fixed=(1, None)))
    yield Case("sparse_switch_norm", "official-eval-both-fixed", "sample", dict(base, fixed=(0, 2), training=False, variant="official", convention="official"))
    yield Case("sparse_switch_norm", "paper-train-2d", "sample", dict(shape=(6, 4), normalizers=("ln", "bn"), radius=0.1, logit_scale=0.5))
    yield Case("sparse_switch_norm", "paper-train-gn", "sample", dict(shape=(2, 4, 2, 2), normalizers=("in", "ln", "bn", "gn"), groups=2, radius=0.4, logit_scale=0.3))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

OPS: dict[str, OpInfo] = {op.name: op for op in (SWITCH_NORM, SPARSEMAX, SPARSESTMAX, SPARSE_SWITCH_NORM)}
"""Every op refnorm implements, by name."""

_CASE_SOURCES: tuple[Callable[[], Iterator[Case]], ...] = (
    _switch_norm_samples,
    _sparsemax_samples,
    _sparsestmax_samples,
    _sparse_switch_norm_samples,
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
