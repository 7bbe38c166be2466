"""The console in a real browser: Playwright driving Debian's chromium."""

import os

import pytest
from conftest import REPO
from harness import (
    BROWSER_REQUIRED,
    CHROMIUM,
    browser_page,
    console_client,
    stop_console,
    wait_until,
)
from harness import start_console as launch_console

ARTIFACTS = REPO / "test-artifacts"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM) and not BROWSER_REQUIRED,
                                 reason="Debian's chromium is not installed "
                                        "(make test installs it)")]


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("browser") / "workspace"
    process, url = launch_console(workspace)
    yield url
    stop_console(process)


@pytest.fixture(scope="module")
def page(console):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing and browser tests are required here (CI or make test)")
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(console) as page:
        yield page


def field(page, name: str):
    """The New job form's input for a config field (its label is the schema's, its id the name)."""
    return page.locator(f"#field-{name} input, #field-{name} textarea").first


def loss_points(page) -> int:
    """Points plotly drew in the loss chart's first series (decoded from the packed arrays)."""
    return page.evaluate("""() => {
        const plot = document.querySelector('#loss-chart .js-plotly-plot');
        const drawn = plot && plot._fullData;
        return drawn && drawn.length && drawn[0].x ? drawn[0].x.length : 0;
    }""")


def last_charted_step(page) -> int:
    """The highest step plotly drew in the loss chart (charts sample long runs, so the count of
    points stops growing; the last step does not)."""
    return page.evaluate("""() => {
        const plot = document.querySelector('#loss-chart .js-plotly-plot');
        const drawn = plot && plot._fullData;
        if (!drawn || !drawn.length || !drawn[0].x || !drawn[0].x.length) return 0;
        return Math.max(...Array.from(drawn[0].x));
    }""")


def test_pick_a_template_submit_watch_it_train_pause_and_cancel(page):
    """A run far longer than the test (it can never finish before it is looked at): the chart
    gains steps while it trains, Pause stops it at a checkpoint, Cancel ends it."""
    page.get_by_label("Template").click()
    page.get_by_role("option", name="QA optimized").click()
    details = page.locator("#preset-details")
    details.get_by_text("qa-optimized").wait_for()
    field(page, "max_steps").fill("100000")
    field(page, "name").fill("browser job")
    page.get_by_role("button", name="Check and preview").click()
    page.get_by_text("format instruction").wait_for()  # the dataset preview came back

    page.get_by_role("button", name="Submit job").click()
    page.locator("#submit-message").get_by_text("Queued").wait_for()

    sent = []  # what the page asks the console, from the Jobs tab on
    page.on("request", lambda request: sent.append(
        request.url + " " + (request.post_data or "")) if "/gradio_api/" in request.url else None)
    page.get_by_role("tab", name="Jobs").click()
    row = page.locator("#job-table [role=gridcell]", has_text="browser job")
    row.wait_for(timeout=15000)  # the table refreshes on its own
    row.click()
    header = page.locator("#job-header")
    header.get_by_text("browser job").wait_for()

    wait_until(lambda: last_charted_step(page) > 0, 90, "the loss chart's first point")
    job_id = page.locator("#selected-job textarea, #selected-job input").first.input_value()
    # Selecting the row asked for the job's view once; from here on the view is one stream: the
    # chart must gain points while the page asks nothing more about this job (a timer-driven
    # view would ask every second).
    assert any(job_id in line for line in sent), "selecting the job never asked for its view"
    asked_before = len(sent)
    first = last_charted_step(page)
    assert page.locator("#pause-button").is_enabled()
    assert not page.locator("#resume-button").is_enabled()
    page.screenshot(path=str(ARTIFACTS / "running-job.png"), full_page=True)
    wait_until(lambda: last_charted_step(page) > first + 5, 60,
                  f"the loss chart to go past step {first + 5} while the job trains")
    asked = [line[:200] for line in sent[asked_before:] if job_id in line]
    assert asked == [], f"the job view asked the console for job {job_id} again: {asked}"

    page.locator("#pause-button").click()
    header.get_by_text("paused").wait_for(timeout=60000)
    wait_until(lambda: page.locator("#resume-button").is_enabled(), 15,
                  "Resume to be offered on the paused job")
    assert not page.locator("#pause-button").is_enabled()
    page.locator("#cancel-button").click()
    header.get_by_text("cancelled").wait_for(timeout=30000)
    wait_until(lambda: not page.locator("#cancel-button").is_enabled(), 15,
                  "Cancel to be withdrawn once the job is cancelled")
    assert page.locator("#resume-button").is_enabled()  # from its checkpoint, by design


