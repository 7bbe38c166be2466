"""Downloads, merged export, checkpoint safety and analytics, through gradio_client against a real
console."""

import itertools
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import losses
from harness import REPO, console_client, start_console, stop_console, wait_until
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.console.people.users import LOCAL_USER
from engine.sources import TINY_MODEL

pytestmark = pytest.mark.slow  # real trainers and consoles

PROBE = "What is the capital of Norway?"


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("artifacts") / "workspace"
    process, url = start_console(workspace)
    client = console_client(url)
    job_id = client.predict({"max_steps": 10, "save_steps": 5, "learning_rate": 5e-3,
                             "warmup_steps": 0}, api_name="/submit_job")["job_id"]
    wait_until(lambda: client.predict(job_id, api_name="/get_job")["status"]
               not in ("queued", "running"), 120, "the shared job to finish")
    assert client.predict(job_id, api_name="/get_job")["status"] == "completed"
    yield client, workspace, job_id
    stop_console(process)


def logits(model, tokenizer=None):
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(TINY_MODEL)
    with torch.no_grad():
        return model(**tokenizer(PROBE, return_tensors="pt")).logits


def adapter_logits(folder: Path):
    return logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY_MODEL),
                                            folder).eval())


def unzip(path: str, into: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        archive.extractall(into)
    return into


@pytest.mark.parametrize("checkpoint", [None, "checkpoint-5"])
def test_downloaded_adapter_gives_the_trainers_logits(console, tmp_path, checkpoint):
    client, workspace, job_id = console
    zipped = client.predict(job_id, checkpoint, api_name="/download_model")
    expected_name = f"model_{job_id}_{checkpoint}.zip" if checkpoint else f"model_{job_id}.zip"
    assert Path(zipped).name == expected_name
    downloaded = unzip(zipped, tmp_path / "download")
    saved = workspace / "jobs" / job_id / (checkpoint or "model")
    assert torch.equal(adapter_logits(downloaded), adapter_logits(saved))
    if checkpoint:  # a checkpoint zip carries what resuming needs, too
        assert {"optimizer.pt", "trainer_state.json", "rng_state.pth"} <= {
            p.name for p in downloaded.iterdir()}


@pytest.mark.parametrize("checkpoint", [None, "checkpoint-5"])
def test_merged_export_loads_with_transformers_alone(console, tmp_path, checkpoint):
    client, workspace, job_id = console
    zipped = client.predict(job_id, checkpoint, api_name="/export_model")
    assert Path(zipped).name.endswith("_merged.zip")
    folder = unzip(zipped, tmp_path / "merged")
    assert (folder / "model.safetensors").exists() and not (folder / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template  # the trainer's chat template travels with it
    saved = workspace / "jobs" / job_id / (checkpoint or "model")
    assert torch.allclose(logits(merged, tokenizer), adapter_logits(saved), atol=1e-5)


# q8_0 keeps each block of 32 weights as int8 steps of (largest |weight| / 127): a weight moves by
# at most half a step, 0.4% of its block's largest. Through two layers of the tiny model that
# moved the logits by 0.007 at most (they span about 6 units); 0.05 holds a 7x margin, and the
# next token must not change.
Q8_0_TOLERANCE = 0.05


@pytest.mark.parametrize("quantization", ["f32", "q8_0"])
def test_gguf_export_loads_with_transformers_and_matches_the_merged_model(console, tmp_path,
                                                                          quantization):
    client, workspace, job_id = console
    zipped = client.predict(job_id, None, quantization, api_name="/export_gguf")
    assert Path(zipped).name == f"model_{job_id}_{quantization}.gguf.zip"
    folder = unzip(zipped, tmp_path / "gguf")
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "model.gguf"]
    modelfile = (folder / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile
    from_gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf",
                                                     dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="model.gguf")
    reference_tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    sentence = "Fine-tuned on Tuesday: 42 answers, ünïcödé and all."
    assert tokenizer(sentence)["input_ids"] == reference_tokenizer(sentence)["input_ids"]
    assert tokenizer.chat_template == reference_tokenizer.chat_template
    merged = adapter_logits(workspace / "jobs" / job_id / "model")
    exported = logits(from_gguf)
    difference = (exported - merged).abs().max().item()
    if quantization == "f32":
        assert difference <= 1e-4
    else:
        assert difference <= Q8_0_TOLERANCE
        assert torch.equal(exported.argmax(-1), merged.argmax(-1))


def import_llama_cpp():
    """llama-cpp-python: `make test` installs it, so under CI a missing one fails the test."""
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("llama-cpp-python is not installed; `make test` installs it")
        pytest.skip("llama-cpp-python is not installed (make test installs it)")
    return llama_cpp


# A conversation long enough (56 tokens) that a near tie or two tipped by q8_0 stay within 5%
CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": PROBE},
        {"role": "assistant", "content": "The capital of Norway is Oslo."},
        {"role": "user", "content": "And the capital of Peru?"}]


