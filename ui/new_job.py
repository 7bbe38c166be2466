"""The New job tab: a template picker, model and dataset, hyperparameters generated from the
config schema (labels and help written once, in engine.config), a dataset preview, the exact
config and command that will run, and submit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import yaml

from engine.config import FORM_FIELDS, SCHEMA, ConfigError, field_applies, field_type
from engine.console.engine import Engine
from engine.console.records.job import IllegalTransition
from engine.sources import DATASET_SUFFIXES
from ui.api import user_of
from ui.safe_text import as_text

# The form's sections, from the schema: what to train on (text fields of the data group), the
# common settings (every other field not marked advanced), and the advanced ones by group.
SOURCE_FIELDS = [n for n in FORM_FIELDS if SCHEMA[n].group == "data"
                 and not SCHEMA[n].advanced and field_type(n) is str]
COMMON_FIELDS = [n for n in FORM_FIELDS if not SCHEMA[n].advanced
                 and n not in SOURCE_FIELDS]
ADVANCED_FIELDS = [n for n in FORM_FIELDS if SCHEMA[n].advanced]
FIELD_NAMES = SOURCE_FIELDS + COMMON_FIELDS + ADVANCED_FIELDS
PLACEHOLDERS = {"model": "empty: the embedded tiny model; or a folder, or a Hub id like "
                         "Qwen/Qwen2.5-0.5B-Instruct",
                "dataset": "empty: the preset's sample; or a .jsonl/.json/.csv/.parquet path, or "
                           "a Hub id",
                "name": "empty: the preset's name and the time"}


NO_PREVIEW = "Dataset preview appears here after a check."


AUTO_FLAG = ("auto", "true", "false")


def make_widget(name: str, value: Any, visible: bool = True) -> gr.components.Component:
    """The field's widget: its label from the schema, its name and help text below it."""
    field = SCHEMA[name]
    common = dict(label=field.label, info=f"{name} · {field.help}", visible=visible,
                  elem_id=f"field-{name}")
    if field.choices:
        return gr.Dropdown(list(field.choices), value=value, **common)
    kind = field_type(name)
    if kind is bool and field.auto:  # a flag that may also be left to TrainDeck
        return gr.Dropdown(list(AUTO_FLAG), value=shown_value(name, value), **common)
    if kind is bool:
        return gr.Checkbox(value=value, **common)
    if field.auto or kind is str:
        return gr.Textbox("" if value is None else str(value),
                          placeholder=PLACEHOLDERS.get(name, ""), **common)
    return gr.Number(value, precision=0 if kind is int else None, **common)


def widget_value(name: str, value: Any) -> Any:
    """A widget's value as the schema expects it (the schema coerces the rest)."""
    if isinstance(value, str) and SCHEMA[name].none and value.strip() in ("", "none", "null"):
        return None
    return value


def submission_from(preset: str, names: list[str], values: list[Any]) -> dict[str, Any]:
    return {"preset": preset, **{n: widget_value(n, v) for n, v in zip(names, values, strict=True)}}


def preset_details(engine: Engine, name: str) -> str:
    preset = engine.presets.get(name)
    lines = [f"**{preset.title}** · `{preset.name}` · method `{preset.method}`", "",
             preset.description, "", "Sets: " + ", ".join(
                 f"`{k}={v}`" for k, v in preset.overrides.items()) or "schema defaults"]
    return "\n".join(lines)


def preview_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as the trainer will see them, one column per field, long values shortened."""
    def show(value: Any) -> str:
        if isinstance(value, list):  # chat turns
            text = "\n".join(f"{t.get('role')}: {t.get('content')}" for t in value)
        else:
            text = str(value)
        return text if len(text) <= 300 else text[:297] + "..."

    return pd.DataFrame([{k: show(v) for k, v in row.items()} for row in rows])


def bad_fields(exc: Exception) -> set[str]:
    """The form fields a failed check is about, as the error carries them (ConfigError.fields);
    fields the form does not show, and errors about no field, mark nothing."""
    return set(getattr(exc, "fields", ())) & set(FIELD_NAMES)


def field_marks(bad: set[str]) -> list[Any]:
    """Updates that outline the bad fields in red and clear the outline of every other."""
    return [gr.update(elem_classes=["td-bad-field"] if name in bad else []) for name in FIELD_NAMES]


def visibility(method: str, adapter: str) -> dict[str, bool]:
    """Which fields the form shows for a method and adapter (beta only for DPO, LoRA settings
    only with an adapter, ...): the schema's `methods` and `adapters` say."""
    return {name: field_applies(name, method, adapter) for name in FIELD_NAMES}


