"""The built documentation site, as a reader sees it: every page opened in headless Chromium.

A page passes when, after its scripts ran (MathJax typesets the formulas in the browser):

* every formula rendered: each math element Sphinx wrote holds a typeset MathJax container, and no
  container holds a MathJax error or an undefined TeX macro;
* no TeX is left in the text a reader sees (``$``, ``$$``, ``\\(``, ``\\[``, ``\\frac``, ``x_{nc}`` ...;
  code blocks and inline code excepted): this is how a mis-paired ``$$`` shows (MyST typesets the
  prose between two formulas and leaves the formula as text);
* it loads nothing from outside the site: no script, stylesheet, image or frame with an external
  address in the DOM, no request off the machine in the browser's network log, and every local
  script, stylesheet and image it names exists inside the site;
* a tutorial page (a notebook executed by the build) shows cell outputs, and every figure its
  notebook makes (one per ``plt.show()``) as an image in a cell output.

Each check is a function of the page's DOM after rendering, tested below on small hand-made pages
with each defect, without a browser. The site tests need the site (``python -m sphinx -W -b html
docs docs/_build/html``) and Debian's ``chromium``; without either they skip, saying which is
missing, unless ``REFNORM_REQUIRE_DOCS_SITE=1`` (``.ci/run`` sets it), which turns the skip into a
failure. The display-math lint of the Markdown sources needs neither.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SITE = DOCS / "_build" / "html"
REQUIRE_SITE = "REFNORM_REQUIRE_DOCS_SITE"
"""Set to 1 (as ``.ci/run`` does) to fail, not skip, when the site or Chromium is missing."""

CHROMIUM_TIMEOUT_S = 90
"""One page, MathJax included, renders in about a second; a page taking this long has hung."""
VIRTUAL_TIME_BUDGET_MS = 15000
"""Chromium's virtual clock runs this far (scripts, timers, fonts) before it writes the DOM."""


def _skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_SITE) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SITE}=1: the docs site must be checked here)", pytrace=False)
    pytest.skip(reason)


# ---- the Markdown sources: display math is a block of its own ----------------------------------

FENCE = re.compile(r"^\s*(```+|~~~+)")
INLINE_CODE = re.compile(r"`[^`]*`")


def display_math_problems(markdown: str) -> list[str]:
    """Every ``$$`` of a MyST page that does not stand as a display block of its own.

    MyST reads ``$$`` as display math only at the start of a line that follows a blank line (or
    the start of a list item's body, indented like it); anywhere else it pairs the dollars with
    its neighbours and typesets the prose between two formulas. So a display formula opens with
    ``$$`` at the start of a line after a blank line, and closes with ``$$`` at the end of a line
    followed by a blank line. Code blocks and inline code are left alone.
    """
    problems = []
    lines = markdown.split("\n")
    fence = None
    open_at = None  # line number of the $$ that opened the display block we are in
    for index, line in enumerate(lines):
        number = index + 1
        marker = FENCE.match(line)
        if fence is not None:
            if marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
                fence = None
            continue
        if marker and open_at is None:
            fence = marker.group(1)
            continue
        text = INLINE_CODE.sub("", line)
        count = text.count("$$")
        if count == 0:
            continue
        before = lines[index - 1] if index > 0 else ""
        after = lines[index + 1] if index + 1 < len(lines) else ""
        if open_at is None:
            if not text.lstrip().startswith("$$") or count > 2 or (count == 2 and not text.rstrip().endswith("$$")):
                problems.append(f"line {number}: $$ inside running text (a display formula is a block of its own): {line.strip()[:70]}")
                continue
            if before.strip():
                problems.append(f"line {number}: display math not preceded by a blank line")
            if count == 1:
                open_at = number
            elif after.strip():
                problems.append(f"line {number}: display math not followed by a blank line")
        else:
            if count > 1 or not text.rstrip().endswith("$$"):
                problems.append(f"line {number}: text after the $$ that closes the display math opened on line {open_at}")
            elif after.strip():
                problems.append(f"line {number}: display math not followed by a blank line")
            open_at = None
    if open_at is not None:
        problems.append(f"line {open_at}: display math opened and never closed")
    return problems


