"""The ``refnorm`` command line."""

from __future__ import annotations

import dataclasses
import json
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


KINKS = [c.id for c in catalog.cases() if c.kink and c.kind != "error"]


def test_check_reports_the_cases_on_a_kink_as_neither_passed_nor_failed(capsys):
    """At a declared kink finite differences compare nothing: not a pass (nothing was proven), not a failure."""
    ops = ("sparsemax", "sparse_switch_norm")
    assert main(["check", "--kind", "reference", "--op", ops[0], "--op", ops[1], "--json", "-"]) == 0
    captured = capsys.readouterr()
    kinked = {c.id for op in ops for c in catalog.cases(kind="reference", op=op) if c.kink}
    assert kinked, "the selection holds cases on a kink"
    assert f"{len(kinked)} on a kink (nothing to compare, none failed), 0 failed" in captured.err
    statuses = {case["id"]: case["status"] for case in json.loads(captured.out)["cases"]}
    assert {name for name, status in statuses.items() if status == "skipped"} == kinked
    assert all(statuses[name] == "passed" for name in statuses.keys() - kinked)


def test_check_fails_a_wrong_backward_at_a_case_on_a_kink(monkeypatch, capsys):
    """The kink verdict needs every failure to be a kink: a backward that is wrong where it can be compared fails."""
    op = catalog.OPS["sparse_switch_norm"]

    def wrong(inputs, params):
        forward = op.forward(inputs, params)
        good = forward.linearized
        return forward._replace(linearized=good._replace(pullback=lambda dy: tuple(2 * g for g in good.pullback(dy))))

    monkeypatch.setitem(catalog.OPS, "sparse_switch_norm", dataclasses.replace(op, forward=wrong))
    case = "sparse_switch_norm/official-train-one-hot-logits"
    assert case in KINKS
    assert main(["check", "--kind", "reference", "--case", case]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "0 passed, 1 failed" in out


def test_check_fails_a_case_on_a_kink_when_nothing_was_checked_at_all(monkeypatch, capsys):
    """A result with no arguments is not "on a kink": it proved nothing and claimed no kink."""
    from refnorm.oracle.gradient_check import GradcheckResult

    monkeypatch.setattr("refnorm.cli.gradcheck_case", lambda case, **options: GradcheckResult((), "directional", 1e-7, 1e-10))
    assert main(["check", "--kind", "reference", "--case", "sparsemax/K3-one-hot-logits"]) == 1
    assert "0 passed, 1 failed" in capsys.readouterr().out


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


# --------------------------------------------------------------------------------------------
# refnorm check: selection, failures only, n/a, JSON
# --------------------------------------------------------------------------------------------


def test_check_selects_ops_cases_and_kinds(capsys):
    assert main(["check", "--op", "sparsemax", "--op", "en_softmax", "--case", "*K3*"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if "/" in line.split(" ")[0]]
    assert set(rows) == {c.id for c in catalog.cases(kind="sample") if c.op in ("sparsemax", "en_softmax") and "K3" in c.id}
    assert main(["check", "--kind", "reference", "--case", "sparsemax/K3-vector"]) == 0
    assert "1 reference cases over 1 ops (sparsemax)" in capsys.readouterr().out


def test_check_refuses_a_pattern_that_matches_nothing(capsys):
    assert main(["check", "--case", "switch_norm/no-such-case"]) == 2
    assert "--case 'switch_norm/no-such-case' matches no case" in capsys.readouterr().err


def test_check_prints_na_where_no_relative_error_applies(capsys):
    assert main(["check", "--op", "exemplar_norm", "--case", "*default*", "--json", "-"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    not_applicable = {(c["id"], a["argument"]) for c in report["cases"] for a in c["details"]["arguments"] if a["max_rel_error"] is None}
    assert not_applicable, "EN at its initialisation has zero gradients: no relative error applies"
    rows = {tuple(line.split()[:2]): line for line in captured.err.splitlines() if line.startswith("exemplar_norm/")}
    for key, line in rows.items():  # case, argument, checked, skipped, max abs err, max rel err, the derivative checks, verdict
        assert (line.split()[5] == "n/a") == (key in not_applicable), line
    assert all(rows[key].endswith("  ok") for key in not_applicable)


def test_check_failures_only_and_json_on_a_failure(monkeypatch, capsys):
    op = catalog.OPS["switch_norm"]

    def wrong(inputs, params):
        forward = op.forward(inputs, params)
        good = forward.linearized
        doubled = Linearized(out=good.out, pullback=lambda dy: tuple(2 * g if i == 1 else g for i, g in enumerate(good.pullback(dy))))
        return forward._replace(linearized=doubled)

    monkeypatch.setitem(catalog.OPS, "switch_norm", dataclasses.replace(op, forward=wrong))
    assert main(["check", "--op", "switch_norm", "--case", "switch_norm/paper-train-[34]d", "--failures-only", "--json", "-"]) == 1
    captured = capsys.readouterr()
    rows = [line for line in captured.err.splitlines() if line.startswith("switch_norm/")]
    assert rows and all(" gamma " in row and "FAIL" in row for row in rows), "only the failing argument is printed"
    report = json.loads(captured.out)
    assert report["tool"] == "refnorm check" and report["counts"]["failed"] == 2 and not report["passed"]
    gamma = next(a for a in report["cases"][0]["details"]["arguments"] if a["argument"] == "gamma")
    assert gamma["passed"] is False and gamma["failures"]


def test_check_writes_junit_xml(tmp_path, capsys):
    import xml.etree.ElementTree as ElementTree

    assert main(["check", "--op", "sparsemax", "--junit-xml", str(tmp_path / "check.xml")]) == 0
    suite = ElementTree.parse(tmp_path / "check.xml").getroot().find("testsuite")
    assert suite.get("tests") == str(len(catalog.cases(kind="sample", op="sparsemax"))) and suite.get("failures") == "0"
    assert main(["check", "--op", "sparsemax", "--junit-xml", str(tmp_path / "no-such-dir" / "check.xml")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Blemishes: help, info, list, a closed pipe
# --------------------------------------------------------------------------------------------


def test_help_texts_are_plain_and_every_command_has_a_description(capsys):
    for command in ([], ["check"], ["info"], ["golden"], ["golden", "generate"], ["golden", "verify"], ["golden", "compare"], ["golden", "list"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        out = capsys.readouterr().out
        assert "``" not in out, command
        description = out.split("\n\n")[1]
        assert not description.lstrip().startswith(("positional arguments", "options")), f"{command} has no description"


def test_info_names_numpy_once(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert sum(line.split()[0] == "numpy" for line in out.splitlines() if line.strip()) == 2, "one backend line, one device line"
    assert sum(line.strip().startswith("numpy ") and line.strip().split()[1][0].isdigit() for line in out.splitlines()) == 1


def test_list_shows_an_error_case_with_its_bad_input_and_the_real_message(capsys):
    assert main(["golden", "list", "--kind", "error", "--op", "switch_norm", "--case", "switch_norm/x-rank1", "--case", "*gamma-shape"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    rank1, gamma = lines
    assert "inputs: x of shape (4,)" in rank1 and "shape=(2, 4, 3, 3)" not in rank1, "the bad shape, not the default one"
    assert "raises ValueError: x has shape (4,), expected (N, C, *spatial) with rank >= 2" in rank1, "the message, not its regex"
    assert "\\(" not in gamma and "inputs: gamma of shape (5,)" in gamma


def test_list_selects_and_writes_json(capsys):
    assert main(["golden", "list", "--op", "sparsemax", "--op", "sparsestmax", "--case", "*K3*", "--case", "*/K1", "--json", "-"]) == 0
    captured = capsys.readouterr()
    listing = json.loads(captured.out)
    expected = [c.id for kind in catalog.KINDS for op in ("sparsemax", "sparsestmax") for c in catalog.cases(kind=kind, op=op)
                if "K3" in c.id or c.name == "K1"]  # fmt: skip
    assert [c["id"] for c in listing["cases"]] == expected
    error = next(c for c in listing["cases"] if c["kind"] == "error")
    assert error["raises"]["type"] and error["raises"]["message"] and "inputs" in error
    assert main(["golden", "list", "--case", "nothing-matches-this"]) == 2


def test_a_listing_into_a_closed_pipe_exits_0_without_a_traceback():
    script = "import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'refnorm', 'golden', 'list'], stdout=subprocess.PIPE, stderr=subprocess.PIPE); p.stdout.readline(); p.stdout.close(); err = p.stderr.read(); sys.exit(f'{p.wait()} {err!r}')"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    status, _, stderr = completed.stderr.strip().partition(" ")
    assert status == "0", completed.stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_a_verdict_into_a_closed_pipe_keeps_its_exit_status(golden_copy):
    """``refnorm golden verify DIR | head``: the reader leaves, the verdict still decides the exit status."""
    script = (
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'refnorm', 'golden', 'verify', sys.argv[1], '--quiet'], "
        "stdout=subprocess.PIPE, stderr=subprocess.PIPE); p.stdout.readline(); p.stdout.close(); err = p.stderr.read(); sys.exit(f'{p.wait()} {err!r}')"
    )
    victim = next(golden_copy.rglob("*.npz"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    completed = subprocess.run([sys.executable, "-c", script, str(golden_copy)], capture_output=True, text=True)
    assert completed.stderr.strip().partition(" ")[0] == "1", completed.stderr
    assert "Traceback" not in completed.stderr


# --------------------------------------------------------------------------------------------
# refnorm golden verify: --case, --failures-only, reports
# --------------------------------------------------------------------------------------------


@pytest.fixture
def golden_copy(tmp_path):
    from refnorm.oracle import golden

    golden.generate(tmp_path / "set", kinds=("sample",), ops=("sparsemax", "en_softmax"))
    return tmp_path / "set"


SUBSET = ["--kind", "sample", "--op", "sparsemax", "--op", "en_softmax"]
"""What golden_copy was generated for: verify checks a set against what it is asked to expect."""


def test_verify_selects_cases_and_writes_reports(golden_copy, tmp_path, capsys):
    import xml.etree.ElementTree as ElementTree

    assert main(["golden", "verify", str(golden_copy), *SUBSET, "--quiet", "--case", "sparsemax/*", "--json", str(tmp_path / "v.json"),
                 "--junit-xml", str(tmp_path / "v.xml")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "en_softmax/" not in out and "sparsemax/K3 " in out
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["tool"] == "refnorm golden verify" and report["passed"] is True
    assert [c["id"] for c in report["cases"]] == [c.id for c in catalog.cases(kind="sample", op="sparsemax")]
    assert report["cases"][0]["details"]["recomputed"] is True
    assert ElementTree.parse(tmp_path / "v.xml").getroot().find("testsuite").get("failures") == "0"
    assert main(["golden", "verify", str(golden_copy), *SUBSET, "--quiet", "--case", "nothing/*"]) == 2


def test_verify_failures_only_and_json_on_standard_output(golden_copy, capsys):
    victim = golden_copy / "sparsemax" / "K3.npz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert main(["golden", "verify", str(golden_copy), *SUBSET, "--quiet", "--failures-only", "--json", "-"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["counts"]["failed"] == 1 and next(c for c in report["cases"] if c["status"] == "failed")["id"] == "sparsemax/K3"
    rows = [line.split()[0] for line in captured.err.splitlines() if "/" in line.split(" ")[0] and line.split()[0].count("/") == 1]
    assert rows == ["sparsemax/K3"], "--failures-only; the text goes to standard error"
