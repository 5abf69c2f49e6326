"""The machine-readable reports (``refnorm/oracle/reports.py``): one model, strict JSON, JUnit XML
that CI systems read, and a verdict that fails closed."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from refnorm.oracle.reports import STATUSES, CaseEntry, Report, json_text, junit_xml_text
from refnorm.oracle.tolerances import compare


def entries() -> tuple[CaseEntry, ...]:
    bad = compare(np.array([1.0, np.nan, np.inf]), np.array([1.0, 2.0, 3.0]), rtol=1e-7, atol=1e-7, array="output.y")
    good = compare(np.array([1.0]), np.array([1.0]), rtol=1e-7, atol=1e-7, array="grad.x")
    return (
        CaseEntry("sparsemax/K2", "passed", comparisons=(good,)),
        CaseEntry("sparsemax/K3", "failed", "1 of 2 arrays differ: output.y", comparisons=(bad, good), missing=("grad.logits",)),
        CaseEntry("sparsemax/K4", "xfailed", "a known bug"),
        CaseEntry("sparsemax/K5", "xpassed", "expected to fail but passed"),
        CaseEntry("sparsemax/K6", "skipped", "not implemented"),
        CaseEntry("sparsemax/K7", "error", "OSError: unreadable", problems=("OSError: unreadable",)),
    )


def test_a_report_passes_only_without_failures_errors_xpasses_and_problems():
    every = entries()
    assert not Report("t", every).passed
    assert Report("t", tuple(e for e in every if e.status in ("passed", "xfailed", "skipped"))).passed
    for status in ("failed", "xpassed", "error"):
        assert not Report("t", (CaseEntry("a/b", status),)).passed, status
    assert not Report("t", (CaseEntry("a/b", "passed"),), problems=("an extra file",)).passed
    assert Report("t", every).counts == dict.fromkeys(STATUSES, 1)
    with pytest.raises(ValueError, match="status 'ok'"):
        CaseEntry("a/b", "ok")


def test_json_is_strict_and_names_non_finite_numbers():
    text = json_text(Report("refnorm golden compare", entries(), problems=("notes.txt: not an .npz file",), context={"against": "x"}))
    report = json.loads(text, parse_constant=lambda name: pytest.fail(f"JSON holds {name}"))
    assert report["schema"] == "refnorm-report" and report["schema_version"] == 1 and report["passed"] is False
    failed = next(c for c in report["cases"] if c["status"] == "failed")
    y = failed["arrays"][0]
    assert (y["actual"], y["max_abs_error"], y["nan"], y["inf"]) == ("NaN", "inf", 1, 1)
    assert failed["missing"] == ["grad.logits"] and (failed["op"], failed["name"]) == ("sparsemax", "K3")
    assert report["problems"] == ["notes.txt: not an .npz file"] and report["context"] == {"against": "x"}


def test_junit_xml_maps_every_status_as_pytest_does():
    root = ElementTree.fromstring(junit_xml_text(Report("refnorm check", entries(), problems=("set problem",), subject="golden set", seconds=1.5)))
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("7", "3", "1", "2")
    children = {case.get("name"): [(child.tag, child.get("type")) for child in case] for case in suite.iter("testcase")}
    assert children == {
        "K2": [], "K3": [("failure", "refnorm.mismatch")], "K4": [("skipped", "pytest.xfail")], "K5": [("failure", "refnorm.xpass")],
        "K6": [("skipped", "refnorm.skip")], "K7": [("error", "refnorm.error")], "golden set": [("failure", "refnorm.problem")],
    }  # fmt: skip
    failure = suite.find("testcase[@name='K3']/failure")
    assert failure.get("message") == "1 of 2 arrays differ: output.y"
    assert "missing: grad.logits" in failure.text and "(1 NaN and 1 inf where refnorm's value is finite)" in failure.text
    assert all(case.get("classname") == "refnorm.sparsemax" for case in suite.iter("testcase") if case.get("name") != "golden set")
    assert math.isclose(float(suite.get("time")), 1.5)