def greedy(model, ids: list[int], count: int) -> list[int]:
    ids = list(ids)
    for _ in range(count):
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-count:]


@pytest.mark.parametrize("quantization", ["f32", "q8_0"])
def test_gguf_export_runs_in_llama_cpp_as_the_merged_model(console, tmp_path, request,
                                                           quantization):
    llama_cpp = import_llama_cpp()
    client, workspace, job_id = console
    zipped = client.predict(job_id, None, quantization, api_name="/export_gguf")
    gguf_file = unzip(zipped, tmp_path / "gguf") / "model.gguf"
    llm = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=128, n_threads=1, logits_all=True,
                          verbose=False)
    request.addfinalizer(llm.close)  # freed now: its own finaliser fails at interpreter exit
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY_MODEL),
                                       workspace / "jobs" / job_id / "model").merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    prompt = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt)["input_ids"]
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    exported = torch.from_numpy(llm.scores[:len(ids)].copy())
    with torch.no_grad():
        expected = merged.eval()(torch.tensor([ids])).logits[0]
    if quantization == "f32":
        assert (exported - expected).abs().max().item() <= 1e-3
    else:  # q8_0 moves logits slightly; the next token may differ only at a near tie
        agreements = (exported.argmax(-1) == expected.argmax(-1)).tolist()
        assert sum(agreements) >= 0.95 * len(agreements), agreements
    generated = list(itertools.islice(llm.generate(ids, temp=0.0, repeat_penalty=1.0), 5))
    if quantization == "f32":
        assert generated == greedy(merged, ids, 5)
    # a chat reply: llama.cpp builds the prompt from the GGUF's chat template as transformers does
    reply = llm.create_chat_completion(CHAT, max_tokens=5, temperature=0.0, repeat_penalty=1.0)
    until_eos = list(itertools.takewhile(lambda token: token != llm.token_eos(), generated))
    assert reply["choices"][0]["message"]["content"] == llm.detokenize(until_eos).decode(
        errors="ignore")


def test_gguf_export_refuses_what_it_cannot_write(console):
    client, _, job_id = console
    with pytest.raises(Exception, match="quantization must be one of f32, f16, bf16, q8_0"):
        client.predict(job_id, None, "q4_k", api_name="/export_gguf")
    with pytest.raises(Exception, match="checkpoint"):
        client.predict(job_id, "../..", "f16", api_name="/export_gguf")


@pytest.mark.parametrize("name", ["../x", "/etc", "checkpoint-1/../../", "checkpoint-5/../..",
                                  "checkpoint-99", "model", ".."])
def test_checkpoint_names_outside_the_job_are_refused(console, name):
    client, _, job_id = console
    for api_name in ("/download_model", "/export_model"):
        with pytest.raises(Exception, match="checkpoint"):
            client.predict(job_id, name, api_name=api_name)


def test_symlinks_planted_in_the_job_folder_are_not_followed(console, tmp_path):
    client, workspace, job_id = console
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret outside the job folder")
    job_dir = workspace / "jobs" / job_id
    os.symlink(tmp_path, job_dir / "checkpoint-77")  # a checkpoint that is a link
    with pytest.raises(Exception, match="no complete checkpoint checkpoint-77"):
        client.predict(job_id, "checkpoint-77", api_name="/download_model")
    listed = client.predict(job_id, api_name="/list_checkpoints")
    assert "checkpoint-77" not in [c["name"] for c in listed]
    planted = job_dir / "checkpoint-5" / "stolen.txt"
    os.symlink(secret, planted)  # a link inside a real checkpoint
    try:
        with pytest.raises(Exception, match="links outside the job's folder"):
            client.predict(job_id, "checkpoint-5", api_name="/download_model")
    finally:
        planted.unlink()
        (job_dir / "checkpoint-77").unlink()


