r"""The built book in a real browser (headless Debian Chromium via Selenium).

Every chapter page must load, every image on it must actually load (non-zero
natural size), each chapter must show at least one figure, and the Colab
launch button must point at the chapter's own ``.ipynb``.

Every page of the table of contents (intro, chapters, API reference), in a
1280 x 900 window with every collapsed cell opened:

* math is typeset by the MathJax served with the book (its script comes from
  the book's own server, never a CDN): each ``.math`` element holds an ``mjx-container``, no TeX error is
  shown, and no raw ``\(``, ``\[`` or ``$$`` is left in the text outside code;
* nothing is cut off. The rule: every table and every code block either fits
  the article column, or sits in a box that fits the column and scrolls
  horizontally (``overflow-x`` auto or scroll, a scrollbar taking room on
  screen) far enough to show its right edge; no box between it and the article
  hides it;
* a full-page screenshot (at most 16,000 px tall) goes to
  ``_build/screenshots/<page>.png`` for a person to look at.

The API reference pages document the public API from its docstrings. Run by
``make test-book`` after ``make book``.
"""

import base64
import functools
import http.server
import shutil
import threading

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from nodebook.book import toc_chapters
from nodebook.utils import REPO_ROOT

HTML = REPO_ROOT / "_build" / "html"
SCREENSHOTS = REPO_ROOT / "_build" / "screenshots"
CHAPTERS = toc_chapters()
WIDTH, HEIGHT = 1280, 900
MAX_SCREENSHOT_HEIGHT = 16000  # Chromium's limit for one capture is a little above this


def toc_pages() -> list[str]:
    """Every page of ``_toc.yml`` (root first), as paths without suffix: ``book/intro``."""
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [entry["file"] for entry in part.get("chapters", [])]
    return pages


