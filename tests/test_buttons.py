"""Every button of the console, clicked in a real browser on a fresh workspace that holds a job
in each status (queued, running, paused, completed, failed, cancelled): no click answers with an
internal error, in the page, in a toast, or as a traceback in the console's log."""

import json
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO
from harness import (
    BROWSER_REQUIRED,
    CHROMIUM,
    browser_page,
    console_client,
    start_console,
    stop_console,
    wait_until,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_browser import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM) and not BROWSER_REQUIRED,
                                 reason="Debian's chromium is not installed (make test installs "
                                        "it)")]

TOASTS = '[data-testid="toast-body"]'
# A Markdown's own text, without the progress tracker Gradio draws over it while it waits.
PROSE = '[data-testid="markdown"]'
# The job view's buttons in the order they are pressed: what leaves the job as it is first, then
# what moves it, and Delete last.
JOB_BUTTONS = ("share", "set-priority", "download_logs", "download_model", "export_model",
               "export_gguf", "pause", "resume", "cancel", "delete")
SLOW_S = 180  # an export or a generation starts a process and loads the model: on a busy CPU


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    folder = tmp_path_factory.mktemp("buttons")
    process, url = start_console(folder / "workspace")
    try:
        yield url, Path(process.log_path), folder
    finally:
        stop_console(process)


def status_of(client, job_id: str) -> str:
    return client.predict(job_id, api_name="/get_job")["status"]


@pytest.fixture(scope="module")
def jobs(console) -> dict[str, str]:
    """One job in each status, made cheaply: two-step runs, a model folder whose weights are
    missing (found out by the trainer), one long run that holds the CPU, and jobs queued
    behind it that are cancelled or paused before they start."""
    url, _, folder = console
    client = console_client(url)
    broken = folder / "model-without-weights"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))

    def submit(name: str, **config) -> str:
        return client.predict({"name": f"sweep {name}", **config}, api_name="/submit_job")["job_id"]

    made = {"completed": submit("completed", max_steps=2, save_steps=1),
            "failed": submit("failed", max_steps=2, model=str(broken))}
    for status in ("completed", "failed"):
        wait_until(lambda status=status: status_of(client, made[status]) == status, 180,
                   f"the {status} job to end {status}")
    # Held stopped while the others are swept (see `held`): its timeout must outlast that.
    made["running"] = submit("running", max_steps=100000, save_steps=5, timeout_minutes=60)
    wait_until(lambda: status_of(client, made["running"]) == "running", 120,
               "the long job to start")
    made.update(queued=submit("queued", max_steps=2), cancelled=submit("cancelled", max_steps=2),
                paused=submit("paused", max_steps=2))
    client.predict(made["cancelled"], api_name="/cancel_job")
    client.predict(made["paused"], api_name="/pause_job")
    assert {status: status_of(client, job_id) for status, job_id in made.items()} == \
        {status: status for status in made}
    return made


def trainer_group(job_id: str) -> int:
    """The process group of the job's trainer (each trainer leads its own; its command names the
    job's folder)."""
    def find() -> int | None:
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(job_id in part for part in process.info["cmdline"] or []) and \
                        os.getpgid(process.pid) == process.pid:
                    return process.pid
            except (psutil.NoSuchProcess, ProcessLookupError):
                continue
        return None
    return wait_until(find, 60, f"the trainer of job {job_id}")


@pytest.fixture
def held(jobs):
    """The running job's trainer, stopped (SIGSTOP) until the sweep reaches it: it would
    otherwise hold a core for the whole sweep, which the tests beside this one need. Call it to
    let the trainer go on."""
    group = trainer_group(jobs["running"])
    os.killpg(group, signal.SIGSTOP)

    def go_on() -> None:
        try:
            os.killpg(group, signal.SIGCONT)
        except ProcessLookupError:
            pass
    yield go_on
    go_on()


@pytest.fixture(scope="module")
def page(console):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing and browser tests are required here (CI or make test)")
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(console[0]) as page:
        yield page


