"""The New job form holds every preset's values as its widgets accept them (fast: no browser)."""

import pytest

from engine.presets import PresetLibrary
from ui.new_job import FIELD_NAMES, make_widget, shown_value

PRESETS = PresetLibrary()


@pytest.mark.parametrize("preset", [p["name"] for p in PRESETS.summaries()])
def test_every_preset_value_is_one_its_widget_accepts(preset):
    config = PRESETS.get(preset).config()
    for name in FIELD_NAMES:
        widget = make_widget(name, config[name])
        shown = shown_value(name, config[name])
        choices = [choice[1] for choice in getattr(widget, "choices", None) or []]
        if choices:  # what loading the preset sends must be a choice, or Gradio refuses the form
            assert shown in choices, (preset, name, shown, choices)
        widget.preprocess(shown)  # what the browser sends back is read without an error
