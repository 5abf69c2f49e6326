"""A small golden set to attack: the sample cases of sparsemax, generated once per test module
(``pristine``), and a fresh copy of it per test (``victim``). Import both fixtures into a test
module to use them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refnorm.oracle import golden

SMALL = {"kinds": ("sample",), "ops": ("sparsemax",)}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small-golden") / "set"
    golden.generate(out, **SMALL)
    return out


@pytest.fixture
def victim(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "set"
    shutil.copytree(pristine, target)
    return target
