"""Real training of the tiny model through the engine API, for each method and adapter."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import QUICK, REPO, losses, open_engine, shutdown, wait_for_status
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from engine.config import ConfigError
from engine.console.people.users import LOCAL_USER
from engine.jobfiles import EXIT_INVALID, JobPaths
from engine.sources import TINY_MODEL, sample_dataset

pytestmark = pytest.mark.slow  # real trainers and consoles

KINDS = {
    "sft-lora": {**QUICK},
    "sft-qlora": {**QUICK, "adapter": "qlora"},
    "sft-full": {**QUICK, "adapter": "full", "learning_rate": 1e-3},
    "dpo-lora": {**QUICK, "preset": "dpo-preference"},
    "kto-lora": {**QUICK, "preset": "kto-feedback"},
    "reward-lora": {**QUICK, "preset": "reward-model"},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The kinds submitted at once to one engine; they run one after another."""
    engine = open_engine(tmp_path_factory.mktemp("kinds") / "workspace")
    ids = {kind: engine.jobs.submit(LOCAL_USER, {**config, "name": kind})["job_id"]
           for kind, config in KINDS.items()}
    jobs = {kind: wait_for_status(engine, job_id, timeout=300) for kind, job_id in ids.items()}
    yield engine, jobs
    shutdown(engine)


def mean(values):
    return sum(values) / len(values)


def generate(model, tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, prompt["input_ids"].shape[1]:]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_completes_and_its_loss_falls(trained, kind):
    engine, jobs = trained
    job = jobs[kind]
    assert job["status"] == "completed", job["error"]
    assert job["progress"] == {**job["progress"], "step": 12, "total_steps": 12}
    metrics = engine.views.get_metrics(LOCAL_USER, job["job_id"], 0)
    assert [m["step"] for m in metrics] == list(range(1, 13))
    curve = losses(metrics)
    # Halves, not ends: a preference loss is noisy from step to step (KTO's most of all).
    assert mean(curve[6:]) < mean(curve[:6]) - 0.01, curve
    for record in metrics:  # the protocol's fields are on every record
        assert {"step", "time", "epoch", "loss", "learning_rate", "grad_norm", "samples_per_s",
                "tokens_per_s"} <= set(record)
        assert record["samples_per_s"] > 0 and record["tokens_per_s"] > 0


