"""The New job tab: a template picker, model and dataset, hyperparameters generated from the
config schema (labels and help written once, in engine.config), a dataset preview, the exact
config and command that will run, and submit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import yaml

from engine.api import Engine
from engine.config import SCHEMA, ConfigError, field_type
from engine.job import IllegalTransition
from ui.api import user_of
from ui.safe_text import as_text

DATA_FIELDS = ["model", "dataset", "dataset_format", "method"]
COMMON_FIELDS = ["adapter", "learning_rate", "num_train_epochs", "max_steps",
                 "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                 "lora_r", "lora_alpha", "name", "priority", "gpus"]
ADVANCED_FIELDS = [n for n in SCHEMA if n not in DATA_FIELDS + COMMON_FIELDS]
PLACEHOLDERS = {"model": "empty: the embedded tiny model; or a folder, or a Hub id like Qwen/Qwen2.5-0.5B-Instruct",
                "dataset": "empty: the preset's sample; or a .jsonl/.json/.csv/.parquet path, or a Hub id",
                "name": "empty: the preset's name and the time"}


def make_widget(name: str, value: Any) -> gr.components.Component:
    meta = SCHEMA[name].metadata
    label, info = name, meta["help"]
    if meta["choices"]:
        return gr.Dropdown(list(meta["choices"]), value=value, label=label, info=info)
    kind = field_type(name)
    if kind is bool:
        return gr.Checkbox(value=value, label=label, info=info)
    if meta["auto"] or kind is str:
        return gr.Textbox("" if value is None else str(value), label=label, info=info,
                          placeholder=PLACEHOLDERS.get(name, ""))
    return gr.Number(value, label=label, info=info, precision=0 if kind is int else None)


def widget_value(name: str, value: Any) -> Any:
    """A widget's value as the schema expects it (the schema coerces the rest)."""
    meta = SCHEMA[name].metadata
    if isinstance(value, str) and meta["none"] and value.strip() in ("", "none", "null"):
        return None
    return value


def submission_from(preset: str, names: list[str], values: list[Any]) -> dict[str, Any]:
    return {"preset": preset, **{n: widget_value(n, v) for n, v in zip(names, values)}}


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


