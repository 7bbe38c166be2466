"""A spare trainer: `python -m engine.trainer.spare`, started by the console ahead of need.

It imports the heavy libraries (seconds of work), touches no GPU, and waits on stdin for one job.
Handed a job (one JSON line: argv, env, cwd, log), it becomes that job's trainer: its output goes
to the job's log, its environment becomes the job's (CUDA_VISIBLE_DEVICES included), its process
title the job's command, and it runs the same `engine.trainer.run.main` that
`python -m engine.train job.yaml` runs, exiting with its code. It was started in a session of its
own, so the job keeps its own process group. End of input (the console went away) ends it.

On a machine with CUDA, libraries that probe the GPUs when imported (bitsandbytes, pulled in by
peft and TRL's trainers) would initialise CUDA with no device assigned yet, so there the spare
imports only what leaves CUDA alone and the rest is imported after the hand-off.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

import setproctitle

# Set up now, while the process's environment is as it started: the title is written over the
# memory of the command line and the environment, which a later change of the environment moves.
setproctitle.getproctitle()

# Safe before a GPU is assigned: importing these never initialises CUDA.
CUDA_SAFE_IMPORTS = ("torch", "transformers", "datasets", "safetensors")
# Everything the trainer needs; on a machine without CUDA nothing can initialise it.
ALL_IMPORTS = CUDA_SAFE_IMPORTS + ("peft", "trl", "engine.trainer.build")
READY = "ready"


def warm_up() -> dict:
    """Import what may be imported now; returns what was done, for the console's log."""
    started = time.time()
    import torch  # noqa: F401  (first: the others build on it)

    # With NVML answering "is there a GPU", asking does not initialise CUDA.
    cuda = torch.cuda.is_available()
    modules = CUDA_SAFE_IMPORTS if cuda else ALL_IMPORTS
    for name in modules:
        importlib.import_module(name)
    return {"status": READY, "pid": os.getpid(), "cuda": cuda, "modules": list(modules),
            "cuda_initialized": torch.cuda.is_initialized(),
            "seconds": round(time.time() - started, 2)}


def become(order: dict) -> int:
    """Turn this process into the trainer of the job `order` describes."""
    log = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    os.chdir(order["cwd"])
    os.environ.clear()
    os.environ.update(order["env"])
    argv = order["argv"]  # [python, -m, engine.train, job.yaml, ...]
    sys.argv = [argv[2], *argv[3:]]
    setproctitle.setproctitle(" ".join(argv))  # `ps` shows the job's command, as a cold start does
    from engine.trainer.run import EXIT_FAILED, main

    try:
        return main(argv[3:])
    except KeyboardInterrupt:
        return EXIT_FAILED


def serve() -> int:
    state = warm_up()
    if state["cuda_initialized"]:
        # A library touched the GPUs: this process may no longer be given one. Say so and go.
        state["status"] = "unusable: CUDA was initialised while importing"
    print(json.dumps(state), flush=True)
    if state["status"] != READY:
        return 1
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the console stopped before it needed this spare
    return become(json.loads(line))


if __name__ == "__main__":
    sys.exit(serve())
