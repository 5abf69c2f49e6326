"""The architecture of ``refnorm.ops``: the math imports none of the tooling, and a layer call is
checked once, at its public entry point (SN, SSN, the plain normalizers, EN and SyncSN alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import refnorm
from refnorm.ops import layer

OPS_DIR = Path(refnorm.__file__).resolve().parent / "ops"
TOOLING = ("refnorm.oracle", "refnorm.testing", "refnorm.cli")


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, relative imports resolved against ``refnorm.ops``."""
    package = ["refnorm", "ops"]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from .. import oracle`
    return found


OPS_MODULES = sorted(OPS_DIR.glob("*.py"))


def test_the_ops_modules_are_found():
    assert {"switchnorm.py", "switchnorm_sharded.py", "exemplarnorm.py", "ratio_generator.py", "layer.py"} <= {p.name for p in OPS_MODULES}


@pytest.mark.parametrize("path", OPS_MODULES, ids=lambda path: path.name)
def test_the_math_imports_nothing_from_the_tooling(path):
    tooling = sorted(m for m in _imported_modules(path) if m.startswith(TOOLING) or m in ("refnorm.oracle", "refnorm"))
    assert not tooling, f"refnorm/ops/{path.name} imports {tooling}; refnorm.ops must not depend on the tooling"


def test_the_import_walk_sees_relative_imports_of_the_tooling(tmp_path):
    """The test above can fail: a planted ``from ..oracle import golden`` is seen."""
    planted = tmp_path / "planted.py"
    planted.write_text("from ..oracle import golden\nfrom ..oracle.catalog import cases\nfrom . import statistics\n")
    assert {"refnorm.oracle", "refnorm.oracle.golden", "refnorm.oracle.catalog"} <= _imported_modules(planted)
    assert "refnorm.ops.statistics" in _imported_modules(planted)


# --------------------------------------------------------------------------------------------
# One check of a layer call
# --------------------------------------------------------------------------------------------


def _calls():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 2, 2))
    dy = rng.standard_normal(x.shape)
    gamma, beta, logits = np.ones(4), np.zeros(4), np.zeros(3)
    params = refnorm.exemplar_norm_init(4, x)
    return {
        "switch_norm": lambda: refnorm.switch_norm_backward(dy, refnorm.switch_norm_forward(x, gamma, beta, logits, logits).cache),
        "sparse_switch_norm": lambda: refnorm.sparse_switch_norm_backward(
            dy, refnorm.sparse_switch_norm_forward(x, gamma, beta, logits, logits, radius=0.3).cache
        ),
        "plain_norm": lambda: refnorm.plain_norm_backward(dy, refnorm.plain_norm_forward(x, gamma, beta, normalizer="bn").cache),
        "exemplar_norm": lambda: refnorm.exemplar_norm_backward(dy, refnorm.exemplar_norm_forward(x, *params).cache),
        "switch_norm_sharded": lambda: refnorm.switch_norm_sharded_backward(
            [dy[:1], dy[1:]], refnorm.switch_norm_sharded_forward([x[:1], x[1:]], gamma, beta, logits, logits).cache
        ),
    }


@pytest.mark.parametrize("op", sorted(_calls()))
def test_a_layer_call_is_checked_once(op, monkeypatch):
    """The shared check of the options, parameters and running state runs once per forward; the
    stages, the ratio functions and the backward do not check them again."""
    count = []
    original = layer.check_layer_arguments
    monkeypatch.setattr(layer, "check_layer_arguments", lambda *a, **k: count.append(1) or original(*a, **k))
    if op == "switch_norm_sharded":  # it checks its shards itself, then the layer arguments
        from refnorm.ops import switchnorm_sharded

        monkeypatch.setattr(switchnorm_sharded, "check_layer_arguments", layer.check_layer_arguments)
    _calls()[op]()
    assert len(count) == 1


@pytest.mark.parametrize(
    ("backward", "forward"),
    [
        (refnorm.switch_norm_backward, "switch_norm_forward"),
        (refnorm.exemplar_norm_backward, "exemplar_norm_forward"),
        (refnorm.switch_norm_sharded_backward, "switch_norm_sharded_forward"),
    ],
)
def test_a_backward_given_another_ops_cache_says_which_cache_it_needs(backward, forward):
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 2))
    other = refnorm.plain_norm_forward(x, np.ones(3), np.zeros(3), normalizer="ln").cache
    if backward is refnorm.switch_norm_backward:
        other = refnorm.exemplar_norm_forward(x, *refnorm.exemplar_norm_init(3, x)).cache
    with pytest.raises(TypeError, match=rf"cache must be the \w+ that {forward} returns, got \w+Cache"):
        backward(x, other)
