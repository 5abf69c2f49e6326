"""The op registry and the catalog of named cases every check runs over.

Modelled on PyTorch's OpInfo: each op is described once (:class:`OpInfo`: its differentiable
arguments, how to draw inputs for a case, how to evaluate it), and a :class:`Case` names one
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

Inputs are always drawn on the host with ``numpy.random.default_rng(case.seed)`` in float64, so
every backend (and every golden file) sees bit-identical inputs.

Adding an op to golden files and the conformance kit takes an :class:`OpInfo` in :data:`OPS` and a
case source in ``_CASE_SOURCES``; nothing in :mod:`refnorm.golden` or :mod:`refnorm.testing`
names an op. ``docs/golden-format.md`` lists what an op must provide.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import exemplarnorm as en
from .gradient_check import Linearized
from .plainnorm import PLAIN_NORM_ARGUMENTS, plain_norm_forward, plain_norm_linearize
from .running import RunningStats
from .sparse_switchnorm import FixedSides, radius_schedule, sparse_switch_norm_forward, sparse_switch_norm_linearize
from .sparsestmax import SparsestMaxStages, max_radius, sparsemax, sparsemax_linearize, sparsestmax_forward, sparsestmax_linearize
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

    ``params`` must survive a JSON round trip (golden manifests store them): strings, numbers,
    booleans, ``None`` and tuples of those. ``linearize`` and ``intermediates`` may be called on
    float32 inputs (the conformance kit measures float32 conditioning that way).
    """

    name: str
    arguments: tuple[str, ...]
    make_inputs: Callable[[np.random.Generator, Mapping[str, Any]], dict[str, np.ndarray]]
    linearize: Callable[[Mapping[str, Any], Mapping[str, Any]], Linearized]
    intermediates: Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]
    description: str = ""
    outputs: tuple[str, ...] | None = None
    """Names of the arrays in ``linearize(...).out`` (one per tuple element). ``None``: ``"y"``
    for a single array, ``"y0", "y1", ...`` for a tuple."""

    def output_names(self, out: Any) -> tuple[str, ...]:
        """The names of the arrays of an output ``out`` of :attr:`linearize`."""
        count = len(out) if isinstance(out, tuple | list) else 1
        if self.outputs is not None:
            if len(self.outputs) != count:
                raise RuntimeError(f"op {self.name} declares outputs {self.outputs} but linearize returned {count}")
            return tuple(self.outputs)
        return ("y",) if not isinstance(out, tuple | list) else tuple(f"y{i}" for i in range(count))


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
    (:data:`refnorm.golden.SELECTIONS`). Every ``"sample"`` and ``"error"`` case is shipped anyway."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"case {self.op}/{self.name}: kind {self.kind!r}, expected one of {KINDS}")
        if not _CASE_NAME.fullmatch(self.name):
            raise ValueError(f"case {self.op}/{self.name}: names may use only letters, digits and . _ + = - (they become file names)")
        if (self.kind == "error") != (self.raises is not None and self.match is not None):
            raise ValueError(f"case {self.op}/{self.name}: error cases, and only they, need raises= and match=")
        if self.tolerances and not self.tolerance_reason:
            raise ValueError(f"case {self.op}/{self.name}: tolerances= needs a tolerance_reason")
        if self.kink and self.kind == "error":
            raise ValueError(f"case {self.op}/{self.name}: an error case has no gradient, so no kink")
        if self.ship and self.kind != "reference":
            raise ValueError(f"case {self.op}/{self.name}: ship= selects reference cases; sample and error cases are always shipped")

    @property
    def shipped(self) -> bool:
        """Whether the golden set shipped inside the package holds this case (:data:`refnorm.golden.SELECTIONS`)."""
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
_DRAWN: dict[tuple[str, str, int, str], dict[str, np.ndarray]] = {}
"""Drawn inputs by case (op, name, seed, params), before any ``edit``."""


