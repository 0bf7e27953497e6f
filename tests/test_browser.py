"""The generated HTML report in a real browser: headless Chromium driven by Selenium.

``mtbench report`` is regenerated from the repository's ``leaderboards/`` folder, and the index and every
page it links to (following local ``.html`` links) are opened in Debian's ``chromium`` through
``chromium-driver``'s ``chromedriver``. Checked on each page: it loaded, it has no script, every local
``.html`` link points to a file of the report, and every ``<img>`` loaded (``complete`` and
``naturalWidth > 0``); the throughput page has at least one image.

Leaderboard pages: every folder ``leaderboards/<dataset>/<setting>/`` (``<dataset>`` other than
``throughput``) holding ``*.json`` result files has a page ``<dataset>-<setting>.html`` that the index
links to. On it, each leaderboard table is ``<table class="leaderboard">`` and each body row (each ``<tr>``
in the table's ``<tbody>``; header rows go in ``<thead>``) is ``<tr data-file="<result file>.json">``; the
set of ``data-file`` values of the page equals the set of ``*.json`` file names in the folder (a file may
appear in several tables).

Full-page screenshots of the index and of one leaderboard page are saved under ``test-artifacts/`` at the
repository root. Without chromium or chromedriver (or selenium) the browser tests skip, naming the Debian
packages, unless ``MTBENCH_REQUIRE_BROWSER=1`` (set by CI), when they fail. The checking code is also run
on a hand-made report, so it is tested before the real leaderboard pages exist.
"""

from __future__ import annotations

import base64
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from mtbench.report import report
from mtbench.results.layout import REPRODUCTION, THROUGHPUT

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WINDOW = (1280, 1024)
PAGE_LOAD_TIMEOUT_S = 30
PACKAGES = "chromium chromium-driver"

# JavaScript run in the page: links as the browser resolves them, images with their load state, and
# the data-file attribute of the body rows of each leaderboard table (null where a row has none).
LINKS_JS = "return Array.from(document.querySelectorAll('a[href]'), a => a.href);"
IMAGES_JS = """return Array.from(document.images, i => ({src: i.getAttribute('src'), complete: i.complete,
                                                       width: i.naturalWidth}));"""
ROWS_JS = """return Array.from(document.querySelectorAll('table.leaderboard'),
    t => Array.from(t.tBodies).flatMap(b => Array.from(b.rows, r => r.getAttribute('data-file'))));"""


# -- what the report must contain (pure functions) -------------------------------------------------
def leaderboard_pages(leaderboards: Path) -> dict[str, set[str]]:
    """The leaderboard pages a report of ``leaderboards`` must have: ``<dataset>-<setting>.html`` for each
    folder ``<dataset>/<setting>/`` (not under ``throughput/`` or ``reproduction/``, which hold no results) with
    ``*.json`` files, to their file names."""
    pages: dict[str, set[str]] = {}
    for dataset in sorted(p for p in leaderboards.iterdir() if p.is_dir() and p.name not in (THROUGHPUT, REPRODUCTION)):
        for setting in sorted(p for p in dataset.iterdir() if p.is_dir()):
            files = {p.name for p in setting.glob("*.json") if p.is_file()}
            if files:
                pages[f"{dataset.name}-{setting.name}.html"] = files
    return pages


def row_problems(page: str, tables: list[list[str | None]], expected: set[str]) -> list[str]:
    """What is wrong with the leaderboard tables of ``page``: ``tables`` holds each table's body rows'
    ``data-file`` values (None: no attribute); ``expected``, the result file names of its folder."""
    if not tables:
        return [f'{page}: no <table class="leaderboard">']
    problems = [f"{page}: leaderboard table {t + 1}, body row {r + 1} has no data-file attribute"
                for t, rows in enumerate(tables) for r, value in enumerate(rows) if value is None]
    shown = {value for rows in tables for value in rows if value is not None}
    if missing := sorted(expected - shown):
        problems.append(f"{page}: no row for the result files {missing}")
    if unexpected := sorted(shown - expected):
        problems.append(f"{page}: rows for files that are not in its folder {unexpected}")
    return problems


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


