"""The config schema, presets and submit-time resolution (no training here)."""

from pathlib import Path

import pytest
import yaml

from engine.config import FORMATS, SCHEMA, ConfigError, JobConfig, default_config, validate_fields
from engine.data import split_rows
from engine.machine import GPU, Machine, auto_num_workers
from engine.memory import HEADROOM, model_shape, training_bytes
from engine.methods import METHODS, makes_reward_model
from engine.presets import PRESETS_DIR, PresetLibrary, load_preset
from engine.resolve import resolve
from engine.sources import TINY_MODEL, sample_dataset
from engine.trainer.fallback import smaller

CPU = Machine(cpu_count=2)
GPU_BOX = Machine(cpu_count=32, gpus=(GPU(0, "A100", 81920, (8, 0)), GPU(1, "A100", 81920, (8, 0))))
OLD_GPU_BOX = Machine(cpu_count=8, gpus=(GPU(0, "T4", 15360, (7, 5)),))


@pytest.fixture(scope="module")
def presets():
    return PresetLibrary()


def test_every_field_has_help_and_a_group():
    for name, f in SCHEMA.items():
        assert f.help.strip(), name
        assert f.group in {"job", "data", "adapter", "training", "performance",
                                       "evaluation", "checkpoints"}, name


def test_the_eleven_presets_load_and_resolve_offline(presets):
    assert len(presets.names()) == 11
    assert presets.default_name == "basic-fine-tune"
    for name in presets.names():
        resolution = resolve({"preset": name}, presets, CPU)
        config = resolution.config
        assert config.model == str(TINY_MODEL)
        assert Path(config.dataset).exists()
        assert config.dataset_format in ("messages", "instruction", "prompt_completion", "text",
                                         "preference", "unpaired_preference")
        assert resolution.dataset.rows > 50
    dpo = resolve({"preset": "dpo-preference"}, presets, CPU).config
    assert dpo.method == "dpo" and dpo.dataset == str(sample_dataset("preference"))
    kto = resolve({"preset": "kto-feedback"}, presets, CPU).config
    assert kto.dataset == str(sample_dataset("unpaired_preference"))
    assert kto.padding_free is False and not kto.applies("padding_free")  # KTO's TRL has none
    reward = resolve({"preset": "reward-model"}, presets, CPU).config
    assert reward.method == "reward" and reward.dataset == str(sample_dataset("preference"))


def test_presets_list_only_what_differs_and_explain_it():
    defaults = default_config()
    for path in PRESETS_DIR.glob("*.yaml"):
        text = path.read_text()
        assert text.lstrip().startswith("#"), f"{path.name} starts without a comment"
        assert "Suggested model" in text, path.name
        preset = load_preset(path)
        for key, value in preset.overrides.items():
            if key not in ("method", "adapter"):  # a preset always says what it is
                assert value != defaults[key], f"{path.name} repeats the default {key}: {value}"


def test_auto_settings_follow_the_machine(presets):
    cpu = resolve({}, presets, CPU)
    assert cpu.config.dataloader_num_workers == 0
    assert cpu.config.dataloader_prefetch_factor is None
    assert cpu.config.precision == "fp32" and cpu.config.optim == "adamw_torch_fused"
    assert cpu.resolved["dataloader_num_workers"] == 0  # recorded as chosen automatically
    gpu = resolve({}, presets, GPU_BOX)
    assert gpu.config.dataloader_num_workers == auto_num_workers(GPU_BOX) == 8
    assert gpu.config.dataloader_prefetch_factor == 2
    assert gpu.config.precision == "bf16" and gpu.config.optim == "adamw_torch_fused"
    assert resolve({}, presets, OLD_GPU_BOX).config.precision == "fp16"
    fixed = resolve({"dataloader_num_workers": 3, "dataloader_prefetch_factor": 4},
                               presets, GPU_BOX)
    assert fixed.config.dataloader_num_workers == 3
    assert "dataloader_num_workers" not in fixed.resolved