def _replace(name: str, make: Callable[[np.ndarray], Any]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """An ``edit`` that replaces input ``name`` by ``make(old value)``."""
    return lambda inputs: {**inputs, name: np.asarray(make(inputs[name]))}


def _new_running_arrays(running: RunningStats | None) -> dict[str, Any]:
    """The running statistics an op returned, as named arrays (none when it returned none)."""
    return {} if running is None else {"new_running_mean": running.mean, "new_running_var": running.var}


def _drop(*names: str) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """An ``edit`` that removes inputs (e.g. the running statistics)."""
    return lambda inputs: {key: value for key, value in inputs.items() if key not in names}


def _with_element(value: float, index: tuple[int, ...] = (0,)) -> Callable[[np.ndarray], np.ndarray]:
    """A copy of an array with one element set to ``value`` (NaN, infinity)."""

    def make(array: np.ndarray) -> np.ndarray:
        array = array.copy()
        array[index + (0,) * (array.ndim - len(index))] = value
        return array

    return make


# --------------------------------------------------------------------------------------------
# Switchable Normalization
# --------------------------------------------------------------------------------------------


def _normalization_inputs(rng: np.random.Generator, params: Mapping[str, Any], logits: int | None) -> dict[str, np.ndarray]:
    """``x``, ``gamma``, ``beta``, two logit vectors of length ``logits`` (none if ``None``) and, when
    the case uses them, running statistics.

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


def _switch_norm_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return _normalization_inputs(rng, params, logits=len(params["normalizers"]))


def _normalization_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the forward shared by SN and the plain normalizers."""
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


def _switch_norm_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return dict(_normalization_config(inputs, params), normalizers=params["normalizers"])


def _switch_norm_linearize(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Linearized:
    args = [inputs[name] for name in SWITCH_NORM_ARGUMENTS]
    return switch_norm_linearize(*args, **_switch_norm_config(inputs, params))


def _switch_norm_intermediates(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    args = [inputs[name] for name in SWITCH_NORM_ARGUMENTS]
    _, cache, running = switch_norm_forward(*args, **_switch_norm_config(inputs, params))
    return {**cache.arrays(), **_new_running_arrays(running)}


SWITCH_NORM = OpInfo(
    name="switch_norm",
    arguments=SWITCH_NORM_ARGUMENTS,
    make_inputs=_switch_norm_inputs,
    linearize=_switch_norm_linearize,
    intermediates=_switch_norm_intermediates,
    description="Switchable Normalization with softmax ratios",
)

_SHAPES = {"2d": (3, 4), "3d": (2, 3, 5), "4d": (2, 4, 3, 3), "5d": (2, 2, 2, 3, 2)}
"""The sample cases' shape per input rank."""
_REFERENCE_SHAPES = {"2d": (5, 3), "3d": (3, 4, 5), "4d": (3, 4, 3, 2), "5d": (2, 3, 2, 2, 3)}
"""The reference cases' shape per input rank (other sizes than the samples', other seeds)."""
_LARGE_OFFSET = "input mean 1e4 with std 1: x - mean cancels about 4 of float32's 7 digits"


def _gradcheck_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """Gradient-checker overrides a case's inputs call for.

    With a mean of 1e4 every function value carries rounding noise of ~1e-12 relative, which the
    default starting step (1e-2 of the argument's spread) turns into finite-difference noise of
    ~1e-7 for the logits; a 10 times larger starting step stays above the noise (Richardson
    extrapolation takes care of the larger truncation error). The tolerance is not changed.
    """
    return {"step": 0.1} if abs(params.get("offset", 0.0)) >= 1e3 else {}


def _modes() -> Iterator[tuple[str, bool]]:
    yield "train", True
    yield "eval", False


def _switch_norm_samples() -> Iterator[Case]:
    for convention in ("paper", "official"):
        for mode, training in _modes():
            for rank, shape in _SHAPES.items():
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
    seed = iter(range(1000, 2000))

    def case(name: str, note: str = "", conditioning: str = "", **params: Any) -> Case:
        params.setdefault("normalizers", ("ln", "bn") if len(params["shape"]) == 2 else ("in", "ln", "bn"))
        return Case("switch_norm", name, "reference", params, seed=next(seed), note=note, conditioning=conditioning,
                    gradcheck=_gradcheck_options(params), ship=name in _SHIPPED_SWITCH_NORM)  # fmt: skip

    # Every rank, convention and mode with the default normalizer set.
    for convention in ("paper", "official"):
        for mode, training in _modes():
            for rank, shape in _REFERENCE_SHAPES.items():
                yield case(f"{convention}-{mode}-rank{len(shape)}", shape=shape, convention=convention, training=training)
    # Every normalizer subset (and logit orders other than the official one).
    for convention in ("paper", "official"):
        for mode, training in _modes():
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
    for mode, training in _modes():
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
        for mode, training in _modes():
            yield case(f"{convention}-{mode}-offset1e4", shape=(3, 4, 3, 3), convention=convention, training=training, offset=1e4,
                       note="mean 1e4, std 1: E[x^2] - mean^2 would lose 8 of float64's 16 digits and all of float32's", conditioning=_LARGE_OFFSET)  # fmt: skip
        yield case(f"{convention}-train-2d-offset1e4", shape=(6, 5), convention=convention, offset=1e4, conditioning=_LARGE_OFFSET)
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
    yield case("official-train-2d-ema0.997", shape=(6, 5), running=True, momentum=0.997, convention="official",
               note="official SwitchNorm1d: unbiased LN over C, BN over N")  # fmt: skip
    yield case("paper-train-ema0", shape=(3, 4, 3, 2), running=True, momentum=0.0, note="momentum 0: running = batch statistics")


def _switch_norm_errors() -> Iterator[Case]:
    base = dict(shape=(2, 4, 3, 3), normalizers=("in", "ln", "bn"))

    def case(name: str, raises: type[Exception], match: str, edit: Any = None, note: str = "", **params: Any) -> Case:
        return Case("switch_norm", name, "error", {**base, **params}, raises=raises, match=match, edit=edit, note=note)

    yield case("x-rank1", ValueError, r"x has shape \(4,\), expected \(N, C, \*spatial\) with rank >= 2",
               edit=_replace("x", lambda x: x[0, :, 0, 0]), shape=(2, 4, 3, 3))  # fmt: skip
    yield case("x-empty-axis", ValueError, r"x has shape \(2, 0, 3, 3\), expected every axis to have size >= 1",
               edit=_replace("x", lambda x: x[:, :0]))  # fmt: skip
    yield case("x-integer", TypeError, r"x has dtype (\w+\.)?int64, expected a real floating dtype", edit=_replace("x", lambda x: np.round(x).astype(np.int64)))
    yield case("gamma-float32", TypeError, r"gamma has dtype (\w+\.)?float32, expected (\w+\.)?float64 \(the dtype of x\)",
               edit=_replace("gamma", lambda g: g.astype(np.float32)), note="refnorm never promotes silently")  # fmt: skip
    yield case("gamma-shape", ValueError, r"gamma has shape \(5,\), expected \(C,\) = \(4,\)", edit=_replace("gamma", lambda g: np.append(g, 1.0)))
    yield case("beta-shape", ValueError, r"beta has shape \(1, 4\), expected \(C,\) = \(4,\)", edit=_replace("beta", lambda b: b[None, :]))
    yield case("mean-logits-length", ValueError, r"mean_logits has shape \(2,\), expected one logit per normalizer",
               edit=_replace("mean_logits", lambda w: w[:2]))  # fmt: skip
    yield case("var-logits-length", ValueError, r"var_logits has shape \(4,\), expected one logit per normalizer",
               edit=_replace("var_logits", lambda w: np.append(w, 0.0)))  # fmt: skip
    yield case("x-nan", ValueError, r"x contains NaN or infinity", edit=_replace("x", _with_element(np.nan)))
    yield case("gamma-inf", ValueError, r"gamma contains NaN or infinity", edit=_replace("gamma", _with_element(np.inf)))
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
               training=False, edit=_drop("running_mean", "running_var"))  # fmt: skip
    yield case("running-mean-shape", ValueError, r"running.mean has shape \(3,\), expected \(C,\) = \(4,\)",
               training=False, edit=_replace("running_mean", lambda m: m[:3]))  # fmt: skip


# --------------------------------------------------------------------------------------------
# Plain normalizers (IN, LN, BN, GN): SN with a single normalizer and a fixed ratio of 1
# --------------------------------------------------------------------------------------------


def _plain_norm_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return _normalization_inputs(rng, params, logits=None)


def _plain_norm_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return dict(_normalization_config(inputs, params), normalizer=params["normalizer"])


def _plain_norm_linearize(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Linearized:
    args = [inputs[name] for name in PLAIN_NORM_ARGUMENTS]
    return plain_norm_linearize(*args, **_plain_norm_config(inputs, params))


def _plain_norm_intermediates(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    args = [inputs[name] for name in PLAIN_NORM_ARGUMENTS]
    _, cache, running = plain_norm_forward(*args, **_plain_norm_config(inputs, params))
    return {**cache.arrays(), **_new_running_arrays(running)}


PLAIN_NORM = OpInfo(
    name="plain_norm",
    arguments=PLAIN_NORM_ARGUMENTS,
    make_inputs=_plain_norm_inputs,
    linearize=_plain_norm_linearize,
    intermediates=_plain_norm_intermediates,
    description="One normalizer alone: instance, layer, batch or group normalization",
)


def _plain_norm_samples() -> Iterator[Case]:
    for normalizer, groups in (("in", None), ("ln", None), ("bn", None), ("gn", 2)):
        yield Case("plain_norm", f"paper-train-{normalizer}", "sample", dict(shape=(2, 4, 3, 3), normalizer=normalizer, groups=groups))
    yield Case("plain_norm", "official-train-bn", "sample", dict(shape=(2, 4, 3, 3), normalizer="bn", convention="official"))
    yield Case("plain_norm", "paper-eval-bn", "sample", dict(shape=(2, 4, 3, 3), normalizer="bn", training=False))
    yield Case("plain_norm", "paper-train-2d-ln", "sample", dict(shape=(3, 4), normalizer="ln"))


_SHIPPED_PLAIN_NORM = frozenset({
    "gn-official-train-4d", "bn-paper-eval-5d", "bn-paper-train-N1", "ln-paper-train-C1", "in-paper-train-HW1",
    "bn-paper-train-running", "bn-official-train-offset1e4",
})  # fmt: skip
"""The plain_norm reference cases in the shipped golden set."""


def _plain_norm_references() -> Iterator[Case]:
    seed = iter(range(2000, 3000))

    def case(name: str, note: str = "", conditioning: str = "", **params: Any) -> Case:
        return Case("plain_norm", name, "reference", params, seed=next(seed), note=note, conditioning=conditioning,
                    gradcheck=_gradcheck_options(params), ship=name in _SHIPPED_PLAIN_NORM)  # fmt: skip

    for normalizer, groups in (("in", None), ("ln", None), ("bn", None), ("gn", 2)):
        for convention in ("paper", "official"):
            for mode, training in _modes():
                for rank, shape in _REFERENCE_SHAPES.items():
                    if rank == "2d" and normalizer in ("in", "gn"):
                        continue  # IN of (N, C) input is x itself; GN of it is not in the official code
                    shape = (3, 4, *shape[2:]) if normalizer == "gn" else shape
                    yield case(f"{normalizer}-{convention}-{mode}-{rank}", shape=shape, normalizer=normalizer, groups=groups,
                               convention=convention, training=training)  # fmt: skip
    yield case("bn-paper-train-N1", shape=(1, 3, 2, 2), normalizer="bn", note="BN of a batch of one is IN")
    yield case("ln-paper-train-C1", shape=(3, 1, 2, 2), normalizer="ln", note="LN of one channel is IN")
    yield case("in-paper-train-HW1", shape=(3, 4, 1, 1), normalizer="in", note="IN of a single position: variance 0, y = beta")
    yield case("bn-paper-train-running", shape=(4, 3, 2, 2), normalizer="bn", running=True, momentum=0.9)
    yield case("bn-official-train-offset1e4", shape=(4, 3, 3, 3), normalizer="bn", convention="official", offset=1e4, conditioning=_LARGE_OFFSET)
    yield case("ln-paper-eval-offset1e4", shape=(4, 3, 3, 3), normalizer="ln", training=False, offset=1e4, conditioning=_LARGE_OFFSET)


def _plain_norm_errors() -> Iterator[Case]:
    base = dict(shape=(2, 4, 3, 3), normalizer="bn")

    def case(name: str, raises: type[Exception], match: str, edit: Any = None, **params: Any) -> Case:
        return Case("plain_norm", name, "error", {**base, **params}, raises=raises, match=match, edit=edit)

    yield case("unknown-normalizer", ValueError, r"unknown normalizer 'bm'", normalizer="bm")
    yield case("normalizer-tuple", TypeError, r"normalizer must be one name such as 'bn', got \('in', 'ln'\); for a mixture use switch_norm",
               normalizer=("in", "ln"))  # fmt: skip
    yield case("gn-without-groups", ValueError, r"'gn' but groups is None", normalizer="gn")
    yield case("gamma-shape", ValueError, r"gamma has shape \(3,\), expected \(C,\) = \(4,\)", edit=_replace("gamma", lambda g: g[:3]))
    yield case("x-integer", TypeError, r"x has dtype (\w+\.)?int32, expected a real floating dtype", edit=_replace("x", lambda x: x.astype(np.int32)))
    yield case("official-HW1", ValueError, r"M - 1 = 0", shape=(2, 4, 1, 1), normalizer="in", convention="official")
    yield case("eval-without-running", ValueError, r"needs running statistics", training=False, edit=_drop("running_mean", "running_var"))


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
            inputs[name] = _explicit(params[name], inputs[name].shape)
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


def _exemplar_norm_linearize(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Linearized:
    args = [inputs[name] for name in en.EXEMPLAR_NORM_ARGUMENTS]
    return en.exemplar_norm_linearize(*args, **_exemplar_norm_config(inputs, params))


def _exemplar_norm_intermediates(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    args = [inputs[name] for name in en.EXEMPLAR_NORM_ARGUMENTS]
    _, cache, running = en.exemplar_norm_forward(*args, **_exemplar_norm_config(inputs, params))
    return {**cache.arrays(), **_new_running_arrays(running)}


EXEMPLAR_NORM = OpInfo(
    name="exemplar_norm",
    arguments=en.EXEMPLAR_NORM_ARGUMENTS,
    make_inputs=_exemplar_norm_inputs,
    linearize=_exemplar_norm_linearize,
    intermediates=_exemplar_norm_intermediates,
    description="Exemplar Normalization: per-sample ratios from the ratio generator (SPEC §4)",
)


_EN_CLOSE_SCORES = (
    "the standardisation divides the scores' deviations by their spread over the normalizers; close scores "
    "(with q = 1 the IN and LN scores coincide) amplify the float32 rounding of the scores by 1 / spread"
)


def _exemplar_norm_samples() -> Iterator[Case]:
    def case(name: str, conditioning: str = "", **params: Any) -> Case:
        step = _EN_STEP_EQUAL_SCORES if params.get("init") == "default" else _EN_STEP
        return Case("exemplar_norm", name, "sample", params, gradcheck=step, conditioning=conditioning)

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
    yield case("random-output-train-q1", shape=(2, 4, 3), kernel_size=1, conditioning=_EN_CLOSE_SCORES)
    yield case("random-output-train-q5", shape=(2, 5, 3), kernel_size=5)
    yield case("random-output-train-M1", shape=(3, 4, 1, 1))
    yield case("random-output-train-C1", shape=(3, 1, 2, 2), kernel_size=1)
    yield case("random-output-train-K1", shape=(2, 4, 3), normalizers=("bn",))
    yield case("random-output-train-offset", shape=(2, 4, 3, 3), offset=1e4, conditioning=_LARGE_OFFSET)


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
    yield Case("en_standardize", "K3-near-equal", "sample", near_equal, gradcheck={"step": 1e-3}, conditioning=_EN_CLOSE_SCORES)
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


def _exemplar_norm_references() -> Iterator[Case]:
    seed = iter(range(3000, 4000))

    def case(name: str, note: str = "", conditioning: str = "", ship: bool = False, **params: Any) -> Case:
        params.setdefault("init", "random")
        step = _EN_STEP_EQUAL_SCORES if params["init"] == "default" else _EN_STEP
        return Case("exemplar_norm", name, "reference", params, seed=next(seed), gradcheck=step, note=note, conditioning=conditioning, ship=ship)

    # Both initialisations, both mixings, both modes, every rank (paper convention, default normalizers).
    for init in ("default", "random"):
        for mixing in ("output", "statistics"):
            for mode, training in _modes():
                for rank, shape in _REFERENCE_SHAPES.items():
                    yield case(f"{init}-{mixing}-{mode}-rank{len(shape)}", shape=shape, init=init, mixing=mixing, training=training,
                               ship=init == "random" and rank == "4d")  # fmt: skip
    # The official convention at every rank.
    for mode, training in _modes():
        for rank, shape in _REFERENCE_SHAPES.items():
            # The rank-2 training case has samples whose scores lie within ~1e-2 of each other.
            close = _EN_CLOSE_SCORES if (rank, training) == ("2d", True) else ""
            yield case(f"official-output-{mode}-rank{len(shape)}", shape=shape, convention="official", training=training, conditioning=close)
    yield case("official-statistics-train-rank4", shape=(3, 4, 3, 2), convention="official", mixing="statistics")
    # Edge cases from bug reports: N = 1, C = 1, M = 1, size-1 axes.
    for mixing in ("output", "statistics"):
        for mode, training in _modes():
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
    for mode, training in _modes():
        yield case(f"random-output-{mode}-offset1e4", shape=(3, 4, 3, 3), training=training, offset=1e4,
                   note="mean 1e4, std 1", conditioning=_LARGE_OFFSET, ship=training)  # fmt: skip
    yield case("default-output-train-offset1e4", shape=(3, 4, 3, 3), init="default", offset=1e4, conditioning=_LARGE_OFFSET)
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
    base = dict(shape=(2, 4, 3, 3))

    def case(name: str, raises: type[Exception], match: str, edit: Any = None, note: str = "", **params: Any) -> Case:
        return Case("exemplar_norm", name, "error", {**base, **params}, raises=raises, match=match, edit=edit, note=note)

    kernel = "the kernel size of conv_weight"
    yield case("kernel-even", ValueError, kernel + r" = 2 is even; expected an odd kernel size q", edit=_replace("conv_weight", lambda w: w[:2]),
               note="an even kernel has no centre: 'same' zero padding would shift the channels")  # fmt: skip
    yield case("kernel-4-even", ValueError, kernel + r" = 4 is even", edit=_replace("conv_weight", lambda w: np.append(w, 0.0)))
    yield case("kernel-larger-than-C", ValueError, kernel + r" = 5 is larger than the C = 4 channels", edit=_replace("conv_weight", lambda w: np.zeros(5)))
    yield case("kernel-empty", ValueError, kernel + r" must be a positive odd int, got 0", edit=_replace("conv_weight", lambda w: w[:0]))
    yield case("conv-weight-rank3", ValueError, r"conv_weight has shape \(1, 1, 3\), expected \(q,\)", edit=_replace("conv_weight", lambda w: w[None, None, :]),
               note="a PyTorch Conv1d(1, 1, q) weight must be reshaped to (q,)")  # fmt: skip
    yield case("conv-bias-shape", ValueError, r"conv_bias has shape \(1,\), expected a scalar, shape = \(\)", edit=_replace("conv_bias", lambda b: b[None]))
    yield case("temperature-shape", ValueError, r"temperature has shape \(3,\), expected a scalar, shape = \(\)",
               edit=_replace("temperature", lambda t: np.full(3, t)))  # fmt: skip
    yield case("temperature-nan", ValueError, r"temperature contains NaN or infinity", edit=_replace("temperature", lambda t: np.asarray(np.nan)))
    yield case("conv-weight-inf", ValueError, r"conv_weight contains NaN or infinity", edit=_replace("conv_weight", _with_element(np.inf, (1,))))
    yield case("x-nan", ValueError, r"x contains NaN or infinity", edit=_replace("x", _with_element(np.nan, (1, 2))))
    yield case("gamma-shape", ValueError, r"gamma has shape \(3,\), expected \(C,\) = \(4,\)", edit=_replace("gamma", lambda g: g[:3]))
    yield case("beta-shape", ValueError, r"beta has shape \(4, 1\), expected \(C,\) = \(4,\)", edit=_replace("beta", lambda b: b[:, None]))
    yield case("gamma-float32", TypeError, r"gamma has dtype (\w+\.)?float32, expected (\w+\.)?float64 \(the dtype of x\)",
               edit=_replace("gamma", lambda g: g.astype(np.float32)))  # fmt: skip
    yield case("x-integer", TypeError, r"x has dtype (\w+\.)?int64, expected a real floating dtype", edit=_replace("x", lambda x: np.round(x).astype(np.int64)))
    yield case("x-rank1", ValueError, r"x has shape \(4,\), expected \(N, C, \*spatial\) with rank >= 2", edit=_replace("x", lambda x: x[0, :, 0, 0]))
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
               training=False, edit=_drop("running_mean", "running_var"))  # fmt: skip
    yield case("running-var-shape", ValueError, r"running\.var has shape \(5,\), expected \(C,\) = \(4,\)",
               training=False, edit=_replace("running_var", lambda v: np.append(v, 1.0)))  # fmt: skip


# The stages of the ratio generator. Their sample cases exercise each stage's VJP; the reference
# cases below add inputs the composed EN cannot produce or that localise an edge to one stage.
# en_channel_mean has none: it is a linear mean, fully exercised by its samples. Only
# en_embedding validates its input (normalizers, convention, shape); the other stages are
# internal steps whose input exemplar_norm_forward has validated, so they have no error cases.


def _embedding_references() -> Iterator[Case]:
    seed = iter(range(4000, 4100))

    def case(name: str, note: str = "", conditioning: str = "", gradcheck: Mapping[str, Any] | None = None, **params: Any) -> Case:
        return Case("en_embedding", name, "reference", params, seed=next(seed), note=note, conditioning=conditioning,
                    gradcheck=gradcheck or _gradcheck_options(params))  # fmt: skip

    for rank, shape in _REFERENCE_SHAPES.items():
        # (N, C) = (5, 3): one row's three features have variance 1e-3, so its LN-normalized values
        # curve on the scale of their std, 0.03; a first step of 1e-3 keeps the finite
        # differences in their asymptotic range (1e-2 fails some directions as too noisy to decide).
        yield case(f"paper-train-rank{len(shape)}", shape=shape, gradcheck={"step": 1e-3} if rank == "2d" else None)
    yield case("official-train-rank4", shape=(3, 4, 3, 2), convention="official")
    yield case("paper-train-gn-groupsC", shape=(2, 4, 2, 3), normalizers=("in", "ln", "gn"), groups=4, note="GN with C groups: its embedding is IN's, 0")
    yield case("paper-train-HW1", shape=(4, 3, 1, 1), note="H*W = 1")
    yield case("paper-train-C1", shape=(3, 1, 2, 2), note="one channel")
    yield case("paper-eval-offset1e4", shape=(3, 4, 3, 3), training=False, offset=1e4, conditioning=_LARGE_OFFSET)


def _embedding_errors() -> Iterator[Case]:
    def case(name: str, raises: type[Exception], match: str, edit: Any = None, **params: Any) -> Case:
        return Case("en_embedding", name, "error", {"shape": (2, 4, 3, 3), **params}, raises=raises, match=match, edit=edit)

    yield case("x-rank1", ValueError, r"x has shape \(4,\), expected \(N, C, \*spatial\) with rank >= 2", edit=_replace("x", lambda x: x[0, :, 0, 0]))
    yield case("unknown-normalizer", ValueError, r"unknown normalizer 'xn'", normalizers=("in", "xn"))
    yield case("gn-without-groups", ValueError, r"'gn' but groups is None", normalizers=("gn",))
    yield case("unknown-convention", ValueError, r"unknown convention 'pytorch'", convention="pytorch")
    yield case("official-HW1", ValueError, r"divides the instance variance by M - 1 = 0", shape=(4, 3, 1, 1), convention="official")
    yield case("eval-without-running", ValueError, r"needs running statistics", training=False, edit=_drop("running_mean", "running_var"))
    yield case("nan-x", ValueError, r"x contains NaN or infinity", edit=_replace("x", _with_element(float("nan"))))


def _channel_conv_references() -> Iterator[Case]:
    yield Case("en_channel_conv", "q7-C8", "reference", dict(shape=(2, 3, 8), kernel=(7,)), seed=4100)
    yield Case("en_channel_conv", "q1-C1", "reference", dict(shape=(3, 2, 1), kernel=(1,)), seed=4101, note="one channel")
    yield Case("en_channel_conv", "q3-N1-K1", "reference", dict(shape=(1, 1, 4), kernel=(3,)), seed=4102, note="one sample, one normalizer")


def _standardize_references() -> Iterator[Case]:
    yield Case("en_standardize", "K5", "reference", dict(shape=(3, 5)), seed=4200)
    yield Case("en_standardize", "K1", "reference", dict(shape=(3, 1)), seed=4201, note="one normalizer: standardised scores 0, gradient 0")
    yield Case("en_standardize", "K3-spread1e3", "reference", dict(shape=(3, 3), scores_scale=1e3), seed=4202,
               note="scores spread 1e3: eps_r negligible, the standardisation scale-free")  # fmt: skip


def _softmax_references() -> Iterator[Case]:
    yield Case("en_softmax", "K5-tau8", "reference", dict(shape=(3, 5), temperature_loc=8.0, temperature_scale=0.0), seed=4300,
               note="temperature 8: nearly one-hot ratios")  # fmt: skip
    yield Case("en_softmax", "K3-tau0", "reference", dict(shape=(3, 3), temperature_loc=0.0, temperature_scale=0.0), seed=4301,
               note="temperature 0: uniform ratios, the temperature still gets a gradient")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Sparsemax and SparsestMax
# --------------------------------------------------------------------------------------------


def _explicit(values: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Explicit input values of a case (ties, one-hot logits, the SparsestMax centre) as float64 of ``shape``."""
    return np.reshape(np.asarray(values, dtype=np.float64), shape)


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


# --------------------------------------------------------------------------------------------
# Sparse Switchable Normalization
# --------------------------------------------------------------------------------------------


def _sparse_switch_norm_inputs(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """SN's inputs, with logits scaled by ``logit_scale`` (small: ratios inside the simplex).

    ``margin``: each logit vector is then redrawn (``logit_scale * N(0, 1)``, the stream going on)
    until its SparsestMax stages survive moves of ``margin`` (:func:`_stages_survive`), with
    ``sphere_steps = (mean, var)`` sphere steps if given. ``mean_logits`` / ``var_logits``: explicit values.
    """
    inputs = _switch_norm_inputs(rng, params)
    scale = params.get("logit_scale", 1.0)
    for name in ("mean_logits", "var_logits"):
        inputs[name] = scale * inputs[name]
    if params.get("margin"):
        steps = params.get("sphere_steps", (None, None))
        for name, wanted in zip(("mean_logits", "var_logits"), steps, strict=True):
            inputs[name] = _logit_row(rng, inputs[name].shape[0], radius=params["radius"], variant=params.get("variant", "paper"),
                                      scale=scale, steps=wanted, margin=params["margin"])  # fmt: skip
    for name in ("mean_logits", "var_logits"):
        if name in params:
            inputs[name] = _explicit(params[name], inputs[name].shape)
    return inputs


def _sparse_switch_norm_config(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """SN's configuration, SSN's momentum default (the convention's SSN preset: 0.997 official), radius, variant, fixed sides."""
    return dict(
        _switch_norm_config(inputs, params),
        momentum=params.get("momentum"),
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
    return {**named, **_new_running_arrays(running)}


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


def _sparse_switch_norm_references() -> Iterator[Case]:
    seed = iter(range(6500, 7500))

    def case(name: str, note: str = "", conditioning: str = "", kink: str = "", ship: bool = False, **params: Any) -> Case:
        params.setdefault("normalizers", ("ln", "bn") if len(params["shape"]) == 2 else ("in", "ln", "bn"))
        params.setdefault("radius", 0.3)
        params.setdefault("logit_scale", 0.5)
        if not (kink or "mean_logits" in params or params.get("logits") == "equal"):
            # The large-offset cases start the finite differences with a 10 times larger step
            # (_gradcheck_options): their logits keep a margin 4 times larger.
            widen = 4.0 if _gradcheck_options(params) else 1.0
            params.setdefault("margin", widen * _MARGIN * params["logit_scale"])
        return Case("sparse_switch_norm", name, "reference", params, seed=next(seed), note=note, conditioning=conditioning,
                    kink=kink, ship=ship, gradcheck=_gradcheck_options(params))  # fmt: skip

    # Every rank, mode and convention, with the variant of the same name (SSN2d is official + official).
    for convention in ("paper", "official"):
        for mode, training in _modes():
            for rank, shape in _REFERENCE_SHAPES.items():
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
        for mode, training in _modes():
            yield case(f"{convention}-{mode}-steps1-2", shape=(3, 4, 3, 2), convention=convention, variant=variant, training=training,
                       radius=0.5, logit_scale=0.3, sphere_steps=(1, 2), note="mean ratios after one sphere step, variance ratios after two")  # fmt: skip
    # Fixed sides (the state the official SSN reaches): their logits are ignored and get no gradient.
    for convention, variant in (("paper", "paper"), ("official", "official")):
        for mode, training in _modes():
            yield case(f"{convention}-{mode}-fixed-mean", shape=(3, 4, 3, 2), convention=convention, variant=variant, training=training, fixed=(1, None))
            yield case(f"{convention}-{mode}-fixed-var", shape=(3, 4, 3, 2), convention=convention, variant=variant, training=training, fixed=(None, 2))
            yield case(f"{convention}-{mode}-fixed-both", shape=(3, 4, 3, 2), convention=convention, variant=variant, training=training, fixed=(0, 2))
    yield case("paper-train-2d-fixed-var", shape=(6, 3), fixed=(None, 1), note="(N, C) input: K = 2 (ln, bn), the variance fixed to BN")
    yield case("official-train-fixed-mean-r0.9", shape=(3, 4, 3, 2), convention="official", variant="official", fixed=(2, None), radius=0.9,
               note="one side fixed, the other reaches a vertex at this radius and becomes fixed too")  # fmt: skip
    one_hot = (0.0, 1.0, 0.0)
    yield case("official-train-one-hot-logits", shape=(3, 4, 3, 2), convention="official", variant="official", mean_logits=one_hot, var_logits=one_hot,
               radius=0.5, note=_ONE_HOT_LOGITS + "; both sides become fixed to LN", kink=_ONE_HOT_KINK, ship=True)  # fmt: skip
    yield case("official-train-one-hot-logits-fixed", shape=(3, 4, 3, 2), convention="official", variant="official", mean_logits=one_hot,
               var_logits=one_hot, radius=0.5, fixed=(1, 1), note="the state after fixing: one-hot logits, both sides fixed to LN (no ratio gradient)")  # fmt: skip
    # The official initialisation: equal logits. Smooth at r = 0; at r > 0 sparsemax is the centre.
    yield case("official-train-equal-logits-r0", shape=(3, 4, 3, 2), convention="official", variant="official", logits="equal", radius=0.0,
               note="logits ones(3), the official initialisation, at the first step of the schedule (r = 0): uniform ratios")  # fmt: skip
    yield case("official-train-equal-logits-r0.1", shape=(3, 4, 3, 2), convention="official", variant="official", logits="equal", radius=0.1,
               note="logits ones(3) at r > 0: sparsemax is the centre, where the official code divides by zero (NaN)", kink=_CENTRE_KINK, ship=True)  # fmt: skip
    yield case("paper-train-logits30", shape=(3, 4, 3, 2), logit_scale=30.0, note="logits of size ~30: sparsemax already a vertex, both sides become fixed")
    # Normalizer sets (K = 2, 4) and GN.
    yield case("paper-train-set-in-ln", shape=(3, 4, 3, 2), normalizers=("in", "ln"), radius=0.5, note="K = 2: a sphere step inside the edge has Jacobian 0")
    yield case("official-eval-set-in-ln-bn-gn", shape=(3, 4, 3, 2), normalizers=("in", "ln", "bn", "gn"), groups=2, convention="official",
               variant="official", training=False, radius=0.6, logit_scale=0.2)  # fmt: skip
    yield case("paper-train-set-gn-bn-ln-in", shape=(2, 4, 2, 3), normalizers=("gn", "bn", "ln", "in"), groups=4, radius=0.7, logit_scale=0.1,
               sphere_steps=(3, 2), note="K = 4 in another logit order, three and two sphere steps")  # fmt: skip
    # Edge cases from bug reports.
    hw1 = "H*W = 1 (N x C x 1 x 1): the official SSN returns NaN here (its IN variance is unbiased); paper convention"
    for mode, training in _modes():
        yield case(f"paper-{mode}-HW1", shape=(4, 3, 1, 1), training=training, note=hw1, ship=not training)
        yield case(f"paper-{mode}-batch1", shape=(1, 4, 3, 2), training=training, note="a batch of one: BN equals IN in training")
        yield case(f"official-{mode}-channels1", shape=(3, 1, 4, 2), convention="official", variant="official", training=training, note="one channel")
        yield case(f"paper-{mode}-2d-N1", shape=(1, 4), training=training, note="(1, C): BN over a single sample")
    yield case("paper-train-2d-C1", shape=(5, 1), note="(N, 1): LN over a single feature")
    yield case("official-train-H1", shape=(2, 3, 1, 5), convention="official", variant="official", note="size-1 height")
    # Logits of scale 1 here: the finite differences of the logits then take steps twice as large,
    # further above the rounding noise of a mean of 1e4 (some directional derivatives are ~1e-5).
    for convention, variant in (("paper", "paper"), ("official", "official")):
        for mode, training in _modes():
            yield case(f"{convention}-{mode}-offset1e4", shape=(3, 4, 3, 3), convention=convention, variant=variant, training=training, offset=1e4,
                       logit_scale=1.0, note="mean 1e4, std 1", conditioning=_LARGE_OFFSET, ship=convention == "official" and training)  # fmt: skip
    yield case("paper-train-eps1e-3", shape=(3, 4, 3, 2), eps=1e-3)
    yield case("official-train-ema0.997", shape=(3, 4, 2, 2, 2), running=True, momentum=0.997, convention="official", variant="official",
               note="official SSN momentum: the running statistics are updated in training")  # fmt: skip
    yield case("paper-train-ema-default", shape=(3, 4, 3, 2), running=True, note="no momentum given: the paper preset's 0.9")


def _sparse_switch_norm_errors() -> Iterator[Case]:
    base = dict(shape=(2, 4, 3, 3), normalizers=("in", "ln", "bn"), radius=0.3, logit_scale=0.5)

    def case(name: str, raises: type[Exception], match: str, edit: Any = None, note: str = "", **params: Any) -> Case:
        return Case("sparse_switch_norm", name, "error", {**base, **params}, raises=raises, match=match, edit=edit, note=note)

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
               edit=_replace("mean_logits", lambda w: w[None, :]))  # fmt: skip
    yield case("var-logits-length", ValueError, r"var_logits has shape \(4,\), expected one logit per normalizer",
               edit=_replace("var_logits", lambda w: np.append(w, 0.0)))  # fmt: skip
    yield case("mean-logits-integer", TypeError, r"mean_logits has dtype (\w+\.)?int64, expected a real floating dtype",
               edit=_replace("mean_logits", lambda w: np.round(w).astype(np.int64)))  # fmt: skip
    yield case("var-logits-nan", ValueError, r"var_logits contains NaN or infinity", edit=_replace("var_logits", _with_element(np.nan, (1,))))
    yield case("x-integer", TypeError, r"x has dtype (\w+\.)?int64, expected a real floating dtype", edit=_replace("x", lambda x: np.round(x).astype(np.int64)))
    yield case("gamma-shape", ValueError, r"gamma has shape \(5,\), expected \(C,\) = \(4,\)", edit=_replace("gamma", lambda g: np.append(g, 1.0)))
    yield case("official-HW1", ValueError, r"divides the instance variance by M - 1 = 0", shape=(4, 3, 1, 1), convention="official",
               note="the official SSN returns NaN here (SN issue #5); refnorm says why")  # fmt: skip
    yield case("eval-without-running", ValueError, r"evaluation mode with 'bn' in normalizers needs running statistics",
               training=False, edit=_drop("running_mean", "running_var"))  # fmt: skip
    yield case("momentum-above-1", ValueError, r"momentum must lie in \[0, 1\], got 1\.5", momentum=1.5)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

OPS: dict[str, OpInfo] = {
    op.name: op
    for op in (
        SWITCH_NORM,
        PLAIN_NORM,
        SPARSEMAX,
        SPARSESTMAX,
        SPARSE_SWITCH_NORM,
        EXEMPLAR_NORM,
        EN_EMBEDDING,
        EN_CHANNEL_CONV,
        EN_CHANNEL_MEAN,
        EN_STANDARDIZE,
        EN_SOFTMAX,
    )
}
"""Every op refnorm implements, by name."""

_CASE_SOURCES: tuple[Callable[[], Iterator[Case]], ...] = (
    _switch_norm_samples,
    _switch_norm_references,
    _switch_norm_errors,
    _plain_norm_samples,
    _plain_norm_references,
    _plain_norm_errors,
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
    _sparsemax_samples,
    _sparsemax_references,
    _sparsemax_errors,
    _sparsestmax_samples,
    _sparsestmax_references,
    _sparsestmax_errors,
    _sparse_switch_norm_samples,
    _sparse_switch_norm_references,
    _sparse_switch_norm_errors,
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
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise RuntimeError(f"the catalog has duplicate case ids {duplicates}")  # a bug in refnorm, not in the caller
    return selected
