"""Audit 2, class 5 (crashes): a count of directions the checker cannot hold.

``refnorm check --directions 99999999999999999999`` tried to draw that many cotangents at once (memory
exhausted, then a MemoryError traceback), and ``--directions -1`` ran every case to report each one
as an ERROR (exit 1, "4 failed") though no case was checked: a usage error looked like failing
gradients. The count is bounded in :func:`gradcheck` (:data:`MAX_DIRECTIONS`) and checked by the
command line before any case runs (exit 2).

A ``--json``/``--junit-xml`` report whose write fails (a full disk: ``/dev/full``; ``/proc/version``)
and ``golden generate --out ""`` ended in tracebacks; both are one line and exit 2.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from refnorm.cli import main
from refnorm.ops.sparsestmax import sparsemax_linearize
from refnorm.oracle.gradient_check import MAX_DIRECTIONS, gradcheck


@pytest.mark.parametrize("count", ["-1", "0", str(MAX_DIRECTIONS + 1), "99999999999999999999", "x", "1.5"])
def test_check_refuses_a_count_of_directions_as_a_usage_error(capsys, count: str):
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--op", "sparsemax", "--directions", count])
    captured = capsys.readouterr()
    assert exit_.value.code == 2
    assert "--directions" in captured.err and "from 1 to" in captured.err
    assert "Traceback" not in captured.out + captured.err and "sparsemax/" not in captured.out


def test_gradcheck_refuses_more_directions_than_it_can_hold():
    logits = np.array([0.3, -0.2, 0.9])
    with pytest.raises(ValueError, match=r"directions must be an int <= \d+ .*jacobian"):
        gradcheck(sparsemax_linearize, [logits], directions=10**20)



@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full, a file every write to fails with ENOSPC")
@pytest.mark.parametrize("option", ["--json", "--junit-xml"])
def test_a_report_that_cannot_be_written_is_one_line_and_exit_2(capsys, option: str):
    code = main(["check", "--op", "sparsemax", "--directions", "1", "--failures-only", option, "/dev/full"])
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.err
    assert captured.err.strip().splitlines()[-1] == f"refnorm: cannot write the {option} report to /dev/full: No space left on device"


def test_generate_with_an_empty_out_is_a_usage_error(capsys):
    code = main(["golden", "generate", "--out", "", "--op", "sparsemax", "--quiet"])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    assert "out must be a path" in captured.err
