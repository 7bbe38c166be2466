"""What only a GPU can show: `auto` picks the GPU levers and trains with them, a padding-free
batch stays isolated under the GPU's attention kernel, the spare trainer leaves CUDA alone until
its job has devices, and a real out-of-memory error steps the micro-batch down. Skipped on a
machine without CUDA (bench/gpu_check.sh --self-check covers the benchmark there)."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, wait_for_status
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from engine import capabilities
from engine.console.people.users import LOCAL_USER
from engine.machine import auto_attention, detect
from engine.presets import PresetLibrary
from engine.resolve import resolve
from engine.sources import TINY_MODEL

pytestmark = [pytest.mark.slow, pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_auto_takes_the_gpu_levers_that_are_installed_and_supported():
    resolved = resolve({}, PresetLibrary(), detect()).resolved
    assert resolved["precision"] in ("bf16", "fp16")
    flash = detect().gpus[0].compute_capability >= (8, 0) and capabilities.installed("flash_attn")
    assert resolved["attn_implementation"] == ("flash_attention_2" if flash else "sdpa")
    assert resolved["use_liger_kernel"] is capabilities.installed("liger_kernel")
    assert resolved["padding_free"] is True


def test_a_padding_free_batch_keeps_each_example_to_itself_on_the_gpu():
    attention = auto_attention(detect())
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.bfloat16,
                                                 attn_implementation=attention).cuda().eval()
    texts = ["a short one", "a much longer example with many more tokens than the others in it",
             "middling length example here"]
    examples = [{"input_ids": tokenizer(t)["input_ids"]} for t in texts]
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                            padding_free=True)(examples)
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"].cuda(),
                         position_ids=batch["position_ids"].cuda(), use_cache=False).logits[0]
        offset = 0
        for example in examples:
            ids = torch.tensor([example["input_ids"]]).cuda()
            alone = model(input_ids=ids, use_cache=False).logits[0]
            part = together[offset:offset + ids.shape[1]]
            # bf16 kernels differ in summation order between the two shapes: loose but far
            # below what attending to another example changes.
            assert torch.allclose(part.float(), alone.float(), atol=5e-2, rtol=0)
            offset += ids.shape[1]


def test_the_spare_trainer_leaves_cuda_alone_and_the_job_sees_its_device(engine):
    spare = subprocess.run([sys.executable, "-c", (
        "import json, engine.trainer.spare as s; print(json.dumps(s.warm_up()))")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
             "PATH": "/usr/bin:/bin"})
    status = json.loads(spare.stdout.strip().splitlines()[-1])
    assert status["status"] == "ready" and status["cuda_initialized"] is False
    job_id = engine.jobs.submit(LOCAL_USER, {"max_steps": 3, "save_steps": 100})["job_id"]
    job = wait_for_status(engine, job_id)
    assert job["status"] == "completed", job["error"]
    devices = job["attempts"][0]["devices"]
    log = engine.workspace.job_paths(job_id).log.read_text()
    assert f"devices: CUDA_VISIBLE_DEVICES={devices[0]}" in log


def test_out_of_memory_on_the_gpu_steps_the_micro_batch_down(engine):
    """The fallback on a real device: the error is raised inside a CUDA step, the cache is
    emptied and training goes on from the last complete state with half the micro-batch."""
    engine.supervisor.extra_env = {"TRAINDECK_FAULTS": "oom-at-step:3"}
    job_id = engine.jobs.submit(LOCAL_USER, {"max_steps": 6, "save_steps": 2,
                                             "per_device_train_batch_size": 8})["job_id"]
    job = wait_for_status(engine, job_id, timeout=600)
    assert job["status"] == "completed", job["error"]
    change = job["microbatch_changes"][0]["to"]
    assert (change["per_device_train_batch_size"], change["gradient_accumulation_steps"]) == (4, 2)