def test_an_invalid_submission_shows_the_problem_inline(page):
    page.get_by_role("tab", name="New job").click()
    field(page, "learning_rate").fill("-1")
    page.get_by_role("button", name="Submit job").click()
    message = page.locator("#submit-message")
    message.get_by_text("learning_rate must be > 0").wait_for()
    assert "Not submitted" in message.inner_text()
    # The field named is outlined, and no other; a check after the fix takes the outline away.
    page.locator("#field-learning_rate.td-bad-field").wait_for()
    assert page.locator(".td-bad-field").count() == 1
    page.screenshot(path=str(ARTIFACTS / "invalid-submission.png"))
    field(page, "learning_rate").fill("0.0002")
    page.get_by_role("button", name="Check and preview").click()
    message.get_by_text("Valid.").wait_for()
    page.locator(".td-bad-field").wait_for(state="detached")


def test_user_text_is_shown_as_text_never_as_links_or_images(page, console):
    """A job name written as Markdown and HTML shows as those characters: no link, no image
    fetched from elsewhere, in the job header and in the Compare legend."""
    name = ("Bob's [click](http://evil.example/x) ![pixel](http://127.0.0.1:9/x.png) "
            '<a href="http://evil.example">link</a>')
    client = console_client(console)
    job_id = client.predict({"max_steps": 2, "name": name}, api_name="/submit_job")["job_id"]
    wait_until(lambda: client.predict(job_id, api_name="/get_job")["status"] == "completed", 120,
               "the job with the hostile name to complete")
    page.get_by_role("tab", name="Jobs").click()
    page.locator("#selected-job textarea").fill(job_id)
    header = page.locator("#job-header")
    header.get_by_text("[click](http://evil.example/x)").wait_for()
    assert header.locator("a").count() == 0 and header.locator("img").count() == 0
    assert '<a href="http://evil.example">link</a>' in header.inner_text()
    assert "Bob's [click]" in header.inner_text()  # an apostrophe is not an entity
    header.get_by_text("completed").wait_for()
    wait_until(lambda: loss_points(page) == 2, 30, "both steps of the completed job charted")
    assert not page.locator("#pause-button").is_enabled()  # not legal once completed
    assert not page.locator("#cancel-button").is_enabled()
    page.screenshot(path=str(ARTIFACTS / "completed-job.png"), full_page=True)

    page.get_by_text("Compare runs").click()
    page.get_by_label("Jobs to overlay (loss, smoothed)").click()
    page.get_by_role("option", name=job_id).click()
    legend = page.locator("#compare-chart .legend")
    legend.wait_for()
    assert legend.locator("a").count() == 0
    assert '<a href="http://evil.example">' in legend.text_content()
    page.screenshot(path=str(ARTIFACTS / "text-not-markup.png"), full_page=True)


def log_scrolled_to_end(page) -> bool:
    return page.evaluate("""() => {
        const box = document.querySelector('#log-tail textarea');
        return !!box && box.scrollHeight > box.clientHeight
            && box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    }""")


