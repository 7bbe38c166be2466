"""Spare trainers: `python -m engine.trainer.spare`, started by the console ahead of need.

This process imports the heavy libraries once (seconds of work), touches no GPU, runs no thread
besides its own, and then waits on stdin for jobs. For each job (one JSON line: id, argv, env,
cwd, log) it forks a spare trainer, a copy of itself that already has every library in memory,
and says which pid took the job. The copy becomes that job's trainer: a session and process
group of its own, the job's environment (CUDA_VISIBLE_DEVICES included), its output to the job's
log, the job's command as its process title, and the same `engine.trainer.run.main` that
`python -m engine.train job.yaml` runs, ending with its exit code. The trainer-side tools
(export, GGUF export, generate) run the same way, with their input and output in files the
order names. This process reaps its copies and reports each one's exit code on stdout. End of
input (the console went away) ends it; the trainers it started run on, as any trainer outlives
its console.

On a machine with CUDA, libraries that probe the GPUs when imported (bitsandbytes, pulled in by
peft and TRL's trainers) would initialise CUDA with no device assigned yet, and a forked copy of
a process that has initialised CUDA cannot use it, so there only what leaves CUDA alone is
imported here and the trainer imports the rest after the fork.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import select
import signal
import sys
import threading
import time
import traceback

import setproctitle

from engine.jobfiles import EXIT_FAILED, EXIT_INVALID
from engine.methods import METHODS

# Set up now, while the process's environment is as it started: the title is written over the
# memory of the command line and the environment, which a later change of the environment moves.
setproctitle.getproctitle()

# Safe before a GPU is assigned: importing these never initialises CUDA.
CUDA_SAFE_IMPORTS = ("torch", "transformers", "datasets", "safetensors")
# Everything the trainer needs, the method trainers included (TRL imports them lazily, and they pull
# in the tracker libraries: a second per job); on a machine without CUDA nothing initialises it.
ALL_IMPORTS = CUDA_SAFE_IMPORTS + ("peft", "trl", "engine.trainer.build",
                                   *(method.trainer_module for method in METHODS.values()))
READY = "ready"
# What a copy may become: the trainer (`python -m engine.train`) and the trainer-side tools.
RUNNABLE = ("engine.train", "engine.trainer.export", "engine.trainer.gguf_export",
            "engine.trainer.generate")


def threads() -> dict[int, str]:
    """This process's threads, by id, with their names."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            found[int(tid)] = open(f"/proc/self/task/{tid}/comm").read().strip()
        except OSError:
            pass
    return found


def warm_up() -> dict:
    """Import what may be imported now; returns what was done, and whether forking is safe."""
    started = time.time()
    import numpy  # noqa: F401  (its OpenBLAS starts a thread server, which shuts down for a fork)

    before = set(threads())
    import torch  # the others build on it

    # With NVML answering "is there a GPU", asking does not initialise CUDA.
    cuda = torch.cuda.is_available()
    modules = CUDA_SAFE_IMPORTS if cuda else ALL_IMPORTS
    for name in modules:
        importlib.import_module(name)
    # A fork copies only the calling thread: a lock another thread held would stay held in the
    # copy. Only threads that make themselves safe around a fork (OpenBLAS's, jemalloc's) may be.
    unknown = [name for tid, name in threads().items()
               if tid not in before and tid != threading.get_native_id()
               and name != "jemalloc_bg_thd"]
    status = READY
    if torch.cuda.is_initialized():
        status = "unusable: CUDA was initialised while importing"
    elif unknown or threading.active_count() > 1:
        status = f"unusable: threads were started while importing ({', '.join(unknown)})"
    return {"status": status, "pid": os.getpid(), "cuda": cuda, "modules": list(modules),
            "cuda_initialized": torch.cuda.is_initialized(), "threads": len(threads()),
            "seconds": round(time.time() - started, 2)}


def redirect(order: dict) -> None:
    """Standard input from the order's file (else nothing), output to its log (standard output to
    its own file when it names one)."""
    log = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    stdout = os.open(order["stdout"], os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600) \
        if order.get("stdout") else log
    stdin = os.open(order.get("stdin") or os.devnull, os.O_RDONLY)
    for target, source in ((0, stdin), (1, stdout), (2, log)):
        os.dup2(source, target)
    for opened in {log, stdout, stdin}:
        os.close(opened)


def become(order: dict, led: int) -> int:
    """In a forked copy: turn into the process `order` describes (a job's trainer, or a tool);
    its exit code. `led`: a pipe's end to close once this copy leads its own process group."""
    os.setsid()  # the job's own session and process group, as a trainer started fresh has
    os.close(led)
    signal.set_wakeup_fd(-1)  # the spare process's wake-up pipe is not the trainer's
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    redirect(order)
    os.chdir(order["cwd"])
    os.environ.clear()
    os.environ.update(order["env"])
    argv = order["argv"]  # [python, -m, engine.train, job.yaml, ...]
    sys.argv = [argv[2], *argv[3:]]
    setproctitle.setproctitle(" ".join(argv))  # `ps` shows the job's command, as a cold start does
    if argv[2] not in RUNNABLE:
        print(f"spare trainer: {argv[2]} is not one of {', '.join(RUNNABLE)}", file=sys.stderr)
        return EXIT_INVALID
    try:
        return importlib.import_module(argv[2]).main(argv[3:]) or 0
    except SystemExit as ended:  # argparse, or a tool's own sys.exit
        code = ended.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
        return code if isinstance(code, int) else 0 if code is None else EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    except Exception:  # a fresh process would print it and end with 1; so does the copy
        traceback.print_exc()
        return EXIT_FAILED


def say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def reap() -> None:
    """Report every copy that ended (negative code: killed by that signal)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        say({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


def orders():
    """Each job line from stdin as it comes, reaping copies as they end. Waits without waking:
    a copy's end (SIGCHLD) writes to a pipe that select() watches beside stdin. Reads the file
    descriptor itself: a buffered reader would hide a second line from select()."""
    child_ended, notify = os.pipe()
    os.set_blocking(notify, False)
    signal.set_wakeup_fd(notify)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the signal is delivered
    pending = b""
    while True:
        readable, _, _ = select.select([0, child_ended], [], [])
        if child_ended in readable:
            os.read(child_ended, 1 << 12)
        reap()
        if 0 not in readable:
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return  # the console went away; the trainers this process started run on
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def end_copy(code: int) -> None:
    """End a forked copy with the trainer's exit code: the exit handlers run (trackers flush, as a
    trainer started fresh does), then the process ends without the interpreter's teardown, whose
    garbage collection walks every object inherited from the spare (about ten seconds on a busy
    machine, during which the console cannot see the job end)."""
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> int:
    state = warm_up()
    say(state)
    if state["status"] != READY:
        return 1
    # What the imports made lives as long as every copy: out of the collector's reach, a copy's
    # collections skip it (a full one took 0.36 CPU s per job) and leave its pages shared.
    gc.freeze()
    for order in orders():
        leads, led = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(leads)
            end_copy(become(order, led))  # the copy ends as the job's trainer ends
        os.close(led)
        # The pid is told once the copy leads its own group: a group kill sent at once (a job
        # cancelled as it starts) would otherwise miss a copy not yet past setsid, which then
        # trained on unseen.
        os.read(leads, 1)  # end of file: the copy closed its end (or ended)
        os.close(leads)
        say({"id": order["id"], "pid": pid})
    return 0


if __name__ == "__main__":
    sys.exit(serve())
