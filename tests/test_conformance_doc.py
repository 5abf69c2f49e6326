"""``docs/conformance.md`` is the porter's reference: it names every input, parameter and
intermediate the catalog uses, per op, with the intermediates' shapes, and what it says about
which inputs appear when holds for every case."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from refnorm.oracle.catalog import OPS, cases

PAGE = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"
SECTION = re.compile(r"<!-- op: (\w+) -->\n(.*?)(?=<!-- op: |<!-- end of ops -->)", re.S)
NAMES = re.compile(r"`([A-Za-z_<>][A-Za-z0-9_<>]*)`")


INHERITS = {"sparse_switch_norm": "switch_norm"}
"""Sections that say "those of `switch_norm`, and:": the other section's tables count for them."""


def sections() -> dict[str, str]:
    found = dict(SECTION.findall(PAGE.read_text(encoding="utf-8")))
    return {op: text + "\n" + found[INHERITS[op]] if op in INHERITS else text for op, text in found.items()}


def rows(text: str, heading: str) -> dict[str, str]:
    """``{name: second column}`` of the table after the line ``heading`` (every backticked name of
    a row's first column)."""
    if heading not in text:
        return {}
    lines = text.split(heading, 1)[1].splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    found = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for name in NAMES.findall(cells[0]):
            found[name] = cells[1] if len(cells) > 1 else ""
    return found


def mentioned(text: str) -> set[str]:
    return set(NAMES.findall(text))


def test_every_op_has_a_section():
    assert list(sections()) == list(OPS)
    assert rows(sections()["switch_norm"], "Outputs and intermediates")["inv_std"] == "`(N, C)`", "the parser reads the tables"


@pytest.mark.parametrize("op", list(OPS))
def test_every_parameter_the_catalog_uses_is_documented(op):
    text = sections()[op]
    used = {key for case in cases(op=op) for key in case.params}
    table = rows(text, "Parameters:")
    if op in INHERITS:
        table |= rows(sections()[INHERITS[op]], "Parameters:")
    documented = set(table) or mentioned(text)
    assert used - documented == set(), f"docs/conformance.md does not document {op}'s parameters {sorted(used - documented)}"


@pytest.mark.parametrize("op", list(OPS))
def test_every_input_is_documented(op):
    text = sections()[op]
    used = {name for case in cases(op=op) for name in case.inputs()}
    assert used - mentioned(text) == set(), f"docs/conformance.md does not name {op}'s inputs {sorted(used - mentioned(text))}"


def test_running_statistics_appear_in_every_evaluation_case_and_only_with_running_in_training():
    for case in cases():
        if case.kind == "error" or "x" not in case.inputs():
            continue
        inputs = case.inputs()
        has_running = "running_mean" in inputs and "running_var" in inputs
        if not case.params.get("training", True):
            assert has_running, f"{case.id}: an evaluation case without running statistics"
        elif case.op != "en_embedding":
            assert has_running == bool(case.params.get("running", False)), case.id


def symbols(op: str, inputs: dict[str, np.ndarray], arrays: dict[str, np.ndarray]) -> dict[str, object]:
    """The values of the shape symbols of the page for one case."""
    values: dict[str, object] = {"...": ()}
    if "x" in inputs:
        values.update(N=inputs["x"].shape[0], C=inputs["x"].shape[1], x=inputs["x"].shape)
    if "mean_logits" in inputs:
        values["K"] = inputs["mean_logits"].shape[0]
    if op == "plain_norm":
        values["K"] = 1
    if "logits" in inputs:
        values["..."], values["K"] = inputs["logits"].shape[:-1], inputs["logits"].shape[-1]
    for name in ("embedding", "activation"):
        if name in inputs:
            values.update(N=inputs[name].shape[0], K=inputs[name].shape[1], C=inputs[name].shape[2])
    for name in ("scores", "standardized"):
        if name in inputs:
            values.update(N=inputs[name].shape[0], K=inputs[name].shape[1])
    if op in ("exemplar_norm", "en_embedding"):
        values["K"] = arrays["embedding"].shape[1]
    if "conv_weight" in inputs:
        values["q"] = inputs["conv_weight"].shape[0]
    return values


def expected_shape(text: str, values: dict[str, object]) -> tuple[int, ...]:
    """A shape of the page (``(N, C)``, ``x``, ``(..., K)``, ``()``) for the symbols' values."""
    text = text.strip("`").split("`")[0].strip()
    if text == "x":
        return tuple(values["x"])  # type: ignore[arg-type]
    shape: list[int] = []
    for part in (p.strip() for p in text.strip("()").split(",")):
        if not part:
            continue
        if part == "...":
            shape.extend(values["..."])  # type: ignore[arg-type]
        elif part.isdigit():
            shape.append(int(part))
        else:
            shape.append(int(values[part]))  # type: ignore[arg-type]
    return tuple(shape)


STAGE = re.compile(r"stage\d+_")


@pytest.mark.parametrize("op", list(OPS))
def test_every_intermediate_is_documented_with_its_shape(op):
    text = sections()[op]
    documented = rows(text, "Outputs and intermediates")
    if op in INHERITS:
        documented |= rows(sections()[INHERITS[op]], "Outputs and intermediates")
    stage_rows = rows(sections()["sparsestmax"], "Outputs and intermediates")
    checked = 0
    for case in cases(op=op):
        if case.kind == "error":
            continue
        inputs = case.inputs()
        arrays = {name: np.asarray(a) for name, a in OPS[op].forward(inputs, case.params).intermediates.items() if a is not None}
        values = symbols(op, inputs, arrays)
        for name, array in arrays.items():
            side = re.fullmatch(r"(mean|var)_ratio_(.*)", name)
            if side:  # SSN: a side's SparsestMax stages, as sparsestmax's with no batch axes
                assert "`mean_ratio_<a>`, `var_ratio_<a>`" in text, name
                key, shape = STAGE.sub("stage<i>_", side.group(2)), expected_shape(stage_rows[STAGE.sub("stage<i>_", side.group(2))], {**values, "...": ()})
            else:
                key = STAGE.sub("stage<i>_", name)
                if not documented:  # the EN stages: one-row tables naming the intermediate with its shape
                    assert f"`{key}`" in text, f"{op}: intermediate {name} is not documented"
                    continue
                assert key in documented, f"docs/conformance.md does not document {op}'s intermediate {name}"
                shape = expected_shape(documented[key], values)
            assert array.shape == shape, f"{case.id}: {name} has shape {array.shape}, the page says {shape}"
            checked += 1
    assert checked or not documented


def test_the_page_documents_what_the_porters_stumbled_on():
    text = PAGE.read_text(encoding="utf-8")
    assert "whether or not `bn` is in the normalizer set" in text, "eval cases pass running statistics even without BN"
    assert "0.997" in sections()["sparse_switch_norm"] and "**−1**" in sections()["sparse_switch_norm"]
    assert math.isclose(float(re.search(r"`momentum` \| `([\d.]+)`", sections()["switch_norm"]).group(1)), 0.9)
