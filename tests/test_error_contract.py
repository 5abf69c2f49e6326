"""One error contract for the whole public API (issue 10, "holes in validation").

Every callable in ``refnorm.__all__`` and ``refnorm.testing.__all__`` raises ``TypeError`` (wrong
kind: not an array, ``None``, a Python scalar, an integer or complex dtype, two libraries, two
dtypes, the wrong container) or ``ValueError`` (wrong shape or value: rank, length, an empty axis,
NaN or infinity, a number out of range, an unknown option), whose message names the argument and
what was expected; nothing else escapes (no ``AttributeError``, ``IndexError``, ``KeyError``, no
NumPy broadcasting error), nothing is returned half-computed and no input is mutated.

* ``ERROR_TABLE``: the named bad inputs, at least one per argument of every public callable, with
  the exact exception and message; ``test_the_error_table_covers_every_argument_of_every_public_callable``
  fails when a public callable or an argument has no row (so a new public function needs one).
* ``test_every_argument_rejects_every_class_of_bad_value``: a sweep of every argument of every
  subject through the generic classes of bad values (``corruptions``): the contract holds for every
  call (a clean, named error, or a finite result), and no argument is mutated.
* ``test_random_bad_calls_keep_the_contract``: hypothesis draws one or two arguments and their
  corruptions at once.
"""

from __future__ import annotations

import collections
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from typing import Any

import array_api_compat
import array_api_strict
import hypothesis.strategies as st
import numpy as np
import pytest
from contract_calls import (
    RESULT_TYPES,
    SHAPE,
    VALID,
    C,
    N,
    en_cache,
    en_params,
    layer_arrays,
    plain_cache,
    sn_cache,
    stages,
    valid_call,
)
from hypothesis import given, settings

import refnorm
import refnorm.testing as kit
from refnorm._xp import to_numpy
from refnorm.oracle.conformance import ConformanceError

try:
    import torch
except ImportError:  # the README's test command runs without PyTorch: its rows skip, with the reason
    torch = None


def _public() -> dict[str, Any]:
    """Every public callable, by name: ``refnorm.__all__`` and ``refnorm.testing.__all__``."""
    found = {}
    for module in (refnorm, kit):
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value):
                found[name] = value
    return found


PUBLIC = _public()


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class From:
    """A bad value made from the argument's valid value (``From(lambda x: x[:0])``)."""

    make: Callable[[Any], Any]


@dataclass(frozen=True)
class Row:
    subject: str
    argument: str
    label: str
    value: Any
    raises: type[BaseException]
    match: str

    @property
    def id(self) -> str:
        return f"{self.subject}-{self.argument}-{self.label}"


ERROR_TABLE: list[Row] = []


def bad(subject: str, argument: str, label: str, value: Any, raises: type[BaseException], match: str) -> None:
    ERROR_TABLE.append(Row(subject, argument, label, value, raises, match))


