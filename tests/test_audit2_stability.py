"""Audit 2, class 8 (golden stability): a case's file is the same bytes whichever process, hash
seed, selection or backend wrote it.

The audit generated four ops' sets (every kind) in processes with different ``PYTHONHASHSEED``, in
reversed op order, per op and kind, and on array-api-strict and PyTorch, and found every file
identical (inputs bit for bit on every backend, outputs within rounding); these tests keep it so.
One thing differed: the manifest (and its sidecar) followed the order ``--op``/``--kind`` were
listed in, so ``--op a --op b`` and ``--op b --op a`` wrote the same cases in different bytes (a
``git diff`` of a regeneration showed every entry moved). The names are now taken in the
catalog's order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refnorm.oracle import golden

OPS = ("sparsemax", "sparse_switch_norm")


def _files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _generate_in_a_process(out: Path, hash_seed: str, *options: str) -> dict[str, bytes]:
    command = [sys.executable, "-m", "refnorm", "golden", "generate", "--quiet", "--out", str(out), *options]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
    return _files(out)


@pytest.fixture(scope="module")
def both_ops(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return _generate_in_a_process(tmp_path_factory.mktemp("stability") / "set", "1", *(o for op in OPS for o in ("--op", op)))


def test_a_set_is_the_same_bytes_in_processes_with_other_hash_seeds(both_ops: dict[str, bytes], tmp_path: Path):
    reversed_order = [o for op in reversed(OPS) for o in ("--op", op)]
    assert _generate_in_a_process(tmp_path / "set", "4242", *reversed_order) == both_ops


@pytest.mark.parametrize("kind", ["sample", "reference", "error"])
def test_a_case_file_does_not_depend_on_which_cases_were_selected_with_it(both_ops: dict[str, bytes], tmp_path: Path, kind: str):
    golden.generate(tmp_path / "set", kinds=(kind,), ops=("sparse_switch_norm",))
    subset = {name: data for name, data in _files(tmp_path / "set").items() if name.endswith(".npz")}
    assert subset and all(both_ops[name] == data for name, data in subset.items())


def test_array_api_strict_computes_from_the_same_inputs_to_rounding(both_ops: dict[str, bytes], tmp_path: Path):
    pytest.importorskip("array_api_strict", reason="the array-api-strict backend is a test extra")
    golden.generate(tmp_path / "set", ops=("sparsemax",), backend="array-api-strict")
    for name, data in _files(tmp_path / "set").items():
        if not name.endswith(".npz"):
            continue
        numpy_path = tmp_path / "numpy.npz"
        numpy_path.write_bytes(both_ops[name])
        strict, numpy = golden.load_arrays(tmp_path / "set" / name), golden.load_arrays(numpy_path)
        assert strict.keys() == numpy.keys(), name
        for key in strict:
            if key.split(".", 1)[0] in ("input", "upstream", "tangent"):
                assert strict[key].dtype == numpy[key].dtype and strict[key].tobytes() == numpy[key].tobytes(), f"{name} {key}"
            else:
                np.testing.assert_allclose(strict[key], numpy[key], rtol=1e-12, atol=1e-14, err_msg=f"{name} {key}")


def test_the_manifest_does_not_depend_on_the_order_ops_and_kinds_are_listed_in(tmp_path: Path):
    golden.generate(tmp_path / "a", kinds=("sample", "error"), ops=("sparsemax", "en_softmax"))
    golden.generate(tmp_path / "b", kinds=("error", "sample"), ops=("en_softmax", "sparsemax"))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
