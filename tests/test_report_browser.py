"""The HTML report and the comparison in headless Chromium: loads offline, tables sort and filter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_report_fixtures import make_run, save_run

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                       reason="chromium is not installed (Debian package `chromium`; .ci/run installs it)"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
    page.on("request", lambda r: problems.append(f"external request: {r.url}")
            if not r.url.startswith(("file://", "data:")) else None)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, problems


def _column(page, table: str, col: int) -> list[str]:
    return page.eval_on_selector_all(f"{table} tbody tr:not([hidden])", f"rows => rows.map(r => r.cells[{col}].textContent.trim())")


def _all_images_loaded(page) -> bool:
    return page.evaluate(
        "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")


def test_report_in_chromium(browser, tmp_path):
    run = make_run(tmp_path, methods=("corr", "cos"))
    from dissectkit.report.html import HtmlOptions, write_html_report

    report = write_html_report(run, tmp_path / "out", HtmlOptions(top_images=4))
    page, problems = _open(browser, report)
    table = "#s0-relu2 table.neurons"
    assert page.locator(table).count() == 1
    assert page.locator("section.layer").count() == 4
    assert page.locator(".card").count() == 20
    assert page.locator("#summary-plots .plot img").count() == 5
    # lazy thumbnails: scroll through every card, then every image (plots, thumbs, heatmaps, outlines) decoded
    for card in page.locator(".card").all():
        card.scroll_into_view_if_needed()
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    assert _all_images_loaded(page)
    assert page.locator("img.heat").count() == 2 * 6 * 4 and page.locator("img.outline").count() > 0

    # sorting by score (numeric, no-concept rows last), then descending
    page.click(f"{table} th:nth-child(3)")
    scores = [float(s) for s in _column(page, table, 2) if s != "—"]
    assert scores == sorted(scores) and _column(page, table, 2)[-1] == "—"
    page.click(f"{table} th:nth-child(3)")
    scores = [float(s) for s in _column(page, table, 2) if s != "—"]
    assert scores == sorted(scores, reverse=True)
    page.click(f"{table} th:nth-child(1)")
    assert _column(page, table, 0) == ["0", "1", "2", "3", "4", "5"]

    # filtering by text hides rows and their cards
    section = page.locator("#s0-relu2")
    section.locator("input.filter").fill("dark")
    labels = _column(page, table, 1)
    assert labels and all(label == "dark" for label in labels)
    assert section.locator(".card:visible").count() == len(labels)
    assert section.locator(".count").inner_text() == f"{len(labels)} shown"
    section.locator("input.filter").fill("")
    section.locator("select.catfilter").select_option("(no concept)")
    assert set(_column(page, table, 1)) == {"no concept"}
    section.locator("select.catfilter").select_option("")
    assert len(_column(page, table, 1)) == 6

    # heatmap toggle
    page.uncheck("#toggle-heat")
    assert not page.locator("img.heat").first.is_visible()
    page.check("#toggle-heat")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert problems == []
    page.close()


def test_reloaded_report_and_comparison_in_chromium(browser, tmp_path):
    from dissectkit.cli.app import main
    from dissectkit.report.html import write_html_report
    from dissectkit.results.run_result import RunResult

    a = save_run(make_run(tmp_path, name="run-a", methods=("corr",)))
    b = save_run(make_run(tmp_path, name="run-b", methods=("cos",)))
    page, problems = _open(browser, write_html_report(RunResult.load(a), tmp_path / "reloaded"))
    assert page.locator(".card").count() == 10 and page.locator(".card img").count() == 0
    assert _all_images_loaded(page) and problems == []
    page.close()

    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    page, problems = _open(browser, out / "compare.html")
    assert page.locator("table.overview tbody tr").count() == 2
    assert page.locator(".plot img").count() == 3 and _all_images_loaded(page)
    side = "#pair0-l0 table.sidebyside"
    assert page.locator(f"{side} tbody tr").count() == 4
    page.locator("#pair0-l0 select.catfilter").select_option("different")
    assert _column(page, side, 0) == ["1"]  # corr: square, cos: circle
    page.click("table.overview th:nth-child(5)")
    agreement = [float(x) for x in _column(page, "table.overview", 4)]
    assert agreement == sorted(agreement)
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    assert (tmp_path / "compare.png").is_file()
    assert problems == []
    page.close()