def _markdown_sources() -> list[tuple[str, str]]:
    """(name, Markdown text) of every docs page and every notebook's Markdown cell."""
    sources = [
        (str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
        for path in sorted(DOCS.rglob("*.md"))
        if "_build" not in path.parts and "notebooks" not in path.relative_to(DOCS).parts
    ]
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        sources += [
            (f"{path.relative_to(ROOT)} cell {index}", "".join(cell["source"]))
            for index, cell in enumerate(cells)
            if cell["cell_type"] == "markdown"
        ]
    return sources


MARKDOWN_SOURCES = _markdown_sources()


def test_every_docs_page_and_notebook_is_linted():
    names = {name.split(" cell ")[0] for name, _ in MARKDOWN_SOURCES}
    assert {"docs/sn-backward.md", "docs/sparsestmax.md", "docs/exemplar-norm.md", "notebooks/01_switchable_normalization.ipynb"} <= names


@pytest.mark.parametrize(
    "name, text",
    [pytest.param(name, text, id=name) for name, text in MARKDOWN_SOURCES if "$$" in text],
)
def test_display_math_is_a_block_of_its_own(name, text):
    problems = display_math_problems(text)
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_display_math_problems_are_found():
    good = "Text:\n\n$$a = b,$$\n\nmore text.\n\n1. item:\n\n   $$c\n   = d$$\n\n   more.\n\n```\n$$ in code\n```\n`$$` in code"
    assert display_math_problems(good) == []
    assert display_math_problems("Text:\n$$a$$\n\nmore") == ["line 2: display math not preceded by a blank line"]
    assert display_math_problems("Text:\n\n$$a$$\nmore") == ["line 3: display math not followed by a blank line"]
    assert display_math_problems("1. item:\n   $$a$$\n   with $d$") == [
        "line 2: display math not preceded by a blank line",
        "line 2: display math not followed by a blank line",
    ]
    assert display_math_problems("so $$a$$ in a sentence")[0].startswith("line 1: $$ inside running text")
    assert display_math_problems("\n$$a\n= b$$ and more\n")[0].startswith("line 3: text after the $$")
    assert display_math_problems("\n$$a\n") == ["line 2: display math opened and never closed"]


# ---- a page's DOM, after the browser ran its scripts -------------------------------------------

VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


@dataclass(eq=False)
class Element:
    """One element of a parsed page: tag, attributes, and children (elements and text)."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def iter(self, *tags: str):
        """This element and its descendants (those with one of ``tags``, if given), in document order."""
        if not tags or self.tag in tags:
            yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter(*tags)

    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID_ELEMENTS:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


@dataclass(frozen=True)
class RenderedPage:
    """A page as the browser left it: the page's path in the site, its DOM after the scripts ran,
    and the addresses of the requests the page made through the network stack (file:// loads
    do not go through it, so these are the requests off the machine)."""

    path: str
    dom: str
    requests: tuple[str, ...] = ()


# Elements whose text a reader does not see as prose, or that are code.
NOT_PROSE = {"head", "script", "style", "noscript", "template", "pre", "code", "kbd", "samp", "tt", "textarea", "svg", "math", "mjx-container"}
VISIBLE_TEX = re.compile(
    r"\$\$|\$|\\[()\[\]]"  # $$, any other dollar sign; \( \) \[ \] delimiters
    r"|\\[A-Za-z]+"  # a TeX control word: \frac, \mu, \begin
    r"|[_^]\{"  # a TeX sub- or superscript group: x_{nc}, e^{-1}
)
# Attributes through which an element makes the browser load something.
RESOURCE_ATTRIBUTES = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "input": ("src",),
    "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
}
LOADED_LINK_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch", "icon", "apple-touch-icon", "mask-icon", "manifest"}
CSS_URL = re.compile(r"""@import\s+["']([^"']+)["']|url\(\s*["']?([^"')]+)["']?\s*\)""")
LOCAL_SCHEMES = {"", "file"}
INERT_SCHEMES = {"data", "blob", "about", "javascript"}
UNDEFINED_MACRO = re.compile(r"^\\[A-Za-z]+")


def _excerpt(text: str, start: int, end: int) -> str:
    return " ".join(text[max(0, start - 40) : end + 40].split())


def _prose(element: Element) -> list[str]:
    """The runs of text a reader sees as prose: code, formulas and hidden elements left out, and
    each element starting a new run."""
    if element.tag in NOT_PROSE or "hidden" in element.attrs or "visually-hidden" in element.classes():
        return []
    runs, current = [], []
    for child in element.children:
        if isinstance(child, str):
            current.append(child)
        else:
            runs.append("".join(current))
            current = []
            runs.extend(_prose(child))
    runs.append("".join(current))
    return [run for run in runs if run.strip()]


def visible_tex(root: Element) -> list[str]:
    """TeX a reader sees as text: every match of ``VISIBLE_TEX`` in the prose, with context."""
    found = []
    for run in _prose(root):
        found += [f"{match.group()} in “{_excerpt(run, match.start(), match.end())}”" for match in VISIBLE_TEX.finditer(run)]
    return found


def formula_problems(root: Element) -> tuple[int, list[str]]:
    """(number of typeset formulas, problems): every math element Sphinx or myst-nb wrote must hold
    a typeset MathJax container, and no container may hold an error or an undefined macro."""
    problems = []
    for element in root.iter():
        if element.tag in ("span", "div") and "math" in element.classes() and not any(True for _ in element.iter("mjx-container")):
            problems.append(f"formula not typeset: {' '.join(element.text().split())[:80]}")
    containers = list(root.iter("mjx-container"))
    for container in containers:
        for node in container.iter():
            if node.tag in ("mjx-merror", "merror") or "data-mjx-error" in node.attrs:
                message = node.attrs.get("data-mjx-error") or node.attrs.get("title") or node.text()
                problems.append(f"MathJax error: {' '.join(message.split())[:80]}")
            elif node.tag in ("mtext", "mi") and UNDEFINED_MACRO.match(node.text()):
                problems.append(f"undefined TeX macro {UNDEFINED_MACRO.match(node.text()).group()} in a formula")
    return len(containers), problems


def _resource_urls(root: Element) -> list[str]:
    urls = []
    for element in root.iter():
        for attribute in RESOURCE_ATTRIBUTES.get(element.tag, ()):
            value = element.attrs.get(attribute, "").strip()
            if attribute == "srcset":
                urls += [candidate.split()[0] for candidate in value.split(",") if candidate.split()]
            elif value:
                urls.append(value)
        if element.tag == "link" and set(element.attrs.get("rel", "").lower().split()) & LOADED_LINK_RELS:
            urls.append(element.attrs.get("href", "").strip())
        css = element.text() if element.tag == "style" else element.attrs.get("style", "")
        urls += [next(group for group in match.groups() if group) for match in CSS_URL.finditer(css)]
    return [url for url in urls if url]


def resource_problems(page: RenderedPage, site: Path) -> list[str]:
    """Every resource of the page's DOM and every request in its network log that is not a file
    inside ``site``, and every local resource that does not exist."""
    problems = []
    site = site.resolve()
    page_dir = (site / page.path).parent
    for url in _resource_urls(parse_html(page.dom)):
        if url.startswith("#"):  # an element of the page itself (furo's <use href="#svg-sun">)
            continue
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in INERT_SCHEMES:
            continue
        if scheme not in LOCAL_SCHEMES or parts.netloc:
            problems.append(f"loads {url} from outside the site")
            continue
        path = unquote(parts.path)
        target = Path(path) if scheme == "file" or path.startswith("/") else page_dir / path
        target = target.resolve()
        if not target.is_relative_to(site):
            problems.append(f"loads {url}, a file outside the site")
        elif not target.is_file():
            problems.append(f"loads {url}, which is not in the site")
    problems += [f"requested {url} over the network" for url in page.requests]
    return problems


def figures_made_by(notebook: Path) -> int:
    """How many figures a notebook shows when run: its ``plt.show()`` calls."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return sum("".join(cell["source"]).count("plt.show()") for cell in cells if cell["cell_type"] == "code")


def tutorial_problems(root: Element, figures_expected: int) -> list[str]:
    """A tutorial page shows the outputs of its executed notebook: cell outputs, and at least the
    figures (images or SVG inside a cell's output) that the notebook makes."""
    outputs = [element for element in root.iter() if "cell_output" in element.classes()]
    figures = [figure for output in outputs for figure in output.iter("img", "svg")]
    if not outputs:
        return ["tutorial page without cell outputs: the notebook was not executed by the build"]
    if len(figures) < figures_expected:
        return [f"tutorial page shows {len(figures)} figures in its {len(outputs)} cell outputs; the notebook makes {figures_expected}"]
    return []


def page_problems(page: RenderedPage, site: Path, *, figures_expected: int | None = None) -> tuple[int, list[str]]:
    """(number of typeset formulas, everything wrong with the page). ``figures_expected`` is given
    for a tutorial page: the number of figures its notebook makes."""
    root = parse_html(page.dom)
    count, problems = formula_problems(root)
    problems += [f"TeX visible as text: {hit}" for hit in visible_tex(root)]
    problems += resource_problems(page, site)
    if figures_expected is not None:
        problems += tutorial_problems(root, figures_expected)
    return count, problems


# ---- the checks, on hand-made pages (no browser) -----------------------------------------------

RENDERED = '<mjx-container class="MathJax" jax="CHTML"><mjx-math></mjx-math><mjx-assistive-mml><math><mi>x</mi></math></mjx-assistive-mml></mjx-container>'
FIGURE_OUTPUT = '<div class="cell_output docutils container"><img alt="_images/f.png" src="../_images/f.png"></div>'


def _page(body: str, *, path: str = "page.html", head: str = "", requests: tuple[str, ...] = ()) -> RenderedPage:
    return RenderedPage(path, f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>", requests)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A tiny site: a stylesheet, a script and a figure, as pages refer to them."""
    for name in ("_static/site.css", "_static/site.js", "_images/f.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("", encoding="utf-8")
    return tmp_path


def test_a_page_with_rendered_math_and_local_resources_passes(site):
    page = _page(
        f'<p>A formula <span class="math notranslate nohighlight">{RENDERED}</span> and a second:</p>'
        f'<div class="math notranslate nohighlight">{RENDERED}</div>'
        "<pre>echo $HOME; r'\\frac{a}{b}'</pre><p>Code <code>x_{nc} = $y$</code> is not prose.</p>"
        '<p>Price 3 €, ratio 1/2, and <a href="https://example.org/">a link to elsewhere</a>.</p>',
        head='<link rel="stylesheet" href="_static/site.css"><script src="_static/site.js"></script><link rel="next" href="https://example.org/next">',
    )
    assert page_problems(page, site) == (2, [])


def test_a_raw_display_dollar_pair_is_found(site):
    count, problems = page_problems(_page("<p>so $$\\mu = \\frac1M \\sum_i x_i$$ holds</p>"), site)
    assert count == 0
    assert [problem.split(" in ")[0] for problem in problems] == [
        "TeX visible as text: $$", "TeX visible as text: \\mu", "TeX visible as text: \\frac", "TeX visible as text: \\sum",
        "TeX visible as text: $$",
    ]


def test_a_mis_paired_formula_is_found(site):
    # What MyST made of `$$` inside a list item: the prose typeset, the formula's tail left as text.
    body = f'<li><p>$<span class="math">{RENDERED}</span><span class="math">{RENDERED}</span>d = 1<span class="math">{RENDERED}</span>d = 0$ otherwise.</p></li>'
    count, problems = page_problems(_page(body), site)
    assert count == 3
    assert [problem.split(" in ")[0] for problem in problems] == ["TeX visible as text: $", "TeX visible as text: $"]


def test_an_unrendered_formula_is_found(site):
    count, problems = page_problems(_page('<p>mean <span class="math notranslate nohighlight">\\(\\mu_{nc}\\)</span></p>'), site)
    assert count == 0
    assert [problem.split(" in ")[0] for problem in problems] == [
        "formula not typeset: \\(\\mu_{nc}\\)",
        "TeX visible as text: \\(", "TeX visible as text: \\mu", "TeX visible as text: _{", "TeX visible as text: \\)",
    ]


def test_a_mathjax_error_and_an_undefined_macro_are_found(site):
    error = '<mjx-container><mjx-merror data-mjx-error="Double exponent: use braces to clarify"></mjx-merror></mjx-container>'
    undefined = '<mjx-container><mjx-assistive-mml><math><mtext mathcolor="red">\\foo</mtext><mi>x</mi></math></mjx-assistive-mml></mjx-container>'
    count, problems = page_problems(_page(f'<span class="math">{error}</span><span class="math">{undefined}</span>'), site)
    assert count == 2
    assert problems == ["MathJax error: Double exponent: use braces to clarify", "undefined TeX macro \\foo in a formula"]


@pytest.mark.parametrize(
    "head",
    [
        '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"></script>',
        '<link rel="stylesheet" href="//fonts.example.org/css">',
        "<style>@import 'https://fonts.example.org/font.css';</style>",
        '<link rel="preload" href="http://example.org/font.woff2" as="font">',
    ],
    ids=["script", "protocol-relative stylesheet", "css import", "preload"],
)
def test_an_external_script_or_stylesheet_is_found(site, head):
    count, problems = page_problems(_page("<p>text</p>", head=head), site)
    assert len(problems) == 1 and problems[0].endswith("from outside the site")


def test_an_external_image_or_a_missing_or_outside_file_is_found(site):
    body = '<img src="https://example.org/plot.png"><img src="_images/missing.png"><script src="../elsewhere.js"></script>'
    _, problems = page_problems(_page(body), site)
    assert problems == [
        "loads https://example.org/plot.png from outside the site",
        "loads _images/missing.png, which is not in the site",
        "loads ../elsewhere.js, a file outside the site",
    ]


def test_a_request_in_the_network_log_is_found(site):
    _, problems = page_problems(_page("<p>text</p>", requests=("https://cdn.example.org/x.js",)), site)
    assert problems == ["requested https://cdn.example.org/x.js over the network"]


def test_a_tutorial_page_without_its_figures_is_found(site):
    (site / "notebooks").mkdir()
    unexecuted = _page('<div class="cell_input"><pre>plt.show()</pre></div>', path="notebooks/01.html")
    without_figure = _page('<div class="cell_output"><pre>0.5</pre></div>', path="notebooks/01.html")
    with_figure = _page(FIGURE_OUTPUT, path="notebooks/01.html")
    an_image_outside_the_outputs = _page('<div class="cell_output"><pre>0.5</pre></div><img src="../_images/f.png">', path="notebooks/01.html")
    assert page_problems(unexecuted, site, figures_expected=0)[1] == [
        "tutorial page without cell outputs: the notebook was not executed by the build"
    ]
    assert page_problems(without_figure, site, figures_expected=1)[1] == [
        "tutorial page shows 0 figures in its 1 cell outputs; the notebook makes 1"
    ]
    assert page_problems(an_image_outside_the_outputs, site, figures_expected=1)[1] == [
        "tutorial page shows 0 figures in its 1 cell outputs; the notebook makes 1"
    ]
    assert page_problems(with_figure, site, figures_expected=1) == (0, [])
    assert page_problems(without_figure, site, figures_expected=0) == (0, [])  # a notebook that plots nothing


def test_figures_made_by_counts_plt_show_in_code_cells(tmp_path):
    notebook = tmp_path / "n.ipynb"
    notebook.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["Call `plt.show()` to see it."]},
        {"cell_type": "code", "source": ["plt.plot(x)\n", "plt.show()"]},
        {"cell_type": "code", "source": ["for k in range(3):\n", "    plt.show()\n", "plt.show()"]},
    ]}), encoding="utf-8")  # fmt: skip
    assert figures_made_by(notebook) == 3


