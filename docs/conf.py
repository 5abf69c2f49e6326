"""Sphinx configuration of the refnorm documentation.

Build (from the repository root, after ``python -m pip install -e ".[docs]"``)::

    python -m sphinx -W -b html docs docs/_build/html

Pages are MyST Markdown (math with ``$...$`` and ``$$...$$``, a display formula always a block of
its own: a blank line before and after); the API reference comes from the numpydoc docstrings of the
checkout's ``refnorm``; the notebooks of ``notebooks/`` are executed during the build, so their pages
show their outputs and figures (a failing cell fails the build). The site is self-contained: MathJax
is copied into it from the ``sphinx-mathjax-offline`` package, so formulas render without a network.
``tests/test_docs_site.py`` opens every built page in headless Chromium and checks all of this.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the refnorm of this checkout, whatever else is installed.
sys.path.insert(0, str(ROOT))

import refnorm  # noqa: E402
from sphinx.errors import ExtensionError  # noqa: E402

project = "refnorm"
author = "refnorm developers"
copyright = "refnorm developers"  # noqa: A001 - Sphinx's name
release = refnorm.__version__
version = release

extensions = [
    "myst_nb",  # MyST Markdown pages and .ipynb notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax: no CDN, formulas render offline
    "sphinx.ext.viewcode",
    "numpydoc",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
root_doc = "index"

# ---- MyST -------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# ---- notebooks --------------------------------------------------------------------------------
# Execute every notebook on every build, so the tutorial pages show their numbers and figures. The
# notebooks are committed without outputs, and "force" (unlike "cache") never shows the outputs of
# an older refnorm. tests/test_notebooks.py still runs them without Sphinx, as a reader would.
nb_execution_mode = "force"
# A failing cell (a numeric claim's assert) is reported as a warning with the cell and its traceback
# (myst-nb's raise_on_error would hide both in a log file), and _fail_on_notebook_errors below then
# stops the build, with or without -W, before Sphinx saves its environment (so the next build runs
# the notebook again instead of keeping the failed run).
nb_execution_raise_on_error = False
nb_execution_show_tb = True
nb_execution_timeout = 120  # seconds per cell; each notebook runs in well under a minute
nb_execution_in_temp = False  # cells run in docs/notebooks/, the copy of notebooks/ (as in the tests)
nb_ipywidgets_js: dict = {}  # no widget manager from a CDN: the site loads nothing from outside
# The kernel is a separate process: make it import this checkout's refnorm too, like Sphinx above.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _copy_notebooks() -> None:
    """Mirror ``notebooks/*.ipynb`` into ``docs/notebooks/`` (git-ignored), where Sphinx can read them.

    Sphinx only reads files under ``docs/``; the notebooks live at the top of the repository so
    that a newcomer finds them. Unchanged notebooks are not copied again (so Sphinx does not
    rebuild them); a copy whose source is gone is removed.
    """
    source, target = ROOT / "notebooks", DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    wanted = {path.name for path in source.glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name in sorted(wanted):
        src, dst = source / name, target / name
        if not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
            shutil.copy2(src, dst)


_copy_notebooks()

# ---- API reference ----------------------------------------------------------------------------
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_type_aliases = {"Array": "Array"}  # show the alias, not what it stands for (Any)
python_use_unqualified_type_names = True
numpydoc_show_class_members = False  # autodoc lists the members; numpydoc would add stub tables
numpydoc_xref_param_type = False

# Every cross-reference must resolve; the names below are types from outside refnorm that appear
# in signatures (no intersphinx: the build must work offline).
nitpicky = True
nitpick_ignore_regex = [
    ("py:class", r"(Array|Any|Callable|Sequence|Iterator|Mapping|Protocol|NamedTuple|Exception|AssertionError)"),
    ("py:class", r"(np|numpy)\..*"),
    ("py:class", r"argparse\..*"),
    ("py:class", r"(pathlib|os)\..*"),
    ("py:class", r"collections\.abc\..*|typing\..*"),
    ("py:func", r"scipy\..*"),
]

# ---- HTML -------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"refnorm {release}"
html_static_path: list[str] = []


# ---- cross-references to re-exported and imported names ----------------------------------------
def _resolve_reexport(app, env, node, contnode):
    """Resolve a reference to a name where the API reference documents it.

    ``refnorm.gradcheck`` is documented as ``refnorm.oracle.gradient_check.gradcheck``; a docstring of
    ``refnorm.ops.switchnorm`` that writes ``RunningStats`` means the class it imported from
    ``refnorm.ops.running``. Sphinx only knows the documented name, so look the object up there.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if target.startswith("refnorm."):
        module_name, _, name = target.rpartition(".")
    else:
        module_name, name = node.get("py:module") or "", target
    module = sys.modules.get(module_name)
    if module is None or not module_name.startswith("refnorm") or not hasattr(module, name):
        return None
    obj = getattr(module, name)
    domain = env.get_domain("py")
    for documented in list(domain.objects):
        owner, _, short = documented.rpartition(".")
        if short == name and owner != module_name and getattr(sys.modules.get(owner), name, None) is obj:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], documented, node, contnode)
    return None


def _drop_namedtuple_field_aliases(app, what, name, obj, options, lines):
    """A NamedTuple field without its own docstring would read "Alias for field number 0"."""
    text = [line for line in lines if line.strip()]
    if what == "attribute" and len(text) == 1 and re.fullmatch(r"Alias for field number \d+", text[0]):
        lines.clear()


def _fix_alias_repr(app, what, name, obj, options, signature, return_annotation):
    """Sphinx 9 prints an alias nested in a generic (``dict[str, Array]``) as
    ``TypeAliasForwardRef('Array')``; print the alias name instead."""
    def fix(text):
        return re.sub(r"TypeAliasForwardRef\('([^']*)'\)", r"\1", text) if text else text

    return fix(signature), fix(return_annotation)


def _fail_on_notebook_errors(app, env):
    """Stop the build if a notebook failed to run during this build (its traceback is above)."""
    from myst_nb.sphinx_ import NbMetadataCollector

    failed = sorted(
        docname
        for docname, data in NbMetadataCollector.get_doc_data(env).items()
        if (data.get("exec_data") or {}).get("succeeded") is False
    )
    if failed:
        raise ExtensionError(f"notebooks failed to run (the failing cell and its traceback are above): {', '.join(failed)}")


def setup(app):
    app.connect("env-updated", _fail_on_notebook_errors)
    app.connect("missing-reference", _resolve_reexport)
    app.connect("autodoc-process-signature", _fix_alias_repr)
    app.connect("autodoc-process-docstring", _drop_namedtuple_field_aliases, priority=400)  # before numpydoc