def create_new_job_tab(engine: Engine) -> dict[str, gr.components.Component]:
    presets = engine.list_presets()
    default = engine.presets.default_name
    start = engine.get_preset(default)
    names = DATA_FIELDS + COMMON_FIELDS + ADVANCED_FIELDS
    widgets: dict[str, gr.components.Component] = {}

    with gr.Row():
        with gr.Column(scale=2):
            preset = gr.Dropdown([(p["title"], p["name"]) for p in presets], value=default,
                                 label="Template", info="How to train; every value below can be changed.")
        with gr.Column(scale=3):
            details = gr.Markdown(preset_details(engine, default), elem_id="preset-details")
    with gr.Group():
        with gr.Row():
            widgets["model"] = make_widget("model", start["model"])
            widgets["dataset"] = make_widget("dataset", start["dataset"])
        with gr.Row():
            upload = gr.File(label="…or upload a dataset file",
                             file_types=[".jsonl", ".json", ".csv", ".parquet"], height=120)
            widgets["dataset_format"] = make_widget("dataset_format", start["dataset_format"])
            widgets["method"] = make_widget("method", start["method"])
    with gr.Row(equal_height=True):
        for name in COMMON_FIELDS[:6]:
            widgets[name] = make_widget(name, start[name])
    with gr.Row(equal_height=True):
        for name in COMMON_FIELDS[6:]:
            widgets[name] = make_widget(name, start[name])
    with gr.Accordion("Advanced", open=False):
        groups: dict[str, list[str]] = {}
        for name in ADVANCED_FIELDS:
            groups.setdefault(SCHEMA[name].metadata["group"], []).append(name)
        for group, fields in groups.items():
            gr.Markdown(f"**{group.capitalize()}**")
            for offset in range(0, len(fields), 4):
                with gr.Row(equal_height=True):
                    for name in fields[offset:offset + 4]:
                        widgets[name] = make_widget(name, start[name])
    with gr.Row():
        check = gr.Button("Check and preview", variant="secondary")
        submit = gr.Button("Submit job", variant="primary", elem_id="submit-job")
    message = gr.Markdown(elem_id="submit-message")
    with gr.Row():
        with gr.Column():
            data_summary = gr.Markdown("Dataset preview appears here after a check.")
            data_preview = gr.Dataframe(None, headers=["(check to preview)"], wrap=True,
                                        label="First rows, as the trainer sees them",
                                        max_height=300, interactive=False)
        with gr.Column():
            config_preview = gr.Code(label="Resolved config (job.yaml) and command", language="yaml",
                                     lines=18, max_lines=30)

    inputs = [widgets[n] for n in names]

    # ---- handlers ---------------------------------------------------------------------------

    def load_preset(name: str):
        config = engine.get_preset(name)
        return [preset_details(engine, name)] + [gr.update(value=_shown(config[n])) for n in names]

    def save_upload(file: str | None, request: gr.Request = None):
        if not file:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            stored = engine.upload_dataset(file, Path(file).name, user_of(engine, request))
        except (ConfigError, ValueError) as exc:
            return gr.skip(), None, _error(exc, "**Not uploaded.**")
        # The file now lives in the user's uploads: the upload box is cleared, the path filled in.
        return (stored["dataset"], None,
                f"**Uploaded** `{Path(stored['dataset']).name}` ({stored['bytes'] / 2**20:.1f} MiB; "
                f"your uploads hold {stored['stored_mb']} MiB).")

    def check_config(preset_name: str, *values, request: gr.Request = None):
        submission = submission_from(preset_name, names, values)
        try:
            resolution = engine.check(submission, user_of(engine, request))
        except (ConfigError, ValueError) as exc:
            return _error(exc), gr.skip(), gr.skip(), gr.skip()
        config = resolution.config
        summary = resolution.dataset
        if summary:
            described = (f"**{summary.rows} rows**, format **{summary.format}**"
                         f"{' (detected)' if 'dataset_format' in resolution.resolved else ''}"
                         f" · `{summary.path}`")
            table = preview_table(summary.preview)
        else:
            described, table = f"Hub dataset `{config['dataset']}`: checked by the trainer.", None
        auto = ", ".join(f"{k}={v}" for k, v in resolution.resolved.items()
                         if k not in ("dataset_rows",))
        document = yaml.safe_dump({"config": config}, sort_keys=False)
        text = (f"# python -m engine.train <workspace>/jobs/<job id>/job.yaml\n"
                f"# chosen automatically: {auto or 'nothing'}\n{document}")
        return "**Valid.** Submit to queue it.", described, table, text

    def submit_from_form(preset_name: str, *values, request: gr.Request = None):
        submission = submission_from(preset_name, names, values)
        try:
            result = engine.submit(submission, user_of(engine, request))
        except (ConfigError, IllegalTransition, ValueError) as exc:
            return _error(exc)
        where = "starts now" if result["position"] == 1 else f"position {result['position']} in the queue"
        return (f"**Queued** job **{result['job_id']}** ({where}). "
                f"Follow it in the **Jobs** tab.")

    preset.change(load_preset, preset, [details] + inputs, api_visibility="private")
    upload.upload(save_upload, upload, [widgets["dataset"], upload, message],
                  api_visibility="private")
    check.click(check_config, [preset] + inputs,
                [message, data_summary, data_preview, config_preview], api_visibility="private")
    submit.click(submit_from_form, [preset] + inputs, message, api_visibility="private",
                 concurrency_limit=None)
    return widgets


def _shown(value: Any) -> Any:
    return "" if value is None else value


def _error(exc: Exception, title: str = "**Not submitted.**") -> str:
    lines = str(exc).splitlines() or [type(exc).__name__]
    return f"{title} Fix:\n" + "\n".join(f"- {as_text(line, 1000)}" for line in lines)
