"""Training speed levers: padding-free batches keep every example to itself, `auto` takes each
lever only where it is provably correct, a job with every lever off trains bitwise like a plain
TRL script, and running out of GPU memory steps the micro-batch down instead of failing."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, losses, wait_for_status
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from engine import capabilities
from engine.config import ConfigError
from engine.console.people.users import LOCAL_USER
from engine.machine import GPU, Machine
from engine.presets import PresetLibrary
from engine.resolve import resolve
from engine.sources import TINY_MODEL, sample_dataset

pytestmark = pytest.mark.slow
CPU = Machine(cpu_count=2)
LEVERS_OFF = {"padding_free": False, "attn_implementation": "sdpa", "use_liger_kernel": False,
              "gradient_checkpointing": False}


def test_a_padding_free_batch_keeps_each_example_to_itself():
    """TRL's padding-free collator flattens a batch into one row with restarting position_ids;
    the installed transformers masks SDPA attention block-diagonally from them, so each
    example's logits and loss equal those of the example alone (fp32, CPU)."""
    assert capabilities.packed_sequences_isolated()  # read from the installed code...
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    texts = ["a short one", "a much longer example with many more tokens than the others in it",
             "middling length example here"]
    examples = [{"input_ids": tokenizer(t)["input_ids"]} for t in texts]
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                            padding_free=True)(examples)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    with torch.no_grad():
        # As TRL's trainer calls the model in training: no key/value cache (with one, the packed
        # sequences would not be detected).
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                         use_cache=False).logits[0]
        offset = 0
        for example in examples:
            ids = torch.tensor([example["input_ids"]])
            alone = model(input_ids=ids, use_cache=False).logits[0]
            part = together[offset:offset + ids.shape[1]]
            assert torch.allclose(part, alone, atol=1e-5, rtol=0), (part - alone).abs().max()
            loss_alone = torch.nn.functional.cross_entropy(alone[:-1], ids[0, 1:])
            loss_part = torch.nn.functional.cross_entropy(part[:-1], ids[0, 1:])
            assert abs(loss_alone.item() - loss_part.item()) < 1e-5
            offset += ids.shape[1]
        # ...and the check is not vacuous: without the position_ids they do see each other.
        mixed = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
        assert not torch.allclose(mixed[len(examples[0]["input_ids"]):], together[
            len(examples[0]["input_ids"]):], atol=1e-3)


def test_auto_takes_each_lever_only_where_it_is_correct():
    presets = PresetLibrary()
    sft = resolve({}, presets, CPU)
    assert sft.resolved["padding_free"] is True and sft.resolved["attn_implementation"] == "sdpa"
    assert sft.resolved["use_liger_kernel"] is False
    assert sft.resolved["gradient_checkpointing"] is False  # no GPU to run out of
    dpo = resolve({"preset": "dpo-preference"}, presets, CPU)
    assert dpo.resolved["padding_free"] is False  # TRL 1.16's DPO falls back to padding
    with pytest.raises(ConfigError, match="does not support it for dpo"):
        resolve({"preset": "dpo-preference", "padding_free": True}, presets, CPU)
    with pytest.raises(ConfigError, match="flash_attention_2 needs a CUDA GPU"):
        resolve({"attn_implementation": "flash_attention_2"}, presets, CPU)
    small_gpu = Machine(cpu_count=8, gpus=(GPU(0, "T4", 1024, (7, 5)),))
    assert resolve({"max_length": 8192, "per_device_train_batch_size": 64}, presets,
                   small_gpu).resolved["gradient_checkpointing"] is True
    assert resolve({}, presets, small_gpu).resolved["gradient_checkpointing"] is False


PLAIN_TRL = """
import json, sys
from datasets import load_dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer
trainer = SFTTrainer(
    model=sys.argv[1], train_dataset=load_dataset("json", data_files=sys.argv[2], split="train"),
    args=SFTConfig(output_dir=sys.argv[3], max_steps=6, seed=42, per_device_train_batch_size=8,
                   learning_rate=5e-3, max_length=512, lr_scheduler_type="cosine",
                   warmup_steps=0, bf16=False, activation_checkpointing=False,
                   save_strategy="no", report_to="none", dataloader_num_workers=0,
                   disable_tqdm=True, use_cpu=True, logging_steps=1),
    peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                           task_type="CAUSAL_LM"))
trainer.train()
print(json.dumps([e["loss"] for e in trainer.state.log_history if "loss" in e]))
"""


def test_with_every_lever_off_a_job_trains_bitwise_like_a_plain_trl_script(engine, tmp_path):
    job_id = engine.jobs.submit(LOCAL_USER, {**LEVERS_OFF, "max_steps": 6, "learning_rate": 5e-3,
                                             "warmup_steps": 0, "save_steps": 100})["job_id"]
    plain = subprocess.run([sys.executable, "-c", PLAIN_TRL, str(TINY_MODEL),
                            str(sample_dataset("messages")), str(tmp_path / "plain")], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert wait_for_status(engine, job_id)["status"] == "completed"
    assert losses(engine.views.get_metrics(LOCAL_USER, job_id, 0)) == \
        json.loads(plain.stdout.splitlines()[-1])


def test_out_of_memory_steps_the_micro_batch_down_and_training_goes_on(engine):
    engine.supervisor.extra_env = {"TRAINDECK_FAULTS": "oom-at-step:5"}
    job_id = engine.jobs.submit(LOCAL_USER, {"max_steps": 10, "save_steps": 4,
                                             "learning_rate": 5e-3, "warmup_steps": 0,
                                             "per_device_train_batch_size": 8})["job_id"]
    job = wait_for_status(engine, job_id)
    assert job["status"] == "completed", job["error"]
    [change] = job["microbatch_changes"]
    assert change["at_step"] == 5 and change["resumed_from"] == "checkpoint-4"
    assert change["from"] == {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}
    assert change["to"] == {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
    config = job["config"]  # a resume goes on with the smaller micro-batch, same effective batch
    assert (config["per_device_train_batch_size"], config["gradient_accumulation_steps"]) == (4, 2)
    records = engine.views.get_metrics(LOCAL_USER, job_id, 0)
    assert [r["step"] for r in records] == list(range(1, 11))  # each step once
    values = losses(records)
    assert all(v == v and abs(v) < 100 for v in values)  # finite
    assert sum(values[-3:]) / 3 < sum(values[:3]) / 3  # and still falling after the change
    log = engine.workspace.job_paths(job_id).log.read_text()
    assert "micro-batch 8 -> 4, gradient accumulation 1 -> 2 (same effective batch)" in log


def test_out_of_memory_at_a_micro_batch_of_one_fails_with_the_reason(engine):
    engine.supervisor.extra_env = {"TRAINDECK_FAULTS": "oom-always"}
    job_id = engine.jobs.submit(LOCAL_USER, {"max_steps": 4,
                                             "per_device_train_batch_size": 2})["job_id"]
    job = wait_for_status(engine, job_id)
    assert job["status"] == "failed"
    assert job["error"].startswith("out of GPU memory at step 1 even with a micro-batch of 1")
    assert [c["to"]["per_device_train_batch_size"] for c in job["microbatch_changes"]] == [1]