def with_nan(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flat[0] = np.nan
    return a


def with_inf(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flat[-1] = np.inf
    return a


TORCH = "a torch array"
LIST = [1.0, 2.0]
A_ARRAY = r"must be an array \(NumPy, CuPy, array-api-strict, PyTorch, \.\.\.\)"

# --- arrays of a layer (SN, SSN, the plain normalizers, EN, SyncSN): the same rows for each
LAYERS = ("switch_norm_forward", "sparse_switch_norm_forward", "plain_norm_forward", "exemplar_norm_forward", "switch_norm_linearize",
          "sparse_switch_norm_linearize", "plain_norm_linearize", "exemplar_norm_linearize")  # fmt: skip
for layer in LAYERS:
    others = "gamma, beta, conv_weight, conv_bias, temperature" if "exemplar" in layer else "gamma, beta" + (
        "" if "plain" in layer else ", mean_logits, var_logits")
    bad(layer, "x", "list", [[1.0, 2.0]], TypeError, rf"x {A_ARRAY}, got list")
    bad(layer, "x", "None", None, TypeError, r"x must be an array .*, got None")
    bad(layer, "x", "python-float", 2.5, TypeError, r"x must be an array .*, got float \(2\.5\)")
    bad(layer, "x", "integer", From(lambda x: np.round(x).astype(np.int64)), TypeError, r"x has dtype int64, expected a real floating dtype")
    bad(layer, "x", "complex", From(lambda x: x.astype(np.complex128)), TypeError, r"x has dtype complex128, expected a real floating")
    bad(layer, "x", "rank1", From(lambda x: x[0, :, 0, 0]), ValueError, r"x has shape \(4,\), expected \(N, C, \*spatial\) with rank >= 2")
    bad(layer, "x", "empty-axis", From(lambda x: x[:0]), ValueError, r"x has shape \(0, 4, 2, 2\), expected every axis to have size >= 1")
    bad(layer, "x", "torch", From(lambda x: torch.from_numpy(x)), TypeError, rf"x is a torch array; {others} are numpy arrays: the array arguments must all come from one array library")  # fmt: skip
    bad(layer, "x", "float32", From(lambda x: x.astype(np.float32)), TypeError, r"gamma has dtype float64, expected float32 \(the dtype of x\)")
    bad(layer, "x", "nan", From(with_nan), ValueError, r"x contains NaN or infinity")
    bad(layer, "x", "too-large", From(lambda x: x * 1e300), ValueError, r"x contains NaN or infinity, or values so large \(or so far apart\) that a mean or variance overflows float64")  # fmt: skip
    bad(layer, "x", "far-apart", From(lambda x: x + 3e154 * (np.arange(x.size).reshape(x.shape) < 4)), ValueError, r"x has values so far apart that the (BN|LN) variance overflows float64")  # fmt: skip
    bad(layer, "gamma", "length", np.ones(5), ValueError, r"gamma has shape \(5,\), expected \(C,\) = \(4,\)")
    bad(layer, "gamma", "float32", np.ones(C, np.float32), TypeError, r"gamma has dtype float32, expected float64 \(the dtype of x\); refnorm does not mix precisions")  # fmt: skip
    bad(layer, "gamma", "inf", From(with_inf), ValueError, r"gamma contains NaN or infinity")
    bad(layer, "gamma", "None", None, TypeError, r"gamma must be an array .*, got None")
    bad(layer, "gamma", "strict", array_api_strict.ones(C, dtype=array_api_strict.float64), TypeError, r"gamma is an array_api_strict array")
    bad(layer, "beta", "rank2", np.zeros((1, C)), ValueError, r"beta has shape \(1, 4\), expected \(C,\) = \(4,\)")
    bad(layer, "beta", "list", [0.0] * C, TypeError, r"beta must be an array .*, got list")
    bad(layer, "beta", "nan", From(with_nan), ValueError, r"beta contains NaN or infinity")
LOGIT_LAYERS = ("switch_norm_forward", "sparse_switch_norm_forward", "switch_norm_linearize", "sparse_switch_norm_linearize",
                "switch_norm_sharded_forward")  # fmt: skip
for layer in LOGIT_LAYERS:
    for side in ("mean_logits", "var_logits"):
        bad(layer, side, "length", np.zeros(2), ValueError, rf"{side} has shape \(2,\), expected one logit per normalizer")
        bad(layer, side, "rank2", np.zeros((1, 3)), ValueError, rf"{side} has shape \(1, 3\), expected \(K,\), one logit per normalizer")
        bad(layer, side, "nan", From(with_nan), ValueError, rf"{side} contains NaN or infinity")
        bad(layer, side, "integer", np.zeros(3, np.int64), TypeError, rf"{side} has dtype int64, expected a real floating dtype")
        bad(layer, side, "python-tuple", (0.0, 0.0, 0.0), TypeError, rf"{side} must be an array .*, got tuple")
for layer in ("exemplar_norm_forward", "exemplar_norm_linearize"):
    bad(layer, "conv_weight", "even", np.zeros(2), ValueError, r"the kernel size of conv_weight = 2 is even; expected an odd kernel size q")
    bad(layer, "conv_weight", "rank3", np.zeros((1, 1, 3)), ValueError, r"conv_weight has shape \(1, 1, 3\), expected \(q,\)")
    bad(layer, "conv_weight", "larger-than-C", np.zeros(5), ValueError, r"= 5 is larger than the C = 4 channels")
    bad(layer, "conv_weight", "inf", From(with_inf), ValueError, r"conv_weight contains NaN or infinity")
    bad(layer, "conv_bias", "shape", np.zeros(1), ValueError, r"conv_bias has shape \(1,\), expected a scalar, shape = \(\)")
    bad(layer, "conv_bias", "python-float", 0.5, TypeError, r"conv_bias must be an array .*, got float \(0\.5\)")
    bad(layer, "temperature", "nan", np.asarray(np.nan), ValueError, r"temperature contains NaN or infinity")
    bad(layer, "temperature", "shape", np.ones(3), ValueError, r"temperature has shape \(3,\), expected a scalar, shape = \(\)")
    bad(layer, "temperature", "float32", np.asarray(1.0, np.float32), TypeError, r"temperature has dtype float32, expected float64")

# --- options of a layer
FORWARDS = ("switch_norm_forward", "sparse_switch_norm_forward", "plain_norm_forward", "exemplar_norm_forward", "switch_norm_sharded_forward")
for layer in FORWARDS:
    like = "xs\\[0\\]" if "sharded" in layer else "x"
    bad(layer, "running", "tuple", (np.zeros(C), np.ones(C)), TypeError, r"running must be RunningStats or BatchAverage, got tuple; build one from a \(mean, var\) pair with refnorm\.RunningStats\(mean, var\)")  # fmt: skip
    bad(layer, "running", "mean-length", refnorm.RunningStats(np.zeros(3), np.ones(3)), ValueError, r"running\.mean has shape \(3,\), expected \(C,\) = \(4,\)")
    bad(layer, "running", "var-negative", refnorm.RunningStats(np.zeros(C), -np.ones(C)), ValueError, r"running\.var has a negative entry \(-1\.0\); expected every entry >= 0")  # fmt: skip
    bad(layer, "running", "mean-nan", refnorm.RunningStats(np.full(C, np.nan), np.ones(C)), ValueError, r"running\.mean contains NaN or infinity")
    bad(layer, "running", "float32", refnorm.RunningStats(np.zeros(C, np.float32), np.ones(C, np.float32)), TypeError, rf"running\.mean has dtype float32, expected float64 \(the dtype of {like}\)")  # fmt: skip
    bad(layer, "running", "torch", From(lambda _: refnorm.RunningStats(torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64))), TypeError, rf"{like} is a numpy array; running\.mean, running\.var are torch arrays")  # fmt: skip
    bad(layer, "running", "count-negative", refnorm.BatchAverage(-1, np.zeros(C), np.zeros(C), np.zeros(C)), ValueError, r"running\.count must be an int >= 0, got -1")  # fmt: skip
    bad(layer, "running", "count-float", refnorm.BatchAverage(1.5, np.zeros(C), np.zeros(C), np.zeros(C)), TypeError, r"running\.count must be an int, got float \(1\.5\)")  # fmt: skip
    bad(layer, "running", "spread-negative", refnorm.BatchAverage(1, np.zeros(C), -np.ones(C), np.zeros(C)), ValueError, r"running\.spread has a negative entry")  # fmt: skip
    bad(layer, "training", "string", "yes", TypeError, r"training must be a bool, got str \('yes'\)")
    bad(layer, "training", "int", 1, TypeError, r"training must be a bool, got int \(1\)")
    bad(layer, "convention", "unknown", "pytorch", ValueError, r"unknown convention 'pytorch'; expected one of 'paper', 'official'")
    bad(layer, "convention", "None", None, TypeError, r"convention must be a str, one of 'paper', 'official'; got None")
    bad(layer, "groups", "without-gn", 2, ValueError, r"groups = 2 was given but 'gn' is not in normalizers")
    bad(layer, "eps", "zero", 0, ValueError, r"eps must be a finite number > 0, got 0")
    bad(layer, "eps", "string", "1e-5", TypeError, r"eps must be a Python number, got str \('1e-5'\)")
    bad(layer, "eps", "nan", float("nan"), ValueError, r"eps must be a finite number > 0, got nan")
    bad(layer, "eps", "below-float64-bound", 1e-310, ValueError, r"eps = 1e-310 is too small for float64: expected eps >= 1\.26e-205 \(\(finfo\.max / 8\) \*\* \(-2/3\)\)")  # fmt: skip
    bad(layer, "eps", "array", np.asarray(1e-5), TypeError, r"eps must be a Python number, got ndarray")
    bad(layer, "momentum", "above-1", 1.5, ValueError, r"momentum must lie in \[0, 1\], got 1\.5")
    bad(layer, "momentum", "string", "0.9", TypeError, r"momentum must be a Python number, got str")
    bad(layer, "check_finite", "string", "no", TypeError, r"check_finite must be a bool, got str \('no'\)")
    if layer != "plain_norm_forward":
        bad(layer, "normalizers", "string", "in", TypeError, r"normalizers must be a sequence of names such as \('in', 'ln', 'bn'\), got 'in'")
        bad(layer, "normalizers", "empty", (), ValueError, r"normalizers is empty")
        bad(layer, "normalizers", "unknown", ("in", "xn"), ValueError, r"unknown normalizer 'xn'; expected one of 'in', 'ln', 'bn', 'gn'")
        bad(layer, "normalizers", "numbers", (1, 2), TypeError, r"normalizers must hold names such as 'in', 'ln', 'bn', 'gn'; got int \(1\)")
        bad(layer, "normalizers", "repeated", ("in", "in"), ValueError, r"repeats a name")
        bad(layer, "groups", "string", "2", TypeError, r"groups must be a positive int, got str \('2'\)")
        bad(layer, "groups", "not-dividing", 3, ValueError, r"normalizers include 'gn' but groups|groups = 3 was given but 'gn' is not in normalizers")
for layer in ("switch_norm_forward", "switch_norm_sharded_forward"):
    bad(layer, "mean_ratio", "string", "softmax", TypeError, r"mean_ratio must be a ratio function \(forward/vjp/jvp/hvp/active_set\), got str")
    bad(layer, "mean_ratio", "fixed-length", refnorm.FixedRatios((0.5, 0.5)), ValueError, r"logits have 3 entries, expected 2 for mean_ratio")
    bad(layer, "var_ratio", "None", None, TypeError, r"var_ratio must be a ratio function")
bad("switch_norm_forward", "x", "channels-last", From(lambda x: np.moveaxis(x, 1, -1)[:, :, :1]), ValueError, r"gamma has shape \(4,\), expected \(C,\) = \(2,\); x has shape \(3, 2, 1, 4\) and refnorm expects channels first, \(N, C, \*spatial\): if x is channels-last \(N, \*spatial, C\), move its channels to axis 1 first \(xp\.permute_dims\(x, \(0, 3, 1, 2\)\)\)")  # fmt: skip
bad("switch_norm_forward", "training", "eval-without-running", False, ValueError, r"evaluation mode with 'bn' in normalizers needs running statistics; got running=None\. Pass the running state a training call returned, or start from refnorm\.initial_running_stats\(C, x\) \(C = 4\)")  # fmt: skip
bad("switch_norm_forward", "training", "eval-with-accumulator", False, ValueError, r"running is a BatchAverage accumulator; call refnorm\.finalize\(running\) before evaluation")  # fmt: skip
for layer in ("sparse_switch_norm_forward", "sparse_switch_norm_linearize"):
    bad(layer, "radius", "negative", -0.5, ValueError, r"radius must be a finite number >= 0, got -0\.5")
    bad(layer, "radius", "string", "0.3", TypeError, r"radius must be a Python number, got str")
    bad(layer, "variant", "unknown", "sparse", ValueError, r"unknown variant 'sparse'; expected one of 'paper', 'official'")
    bad(layer, "variant", "None", None, TypeError, r"variant must be a str")
    bad(layer, "fixed", "tuple", (0, None), TypeError, r"fixed must be a FixedSides, got tuple; build one with refnorm\.FixedSides\(mean=\.\.\., var=\.\.\.\)")
    bad(layer, "fixed", "index-3", refnorm.FixedSides(mean=3), ValueError, r"fixed\.mean = 3, expected None or a normalizer index in \[0, 3\)")
    bad(layer, "momentum", "negative", -0.1, ValueError, r"momentum must lie in \[0, 1\], got -0\.1")
    bad(layer, "convention", "unknown", "pytorch", ValueError, r"unknown convention 'pytorch'")
bad("sparse_switch_norm_forward", "normalizers", "one-normalizer", ("bn",), ValueError, r"mean_logits has shape \(1,\), expected \(\.\.\., K\) with K >= 2: the mean ratios come from SparsestMax, which needs at least two normalizers \(normalizers = \('bn',\)\); for a single normalizer use refnorm\.plain_norm_forward")  # fmt: skip
bad("sparse_switch_norm_forward", "normalizers", "one-normalizer-mean-fixed", ("bn",), ValueError, r"var_logits has shape \(1,\), expected \(\.\.\., K\) with K >= 2: the var ratios come from SparsestMax")  # fmt: skip
bad("plain_norm_forward", "normalizer", "tuple", ("in", "ln"), TypeError, r"normalizer must be one name such as 'bn', got \('in', 'ln'\); for a mixture use switch_norm")  # fmt: skip
bad("plain_norm_forward", "normalizer", "unknown", "bm", ValueError, r"unknown normalizer 'bm'")
bad("plain_norm_forward", "groups", "without-gn", 3, ValueError, r"groups = 3 was given but 'gn' is not in normalizers")
bad("exemplar_norm_forward", "mixing", "unknown", "both", ValueError, r"unknown mixing 'both'; expected one of 'output', 'statistics'")
bad("exemplar_norm_forward", "mixing", "None", None, TypeError, r"mixing must be a str")
for layer in ("switch_norm_linearize", "plain_norm_linearize", "exemplar_norm_linearize", "sparse_switch_norm_linearize"):
    bad(layer, "config", "unknown-option", {"bogus": 1}, TypeError, r"unexpected keyword argument 'bogus'")
bad("plain_norm_linearize", "config", "normalizer-None", {"normalizer": None}, TypeError, r"normalizer must be one name such as 'bn', got None")

# --- SyncSN
bad("switch_norm_sharded_forward", "xs", "empty", [], TypeError, r"xs must be a non-empty sequence of arrays \(one per shard\)")
bad("switch_norm_sharded_forward", "xs", "one-array", From(lambda xs: xs[0]), TypeError, r"xs must be a non-empty sequence of arrays")
bad("switch_norm_sharded_forward", "xs", "shapes-differ", From(lambda xs: [xs[0], xs[1][:, :, :1]]), ValueError, r"xs\[1\] has shape \(2, 4, 1, 2\), expected \(N_i, \*\(4, 2, 2\)\) like xs\[0\]")  # fmt: skip
bad("switch_norm_sharded_forward", "xs", "torch-shard", From(lambda xs: [xs[0], torch.from_numpy(xs[1])]), TypeError, r"xs\[1\] is a torch array")  # fmt: skip
bad("switch_norm_sharded_forward", "xs", "nan", From(lambda xs: [xs[0], with_nan(xs[1])]), ValueError, r"xs\[1\] contains NaN or infinity")
bad("switch_norm_sharded_forward", "xs", "float32-shard", From(lambda xs: [xs[0], xs[1].astype(np.float32)]), TypeError, r"xs\[1\] has dtype float32, expected float64 \(the dtype of xs\[0\]\)")  # fmt: skip
for name in ("gamma", "beta", "mean_logits", "var_logits"):
    bad("switch_norm_sharded_forward", name, "None", None, TypeError, rf"{name} must be an array .*, got None")
bad("switch_norm_sharded_forward", "gamma", "length", np.ones(5), ValueError, r"gamma has shape \(5,\), expected \(C,\) = \(4,\)")

# --- backwards
for backward, forward, cache_type in (
    ("switch_norm_backward", "switch_norm_forward", "SwitchNormCache"),
    ("sparse_switch_norm_backward", "switch_norm_forward", "SwitchNormCache"),
    ("plain_norm_backward", "switch_norm_forward", "SwitchNormCache"),
    ("exemplar_norm_backward", "exemplar_norm_forward", "ExemplarNormCache"),
):
    bad(backward, "dy", "None", None, TypeError, r"dy must be an array .*, got None")
    bad(backward, "dy", "list", LIST, TypeError, r"dy must be an array .*, got list")
    bad(backward, "dy", "shape", np.ones((N, C, 4)), ValueError, r"dy has shape \(3, 4, 4\), expected the output's shape = \(3, 4, 2, 2\)")
    bad(backward, "dy", "broadcastable", np.ones((1, C, 2, 2)), ValueError, r"dy has shape \(1, 4, 2, 2\), expected the output's shape")
    bad(backward, "dy", "float32", np.ones(SHAPE, np.float32), TypeError, r"dy has dtype float32, expected float64 \(the dtype of the output\)")
    bad(backward, "dy", "nan", From(with_nan), ValueError, r"dy contains NaN or infinity, or values so large that its sum over the batch and space overflows float64; refnorm needs finite inputs")  # fmt: skip
    bad(backward, "dy", "sum-overflows", From(lambda d: np.full_like(d, 1e308)), ValueError, r"dy contains NaN or infinity, or values so large that its sum over the batch and space overflows float64")  # fmt: skip
    bad(backward, "dy", "inf", From(with_inf), ValueError, r"dy contains NaN or infinity")
    bad(backward, "dy", "torch", From(lambda _: torch.ones(SHAPE, dtype=torch.float64)), TypeError, r"dy is a torch array; the forward's cache is a numpy array")
    bad(backward, "dy", "integer", np.ones(SHAPE, np.int64), TypeError, r"dy has dtype int64, expected a real floating dtype")
    bad(backward, "cache", "None", None, TypeError, rf"cache must be the {cache_type} that {forward} returns, got None")
    bad(backward, "cache", "tuple", (1, 2), TypeError, rf"cache must be the {cache_type} that {forward} returns, got tuple")
other_cache = {"SwitchNormCache": en_cache, "ExemplarNormCache": sn_cache}
bad("switch_norm_backward", "cache", "en-cache", From(lambda c: en_cache()), TypeError, r"cache must be the SwitchNormCache that switch_norm_forward returns, got ExemplarNormCache")  # fmt: skip
bad("exemplar_norm_backward", "cache", "sn-cache", From(lambda c: sn_cache()), TypeError, r"cache must be the ExemplarNormCache that exemplar_norm_forward returns, got SwitchNormCache")  # fmt: skip
bad("switch_norm_backward", "cache", "whole-output", From(lambda c: refnorm.SwitchNormOutput(np.ones(SHAPE), c, None)), TypeError, r"got SwitchNormOutput; pass its \.cache \(switch_norm_forward returns y, cache, \.\.\.\)")  # fmt: skip
bad("switch_norm_sharded_backward", "dys", "not-a-sequence", From(lambda d: d[0]), TypeError, r"dys must be a sequence of arrays \(one per shard\), got ndarray")
bad("switch_norm_sharded_backward", "dys", "too-few", From(lambda d: d[:1]), ValueError, r"dys has 1 shards, expected 2 \(one per forward shard\)")
bad("switch_norm_sharded_backward", "dys", "nan", From(lambda d: [d[0], with_nan(d[1])]), ValueError, r"dys\[1\] contains NaN or infinity")
bad("switch_norm_sharded_backward", "dys", "shape", From(lambda d: [d[0], d[1][:1]]), ValueError, r"dys\[1\] has shape \(1, 4, 2, 2\), expected the output's shape = \(2, 4, 2, 2\)")  # fmt: skip
bad("switch_norm_sharded_backward", "cache", "sn-cache", From(lambda c: sn_cache()), TypeError, r"cache must be the ShardedSwitchNormCache that switch_norm_sharded_forward returns, got SwitchNormCache")  # fmt: skip

# --- caches and stages edited by hand: their fields' types are checked
for field, value, expected in (("centered", None, "an array"), ("gamma", LIST, "an array"), ("mixture", None, "MixedStatistics"),
                               ("layout", "x", "Layout"), ("shape", None, r"tuple\[int, \.\.\.\]"), ("config", None, "SwitchNormConfig")):  # fmt: skip
    bad("SwitchNormCache", field, "junk", value, TypeError, rf"cache\.{field} must be {expected}, got")
for field, value, expected in (("centered", None, "an array"), ("gamma", None, "an array"), ("branches", None, "Branches"),
                               ("generator", (1,), "RatioGenerator"), ("mixture", 1.0, "MixedBranches"), ("layout", None, "Layout"),
                               ("shape", "x", r"tuple\[int, \.\.\.\]"), ("config", None, "ExemplarNormConfig")):  # fmt: skip
    bad("ExemplarNormCache", field, "junk", value, TypeError, rf"cache\.{field} must be {expected}, got")
bad("SwitchNormCache", "mixture", "nested-junk", From(lambda m: m._replace(inv_std=None)), TypeError, r"cache\.mixture\.inv_std must be an array, got None")
for field, value, expected in (("stages", None, r"tuple\["), ("vertex", None, "an array"), ("degenerate", LIST, "an array"),
                               ("radius", "0.3", "float"), ("variant", None, "str")):  # fmt: skip
    bad("SparsestMaxStages", field, "junk", value, TypeError, rf"stages\.{field} must be {expected}")

# --- forward mode and second order (issue 15): tangents, the HVPs' upstream gradient, their caches
SECOND = {  # function: (its tangents' container, the forward whose cache it takes, the cache's type)
    "switch_norm_jvp": ("SwitchNormGrads", "switch_norm_forward", "SwitchNormCache"),
    "sparse_switch_norm_jvp": ("SwitchNormGrads", "sparse_switch_norm_forward", "SwitchNormCache"),
    "plain_norm_jvp": ("PlainNormGrads", "plain_norm_forward", "SwitchNormCache"),
    "exemplar_norm_jvp": ("ExemplarNormGrads", "exemplar_norm_forward", "ExemplarNormCache"),
    "switch_norm_hvp": ("SwitchNormGrads", "switch_norm_forward", "SwitchNormCache"),
    "sparse_switch_norm_hvp": ("SwitchNormGrads", "sparse_switch_norm_forward", "SwitchNormCache"),
    "plain_norm_hvp": ("PlainNormGrads", "plain_norm_forward", "SwitchNormCache"),
}
WRONG_CONTAINER = {  # another op's gradients as the tangents: the fields it lacks or adds, named
    "SwitchNormGrads": (lambda t: refnorm.PlainNormGrads(t.dx, t.dgamma, t.dbeta), r"PlainNormGrads with no dmean_logits, dvar_logits"),
    "PlainNormGrads": (lambda t: refnorm.SwitchNormGrads(t.dx, t.dgamma, t.dbeta, np.zeros(1), np.zeros(1)), r"SwitchNormGrads with an extra dmean_logits, dvar_logits"),  # fmt: skip
    "ExemplarNormGrads": (lambda t: refnorm.SwitchNormGrads(t.dx, t.dgamma, t.dbeta, np.zeros(3), np.zeros(3)),
                          r"SwitchNormGrads with no dconv_weight, dconv_bias, dtemperature and an extra dmean_logits, dvar_logits"),
}  # fmt: skip
for function, (container, forward, cache_type) in SECOND.items():
    fields = getattr(refnorm, container)._fields
    expected = rf"tangents must be an? {container} holding one tangent per differentiable argument of {function} \({', '.join(fields)}\), got"
    bad(function, "tangents", "None", None, TypeError, rf"{expected} None")
    bad(function, "tangents", "tuple", From(tuple), TypeError, rf"{expected} tuple")
    bad(function, "tangents", "list", From(list), TypeError, rf"{expected} list")
    bad(function, "tangents", "dict", From(lambda t: t._asdict()), TypeError, rf"{expected} dict; build one with {container}\(\*\*\{{\.\.\.\}}\)")
    bad(function, "tangents", "another-ops-gradients", From(WRONG_CONTAINER[container][0]), TypeError, rf"{expected} {WRONG_CONTAINER[container][1]}")
    bad(function, "tangents", "dx-broadcastable", From(lambda t: t._replace(dx=t.dx[:1])), ValueError, r"tangents\.dx has shape \(1, 4, 2, 2\), expected the shape of its argument = \(3, 4, 2, 2\)")  # fmt: skip
    bad(function, "tangents", "dx-flattened", From(lambda t: t._replace(dx=t.dx.reshape(N, -1))), ValueError, r"tangents\.dx has shape \(3, 16\), expected the shape of its argument = \(3, 4, 2, 2\)")  # fmt: skip
    bad(function, "tangents", "dx-float32", From(lambda t: t._replace(dx=t.dx.astype(np.float32))), TypeError, r"tangents\.dx has dtype float32, expected float64 \(the dtype of the forward's arguments\); refnorm does not mix precisions")  # fmt: skip
    bad(function, "tangents", "dx-integer", From(lambda t: t._replace(dx=np.ones(SHAPE, np.int64))), TypeError, r"tangents\.dx has dtype int64, expected a real floating dtype")  # fmt: skip
    bad(function, "tangents", "dx-complex", From(lambda t: t._replace(dx=t.dx.astype(complex))), TypeError, r"tangents\.dx has dtype complex128, expected a real floating dtype")  # fmt: skip
    bad(function, "tangents", "dx-nan", From(lambda t: t._replace(dx=with_nan(t.dx))), ValueError, r"tangents\.dx contains NaN or infinity; refnorm needs finite inputs")  # fmt: skip
    bad(function, "tangents", "dx-inf", From(lambda t: t._replace(dx=with_inf(t.dx))), ValueError, r"tangents\.dx contains NaN or infinity")
    bad(function, "tangents", "dx-torch", From(lambda t: t._replace(dx=torch.from_numpy(t.dx))), TypeError, r"tangents\.dx is a torch array; tangents\.dgamma, .*the forward's cache are numpy arrays: the array arguments must all come from one array library")  # fmt: skip
    bad(function, "tangents", "dx-strict", From(lambda t: t._replace(dx=array_api_strict.asarray(t.dx))), TypeError, r"tangents\.dx is an array_api_strict array")  # fmt: skip
    bad(function, "tangents", "dgamma-length", From(lambda t: t._replace(dgamma=np.ones(5))), ValueError, r"tangents\.dgamma has shape \(5,\), expected the shape of its argument = \(4,\)")  # fmt: skip
    bad(function, "tangents", "dgamma-scalar", From(lambda t: t._replace(dgamma=np.asarray(1.0))), ValueError, r"tangents\.dgamma has shape \(\), expected the shape of its argument = \(4,\)")  # fmt: skip
    bad(function, "tangents", "dgamma-None", From(lambda t: t._replace(dgamma=None)), TypeError, rf"tangents\.dgamma {A_ARRAY}, got None")
    bad(function, "tangents", "dbeta-list", From(lambda t: t._replace(dbeta=[0.0] * C)), TypeError, r"tangents\.dbeta must be an array .*, got list")
    bad(function, "tangents", "dbeta-inf", From(lambda t: t._replace(dbeta=with_inf(t.dbeta))), ValueError, r"tangents\.dbeta contains NaN or infinity")
    bad(function, "tangents", "dbeta-python-float", From(lambda t: t._replace(dbeta=0.5)), TypeError, r"tangents\.dbeta must be an array .*, got float \(0\.5\)")
    if container == "SwitchNormGrads":
        for side in ("dmean_logits", "dvar_logits"):
            bad(function, "tangents", f"{side}-length", From(lambda t, side=side: t._replace(**{side: np.zeros(2)})), ValueError, rf"tangents\.{side} has shape \(2,\), expected the shape of its argument = \(3,\)")  # fmt: skip
            bad(function, "tangents", f"{side}-nan", From(lambda t, side=side: t._replace(**{side: with_nan(getattr(t, side))})), ValueError, rf"tangents\.{side} contains NaN or infinity")  # fmt: skip
            bad(function, "tangents", f"{side}-float32", From(lambda t, side=side: t._replace(**{side: getattr(t, side).astype(np.float32)})), TypeError, rf"tangents\.{side} has dtype float32, expected float64")  # fmt: skip
        # a cache of one normalizer (the plain normalizers') has one logit per side
        bad(function, "cache", "plain-cache", From(lambda c: plain_cache()), ValueError, r"tangents\.dmean_logits has shape \(3,\), expected the shape of its argument = \(1,\)")  # fmt: skip
    if container == "ExemplarNormGrads":
        bad(function, "tangents", "dconv_weight-length", From(lambda t: t._replace(dconv_weight=np.zeros(5))), ValueError, r"tangents\.dconv_weight has shape \(5,\), expected the shape of its argument = \(3,\)")  # fmt: skip
        bad(function, "tangents", "dconv_bias-shape", From(lambda t: t._replace(dconv_bias=np.zeros(1))), ValueError, r"tangents\.dconv_bias has shape \(1,\), expected the shape of its argument = \(\)")  # fmt: skip
        bad(function, "tangents", "dconv_bias-python-float", From(lambda t: t._replace(dconv_bias=0.5)), TypeError, r"tangents\.dconv_bias must be an array .*, got float \(0\.5\)")  # fmt: skip
        bad(function, "tangents", "dtemperature-nan", From(lambda t: t._replace(dtemperature=np.asarray(np.nan))), ValueError, r"tangents\.dtemperature contains NaN or infinity")  # fmt: skip
        bad(function, "tangents", "dtemperature-float32", From(lambda t: t._replace(dtemperature=np.asarray(1.0, np.float32))), TypeError, r"tangents\.dtemperature has dtype float32, expected float64")  # fmt: skip
    needs = rf"cache must be the {cache_type} that {forward} returns, got"
    bad(function, "cache", "None", None, TypeError, rf"{needs} None")
    bad(function, "cache", "tuple", From(tuple), TypeError, rf"{needs} tuple")
    bad(function, "cache", "stages", From(lambda c: stages()), TypeError, rf"{needs} SparsestMaxStages")
    output = refnorm.ExemplarNormOutput if cache_type == "ExemplarNormCache" else refnorm.SwitchNormOutput
    bad(function, "cache", "whole-output", From(lambda c, output=output: output(np.ones(SHAPE), c, None)), TypeError, rf"{needs} {output.__name__}; pass its \.cache \({forward} returns y, cache, \.\.\.\)")  # fmt: skip
    if cache_type == "ExemplarNormCache":
        bad(function, "cache", "sn-cache", From(lambda c: sn_cache()), TypeError, rf"{needs} SwitchNormCache$")
        bad(function, "cache", "edited", From(lambda c: c._replace(generator=None)), TypeError, r"cache\.generator must be RatioGenerator, got None")
    else:
        refused = r": refnorm defines no second order for EN \(docs/sn-jvp-hvp\.md says why\); EN's forward mode is exemplar_norm_jvp"
        bad(function, "cache", "en-cache", From(lambda c: en_cache()), TypeError, rf"{needs} ExemplarNormCache" + (refused if function.endswith("hvp") else "$"))
        bad(function, "cache", "edited", From(lambda c: c._replace(mixture=None)), TypeError, r"cache\.mixture must be MixedStatistics, got None")
        bad(function, "cache", "nested-edited", From(lambda c: c._replace(mixture=c.mixture._replace(inv_std=None))), TypeError, r"cache\.mixture\.inv_std must be an array, got None")  # fmt: skip
    if function.endswith("hvp"):  # the upstream gradient, as every backward checks it
        bad(function, "dy", "None", None, TypeError, r"dy must be an array .*, got None")
        bad(function, "dy", "list", LIST, TypeError, rf"dy {A_ARRAY}, got list")
        bad(function, "dy", "shape", np.ones((N, C, 4)), ValueError, r"dy has shape \(3, 4, 4\), expected the output's shape = \(3, 4, 2, 2\)")
        bad(function, "dy", "broadcastable", np.ones((1, C, 1, 1)), ValueError, r"dy has shape \(1, 4, 1, 1\), expected the output's shape = \(3, 4, 2, 2\)")
        bad(function, "dy", "float32", np.ones(SHAPE, np.float32), TypeError, r"dy has dtype float32, expected float64 \(the dtype of the output\)")
        bad(function, "dy", "nan", From(with_nan), ValueError, r"dy contains NaN or infinity; refnorm needs finite inputs")
        bad(function, "dy", "inf", From(with_inf), ValueError, r"dy contains NaN or infinity")
        bad(function, "dy", "torch", From(lambda _: torch.ones(SHAPE, dtype=torch.float64)), TypeError, r"dy is a torch array; the forward's cache is a numpy array")
        bad(function, "dy", "integer", np.ones(SHAPE, np.int64), TypeError, r"dy has dtype int64, expected a real floating dtype")
        bad(function, "dy", "complex", np.ones(SHAPE, complex), TypeError, r"dy has dtype complex128, expected a real floating dtype")
# the gradient containers, taken back as tangents (through switch_norm_jvp, plain_norm_jvp, exemplar_norm_jvp): every field
for container in ("SwitchNormGrads", "PlainNormGrads", "ExemplarNormGrads"):
    for field in getattr(refnorm, container)._fields:
        bad(container, field, "None", None, TypeError, rf"tangents\.{field} must be an array .*, got None")
        bad(container, field, "nan", From(lambda v: np.full(v.shape, np.nan)), ValueError, rf"tangents\.{field} contains NaN or infinity")
        bad(container, field, "float32", From(lambda v: v.astype(np.float32)), TypeError, rf"tangents\.{field} has dtype float32, expected float64")
        bad(container, field, "extra-axis", From(lambda v: v[None]), ValueError, rf"tangents\.{field} has shape \(1,[\d, ]*\), expected the shape of its argument")
        bad(container, field, "integer", From(lambda v: np.ones(v.shape, np.int64)), TypeError, rf"tangents\.{field} has dtype int64, expected a real floating dtype")

# --- simplex maps
for function in ("softmax", "sparsemax", "sparsemax_linearize", "sparsestmax", "sparsestmax_forward", "sparsestmax_linearize"):
    bad(function, "logits", "list", LIST, TypeError, rf"logits {A_ARRAY}, got list")
    bad(function, "logits", "None", None, TypeError, r"logits must be an array .*, got None")
    bad(function, "logits", "integer", np.arange(6).reshape(2, 3), TypeError, r"logits has dtype int64, expected a real floating dtype")
    bad(function, "logits", "complex", np.ones((2, 3), complex), TypeError, r"logits has dtype complex128, expected a real floating dtype")
    bad(function, "logits", "nan", From(with_nan), ValueError, r"logits contains NaN or infinity")
    bad(function, "logits", "minus-inf", From(lambda z: -with_inf(z)), ValueError, r"logits contains NaN or infinity")
    bad(function, "logits", "scalar", np.asarray(1.0), ValueError, r"logits has shape \(\), expected \(\.\.\., K\)")
    bad(function, "logits", "empty-batch", np.ones((0, 3)), ValueError, r"logits has shape \(0, 3\), expected .*no axis of size 0")
for function in ("sparsestmax", "sparsestmax_forward", "sparsestmax_linearize", "SparsestMax"):
    bad(function, "radius", "negative", -0.1, ValueError, r"radius must be a finite number >= 0, got -0\.1")
    bad(function, "radius", "inf", float("inf"), ValueError, r"radius must be a finite number >= 0, got inf")
    bad(function, "radius", "bool", True, TypeError, r"radius must be a Python number, got bool \(True\)")
    bad(function, "variant", "unknown", "definition", ValueError, r"unknown variant 'definition'; expected one of 'paper', 'official'")
    bad(function, "variant", "None", None, TypeError, r"variant must be a str, one of 'paper', 'official'; got None")
for function, cotangent in (("softmax_vjp", "dratios"), ("softmax_jvp", "dlogits"), ("sparsemax_vjp", "dratios"), ("sparsemax_jvp", "dlogits")):
    bad(function, cotangent, "broadcastable", np.ones(3), ValueError, rf"{cotangent} has shape \(3,\), expected the shape of ratios = \(2, 3\)")
    bad(function, cotangent, "float32", np.ones((2, 3), np.float32), TypeError, rf"{cotangent} has dtype float32, expected float64 \(the dtype of ratios\)")
    bad(function, cotangent, "nan", From(with_nan), ValueError, rf"{cotangent} contains NaN or infinity")
    bad(function, cotangent, "None", None, TypeError, rf"{cotangent} must be an array .*, got None")
    bad(function, cotangent, "torch", From(lambda _: torch.ones((2, 3), dtype=torch.float64)), TypeError, rf"{cotangent} is a torch array; ratios is a numpy array")
    bad(function, "ratios", "list", LIST, TypeError, r"ratios must be an array .*, got list")
    bad(function, "ratios", "nan", From(with_nan), ValueError, r"ratios contains NaN or infinity")
bad("softmax_vjp", "ratios", "above-1", np.full((2, 3), 1e300), ValueError, r"ratios has an entry above 1\.0 \(1e\+300\); expected every entry <= 1\.0")
bad("softmax_jvp", "ratios", "negative", np.full((2, 3), -0.5), ValueError, r"ratios has a negative entry \(-0\.5\); expected every entry >= 0")
bad("softmax_vjp", "dratios", "reported-broadcast", np.ones(3), ValueError, r"dratios has shape \(3,\), expected the shape of ratios")  # the softmax_vjp(ones(3), full((4, 3), 1/3))
for function, cotangent in (("sparsestmax_vjp", "dratios"), ("sparsestmax_jvp", "dlogits")):
    bad(function, cotangent, "scalar", np.asarray(1.0), ValueError, rf"{cotangent} has shape \(\), expected the shape of the forward's ratios = \(2, 3\)")
    bad(function, cotangent, "nan", From(with_nan), ValueError, rf"{cotangent} contains NaN or infinity")
    bad(function, cotangent, "None", None, TypeError, rf"{cotangent} must be an array .*, got None")
    bad(function, "stages", "None", None, TypeError, r"stages must be the SparsestMaxStages that sparsestmax_forward returned, got NoneType")
    bad(function, "stages", "ratios", From(lambda s: s.vertex), TypeError, r"stages must be the SparsestMaxStages .*, got ndarray")
# the simplex maps' second order: the cotangent and the logit tangent, checked as their VJPs and JVPs check them
for function in ("softmax_hvp", "sparsemax_hvp"):
    for argument in ("dratios", "dlogits"):
        bad(function, argument, "broadcastable", np.ones(3), ValueError, rf"{argument} has shape \(3,\), expected the shape of ratios = \(2, 3\)")
        bad(function, argument, "transposed", np.ones((3, 2)), ValueError, rf"{argument} has shape \(3, 2\), expected the shape of ratios = \(2, 3\)")
        bad(function, argument, "float32", np.ones((2, 3), np.float32), TypeError, rf"{argument} has dtype float32, expected float64 \(the dtype of ratios\)")
        bad(function, argument, "integer", np.ones((2, 3), np.int64), TypeError, rf"{argument} has dtype int64, expected a real floating dtype")
        bad(function, argument, "complex", np.ones((2, 3), complex), TypeError, rf"{argument} has dtype complex128, expected a real floating dtype")
        bad(function, argument, "nan", From(with_nan), ValueError, rf"{argument} contains NaN or infinity; refnorm needs finite inputs")
        bad(function, argument, "inf", From(with_inf), ValueError, rf"{argument} contains NaN or infinity")
        bad(function, argument, "None", None, TypeError, rf"{argument} must be an array .*, got None")
        bad(function, argument, "list", LIST, TypeError, rf"{argument} {A_ARRAY}, got list")
        bad(function, argument, "torch", From(lambda _: torch.ones((2, 3), dtype=torch.float64)), TypeError, rf"(^|; ){argument} is a torch array(;|:).* must all come from one array library")
    bad(function, "ratios", "list", LIST, TypeError, r"ratios must be an array .*, got list")
    bad(function, "ratios", "None", None, TypeError, r"ratios must be an array .*, got None")
    bad(function, "ratios", "nan", From(with_nan), ValueError, r"ratios contains NaN or infinity")
    bad(function, "ratios", "integer", np.zeros((2, 3), np.int64), TypeError, r"ratios has dtype int64, expected a real floating dtype")
    bad(function, "ratios", "complex", np.ones((2, 3), complex) / 3, TypeError, r"ratios has dtype complex128, expected a real floating dtype")
    bad(function, "ratios", "scalar", np.asarray(1.0), ValueError, r"ratios has shape \(\), expected \(\.\.\., K\)")
    bad(function, "ratios", "torch", From(lambda r: torch.from_numpy(r)), TypeError, r"ratios is a torch array")
bad("softmax_hvp", "ratios", "above-1", np.full((2, 3), 2.0), ValueError, r"ratios has an entry above 1\.0 \(2\.0\); expected every entry <= 1\.0")
bad("softmax_hvp", "ratios", "negative", np.full((2, 3), -0.5), ValueError, r"ratios has a negative entry \(-0\.5\); expected every entry >= 0")
for argument in ("dratios", "dlogits"):
    bad("sparsestmax_hvp", argument, "scalar", np.asarray(1.0), ValueError, rf"{argument} has shape \(\), expected the shape of the forward's ratios = \(2, 3\)")
    bad("sparsestmax_hvp", argument, "broadcastable", np.ones((1, 3)), ValueError, rf"{argument} has shape \(1, 3\), expected the shape of the forward's ratios = \(2, 3\)")
    bad("sparsestmax_hvp", argument, "float32", np.ones((2, 3), np.float32), TypeError, rf"{argument} has dtype float32, expected float64 \(the dtype of the forward's ratios\)")
    bad("sparsestmax_hvp", argument, "integer", np.ones((2, 3), np.int64), TypeError, rf"{argument} has dtype int64, expected a real floating dtype")
    bad("sparsestmax_hvp", argument, "nan", From(with_nan), ValueError, rf"{argument} contains NaN or infinity")
    bad("sparsestmax_hvp", argument, "inf", From(with_inf), ValueError, rf"{argument} contains NaN or infinity")
    bad("sparsestmax_hvp", argument, "None", None, TypeError, rf"{argument} must be an array .*, got None")
    bad("sparsestmax_hvp", argument, "torch", From(lambda _: torch.ones((2, 3), dtype=torch.float64)), TypeError, rf"{argument} is a torch array; stages is a numpy array")
bad("sparsestmax_hvp", "stages", "None", None, TypeError, r"stages must be the SparsestMaxStages that sparsestmax_forward returned, got NoneType")
bad("sparsestmax_hvp", "stages", "ratios", From(lambda s: s.vertex), TypeError, r"stages must be the SparsestMaxStages .*, got ndarray")
bad("sparsestmax_hvp", "stages", "tuple", From(tuple), TypeError, r"stages must be the SparsestMaxStages .*, got tuple")
bad("sparsestmax_hvp", "stages", "sn-cache", From(lambda s: sn_cache()), TypeError, r"stages must be the SparsestMaxStages .*, got SwitchNormCache")
bad("sparsestmax_hvp", "stages", "edited", From(lambda s: s._replace(vertex=None)), TypeError, r"stages\.vertex must be an array, got None")
bad("FixedRatios", "ratios", "string", "10", TypeError, r"FixedRatios needs ratios as a tuple of numbers such as \(0\.0, 1\.0, 0\.0\), got str \('10'\)")
bad("FixedRatios", "ratios", "nan", (float("nan"), 1.0), ValueError, r"FixedRatios needs ratios on the simplex \(finite, non-negative, summing to 1\), got \(nan, 1\.0\)")
bad("FixedRatios", "ratios", "not-summing-to-1", (0.5, 0.6, 0.0), ValueError, r"FixedRatios needs ratios on the simplex")
bad("FixedRatios", "ratios", "negative", (-0.5, 1.5, 0.0), ValueError, r"FixedRatios needs ratios on the simplex")
bad("FixedRatios", "ratios", "strings-inside", ("0", "1", "0"), TypeError, r"FixedRatios needs ratios as a tuple of numbers, got str \('0'\) at ratios\[0\]")
bad("FixedRatios", "ratios", "forward-length", (0.5, 0.5), ValueError, r"logits has shape \(3,\), expected \(\.\.\., K\) with K = 2 entries on the last axis")
bad("FixedRatios", "ratios", "empty", (), ValueError, r"FixedRatios needs ratios on the simplex")
bad("Softmax", "args", "unexpected", (1,), TypeError, r"takes 1 positional argument but 2 were given|unexpected")
bad("RatioFunction", "args", "instantiate", (), TypeError, r"Protocols cannot be instantiated")

# --- statistics
bad("instance_moments", "x", "integer", np.ones((2, 3, 4), np.int64), TypeError, r"x has dtype int64, expected a real floating dtype")
bad("instance_moments", "x", "complex", np.ones((2, 3, 4), complex), TypeError, r"x has dtype complex128, expected a real floating dtype")
bad("instance_moments", "x", "rank1", np.ones(4), ValueError, r"x has shape \(4,\), expected \(N, C, \*spatial\) with rank >= 2")
bad("instance_moments", "x", "list", [[1.0]], TypeError, r"x must be an array")
bad("instance_moments", "x", "nan", From(with_nan), ValueError, r"x contains NaN or infinity")
bad("instance_moments", "convention", "unknown", "bogus", ValueError, r"unknown convention 'bogus'")
bad("instance_moments", "check_finite", "string", "yes", TypeError, r"check_finite must be a bool, got str")
bad("instance_moments", "name", "number", 3, TypeError, r"name must be a non-empty str, got int \(3\)")
bad("scope_moments", "moments", "tuple", From(lambda m: tuple(m)), TypeError, r"moments must be the InstanceMoments that refnorm\.instance_moments returns, got tuple")
bad("scope_moments", "moments", "nan", From(lambda m: m._replace(mean=with_nan(m.mean))), ValueError, r"moments\.mean contains NaN or infinity")
bad("scope_moments", "moments", "negative-var", From(lambda m: m._replace(var=-m.var - 1)), ValueError, r"moments\.var has a negative entry")
bad("scope_moments", "moments", "shape", From(lambda m: m._replace(mean=m.mean[:1])), ValueError, r"moments\.mean has shape \(1, 4\), expected \(N, C\) of layout = \(3, 4\)")
bad("scope_moments", "moments", "far-apart", From(lambda m: m._replace(mean=m.mean + np.array([[3e154], [0.0], [0.0]]))), ValueError, r"moments\.mean has values so far apart that the LN variance overflows|moments\.mean has values so far apart that the BN variance overflows")  # fmt: skip
bad("scope_moments", "normalizers", "unknown", ("in", "xn"), ValueError, r"unknown normalizer 'xn'")
bad("scope_moments", "normalizers", "string", "in", TypeError, r"normalizers must be a sequence of names")
bad("scope_moments", "convention", "unknown", "bogus", ValueError, r"unknown convention 'bogus'")
bad("scope_moments", "layout", "None", None, TypeError, r"layout must be a refnorm\.Layout \(Layout\.of\(x\.shape\)\), got None")
bad("scope_moments", "layout", "other", refnorm.Layout(N=2, C=4, M=4, ndim=4), ValueError, r"moments\.mean has shape \(3, 4\), expected \(N, C\) of layout = \(2, 4\)")
bad("scope_moments", "groups", "without-gn", 2, ValueError, r"groups = 2 was given but 'gn' is not in normalizers")
bad("scope_moments", "check_finite", "int", 1, TypeError, r"check_finite must be a bool, got int \(1\)")
for field in ("N", "C", "M"):
    bad("Layout", field, "zero", 0, ValueError, rf"Layout\.{field} must be an int >= 1, got 0")
    bad("Layout", field, "string", "2", TypeError, rf"Layout\.{field} must be an int, got str")
bad("Layout", "ndim", "one", 1, ValueError, r"Layout\.ndim must be an int >= 2, got 1")
bad("Layout", "ndim", "2-with-space", 2, ValueError, r"Layout\.M = 4 for ndim = 2; an \(N, C\) input has M = 1")

# --- running statistics
bad("initial_running_stats", "channels", "zero", 0, ValueError, r"channels must be an int >= 1, got 0")
bad("initial_running_stats", "channels", "string", "4", TypeError, r"channels must be an int, got str \('4'\)")
bad("initial_running_stats", "like", "integer", np.ones(3, np.int64), TypeError, r"like has dtype int64, expected a real floating dtype")
bad("initial_running_stats", "like", "list", LIST, TypeError, r"like must be an array")
bad("initial_running_stats", "like", "None", None, TypeError, r"like must be an array .*, got None")
bad("initial_running_stats", "mean", "nan", float("nan"), ValueError, r"mean must be a finite number, got nan")
bad("initial_running_stats", "mean", "string", "0", TypeError, r"mean must be a Python number, got str")
bad("initial_running_stats", "mean", "overflows-float32", 1e39, ValueError, r"mean = 1e\+39 overflows float32 \(the dtype of like\); expected \|mean\| <= 3\.40282e\+38")
bad("initial_running_stats", "var", "negative", -1, ValueError, r"var must be a finite number >= 0, got -1")
bad("initial_running_stats", "var", "inf", float("inf"), ValueError, r"var must be a finite number >= 0, got inf")
bad("empty_batch_average", "channels", "float", 4.0, TypeError, r"channels must be an int, got float \(4\.0\)")
bad("empty_batch_average", "like", "complex", np.ones(2, complex), TypeError, r"like has dtype complex128, expected a real floating dtype")
bad("ema_update", "running", "tuple", (np.zeros(C), np.ones(C)), TypeError, r"running must be RunningStats, got tuple; build one from a \(mean, var\) pair")
bad("ema_update", "running", "var-negative", refnorm.RunningStats(np.zeros(C), -np.ones(C)), ValueError, r"running\.var has a negative entry")
bad("ema_update", "batch_mean", "length", np.zeros(3), ValueError, r"batch_mean has shape \(3,\), expected \(C,\) = \(4,\)")
bad("ema_update", "batch_mean", "nan", From(with_nan), ValueError, r"batch_mean contains NaN or infinity")
bad("ema_update", "batch_mean", "torch", From(lambda _: torch.zeros(C, dtype=torch.float64)), TypeError, r"running\.mean, running\.var, batch_var are numpy arrays; batch_mean is a torch array")
bad("ema_update", "batch_var", "negative", -np.ones(C), ValueError, r"batch_var has a negative entry")
bad("ema_update", "batch_var", "float32", np.ones(C, np.float32), TypeError, r"batch_var has dtype float32, expected float64 \(the dtype of running\.mean\)")
bad("ema_update", "momentum", "above-1", 2.0, ValueError, r"momentum must lie in \[0, 1\], got 2\.0")
bad("ema_update", "momentum", "None", None, TypeError, r"momentum must be a Python number, got None")
bad("accumulate", "average", "None", None, TypeError, r"average must be BatchAverage, got None")
bad("accumulate", "average", "count-negative", From(lambda a: a._replace(count=-1)), ValueError, r"average\.count must be an int >= 0, got -1")
bad("accumulate", "average", "count-float", From(lambda a: a._replace(count=1.5)), TypeError, r"average\.count must be an int, got float \(1\.5\)")
bad("accumulate", "average", "running-stats", From(lambda a: refnorm.RunningStats(a.mean, a.var_sum)), TypeError, r"average must be BatchAverage, got RunningStats")
bad("accumulate", "batch_mean", "far", From(lambda m: m + 1e300), ValueError, r"batch_mean lies so far from the accumulated mean that their spread overflows float64")
bad("accumulate", "batch_mean", "None", None, TypeError, r"batch_mean must be an array")
bad("accumulate", "batch_var", "negative", -np.ones(C), ValueError, r"batch_var has a negative entry")
bad("accumulate", "batch_var", "rank2", np.ones((1, C)), ValueError, r"batch_var has shape \(1, 4\), expected \(C,\) = \(4,\)")
bad("finalize", "average", "empty", From(lambda a: refnorm.empty_batch_average(C, a.mean)), ValueError, r"finalize needs at least one accumulated batch, got count = 0")
bad("finalize", "average", "count-negative", From(lambda a: a._replace(count=-1)), ValueError, r"average\.count must be an int >= 0, got -1")
bad("finalize", "average", "None", None, TypeError, r"average must be BatchAverage, got None")
bad("finalize", "average", "spread-nan", From(lambda a: a._replace(spread=with_nan(a.spread))), ValueError, r"average\.spread contains NaN or infinity")
bad("RunningStats", "mean", "list", LIST, TypeError, r"running\.mean must be an array")
bad("RunningStats", "mean", "nan", From(with_nan), ValueError, r"running\.mean contains NaN or infinity")
bad("RunningStats", "var", "negative", From(lambda v: -v), ValueError, r"running\.var has a negative entry")
bad("RunningStats", "var", "None", None, TypeError, r"running\.var must be an array .*, got None")
bad("BatchAverage", "count", "bool", True, TypeError, r"average\.count must be an int, got bool \(True\)")
bad("BatchAverage", "count", "negative", -1, ValueError, r"average\.count must be an int >= 0, got -1")
bad("BatchAverage", "mean", "shape", np.zeros(3), ValueError, r"average\.spread has shape \(4,\), expected \(C,\) = \(3,\)")
bad("BatchAverage", "spread", "negative", From(lambda s: -s - 1), ValueError, r"average\.spread has a negative entry")
bad("BatchAverage", "var_sum", "inf", From(with_inf), ValueError, r"average\.var_sum contains NaN or infinity")
bad("FixedSides", "mean", "out-of-range", 3, ValueError, r"fixed\.mean = 3, expected None or a normalizer index in \[0, 3\)")
bad("FixedSides", "var", "string", "0", ValueError, r"fixed\.var = '0', expected None or a normalizer index")
bad("FixedSides", "mean", "bool", True, ValueError, r"fixed\.mean = True, expected None or a normalizer index")
for field in ("gamma", "beta", "conv_weight", "conv_bias", "temperature"):
    bad("ExemplarNormParams", field, "None", None, TypeError, rf"{field} must be an array .*, got None")
    bad("ExemplarNormParams", field, "nan", From(with_nan), ValueError, rf"{field} contains NaN or infinity")
bad("InstanceMoments", "mean", "list", LIST, TypeError, r"moments\.mean must be an array")
bad("InstanceMoments", "var", "negative", From(lambda v: -v - 1), ValueError, r"moments\.var has a negative entry")
bad("InstanceMoments", "var", "float32", From(lambda v: v.astype(np.float32)), TypeError, r"moments\.var has dtype float32, expected float64 \(the dtype of moments\.mean\)")

# --- presets and schedules
bad("preset", "name", "unknown", "pytorch", ValueError, r"unknown preset 'pytorch'; expected one of 'paper', 'official'")
bad("preset", "name", "None", None, TypeError, r"name must be the name of a preset, one of 'paper', 'official'; got None")
bad("preset", "ndim", "string", "4", TypeError, r"ndim must be an int, got str \('4'\)")
bad("preset", "ndim", "one", 1, ValueError, r"ndim must be an int >= 2, got 1")
bad("preset", "sparse", "string", "yes", TypeError, r"sparse must be a bool, got str")
bad("radius_schedule", "step", "negative", -1, ValueError, r"step must lie in \[0, total_steps\] = \[0, 10\], got -1")
bad("radius_schedule", "step", "float", 1.5, TypeError, r"step must be an int, got float")
bad("radius_schedule", "total_steps", "zero", 0, ValueError, r"total_steps must be >= 1, got 0")
bad("radius_schedule", "total_steps", "string", "10", TypeError, r"total_steps must be an int, got str")
bad("exemplar_norm_init", "channels", "zero", 0, ValueError, r"channels must be an int >= 1, got 0")
bad("exemplar_norm_init", "channels", "string", "4", TypeError, r"channels must be an int, got str")
bad("exemplar_norm_init", "like", "complex", np.ones(3, complex), TypeError, r"like has dtype complex128, expected a real floating dtype")
bad("exemplar_norm_init", "like", "python-float", 1.0, TypeError, r"like must be an array .*, got float \(1\.0\)")
bad("exemplar_norm_init", "kernel_size", "even", 2, ValueError, r"kernel_size = 2 is even; expected an odd kernel size q")
bad("exemplar_norm_init", "kernel_size", "larger-than-C", 5, ValueError, r"kernel_size = 5 is larger than the C = 4 channels")
bad("exemplar_norm_init", "kernel_size", "string", "3", TypeError, r"kernel_size must be a positive odd int, got str \('3'\)")

# --- the gradient checker (hardened in issue 10's classes 2; here its arguments only)
for checker in ("gradcheck", "assert_gradcheck"):
    bad(checker, "fun", "not-callable", "sparsemax", TypeError, r"fun must be callable \(returning a Linearized\)")
    bad(checker, "fun", "returns-tuple", lambda z: (z, None), TypeError, r"fun must return a refnorm\.Linearized, got a tuple")
    bad(checker, "args", "float32", From(lambda a: (a[0].astype(np.float32),)), TypeError, r"argument arg0 has dtype float32; gradcheck needs float64 arguments|argument logits has dtype float32")
    bad(checker, "args", "nan", From(lambda a: (with_nan(a[0]),)), ValueError, r"argument (arg0|logits) holds NaN .*; gradcheck needs a finite point")
    bad(checker, "args", "not-a-sequence", From(lambda a: a[0]), TypeError, r"args must be a list or tuple of arrays")
    bad(checker, "args", "empty", (), ValueError, r"args is empty")
bad("gradcheck", "names", "duplicate", ("z", "z"), ValueError, r"names names an argument twice|names has 2 entries")
bad("gradcheck", "names", "string", "logits", TypeError, r"names must be a list or tuple of strings")
bad("gradcheck", "wrt", "unknown", ("x",), ValueError, r"wrt names unknown arguments \['x'\]")
bad("gradcheck", "wrt", "empty", (), ValueError, r"wrt is empty")
bad("gradcheck", "mode", "unknown", "forward", ValueError, r"unknown mode 'forward'; expected 'directional' or 'jacobian'")
bad("gradcheck", "directions", "zero", 0, ValueError, r"directions must be an int >= 1, got 0")
bad("gradcheck", "directions", "float", 2.0, TypeError, r"directions must be an int")
bad("gradcheck", "seed", "negative", -1, ValueError, r"seed must be an int >= 0, got -1")
bad("gradcheck", "rtol", "one", 1.0, ValueError, r"rtol must be finite and in \(0, 1\), got 1\.0")
bad("gradcheck", "rtol", "nan", float("nan"), ValueError, r"rtol must be finite and in \(0, 1\), got nan")
bad("gradcheck", "atol", "negative", -1.0, ValueError, r"atol must be finite and in \[0, inf\), got -1\.0")
bad("gradcheck", "step", "zero", 0.0, ValueError, r"step must be finite and in \(0, 1\], got 0\.0")
bad("gradcheck", "adjoint_rtol", "string", "1e-12", TypeError, r"adjoint_rtol must be a real number")
bad("assert_gradcheck", "kwargs", "unknown-option", {"bogus": 1}, TypeError, r"unexpected keyword argument 'bogus'")
bad("Linearized", "out", "string", "y", TypeError, r"fun's output is a str, expected an array")
bad("Linearized", "pullback", "not-callable", "vjp", TypeError, r"fun's Linearized has a pullback that is a str, not callable")
bad("Linearized", "pushforward", "not-callable", 1, TypeError, r"has a pushforward that is an int, not callable \(or None\)")
bad("Linearized", "active_set", "function", lambda: None, TypeError, r"fun's Linearized has an active_set that holds a function, not arrays, tuples and numbers")
bad("gradcheck", "order", "zero", 0, ValueError, r"order must be an int >= 1, got 0")
bad("gradcheck", "order", "three", 3, ValueError, r"order must be 1, 2 or None \(every derivative the op provides\), got 3")
bad("gradcheck", "order", "float", 2.0, TypeError, r"order must be an int, got a float")
bad("gradcheck", "order", "bool", True, TypeError, r"order must be an int, got a bool")
bad("gradcheck", "order", "string", "2", TypeError, r"order must be an int, got a str")
bad("gradcheck", "order", "nan", float("nan"), TypeError, r"order must be an int, got a float")
bad("gradcheck", "order", "in-jacobian-mode", 2, ValueError, r"order=2 is checked in directional mode only; use mode='directional' \(the default\)")
bad("gradcheck", "order", "without-an-hvp", 2, ValueError, r"order=2 checks the second order, but fun's Linearized has no hvp")
bad("gradcheck", "order", "exemplar-norm", 2, ValueError, r"order=2 checks the second order, but fun's Linearized has no hvp")  # EN has no second order
bad("assert_gradcheck", "kwargs", "order-out-of-range", {"order": 3}, ValueError, r"order must be 1, 2 or None")
bad("Linearized", "hvp", "not-callable", "hvp", TypeError, r"fun's Linearized has an hvp that is a str, not callable \(or None\)")
bad("Linearized", "hvp", "array", np.ones(3), TypeError, r"fun's Linearized has an hvp that is an? ndarray, not callable \(or None\)")
# a malformed hvp is the checker's verdict, a failed check naming where (never a pass, never an exception)
bad("Linearized", "hvp", "returns-nan", lambda v, t: (np.full((2, 3), np.nan),), None, r"hvp\(v\[0\], u\[0\]\) for arg0 holds NaN at \(0, 0\)")
bad("Linearized", "hvp", "raises", lambda v, t: (1 / 0,), None, r"hvp\(v\[0\], u\[0\]\) raised ZeroDivisionError")
bad("Linearized", "hvp", "wrong-shape", lambda v, t: (np.zeros(3),), None, r"hvp\(v\[0\], u\[0\]\) for arg0 has shape \(3,\), expected \(2, 3\)")
bad("Linearized", "hvp", "returns-None", lambda v, t: None, None, r"hvp\(v\[0\], u\[0\]\) returned None, expected a tuple with one array per argument")
bad("Linearized", "hvp", "wrong-number", lambda v, t: (t, t), None, r"hvp\(v\[0\], u\[0\]\) returned 2 arrays, expected one per argument \(1: arg0\)")

# --- the conformance kit
bad("Adapter", "forward", "None", None, TypeError, r"Adapter\.forward must be callable, got NoneType")
bad("Adapter", "backward", "string", "b", TypeError, r"Adapter\.backward must be callable or None, got str")
bad("Adapter", "to_numpy", "None", None, TypeError, r"Adapter\.to_numpy must be callable, got NoneType")
bad("Adapter", "dtype", "float16", "float16", ValueError, r"dtype 'float16' has no default tolerance; expected one of \('float32', 'float64'\)")
bad("Adapter", "dtype", "None", None, TypeError, r"dtype must be 'float32' or 'float64' \(a name or a NumPy dtype\), got None")
bad("Adapter", "dtype", "object", object(), TypeError, r"dtype must be 'float32' or 'float64' \(a name or a NumPy dtype\), got object")
bad("Adapter", "name", "empty", "", TypeError, r"Adapter\.name must be a non-empty string")
bad("Adapter", "jvp", "string", "jax.jvp", TypeError, r"Adapter\.jvp must be callable or None, got str")
bad("Adapter", "jvp", "dict", {}, TypeError, r"Adapter\.jvp must be callable or None, got dict")
bad("Adapter", "hvp", "int", 1, TypeError, r"Adapter\.hvp must be callable or None, got int")
bad("Adapter", "hvp", "tuple", (None,), TypeError, r"Adapter\.hvp must be callable or None, got tuple")
for checker in ("check_conformance", "ConformanceCheck", "run_conformance", "conformance_checks", "parametrize_conformance"):
    bad(checker, "adapter", "function", lambda i, p: {}, TypeError, r"adapter must be a refnorm\.testing\.Adapter, got function")
    bad(checker, "adapter", "None", None, TypeError, r"adapter must be a refnorm\.testing\.Adapter, got NoneType")
for checker in ("check_conformance", "ConformanceCheck", "run_conformance", "conformance_checks"):
    bad(checker, "source", "None", None, TypeError, r"source must be 'live', 'shipped' or the path of a golden set, got None")
    bad(checker, "source", "missing-directory", "/nonexistent/golden", ValueError, r"source '/nonexistent/golden' is not a golden set refnorm can read")
    bad(checker, "check_error_messages", "string", "yes", TypeError, r"check_error_messages must be a bool, got str")
for checker in ("check_conformance", "ConformanceCheck"):
    bad(checker, "case", "id-string", "sparsemax/K3", TypeError, r"case must be a catalog Case \(refnorm\.oracle\.catalog\.cases\(\)\), got str")
    bad(checker, "case", "None", None, TypeError, r"case must be a catalog Case")
for runner in ("run_conformance", "conformance_checks", "parametrize_conformance"):
    bad(runner, "op", "unknown", "batch_norm", ValueError, r"unknown op 'batch_norm'; expected one of")
    bad(runner, "op", "list", ["sparsemax"], TypeError, r"op must be the name of an op, one of .*; got list")
for runner in ("run_conformance", "conformance_checks"):
    bad(runner, "kinds", "unknown", ("samples",), ValueError, r"kinds holds 'samples'; expected a subset of")
    bad(runner, "kinds", "int", 3, TypeError, r"kinds must be a kind or several, a subset of .*; got int \(3\)")
    bad(runner, "kinds", "numbers", (1,), TypeError, r"kinds holds int \(1\); expected a subset of")
    bad(runner, "select", "no-match", "sparsemax/nope*", ValueError, r"select names 'sparsemax/nope\*', which matches no case")
    bad(runner, "select", "number", 3, TypeError, r"select must be a case id or fnmatch pattern, or several; got int \(3\)")
    bad(runner, "select", "empty-pattern", ("",), TypeError, r"select holds ''; expected case ids or fnmatch patterns")
    bad(runner, "skip", "no-reason", {"sparsemax/*": ""}, ValueError, r"skip\['sparsemax/\*'\] needs a reason")
    bad(runner, "skip", "list", ["sparsemax/*"], TypeError, r"skip must be a mapping \{case id or pattern: reason\}, got list")
    bad(runner, "expected_failures", "no-match", {"sparsemax/nope": "why"}, ValueError, r"expected_failures names 'sparsemax/nope', which matches no case")
    bad(runner, "expected_failures", "string", "sparsemax/*", TypeError, r"expected_failures must be a mapping")
bad("parametrize_conformance", "argname", "empty", "", TypeError, r"argname must be a non-empty str, got str \(''\)")
bad("parametrize_conformance", "argname", "None", None, TypeError, r"argname must be a non-empty str, got None")
bad("parametrize_conformance", "options", "unknown-option", {"bogus": 1}, TypeError, r"unexpected keyword argument 'bogus'")
bad("assert_allclose_named", "actual", "None", None, ConformanceError, r"output\.y: not a real numeric array \(objects\)")  # a verdict on the implementation's output
bad("assert_allclose_named", "actual", "complex", np.ones(3, complex), ConformanceError, r"output\.y: not a real numeric array \(dtype complex128\)")
bad("assert_allclose_named", "actual", "shape", np.ones(4), ConformanceError, r"output\.y: shape \(4,\), expected \(3,\)")
bad("assert_allclose_named", "expected", "None", None, TypeError, r"expected must be refnorm's value, a real numeric array, got objects")
bad("assert_allclose_named", "expected", "strings", np.array(["a", "b", "c"]), TypeError, r"expected must be refnorm's value, a real numeric array, got dtype <U1")
bad("assert_allclose_named", "case", "None", None, TypeError, r"case must be a non-empty str, got None")
bad("assert_allclose_named", "array", "number", 3, TypeError, r"array must be a non-empty str, got int \(3\)")
bad("assert_allclose_named", "rtol", "negative", -1.0, ValueError, r"rtol must be a finite number >= 0, got -1\.0")
bad("assert_allclose_named", "rtol", "nan", float("nan"), ValueError, r"rtol must be a finite number >= 0, got nan")
bad("assert_allclose_named", "atol", "list", LIST, TypeError, r"atol must be a Python number, got list")
bad("assert_allclose_named", "dtype", "int", 3, TypeError, r"dtype must be 'float32' or 'float64' \(a name or a NumPy dtype\), got int \(3\)")
bad("assert_allclose_named", "direction", "unknown", "sideways", ValueError, r"direction 'sideways', expected one of \('forward', 'backward', 'jvp', 'hvp'\)")
bad("compare", "actual", "complex", np.ones(3, complex), None, r"not a real numeric array \(dtype complex128\)")  # a verdict: the comparison fails
bad("compare", "actual", "None", None, None, r"not a real numeric array \(objects\)")
bad("compare", "expected", "None", None, TypeError, r"expected must be refnorm's value, a real numeric array, got objects")
bad("compare", "rtol", "nan", float("nan"), ValueError, r"rtol must be a finite number >= 0, got nan")
bad("compare", "rtol", "None", None, TypeError, r"rtol must be a Python number, got None")
bad("compare", "atol", "negative", -1e-9, ValueError, r"atol must be a finite number >= 0, got -1e-09")
bad("compare", "array", "empty", "", TypeError, r"array must be a non-empty str")
bad("default_tolerance", "dtype", "int64", "int64", ValueError, r"dtype 'int64' has no default tolerance")
bad("default_tolerance", "dtype", "list", LIST, TypeError, r"dtype must be 'float32' or 'float64'")
bad("default_tolerance", "direction", "unknown", "up", ValueError, r"direction 'up', expected one of")
bad("recommended_tolerances", "case", "string", "sparsemax/K3", TypeError, r"case must be a catalog Case \(refnorm\.oracle\.catalog\.cases\(\)\), got str")
bad("recommended_tolerances", "reference", "dict", {}, TypeError, r"reference must be None or the case's float64 Evaluation \(evaluate_case\(case\)\), got dict")
bad("refnorm_adapter", "op", "unknown", "batch_norm", ValueError, r"unknown op 'batch_norm'")
bad("refnorm_adapter", "op", "None", None, TypeError, r"op must be the name of an op")
bad("refnorm_adapter", "dtype", "float16", "float16", ValueError, r"dtype 'float16' has no default tolerance")
bad("refnorm_adapter", "backend", "unknown", "tensorflow", ValueError, r"unknown backend 'tensorflow'; expected one of")
bad("refnorm_adapter", "backend", "None", None, TypeError, r"backend must be a str, one of .*; got None")


# --------------------------------------------------------------------------------------------
# Checking a row
# --------------------------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_copy(v) for v in value))
    if isinstance(value, list | tuple):
        return type(value)(_copy(v) for v in value)
    return value


def _arrays(value: Any) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _arrays(v)]
    if isinstance(value, list | tuple):
        return [a for v in value for a in _arrays(v)]
    return []