# -- the browser -----------------------------------------------------------------------------------
def unavailable(reason: str) -> None:
    """Skip the calling test, or fail it when ``MTBENCH_REQUIRE_BROWSER=1`` (CI)."""
    message = (f"{reason}; the browser test needs the Debian packages {PACKAGES} "
               f"(apt-get install --no-install-recommends {PACKAGES}) and selenium (pip install -e '.[test]')")
    if os.environ.get("MTBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message} (MTBENCH_REQUIRE_BROWSER=1: not skipped)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def driver() -> Iterator:
    """Headless Chromium, the system's binary and driver; Selenium Manager is never asked for either."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common import selenium_manager
    except ImportError:
        unavailable("selenium is not installed")
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if missing := [name for name, path in (("chromium", chromium), ("chromedriver", chromedriver)) if not path]:
        unavailable(f"{' and '.join(missing)} not found on PATH")
    options = Options()
    options.binary_location = chromium
    # as root in a container: no sandbox, no /dev/shm (often 64 MB), no GPU; a fixed window for screenshots
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)

    def no_manager(*args, **kwargs):
        raise AssertionError("Selenium Manager was asked for a browser or driver; the test uses the system's")

    with pytest.MonkeyPatch.context() as patch:
        for name in ("binary_paths", "driver_location"):  # its entry point in Selenium >= 4.20, and before
            if hasattr(selenium_manager.SeleniumManager, name):
                patch.setattr(selenium_manager.SeleniumManager, name, no_manager)
        browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        browser.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
        browser.set_script_timeout(PAGE_LOAD_TIMEOUT_S)
        yield browser
    finally:
        browser.quit()


def open_page(driver, path: Path) -> None:
    """Load ``path`` and wait for its load event (images included; Selenium's default page-load strategy)."""
    # file:// URLs, not a local HTTP server: that is how the report is opened from disk, and Chromium
    # loads same-folder <img> files and follows relative links from file:// pages without restriction
    # (only scripts' fetch/XHR are blocked there, and the report has no script).
    assert path.is_file(), f"{path} does not exist"
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete", f"{path.name} did not finish loading"


def local_page(url: str) -> Path | None:
    """The file a link points to when it is a local ``.html`` page, else None."""
    parts = urlsplit(url)
    if parts.scheme != "file" or not parts.path.endswith(".html"):
        return None
    return Path(unquote(parts.path))


def check_report(driver, folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Open ``folder/index.html`` and every page reachable from it by local ``.html`` links; the pages, by
    file name, and every problem found on them (a broken link or image, a script, an image-less throughput page)."""
    folder = folder.resolve()
    pages: dict[str, Path] = {}
    queue, problems = [folder / "index.html"], []
    while queue:
        path = queue.pop(0)
        if path.name in pages:
            continue
        pages[path.name] = path
        open_page(driver, path)
        if driver.execute_script("return document.scripts.length"):
            problems.append(f"{path.name}: has a <script> (the report has none)")
        for url in driver.execute_script(LINKS_JS):
            target = local_page(url)
            if target is None:
                continue
            if target.parent != folder:
                problems.append(f"{path.name}: link {url} leaves the report folder")
            elif not target.is_file():
                problems.append(f"{path.name}: broken link to {target.name}")
            elif target.name not in pages:
                queue.append(target)
        images = driver.execute_script(IMAGES_JS)
        problems += [f"{path.name}: image {i['src']} did not load" for i in images
                     if not (i["complete"] and i["width"] > 0)]
        if path.name == f"{THROUGHPUT}.html" and not images:
            problems.append(f"{path.name}: no image")
    return pages, problems


def check_leaderboards(driver, folder: Path, leaderboards: Path) -> list[str]:
    """Every leaderboard page the index must link to, and its tables' rows against its folder's files."""
    folder = folder.resolve()
    open_page(driver, folder / "index.html")
    linked = {p.name for url in driver.execute_script(LINKS_JS) if (p := local_page(url)) and p.parent == folder}
    problems = []
    for page, files in leaderboard_pages(leaderboards).items():
        if page not in linked:
            problems.append(f"index.html: no link to {page}")
        if not (folder / page).is_file():
            problems.append(f"{page}: missing from the report")
            continue
        open_page(driver, folder / page)
        problems += row_problems(page, driver.execute_script(ROWS_JS), files)
    return problems


def screenshot(driver, path: Path, out: Path) -> Path:
    """A full-page PNG of ``path`` (the whole document, not only the window) as ``out``."""
    open_page(driver, path)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out


def saved(capsys, paths: list[Path]) -> None:
    with capsys.disabled():  # shown even when pytest captures output
        print("".join(f"\ntest artefact: {p}" for p in paths))


# -- the real report -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "reports"
    report(ROOT / "leaderboards", out)
    return out


@pytest.mark.browser
def test_report_pages_load_with_their_images(driver, real_report, capsys) -> None:
    shot = screenshot(driver, real_report / "index.html", ARTIFACTS / "report-index.png")
    saved(capsys, [shot])
    assert min(png_size(shot.read_bytes())) > 0
    pages, problems = check_report(driver, real_report)
    assert f"{THROUGHPUT}.html" in pages, f"the index does not link to {THROUGHPUT}.html: {sorted(pages)}"
    assert not problems, "\n".join(problems)


@pytest.mark.browser
def test_report_has_a_leaderboard_page_per_result_folder(driver, real_report, capsys) -> None:
    expected = leaderboard_pages(ROOT / "leaderboards")
    assert expected, "no leaderboards/<dataset>/<setting>/*.json in the repository"
    present = [page for page in expected if (real_report / page).is_file()]
    if present:  # a picture of one, before the checks, to see what failed
        saved(capsys, [screenshot(driver, real_report / present[0], ARTIFACTS / "report-leaderboard.png")])
    problems = check_leaderboards(driver, real_report, ROOT / "leaderboards")
    assert not problems, "\n".join(problems)


# -- the checks themselves, on made-up folders -----------------------------------------------------
def test_leaderboard_pages_are_the_result_folders(tmp_path) -> None:
    lb = tmp_path / "leaderboards"
    for rel in ("omniglot/5w1s/a.json", "omniglot/5w1s/b.json", "omniglot/5w1s/notes.md",
                "omniglot-shift/5w1s/c.json", "xray/transfer200-50/d.json", "xray/empty/.keep",
                "xray/deeper/more/e.json", "throughput/bench.json", "throughput/pytest-benchmark/f.json"):
        (lb / rel).parent.mkdir(parents=True, exist_ok=True)
        (lb / rel).write_text("{}")
    (lb / "README.md").write_text("")
    assert leaderboard_pages(lb) == {"omniglot-5w1s.html": {"a.json", "b.json"},
                                     "omniglot-shift-5w1s.html": {"c.json"},
                                     "xray-transfer200-50.html": {"d.json"}}


def test_row_problems() -> None:
    files = {"a.json", "b.json"}
    assert row_problems("p.html", [["a.json", "b.json"], ["b.json"]], files) == []  # a file in two tables
    assert row_problems("p.html", [], files) == ['p.html: no <table class="leaderboard">']
    assert row_problems("p.html", [["a.json", None], []], files) == [
        "p.html: leaderboard table 1, body row 2 has no data-file attribute",
        "p.html: no row for the result files ['b.json']"]
    assert row_problems("p.html", [["a.json", "b.json", "c.json"]], files) == [
        "p.html: rows for files that are not in its folder ['c.json']"]


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>
<nav><a href="index.html">mtbench reports</a></nav>{}</body></html>"""
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect width="40" height="20"/></svg>'


def table(rows: str, cls: str = "leaderboard") -> str:
    return (f'<table class="{cls}"><thead><tr><th>method</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def made_up(tmp_path: Path, pages: dict[str, str]) -> tuple[Path, Path]:
    """A leaderboard folder (omniglot/5w1s: a.json, b.json; xray/2w5s: c.json; throughput/) and a hand-made
    report folder of ``pages`` (file name -> body HTML) with one figure."""
    lb = tmp_path / "leaderboards"
    for rel in ("omniglot/5w1s/a.json", "omniglot/5w1s/b.json", "xray/2w5s/c.json", "throughput/x.json"):
        (lb / rel).parent.mkdir(parents=True, exist_ok=True)
        (lb / rel).write_text("{}")
    out = tmp_path / "reports"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "f.svg").write_text(SVG)
    for name, body in pages.items():
        (out / name).write_text(PAGE.format(body))
    return out, lb


GOOD = {
    "index.html": '<ul><li><a href="throughput.html">Throughput</a></li><li><a href="omniglot-5w1s.html">O</a>'
                  '</li><li><a href="xray-2w5s.html#top">X</a></li><li><a href="https://example.org/">e</a></li></ul>',
    "throughput.html": '<figure><img src="figures/f.svg" alt="f"></figure>',
    "omniglot-5w1s.html": table('<tr data-file="a.json"><td>x</td></tr><tr data-file="b.json"><td>y</td></tr>')
                          + table('<tr data-file="b.json"><td>y</td></tr>')
                          + '<table><tbody><tr><td>another table</td></tr></tbody></table>',
    # no <tbody> written: the HTML parser puts the rows in one
    "xray-2w5s.html": '<table class="leaderboard"><tr data-file="c.json"><td>z</td></tr></table>',
}


@pytest.mark.browser
def test_checks_pass_a_good_made_up_report(driver, tmp_path) -> None:
    out, lb = made_up(tmp_path, GOOD)
    pages, problems = check_report(driver, out)
    assert sorted(pages) == sorted(GOOD) and problems == []
    assert check_leaderboards(driver, out, lb) == []
    (out / "tall.html").write_text(PAGE.format('<div style="height: 3000px">tall</div><p>end</p>'))
    width, height = png_size(screenshot(driver, out / "tall.html", tmp_path / "tall.png").read_bytes())
    assert 0 < width <= WINDOW[0] and height > 3000  # the whole page, not the 1024-pixel window


@pytest.mark.browser
def test_checks_find_the_faults_of_a_bad_made_up_report(driver, tmp_path) -> None:
    bad = {
        "index.html": '<a href="throughput.html">T</a> <a href="omniglot-5w1s.html">O</a> <a href="gone.html">G</a>'
                      ' <a href="../elsewhere.html">E</a>',
        "throughput.html": '<img src="figures/missing.svg" alt="m"><img src="figures/f.svg" alt="f"><script></script>',
        "omniglot-5w1s.html": table('<tr data-file="a.json"><td>x</td></tr><tr><td>no attribute</td></tr>'
                                    '<tr data-file="z.json"><td>z</td></tr>')
                              + table('<tr data-file="b.json"><td>b not in a leaderboard table</td></tr>', "other"),
        "xray-2w5s.html": table('<tr data-file="c.json"><td>z</td></tr>'),  # present but not linked from the index
    }
    out, lb = made_up(tmp_path, bad)
    pages, problems = check_report(driver, out)
    assert sorted(pages) == ["index.html", "omniglot-5w1s.html", "throughput.html"]
    assert problems == ["index.html: broken link to gone.html",
                        f"index.html: link {(tmp_path.resolve() / 'elsewhere.html').as_uri()} leaves the report folder",
                        "throughput.html: has a <script> (the report has none)",
                        "throughput.html: image figures/missing.svg did not load"]
    assert check_leaderboards(driver, out, lb) == [
        "omniglot-5w1s.html: leaderboard table 1, body row 2 has no data-file attribute",
        "omniglot-5w1s.html: no row for the result files ['b.json']",
        "omniglot-5w1s.html: rows for files that are not in its folder ['z.json']",
        "index.html: no link to xray-2w5s.html"]
    (out / "throughput.html").write_text(PAGE.format("<p>no figure</p>"))
    assert "throughput.html: no image" in check_report(driver, out)[1]
