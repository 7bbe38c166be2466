"""A refused config carries the fields it is about, and the form outlines exactly those."""

import pytest

from engine.config import SCHEMA, ConfigError, JobConfig, check_combinations, validate_fields
from engine.machine import Machine
from engine.presets import PresetLibrary
from engine.resolve import resolve
from ui.new_job import FIELD_NAMES, bad_fields, field_marks


@pytest.mark.parametrize("values,fields,words", [
    ({"learning_rate": "fast"}, ("learning_rate",), "learning_rate must be a number, got 'fast'"),
    ({"packing": [1]}, ("packing",), "packing must be true or false"),
    ({"max_steps": True}, ("max_steps",), "max_steps must be a whole number, got True"),
    ({"eval_steps": "often"}, ("eval_steps",), 'eval_steps must be a whole number or "auto"'),
    ({"lora_r": 0}, ("lora_r",), "lora_r must be >= 1, got 0"),
    ({"learning_rate": 2}, ("learning_rate",), "learning_rate must be <= 1, got 2"),
    ({"dataloader_num_workers": 65}, ("dataloader_num_workers",),
     "dataloader_num_workers must be <= 64, got 65"),
    ({"name": "x" * 201}, ("name",), "name must be at most 200 characters, got 201"),
    ({"name": "two\nlines"}, ("name",), "name must be one line of text"),
    ({"adapter": "prefix"}, ("adapter",), "adapter must be one of lora, qlora, full; got 'prefix'"),
    ({"lerning_rate": 1e-4}, ("lerning_rate",),
     "unknown field 'lerning_rate' (did you mean learning_rate?)"),
], ids=["type", "choice-type", "flag-as-number", "auto-type", "minimum", "maximum",
        "auto-maximum", "length", "one-line", "choice", "unknown"])
def test_each_kind_of_field_error_carries_its_field(values, fields, words):
    with pytest.raises(ConfigError) as err:
        validate_fields(values)
    assert err.value.fields == fields
    assert err.value.problems == [next(p for p in err.value.problems if words in p)]
    assert "Input should" not in str(err.value)  # plain words, not pydantic's


def test_several_problems_each_carry_their_field():
    with pytest.raises(ConfigError) as err:
        validate_fields({"learning_rate": 0, "lora_r": "many", "bogus": 1})
    assert set(err.value.fields) == {"learning_rate", "lora_r", "bogus"}
    assert len(err.value.problems) == 3


@pytest.mark.parametrize("values,fields", [
    ({"method": "dpo", "dataset_format": "messages"}, {"dataset_format", "method"}),
    ({"eval_split": 0.1, "eval_dataset": "held.jsonl"}, {"eval_split", "eval_dataset"}),
    ({"early_stopping_patience": 3}, {"early_stopping_patience"}),
    ({"report_to": "tensorboard,none"}, {"report_to"}),
    ({"notify_url": "ftp://host"}, {"notify_url"}),
])
def test_a_rule_between_fields_carries_the_fields_it_relates(values, fields):
    with pytest.raises(ConfigError) as err:
        check_combinations(JobConfig(**values))
    assert set(err.value.fields) == fields


@pytest.fixture(scope="module")
def presets():
    return PresetLibrary()


def test_refusals_found_while_resolving_carry_their_field(presets):
    for values, field in [({"model": "./no/such/folder"}, "model"),
                          ({"dataset": "missing.jsonl"}, "dataset"),
                          ({"precision": "fp16"}, "precision"),
                          ({"eval_split": 85}, "eval_split")]:
        with pytest.raises(ConfigError) as err:
            resolve(values, presets, Machine(cpu_count=2))
        assert err.value.fields == (field,), values


def test_the_form_marks_the_fields_a_real_refusal_carries():
    with pytest.raises(ConfigError) as err:
        validate_fields({"learning_rate": -1, "lerning_rate": 1, "preset": "x" * 101})
    # learning_rate is on the form; the misspelt key and the template (no field widget) are not.
    assert bad_fields(err.value) == {"learning_rate"}
    marks = dict(zip(FIELD_NAMES, field_marks(bad_fields(err.value)), strict=True))
    assert [n for n, update in marks.items() if update["elem_classes"]] == ["learning_rate"]


def test_a_stored_config_reads_back_as_it_was_written():
    """A config a job ran with loads as it is, even a value outside today's bounds (written
    under older ones); it is not checked again."""
    stored = {**JobConfig(lora_r=8).to_dict(), "lora_r": 4096, "retired_field": 1}
    config = JobConfig.from_dict(stored)
    assert config.lora_r == 4096 and config.to_dict().keys() == SCHEMA.keys()
    assert config.replace(lora_r=8) == JobConfig(lora_r=8)
    with pytest.raises(TypeError):
        config.replace(lora_rank=8)