@pytest.mark.parametrize("overrides,message", [
    ({"learning_rate": 0}, "learning_rate must be > 0, got 0"),
    ({"learning_rate": -1e-4}, "learning_rate must be > 0"),
    ({"learning_rate": "fast"}, "learning_rate must be a number, got 'fast'"),
    ({"lerning_rate": 1e-4}, "unknown field 'lerning_rate' (did you mean learning_rate?)"),
    ({"adapter": "prefix"}, "adapter must be one of lora, qlora, full; got 'prefix'"),
    ({"method": "ppo"}, "method must be one of sft, dpo, kto, reward; got 'ppo'"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1, got 0"),
    ({"per_device_train_batch_size": 2.5}, "per_device_train_batch_size must be a whole number"),
    ({"packing": "maybe"}, "packing must be true or false"),
    ({"max_steps": 0}, "max_steps must be -1"),
    ({"method": "dpo", "packing": True}, "packing applies to SFT only"),
    ({"preset": "kto-feedback", "per_device_train_batch_size": 1},
     "kto needs per_device_train_batch_size 2 or more"),
    ({"dataloader_num_workers": "many"}, 'dataloader_num_workers must be a whole number or "auto"'),
    ({"dataloader_num_workers": 0, "dataloader_prefetch_factor": 2},
     "needs dataloader_num_workers > 0"),
    ({"precision": "fp16"}, "precision fp16 needs a CUDA GPU"),
    ({"preset": "nope"}, "preset 'nope' does not exist; choose one of: basic-fine-tune"),
    ({"model": "./no/such/folder"}, "model ./no/such/folder: no such folder"),
    ({"dataset": "missing.jsonl"}, "dataset missing.jsonl: no such file"),
    ({"method": "dpo", "dataset_format": "messages"},
     "dataset_format messages does not suit method dpo"),
    ({"eval_split": 0.1, "eval_dataset": "held.jsonl"}, "eval_split and eval_dataset: choose one"),
    ({"early_stopping_patience": 3}, "early_stopping_patience needs an evaluation"),
    ({"eval_split": 0.1, "eval_steps": 30, "save_steps": 100},
     "save_steps (100) must be a multiple of eval_steps (30)"),
    ({"eval_split": 2.5}, "eval_split must be a fraction below 1 or a whole row count"),
    ({"eval_split": 85}, "eval_split 85 holds out 85 of the dataset's 85 rows"),
    ({"eval_dataset": "missing.jsonl"}, "eval_dataset missing.jsonl: no such file"),
    ({"eval_dataset": "/etc/passwd"}, "eval_dataset: "),
])
def test_bad_values_are_refused_with_the_field_named(presets, overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve(overrides, presets, CPU)
    assert message in str(err.value)


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as err:
        validate_fields({"learning_rate": 0, "lora_r": 0, "bogus": 1})
    assert len(err.value.problems) == 3


def test_values_are_coerced_from_text():
    clean = validate_fields({"learning_rate": "2e-4", "max_steps": "10", "packing": "true",
                             "dataloader_num_workers": "AUTO", "num_train_epochs": 2})
    assert clean == {"learning_rate": 2e-4, "max_steps": 10, "packing": True,
                     "dataloader_num_workers": "auto", "num_train_epochs": 2.0}


def test_a_config_that_is_not_a_mapping_is_refused(presets):
    with pytest.raises(ConfigError, match="config must be an object"):
        resolve(["learning_rate", 1], presets, CPU)


def test_hub_ids_fail_at_submit_when_offline(presets, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        resolve({"model": "Qwen/Qwen2.5-0.5B-Instruct"}, presets, CPU)
    assert "model Qwen/Qwen2.5-0.5B-Instruct: not in the local Hugging Face cache" in str(err.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ConfigError) as err:  # no network on this machine: refused at once
        resolve({"dataset": "someone/some-dataset"}, presets, CPU)
    assert "dataset someone/some-dataset" in str(err.value)


def test_broken_preset_file_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"title": "x", "sample": "messages",
                                                       "learning_rate": -1}))
    with pytest.raises(ConfigError, match="preset bad.yaml: learning_rate must be > 0"):
        PresetLibrary(tmp_path)


def test_evaluation_resolves_to_checkpoint_steps_and_counts_what_it_holds_out(presets):
    held = resolve({"eval_split": 0.1, "save_steps": 20}, presets, CPU)
    assert held.config.eval_steps == 20 and held.resolved["eval_steps"] == 20
    assert held.resolved["eval_rows"] == 8 and held.resolved["dataset_rows"] == 85
    assert resolve({"eval_split": 5}, presets, CPU).resolved["eval_rows"] == 5
    plain = resolve({}, presets, CPU)
    assert not plain.config.evaluates and "eval_steps" not in plain.resolved


def test_a_held_out_split_is_the_same_for_the_same_seed_and_never_overlaps():
    rows = [{"n": i} for i in range(100)]
    train, held = split_rows(rows, 0.1, seed=42)
    assert len(held) == 10 and len(train) == 90
    assert {r["n"] for r in train}.isdisjoint(r["n"] for r in held)
    assert [r["n"] for r in train] == sorted(r["n"] for r in train)  # file order kept
    assert split_rows(rows, 0.1, seed=42) == (train, held)
    assert split_rows(rows, 0.1, seed=7)[1] != held
    assert len(split_rows(rows, 3, seed=1)[1]) == 3


def test_each_method_names_its_trainer_formats_and_model_kind():
    for name, method in METHODS.items():
        assert method.formats and set(method.formats) <= set(FORMATS), name
        assert method.config_class == method.trainer.removesuffix("Trainer") + "Config"
    assert [m for m in METHODS if makes_reward_model(m)] == ["reward"]
    assert not makes_reward_model("grpo")  # a record from a newer version: no error


def test_the_memory_estimate_counts_each_methods_sequences_reference_and_head(presets):
    shape = model_shape(str(TINY_MODEL))

    def need(**values) -> float:
        return training_bytes(JobConfig(max_length=1024, **values), shape, checkpointing=False)
    sft, dpo, reward = need(method="sft"), need(method="dpo"), need(method="reward")
    assert dpo > 1.9 * sft  # chosen and rejected: twice the activations and logits
    assert reward < dpo  # the same pairs, but one score per token, not the vocabulary
    reference = need(method="dpo", adapter="full") - need(method="sft", adapter="full")
    assert reference > dpo - sft  # a full fine-tune's frozen reference copy on top
    # A GPU the SFT job fits without checkpointing, and the DPO job of the same size does not.
    gpu = Machine(cpu_count=8, gpus=(GPU(0, "small", sft / HEADROOM / 2**20 * 1.5, (8, 0)),))
    same = {"max_length": 1024, "precision": "fp32"}  # as estimated above
    assert resolve(same, presets, gpu).resolved["gradient_checkpointing"] is False
    assert resolve({**same, "preset": "dpo-preference", "per_device_train_batch_size": 8},
                   presets, gpu).resolved["gradient_checkpointing"] is True


def test_the_micro_batch_steps_down_no_lower_than_the_method_allows():
    sft = JobConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert [smaller(sft).per_device_train_batch_size, smaller(sft).gradient_accumulation_steps] \
        == [2, 4]
    assert smaller(JobConfig(per_device_train_batch_size=1)) is None
    kto = JobConfig(method="kto", per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert smaller(kto).per_device_train_batch_size == 2
    assert smaller(smaller(kto)) is None  # KTO's KL term needs two answers in a batch
    assert smaller(JobConfig(method="kto", per_device_train_batch_size=3)) is None
