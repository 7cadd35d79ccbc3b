"""svi ui in a real headless browser (the system's Chromium driven by Playwright): two
prompts, 3 clips, the video plays, a long run's drift plot updates, stop, branch from
clip 2, download the branch and count its frames.

``SVI_UI_SCREENSHOT=docs/figures/ui.png`` saves the screenshot taken during the long
run there (else into the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from svi.manifest import manifest_path
from svi.video import read_video
from world_fixtures import build_tiny_world_model

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)"
)
TIMEOUT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from svi.ui.app import serve

    model = build_tiny_world_model(tmp_path / "tiny")
    port = _free_port()
    demo, queue = serve(port=port, model=str(model), sessions=tmp_path / "sessions", block=False)
    yield f"http://127.0.0.1:{port}/", tmp_path / "sessions"
    queue.close()
    demo.close()


def _state(page) -> tuple[str, int]:
    el = page.locator("#job-state")
    return el.get_attribute("data-state"), int(el.get_attribute("data-clips") or 0)


def _wait_state(page, state: str) -> None:
    page.wait_for_selector(f'#job-state[data-state="{state}"]', timeout=TIMEOUT_MS)


def _wait_clips(page, at_least: int) -> None:
    page.wait_for_function(
        f"() => +(document.querySelector('#job-state')?.dataset.clips || 0) >= {at_least}",
        timeout=TIMEOUT_MS,
    )


def _field(page, elem_id: str):
    """The text field of a component (an input or a textarea)."""
    return page.locator(f"#{elem_id} :is(input, textarea)").first


def _plot_src(page) -> str:
    return page.locator("#drift-plot img").first.get_attribute("src") or ""


PLAYS = """async (v) => {
  v.muted = true;
  await v.play();
  await new Promise((r) => setTimeout(r, 700));
  return {time: v.currentTime, duration: v.duration, ready: v.readyState,
          error: v.error && v.error.code};
}"""


def test_generate_watch_stop_branch_download(served, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    url, sessions = served
    shot = Path(os.environ.get("SVI_UI_SCREENSHOT") or tmp_path / "ui.png")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        page.goto(url)
        page.locator("#prompts textarea").fill("a red disc bounces\na blue square enters")
        _field(page, "steps").fill("2")
        page.locator("#amount input").fill("3")
        page.locator("#generate").click()
        _wait_state(page, "done")
        assert _state(page)[1] == 3
        page.wait_for_selector("#drift-plot img", timeout=TIMEOUT_MS)
        grid = page.locator("#drift-table [role=grid]")
        assert grid.get_attribute("aria-rowcount") == "4"  # the header and one row per clip
        video = page.locator("#preview video")
        video.wait_for(timeout=TIMEOUT_MS)
        played = video.evaluate(PLAYS)
        assert played["error"] is None and played["duration"] > 0 and played["time"] > 0

        # a long run, watched while it grows, then stopped
        _field(page, "steps").fill("30")
        page.locator("#length label", has_text="forever").click()
        page.locator("#generate").click()
        _wait_state(page, "running")
        _wait_clips(page, 3)
        first = _plot_src(page)
        page.wait_for_function(
            "() => (document.querySelector('#preview video')?.readyState || 0) >= 2",
            timeout=TIMEOUT_MS,
        )
        page.screenshot(path=str(shot), full_page=True)
        _wait_clips(page, _state(page)[1] + 3)
        page.wait_for_function(
            "(before) => (document.querySelector('#drift-plot img')?.src || '') !== before",
            arg=first,
            timeout=TIMEOUT_MS,
        )
        page.locator("#stop").click()
        _wait_state(page, "stopped")
        stopped = page.locator("#session input").input_value()
        source = json.loads(manifest_path(sessions / stopped / f"{stopped}.mp4").read_text())
        assert source["status"] == "interrupted" and len(source["clips"]) >= 3

        # branch the stopped session from clip 2: 4 clips in all, a new seed
        page.locator("#branch-clip input").fill("2")
        _field(page, "branch-seed").fill("77")
        _field(page, "branch-clips").fill("4")
        page.locator("#branch").click()
        _wait_state(page, "done")
        branched = page.locator("#session input").input_value()
        assert branched != stopped
        page.locator("#download").click()
        link = page.locator("#files a[download$='.mp4']").first
        link.wait_for(timeout=TIMEOUT_MS)
        with page.expect_download() as download:
            link.click()
        got = tmp_path / "branch.mp4"
        download.value.save_as(got)
        browser.close()
    manifest = json.loads(manifest_path(sessions / branched / f"{branched}.mp4").read_text())
    assert manifest["branch"]["clip"] == 2 and len(manifest["clips"]) == 4
    assert len(read_video(got)) == manifest["frames_written"] == 4 * 3 + 2
    assert shot.is_file()


def test_edit_the_prompts_of_a_running_job(served) -> None:
    """Issue 27: the prompt stream stays editable while a job runs; the clips not started
    yet follow the edit, the finished ones stay, the manifest says from which clip."""
    sync_api = pytest.importorskip("playwright.sync_api")
    url, sessions = served
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.locator("#prompts textarea").fill("a red disc bounces")
        _field(page, "steps").fill("60")  # slow enough to edit while it runs
        page.locator("#amount input").fill("8")
        page.locator("#generate").click()
        _wait_state(page, "running")
        _wait_clips(page, 1)
        page.locator("#prompts textarea").fill("the red disc turns yellow")
        page.locator("#steer").click()
        page.wait_for_function(
            "() => /steer|edited|error/.test(document.querySelector('#message')?.innerText)",
            timeout=TIMEOUT_MS,
        )
        said = page.locator("#message").inner_text()
        assert "follow the edited prompt stream" in said, said
        _wait_state(page, "done")
        sid = page.locator("#session input").input_value()
        browser.close()
    manifest = json.loads(manifest_path(sessions / sid / f"{sid}.mp4").read_text())
    (edit,) = manifest["edits"]
    k = edit["from_clip"]
    assert 1 <= k < 8 and edit["prompt_texts"] == ["the red disc turns yellow"]
    assert all(c["prompt_index"] == 0 for c in manifest["clips"][:k])
    assert all(c["prompt"] == "the red disc turns yellow" for c in manifest["clips"][k:])
