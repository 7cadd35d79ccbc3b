"""The README's screenshot of ``svi ui`` during a generation on the embedded model.

Usage: ``.venv/bin/python benchmarks/ui_screenshot.py [--out docs/figures/ui.png]``

Starts the app on a free port (embedded model, sessions in a temporary folder), drives
the system's Chromium with Playwright: a two-prompt stream on a world scene, 12 clips,
the screenshot once 6 clips are in (video so far, drift monitor, per-clip table), then
Stop.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

log = logging.getLogger("ui_screenshot")
TIMEOUT_MS = 300_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures/ui.png"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import sync_playwright

    from svi.ui.app import serve

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: no chromium on PATH (Debian: apt-get install chromium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        demo, queue = serve(port=port, sessions=Path(tmp), block=False)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.goto(f"http://127.0.0.1:{port}/")
                page.locator("#prompts textarea").fill(
                    "a red disc bounces over a grey wall\na blue square enters from the left"
                )
                page.locator("#amount input").fill("12")
                page.locator("#generate").click()
                page.wait_for_function(
                    "() => +(document.querySelector('#job-state')?.dataset.clips || 0) >= 6",
                    timeout=TIMEOUT_MS,
                )
                page.wait_for_function(
                    "() => (document.querySelector('#preview video')?.readyState || 0) >= 2",
                    timeout=TIMEOUT_MS,
                )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                page.locator("#stop").click()
                browser.close()
        finally:
            queue.close()
            demo.close()
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
