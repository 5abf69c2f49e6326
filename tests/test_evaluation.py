"""Evaluating a catalog op: one forward per evaluation, and that forward is the op's public linearization."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import refnorm
from refnorm.ops import exemplarnorm as en
from refnorm.ops import ratio_generator as rg
from refnorm.ops.sparsestmax import sparsestmax_linearize
from refnorm.oracle.catalog import OPS, cases, exemplarnorm, sparse_switchnorm, sparsestmax, switchnorm
from refnorm.oracle.evaluation import GROUPS, evaluate, evaluate_case

EVALUATED = [c for c in cases() if c.kind != "error"]
FIRST_CASE = {op: next(c for c in EVALUATED if c.op == op) for op in OPS}


@pytest.mark.parametrize("op", sorted(OPS))
def test_an_evaluation_runs_the_ops_forward_once(op, monkeypatch):
    """Outputs, intermediates and the pullback all come from one run of ``OpInfo.forward``."""
    calls = []
    info = OPS[op]

    def counted(inputs, params):
        calls.append(op)
        return info.forward(inputs, params)

    monkeypatch.setitem(OPS, op, dataclasses.replace(info, forward=counted))
    evaluation = evaluate_case(FIRST_CASE[op])
    assert calls == [op]
    assert evaluation.outputs and evaluation.intermediates and evaluation.gradients


PUBLIC_FORWARDS = {
    # op: (where the catalog finds the forward it runs, its name, the public linearization taking the same arguments)
    "switch_norm": (switchnorm, "switch_norm_forward", refnorm.switch_norm_linearize),
    "plain_norm": (switchnorm, "plain_norm_forward", refnorm.plain_norm_linearize),
    "sparse_switch_norm": (sparse_switchnorm, "sparse_switch_norm_forward", refnorm.sparse_switch_norm_linearize),
    "sparsestmax": (sparsestmax, "sparsestmax_forward", lambda logits, radius, variant: sparsestmax_linearize(logits, radius=radius, variant=variant)),
    "exemplar_norm": (exemplarnorm.en, "exemplar_norm_forward", en.exemplar_norm_linearize),
    "en_channel_conv": (exemplarnorm.rg, "channel_conv", rg.channel_conv_linearize),
}
"""The ops whose catalog forward builds its linearization from the forward's cache; the others call the public ``*_linearize`` itself."""


@pytest.mark.parametrize("op", sorted(PUBLIC_FORWARDS))
def test_an_evaluation_runs_the_public_forward_of_the_op_once(op, monkeypatch):
    module, name, _ = PUBLIC_FORWARDS[op]
    real, calls = getattr(module, name), []
    monkeypatch.setattr(module, name, lambda *args, **kwargs: calls.append(name) or real(*args, **kwargs))
    evaluate_case(FIRST_CASE[op])
    assert calls == [name]


def _same(first, second) -> bool:
    """Equal nested active sets (tuples of arrays, or None)."""
    if isinstance(first, tuple | list) or isinstance(second, tuple | list):
        return type(first) is type(second) and len(first) == len(second) and all(_same(a, b) for a, b in zip(first, second))
    if first is None or second is None:
        return first is second
    return np.array_equal(np.asarray(first), np.asarray(second))


@pytest.mark.parametrize("op", sorted(PUBLIC_FORWARDS))
def test_the_catalog_linearization_is_the_public_linearize_of_the_op(op, monkeypatch, rng):
    """Same output, pullback and active set (the checker's kink guard) as the op's public ``*_linearize``
    called with the arguments the catalog passed to the forward, on every sample and reference case."""
    module, name, public = PUBLIC_FORWARDS[op]
    real = getattr(module, name)
    for case in [c for c in EVALUATED if c.op == op]:
        seen = []
        with monkeypatch.context() as patch:
            patch.setattr(module, name, lambda *args, **kwargs: seen.append((args, kwargs)) or real(*args, **kwargs))
            ours = OPS[op].linearize(case.inputs(), case.params)
        theirs = public(*seen[0][0], **seen[0][1])
        np.testing.assert_array_equal(ours.out, theirs.out, err_msg=case.id)
        cotangent = rng.standard_normal(np.shape(ours.out))
        for a, b in zip(ours.pullback(cotangent), theirs.pullback(cotangent), strict=True):
            assert (a is None and b is None) or np.array_equal(a, b), case.id
        assert _same(ours.active_set, theirs.active_set), case.id
        assert (ours.pushforward is None) == (theirs.pushforward is None), case.id


@pytest.mark.parametrize("case", cases(kind="sample"), ids=lambda c: c.id)
def test_every_sample_case_has_named_intermediates(case):
    intermediates = OPS[case.op].forward(case.inputs(), case.params).intermediates
    assert intermediates and all(isinstance(name, str) and name.isidentifier() for name in intermediates)


def test_an_evaluation_has_the_eight_groups_in_order():
    evaluation = evaluate_case(FIRST_CASE["switch_norm"])
    assert list(evaluation.groups()) == list(GROUPS) == ["input", "output", "intermediate", "upstream", "grad", "tangent", "jvp", "hvp"]
    assert set(evaluation.gradients) == set(OPS["switch_norm"].arguments)


def test_evaluate_takes_an_op_by_name_or_by_info():
    case = FIRST_CASE["sparsemax"]
    by_name = evaluate("sparsemax", case.params, case.inputs(), seed=case.seed)
    by_info = evaluate(OPS["sparsemax"], case.params, case.inputs(), seed=case.seed)
    for group, named in by_name.groups().items():
        for key, array in named.items():
            np.testing.assert_array_equal(array, by_info.groups()[group][key])
