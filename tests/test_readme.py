"""The README's "Use refnorm as an oracle" test runs as written (with the example's PyTorch SN as
``mypackage.switch_norm``); skipped without PyTorch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from refnorm.oracle.catalog import cases

pytest.importorskip("torch", reason="the README's oracle example uses PyTorch")

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_oracle_example_runs_and_passes(pytester: pytest.Pytester):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"<!-- oracle-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    pytester.makepyfile(
        mypackage=f"""
        import sys
        sys.path.insert(0, {str(ROOT / "examples")!r})
        import torch_switchnorm

        def switch_norm(*args, **kwargs):
            return torch_switchnorm.switch_norm(*args, **kwargs)  # (y, statistics under refnorm's names)
        """
    )
    pytester.makepyfile(test_switchnorm_conformance=snippet)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    selected = cases(kind="sample", op="switch_norm") + cases(kind="reference", op="switch_norm")
    gn = sum("gn" in c.name for c in selected)
    result.assert_outcomes(passed=len(selected) - gn, skipped=gn)