def test_every_tutorial_makes_a_figure():
    """Issue 11: no tutorial page without a figure, so the browser test asks each one for its figures."""
    made = {path.stem: figures_made_by(path) for path in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    assert len(made) == 4 and all(count > 0 for count in made.values()), made


# ---- the browser -------------------------------------------------------------------------------


@cache
def chromium() -> str | None:
    """Debian's ``chromium`` (``REFNORM_CHROMIUM`` names another binary)."""
    return os.environ.get("REFNORM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _page_requests(net_log: Path) -> tuple[str, ...]:
    """The addresses a page requested, from Chromium's network log.

    The browser's own background requests (update checks, time sync) are logged too; they carry
    no initiator ("not an origin"), while a page's requests carry the page's origin, "null" for a
    file:// page."""
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] == start_job and "url" in params and params.get("initiator") != "not an origin":
            if params["url"] not in urls:
                urls.append(params["url"])
    return tuple(urls)


def render(path: Path, site: Path) -> RenderedPage:
    """Open ``path`` in headless Chromium; its DOM once the scripts ran, and its network requests.

    No request leaves the machine (every host name resolves to nothing), but each attempt is in
    the network log."""
    with tempfile.TemporaryDirectory(prefix="refnorm-chromium-") as profile:
        net_log = Path(profile) / "net-log.json"
        command = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={net_log}",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", "--dump-dom", path.resolve().as_uri(),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)
        if result.returncode != 0 or "<body" not in result.stdout:
            raise RuntimeError(f"chromium could not render {path} (exit {result.returncode}):\n{result.stderr[-2000:]}")
        requests = _page_requests(net_log) if net_log.exists() else ()
    return RenderedPage(path.resolve().relative_to(site.resolve()).as_posix(), result.stdout, requests)