def create_new_job_tab(engine: Engine) -> tuple[gr.Dropdown, dict[str, gr.components.Component]]:
    """The form; returns the template chooser and the field widgets (the sweep form uses them)."""
    default = engine.presets.default_name
    start = engine.get_preset(default)
    with gr.Row():
        with gr.Column(scale=2):
            preset = gr.Dropdown([(p["title"], p["name"]) for p in engine.list_presets()],
                                 value=default, label="Template",
                                 info="How to train; every value below can be changed.")
        with gr.Column(scale=3):
            details = gr.Markdown(preset_details(engine, default), elem_id="preset-details")
    widgets, upload = _build_fields(start)
    with gr.Row():
        check = gr.Button("Check and preview", variant="secondary")
        submit = gr.Button("Submit job", variant="primary", elem_id="submit-job")
    message = gr.Markdown(elem_id="submit-message")
    with gr.Row():
        with gr.Column():
            summary = gr.Markdown(NO_PREVIEW)
            preview = gr.Dataframe(None, headers=["(check to preview)"], wrap=True,
                                   label="First rows, as the trainer sees them",
                                   max_height=300, interactive=False)
        with gr.Column():
            resolved = gr.Code(label="Resolved config (job.yaml) and command", language="yaml",
                               lines=18, max_lines=30)
    _bind_form(engine, preset, details, widgets, upload, check, submit, message,
               [summary, preview, resolved])
    return preset, widgets


def _build_fields(start: dict[str, Any]) -> tuple[dict[str, gr.components.Component], gr.File]:
    widgets: dict[str, gr.components.Component] = {}
    shown = visibility(start["method"], start["adapter"])

    def add(name: str) -> None:
        widgets[name] = make_widget(name, start[name], shown[name])

    with gr.Group():
        with gr.Row():
            for name in ("model", "dataset"):
                add(name)
        with gr.Row():
            upload = gr.File(label="…or upload a dataset file", file_types=list(DATASET_SUFFIXES),
                             height=120)
            for name in SOURCE_FIELDS:
                if name not in widgets:
                    add(name)
    half = (len(COMMON_FIELDS) + 1) // 2
    for names in (COMMON_FIELDS[:half], COMMON_FIELDS[half:]):
        with gr.Row(equal_height=True):
            for name in names:
                add(name)
    with gr.Accordion("Advanced", open=False):
        groups: dict[str, list[str]] = {}
        for name in ADVANCED_FIELDS:
            groups.setdefault(SCHEMA[name].group, []).append(name)
        for group, names in groups.items():
            gr.Markdown(f"**{group.capitalize()}**")
            for offset in range(0, len(names), 4):
                with gr.Row(equal_height=True):
                    for name in names[offset:offset + 4]:
                        add(name)
    return widgets, upload


def _bind_form(engine: Engine, preset, details, widgets, upload, check, submit, message,
               results) -> None:
    inputs = [widgets[n] for n in FIELD_NAMES]
    _bind_template(engine, preset, details, widgets, message, results)
    _bind_upload(engine, upload, widgets["dataset"], message)
    _bind_check_and_submit(engine, preset, inputs, check, submit, message, results)


PRIVATE = dict(api_visibility="private")  # the form's events are not API endpoints


def _bind_template(engine: Engine, preset, details, widgets, message, results) -> None:
    """A template fills the form; the method and adapter decide which fields it shows."""
    inputs = [widgets[n] for n in FIELD_NAMES]

    def load_preset(name: str):
        config = engine.get_preset(name)
        shown = visibility(config["method"], config["adapter"])
        # What was said of the other template's form goes with it, marks of bad fields too.
        return [preset_details(engine, name), "", NO_PREVIEW, None, ""] + [
            gr.update(value=shown_value(n, config[n]), visible=shown[n], elem_classes=[])
            for n in FIELD_NAMES]

    def show_fields(method: str, adapter: str):
        shown = visibility(method, adapter)
        return [gr.update(visible=shown[n]) for n in FIELD_NAMES]

    preset.change(load_preset, preset, [details, message, *results] + inputs, **PRIVATE)
    gr.on([widgets["method"].change, widgets["adapter"].change], show_fields,
          [widgets["method"], widgets["adapter"]], inputs, **PRIVATE)