class Sweep:
    """Clicks and what each click showed: an internal error anywhere is a finding."""

    def __init__(self, page):
        self.page = page
        self.findings: list[str] = []
        self.clicked: list[str] = []

    def toasts(self) -> list[str]:
        return [toast.inner_text() for toast in self.page.locator(TOASTS).all()]

    def close_toasts(self) -> None:
        for close in self.page.locator(f"{TOASTS} .toast-close").all():
            try:
                close.click(timeout=2000)
            except Exception:  # it closed on its own meanwhile
                pass
        wait_until(lambda: not self.page.locator(TOASTS).count(), 10, "the toasts to close")

    def click(self, what: str, button, answered, timeout: float = 60) -> None:
        """Click, wait until `answered()` or a toast shows, and note an internal error."""
        self.close_toasts()
        try:
            # The answer is awaited below; a navigation the click may schedule is not (waiting
            # for it timed out on a busy machine after the click was done).
            button.click(timeout=10000, no_wait_after=True)
        except PlaywrightTimeout:
            if button.is_disabled():  # the job moved on since the button was offered
                return
            raise
        self.clicked.append(what)
        started = time.time()
        deadline = started + timeout
        while not (answered() or self.page.locator(TOASTS).count()):
            if time.time() > deadline:
                self.findings.append(f"{what}: no answer within {timeout:g} s")
                return
            time.sleep(0.3)
        print(f"{what}: answered in {time.time() - started:.1f} s")  # pytest -s: the pace
        self.look(what)

    def look(self, what: str, *texts: str) -> None:
        shown = [self.page.locator("body").inner_text(), *self.toasts(), *texts]
        for text in shown:
            if "internal error" in text.lower() or "traceback" in text.lower():
                self.findings.append(f"{what}: {text.strip()[:500]}")
                return


def message_answered(page, before: str):
    message = page.locator(f"#job-message {PROSE}")

    def answered() -> bool:
        text = message.inner_text().strip()
        return text != before and not text.startswith("Preparing")
    return answered


def sweep_job_view(sweep: Sweep, name: str, job_id: str) -> None:
    page = sweep.page
    header = page.locator(f"#job-header {PROSE}")
    for _ in range(3):  # the table redraws every few seconds: a click may land as it does
        sweep.click(f"{name}: its row in the job table",
                    page.locator("#job-table [role=gridcell]", has_text=f"sweep {name}").first,
                    lambda: f"sweep {name}" in header.inner_text(), 20)
        if f"sweep {name}" in header.inner_text():
            sweep.findings = [f for f in sweep.findings if "its row" not in f]
            break
    wait_until(lambda: not page.locator(f"#job-message {PROSE}").inner_text().strip(), 15,
               "the previous job's message to go")
    for button in JOB_BUTTONS:
        locator = page.locator(f"#{button}-button")
        if locator.is_enabled():
            before = page.locator(f"#job-message {PROSE}").inner_text().strip()
            sweep.click(f"{name}: {button}", locator, message_answered(page, before), SLOW_S)
    tuned = page.locator("#try-tuned textarea")
    sweep.click(f"{name}: Try it", page.locator("#try_model-button"),
                lambda: tuned.input_value() not in ("", "generating…"), SLOW_S)
    sweep.look(f"{name}: Try it", tuned.input_value(),
               page.locator("#try-base textarea").input_value())


def sweep_new_job_form(sweep: Sweep, titles: list[str], sample: Path) -> None:
    page = sweep.page
    page.get_by_role("tab", name="New job").click()
    message = page.locator(f"#submit-message {PROSE}")
    templates = page.get_by_label("Template")
    for title in titles:  # each form's Check
        templates.click()
        page.get_by_role("option", name=title).click()
        wait_until(lambda: not message.inner_text().strip(), 15, f"{title}'s form to load")
        sweep.click(f"New job: {title}: Check and preview",
                    page.get_by_role("button", name="Check and preview"),
                    lambda: message.inner_text().strip() != "", SLOW_S)
    templates.click()  # the default template again: the sample uploaded below is a chat
    page.get_by_role("option", name=titles[0]).click()
    wait_until(lambda: not message.inner_text().strip(), 15, f"{titles[0]}'s form to load")
    page.locator("#field-max_steps input").fill("2")
    sweep.click("New job: Submit job", page.locator("#submit-job"),
                lambda: "Queued" in message.inner_text() or "Not" in message.inner_text())
    before = message.inner_text()
    page.locator("input[type=file]").first.set_input_files(str(sample))
    sweep.clicked.append("New job: upload a dataset")
    wait_until(lambda: message.inner_text() != before, 60, "the upload's answer")
    sweep.look("New job: upload a dataset")
    page.get_by_text("Sweep: several runs of this form").click()
    sweep.click("New job: Submit sweep", page.locator("#submit-sweep"),
                lambda: page.locator(f"#sweep-message {PROSE}").inner_text().strip() != "")