def test_the_browser_renders_a_page_and_logs_its_requests(tmp_path):
    """The driver itself: Chromium runs the page's script (a request that exists only in the network
    log, not in the DOM) and the checks find it, the external script and the raw TeX."""
    if chromium() is None:
        _skip_or_fail("chromium is not installed (apt-get install -y chromium)")
    page_path = tmp_path / "page.html"
    page_path.write_text(
        "<!DOCTYPE html><html><head><script src='https://cdn.example.org/mathjax.js'></script></head><body>"
        "<p id='p'>waiting</p><p>raw $$x^2$$</p>"
        "<script>new Image().src = 'https://images.example.org/plot.png';"
        "setTimeout(() => { document.getElementById('p').textContent = 'script ran'; }, 500);</script>"
        "</body></html>",
        encoding="utf-8",
    )
    page = render(page_path, tmp_path)
    assert page.path == "page.html"
    assert "script ran" in page.dom  # the timer fired: the DOM is the one after the scripts
    assert set(page.requests) == {"https://cdn.example.org/mathjax.js", "https://images.example.org/plot.png"}
    _, problems = page_problems(page, tmp_path)
    assert "loads https://cdn.example.org/mathjax.js from outside the site" in problems
    assert "requested https://images.example.org/plot.png over the network" in problems
    assert any(problem.startswith("TeX visible as text: $") for problem in problems)


