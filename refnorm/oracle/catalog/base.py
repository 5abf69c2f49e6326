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
case source in ``_CASE_SOURCES``; nothing in :mod:`refnorm.oracle.golden` or :mod:`refnorm.testing`
names an op. ``docs/golden-format.md`` lists what an op must provide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ops.linearized import Linearized
from ...ops.running import RunningStats


KINDS = ("sample", "reference", "error")

OPS: dict[str, OpInfo] = {}
"""Every op refnorm implements, by name (filled by :mod:`refnorm.oracle.catalog` from the op families' modules)."""


@dataclass(frozen=True)
class OpInfo:
    """How to draw inputs for, and evaluate, one op.

    ``make_inputs(rng, params)`` returns host float64 arrays by name: the differentiable
    ``arguments`` (in order) and any state the op needs (e.g. running statistics).
    ``linearize(inputs, params)`` evaluates the op at ``inputs`` (arrays of any backend, same
    names) and returns its :class:`~refnorm.ops.linearized.Linearized`.
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
    (:data:`refnorm.oracle.golden.SELECTIONS`). Every ``"sample"`` and ``"error"`` case is shipped anyway."""

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


def _explicit(values: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Explicit input values of a case (ties, one-hot logits, the SparsestMax centre) as float64 of ``shape``."""
    return np.reshape(np.asarray(values, dtype=np.float64), shape)
