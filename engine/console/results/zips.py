"""Downloadable zips of a job's model, checkpoints and logs.

Zips are written to the workspace's exports folder file by file (constant memory; weights are
stored, not deflated, since they do not compress), and reused while their sources are unchanged.
Every source path is checked to stay inside the job's own folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

from engine.config import ConfigError, shorten
from engine.jobfiles import INCOMPLETE_MARKER, JobPaths, checkpoint_step

STORED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".zip")
EXPORT_MAX_AGE_S = 24 * 3600  # unused zips older than this are removed
ZIP_BLOCK = 4 << 20


def inside(path: Path, folder: Path) -> bool:
    """True when `path`, with every symlink resolved, lies in `folder`."""
    try:
        path.resolve(strict=True).relative_to(folder.resolve(strict=True))
        return True
    except (ValueError, FileNotFoundError, RuntimeError):
        return False


def source_files(folder: Path, job_root: Path) -> list[Path]:
    """The regular files under `folder`; a symlink that leads out of the job folder is refused."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() and not inside(path, job_root):
            raise ConfigError(f"{path.relative_to(job_root)} links outside the job's folder; "
                              f"refusing to export it")
        if path.is_file() and path.name != INCOMPLETE_MARKER:
            files.append(path)
    return files


def manifest_key(files: list[Path], base: Path) -> str:
    entries = [(str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def write_zip(files: list[Path], base: Path, destination: Path, prefix: str = "") -> Path:
    """Write `files` (paths relative to `base`) into `destination` atomically, streaming."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for path in files:
            info = zipfile.ZipInfo.from_file(path, f"{prefix}{path.relative_to(base)}")
            info.compress_type = (zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES
                                  else zipfile.ZIP_DEFLATED)
            # 4 MiB at a time: ZipFile.write copies 8 KiB per step, 131,072 steps per GiB.
            with open(path, "rb") as source, archive.open(info, "w", force_zip64=True) as target:
                while block := source.read(ZIP_BLOCK):
                    target.write(block)
    os.replace(tmp, destination)
    return destination


def checkpoint_folder(paths: JobPaths, checkpoint: str) -> Path:
    """A complete checkpoint of this job, by its bare name: anything else is refused."""
    available = [p.name for p in paths.checkpoints()]
    if checkpoint_step(checkpoint) is None:
        raise ConfigError(f"checkpoint must be a name like checkpoint-100 from the job's list "
                          f"({', '.join(available) or 'none yet'}); got {shorten(checkpoint)}")
    folder = paths.root / checkpoint
    if checkpoint not in available or folder.is_symlink() or not inside(folder, paths.root):
        raise ConfigError(f"no complete checkpoint {checkpoint} in this job "
                          f"(available: {', '.join(available) or 'none yet'})")
    return folder


class Zips:
    def __init__(self, exports_dir: Path):
        self.exports_dir = exports_dir

    def model_zip(self, job_id: str, paths: JobPaths, checkpoint: str | None = None) -> Path:
        if checkpoint:
            folder = checkpoint_folder(paths, checkpoint)
            name = f"model_{job_id}_{checkpoint}.zip"
        else:
            folder = paths.final_model
            if not folder.is_dir():
                raise ConfigError(f"job {job_id} has no final model yet (it is saved when training "
                                  f"completes); download a checkpoint instead")
            name = f"model_{job_id}.zip"
        return self.folder_zip(name, folder, paths)

    def folder_zip(self, name: str, folder: Path, paths: JobPaths) -> Path:
        return self._cached_zip(name, source_files(folder, paths.root), folder)

    def logs_zip(self, job_id: str, paths: JobPaths) -> Path:
        wanted = [paths.log, paths.metrics, paths.job_file, paths.summary]
        # TensorBoard's event files, where the job reported to it (open them with tensorboard
        # --logdir on the unzipped folder).
        wanted += sorted((paths.root / "tensorboard").rglob("*"))
        files = [p for p in wanted if p.is_file() and not p.is_symlink() and inside(p, paths.root)]
        if not files:
            raise ConfigError(f"job {job_id} has no logs yet")
        return self._cached_zip(f"logs_{job_id}.zip", files, paths.root)

    def _cached_zip(self, name: str, files: list[Path], base: Path) -> Path:
        key = manifest_key(files, base)
        folder = self.exports_dir / key
        destination = folder / name
        if not destination.exists():
            write_zip(files, base, destination)
        os.utime(destination)  # in use: keep it from the clean-up
        self.clean_up(keep=folder)
        return destination

    def clean_up(self, keep: Path | None = None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if not self.exports_dir.is_dir():
            return
        for folder in self.exports_dir.iterdir():
            if folder == keep or not folder.is_dir():
                continue
            zips = list(folder.glob("*.zip"))
            if all(now - z.stat().st_mtime > EXPORT_MAX_AGE_S for z in zips):
                for z in folder.iterdir():
                    z.unlink(missing_ok=True)
                folder.rmdir()