# ---- the site ----------------------------------------------------------------------------------


def site_pages(site: Path) -> list[Path]:
    """Every HTML page of the built site (MathJax's own files under _static are not pages)."""
    return sorted(path for path in site.rglob("*.html") if "_static" not in path.relative_to(site).parts)


SITE_PAGES = site_pages(SITE) if SITE.is_dir() else []


@pytest.fixture(scope="module")
def rendered_site() -> dict[str, RenderedPage]:
    """Every page of the built site, rendered once (two browsers at a time)."""
    if chromium() is None:
        _skip_or_fail("chromium is not installed (apt-get install -y chromium)")
    if not SITE_PAGES:
        _skip_or_fail(f"the docs site is not built ({SITE.relative_to(ROOT)}): python -m sphinx -W -b html docs docs/_build/html")
    with ThreadPoolExecutor(max_workers=2) as pool:
        pages = list(pool.map(lambda path: render(path, SITE), SITE_PAGES))
    return {page.path: page for page in pages}


def test_the_site_is_built_with_every_page():
    if not (SITE / "index.html").is_file():
        _skip_or_fail(f"the docs site is not built ({SITE.relative_to(ROOT)}): python -m sphinx -W -b html docs docs/_build/html")
    names = {path.relative_to(SITE).as_posix() for path in SITE_PAGES}
    expected = {f"{path.stem}.html" for path in DOCS.glob("*.md")} | {f"api/{path.stem}.html" for path in (DOCS / "api").glob("*.md")}
    expected |= {f"notebooks/{path.stem}.html" for path in (ROOT / "notebooks").glob("*.ipynb")}
    if not expected <= names:
        # A site built before pages were added is stale, not wrong: outside CI this is a skip that
        # says so (a developer's old build must not fail the suite); .ci/run builds the site first
        # and sets REFNORM_REQUIRE_DOCS_SITE=1, where it is a failure.
        _skip_or_fail(
            f"the docs site is stale, pages missing from it: {sorted(expected - names)}; "
            "rebuild it with python -m sphinx -W -b html docs docs/_build/html"
        )


@pytest.mark.parametrize("path", SITE_PAGES, ids=lambda path: path.relative_to(SITE).as_posix())
def test_page_renders_completely_offline(path, rendered_site):
    page = rendered_site[path.relative_to(SITE).as_posix()]
    notebook = ROOT / "notebooks" / f"{path.stem}.ipynb"
    figures_expected = None
    if page.path.startswith("notebooks/"):
        figures_expected = figures_made_by(notebook) if notebook.is_file() else 0
    count, problems = page_problems(page, SITE, figures_expected=figures_expected)
    assert not problems, f"{page.path} ({count} formulas typeset):\n" + "\n".join(problems)
    # The checks read the page the reader sees: its prose includes the page's title.
    root = parse_html(page.dom)
    prose = set(_prose(root))
    assert prose, f"{page.path}: no text at all; did the browser load the page?"
    for heading in root.iter("h1"):
        assert set(_prose(heading)) <= prose, f"{page.path}: the prose the checks read misses the heading"
