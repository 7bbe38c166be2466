"""What a job leaves for people to take away or try: model and log zips, the adapter merged into
its base model, answers from the trained model, and the uploaded datasets jobs train on. Heavy
work runs in limited slots per user (engine.console.results.gates) and in processes of its own."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from engine.config import ConfigError, shorten
from engine.console.people.access import Access
from engine.console.people.users import User
from engine.console.records.store import JobStore
from engine.console.records.workspace import Workspace
from engine.console.results.gates import Gates
from engine.console.results.tools import Tools
from engine.console.results.uploads import CleanupTimer, Retention, Uploads
from engine.console.results.zips import Zips, checkpoint_folder
from engine.jobfiles import GGUF_ARCHITECTURES, GGUF_QUANTIZATIONS
from engine.methods import makes_reward_model

log = logging.getLogger("traindeck.artifacts")
MAX_PROMPT_CHARS = 8000


class Artifacts:
    def __init__(self, store: JobStore, access: Access, workspace: Workspace, gates: Gates,
                 tools: Tools, max_upload_bytes: int | None = None,
                 retention: Retention | None = None):
        self.store, self.access, self.workspace, self.gates = store, access, workspace, gates
        self.tools = tools
        self.zips = Zips(workspace.exports_dir)
        self.uploads = Uploads(workspace.uploads_dir)
        self.max_upload_bytes = max_upload_bytes
        self.retention = retention = retention or Retention()
        self.upload_cleaner = CleanupTimer(self.clean_uploads, retention.check_every_s)

    def download_model(self, user: User, job_id: str, checkpoint: str | None = None) -> Path:
        job = self.store.lookup(job_id)
        self.access.authorize_use(job, user, "download")
        with self.gates.download.slot(user.name):
            return self.zips.model_zip(job.job_id, self.workspace.job_paths(job.job_id),
                                       checkpoint or None)

    def download_logs(self, user: User, job_id: str) -> Path:
        job = self.store.lookup(job_id)
        self.access.authorize(job, user, "download")
        with self.gates.download.slot(user.name):
            return self.zips.logs_zip(job.job_id, self.workspace.job_paths(job.job_id))

    def export_model(self, user: User, job_id: str, checkpoint: str | None = None) -> Path:
        """Merge the job's adapter (final, or a checkpoint's) into its base model, in a separate
        process, and return a zip of the standalone model."""
        job = self.store.lookup(job_id)
        self.access.authorize(job, user, "export")
        paths = self.workspace.job_paths(job.job_id)
        if job.config.adapter == "full":
            raise ConfigError(f"job {job.job_id} trained every weight: its model is standalone "
                              f"already; download it with /download_model")
        if checkpoint:
            source = checkpoint_folder(paths, checkpoint)
        else:
            source = paths.final_model
            if not source.is_dir():
                raise ConfigError(f"job {job.job_id} has no final model yet; export a checkpoint")
        destination = paths.merged(checkpoint)
        with self.gates.export.slot(user.name):
            if not destination.is_dir() or destination.stat().st_mtime < source.stat().st_mtime:
                self.tools.run("engine.trainer.export",
                         [str(paths.root)] + (["--checkpoint", checkpoint] if checkpoint else []),
                         f"export of job {job.job_id}")
            suffix = f"_{checkpoint}" if checkpoint else ""
            return self.zips.folder_zip(f"model_{job.job_id}{suffix}_merged.zip", destination,
                                        paths)

    def export_gguf(self, user: User, job_id: str, checkpoint: str | None = None,
                    quantization: str = "q8_0") -> Path:
        """The job's model (final, or a checkpoint's; an adapter merged first) as one GGUF file
        with an Ollama Modelfile, written in a separate process; returns their zip."""
        if quantization not in GGUF_QUANTIZATIONS:
            raise ConfigError(f"quantization must be one of {', '.join(GGUF_QUANTIZATIONS)}, got "
                              f"{shorten(quantization)}")
        job = self.store.lookup(job_id)
        self.access.authorize(job, user, "export")
        paths = self.workspace.job_paths(job.job_id)
        source = checkpoint_folder(paths, checkpoint) if checkpoint else paths.final_model
        if not source.is_dir():
            raise ConfigError(f"job {job.job_id} has no final model yet; export a checkpoint")
        if makes_reward_model(job.config.method):
            raise ConfigError(f"job {job.job_id} trained a reward model (a score head, not a "
                              f"language model head): GGUF runtimes such as llama.cpp and Ollama "
                              f"generate text and cannot run it; export it with /export_model")
        model_type = _model_type(source, job.config.model)
        if model_type is not None and model_type not in GGUF_ARCHITECTURES:
            raise ConfigError(f"GGUF export supports {', '.join(GGUF_ARCHITECTURES)} models; job "
                              f"{job.job_id} trained a {model_type} model")
        destination = paths.gguf(checkpoint, quantization)
        with self.gates.export.slot(user.name):
            if not destination.is_dir() or destination.stat().st_mtime < source.stat().st_mtime:
                self.tools.run("engine.trainer.gguf_export",
                         [str(paths.root), "--quantization", quantization]
                         + (["--checkpoint", checkpoint] if checkpoint else []),
                         f"GGUF export of job {job.job_id}")
            suffix = f"_{checkpoint}" if checkpoint else ""
            return self.zips.folder_zip(f"model_{job.job_id}{suffix}_{quantization}.gguf.zip",
                                        destination, paths)

    def try_model(self, user: User, job_id: str, prompt: str, checkpoint: str | None = None,
                  max_new_tokens: int = 64) -> dict[str, Any]:
        """Generate from the base model and the trained one (final, or a checkpoint) for one
        prompt, in a separate process; returns {prompt, base, tuned, source}."""
        job = self.store.lookup(job_id)
        self.access.authorize_use(job, user, "try")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("prompt is required")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ConfigError(f"prompt must be at most {MAX_PROMPT_CHARS} characters, got "
                              f"{len(prompt)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or not 1 <= max_new_tokens <= 1024:
            raise ConfigError(f"max_new_tokens must be between 1 and 1024, got "
                              f"{shorten(max_new_tokens)}")
        if makes_reward_model(job.config.method):
            raise ConfigError(f"job {job.job_id} trained a reward model: it scores answers and "
                              f"does not write them, so there is nothing to try here; export it "
                              f"with /export_model and score with it")
        paths = self.workspace.job_paths(job.job_id)
        args = [str(paths.root), "--max-new-tokens", str(max_new_tokens)]
        if checkpoint:
            args += ["--checkpoint", checkpoint_folder(paths, checkpoint).name]
        elif not paths.final_model.is_dir():
            raise ConfigError(f"job {job.job_id} has no final model yet; choose a checkpoint")
        with self.gates.generate.slot(user.name):
            # The prompt travels on stdin: no text a person types is ever read as an option.
            output = self.tools.run("engine.trainer.generate", args, "generation", stdin=prompt)
        return json.loads(output.strip().splitlines()[-1])

    def upload_dataset(self, user: User, temporary: str | Path,
                       original_name: str | None = None) -> dict[str, Any]:
        """Keep an uploaded dataset file for `user`; returns the path to name in a submission."""
        source = Path(temporary)
        with self.gates.upload.slot(user.name):
            quota = user.quotas.get("max_upload_mb")
            stored = self.uploads.store(user.name, source, original_name or source.name,
                                        None if quota is None else quota << 20,
                                        self.max_upload_bytes)
        return {"dataset": str(stored), "bytes": stored.stat().st_size,
                "stored_mb": round(self.uploads.used_bytes(user.name) / 2**20, 1)}

    def clean_uploads(self, now: float | None = None) -> list[Path]:
        """Remove the uploads no job names (as its dataset or eval dataset, whatever its
        status: deleting a job frees them) once `retention.max_age_s` has passed since their
        last upload. Under the store's lock, so a job being stored meanwhile is seen."""
        with self.store.lock:
            in_use = {Path(name).resolve() for job in self.store.all(copy=False)
                      for name in (job.config.dataset, job.config.eval_dataset) if name}
            removed = self.uploads.clean(in_use, self.retention.max_age_s, now)
        for path in removed:
            log.info("removed unused upload %s", path)
        return removed


def _model_type(source: Path, base_model: str) -> str | None:
    """The model_type of a saved model, or of an adapter's base model when that is a local
    folder (None: not known here, as for a Hub id; the exporter checks it then)."""
    for folder in (source, Path(base_model)):
        try:
            return json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError):
            continue
    return None