def call_with(subject: str, argument: str, value: Any) -> tuple[Callable[[], Any], dict[str, Any]]:
    """A thunk calling ``subject`` with ``argument`` replaced by ``value`` (a ``From`` applied to the
    valid value), and the keywords it passes."""
    function, kwargs = valid_call(subject)
    if isinstance(value, From):
        value = value.make(kwargs[argument])
    if subject in NO_ARGUMENTS:  # a class called with positional arguments it does not take
        return (lambda: PUBLIC[subject](*value)), kwargs
    if argument in _var_keyword(subject):  # **config of a linearize, **kwargs of assert_gradcheck, **options
        kwargs.update(value)
    else:
        kwargs[argument] = value
    return (lambda: function(**kwargs)), kwargs


NO_ARGUMENTS = ("Softmax", "RatioFunction")
"""Public classes whose constructor takes no argument: their row passes one (``args``)."""


def _var_keyword(subject: str) -> set[str]:
    target = PUBLIC.get(subject)
    if target is None or subject in NO_ARGUMENTS:
        return set()
    return {p.name for p in inspect.signature(target).parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD}


ROW_SETUP: dict[str, Callable[[dict[str, Any]], None]] = {
    "switch_norm_forward-training-eval-without-running": lambda kw: kw.update(running=None),
    "switch_norm_forward-training-eval-with-accumulator": lambda kw: kw.update(running=refnorm.empty_batch_average(C, kw["x"])),
    "sparse_switch_norm_forward-normalizers-one-normalizer": lambda kw: kw.update(mean_logits=np.zeros(1), var_logits=np.zeros(1)),
    "sparse_switch_norm_forward-normalizers-one-normalizer-mean-fixed": lambda kw: kw.update(
        mean_logits=np.zeros(1), var_logits=np.zeros(1), fixed=refnorm.FixedSides(mean=0)),
    "initial_running_stats-mean-overflows-float32": lambda kw: kw.update(like=kw["like"].astype(np.float32)),
    **{f"{layer}-groups-string": (lambda kw: kw.update(normalizers=("gn", "bn"))) for layer in FORWARDS},
    "gradcheck-order-in-jacobian-mode": lambda kw: kw.update(mode="jacobian"),
    "gradcheck-order-without-an-hvp": lambda kw: kw.update(fun=lambda z: refnorm.sparsemax_linearize(z)._replace(hvp=None)),
    "gradcheck-order-exemplar-norm": lambda kw: kw.update(
        fun=lambda x: refnorm.exemplar_norm_linearize(x, **en_params()), args=(layer_arrays()["x"],), names=("x",)),
}
"""Rows that change a second argument (the keywords are changed in place before the call)."""