def test_analytics_agree_with_the_metrics_file(console):
    client, workspace, job_id = console
    records = [json.loads(line) for line in
               (workspace / "jobs" / job_id / "metrics.jsonl").read_text().splitlines()]
    analytics = client.predict(job_id, api_name="/job_analytics")
    best = min(records, key=lambda r: r["loss"])
    assert analytics["best_loss"] == best["loss"] and analytics["best_step"] == best["step"]
    steady = records[1:]  # 10 records: 10% warm-up is the first one
    rate = (steady[-1]["step"] - steady[0]["step"]) / (steady[-1]["time"] - steady[0]["time"])
    assert math.isclose(analytics["steps_per_s"], rate, rel_tol=1e-9)
    assert math.isclose(analytics["samples_per_s"],
                        sum(r["samples_per_s"] for r in steady) / len(steady), rel_tol=1e-9)
    assert math.isclose(analytics["tokens_per_s"],
                        sum(r["tokens_per_s"] for r in steady) / len(steady), rel_tol=1e-9)
    job = client.predict(job_id, api_name="/get_job")
    assert math.isclose(analytics["elapsed_s"], job["finished_at"] - job["started_at"])
    assert analytics["eta_s"] == 0 and analytics["step"] == 10
    assert {"load_s", "tokenize_s", "train_s", "save_s"} <= set(analytics["phases"])
    checkpoints = client.predict(job_id, api_name="/list_checkpoints")
    assert [c["name"] for c in checkpoints] == ["checkpoint-5", "checkpoint-10"]
    loss_at = {r["step"]: r["loss"] for r in records}
    assert [c["loss"] for c in checkpoints] == [loss_at[5], loss_at[10]]
    assert [c["best"] for c in checkpoints].count(True) == 1


def test_rotation_never_removes_the_best_checkpoint(engine):
    from conftest import wait_for_status

    # A rate this high makes the loss jump about, so the best step is rarely the newest.
    job_id = engine.jobs.submit(LOCAL_USER, {"max_steps": 24, "save_steps": 2,
                                             "save_total_limit": 2, "learning_rate": 0.3,
                                             "adapter": "full", "warmup_steps": 0,
                                             "lr_scheduler_type": "constant"})["job_id"]
    assert wait_for_status(engine, job_id)["status"] == "completed"
    curve = {r["step"]: r["loss"] for r in engine.views.get_metrics(LOCAL_USER, job_id, 0)}
    best_step = min((step for step in curve if step % 2 == 0), key=lambda s: curve[s])
    kept = [c["name"] for c in engine.views.list_checkpoints(LOCAL_USER, job_id)]
    assert f"checkpoint-{best_step}" in kept and "checkpoint-24" in kept
    assert len(kept) == 2
    assert losses(engine.views.get_metrics(LOCAL_USER, job_id, 0))  # the run logged its losses


def test_try_it_answers_from_the_base_and_the_trained_model(console):
    """In a copy of the console's spare trainer, with the answers a fresh process gives."""
    client, workspace, job_id = console
    warm_before = client.predict(api_name="/health")["warm_start"]["tools_started_warm"]
    result = client.predict(job_id, "What is the capital of Peru?", "checkpoint-5", 8,
                            api_name="/try_model")
    assert result["source"] == "checkpoint-5" and result["prompt"].endswith("Peru?")
    assert isinstance(result["base"], str) and isinstance(result["tuned"], str)
    assert client.predict(api_name="/health")["warm_start"]["tools_started_warm"] == \
        warm_before + 1
    fresh = subprocess.run([sys.executable, "-m", "engine.trainer.generate",
                            str(workspace / "jobs" / job_id), "--checkpoint", "checkpoint-5",
                            "--max-new-tokens", "8"], input="What is the capital of Peru?",
                           capture_output=True, text=True, cwd=REPO, timeout=300, check=True)
    assert json.loads(fresh.stdout.splitlines()[-1]) == result  # greedy: the same answers
    with pytest.raises(Exception, match="prompt is required"):
        client.predict(job_id, "  ", None, 8, api_name="/try_model")