def _bind_upload(engine: Engine, upload, dataset, message) -> None:
    """An uploaded file moves into the user's uploads and its path fills the dataset field."""

    def save_upload(file: str | None, request: gr.Request = None):
        if not file:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            stored = engine.artifacts.upload_dataset(user_of(engine, request), file,
                                                     Path(file).name)
        except (ConfigError, ValueError) as exc:
            return gr.skip(), None, error_text(exc, "**Not uploaded.**")
        # The file now lives in the user's uploads: the upload box is cleared, the path filled in.
        return (stored["dataset"], None,
                f"**Uploaded** `{Path(stored['dataset']).name}` ({stored['bytes'] / 2**20:.1f} "
                f"MiB; your uploads hold {stored['stored_mb']} MiB).")

    upload.upload(save_upload, upload, [dataset, upload, message], **PRIVATE)


def _bind_check_and_submit(engine: Engine, preset, inputs, check, submit, message,
                           results) -> None:
    """Check and submit say what is wrong and outline the fields the error is about."""

    def check_config(preset_name: str, *values, request: gr.Request = None):
        try:
            user = user_of(engine, request)
            resolution = engine.jobs.check(user, submission_from(preset_name, FIELD_NAMES, values))
        except (ConfigError, ValueError) as exc:
            # The preview and config of an earlier check go: they are not what was checked now.
            return error_text(exc), NO_PREVIEW, None, "", *field_marks(bad_fields(exc))
        notes = "\n".join(f"- {note}" for note in engine.advice(user, resolution))
        return (f"**Valid.** Submit to queue it.\n{notes}", *check_results(resolution),
                *field_marks(set()))

    def submit_from_form(preset_name: str, *values, request: gr.Request = None):
        try:
            result = engine.jobs.submit(user_of(engine, request),
                                        submission_from(preset_name, FIELD_NAMES, values))
        except (ConfigError, IllegalTransition, ValueError) as exc:
            return error_text(exc), *field_marks(bad_fields(exc))
        where = ("first in the queue" if result["position"] == 1
                 else f"position {result['position']} in the queue")
        return (f"**Queued** job **{result['job_id']}** ({where}). Follow it in the **Jobs** "
                "tab.", *field_marks(set()))

    check.click(check_config, [preset] + inputs, [message, *results, *inputs], **PRIVATE)
    submit.click(submit_from_form, [preset] + inputs, [message, *inputs], concurrency_limit=None,
                 **PRIVATE)


def check_results(resolution) -> tuple[str, Any, str]:
    """The dataset line, its first rows and the job.yaml a check shows."""
    config, summary = resolution.config, resolution.dataset
    if summary:
        held = resolution.resolved.get("eval_rows")
        evaluation = (f" · **{held}** held out for evaluation" if held and config.eval_split
                      else f" · evaluates on **{held} rows** of `{config.eval_dataset}`" if held
                      else "")
        described = (f"**{summary.rows} rows**, format **{summary.format}**"
                     f"{' (detected)' if 'dataset_format' in resolution.resolved else ''}"
                     f" · `{summary.path}`{evaluation}")
        table = preview_table(summary.preview)
    else:
        described, table = f"Hub dataset `{config.dataset}`: checked by the trainer.", None
    auto = ", ".join(f"{k}={v}" for k, v in resolution.resolved.items()
                     if k not in ("dataset_rows", "eval_rows"))
    document = yaml.safe_dump({"config": config.to_dict()}, sort_keys=False)
    return (described, table, f"# python -m engine.train <workspace>/jobs/<job id>/job.yaml\n"
                              f"# chosen automatically: {auto or 'nothing'}\n{document}")


def shown_value(name: str, value: Any) -> Any:
    """A config value as its widget holds it: a flag that may be auto as one of its dropdown's
    words (a bare True is not among them, and Gradio refuses the whole form over it)."""
    if value is None:
        return ""
    if field_type(name) is bool and SCHEMA[name].auto:
        return str(value).lower()
    return value


def error_text(exc: Exception, title: str = "**Not submitted.**") -> str:
    lines = str(exc).splitlines() or [type(exc).__name__]
    return f"{title} Fix:\n" + "\n".join(f"- {as_text(line, 1000)}" for line in lines)