def _messages_name_an_argument(subject: str, message: str) -> bool:
    """The message names an argument of the subject (or a part of one: ``running.mean``, ``xs[1]``)."""
    _, kwargs = valid_call(subject)
    names = set(kwargs) | {"running", "average", "moments", "fixed", "cache", "stages", "xs", "dys", "ratios", "logits", "like", "preset", "args",
                           "normalizer", "Adapter", "layout", "FixedRatios", "name", "dtype", "kinds", "select", "fun", "Layout"}  # fmt: skip
    return any(re.search(rf"(?<!\w){re.escape(name)}\b", message) for name in names)


NEEDS_TORCH = pytest.mark.skipif(torch is None, reason="PyTorch is not installed: the row mixes a torch tensor into a call")


@pytest.mark.parametrize("row", [pytest.param(row, marks=NEEDS_TORCH) if "torch" in row.label else row for row in ERROR_TABLE],
                         ids=lambda row: row.id)  # fmt: skip
def test_bad_input_raises_the_documented_error(row):
    thunk, kwargs = call_with(row.subject, row.argument, row.value)
    ROW_SETUP.get(row.id, lambda kw: None)(kwargs)
    before = [(a, a.copy()) for a in _arrays(kwargs)]
    if row.raises is None:  # the kit or the checker judges what it was given: a failed verdict, not an error
        result = thunk()
        verdict = result.describe() if hasattr(result, "describe") else result.summary()
        assert not result.passed and re.search(row.match, verdict), verdict
    else:
        with pytest.raises(row.raises) as raised:
            thunk()
        assert re.search(row.match, str(raised.value)), f"{type(raised.value).__name__}: {raised.value}"
    for array, copy in before:
        np.testing.assert_array_equal(array, copy, err_msg="an argument was mutated")


