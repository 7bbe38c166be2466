"""Why a trainer ended, and what that makes of its job: a pure function of the facts the
supervisor gathered, so every case is one row of a table (tests/test_exits.py)."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import Enum

from engine.console.records.job import JobStatus
from engine.jobfiles import CANCEL, EXIT_CANCELLED, EXIT_COMPLETED, EXIT_INVALID, EXIT_PAUSED, PAUSE


class ExitCause(str, Enum):
    COMPLETED = "completed"
    PAUSED = "paused"                    # a pause was honoured: a complete checkpoint exists
    PAUSED_BY_KILL = "paused_by_kill"    # killed while pausing: paused at the last checkpoint
    CANCELLED = "cancelled"
    CANCEL_FORCED = "cancel_forced"      # a cancel not honoured within the grace: killed
    INVALID = "invalid"                  # exit 2: the config, model or dataset is unusable
    TIMED_OUT = "timed_out"              # no heartbeat for the job's timeout: killed
    DISK_FULL = "disk_full"              # it failed while the workspace's disk was full
    KILLED = "killed"                    # by a signal (out of memory, kill -9)
    CRASHED = "crashed"                  # any other failure
    INTERRUPTED = "interrupted"          # ended while no console was running, left no record
    VANISHED = "vanished"                # a re-attached trainer disappeared without a record
    CLUSTER = "cluster"                  # the cluster ended it (time limit, node failure, ...)


STATUS = {
    ExitCause.COMPLETED: JobStatus.COMPLETED, ExitCause.PAUSED: JobStatus.PAUSED,
    ExitCause.PAUSED_BY_KILL: JobStatus.PAUSED, ExitCause.CANCELLED: JobStatus.CANCELLED,
    ExitCause.CANCEL_FORCED: JobStatus.CANCELLED,
}  # every other cause fails the job


@dataclass(frozen=True)
class ExitFacts:
    code: int                       # the exit code; negative: killed by that signal
    killed_for: str | None = None   # "timeout" or "cancel" when the supervisor killed it
    stop_action: str | None = None  # a pause or cancel that was requested
    recorded: bool = True           # an exit code was seen (a child's, or exit.json's)
    attached: bool = False          # re-attached after a console restart
    alive_at_attach: bool = True
    disk_full: bool = False
    cluster_reason: str | None = None  # why the cluster scheduler ended the job, if it did
    notice: str | None = None       # the cluster's notice the trainer checkpointed and stopped on


def exit_cause(facts: ExitFacts) -> ExitCause:
    if facts.killed_for == "timeout":
        return ExitCause.TIMED_OUT
    if facts.killed_for == "cancel":
        return ExitCause.CANCEL_FORCED
    if facts.cluster_reason and facts.stop_action is None and facts.code not in (
            EXIT_COMPLETED, EXIT_INVALID):
        return ExitCause.CLUSTER  # the cluster ended it (even if it checkpointed first)
    if facts.code == EXIT_PAUSED and facts.notice and facts.stop_action is None:
        return ExitCause.CLUSTER  # the trainer says the cluster stopped it: nobody paused it
    if facts.code == EXIT_CANCELLED:
        return ExitCause.CANCELLED
    if facts.code == EXIT_COMPLETED:
        return ExitCause.COMPLETED
    if facts.code == EXIT_PAUSED:
        return ExitCause.PAUSED
    if facts.stop_action == PAUSE and facts.code < 0:
        return ExitCause.PAUSED_BY_KILL
    if facts.stop_action == CANCEL and facts.code < 0:
        return ExitCause.CANCEL_FORCED
    if facts.disk_full:
        return ExitCause.DISK_FULL
    if facts.attached and not facts.recorded:
        return ExitCause.VANISHED if facts.alive_at_attach else ExitCause.INTERRUPTED
    if facts.code == EXIT_INVALID:
        return ExitCause.INVALID
    return ExitCause.KILLED if facts.code < 0 else ExitCause.CRASHED


RESUMABLE = " Resume continues from the last checkpoint."


def exit_message(cause: ExitCause, facts: ExitFacts, tail: str = "", timeout_s: float = 0,
                 free_mb: float | None = None) -> str | None:
    """The job's error for `cause` (None when it did not fail), with the log's last lines."""
    if cause in STATUS:
        return None
    explained = [line[len("error:"):].strip() for line in tail.splitlines()
                 if line.startswith("error:")]  # the trainer's own one-line reason
    if cause == ExitCause.INVALID:
        return explained[-1] if explained else tail
    if cause == ExitCause.CRASHED and explained:
        return f"{explained[-1]}\n{tail}".strip()
    if cause == ExitCause.TIMED_OUT:
        first = (f"timed out after {timeout_s / 60:g} min without progress; the trainer was "
                 f"killed.{RESUMABLE}")
    elif cause == ExitCause.DISK_FULL:
        left = f" ({free_mb:.1f} MiB free now)" if free_mb is not None else ""
        first = (f"no space left on device (ENOSPC): the disk holding the workspace is full"
                 f"{left}; {describe_code(facts.code)}. Free some space, then resume: it "
                 f"continues from the last complete checkpoint.")
    elif cause == ExitCause.INTERRUPTED:
        first = f"interrupted: the trainer stopped while the console was not running.{RESUMABLE}"
    elif cause == ExitCause.CLUSTER:
        reason = facts.cluster_reason or (f"the cluster stopped the job ({facts.notice}) and did "
                                          f"not queue it again; it saved a checkpoint first")
        first = f"{reason}.{RESUMABLE}"
    elif cause == ExitCause.VANISHED:
        first = ("the trainer disappeared without an exit record (killed, or crashed hard)."
                 + RESUMABLE)
    else:
        first = describe_code(facts.code)
    return f"{first}\n{tail}".strip()


def describe_code(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed from outside)" if -code == signal.SIGKILL else ""
        return f"the trainer was killed by {name}{hint}"
    return f"the trainer exited with code {code}"
