"""The documentation site in a real browser: headless Chromium loads the built pages from a local server and checks
that they render, their images load, their equations are typeset, and nothing is fetched from outside or logged as
an error. Skips, saying why, where Chromium, its driver or Selenium is missing.

It reads the site in ``site/`` (what ``mkdocs build`` writes; CI builds it strictly just before the tests) or, where
there is none, builds it into a temporary folder first (about a minute: the notebooks run).
"""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["index.html", "notebooks/dropout.html"]  # the front page and the chapter's notebook


def _browser_or_skip():
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser check needs selenium (the docs extra)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("the browser check needs Chromium and its driver: apt-get install chromium chromium-driver")
    return webdriver, chromium, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = os.path.join(ROOT, "site")
    if not os.path.exists(os.path.join(folder, "index.html")):
        pytest.importorskip("mkdocs", reason="building the site needs mkdocs (the docs extra)")
        folder = str(tmp_path_factory.mktemp("site"))
        built = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", folder],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert built.returncode == 0, built.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def server(site):
    """The built site over HTTP on a free local port, as ``mkdocs serve`` or any static host gives it."""
    handler = functools.partial(_QuietHandler, directory=site)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    webdriver, chromium, driver_path = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
        "--no-first-run",
        "--disable-background-networking",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except Exception as error:  # a driver that does not match the browser, no display libraries, ...
        pytest.skip(f"Chromium would not start: {str(error).splitlines()[0]}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# Run in the page once it has loaded: what was rendered, typeset, loaded and fetched.
INSPECT = r"""
const done = arguments[arguments.length - 1];
const settle = () => new Promise(resolve => setTimeout(resolve, 300));
(async () => {
  await Promise.all([...document.images].map(img => img.complete ? null : new Promise(r => {
    img.addEventListener("load", r); img.addEventListener("error", r); })));
  await settle();
  const text = document.querySelector("article") ? document.querySelector("article").innerText : "";
  done({
    title: document.title,
    articleChars: text.length,
    images: [...document.images].map(img => ({src: img.src.slice(0, 80), ok: img.complete && img.naturalWidth > 0})),
    typeset: document.querySelectorAll(".katex").length,
    mathErrors: document.querySelectorAll(".katex-error").length,
    untypeset: [...document.querySelectorAll("article p, article div.arithmatex, article .jp-RenderedMarkdown")]
      .map(node => node.innerText).filter(t => /\$\$|\\\[|\\\(|\\begin\{/.test(t)).length,
    resources: performance.getEntriesByType("resource").map(entry => entry.name),
  });
})();
"""


@pytest.mark.parametrize("page", PAGES)
def test_a_page_renders_with_its_images_and_equations_and_no_errors(browser, server, page):
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(server + page)
    browser.set_script_timeout(30)
    found = browser.execute_async_script(INSPECT)
    assert found["title"] and found["articleChars"] > 500, f"{page} rendered no content: {found['title']!r}"
    assert found["images"], f"{page} shows no image"
    broken = [image["src"] for image in found["images"] if not image["ok"]]
    assert not broken, f"{page}: images that did not load: {broken}"
    assert found["typeset"] > 0, f"{page}: no equation was typeset"
    assert found["mathErrors"] == 0 and found["untypeset"] == 0, f"{page}: equations left as TeX: {found}"
    outside = [url for url in found["resources"] if not url.startswith((server, "data:", "blob:"))]
    assert not outside, f"{page} fetched from outside the site (it must work offline): {outside}"
    errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, f"{page} logged errors in the console: {errors}"