def _parameters(subject: str) -> set[str]:
    """The arguments of a subject: its signature's parameters (``**config`` as ``config``), or a
    record's fields."""
    target = PUBLIC[subject]
    if subject in NO_ARGUMENTS:
        return {"args"}
    if inspect.isclass(target) and hasattr(target, "_fields"):
        return set(target._fields)
    if inspect.isclass(target) and is_dataclass(target):
        return {name for name in inspect.signature(target).parameters}
    return set(inspect.signature(target).parameters)


def test_the_error_table_covers_every_argument_of_every_public_callable():
    """A public callable, or an argument of one, without a row fails here: add its rows."""
    covered: dict[str, set[str]] = {}
    for row in ERROR_TABLE:
        covered.setdefault(row.subject, set()).add(row.argument)
    missing = {}
    for subject in PUBLIC:
        if subject in RESULT_TYPES:
            continue
        uncovered = _parameters(subject) - covered.get(subject, set())
        if uncovered:
            missing[subject] = sorted(uncovered)
    assert not missing, f"public callables with arguments the error table does not cover: {missing}"


def test_result_types_are_immutable_records_refnorm_never_takes_back():
    for name in RESULT_TYPES:
        kind = PUBLIC[name]
        assert (isinstance(kind, type) and hasattr(kind, "_fields")) or (is_dataclass(kind) and kind.__dataclass_params__.frozen) or issubclass(kind, Exception), name
    with pytest.raises(TypeError, match=r"cache must be the SwitchNormCache .*, got SwitchNormGrads"):
        cache = sn_cache()
        refnorm.switch_norm_backward(np.ones(SHAPE), refnorm.switch_norm_backward(np.ones(SHAPE), cache))
    with pytest.raises(TypeError, match=r"running must be RunningStats or BatchAverage, got ScopeMoments"):
        refnorm.switch_norm_forward(**{**_layer(), "running": refnorm.ScopeMoments(("bn",), (np.zeros(C),), (np.ones(C),))})


