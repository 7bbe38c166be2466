"""Take the README's screenshots (docs/*.png, 1440x900): the New job form, a running job and the
System tab, from a real console on a scratch workspace, in Debian's chromium.

    .venv/bin/python scripts/screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from gradio_client import Client  # noqa: E402
from harness import start_console, stop_console  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise SystemExit(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        process, url = start_console(Path(scratch) / "workspace")
        try:
            client = Client(url, verbose=False)
            job = start_demo_job(client)
            take_screenshots(url, job, out)
            client.predict(job, api_name="/cancel_job")
            # The trainer stops at its next step: its folder is written to until then.
            wait_for(lambda: client.predict(job, api_name="/get_job")["status"] == "cancelled",
                     60, "the screenshot job to be cancelled")
        finally:
            stop_console(process)
    print("wrote", ", ".join(str(out / n) for n in ("new-job.png", "running-job.png",
                                                    "system.png")))


def start_demo_job(client: Client) -> str:
    """A job that trains long enough to be seen running, once it has steps to chart."""
    job = client.predict({"preset": "qa-optimized", "max_steps": 100000,
                          "name": "support answers, LoRA r16"},
                         api_name="/submit_job")["job_id"]
    wait_for(lambda: client.predict(job, api_name="/get_job")["progress"]["step"] >= 150,
             180, "the demo job to train 150 steps")
    return job


def take_screenshots(url: str, job: str, out: Path) -> None:
    """The New job form checked, the running job's view, and the System tab."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.get_by_label("Template").click()
        page.get_by_role("option", name="QA optimized").click()
        # The template's values fill the form in one update with its description.
        page.locator("#preset-details").get_by_text("qa-optimized").wait_for()
        page.get_by_role("button", name="Check and preview").click()
        page.get_by_text("format instruction").wait_for()
        page.screenshot(path=str(out / "new-job.png"))
        page.get_by_role("tab", name="Jobs").click()
        page.locator("#selected-job textarea").fill(job)
        page.locator("#job-header").get_by_text("support answers").wait_for()
        time.sleep(3)  # a few refreshes: charts and analytics filled in
        page.evaluate("document.querySelector('#job-header').scrollIntoView()")
        page.screenshot(path=str(out / "running-job.png"))
        page.get_by_role("tab", name="System").click()
        time.sleep(3)
        page.screenshot(path=str(out / "system.png"))
        browser.close()


if __name__ == "__main__":
    main()
