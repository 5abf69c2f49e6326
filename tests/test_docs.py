"""The documentation stays true to the code: its examples run, it documents every public module and
name, and every test it cites exists. (The built site, opened in a browser, is checked by
tests/test_docs_site.py; building it is a separate step: see the README.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import refnorm

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
CITED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(\[[^\]`]*\])?`")


# The README's oracle example imports the reader's own package; tests/test_readme.py runs it
# with a stand-in for that package, so it is left out here.
ORACLE_EXAMPLE = re.compile(r"<!-- oracle-example -->\n```python\n.*?^```", re.DOTALL | re.MULTILINE)


def _python_blocks(path: Path) -> list[str]:
    return PYTHON_BLOCK.findall(ORACLE_EXAMPLE.sub("", path.read_text(encoding="utf-8")))


OPTIONAL_MODULES = {"torch", "jax", "dask", "distributed"}
"""Examples may use these; without them the page's examples are skipped (.ci/run installs torch,
then the dask and jax extras, and runs this file again)."""

PAGES_WITH_CODE = [path for path in [ROOT / "README.md", *PAGES] if _python_blocks(path)]


@pytest.mark.parametrize("path", PAGES_WITH_CODE, ids=lambda path: str(path.relative_to(ROOT)))
def test_python_examples_run(path):
    """The ```python blocks of a page, run in order in one namespace, as a reader would paste them."""
    namespace: dict = {"__name__": f"example:{path.name}"}
    for number, block in enumerate(_python_blocks(path), start=1):
        try:
            exec(compile(block, f"{path.relative_to(ROOT)} (python block {number})", "exec"), namespace)
        except ModuleNotFoundError as error:
            if error.name not in OPTIONAL_MODULES:
                raise
            pytest.skip(f"python block {number} of {path.relative_to(ROOT)} needs {error.name}, which is not installed")
        except Exception as error:
            pytest.fail(f"python block {number} of {path.relative_to(ROOT)} fails: {type(error).__name__}: {error}\n{block}", pytrace=False)


def test_pages_with_examples_are_found():
    assert DOCS / "getting-started.md" in PAGES_WITH_CODE


def _public_modules() -> list[str]:
    """Every module of the package whose name has no leading underscore (``refnorm.ops.switchnorm``, ...)."""
    package = ROOT / "refnorm"
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts) or parts == ("refnorm", "__main__"):
            continue
        names.append(".".join(parts))
    return names


def test_every_public_module_has_an_api_page():
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"\.\. (?:automodule|py:module):: (refnorm[\w.]*)", page.read_text(encoding="utf-8")))
    missing = [name for name in _public_modules() if name not in documented]
    assert not missing, (
        f"refnorm modules without an API page: {missing}. Add docs/api/<module>.md (copy docs/api/statistics.md) "
        "and list it in the toctree of docs/api/index.md"
    )
    listed = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    unlisted = [page.stem for page in (DOCS / "api").glob("*.md") if page.stem != "index" and f"\n{page.stem}\n" not in listed]
    assert unlisted == [], f"API pages missing from the toctree of docs/api/index.md: {unlisted}"


def test_the_readme_layout_table_matches_the_tree():
    """Every path the README's layout table names exists, and every public module is named in it
    (itself, or its folder for the catalog's per-family modules)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| path | what |"):]
    table = table.split("\n\n", 1)[0]
    paths = re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)
    assert paths, "the README has no layout table"
    assert [path for path in paths if not (ROOT / path).exists()] == [], "the README's layout table names paths that do not exist"
    for module in _public_modules():
        file = module.replace(".", "/")
        named = {f"{file}.py", f"{file}/", f"{file}/__init__.py"}
        if file.startswith("refnorm/oracle/catalog/"):  # the family modules are described by their folder's row
            named.add("refnorm/oracle/catalog/")
        assert named & set(paths), f"{module} is not in the README's layout table"


def test_the_top_level_api_page_lists_every_exported_name():
    page = (DOCS / "api" / "refnorm.md").read_text(encoding="utf-8")
    missing = [name for name in refnorm.__all__ if f"refnorm.{name}`" not in page]
    assert not missing, f"docs/api/refnorm.md does not list {missing} (names in refnorm.__all__)"


def test_every_cited_test_exists():
    citations = [(page, *match) for page in PAGES for match in CITED_TEST.findall(page.read_text(encoding="utf-8"))]
    assert citations, "no page cites a test; the pattern above no longer matches how the docs cite tests"
    missing = [
        f"{page.relative_to(ROOT)}: {file}::{name}"
        for page, file, name, _ in citations
        if not (ROOT / file).exists() or not re.search(rf"^def {name}\(", (ROOT / file).read_text(encoding="utf-8"), re.MULTILINE)
    ]
    assert not missing, f"the docs cite tests that do not exist: {missing}"