def _layer() -> dict[str, Any]:
    function, kwargs = valid_call("switch_norm_forward")
    return kwargs


def test_every_subject_of_the_table_has_a_valid_call_that_succeeds():
    for subject in sorted(VALID):
        if subject in ("RatioFunction",):
            continue
        function, kwargs = valid_call(subject)
        function(**kwargs)


def test_every_row_names_an_argument_of_its_subject():
    for row in ERROR_TABLE:
        assert row.argument in _parameters(row.subject) or row.subject not in PUBLIC, row.id


# --------------------------------------------------------------------------------------------
# The sweep: every argument of every subject, every class of bad value
# --------------------------------------------------------------------------------------------


def corruptions(value: Any, types_only: bool = False) -> dict[str, Any]:
    """Generic bad values for an argument whose valid value is ``value``: every class of bad input
    (wrong type, ``None``, Python scalars, objects; for arrays: other dtypes, shapes, an empty
    axis, NaN, infinity, huge values, another library; for records: each field replaced).
    ``types_only``: no array replaced by another array (the fields of an opaque record)."""
    out: dict[str, Any] = {
        "None": None, "list": [1.0, 2.0], "int": 3, "float": 0.5, "complex": 1j, "str": "bogus", "object": object(), "bool": True,
        "negative": -1, "nan": float("nan"), "inf": float("inf"), "huge": 1e300, "tuple": (1, 2), "dict": {"a": 1},
    }  # fmt: skip
    if isinstance(value, np.ndarray) and not types_only:
        a = value
        out.update({
            "int-dtype": np.round(a).astype(np.int64), "complex-dtype": a.astype(complex), "float32": a.astype(np.float32),
            "bool-dtype": a > 0, "extra-axis": a[None], "flattened": a.reshape(-1)[None] if a.ndim else a[None],
            "size-0": a[None][:0], "strict": array_api_strict.asarray(a), "0-d": np.asarray(1.0),
            "longer": np.concatenate([a.reshape(-1), a.reshape(-1)]),
        })  # fmt: skip
        if torch is not None:  # a second foreign library where installed; array-api-strict always
            out["torch"] = torch.from_numpy(a.copy())
        if a.dtype.kind == "f":
            out["array-times-1e300"] = a * 1e300
            out["negated"] = -np.abs(a) - 1.0
        if a.size:
            out["nan-element"] = with_nan(a)
            out["inf-element"] = with_inf(a)
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        out["shards-strict"] = [array_api_strict.asarray(v) for v in value]
        if torch is not None:
            out["shards-torch"] = [torch.from_numpy(v.copy()) for v in value]
        out["shards-empty"] = []
        if len(value) > 1:
            out["shards-one-short"] = [value[0], value[1][..., :1]]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        # the record's own fields in another container: a plain tuple, a dict, a look-alike record
        # with one field missing or one extra (another op's gradients as a JVP's tangents)
        kind = type(value).__name__
        out["as-tuple"] = tuple(value)
        out["as-dict"] = value._asdict()
        if len(value._fields) > 1:
            out["field-missing"] = collections.namedtuple(kind, value._fields[:-1])(*value[:-1])
        out["field-extra"] = collections.namedtuple(kind, (*value._fields, "extra"))(*value, value[0])
        for field in value._fields:
            v = getattr(value, field)
            out[f"{field}=None"] = value._replace(**{field: None})
            out[f"{field}=list"] = value._replace(**{field: [1.0]})
            # A forward's cache and SparsestMax's stages are checked for their fields' types only:
            # the shapes and values of their arrays are the forward's, trusted (docs/errors.md).
            opaque = types_only or isinstance(value, refnorm.SwitchNormCache | refnorm.ExemplarNormCache | refnorm.SparsestMaxStages) or type(
                value).__name__ == "ShardedSwitchNormCache"
            if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim and not opaque:
                out[f"{field}=short"] = value._replace(**{field: v[..., :-1]})
                out[f"{field}=float32"] = value._replace(**{field: v.astype(np.float32)})
                out[f"{field}=strict"] = value._replace(**{field: array_api_strict.asarray(v)})
                if torch is not None:
                    out[f"{field}=torch"] = value._replace(**{field: torch.from_numpy(v.copy())})
                out[f"{field}=negative"] = value._replace(**{field: -np.abs(v) - 1.0})
                out[f"{field}=nan"] = value._replace(**{field: with_nan(v)})
    return out