def test_switching_jobs_resets_the_job_view_and_downloads_follow_the_new_job(page, console):
    """What belongs to one job (its message, download, checkpoint choice, Try-it answers) is gone
    when another is selected, and a download then is the new job's. The log shows its last line."""
    client = console_client(console)
    with_checkpoints = client.predict(
        {"max_steps": 30, "save_steps": 10, "name": "has checkpoints"},
        api_name="/submit_job")["job_id"]
    final_only = client.predict({"max_steps": 2, "save_steps": 1000, "name": "final only"},
                                api_name="/submit_job")["job_id"]
    for job_id in (with_checkpoints, final_only):
        wait_until(lambda job_id=job_id: client.predict(job_id, api_name="/get_job")["status"]
                   == "completed",
                   120, f"job {job_id} to complete")

    page.get_by_role("tab", name="Jobs").click()
    page.locator("#selected-job textarea").fill(with_checkpoints)
    header = page.locator("#job-header")
    header.get_by_text("has checkpoints").wait_for()
    page.locator("#checkpoint-choice input").click()
    page.get_by_role("option", name="checkpoint-30").click()
    page.locator("#download_model-button").click()
    message = page.locator("#job-message")
    message.get_by_text(f"model_{with_checkpoints}_checkpoint-30.zip").wait_for(timeout=60000)
    page.get_by_text("Try it: the trained model").click()
    page.get_by_label("Prompt").fill("What is the capital of Peru?")
    page.get_by_role("button", name="Try it", exact=True).click()
    tuned = page.locator("#try-tuned textarea")
    # The slow action shows that it is working (generation imports its libraries: seconds).
    wait_until(lambda: tuned.input_value() == "generating…", 10, "Try it's busy state")
    wait_until(lambda: tuned.input_value() not in ("", "generating…"), 120,
                  "the trained model's answer")
    # A log longer than its box (a line a step) shows its newest line, the final "saved ...".
    wait_until(lambda: log_scrolled_to_end(page), 15, "the log box to show its newest line")
    assert "saved" in page.locator("#log-tail textarea").input_value().splitlines()[-1]
    page.screenshot(path=str(ARTIFACTS / "job-view-before-switch.png"), full_page=True)

    page.locator("#selected-job textarea").fill(final_only)
    header.get_by_text("final only").wait_for()
    wait_until(lambda: message.inner_text().strip() == "", 10,
                  "the other job's message to go")
    assert tuned.input_value() == "" and page.locator("#try-base textarea").input_value() == ""
    assert page.locator("#checkpoint-choice input").input_value() == "final model"
    assert page.locator("#job-download a").count() == 0  # the other job's file is gone
    page.locator("#download_model-button").click()
    message.get_by_text(f"model_{final_only}.zip").wait_for(timeout=60000)
    assert final_only in page.locator("#job-download").inner_text()
    page.screenshot(path=str(ARTIFACTS / "job-view-after-switch.png"), full_page=True)


def drawn(page, chart: str, what: str):
    """A property of every trace plotly drew in a chart (points, name or axis per trace)."""
    return page.evaluate("""([chart, what]) => {
        const plot = document.querySelector(`#${chart} .js-plotly-plot`);
        if (!plot || !plot._fullData) return [];
        return plot._fullData.map(t => what === 'points' ? (t.x ? t.x.length : 0)
                                       : what === 'names' ? t.name : t.yaxis);
    }""", [chart, what])


