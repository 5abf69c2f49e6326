"""Machine-readable reports: one model of a verdict, written as JSON or JUnit XML.

``refnorm check``, ``refnorm golden verify``, ``refnorm golden compare`` and the conformance kit
(:func:`~refnorm.oracle.conformance.run_conformance`) all judge a list of named cases. Each builds a
:class:`Report` (one :class:`CaseEntry` per case, with a status and the arrays it compared) and
hands it to :func:`write_json` or :func:`write_junit_xml`, so a CI system reads every one of them
the same way.

Statuses (pytest's words): ``passed``, ``failed``, ``xfailed`` (an expected failure that failed),
``xpassed`` (an expected failure that passed: a failure, the expectation is stale), ``skipped``
and ``error`` (the judging itself could not run, e.g. an unreadable file). A report passes when
no case failed, errored or passed unexpectedly and no report-level problem was found.

JSON (``schema: "refnorm-report"``, version 1)::

    {"schema": "refnorm-report", "schema_version": 1, "tool": "refnorm golden compare",
     "refnorm_version": "0.1.0", "passed": false,
     "counts": {"passed": 12, "failed": 1, ...}, "context": {...}, "problems": [...], "notes": [...],
     "cases": [{"id": "switch_norm/paper-train-4d", "op": "switch_norm", "name": "paper-train-4d",
                "status": "failed", "message": "...", "arrays": [{"array": "grad.x", "passed": false,
                "worst_index": [1, 0, 2, 2], "actual": ..., "expected": ..., "abs_error": ...,
                "rel_error": ..., "rtol": ..., "atol": ..., ...}], "missing": [...], "extra": [...],
                "problems": [...], "details": {...}}]}

JSON has no NaN or infinity: non-finite numbers are written as the strings ``"NaN"``, ``"inf"``
and ``"-inf"`` (:func:`refnorm.oracle.tolerances.json_float`). ``docs/conformance.md`` describes
every field.

JUnit XML: one ``<testsuite>`` named after the tool, one ``<testcase classname="refnorm.<op>"
name="<case name>">`` per case with a ``<failure>`` (failed, xpassed), ``<error>`` or ``<skipped>``
(skipped, and xfailed as pytest writes it: ``type="pytest.xfail"``) child; report-level problems
become one more failing test case named after the tool's subject (``results directory``, ...).
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tolerances import Comparison, json_float

__all__ = ["FAILING", "SCHEMA", "SCHEMA_VERSION", "STATUSES", "CaseEntry", "Report", "json_data", "json_text", "junit_xml_text", "write_json", "write_junit_xml"]

SCHEMA = "refnorm-report"
"""The ``schema`` field of every JSON report."""
SCHEMA_VERSION = 1
"""The ``schema_version`` field: raised when a field changes meaning or is removed (not when one is added)."""
STATUSES = ("passed", "failed", "xfailed", "xpassed", "skipped", "error")
"""A case's status, in pytest's words (module docstring)."""
FAILING = frozenset({"failed", "xpassed", "error"})
"""The statuses that make a report fail."""


@dataclass(frozen=True)
class CaseEntry:
    """The verdict on one case."""

    id: str
    """The case id, ``<op>/<case name>``."""
    status: str
    """One of :data:`STATUSES`."""
    message: str = ""
    """Why it failed (a short paragraph), or the reason it was skipped or expected to fail."""
    comparisons: tuple[Comparison, ...] = ()
    """Every array compared, agreeing or not (:class:`~refnorm.oracle.tolerances.Comparison`)."""
    missing: tuple[str, ...] = ()
    """Arrays (or files) that should have been there and were not."""
    extra: tuple[str, ...] = ()
    """Things that should not be there (unknown array names)."""
    problems: tuple[str, ...] = ()
    """Anything else that went wrong (an exception, an unreadable file)."""
    details: Mapping[str, Any] | None = None
    """JSON data particular to the tool (``refnorm check``: the error per argument); ``{}`` when not given."""
    seconds: float | None = None
    """Time spent on the case, if measured."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}, expected one of {STATUSES}")
        object.__setattr__(self, "details", dict(self.details or {}))

    @property
    def op(self) -> str:
        return self.id.split("/", 1)[0] if "/" in self.id else ""

    @property
    def name(self) -> str:
        return self.id.split("/", 1)[1] if "/" in self.id else self.id

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    @property
    def mismatches(self) -> tuple[Comparison, ...]:
        """The comparisons that failed."""
        return tuple(c for c in self.comparisons if not c.passed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "op": self.op,
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "arrays": [c.as_dict() for c in self.comparisons],
            "missing": list(self.missing),
            "extra": list(self.extra),
            "problems": list(self.problems),
            "details": json_data(self.details),
            "seconds": json_float(self.seconds),
        }