@pytest.mark.parametrize("kind", ["sft-lora", "sft-qlora", "dpo-lora"])
def test_saved_adapter_loads_back_and_generates(trained, kind):
    engine, jobs = trained
    folder = JobPaths(engine.workspace.job_paths(jobs[kind]["job_id"]).root).final_model
    assert (folder / "adapter_model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    probe = tokenizer("What is the capital of Peru?", return_tensors="pt")
    with torch.no_grad():
        base_logits = base(**probe).logits
    model = PeftModel.from_pretrained(base, folder).eval()
    with torch.no_grad():
        tuned_logits = model(**probe).logits
    assert not torch.allclose(base_logits, tuned_logits)  # the adapter changed the model
    assert len(generate(model, tokenizer)) > 0


# What a user would write by hand against TRL for a job of these methods: its resolved config's
# settings, TRL's own dataset loading, a LoRA adapter. Both methods in one process (one import).
PLAIN_TRL = """
import json, sys
import trl
from datasets import load_dataset
from peft import LoraConfig
TRAINERS = {"kto": "KTO", "reward": "Reward"}
TASKS = {"kto": "CAUSAL_LM", "reward": "SEQ_CLS"}
METHOD_ARGS = {"kto": ("beta", "desirable_weight", "undesirable_weight"), "reward": ()}
losses = {}
for kind, (c, data) in json.loads(sys.argv[2]).items():
    name = TRAINERS[c["method"]]
    args = getattr(trl, name + "Config")(
        output_dir=f"{sys.argv[1]}/{kind}", max_steps=c["max_steps"], seed=c["seed"],
        per_device_train_batch_size=c["per_device_train_batch_size"],
        gradient_accumulation_steps=c["gradient_accumulation_steps"],
        learning_rate=c["learning_rate"], lr_scheduler_type=c["lr_scheduler_type"],
        warmup_steps=c["warmup_steps"], weight_decay=c["weight_decay"],
        max_grad_norm=c["max_grad_norm"], max_length=c["max_length"], optim=c["optim"],
        bf16=c["precision"] == "bf16", activation_checkpointing=c["gradient_checkpointing"],
        save_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True,
        use_cpu=True, logging_steps=1, **{k: c[k] for k in METHOD_ARGS[c["method"]]})
    trainer = getattr(trl, name + "Trainer")(
        model=c["model"], args=args,
        train_dataset=load_dataset("json", data_files=data, split="train"),
        peft_config=LoraConfig(r=c["lora_r"], lora_alpha=c["lora_alpha"],
                               lora_dropout=c["lora_dropout"], target_modules="all-linear",
                               task_type=TASKS[c["method"]]))
    trainer.train()
    losses[kind] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
print(json.dumps(losses))
"""


def test_kto_and_reward_jobs_train_like_a_plain_trl_script_of_their_config(trained, tmp_path):
    engine, jobs = trained
    runs = {}
    for kind in ("kto-lora", "reward-lora"):
        job_file = engine.workspace.job_paths(jobs[kind]["job_id"]).job_file
        config = yaml.safe_load(job_file.read_text())["config"]  # as resolved for the trainer
        assert config["adapter"] == "lora" and config["lora_target_modules"] == "all-linear"
        runs[kind] = (config, config["dataset"])
    plain = subprocess.run([sys.executable, "-c", PLAIN_TRL, str(tmp_path), json.dumps(runs)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    for kind, curve in json.loads(plain.stdout.splitlines()[-1]).items():
        assert len(curve) == 12
        assert losses(engine.views.get_metrics(LOCAL_USER, jobs[kind]["job_id"], 0)) == curve, \
            kind


def test_a_reward_model_exports_as_a_scoring_model_and_is_refused_where_it_cannot_go(trained):
    engine, jobs = trained
    job_id = jobs["reward-lora"]["job_id"]
    paths = engine.workspace.job_paths(job_id)
    engine.artifacts.export_model(LOCAL_USER, job_id)
    merged = AutoModelForSequenceClassification.from_pretrained(paths.merged(None)).eval()
    tokenizer = AutoTokenizer.from_pretrained(paths.merged(None))
    base = AutoModelForSequenceClassification.from_pretrained(TINY_MODEL, num_labels=1)
    base.config.pad_token_id = tokenizer.pad_token_id
    trained_model = PeftModel.from_pretrained(base, paths.final_model).eval()
    pairs = [json.loads(line) for line in sample_dataset("preference").read_text().splitlines()]
    texts = [f"{p['prompt']} {answer}" for p in pairs[:16] for answer in (p["chosen"],
                                                                          p["rejected"])]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = merged(**batch).logits.squeeze(-1)
        assert torch.allclose(scores, trained_model(**batch).logits.squeeze(-1), atol=1e-4)
    assert merged.config.num_labels == 1 and scores.std() > 0  # one score, varying by answer
    with pytest.raises(ConfigError, match="trained a reward model .* cannot run it"):
        engine.artifacts.export_gguf(LOCAL_USER, job_id)
    with pytest.raises(ConfigError, match="trained a reward model: it scores answers"):
        engine.artifacts.try_model(LOCAL_USER, job_id, "What is the capital of Peru?")


def test_full_fine_tune_saves_a_standalone_model(trained):
    engine, jobs = trained
    folder = engine.workspace.job_paths(jobs["sft-full"]["job_id"]).final_model
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    base = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    changed = [n for n, p in model.named_parameters()
               if not torch.equal(p, dict(base.named_parameters())[n])]
    assert len(changed) > 10
    assert len(generate(model, AutoTokenizer.from_pretrained(folder))) > 0


def test_jobs_record_the_resolved_config_and_a_reproducible_command(trained):
    engine, jobs = trained
    job = engine.views.get_job(LOCAL_USER, jobs["sft-qlora"]["job_id"])
    assert job["config"]["adapter"] == "qlora"
    assert job["config"]["dataloader_num_workers"] == 0
    assert job["resolved"]["dataloader_num_workers"] == 0  # chosen by `auto`, and recorded
    assert job["command"].startswith("python -m engine.train ")
    assert job["attempt"] == 1 and job["attempts"][0]["exit_code"] == 0
    assert [c["name"] for c in job["checkpoints"]] == ["checkpoint-12"]


def test_default_preset_finishes_well_under_a_minute(default_run):
    engine, job, wall_s = default_run
    assert job["status"] == "completed", job["error"]
    print(f"default preset: {wall_s:.1f}s from submit to final save")
    assert wall_s < 60
    summary_file = engine.workspace.job_paths(job["job_id"]).root / "summary.json"
    summary = json.loads(summary_file.read_text())
    assert summary["global_step"] == job["progress"]["total_steps"] == 33
    curve = losses(engine.views.get_metrics(LOCAL_USER, job["job_id"], 0))
    assert curve[-1] < curve[0]


def test_headless_cli_runs_a_plain_config(tmp_path):
    (tmp_path / "job.yaml").write_text("preset: qa-optimized\nmax_steps: 4\n")
    run = subprocess.run([sys.executable, "-m", "engine.train", str(tmp_path / "job.yaml")],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "step 4/4" in run.stdout
    assert "step 4/4" in (tmp_path / "training.log").read_text()  # tee'd to the log as well
    assert (tmp_path / "model" / "adapter_model.safetensors").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_headless_cli_rejects_a_bad_config_with_exit_code_2(tmp_path):
    (tmp_path / "job.yaml").write_text("learning_rate: -1\n")
    run = subprocess.run([sys.executable, "-m", "engine.train", str(tmp_path / "job.yaml")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == EXIT_INVALID
    assert "error: learning_rate must be > 0, got -1" in run.stdout