EXPECTED_ESCAPES = {"ConformanceError"}
"""The kit's verdict on an implementation's output (``assert_allclose_named``'s ``actual``) is a
``ConformanceError``, an ``AssertionError``: a failed comparison, by design."""

SWEPT = [subject for subject in VALID if subject not in ("RatioFunction", "Softmax")]
SWEEP_COUNTS: dict[str, int] = {}


def _finite(value: Any) -> bool:
    if array_api_compat.is_array_api_obj(value):
        host = np.asarray(to_numpy(value))
        return host.dtype.kind != "f" or bool(np.all(np.isfinite(host)))
    if isinstance(value, tuple) and not hasattr(value, "cache"):
        return all(_finite(v) for v in value)
    if hasattr(value, "_fields"):
        return all(_finite(getattr(value, f)) for f in value._fields if f not in ("cache",))
    return True


def check_contract(subject: str, kwargs: dict[str, Any], call: Callable[[], Any]) -> str:
    """Run one call and assert the contract; returns ``"raised"`` or ``"returned"``."""
    before = [(a, a.copy()) for a in _arrays(kwargs)]
    try:
        result = call()
    except (TypeError, ValueError) as error:
        message = str(error)
        assert _messages_name_an_argument(subject, message), f"{subject}: {type(error).__name__} names no argument: {message}"
        for leak in ("Multiple namespaces", "array_namespace", "could not be broadcast", "not supported array type", "has no attribute"):
            assert leak not in message, f"{subject}: a library's message leaked: {message}"
        outcome = "raised"
    except ConformanceError:
        assert subject in ("assert_allclose_named",), subject
        outcome = "raised"
    else:
        assert _finite(result), f"{subject} returned non-finite values: {result!r:.300}"
        outcome = "returned"
    for array, copy in before:
        np.testing.assert_array_equal(array, copy, err_msg=f"{subject} mutated an argument")
    return outcome


