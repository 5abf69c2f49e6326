"""The op registry and the catalog of named cases: the types, how a case is declared, and the helpers the op families share.

Modelled on PyTorch's OpInfo: each op is described once (:class:`OpInfo`: its differentiable
arguments, how to draw inputs for a case, how to run it), and a :class:`Case` names one
point of an op's configuration space, in one of three kinds:

``"sample"``
    small and fast; ``refnorm check`` gradient-checks them.
``"reference"``
    broad: every rank, convention, mode and normalizer subset, and the edge cases real bug
    reports hit. Golden files and the conformance kit (:mod:`refnorm.testing`) run over
    ``sample`` and ``reference``.
``"error"``
    bad input, with the exception the op must raise and a regular expression its message must
    match.

A case's name is its identity. Its inputs are drawn on the host with
``numpy.random.default_rng(case.seed)`` in float64, so every backend (and every golden file) sees
bit-identical inputs, and its seed follows from its id alone (:mod:`refnorm.oracle.catalog.seeds`):
adding, removing or reordering cases never changes another case's arrays.

Each op family's module (``switchnorm.py``, ``sparsestmax.py``, ``sparse_switchnorm.py``,
``exemplarnorm.py``) declares its ops and its cases one way: a :class:`CaseMaker` per op and kind,
called once per case, in generator functions listed in the module's ``CASE_SOURCES``. Adding an
op to golden files and the conformance kit takes an :class:`OpInfo` in :data:`OPS` and its case
sources; nothing in :mod:`refnorm.oracle.golden` or :mod:`refnorm.testing` names an op.
``docs/golden-format.md`` lists what an op must provide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ...ops.linearized import Linearized
from ...ops.running import RunningStats
from ...ops.sparsestmax import sparsestmax_forward
from .seeds import case_seed

KINDS = ("sample", "reference", "error")

OPS: dict[str, OpInfo] = {}
"""Every op refnorm implements, by name (filled by :mod:`refnorm.oracle.catalog` from the op families' modules)."""


# --------------------------------------------------------------------------------------------
# Ops
# --------------------------------------------------------------------------------------------


class Forward(NamedTuple):
    """One run of an op's forward at a point: everything the oracle reads from it.

    ``linearized`` is the op's :class:`~refnorm.ops.linearized.Linearized` there (output,
    pullback, pushforward where the op has one, active set), exactly what the op's public
    ``*_linearize`` function returns; ``intermediates`` are the forward's named intermediates and
    new state (per-scope statistics, ratios, ``xhat``, ``new_running_mean``, ...), so a port can see
    which stage diverged. Both come from the same forward, which therefore runs once per evaluation.
    """

    linearized: Linearized
    intermediates: Mapping[str, Any]


def output_only(linearized: Linearized, name: str) -> Forward:
    """The :class:`Forward` of an op whose one intermediate is its output (a stage of EN's ratio generator, sparsemax), named ``name``."""
    return Forward(linearized, {name: linearized.out})


@dataclass(frozen=True)
class OpInfo:
    """How to draw inputs for, and run, one op.

    ``make_inputs(rng, params)`` returns host float64 arrays by name: the differentiable
    ``arguments`` (in order) and any state the op needs (e.g. running statistics).
    ``forward(inputs, params)`` runs the op once at ``inputs`` (arrays of any backend, same names)
    and returns its :class:`Forward`: the linearization (output, pullback, pushforward, and the
    ``hvp`` where the op has a second order) and the named intermediates.

    ``params`` must survive a JSON round trip (golden manifests store them): strings, numbers,
    booleans, ``None`` and tuples of those. ``forward`` may be called on float32 inputs (the
    conformance kit measures float32 conditioning that way).
    """

    name: str
    arguments: tuple[str, ...]
    make_inputs: Callable[[np.random.Generator, Mapping[str, Any]], dict[str, np.ndarray]]
    forward: Callable[[Mapping[str, Any], Mapping[str, Any]], Forward]
    description: str = ""
    outputs: tuple[str, ...] | None = None
    """Names of the arrays in ``linearize(...).out`` (one per tuple element). ``None``: ``"y"``
    for a single array, ``"y0", "y1", ...`` for a tuple."""
    hvp: bool = False
    """Whether the op has a second order: its linearization carries an ``hvp`` (golden files then hold
    ``hvp.*``, and the conformance kit checks an adapter's ``hvp``). Every op has a pushforward."""

    def linearize(self, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Linearized:
        """The op's :class:`~refnorm.ops.linearized.Linearized` at ``inputs`` (what the gradient checker consumes)."""
        return self.forward(inputs, params).linearized

    def arguments_of(self, inputs: Mapping[str, Any]) -> tuple[Any, ...]:
        """The differentiable arguments among ``inputs``, in order: the positional point of :func:`refnorm.gradcheck`."""
        return tuple(inputs[name] for name in self.arguments)

    def with_arguments(self, inputs: Mapping[str, Any], point: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
        """``inputs`` with the differentiable arguments replaced by ``point`` (positional, in order); the inverse of :meth:`arguments_of`."""
        return {**inputs, **dict(zip(self.arguments, point, strict=True))}

    def output_names(self, out: Any) -> tuple[str, ...]:
        """The names of the arrays of an output ``out`` of :meth:`linearize`."""
        count = len(out) if isinstance(out, tuple | list) else 1
        if self.outputs is not None:
            if len(self.outputs) != count:
                raise RuntimeError(f"op {self.name} declares outputs {self.outputs} but linearize returned {count}")
            return tuple(self.outputs)
        return ("y",) if not isinstance(out, tuple | list) else tuple(f"y{i}" for i in range(count))


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One named configuration of one op."""

    op: str
    name: str
    kind: str
    params: Mapping[str, Any]
    seed: int | None = None
    """The seed the inputs are drawn from. ``None`` (the usual): :func:`~refnorm.oracle.catalog.seeds.case_seed`
    of the id, frozen for the cases of refnorm 0.1.0 and derived from the id for the others. Give one
    only to draw another case's inputs (``seed=case_seed("op/other")``)."""
    gradcheck: Mapping[str, Any] = field(default_factory=dict)
    """Keyword overrides for :func:`refnorm.gradcheck` (e.g. a tolerance for a large-offset case)."""
    raises: type[Exception] | None = None
    """``"error"`` cases: the exception the op must raise."""
    match: str | None = None
    """``"error"`` cases: a regular expression the exception message must match."""
    note: str = ""
    """Why the case exists (the bug report it reproduces, the edge it probes); shown by
    ``refnorm golden list`` and written to golden manifests."""
    edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = field(default=None, compare=False, repr=False)
    """``"error"`` cases: turns the drawn inputs into the bad ones (a wrong shape, an integer dtype,
    a NaN, a missing array). It returns a new dict and must keep every value a NumPy array."""
    conditioning: str = ""
    """Why float32 loses digits on this case (e.g. mean 1e4 with std 1). Golden generation widens
    a float32 tolerance only where refnorm's own float32 evaluation needs it, and the test suite
    requires every case that gets a widened tolerance to say why here."""
    tolerances: Mapping[str, Mapping[str, tuple[float, float]]] = field(default_factory=dict)
    """Explicit ``{dtype: {"forward"|"backward": (rtol, atol)}}`` overrides of the recommended
    tolerances; ``tolerance_reason`` must say why."""
    tolerance_reason: str = ""
    kink: str = ""
    """Why the case sits exactly on a kink of the op (equal logits at the SparsestMax centre, a
    logit exactly on a sparsemax support boundary), where the derivative does not exist and
    finite differences cannot check it. Such a point is in the catalog because real inputs hit it
    (the official initialisation, one-hot logits written back by the official SSN); its golden
    gradient is refnorm's documented choice there. The test suite requires the gradient checker
    to report every direction of such a case as passed or skipped (as crossing a kink), and at
    least one as skipped, so a case that is not on a kink cannot claim to be."""
    ship: bool = False
    """``"reference"`` cases: part of the golden set shipped inside the package
    (:data:`refnorm.oracle.golden.SELECTIONS`). Every ``"sample"`` and ``"error"`` case is shipped anyway."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"case {self.op}/{self.name}: kind {self.kind!r}, expected one of {KINDS}")
        if not _CASE_NAME.fullmatch(self.name):
            raise ValueError(f"case {self.op}/{self.name}: names may use only letters, digits and . _ + = - (they become file names)")
        if self.seed is None:
            object.__setattr__(self, "seed", case_seed(self.id))
        elif isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"case {self.id}: seed must be an int in [0, 2**32) or None (derived from the id), got {self.seed!r}")
        if (self.kind == "error") != (self.raises is not None and self.match is not None):
            raise ValueError(f"case {self.id}: error cases, and only they, need raises= and match=")
        if self.tolerances and not self.tolerance_reason:
            raise ValueError(f"case {self.id}: tolerances= needs a tolerance_reason")
        if self.kink and self.kind == "error":
            raise ValueError(f"case {self.id}: an error case has no gradient, so no kink")
        if self.ship and self.kind != "reference":
            raise ValueError(f"case {self.id}: ship= selects reference cases; sample and error cases are always shipped")

    @property
    def shipped(self) -> bool:
        """Whether the golden set shipped inside the package holds this case (:data:`refnorm.oracle.golden.SELECTIONS`)."""
        return self.kind != "reference" or self.ship

    @property
    def id(self) -> str:
        return f"{self.op}/{self.name}"

    def inputs(self) -> dict[str, np.ndarray]:
        """The case's host inputs, drawn from its seed (and, for error cases, edited); fresh copies."""
        key = (self.op, self.name, self.seed, repr(self.params))
        if key not in _DRAWN:
            # Drawing can take a while (SparsestMax rows are redrawn until they keep a margin), and
            # the checks draw the same case many times.
            _DRAWN[key] = OPS[self.op].make_inputs(np.random.default_rng(self.seed), self.params)
        inputs = {name: np.array(array, copy=True) for name, array in _DRAWN[key].items()}
        return inputs if self.edit is None else self.edit(inputs)


_CASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
_DRAWN: dict[tuple[str, str, int | None, str], dict[str, np.ndarray]] = {}
"""Drawn inputs by case (op, name, seed, params), before any ``edit``."""


@dataclass(frozen=True)
class CaseMaker:
    """Declares the cases of one op and one kind: ``make(name, **params)`` is a :class:`Case`.

    ``make(name, raises=None, match=None, *, note=..., kink=..., ..., **params)``: the keywords
    that are :class:`Case` fields (``note``, ``kink``, ``conditioning``, ``ship``, ``gradcheck``,
    ``edit``, ``seed``, ``tolerances``, ``tolerance_reason``) go to the case, every other keyword is a
    parameter. The case's parameters are ``base`` updated by the call's (``base``'s keys first), then
    passed through ``complete`` (which adds the defaults that depend on other parameters). Unless the
    call gives them, the gradient-checker options are ``gradcheck(params)`` and ``ship`` is whether
    the full name is in ``shipped``. ``prefix`` starts every name (``"paper-"``).
    """

    op: str
    kind: str
    base: Mapping[str, Any] = field(default_factory=dict)
    complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    gradcheck: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    shipped: frozenset[str] = frozenset()
    prefix: str = ""

    def __call__(
        self,
        name: str,
        raises: type[Exception] | None = None,
        match: str | None = None,
        *,
        note: str = "",
        kink: str = "",
        conditioning: str = "",
        ship: bool | None = None,
        gradcheck: Mapping[str, Any] | None = None,
        edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
        seed: int | None = None,
        tolerances: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
        tolerance_reason: str = "",
        **params: Any,
    ) -> Case:
        name = self.prefix + name
        params = {**self.base, **params}
        if self.complete is not None:
            params = self.complete(params)
        if gradcheck is None:
            gradcheck = self.gradcheck(params) if self.gradcheck is not None else {}
        return Case(
            self.op, name, self.kind, params, seed=seed, gradcheck=gradcheck, raises=raises, match=match, note=note, edit=edit,
            conditioning=conditioning, tolerances=tolerances or {}, tolerance_reason=tolerance_reason, kink=kink,
            ship=name in self.shipped if ship is None else ship,
        )  # fmt: skip


def with_defaults(params: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """``params`` with each of ``defaults`` it lacks added after its own keys."""
    return {**params, **{key: value for key, value in defaults.items() if key not in params}}


MODES = (("train", True), ("eval", False))
"""``(name, training)`` of the two modes, as case names spell them."""

REFERENCE_SHAPES = {"2d": (5, 3), "3d": (3, 4, 5), "4d": (3, 4, 3, 2), "5d": (2, 3, 2, 2, 3)}
"""The reference cases' shape per input rank (other sizes than the samples')."""


# --------------------------------------------------------------------------------------------
# Edits that turn a case's drawn inputs into bad ones (error cases)
# --------------------------------------------------------------------------------------------


def replace_input(name: str, make: Callable[[np.ndarray], Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """An ``edit`` that replaces input ``name`` by ``make(old value)``."""
    return lambda inputs: {**inputs, name: np.asarray(make(inputs[name]))}


def drop_inputs(*names: str) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """An ``edit`` that removes inputs (e.g. the running statistics)."""
    return lambda inputs: {key: value for key, value in inputs.items() if key not in names}


def with_element(value: float, index: tuple[int, ...] = (0,)) -> Callable[[np.ndarray], np.ndarray]:
    """A copy of an array with one element set to ``value`` (NaN, infinity)."""

    def make(array: np.ndarray) -> np.ndarray:
        array = array.copy()
        array[index + (0,) * (array.ndim - len(index))] = value
        return array

    return make


# --------------------------------------------------------------------------------------------
# Drawing inputs
# --------------------------------------------------------------------------------------------


def explicit_values(values: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Explicit input values of a case (ties, one-hot logits, the SparsestMax centre) as float64 of ``shape``."""
    return np.reshape(np.asarray(values, dtype=np.float64), shape)


def normalization_inputs(rng: np.random.Generator, params: Mapping[str, Any], logits: int | None) -> dict[str, np.ndarray]:
    """The inputs of a normalization layer (SN, SSN, a plain normalizer): ``x``, ``gamma``, ``beta``,
    two logit vectors of length ``logits`` (none if ``None``) and, when the case uses them, running
    statistics.

    ``params`` options (all optional but ``shape``): ``offset`` and ``scale`` of ``x``
    (``x = scale * N(0, 1) + offset``), ``logit_std`` (logits ``logit_std * N(0, 1)``; large ones
    make near one-hot ratios. Not ``logit_scale``: SSN's inputs scale these logits again by that),
    ``logits="equal"`` (all ones: the official initialisation, a tie), ``running=True`` (pass
    running statistics in training, so the new running state is computed). Evaluation always
    gets running statistics.
    """
    shape = tuple(params["shape"])
    C = shape[1]
    inputs = {
        "x": rng.standard_normal(shape) * params.get("scale", 1.0) + params.get("offset", 0.0),
        "gamma": 1.0 + 0.5 * rng.standard_normal(C),
        "beta": 0.5 * rng.standard_normal(C),
    }
    if logits is not None:
        for name in ("mean_logits", "var_logits"):
            drawn = rng.standard_normal(logits) * params.get("logit_std", 1.0)
            inputs[name] = np.ones(logits) if params.get("logits") == "equal" else drawn
    if not params.get("training", True) or params.get("running", False):
        inputs["running_mean"] = params.get("offset", 0.0) + 0.3 * params.get("scale", 1.0) * rng.standard_normal(C)
        inputs["running_var"] = params.get("scale", 1.0) ** 2 * rng.uniform(0.5, 1.5, C)
    return inputs


def normalization_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the forward shared by SN, SSN and the plain normalizers."""
    running = None
    if "running_mean" in inputs:
        running = RunningStats(inputs["running_mean"], inputs["running_var"])
    return dict(
        running=running,
        training=params.get("training", True),
        groups=params.get("groups"),
        convention=params.get("convention", "paper"),
        eps=params.get("eps", 1e-5),
        momentum=params.get("momentum", 0.9),
    )


def with_default_normalizers(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with ``normalizers`` defaulting to the layer's default set: LN and BN for ``(N, C)`` input, else IN, LN, BN."""
    return with_defaults(params, normalizers=("ln", "bn") if len(params["shape"]) == 2 else ("in", "ln", "bn"))


def new_running_arrays(running: RunningStats | None) -> dict[str, Any]:
    """The running statistics an op returned, as named intermediates (none when it returned none)."""
    return {} if running is None else {"new_running_mean": running.mean, "new_running_var": running.var}


MARGIN = 0.05
"""SparsestMax logits drawn with a margin keep their stages under moves of ``MARGIN * scale`` (:func:`stages_survive`)."""


def _host_arrays(value: Any) -> list[np.ndarray]:
    """The arrays of a nested tuple (an active set), as host arrays."""
    if isinstance(value, tuple | list):
        return [a for item in value for a in _host_arrays(item)]
    return [np.asarray(value)]


def stages_survive(row: np.ndarray, radius: float, variant: str, margin: float) -> bool:
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


def logit_row(rng: np.random.Generator, K: int, *, radius: float, variant: str, scale: float, steps: int | None, margin: float) -> np.ndarray:
    """One SparsestMax logit vector ``scale * N(0, 1)``, redrawn until it takes ``steps`` sphere steps
    (if not ``None``) and its stages survive moves of ``margin`` (if > 0)."""
    for _attempt in range(10_000):
        row = scale * rng.standard_normal((1, K))
        if steps is not None:
            _, stages = sparsestmax_forward(row, radius, variant=variant)
            if int(stages.sphere_steps()[0]) != steps:
                continue
        if margin > 0 and not stages_survive(row, radius, variant, margin):
            continue
        return row[0]
    raise RuntimeError(f"no logits with {steps} sphere steps and margin {margin} found at radius {radius} ({variant})")  # a catalog bug


# --------------------------------------------------------------------------------------------
# What several families' cases say and need
# --------------------------------------------------------------------------------------------


LARGE_OFFSET = "input mean 1e4 with std 1: x - mean cancels about 4 of float32's 7 digits"
"""The ``conditioning`` of a case whose input has mean 1e4."""


def offset_gradcheck_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """Gradient-checker overrides a case's input offset calls for.

    With a mean of 1e4 every function value carries rounding noise of ~1e-12 relative, which the
    default starting step (1e-2 of the argument's spread) turns into finite-difference noise of
    ~1e-7 for the logits; a 10 times larger starting step stays above the noise (Richardson
    extrapolation takes care of the larger truncation error). The tolerance is not changed.
    """
    return {"step": 0.1} if abs(params.get("offset", 0.0)) >= 1e3 else {}


ONE_HOT_LOGITS = (
    "one-hot logits (what the official SSN writes into a side's logits once it is fixed): sparsemax is the vertex, and "
    "every other entry sits exactly on the support threshold (z_j = tau), a kink"
)
ONE_HOT_KINK = (
    "the entries other than the 1 equal the sparsemax threshold: raising one of them enters it into the support, lowering "
    "it does not, so the one-sided derivatives differ; refnorm counts entries at the threshold as outside the support "
    "(docs/sparsestmax.md), which makes the output a vertex with gradient 0"
)
CENTRE_KINK = (
    "the sphere step's direction is undefined at distance zero from its centre: any perturbation sends the output to a "
    "point of the sphere, a jump; refnorm returns the sparsemax stage there (SPEC §3) and its Jacobian"
)