def sweep_sweeps_view(sweep: Sweep) -> None:
    page = sweep.page
    page.get_by_role("button", name=re.compile(r"^Sweeps")).click()  # the accordion
    summary = page.locator(f"#sweep-summary {PROSE}")
    for name, button in (("Refresh", "#refresh-sweep"), ("Cancel sweep", "#cancel-sweep")):
        sweep.click(f"Sweeps: {name} with no sweep chosen", page.locator(button),
                    lambda: summary.inner_text().strip() != "", 30)
    choices = page.locator("#sweep-choice input")
    choices.click()
    wait_until(lambda: page.get_by_role("option").count(), 30, "the sweep chooser's entries")
    page.get_by_role("option").first.click()
    wait_until(lambda: "sweep-" in summary.inner_text(), 30, "the chosen sweep's summary")
    sweep.click("Sweeps: Cancel sweep", page.locator("#cancel-sweep"),
                lambda: "Cancelled" in summary.inner_text(), 30)
    sweep.click("Sweeps: Refresh", page.locator("#refresh-sweep"),
                lambda: "Cancelled" not in summary.inner_text(), 30)


@pytest.mark.timeout(1500)  # some fifty clicks, exports and generations among them
def test_every_button_on_every_job_answers_without_an_internal_error(console, jobs, held, page):
    _, console_log, _ = console
    logged_before = console_log.stat().st_size
    sweep = Sweep(page)
    for tab in ("System", "Jobs", "New job"):
        sweep.click(f"tab {tab}", page.get_by_role("tab", name=tab),
                    lambda tab=tab: page.get_by_role("tab", name=tab, selected=True).count() > 0)
    sweep.look("System tab", page.locator(f"#system-summary {PROSE}").inner_text())
    # One template per form the console draws (its fields follow the method and the adapter);
    # every template's own check is tested through the API (test_check_submit.py).
    client = console_client(console[0])
    forms = {}
    for preset in client.predict(api_name="/list_presets"):
        values = client.predict(preset["name"], api_name="/get_preset")
        forms.setdefault((values["method"], values["adapter"]), preset["title"])
    titles = list(forms.values())
    assert len(titles) >= 4, forms  # sft and dpo; lora, qlora and a full fine-tune
    sweep_new_job_form(sweep, titles, REPO / "data" / "samples" / "chat.jsonl")

    page.get_by_role("tab", name="Jobs").click()
    page.get_by_text("Try it: the trained model").click()
    page.get_by_label("Prompt").fill("What is the capital of Peru?")
    for status in ("completed", "failed", "paused", "cancelled", "queued", "running"):
        if status == "running":
            held()  # its trainer trains again: Pause and Cancel must reach a live one
        sweep_job_view(sweep, status, jobs[status])
    sweep_sweeps_view(sweep)
    time.sleep(2)  # an answer that came after the wait for it is still looked at
    sweep.look("the page at the end")
    page.screenshot(path=str(ARTIFACTS / "button-sweep.png"), full_page=True)

    logged = console_log.read_bytes()[logged_before:].decode(errors="replace")
    if "Traceback" in logged:
        sweep.findings.append(f"console log: {logged[logged.index('Traceback'):][:2000]}")
    assert sweep.findings == [], "\n".join(sweep.findings)
    assert len(sweep.clicked) > 40, sweep.clicked  # the sweep reached the buttons it lists
