"""The tutorial notebooks in ``notebooks/`` run top to bottom, and are committed without outputs.

Each notebook is executed by a fresh Jupyter kernel (nbclient + ipykernel) with ``notebooks/`` as
its working directory, as a reader would run it, and with this checkout first on ``PYTHONPATH`` so
that the kernel imports the same refnorm as this test run (not another installed copy). Numeric
claims in the notebooks are ``assert`` cells, so a claim that stops holding fails here. Nothing is
written back to the notebook files.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

CELL_TIMEOUT_S = 60
"""A cell running longer than this fails the notebook."""
NOTEBOOK_BUDGET_S = 60.0
"""Each notebook must run in under a minute on two CPU cores (kernel start included)."""
ALLOWED_IMPORTS = {"numpy", "matplotlib", "refnorm"}
"""Besides the standard library: the notebooks are NumPy-only tutorials."""


def stored_results(notebook: nbformat.NotebookNode) -> list[str]:
    """Everything a run leaves in a notebook file: outputs, execution counts, widget state."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {index}: {len(cell.outputs)} output(s)")
        if cell.get("execution_count") is not None:
            found.append(f"cell {index}: execution_count {cell.execution_count}")
    if "widgets" in notebook.metadata:
        found.append("notebook metadata: widget state")
    return found


def execute(notebook: nbformat.NotebookNode, monkeypatch: pytest.MonkeyPatch) -> float:
    """Run every cell in a new kernel started in ``notebooks/``; return the wall time in seconds.

    Raises nbclient's ``CellExecutionError`` (it quotes the failing cell and its traceback) or
    ``CellTimeoutError``.
    """
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
        extra_arguments=["--InteractiveShell.colors=nocolor"],  # plain tracebacks in the test report
    )
    started = time.perf_counter()
    client.execute()
    return time.perf_counter() - started


def _new_notebook(*sources: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])


def test_the_tutorial_notebooks_are_found():
    expected = ["01_switchable_normalization", "02_sparsestmax", "03_exemplar_normalization", "04_oracle"]
    assert [f"{name}.ipynb" for name in expected] == [path.name for path in NOTEBOOKS][: len(expected)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs(path):
    found = stored_results(nbformat.read(path, as_version=4))
    assert not found, (
        f"{path.relative_to(ROOT)} holds results of a run ({'; '.join(found)}). Commit notebooks without "
        "outputs: in Jupyter, Edit > Clear Outputs of All Cells, then save."
    )


def test_stored_results_are_detected():
    clean = _new_notebook("x = 1", "print(x)")
    assert stored_results(clean) == []
    run = _new_notebook("x = 1", "print(x)")
    run.cells[1].execution_count = 2
    run.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    assert stored_results(run) == ["cell 1: 1 output(s)", "cell 1: execution_count 2"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_imports_only_numpy_matplotlib_refnorm_and_the_standard_library(path):
    imported = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    assert imported - ALLOWED_IMPORTS - set(sys.stdlib_module_names) == set()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    failure = None
    try:
        seconds = execute(notebook, monkeypatch)
    except (CellExecutionError, CellTimeoutError) as error:
        failure = f"{path.relative_to(ROOT)} failed:\n{error}"
    if failure:
        pytest.fail(failure, pytrace=False)
    assert seconds < NOTEBOOK_BUDGET_S, f"{path.name} took {seconds:.0f} s; notebooks must run in under a minute"


def test_kernel_imports_this_checkout_and_a_failing_cell_fails(monkeypatch):
    """The machinery above: the kernel runs this interpreter and this checkout's refnorm, and a
    failing ``assert`` cell stops the run with the cell's error."""
    notebook = _new_notebook(
        "import os, sys, refnorm\nprint(sys.executable)\nprint(refnorm.__file__)\nprint(os.getcwd())",
        "assert 1 + 1 == 3, 'planted failure'",
    )
    with pytest.raises(CellExecutionError, match="planted failure"):
        execute(notebook, monkeypatch)
    printed = "".join(output.get("text", "") for output in notebook.cells[0].outputs)
    executable, module, cwd = printed.split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(module).resolve() == (ROOT / "refnorm" / "__init__.py").resolve()
    assert Path(cwd).resolve() == NOTEBOOK_DIR.resolve()