PAGES = toc_pages()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # one line per file served drowns pytest's output
        pass


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}: run `make book` first")
    handler = functools.partial(QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium (or google-chrome) and chromedriver are needed (make test-book installs "
                    "Debian's chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chrome')}"):
        options.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_window_size(WIDTH, HEIGHT)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()


def _images(browser):
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('main img, article img'))"
        ".map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth, i.naturalHeight]);")


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[nb.stem for nb in CHAPTERS])
def test_chapter_page(server, browser, notebook):
    browser.get(f"{server}/book/{notebook.stem}.html")
    browser.execute_script("return Promise.all(Array.from(document.images).map("
                           "i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })));")
    images = _images(browser)
    assert images, f"{notebook.stem}: no figure on the page"
    broken = [src for src, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert not broken, f"{notebook.stem}: images that did not load: {broken}"
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a[href*='colab.research.google.com']")]
    assert links, f"{notebook.stem}: no Colab launch button"
    assert all(link.endswith(f"/book/{notebook.stem}.ipynb") for link in links), links


def test_intro_has_scorecard(server, browser):
    browser.get(f"{server}/book/intro.html")
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "Scorecard" in text
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    assert rows, "the scorecard table has no rows"


# ------------------------------------------------------------------ every page
WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
if (!window.MathJax) { done("none"); return; }
if (!MathJax.startup || !MathJax.startup.promise) {
  done("MathJax is configured but its script did not load (it must be served with the book: " +
       "mathjax_path and html_extra_path in _config.yml, fetched by `make book`)");
  return;
}
MathJax.startup.promise.then(() => done("typeset"), err => done("MathJax failed: " + err));
"""

# Text outside code, scripts and typeset math: where raw TeX delimiters must not be.
PROSE_TEXT = """
const skip = "pre, code, script, style, textarea, mjx-container, .highlight";
const walker = document.createTreeWalker(arguments[0], NodeFilter.SHOW_TEXT,
    {acceptNode: n => n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
const parts = [];
while (walker.nextNode()) parts.push(walker.currentNode.nodeValue);
return parts.join(" ");
"""

MATH = """
const math = Array.from(arguments[0].querySelectorAll(".math"));
return {total: math.length,
        untypeset: math.filter(m => !m.querySelector("mjx-container")).map(m => m.textContent.slice(0, 80)),
        errors: Array.from(document.querySelectorAll("mjx-merror")).map(e => e.textContent.slice(0, 80))};
"""

# The layout rule of the module docstring, for every table and code block of the article.
CUT_OFF = """
const article = arguments[0];
const outer = article.getBoundingClientRect(), style = getComputedStyle(article);
const a = {left: outer.left + parseFloat(style.paddingLeft), right: outer.right - parseFloat(style.paddingRight)};
const scrolls = el => ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
const clips = el => getComputedStyle(el).overflowX !== "visible";
const problems = [];
for (const el of article.querySelectorAll("table, pre")) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) continue;  // not rendered
  const what = `${el.tagName.toLowerCase()} "${el.innerText.trim().split("\\n")[0].slice(0, 60)}"`;
  let box = el;
  while (box !== article && !scrolls(box)) box = box.parentElement;
  if (box === article) box = el;
  const b = box.getBoundingClientRect();
  if (b.left < a.left - 1 || b.right > a.right + 1) {
    problems.push(`${what}: its box [${Math.round(b.left)}, ${Math.round(b.right)}] runs out of ` +
                  `the column [${Math.round(a.left)}, ${Math.round(a.right)}]`);
    continue;
  }
  for (let p = box.parentElement; p && p !== article; p = p.parentElement) {
    const q = p.getBoundingClientRect();
    if (clips(p) && (b.left < q.left - 1 || b.right > q.right + 1)) {
      problems.push(`${what}: hidden by ${p.tagName.toLowerCase()}.${p.className} (overflow ${getComputedStyle(p).overflowX})`);
    }
  }
  if (box.scrollWidth <= box.clientWidth + 1) continue;  // fits its box
  if (!scrolls(box)) {
    problems.push(`${what}: ${box.scrollWidth}px of content in a ${box.clientWidth}px box that does not scroll`);
    continue;
  }
  const border = parseFloat(getComputedStyle(box).borderTopWidth) + parseFloat(getComputedStyle(box).borderBottomWidth);
  if (box.offsetHeight - box.clientHeight - border < 1) {
    problems.push(`${what}: scrolls, but shows no horizontal scrollbar`);
  }
  box.scrollLeft = box.scrollWidth;
  const reached = box.scrollLeft + box.clientWidth;
  box.scrollLeft = 0;
  if (reached < box.scrollWidth - 1) {
    problems.push(`${what}: scrolling shows ${Math.round(reached)} of ${box.scrollWidth}px`);
  }
}
return problems;
"""


def _stem(page: str) -> str:
    return page.replace("/", "_")


def _open(browser, server, page):
    browser.get(f"{server}/{page}.html")
    assert browser.execute_script("return document.readyState") == "complete"
    article = browser.find_element(By.CSS_SELECTOR, "article.bd-article")
    # Collapsed cells (hide-input, hide-output) are checked as a reader who opens them sees them.
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true);")
    return article


def _screenshot(browser, path):
    """The whole page, WIDTH wide (Selenium's own screenshot is the viewport only): the
    DevTools protocol makes the viewport as tall as the page for one capture."""
    height = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]["height"]
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": WIDTH, "height": min(int(height), MAX_SCREENSHOT_HEIGHT), "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.parametrize("page", PAGES, ids=[_stem(p) for p in PAGES])
def test_page_math_and_layout(server, browser, page):
    article = _open(browser, server, page)
    state = browser.execute_async_script(WAIT_FOR_MATHJAX)
    math = browser.execute_script(MATH, article)
    problems = browser.execute_script(CUT_OFF, article)
    _screenshot(browser, SCREENSHOTS / f"{_stem(page)}.png")

    if math["total"]:
        assert state == "typeset", f"{page}: {state}"
        scripts = browser.execute_script(
            "return Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s));")
        assert scripts and all(src.startswith(server) for src in scripts), \
            f"{page}: MathJax must come with the book, not from the network: {scripts}"
    assert not math["untypeset"], f"{page}: math left as TeX: {math['untypeset']}"
    assert not math["errors"], f"{page}: MathJax could not typeset: {math['errors']}"
    prose = browser.execute_script(PROSE_TEXT, article)
    raw = [d for d in ("\\(", "\\[", "$$") if d in prose]
    assert not raw, f"{page}: raw TeX delimiters {raw} in the text: " + \
        "; ".join(prose[max(prose.find(d) - 40, 0):prose.find(d) + 40] for d in raw)

    assert not problems, f"{page} at {WIDTH} px: " + "\n".join(problems)


def test_equations_are_typeset(server, browser):
    """The intro's displayed equation is really typeset (a guard against a page list with no math)."""
    article = _open(browser, server, "book/intro")
    assert browser.execute_async_script(WAIT_FOR_MATHJAX) == "typeset"
    assert browser.execute_script(MATH, article)["total"] > 0
    assert browser.find_elements(By.CSS_SELECTOR, "article mjx-container[display='true']")


# Public API -> the page that must document it, each with a description from its docstring.
API = {
    "solvers": ["nodebook.odeint", "nodebook.odeint_adjoint", "nodebook.record_stats", "nodebook.SolveStats",
                "nodebook.solvers.StatsLog"],
    "models": ["nodebook.models.mnist.ODEBlock", "nodebook.models.mnist.odenet", "nodebook.models.latent_ode.LatentODE",
               "nodebook.models.cnf.CNF", "nodebook.models.planar.PlanarFlow", "nodebook.models.rnn.RNNForecaster",
               "nodebook.models.dynamics.NeuralVectorField", "nodebook.models.mlp.TimeMLP"],
    "data": ["nodebook.data.mnist.load_mnist", "nodebook.data.mnist.Batches", "nodebook.data.mnist.AUGMENTATIONS",
             "nodebook.data.spirals.make_spirals", "nodebook.data.toy2d.sample"],
    "training": ["nodebook.train.Recipe", "nodebook.train.fit", "nodebook.train.train_epoch",
                 "nodebook.train.evaluate", "nodebook.train.chunked_step", "nodebook.checkpoint.load_or_train",
                 "nodebook.checkpoint.Run"],
    "chapters": ["nodebook.book.Chapter", "nodebook.book.Chapter.result", "nodebook.book.Chapter.claim"],
}


@pytest.mark.parametrize("page", sorted(API))
def test_api_reference(server, browser, page):
    assert f"book/api/{page}" in PAGES, f"book/api/{page} is not in _toc.yml"
    browser.get(f"{server}/book/api/{page}.html")
    for name in API[page]:
        entries = browser.find_elements(By.CSS_SELECTOR, f"dt[id='{name}']")
        assert entries, f"book/api/{page}: {name} is not documented"
        description = browser.execute_script(
            "const dd = arguments[0].nextElementSibling;"
            "return dd && dd.tagName === 'DD' ? dd.innerText.trim() : '';", entries[0])
        assert description, f"book/api/{page}: {name} has no description (docstring)"
