"""The ``refnorm`` command line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import refnorm
from refnorm import Linearized
from refnorm.oracle import catalog
from refnorm.cli import main


def test_check_passes_and_prints_a_table(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "max abs err" in out and "max rel err" in out
    for op in catalog.OPS:
        assert f"{op}/" in out
    assert " 0 failed" in out


def test_check_exits_non_zero_when_a_backward_is_wrong(monkeypatch, capsys):
    op = catalog.OPS["switch_norm"]

    def wrong(inputs, params):
        forward = op.forward(inputs, params)
        good = forward.linearized
        return forward._replace(linearized=Linearized(out=good.out, pullback=lambda dy: tuple(2 * g for g in good.pullback(dy))))

    monkeypatch.setitem(catalog.OPS, "switch_norm", dataclasses.replace(op, forward=wrong))
    assert main(["check", "--op", "switch_norm"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_info_prints_version_and_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"refnorm {refnorm.__version__}" in out
    assert "numpy" in out and "array_api_strict" in out


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2


def test_python_dash_m_refnorm_runs():
    completed = subprocess.run([sys.executable, "-m", "refnorm", "--version"], capture_output=True, text=True, check=True)
    assert completed.stdout.startswith("refnorm ")