@dataclass(frozen=True)
class Report:
    """A tool's verdict on a list of cases (module docstring).

    ``problems`` are failures not tied to one case (a file outside the set, a manifest that does
    not verify); ``notes`` are informational (cases present but not selected, ...).
    """

    tool: str
    cases: tuple[CaseEntry, ...]
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    context: Mapping[str, Any] | None = None
    subject: str = "set"
    """What the report-level problems are about (``results directory``, ``golden set``); the
    name of the extra JUnit test case that carries them."""
    seconds: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", dict(self.context or {}))

    @property
    def passed(self) -> bool:
        """No failed, errored or unexpectedly passing case, and no report-level problem."""
        return not self.problems and not any(c.failed for c in self.cases)

    @property
    def counts(self) -> dict[str, int]:
        """``{status: number of cases}`` for every status (zeros included), in :data:`STATUSES` order."""
        return {status: sum(c.status == status for c in self.cases) for status in STATUSES}

    def summary(self) -> str:
        """One line: ``412 cases: 400 passed, 2 failed, 10 skipped; 1 problem``."""
        parts = [f"{n} {status}" for status, n in self.counts.items() if n]
        text = f"{len(self.cases)} cases: " + (", ".join(parts) if parts else "none")
        if self.problems:
            text += f"; {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''} ({self.subject})"
        return text

    def as_dict(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "tool": self.tool,
            "refnorm_version": __version__,
            "passed": self.passed,
            "counts": self.counts,
            "summary": self.summary(),
            "context": json_data(self.context),
            "problems": list(self.problems),
            "notes": list(self.notes),
            "seconds": json_float(self.seconds),
            "cases": [c.as_dict() for c in self.cases],
        }


def json_data(value: Any) -> Any:
    """``value`` as strict JSON data: tuples as lists, non-finite floats as strings, paths as strings."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, Mapping):
        return {str(k): json_data(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [json_data(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):  # a NumPy scalar
        return json_data(value.item())
    return str(value)


def json_text(report: Report) -> str:
    """The report as JSON text (2-space indentation, a final newline)."""
    return json.dumps(report.as_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _junit_case(entry: CaseEntry) -> ElementTree.Element:
    element = ElementTree.Element("testcase", classname=f"refnorm.{entry.op or 'case'}", name=entry.name)
    if entry.seconds is not None:
        element.set("time", f"{entry.seconds:.3f}")
    lines = list(entry.problems) + [f"missing: {m}" for m in entry.missing] + [f"extra: {e}" for e in entry.extra]
    lines += [c.brief() for c in entry.mismatches]
    text = "\n".join(([entry.message] if entry.message else []) + lines)
    first = (text.splitlines() or [entry.status])[0]
    if entry.status == "failed":
        ElementTree.SubElement(element, "failure", message=first, type="refnorm.mismatch").text = text
    elif entry.status == "xpassed":
        ElementTree.SubElement(element, "failure", message=f"[XPASS(strict)] {entry.message}", type="refnorm.xpass").text = text
    elif entry.status == "error":
        ElementTree.SubElement(element, "error", message=first, type="refnorm.error").text = text
    elif entry.status == "skipped":
        ElementTree.SubElement(element, "skipped", message=entry.message, type="refnorm.skip")
    elif entry.status == "xfailed":
        ElementTree.SubElement(element, "skipped", message=f"expected failure: {entry.message}", type="pytest.xfail").text = text
    return element


def junit_xml_text(report: Report) -> str:
    """The report as JUnit XML (module docstring)."""
    entries = [_junit_case(entry) for entry in report.cases]
    if report.problems:
        problem = ElementTree.Element("testcase", classname="refnorm", name=report.subject)
        ElementTree.SubElement(problem, "failure", message=report.problems[0], type="refnorm.problem").text = "\n".join(report.problems)
        entries.append(problem)
    counts = report.counts
    totals = {
        "tests": str(len(entries)),
        "failures": str(counts["failed"] + counts["xpassed"] + (1 if report.problems else 0)),
        "errors": str(counts["error"]),
        "skipped": str(counts["skipped"] + counts["xfailed"]),
    }
    if report.seconds is not None:
        totals["time"] = f"{report.seconds:.3f}"
    root = ElementTree.Element("testsuites", name=report.tool, **totals)
    suite = ElementTree.SubElement(root, "testsuite", name=report.tool, **totals)
    properties = ElementTree.SubElement(suite, "properties")
    for key, value in json_data(report.context).items():
        ElementTree.SubElement(properties, "property", name=key, value=value if isinstance(value, str) else json.dumps(value))
    suite.extend(entries)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


def _write(text: str, destination: str | os.PathLike[str]) -> None:
    if os.fspath(destination) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    Path(destination).write_text(text, encoding="utf-8")


def write_json(report: Report, destination: str | os.PathLike[str]) -> None:
    """Write ``report`` as JSON to a file, or to standard output for ``"-"``."""
    _write(json_text(report), destination)


def write_junit_xml(report: Report, destination: str | os.PathLike[str]) -> None:
    """Write ``report`` as JUnit XML to a file, or to standard output for ``"-"``."""
    _write(junit_xml_text(report), destination)
