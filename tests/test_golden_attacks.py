"""Golden sets are authentic or rejected, and generating one never destroys data.

An adversarial suite, one section per class of attack: replacing directories that are not golden
sets (``--force``), interrupting generation at every step, forging a manifest whose sidecar hash is
recomputed, reaching outside the set (paths, links, special files), and malformed input of every
shape (a fuzz over the manifest's structure, hostile ``.npz`` files). Every attack must end in a
failed report or a clean :class:`~refnorm.oracle.golden.GoldenError` naming the problem, never a
traceback, never a pass, never a file touched outside the set.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refnorm import __version__
from refnorm.cli import main
from refnorm.oracle import golden
from refnorm.oracle.catalog import cases

SMALL = dict(kinds=("sample", "error"), ops=("sparsemax",))
"""The set the attacks work on: sparsemax's 4 sample and 5 error cases (fast to verify)."""
CLI_SMALL = ["--kind", "sample", "--kind", "error", "--op", "sparsemax"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("attacks") / "set"
    golden.generate(out, **SMALL)
    assert golden.verify(out, **SMALL).passed
    return out


@pytest.fixture
def victim(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the small set, to attack."""
    target = tmp_path / "set"
    shutil.copytree(pristine, target)
    return target


def manifest_of(directory: Path) -> dict[str, Any]:
    return json.loads((directory / golden.MANIFEST).read_bytes())


def seal(directory: Path, manifest: Any) -> None:
    """Write ``manifest`` and a sidecar that matches it: what anyone who edits a manifest can do."""
    text = golden.manifest_bytes(manifest) if isinstance(manifest, dict) else json.dumps(manifest).encode()
    seal_bytes(directory, text)


def seal_bytes(directory: Path, text: bytes) -> None:
    (directory / golden.MANIFEST).write_bytes(text)
    (directory / golden.MANIFEST_HASH).write_text(f"{hashlib.sha256(text).hexdigest()}  {golden.MANIFEST}\n")


def reseal_file(directory: Path, case_id: str, data: bytes, arrays: dict[str, np.ndarray] | None = None) -> None:
    """Replace a case's file and make every hash in the manifest agree with it."""
    manifest = manifest_of(directory)
    entry = next(e for e in manifest["cases"] if e["id"] == case_id)
    (directory / entry["file"]).write_bytes(data)
    entry["file_sha256"] = hashlib.sha256(data).hexdigest()
    if arrays is not None:
        entry["arrays"] = {k: {"dtype": a.dtype.name, "shape": list(a.shape), "sha256": golden.array_sha256(a)} for k, a in sorted(arrays.items())}
    seal(directory, manifest)


def failures(directory: Path, **options: Any) -> str:
    report = golden.verify(directory, **{**SMALL, **options})
    assert not report.passed, "the attack passed verify"
    return "\n".join(report.failures)


def sample_id() -> str:
    return cases(kind="sample", op="sparsemax")[0].id


def error_id() -> str:
    return cases(kind="error", op="sparsemax")[0].id


def run_cli(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(arguments)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if golden.STAGING_MARK in p.name)


# --------------------------------------------------------------------------------------------
# 1. --force replaces only a complete golden set, and removes only what it lists
# --------------------------------------------------------------------------------------------


def test_the_reproducer_of_the_data_loss_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    d = tmp_path / "d"
    (d / "src").mkdir(parents=True)
    (d / "manifest.json").write_text("{}\n")
    (d / "index.html").write_text("x\n")
    (d / "src" / "app.js").write_text("c\n")
    before = snapshot(d)
    code, _, err = run_cli(["golden", "generate", "--out", str(d), "--op", "en_softmax", "--force", "--quiet"], capsys)
    assert code == 2
    assert "is not a complete refnorm golden set, so it is not replaced even with --force" in err
    assert snapshot(d) == before and leftovers(tmp_path) == []


def _add(directory: Path, what: str) -> None:
    if what == "an unlisted file":
        (directory / "notes.txt").write_text("mine")
    elif what == "an unlisted file in an op directory":
        (directory / "sparsemax" / "mine.npz").write_bytes(b"mine")
    elif what == "an empty directory":
        (directory / "empty").mkdir()
    elif what == "a hidden staging-like directory":
        (directory / ".set.refnorm-staging-0").mkdir()
        (directory / ".set.refnorm-staging-0" / "x").write_text("x")


@pytest.mark.parametrize("extra", ["an unlisted file", "an unlisted file in an op directory", "an empty directory", "a hidden staging-like directory"])
def test_force_refuses_a_set_holding_anything_it_does_not_list(victim: Path, extra: str):
    _add(victim, extra)
    before = snapshot(victim)
    with pytest.raises(golden.GoldenError, match="not a complete refnorm golden set.*which its manifest does not list"):
        golden.generate(victim, kinds=("sample",), ops=("en_softmax",), force=True)
    assert snapshot(victim) == before and leftovers(victim.parent) == []


def _break(directory: Path, how: str, outside: Path) -> None:
    manifest = manifest_of(directory)
    if how == "a listed file is missing":
        (directory / manifest["cases"][0]["file"]).unlink()
    elif how == "the sidecar does not match":
        (directory / golden.MANIFEST_HASH).write_text("0" * 64 + "  manifest.json\n")
    elif how == "no sidecar":
        (directory / golden.MANIFEST_HASH).unlink()
    elif how == "the manifest lists a file outside the set":
        outside.mkdir(exist_ok=True)
        (outside / "x.npz").write_bytes(b"precious")
        manifest["cases"][0]["file"] = "../outside/x.npz"
        seal(directory, manifest)
    elif how == "the manifest lists an absolute path":
        outside.mkdir(exist_ok=True)
        (outside / "x.npz").write_bytes(b"precious")
        manifest["cases"][0]["file"] = str(outside / "x.npz")
        seal(directory, manifest)
    elif how == "a listed file is a link":
        outside.mkdir(exist_ok=True)
        path = directory / manifest["cases"][0]["file"]
        (outside / "x.npz").write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(outside / "x.npz")
    elif how == "an op directory is a link":
        outside.mkdir(exist_ok=True)
        shutil.move(directory / "sparsemax", outside / "sparsemax")
        (directory / "sparsemax").symlink_to(outside / "sparsemax")
    elif how == "the manifest is not JSON":
        seal_bytes(directory, b"{not json")
    elif how == "the manifest is another schema":
        manifest["schema"] = "someone-else"
        seal(directory, manifest)


BREAKS = ["a listed file is missing", "the sidecar does not match", "no sidecar", "the manifest lists a file outside the set",
          "the manifest lists an absolute path", "a listed file is a link", "an op directory is a link", "the manifest is not JSON",
          "the manifest is another schema"]  # fmt: skip


@pytest.mark.parametrize("how", BREAKS)
def test_force_refuses_a_broken_or_foreign_set_and_touches_nothing(victim: Path, tmp_path: Path, how: str):
    outside = tmp_path / "outside"
    _break(victim, how, outside)
    before, outside_before = snapshot(victim), snapshot(outside) if outside.exists() else {}
    with pytest.raises(golden.GoldenError, match="is not a complete refnorm golden set"):
        golden.generate(victim, kinds=("sample",), ops=("en_softmax",), force=True)
    assert snapshot(victim) == before
    assert (snapshot(outside) if outside.exists() else {}) == outside_before
    assert leftovers(tmp_path) == []


def test_force_replaces_a_complete_set_and_removes_only_its_files(victim: Path, tmp_path: Path):
    (tmp_path / "neighbour.txt").write_text("next to the set")
    golden.generate(victim, kinds=("sample",), ops=("en_softmax",), force=True)
    assert golden.verify(victim, kinds=("sample",), ops=("en_softmax",)).passed
    assert not (victim / "sparsemax").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neighbour.txt", "set"]


def test_force_replaces_a_complete_set_of_a_schema_it_cannot_read(victim: Path):
    """A set written by a newer refnorm (another schema version) is still a set: it can be replaced."""
    manifest = manifest_of(victim)
    manifest["schema_version"] = 99
    seal(victim, manifest)
    golden.generate(victim, kinds=("sample",), ops=("en_softmax",), force=True)
    assert golden.verify(victim, kinds=("sample",), ops=("en_softmax",)).passed


def test_an_empty_directory_is_written_without_force(tmp_path: Path):
    (tmp_path / "set").mkdir()
    golden.generate(tmp_path / "set", kinds=("sample",), ops=("en_softmax",))
    assert golden.verify(tmp_path / "set", kinds=("sample",), ops=("en_softmax",)).passed


def test_missing_parents_are_created(tmp_path: Path):
    golden.generate(tmp_path / "a" / "b" / "set", kinds=("sample",), ops=("en_softmax",))
    assert golden.verify(tmp_path / "a" / "b" / "set", kinds=("sample",), ops=("en_softmax",)).passed


@pytest.mark.parametrize("where", ["the set itself (--out .)", "a directory inside the set", "the set via a relative path"])
def test_generating_over_the_current_directory_is_refused(victim: Path, monkeypatch: pytest.MonkeyPatch, where: str, capsys):
    before = snapshot(victim)
    if where == "the set itself (--out .)":
        monkeypatch.chdir(victim)
        out = "."
    elif where == "a directory inside the set":
        monkeypatch.chdir(victim / "sparsemax")
        out = ".."
    else:
        monkeypatch.chdir(victim / "sparsemax")
        out = str(Path("..") / ".." / "set")
    code, _, err = run_cli(["golden", "generate", "--out", out, *CLI_SMALL, "--force", "--quiet"], capsys)
    assert code == 2 and "is inside" in err and "run it from outside" in err
    assert snapshot(victim) == before and leftovers(victim.parent) == [] and leftovers(victim) == []


def test_a_symlinked_out_is_refused(victim: Path, tmp_path: Path, capsys):
    link = tmp_path / "link"
    link.symlink_to(victim)
    before = snapshot(victim)
    code, _, err = run_cli(["golden", "generate", "--out", str(link), *CLI_SMALL, "--force", "--quiet"], capsys)
    assert code == 2 and "is a symbolic link" in err
    assert link.is_symlink() and snapshot(victim) == before and leftovers(tmp_path) == []


def test_an_out_that_is_a_file_is_refused(tmp_path: Path, capsys):
    (tmp_path / "file").write_text("mine")
    code, _, err = run_cli(["golden", "generate", "--out", str(tmp_path / "file"), *CLI_SMALL, "--force", "--quiet"], capsys)
    assert code == 2 and "exists and is not a directory" in err
    assert (tmp_path / "file").read_text() == "mine" and leftovers(tmp_path) == []


def test_an_out_below_a_file_is_refused_cleanly(tmp_path: Path, capsys):
    (tmp_path / "file").write_text("mine")
    code, _, err = run_cli(["golden", "generate", "--out", str(tmp_path / "file" / "set"), *CLI_SMALL, "--quiet"], capsys)
    assert code == 2 and "refnorm golden generate:" in err
    assert (tmp_path / "file").read_text() == "mine"


def test_an_out_named_like_a_staging_directory_is_refused(tmp_path: Path):
    with pytest.raises(golden.GoldenError, match="named like a staging directory"):
        golden.generate(tmp_path / ".set.refnorm-staging-abc", **SMALL)


def test_generate_validates_its_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="kinds names unknown kinds \\['samples'\\]"):
        golden.generate(tmp_path / "s", kinds=["samples"])
    with pytest.raises(ValueError, match="ops names one twice"):
        golden.generate(tmp_path / "s", ops=["sparsemax", "sparsemax"])
    with pytest.raises(TypeError, match="kinds must be a list of names"):
        golden.generate(tmp_path / "s", kinds="sample")
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        golden.generate(tmp_path / "s", backend="tensorflow")
    with pytest.raises(ValueError, match="unknown selection"):
        golden.generate(tmp_path / "s", selection="some")
    with pytest.raises(TypeError, match="force must be True or False, got 'no'"):
        golden.generate(tmp_path / "s", force="no")
    with pytest.raises(TypeError, match="progress must be callable"):
        golden.generate(tmp_path / "s", progress="bar")
    with pytest.raises(TypeError, match="out must be a path"):
        golden.generate(None)
    with pytest.raises(TypeError, match="out must be a path"):
        golden.generate("")
    assert list(tmp_path.iterdir()) == []


def test_verify_and_read_case_validate_their_arguments(pristine: Path):
    with pytest.raises(TypeError, match="directory must be a path"):
        golden.verify(None)
    with pytest.raises(TypeError, match="recompute must be True or False"):
        golden.verify(pristine, recompute="no")
    with pytest.raises(ValueError, match="kinds names unknown kinds"):
        golden.verify(pristine, kinds=["bogus"])
    with pytest.raises(ValueError, match="unknown backend"):
        golden.verify(pristine, backend="tensorflow")
    with pytest.raises(TypeError, match="case_id must be a case id string"):
        golden.read_case(pristine, 3)
    with pytest.raises(TypeError, match="manifest must be a manifest"):
        golden.read_case(pristine, sample_id(), manifest=[])
    with pytest.raises(TypeError, match="directory must be a path"):
        golden.load_manifest(None)


# --------------------------------------------------------------------------------------------
# 2. Generation is atomic: interrupted anywhere, the target is the old or the new complete set
# --------------------------------------------------------------------------------------------


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt (pytest treats a real one as the user stopping the run)."""


NEW = dict(kinds=("sample",), ops=("en_softmax",))


def _is_old_or_new(target: Path) -> str:
    if golden.verify(target, **SMALL).passed:
        return "old"
    assert golden.verify(target, **NEW).passed, "the target is neither the old nor the new complete set"
    return "new"


def _raise_on_call(number: int, error: BaseException) -> Callable[..., None]:
    calls = []

    def hook(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == number:
            raise error

    return hook


@pytest.mark.parametrize("error", [Interrupt("stop"), RuntimeError("boom")], ids=["interrupt", "exception"])
@pytest.mark.parametrize("call", range(1, 5))
def test_an_interrupted_progress_callback_leaves_the_old_set(victim: Path, call: int, error: BaseException):
    before = snapshot(victim)
    with pytest.raises(type(error)):
        golden.generate(victim, **NEW, force=True, progress=_raise_on_call(call, error))
    assert snapshot(victim) == before and _is_old_or_new(victim) == "old"
    assert leftovers(victim.parent) == []


@pytest.mark.parametrize("call", [1, 2, 3])
def test_an_interrupted_evaluation_leaves_the_old_set(victim: Path, monkeypatch: pytest.MonkeyPatch, call: int):
    hook = _raise_on_call(call, Interrupt("stop"))
    real = golden.case_entry

    def case_entry(case, **options):
        hook()
        return real(case, **options)

    monkeypatch.setattr(golden, "case_entry", case_entry)
    before = snapshot(victim)
    with pytest.raises(Interrupt):
        golden.generate(victim, **NEW, force=True)
    assert snapshot(victim) == before and leftovers(victim.parent) == []


def test_a_fresh_target_interrupted_is_not_created(tmp_path: Path):
    with pytest.raises(Interrupt):
        golden.generate(tmp_path / "set", **NEW, progress=_raise_on_call(2, Interrupt("stop")))
    assert list(tmp_path.iterdir()) == []


def test_a_failing_write_leaves_the_old_set(victim: Path, monkeypatch: pytest.MonkeyPatch):
    real = os.fdopen
    hook = _raise_on_call(2, OSError(28, "No space left on device"))

    def fdopen(descriptor, mode="r", *args, **kwargs):
        if "w" in mode:
            hook()
        return real(descriptor, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    before = snapshot(victim)
    with pytest.raises(golden.GoldenError, match="No space left on device"):
        golden.generate(victim, **NEW, force=True)
    monkeypatch.undo()
    assert snapshot(victim) == before and leftovers(victim.parent) == []


@pytest.mark.parametrize("error", [Interrupt("stop"), OSError(5, "I/O error")], ids=["interrupt", "oserror"])
def test_a_failing_swap_leaves_the_old_set(victim: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException):
    def exchange(first, second):
        raise error

    monkeypatch.setattr(golden, "_exchange", exchange)
    before = snapshot(victim)
    with pytest.raises((Interrupt, golden.GoldenError)):
        golden.generate(victim, **NEW, force=True)
    assert snapshot(victim) == before and leftovers(victim.parent) == []


@pytest.mark.parametrize("call", [1, 2])
@pytest.mark.parametrize("error", [Interrupt("stop"), OSError(5, "I/O error")], ids=["interrupt", "oserror"])
def test_the_two_rename_fallback_rolls_back(victim: Path, monkeypatch: pytest.MonkeyPatch, call: int, error: BaseException):
    """Where the system has no atomic exchange: the second rename failing renames the old set back."""
    monkeypatch.setattr(golden, "_exchange", lambda first, second: False)
    real = os.rename
    hook = _raise_on_call(call, error)

    def rename(source, destination):
        hook()
        return real(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    before = snapshot(victim)
    with pytest.raises((Interrupt, golden.GoldenError)):
        golden.generate(victim, **NEW, force=True)
    monkeypatch.undo()
    assert snapshot(victim) == before and leftovers(victim.parent) == []


def test_the_two_rename_fallback_replaces_the_set(victim: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(golden, "_exchange", lambda first, second: False)
    golden.generate(victim, **NEW, force=True)
    assert _is_old_or_new(victim) == "new" and leftovers(victim.parent) == []


def test_interrupted_after_the_swap_the_new_set_is_in_place_and_the_next_run_cleans_up(victim: Path, monkeypatch: pytest.MonkeyPatch):
    real = os.unlink
    hook = _raise_on_call(3, Interrupt("stop"))

    def unlink(path, *args, **kwargs):
        hook()
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(Interrupt):
        golden.generate(victim, **NEW, force=True)
    monkeypatch.undo()
    assert _is_old_or_new(victim) == "new"
    left = leftovers(victim.parent)
    assert left, "the replaced set's rest is left in a recognisable staging directory"
    staging = victim.parent / next(name for name in left if not name.endswith(".lock"))
    assert not golden.verify(staging, **SMALL).passed, "a staging directory never verifies"
    golden.generate(victim, **SMALL, force=True)
    assert leftovers(victim.parent) == [] and _is_old_or_new(victim) == "old"


_KILLER = """
import os, signal, sys
from refnorm.oracle import golden
when, target = sys.argv[1], sys.argv[2]
def progress(done, total, case_id):
    if when == "while writing" and done == 2:
        os.kill(os.getpid(), signal.SIGKILL)
if when == "after the swap":
    def remove(directory, files):
        os.kill(os.getpid(), signal.SIGKILL)
    golden._remove_files = remove
if when == "between the two renames":
    golden._exchange = lambda first, second: False
    real = os.rename
    calls = []
    def rename(source, destination):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(source, destination)
    os.rename = rename
golden.generate(target, kinds=("sample",), ops=("en_softmax",), force=True, progress=progress)
"""


@pytest.mark.parametrize(("when", "state"), [("while writing", "old"), ("after the swap", "new"), ("between the two renames", None)])
def test_a_killed_generate_leaves_a_complete_set_and_its_staging_is_removed_by_the_next_run(victim: Path, when: str, state: str | None):
    """SIGKILL: no ``finally`` runs. The staging directory it leaves is recognised by its name and its
    unheld lock, is never a set that verifies, and the next generate beside the target removes it."""
    done = subprocess.run([sys.executable, "-c", _KILLER, when, str(victim)], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    left = leftovers(victim.parent)
    assert left
    for name in left:
        if not name.endswith(".lock"):
            assert not golden.verify(victim.parent / name, **SMALL).passed
    if state is not None:
        assert _is_old_or_new(victim) == state
    else:
        # Killed between the fallback's two renames: the target is briefly missing (the documented
        # window of the fallback); the next run puts the old set back before it starts.
        assert not victim.exists()
    golden.generate(victim.parent / "other", **NEW)  # a run for another target leaves them alone
    assert leftovers(victim.parent) == left
    golden.generate(victim, **NEW, force=True)
    assert leftovers(victim.parent) == [] and _is_old_or_new(victim) == "new"


def test_a_live_generate_s_staging_directory_is_left_alone(victim: Path):
    import fcntl

    staging = victim.parent / ".set.refnorm-staging-live"
    (staging / "sparsemax").mkdir(parents=True)
    (staging / "sparsemax" / "x.npz").write_bytes(b"being written")
    lock = os.open(victim.parent / ".set.refnorm-staging-live.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        golden.generate(victim, **NEW, force=True)
        assert (staging / "sparsemax" / "x.npz").read_bytes() == b"being written"
    finally:
        os.close(lock)
    golden.generate(victim, **SMALL, force=True)  # the lock is free now: a stale directory
    assert leftovers(victim.parent) == []


def test_a_stale_staging_directory_keeps_what_generate_did_not_write(victim: Path):
    staging = victim.parent / ".set.refnorm-staging-stale"
    (staging / "sparsemax").mkdir(parents=True)
    (staging / "sparsemax" / "x.npz").write_bytes(b"half")
    (staging / "notes.txt").write_text("not a file of a set")
    (victim.parent / ".set.refnorm-staging-stale.lock").write_text("")
    golden.generate(victim, **NEW, force=True)
    assert not (staging / "sparsemax").exists() and (staging / "notes.txt").read_text() == "not a file of a set"


# --------------------------------------------------------------------------------------------
# 3. Forged manifests with a matching sidecar: verify recomputes what a consumer relies on
# --------------------------------------------------------------------------------------------


def _entry(manifest: dict, case_id: str) -> dict:
    return next(e for e in manifest["cases"] if e["id"] == case_id)


def _every_tolerance(manifest: dict, value: float) -> None:
    for entry in manifest["cases"]:
        if entry["tolerances"] is not None:
            for by_direction in entry["tolerances"].values():
                for tolerance in by_direction.values():
                    tolerance.update(rtol=value, atol=value)


FORGERIES: dict[str, tuple[Callable[[dict], None], str]] = {
    "every tolerance 1e9": (lambda m: _every_tolerance(m, 1e9),
                            "tolerances.float32.forward.rtol: the manifest says 1000000000.0, this refnorm recommends 1.3e-06"),
    "one rtol doubled": (lambda m: _entry(m, sample_id())["tolerances"]["float64"]["forward"].update(rtol=2e-7),
                         "tolerances.float64.forward.rtol: the manifest says 2e-07, this refnorm recommends 1e-07"),
    "a tolerance note added": (lambda m: _entry(m, sample_id())["tolerance_notes"].append("trust me"), "tolerance_notes"),
    "an error case given tolerances": (lambda m: _entry(m, error_id()).update(tolerances=_entry(m, sample_id())["tolerances"]),
                                       "an error case has no tolerances"),
    "expected_error.match widened": (lambda m: _entry(m, error_id())["expected_error"].update(match=".*"), "expected_error.match: the manifest says '.*'"),
    "expected_error.type changed": (lambda m: _entry(m, error_id())["expected_error"].update(type="Exception"), "expected_error"),
    "a sample case given an expected error": (lambda m: _entry(m, sample_id()).update(expected_error={"type": "ValueError", "match": "x"}),
                                              "expected_error"),
    "a note edited": (lambda m: _entry(m, sample_id()).update(note="verified by hand"), "note: the manifest says"),
    "a kink claimed": (lambda m: _entry(m, sample_id()).update(kink="on a kink"), "kink: the manifest says"),
    "the seed changed": (lambda m: _entry(m, sample_id()).update(seed=_entry(m, sample_id())["seed"] + 1), "seed: the manifest says"),
    "the seed made a boolean": (lambda m: _entry(m, sample_id()).update(seed=True), "seed"),
    "a parameter changed": (lambda m: _entry(m, sample_id())["params"].update(shape=[9, 9]), "params.shape"),
    "a parameter added": (lambda m: _entry(m, sample_id())["params"].update(eps=1e-3), "params"),
    "an integer parameter written as a float": (lambda m: _entry(m, sample_id())["params"].update(
        shape=[float(v) for v in _entry(m, sample_id())["params"]["shape"]]), "params"),
    "the arguments renamed": (lambda m: _entry(m, sample_id()).update(arguments=["z"]), "arguments"),
    "the name changed": (lambda m: _entry(m, sample_id()).update(name="renamed"), "name: the manifest says"),
    "the kind changed": (lambda m: _entry(m, sample_id()).update(kind="reference"), "kind: the manifest says"),
    "the op changed": (lambda m: _entry(m, sample_id()).update(op="sparsestmax"), "op: the manifest says"),
    "the id changed to an unknown case": (lambda m: _entry(m, sample_id()).update(id="sparsemax/made-up"),
                                          "this refnorm's catalog has no such case"),
    "two cases' files swapped": (lambda m: _swap_files(m), "is not 'sparsemax/"),
    "an array's dtype changed": (lambda m: _first_array(m).update(dtype="float32"), "in the manifest, the case's is"),
    "an array's shape changed": (lambda m: _first_array(m).update(shape=[1]), "in the manifest, the case's is"),
    "an array's dtype made object (pickles)": (lambda m: _first_array(m).update(dtype="object"), "has dtype 'object'; a golden file holds"),
    "an array's key made a path": (lambda m: _entry(m, sample_id())["arrays"].update({"../y": _first_array(m)}), "is not <group>.<identifier>"),
    "an array's hash changed": (lambda m: _first_array(m).update(sha256="0" * 64), "does not match its sha256"),
    "an array dropped from the listing": (lambda m: _entry(m, sample_id())["arrays"].pop("grad.logits"), "array grad.logits is missing"),
    "the file hash changed": (lambda m: _entry(m, sample_id()).update(file_sha256="0" * 64), "does not match its file_sha256"),
    "one case removed": (lambda m: m["cases"].remove(_entry(m, sample_id())), f"case {sample_id()} is missing"),
    "a case listed twice": (lambda m: m["cases"].append(copy.deepcopy(_entry(m, sample_id()))), "listed twice"),
    "the cases reordered": (lambda m: m["cases"].reverse(), "not in generation order"),
    "a case of another op added": (lambda m: m["cases"].append({**copy.deepcopy(_entry(m, sample_id())), "id": cases(kind="sample", op="sparsestmax")[0].id}),
                                   "not a case of the set's kinds, ops and selection"),
    "refnorm_version edited": (lambda m: m.update(refnorm_version="9.9.9"), f"written by refnorm '9.9.9', this is {__version__}: regenerate"),
    "selection_rule edited": (lambda m: m.update(selection_rule="whatever"), "selection_rule: the manifest says"),
    "hash description edited": (lambda m: m.update(hash="md5"), "hash: the manifest says"),
    "comparison rule edited": (lambda m: m.update(comparison="anything goes"), "comparison: the manifest says"),
    "default tolerances edited": (lambda m: m["default_tolerances"]["float32"]["forward"].update(rtol=1.0), "default_tolerances"),
    "the kinds claim a subset": (lambda m: m.update(kinds=["sample"]), "the set holds kinds"),
    "the ops claim another op": (lambda m: m.update(ops=["sparsestmax"]), "the set holds ops"),
    "an unknown kind": (lambda m: m.update(kinds=["sample", "error", "bogus"]), "is not a list of distinct kinds"),
    "a kind twice": (lambda m: m.update(kinds=["sample", "error", "error"]), "is not a list of distinct kinds"),
    "the selection changed": (lambda m: m.update(selection="shipped"), "the set holds selection"),
    "an unknown selection": (lambda m: m.update(selection="best"), "selection: 'best' is not one of"),
    "schema version 3": (lambda m: m.update(schema_version=3), "schema version 3; this refnorm reads version 1, 2; upgrade refnorm"),
    "schema version 1 claimed by a version-2 set": (lambda m: m.update(schema_version=1), "is not an array of the case"),
    "schema version 0": (lambda m: m.update(schema_version=0), "schema version 0; this refnorm reads version 1, 2"),
    "schema version true": (lambda m: m.update(schema_version=True), "schema version True"),
    "another schema": (lambda m: m.update(schema="other"), "is not a refnorm golden manifest"),
    "an unknown top-level field": (lambda m: m.update(trusted=True), "unknown field 'trusted'"),
    "an unknown case field": (lambda m: _entry(m, sample_id()).update(verified=True), "unknown field 'verified'"),
    "every case removed": (lambda m: m.update(cases=[]), "the set holds no cases"),
}


def _swap_files(manifest: dict) -> None:
    first, second = manifest["cases"][0], manifest["cases"][1]
    first["file"], second["file"] = second["file"], first["file"]


def _first_array(manifest: dict) -> dict:
    return _entry(manifest, sample_id())["arrays"]["output.y"]


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_manifest_with_a_matching_sidecar_fails(victim: Path, forgery: str):
    edit, expected = FORGERIES[forgery]
    manifest = manifest_of(victim)
    edit(manifest)
    seal(victim, manifest)
    if forgery == "every case removed":
        shutil.rmtree(victim / "sparsemax")
    if forgery == "one case removed":
        (victim / golden.case_file(sample_id())).unlink()
    assert expected in failures(victim)


@pytest.mark.parametrize("forgery", ["every tolerance 1e9", "a note edited", "expected_error.match widened", "the seed changed"])
def test_a_forged_manifest_fails_on_the_command_line(victim: Path, forgery: str, capsys):
    edit, expected = FORGERIES[forgery]
    manifest = manifest_of(victim)
    edit(manifest)
    seal(victim, manifest)
    code, out, _ = run_cli(["golden", "verify", str(victim), *CLI_SMALL, "--quiet"], capsys)
    assert code == 1 and expected in out


def test_the_informational_fields_may_differ(victim: Path):
    """numpy_version and backend say how a set was made; the values are checked to float64 rounding."""
    manifest = manifest_of(victim)
    manifest.update(numpy_version="1.0.0", backend="cupy")
    seal(victim, manifest)
    assert golden.verify(victim, **SMALL).passed


def test_a_subset_verifies_only_when_named(tmp_path: Path, capsys):
    out = tmp_path / "set"
    golden.generate(out, kinds=("sample",), ops=("sparsemax", "en_softmax"))
    assert "the set holds kinds [\"sample\"], ops" in "\n".join(golden.verify(out).failures)
    assert golden.verify(out, kinds=["sample"], ops=["en_softmax", "sparsemax"]).passed
    assert not golden.verify(out, kinds=["sample"], ops=["sparsemax"]).passed
    code, out_text, _ = run_cli(["golden", "verify", str(out), "--quiet"], capsys)
    assert code == 1 and "a set made for a subset verifies only when you name it" in out_text
    code, _, _ = run_cli(["golden", "verify", str(out), "--kind", "sample", "--op", "sparsemax", "--op", "en_softmax", "--quiet"], capsys)
    assert code == 0


def test_the_shipped_set_is_verified_as_the_shipped_selection(capsys):
    assert run_cli(["golden", "verify", "--shipped", "--quiet", "--failures-only"], capsys)[0] == 0
    code, out, _ = run_cli(["golden", "verify", str(golden.SHIPPED), "--no-recompute", "--quiet", "--failures-only"], capsys)
    assert code == 1 and "the set holds selection 'shipped'; verify was asked for selection 'all'" in out
    assert run_cli(["golden", "verify", str(golden.SHIPPED), "--selection", "shipped", "--no-recompute", "--quiet"], capsys)[0] == 0


def test_an_empty_set_fails_even_when_it_claims_nothing(tmp_path: Path, capsys):
    out = tmp_path / "set"
    out.mkdir()
    manifest = {**golden._header(("sample",), ("sparsemax",), "all", "numpy"), "cases": []}
    seal(out, manifest)
    code, printed, _ = run_cli(["golden", "verify", str(out), "--kind", "sample", "--op", "sparsemax", "--quiet"], capsys)
    assert code == 1 and "the set holds no cases" in printed and "0 cases: 0 ok" in printed


def test_edited_values_with_every_hash_recomputed_fail(victim: Path):
    case_id = sample_id()
    arrays = golden.load_arrays(victim / golden.case_file(case_id))
    arrays["output.y"] = arrays["output.y"] * 1.5
    reseal_file(victim, case_id, golden.npz_bytes(arrays), arrays)
    assert "array output.y differs from the recomputed value" in failures(victim)


def test_an_edited_upstream_gradient_with_every_hash_recomputed_fails(victim: Path):
    case_id = sample_id()
    arrays = golden.load_arrays(victim / golden.case_file(case_id))
    arrays["upstream.y"] = arrays["upstream.y"] + 1.0
    reseal_file(victim, case_id, golden.npz_bytes(arrays), arrays)
    assert "upstream.y is not the case's seeded draw" in failures(victim)


def test_an_extra_array_with_every_hash_recomputed_fails(victim: Path):
    case_id = sample_id()
    arrays = golden.load_arrays(victim / golden.case_file(case_id))
    arrays["intermediate.bonus"] = np.zeros(3)
    reseal_file(victim, case_id, golden.npz_bytes(arrays), arrays)
    assert "array intermediate.bonus is not an array of the case" in failures(victim)


def test_a_forgery_within_float64_rounding_is_beyond_what_verify_can_prove(victim: Path):
    """The documented limit (docs/golden-format.md): values are recomputed to float64 rounding, so
    an output moved by one ulp, with every hash recomputed, still verifies. Nothing a consumer
    compares at the recommended tolerances (>= 1e-7) can change this way."""
    case_id = sample_id()
    arrays = golden.load_arrays(victim / golden.case_file(case_id))
    arrays["output.y"] = np.nextafter(arrays["output.y"], np.inf)
    reseal_file(victim, case_id, golden.npz_bytes(arrays), arrays)
    report = golden.verify(victim, **SMALL)
    assert report.passed
    assert next(c for c in report.cases if c.id == case_id).max_abs_error > 0


def test_verify_without_recomputation_says_what_it_did_not_prove(victim: Path, capsys):
    manifest = manifest_of(victim)
    _every_tolerance(manifest, 1e9)
    seal(victim, manifest)
    report = golden.verify(victim, **SMALL, recompute=False)
    assert report.passed and not report.recompute, "tolerances are not recomputed without recomputation"
    code, out, _ = run_cli(["golden", "verify", str(victim), *CLI_SMALL, "--no-recompute", "--quiet"], capsys)
    assert code == 0 and "hashes only: values and tolerances not recomputed" in out
    assert not golden.verify(victim, **SMALL).passed


def test_the_kit_refuses_a_golden_set_with_forged_tolerances(victim: Path):
    """The audit's exploit: tolerances 1e9 let the kit pass a sparsemax that is off by 50 %."""
    from refnorm.testing import Adapter, check_conformance

    manifest = manifest_of(victim)
    _every_tolerance(manifest, 1e9)
    seal(victim, manifest)

    def off_by_half(inputs, params):
        from refnorm import sparsemax

        return {"y": 1.5 * sparsemax(inputs["logits"])}

    with pytest.raises(golden.GoldenError, match="tolerances.float32.forward.rtol: the manifest says 1000000000.0"):
        check_conformance(Adapter(off_by_half), cases(kind="sample", op="sparsemax")[0], source=victim)


# --------------------------------------------------------------------------------------------
# 4. Nothing outside the set is ever opened; no links anywhere
# --------------------------------------------------------------------------------------------


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path os.open is called with while the test runs."""
    paths: list[str] = []
    real = os.open

    def spy(path, *args, **kwargs):
        paths.append(os.path.abspath(os.fspath(path)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    return paths


def _outside_file(tmp_path: Path, content: bytes) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "x.npz").write_bytes(content)
    return outside / "x.npz"


@pytest.mark.parametrize("path", ["../outside/x.npz", "ABSOLUTE", "sparsemax/../../outside/x.npz", "./{file}", "sparsemax//{name}",
                                  "sparsemax\\{name}", "{file}/", ""])  # fmt: skip
def test_a_listed_path_other_than_the_case_file_is_never_opened(victim: Path, tmp_path: Path, opened: list[str], path: str):
    manifest = manifest_of(victim)
    entry = _entry(manifest, sample_id())
    outside = _outside_file(tmp_path, (victim / entry["file"]).read_bytes())
    entry["file"] = str(outside) if path == "ABSOLUTE" else path.format(file=entry["file"], name=Path(entry["file"]).name)
    seal(victim, manifest)
    found = failures(victim)
    assert "is not 'sparsemax/" in found and "a case's file is <case id>.npz inside the set; not opened" in found
    assert str(outside) not in opened and not any(p.startswith(str(tmp_path / "outside")) for p in opened)
    with pytest.raises(golden.GoldenError, match="is not 'sparsemax/"):
        golden.read_case(victim, sample_id())
    assert not any(p.startswith(str(tmp_path / "outside")) for p in opened)


LINKS = ["a case file", "an op directory", "the manifest", "the sidecar", "an unlisted extra link", "a link to a directory inside the set"]


@pytest.mark.parametrize("what", LINKS)
def test_a_symbolic_link_anywhere_in_the_set_fails(victim: Path, tmp_path: Path, opened: list[str], what: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    case_path = victim / golden.case_file(sample_id())
    if what == "a case file":
        (outside / "x.npz").write_bytes(case_path.read_bytes())
        case_path.unlink()
        case_path.symlink_to(outside / "x.npz")
    elif what == "an op directory":
        shutil.move(victim / "sparsemax", outside / "sparsemax")
        (victim / "sparsemax").symlink_to(outside / "sparsemax")
    elif what in ("the manifest", "the sidecar"):
        name = golden.MANIFEST if what == "the manifest" else golden.MANIFEST_HASH
        shutil.move(victim / name, outside / name)
        (victim / name).symlink_to(outside / name)
    elif what == "an unlisted extra link":
        (victim / "link").symlink_to(outside)
    else:
        (victim / "again").symlink_to(victim / "sparsemax")
    found = failures(victim)
    assert "symbolic link" in found
    assert not any(p.startswith(str(outside)) for p in opened), "nothing behind a link is opened"
    if what in ("a case file", "an op directory"):
        with pytest.raises(golden.GoldenError, match="symbolic link"):
            golden.read_case(victim, sample_id())
    if what in ("the manifest", "the sidecar"):
        with pytest.raises(golden.GoldenError, match="symbolic link"):
            golden.load_manifest(victim)


def test_a_symlinked_set_directory_fails(victim: Path, tmp_path: Path, capsys):
    link = tmp_path / "link"
    link.symlink_to(victim)
    assert "is a symbolic link; a golden set holds no links, the set directory itself included" in failures(link)
    code, out, _ = run_cli(["golden", "verify", str(link), *CLI_SMALL, "--quiet"], capsys)
    assert code == 1 and str(victim) in out, "the message names the directory to verify instead"


def test_special_files_fail_without_blocking(victim: Path):
    os.mkfifo(victim / "pipe")
    case_path = victim / golden.case_file(sample_id())
    case_path.unlink()
    os.mkfifo(case_path)
    found = failures(victim)
    assert "pipe is not a regular file" in found and f"{golden.case_file(sample_id())} is not a regular file" in found


def test_a_missing_or_wrong_directory_fails_cleanly(tmp_path: Path, capsys):
    assert "does not exist" in failures(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in failures(tmp_path / "file")
    assert "manifest.json is missing (not a golden set)" in failures(tmp_path)
    code, _, _ = run_cli(["golden", "verify", str(tmp_path / "nowhere"), "--quiet"], capsys)
    assert code == 1


# --------------------------------------------------------------------------------------------
# 5. Malformed input: one clean line per problem, never a traceback
# --------------------------------------------------------------------------------------------


VARIANTS: list[tuple[str, Any]] = [("deleted", None), ("null", None), ("true", True), ("1.5", 1.5), ("'x'", "x"), ("[]", []), ("{}", {}), ("-1", -1)]


def _variants(value: Any) -> list[tuple[str, Any]]:
    """The mutations tried at a key holding ``value``: deleted, null, a string, an object, and what
    is close to its own type (numbers: negative, fractional, boolean; lists: empty, of null)."""
    chosen = {"deleted", "null", "'x'", "{}"}
    if isinstance(value, int | float):
        chosen |= {"-1", "1.5", "true"}
    elif isinstance(value, list):
        chosen |= {"[]"}
    elif isinstance(value, dict):
        chosen |= {"[]", "true"}
    else:
        chosen |= {"true", "[]"}
    return [(name, v) for name, v in VARIANTS if name in chosen]


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def _fuzz_paths(manifest: dict) -> list[tuple]:
    """Every key at every level of the header, of one sample and one error case (all their
    arrays' fields, tolerances and params), and the list of cases itself."""
    sample = next(i for i, e in enumerate(manifest["cases"]) if e["kind"] == "sample")
    error = next(i for i, e in enumerate(manifest["cases"]) if e["kind"] == "error")
    found = []
    for path in _paths(manifest):
        if len(path) >= 2 and path[0] == "cases" and path[1] not in (sample, error):
            continue
        if len(path) >= 4 and path[2] == "arrays" and path[3] not in ("output.y", "input.logits"):
            continue
        found.append(path)
    return found


def _mutated(manifest: dict, path: tuple, variant: str, value: Any) -> Any:
    if not path:
        return value if variant != "deleted" else {}
    mutated = copy.deepcopy(manifest)
    parent = mutated
    for key in path[:-1]:
        parent = parent[key]
    if variant == "deleted":
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return mutated


ACCEPTED = {("numpy_version", "'x'"), ("backend", "'x'")}
"""Mutations that leave an authentic set: the informational fields are any strings."""


def test_fuzzing_the_manifest_structure_never_passes_and_never_raises(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Delete or retype every key at every level (with a matching sidecar): verify returns a failed
    report every time; each problem is one line. (Each case's evaluation is computed once: what is
    under test is the reading of the manifest, and the evaluation is deterministic.)"""
    evaluated: dict[str, Any] = {}
    real = golden._case_entry

    def case_entry(case, backend, *version):
        if (case.id, *version) not in evaluated:
            evaluated[(case.id, *version)] = real(case, backend, *version)
        return evaluated[(case.id, *version)]

    monkeypatch.setattr(golden, "_case_entry", case_entry)
    target = tmp_path / "set"
    shutil.copytree(pristine, target)
    manifest = manifest_of(pristine)
    tried = 0
    for path in _fuzz_paths(manifest):
        current = manifest
        for key in path:
            current = current[key]
        for variant, value in _variants(current):
            if variant == "deleted" and path and isinstance(path[-1], int) and path[-2] == "cases":
                continue  # deleting a case: the "one case removed" forgery
            mutated = _mutated(manifest, path, variant, value)
            if golden._same_json(mutated, manifest):
                continue
            seal(target, mutated)
            report = golden.verify(target, **SMALL)
            tried += 1
            where = f"{'.'.join(map(str, path)) or 'the manifest'} {variant}"
            if (".".join(map(str, path)), variant) in ACCEPTED:
                assert report.passed, (where, report.failures)
                continue
            assert not report.passed, f"{where} passed verify"
            assert all("\n" not in line and line for line in report.failures), (where, report.failures)
            assert not any("verification stopped" in line for line in report.failures), (where, report.failures)
    assert tried > 450, tried


@pytest.mark.parametrize("variant", ["deleted", "null", "'x'"])
@pytest.mark.parametrize("path", [(), ("cases",), ("cases", 0), ("cases", 0, "file_sha256"), ("cases", 0, "arrays"), ("cases", 0, "params"),
                                  ("cases", 0, "arrays", "output.y", "shape"), ("kinds",), ("schema_version",), ("default_tolerances",)])  # fmt: skip
def test_a_malformed_manifest_exits_1_on_the_command_line(pristine: Path, tmp_path: Path, capsys, path: tuple, variant: str):
    target = tmp_path / "set"
    shutil.copytree(pristine, target)
    seal(target, _mutated(manifest_of(pristine), path, variant, dict(VARIANTS)[variant]))
    code, out, err = run_cli(["golden", "verify", str(target), *CLI_SMALL, "--quiet"], capsys)
    assert code == 1 and "FAIL" in out
    if (path, variant) != (("cases", 0), "deleted"):  # a manifest without one case is well-formed
        with pytest.raises(golden.GoldenError):
            golden.load_manifest(target)
    with pytest.raises(golden.GoldenError):
        golden.read_case(target, sample_id())


def test_a_list_manifest_and_null_cases_give_one_line_each(victim: Path):
    seal(victim, [1, 2, 3])
    assert failures(victim) == "manifest.json holds a list, expected an object"
    seal(victim, {**golden._header(SMALL["kinds"], SMALL["ops"], "all", "numpy"), "cases": None})
    assert failures(victim) == "manifest.cases: expected a list, got null"


RAW_MANIFESTS = {
    "not JSON": (b"{\"schema\": ", "is not valid JSON"),
    "not UTF-8": (b"{\"schema\": \"\xff\"}", "is not valid JSON"),
    "NaN": (b"{\"schema\": NaN}", "is not valid JSON: NaN is not JSON"),
    "Infinity": (b"{\"a\": -Infinity}", "is not valid JSON"),
    "a key twice": (b"{\"schema\": \"refnorm-golden\", \"schema\": \"refnorm-golden\"}", "appears twice in one object"),
    "deeply nested": (b"[" * 100000 + b"]" * 100000, "is not valid JSON"),
    "a huge integer": (b"{\"schema\": \"refnorm-golden\", \"schema_version\": " + b"9" * 5000 + b"}", "is not valid JSON"),
    "empty": (b"", "is not valid JSON"),
    "a string": (b"\"refnorm-golden\"", "holds a string, expected an object"),
}


@pytest.mark.parametrize("name", list(RAW_MANIFESTS))
def test_raw_manifest_bytes_give_one_clean_line(victim: Path, name: str, capsys):
    text, expected = RAW_MANIFESTS[name]
    seal_bytes(victim, text)
    assert expected in failures(victim)
    code, out, _ = run_cli(["golden", "verify", str(victim), *CLI_SMALL, "--quiet"], capsys)
    assert code == 1 and expected in out
    with pytest.raises(golden.GoldenError, match=expected.split(":")[0]):
        golden.read_case(victim, sample_id())


@pytest.mark.parametrize("sidecar", ["", "\n", "0" * 63 + "  manifest.json\n", "{upper}  manifest.json\n", "{hash}  other.json\n",
                                     "{hash}  manifest.json\n{hash}  manifest.json\n", "{hash}\n"])  # fmt: skip
def test_a_malformed_sidecar_fails(victim: Path, sidecar: str):
    digest = hashlib.sha256((victim / golden.MANIFEST).read_bytes()).hexdigest()
    (victim / golden.MANIFEST_HASH).write_text(sidecar.format(hash=digest, upper=digest.upper()))
    assert "manifest.json.sha256 is not one line" in failures(victim)


def test_a_huge_manifest_is_refused_unread(victim: Path):
    with open(victim / golden.MANIFEST, "r+b") as handle:
        handle.truncate(golden.MAX_MANIFEST_BYTES + 1)  # sparse: no disk used
    assert "more than a refnorm golden set's can have" in failures(victim)


def _deflated_bomb(size: int) -> bytes:
    """An .npz whose one member is ``size`` bytes of a float64 array, deflated (a few hundred KB)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (size // 8,)})
        with archive.open("output.y.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            chunk = bytes(2**20)
            for _ in range(size // len(chunk)):
                member.write(chunk)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _deflated_bomb(200 * 2**20)


def _peak(function: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("recompute", [True, False])
def test_a_file_whose_hash_fails_is_never_parsed(victim: Path, monkeypatch: pytest.MonkeyPatch, recompute: bool):
    path = victim / golden.case_file(sample_id())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    parsed = []
    real = golden._read_npz

    def spy(handle, declared):
        parsed.append(sorted(declared))
        return real(handle, declared)

    monkeypatch.setattr(golden, "_read_npz", spy)
    found = failures(victim, recompute=recompute)
    assert "does not match its file_sha256 in the manifest (corrupted or edited); not parsed" in found
    assert len(parsed) == len(cases(kind="sample", op="sparsemax")) + len(cases(kind="error", op="sparsemax")) - 1


@pytest.mark.parametrize("recompute", [True, False])
def test_the_audit_s_400_mb_deflate_member_is_never_inflated(victim: Path, bomb: bytes, recompute: bool):
    """The audit's case: a member that inflates to hundreds of MB, in place of a case file."""
    (victim / golden.case_file(sample_id())).write_bytes(bomb)
    report, peak = _peak(lambda: golden.verify(victim, **SMALL, recompute=recompute))
    assert "more than its arrays can need" in "\n".join(report.failures)
    assert peak < 20 * 2**20, f"peak memory {peak / 2**20:.0f} MB"


@pytest.mark.parametrize("recompute", [True, False])
def test_a_resealed_zip_bomb_is_refused_before_it_is_inflated(victim: Path, bomb: bytes, recompute: bool):
    manifest = manifest_of(victim)
    entry = _entry(manifest, sample_id())
    (victim / entry["file"]).write_bytes(bomb)
    entry["file_sha256"] = hashlib.sha256(bomb).hexdigest()
    entry["arrays"] = {"output.y": {"dtype": "float64", "shape": [200 * 2**17], "sha256": "0" * 64}}
    seal(victim, manifest)
    report, peak = _peak(lambda: golden.verify(victim, **SMALL, recompute=recompute))
    assert not report.passed and peak < 20 * 2**20, f"peak memory {peak / 2**20:.0f} MB"
    (_, read_peak) = _peak(lambda: pytest.raises(golden.GoldenError, golden.read_case, victim, sample_id()))
    assert read_peak < 20 * 2**20
    with pytest.raises(golden.GoldenError, match="compressed or encrypted"):
        golden.read_case(victim, sample_id())


def _members(arrays: dict[str, bytes], twice: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in arrays.items():
            archive.writestr(name, data)
        if twice is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Duplicate name": the point of this file
                archive.writestr(twice, arrays[twice])
    return buffer.getvalue()


def _npy(array: np.ndarray, **header: Any) -> bytes:
    buffer = io.BytesIO()
    fields = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False, "shape": array.shape, **header}
    np.lib.format.write_array_header_1_0(buffer, fields)
    return buffer.getvalue() + array.tobytes()


def _hostile_files(original: dict[str, np.ndarray]) -> dict[str, tuple[bytes, str]]:
    y = original["output.y"]
    stored = {f"{k}.npy": _npy(np.ascontiguousarray(a)) for k, a in original.items()}
    return {
        "random bytes": (os.urandom(len(golden.npz_bytes(original))), "cannot be read as .npz"),
        "a truncated archive": (golden.npz_bytes(original)[:-40], "cannot be read"),
        "an extra member": (_members({**stored, "grad.extra.npy": _npy(np.zeros(2))}), "grad.extra is in the file but not in the manifest"),
        "a member missing": (_members({k: v for k, v in stored.items() if k != "output.y.npy"}), "output.y is listed in the manifest but missing"),
        "a member twice": (_members({**stored}, twice="output.y.npy"), "not one <key>.npy per array"),
        "a member not named .npy": (_members({**stored, "output.y.npz": stored["output.y.npy"]}), "not one <key>.npy per array"),
        "a header with a larger shape": (_members({**stored, "output.y.npy": _npy(y, shape=(10**9,))}), "the manifest says float64"),
        "fortran order": (_members({**stored, "output.y.npy": _npy(y, fortran_order=True)}), "the manifest says"),
        "a pickled object array": (_members({**stored, "output.y.npy": _npy(np.zeros(3), descr="|O")}), "the manifest says"),
        "NPY version 2.0": (_members({**stored, "output.y.npy": b"\x93NUMPY\x02\x00" + stored["output.y.npy"][8:]}), "not NPY format 1.0"),
        "data cut short": (_members({**stored, "output.y.npy": stored["output.y.npy"][:-8]}), "bytes of data"),
    }


@pytest.mark.parametrize("recompute", [True, False])
def test_hostile_npz_files_with_every_hash_recomputed_fail_cleanly(pristine: Path, tmp_path: Path, recompute: bool):
    case_id = sample_id()
    original = golden.load_arrays(pristine / golden.case_file(case_id))
    for name, (data, expected) in _hostile_files(original).items():
        target = tmp_path / name.replace(" ", "-")
        shutil.copytree(pristine, target)
        reseal_file(target, case_id, data)
        report = golden.verify(target, **SMALL, recompute=recompute)
        found = "\n".join(report.failures)
        assert not report.passed, name
        assert not any("verification stopped" in line for line in report.failures), (name, found)
        if recompute:  # the size is known exactly: a larger file is refused unread
            assert expected in found or "more than its arrays can need" in found, (name, found)
        else:
            assert expected in found, (name, found)
        with pytest.raises(golden.GoldenError):
            golden.read_case(target, case_id)


# --------------------------------------------------------------------------------------------
# read_case: the conformance kit's door
# --------------------------------------------------------------------------------------------


def test_read_case_returns_an_authenticated_case(pristine: Path):
    case = golden.read_case(pristine, sample_id())
    assert set(case.arrays["output"]) == {"y"} and case.entry["id"] == sample_id()


@pytest.mark.parametrize("forgery", ["every tolerance 1e9", "a note edited", "the seed changed", "an array's hash changed",
                                     "the file hash changed", "an unknown case field", "a case listed twice",
                                     "an array's dtype made object (pickles)", "an array's key made a path",
                                     "an array's shape changed", "an array dropped from the listing"])  # fmt: skip
def test_read_case_refuses_a_forged_entry(victim: Path, forgery: str):
    edit, _ = FORGERIES[forgery]
    manifest = manifest_of(victim)
    edit(manifest)
    seal(victim, manifest)
    with pytest.raises(golden.GoldenError):
        golden.read_case(victim, sample_id())
    if "tolerance" not in forgery:  # tolerances are checked only by recomputation
        assert not golden.verify(victim, **SMALL, recompute=False).passed


def test_read_case_refuses_a_file_with_a_wrong_hash_without_parsing_it(victim: Path, monkeypatch: pytest.MonkeyPatch):
    path = victim / golden.case_file(sample_id())
    path.write_bytes(bytes(len(path.read_bytes())))
    monkeypatch.setattr(golden, "_read_npz", lambda *a: pytest.fail("parsed a file whose hash failed"))
    with pytest.raises(golden.GoldenError, match="does not match its file_sha256"):
        golden.read_case(victim, sample_id())


def test_read_case_refuses_an_unknown_case_and_a_bad_manifest_argument(pristine: Path):
    with pytest.raises(golden.GoldenError, match="has no case 'sparsemax/nope'"):
        golden.read_case(pristine, "sparsemax/nope")
    with pytest.raises(golden.GoldenError, match="not a refnorm golden manifest"):
        golden.read_case(pristine, sample_id(), manifest={"cases": None})