def test_kto_and_reward_templates_train_from_the_form_and_chart_their_own_metrics(page, console):
    """Each new method's template, picked and submitted in the browser, trains to completed; the
    job view draws what the method logs: KTO's rewards (no accuracy: it logs none), a reward
    model's scores and accuracy."""
    client = console_client(console)

    def jobs_by_name() -> dict[str, str]:
        return {job["name"]: job["job_id"] for job in client.predict(api_name="/list_jobs")}
    page.get_by_role("tab", name="New job").click()
    for title, preset, name in (("KTO from thumbs up/down", "kto-feedback", "kto run"),
                                ("Reward model", "reward-model", "reward run")):
        page.get_by_label("Template").click()
        page.get_by_role("option", name=title).click()
        page.locator("#preset-details").get_by_text(preset).wait_for()
        field(page, "max_steps").fill("4")
        field(page, "name").fill(name)
        page.get_by_role("button", name="Submit job").click()
        wait_until(lambda name=name: name in jobs_by_name(), 30, f"{name} to be queued")
    ids = jobs_by_name()
    for name in ("kto run", "reward run"):
        wait_until(lambda name=name: client.predict(ids[name], api_name="/get_job")["status"]
                   == "completed", 120, f"{name} to complete")
    page.get_by_role("tab", name="Jobs").click()
    page.locator("#selected-job textarea").fill(ids["kto run"])
    page.locator("#job-header").get_by_text("kto run").wait_for()
    wait_until(lambda: drawn(page, "rewards-chart", "points") == [4] * 6, 30,
               "KTO's rewards chart: chosen, rejected and margin (raw and smoothed)")
    assert not page.locator("#reward-accuracy-chart").is_visible()
    page.locator("#selected-job textarea").fill(ids["reward run"])
    page.locator("#job-header").get_by_text("reward run").wait_for()
    wait_until(lambda: drawn(page, "rewards-chart", "points") == [4] * 8, 30,
               "the reward model's scores chart: mean, lowest, highest and margin")
    assert "mean score" in drawn(page, "rewards-chart", "names")
    wait_until(lambda: drawn(page, "reward-accuracy-chart", "points") == [4, 4], 30,
               "the reward model's accuracy chart")
    page.screenshot(path=str(ARTIFACTS / "reward-model-job.png"), full_page=True)


def test_a_dpo_job_charts_its_rewards_and_compare_keeps_methods_apart(page, console):
    """The DPO job evaluates on held-out pairs at steps 2 and 4: its eval loss and eval reward
    accuracy are drawn beside the training curves, and the API reports them."""
    client = console_client(console)
    dpo = client.predict({"preset": "dpo-preference", "max_steps": 4, "name": "dpo run",
                          "eval_split": 0.2, "save_steps": 2}, api_name="/submit_job")["job_id"]
    sft = client.predict({"max_steps": 4, "name": "sft run"}, api_name="/submit_job")["job_id"]
    for job_id in (dpo, sft):
        wait_until(lambda job_id=job_id: client.predict(job_id, api_name="/get_job")["status"]
                   == "completed",
                   120, f"job {job_id} to complete")
    page.get_by_role("tab", name="Jobs").click()
    page.locator("#selected-job textarea").fill(dpo)
    page.locator("#job-header").get_by_text("dpo run").wait_for()
    wait_until(lambda: drawn(page, "rewards-chart", "points") == [4] * 6, 30,
                  "the rewards chart to draw chosen, rejected and margin (raw and smoothed)")
    assert drawn(page, "loss-chart", "names") == ["loss (raw)", "loss", "eval loss"]
    assert drawn(page, "loss-chart", "points") == [4, 4, 2]  # evaluated at steps 2 and 4
    assert drawn(page, "reward-accuracy-chart", "points") == [4, 4, 2]
    metrics = client.predict(dpo, 0, api_name="/get_metrics")
    assert [m["step"] for m in metrics if "eval_loss" in m] == [2, 4]
    analytics = client.predict(dpo, api_name="/job_analytics")
    assert analytics["evaluations"] == 2
    assert analytics["best_eval_loss"] == min(m["eval_loss"] for m in metrics if "eval_loss" in m)
    page.screenshot(path=str(ARTIFACTS / "dpo-job.png"), full_page=True)

    page.locator("#selected-job textarea").fill(sft)
    page.locator("#job-header").get_by_text("sft run").wait_for()
    wait_until(lambda: not page.locator("#rewards-chart").is_visible(), 15,
                  "the reward charts to hide for an SFT job")

    chooser = page.get_by_label("Jobs to overlay (loss, smoothed)")
    if not chooser.is_visible():  # the accordion may be open already
        page.get_by_text("Compare runs").click()
    for job_id in (dpo, sft):
        chooser.click()
        page.get_by_role("option", name=job_id).click()
    wait_until(lambda: set(drawn(page, "compare-chart", "axis")) == {"y", "y2"}, 30,
                  "an SFT and a DPO run on two loss axes")
    page.screenshot(path=str(ARTIFACTS / "compare-sft-dpo.png"), full_page=True)
