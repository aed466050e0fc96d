"""The viewer in a real browser: headless Chromium from Debian's packages, driven by Playwright
(pointed at that binary; no browser is downloaded). Filters to failed episodes, opens one,
finds its turn text and the teacher-label diff, checks that agent text holding script, an
`onerror` image and a `javascript:` link shows as text and runs nothing, then watches the run
page's curve grow while metrics.jsonl is appended to. Screenshots of the three pages are
kept in the test's tmp dir (paths printed)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from viewer_fixtures import (
    STUDENT_TEXT,
    TEACHER_LABEL,
    XSS_IMG,
    XSS_LINK,
    XSS_SCRIPT,
    make_metrics_only_run,
    make_run,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: apt-get install chromium (scripts/test.sh does, as root)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install 'mentorgym[browser]' (Playwright)"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The viewer over a folder of two fixture runs (one with trajectories, one with metrics
    only), on a free loopback port, in a thread of this process."""
    import uvicorn

    from mentorgym.viewer import create_app

    run = make_run(tmp_path / "runs")
    make_metrics_only_run(tmp_path / "runs", "sokoban_bc", iterations=3)
    server = uvicorn.Server(
        uvicorn.Config(create_app(tmp_path / "runs"), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the viewer did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/", run
    server.should_exit = True
    thread.join(timeout=10)


def until(page, expression: str, timeout_s: float = 15.0) -> None:
    """Poll a JS expression from Python: the page's CSP forbids the string evaluation that
    Playwright's `wait_for_function` does inside the page."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        time.sleep(0.1)


def test_failed_episode_label_diff_escaping_and_a_live_curve(browser, served, tmp_path):
    base, run = served
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))

    # The episode list, filtered to failures through the page's own control.
    page.goto(base)
    page.wait_for_selector("table.episodes tbody tr")
    page.select_option("select[name=success]", "0")
    until(page, "location.hash.includes('success=0')")
    until(  # the table re-rendered with failures only
        page,
        "[...document.querySelectorAll('table.episodes tbody tr')].every(r => r.matches('.bad'))",
    )
    rows = page.locator("table.episodes tbody tr")
    assert rows.count() == 3  # the failed rollout and two failed held-out episodes
    assert all("failure" in t for t in rows.all_inner_texts())
    page.screenshot(path=str(tmp_path / "list.png"), full_page=True)

    # Open the failed rollout (iteration 1, 5 turns) and read it turn by turn.
    page.locator("table.episodes tbody tr", has_text="rollouts").first.click()
    page.wait_for_selector("section.turn")
    assert page.locator("section.turn:not(.final)").count() == 5
    diffs = page.locator(".label-diff")
    assert diffs.count() == 2  # turn 1 and turn 2; turn 3's label matches, turn 4 has none
    first = diffs.first
    assert first.locator(".side.student").inner_text().endswith(STUDENT_TEXT)
    assert first.locator(".side.teacher").inner_text().endswith(TEACHER_LABEL)
    assert first.is_visible()
    assert page.locator(".grid").first.is_visible()  # the Sokoban grid drawn as a grid
    assert page.locator("#turn-2 .badge.bad", has_text="format error").is_visible()

    # Agent text is data: the hostile actions show verbatim and nothing of them runs.
    text = page.locator("main").inner_text()
    for hostile in (XSS_SCRIPT, XSS_IMG, XSS_LINK):
        assert hostile in text
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned === undefined")
    assert page.locator("main img, main script, main a[href^='javascript']").count() == 0
    assert page.evaluate("document.scripts.length") == 1  # app.js alone
    page.screenshot(path=str(tmp_path / "episode.png"), full_page=True)

    # Arrow keys step through the filtered list the episode was opened from (3 failures).
    assert "3 of 3 listed" in page.locator(".episode-head .nav").inner_text()
    page.keyboard.press("ArrowLeft")
    page.locator("h2", has_text="seed 1000003").wait_for()

    # The run page: the success curve, and a new iteration appears while the page is open.
    page.goto(base + "#/runs")
    chart = page.locator("#chart-success")
    page.wait_for_selector("#chart-success polyline")
    assert chart.locator("g.series").count() == 2  # both runs, overlaid
    assert chart.get_attribute("data-points") == "5"  # 3 (sokoban_bc) + 2 (sokoban_dagger)
    assert page.locator("#chart-loss polyline").count() == 2
    assert "algorithm: dagger" in page.locator(".configs").text_content()
    with open(run / "metrics.jsonl", "a") as f:
        f.write(
            json.dumps({"kind": "eval", "iteration": 2, "step": 15, "success_rate": 0.9}) + "\n"
        )
    page.wait_for_selector("#chart-success[data-points='6']", timeout=15_000)
    assert "0.20 → 0.90" in page.locator("table.run-summary").inner_text()
    page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)

    # A SWE episode: the long test log folds, the submitted patch is highlighted as a diff.
    page.goto(base + "#/?env=mentorgym/SWE-v0")
    page.locator("table.episodes tbody tr", has_text="SWE").first.wait_for()
    page.locator("table.episodes tbody tr").first.click()
    page.wait_for_selector(".msg.patch")
    assert page.locator(".msg.patch pre.diff span.add", has_text="return a + b").is_visible()
    assert page.locator(".msg.patch pre.diff span.del", has_text="return a - b").is_visible()
    tool = page.locator(".msg.role-tool")
    assert "test_199" not in tool.inner_text()  # folded: a preview and a button
    tool.locator("button.unfold").click()
    assert "test_199 PASSED" in tool.inner_text()
    tool.locator("button.unfold").click()  # fold it again for the screenshot
    page.screenshot(path=str(tmp_path / "swe.png"), full_page=True)

    assert not dialogs and not errors, (dialogs, errors)
    for name in ("list", "episode", "runs", "swe"):
        print(f"screenshot: {tmp_path / (name + '.png')}")