OPAQUE = ("SwitchNormCache", "ExemplarNormCache", "SparsestMaxStages")
"""Records refnorm returns and takes back whose fields are checked for their types only: an array
field replaced by an array of another shape or value is outside the contract (``docs/errors.md``)."""


def _corruptions_of(subject: str, value: Any) -> dict[str, Any]:
    return corruptions(value, types_only=subject in OPAQUE)


@pytest.mark.parametrize("subject", SWEPT)
def test_every_argument_rejects_every_class_of_bad_value(subject):
    """Every (argument, class of bad value) pair of the subject: a clean error naming an argument, or a
    finite result; never another exception, never a mutated input."""
    _, kwargs = valid_call(subject)
    calls = 0
    for argument, value in kwargs.items():
        for label, corrupted in _corruptions_of(subject, value).items():
            function, fresh = valid_call(subject)
            fresh[argument] = corrupted
            try:
                check_contract(subject, fresh, lambda: function(**fresh))
            except AssertionError as failure:
                raise AssertionError(f"{subject}({argument}={label}): {failure}") from None
            calls += 1
    SWEEP_COUNTS[subject] = calls
    assert calls > 0


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_bad_calls_keep_the_contract(data):
    """One or two arguments corrupted at once, any subject: the contract holds."""
    subject = data.draw(st.sampled_from(SWEPT), label="subject")
    function, kwargs = valid_call(subject)
    arguments = data.draw(st.lists(st.sampled_from(sorted(kwargs)), min_size=1, max_size=2, unique=True), label="arguments") if kwargs else []
    for argument in arguments:
        options = _corruptions_of(subject, kwargs[argument])
        label = data.draw(st.sampled_from(sorted(options)), label=f"{argument} becomes")
        kwargs[argument] = options[label]
    check_contract(subject, kwargs, lambda: function(**kwargs))
