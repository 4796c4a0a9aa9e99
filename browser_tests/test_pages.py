"""The built book in a real browser (headless Debian Chromium via Selenium).

Every chapter page must load, every image on it must actually load (non-zero
natural size), each chapter must show at least one figure, and the Colab
launch button must point at the chapter's own ``.ipynb``. Run by
``make test-book`` after ``make book``.
"""

import functools
import http.server
import shutil
import threading

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from nodebook.book import toc_chapters
from nodebook.utils import REPO_ROOT

HTML = REPO_ROOT / "_build" / "html"
CHAPTERS = toc_chapters()


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}: run `make book` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
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
    drv.set_page_load_timeout(60)
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
