"""How a trainer's end becomes its job's status and error: one row per case."""

import signal

import pytest

from engine.console.records.job import JobStatus
from engine.console.running.exits import STATUS, ExitCause, ExitFacts, exit_cause, exit_message

KILL = -signal.SIGKILL


@pytest.mark.parametrize("facts,cause", [
    (ExitFacts(code=0), ExitCause.COMPLETED),
    (ExitFacts(code=75), ExitCause.PAUSED),
    (ExitFacts(code=76), ExitCause.CANCELLED),
    (ExitFacts(code=2), ExitCause.INVALID),
    (ExitFacts(code=1), ExitCause.CRASHED),
    (ExitFacts(code=KILL), ExitCause.KILLED),
    (ExitFacts(code=-signal.SIGSEGV), ExitCause.KILLED),
    (ExitFacts(code=KILL, killed_for="timeout"), ExitCause.TIMED_OUT),
    (ExitFacts(code=0, killed_for="timeout"), ExitCause.TIMED_OUT),
    (ExitFacts(code=KILL, killed_for="cancel"), ExitCause.CANCEL_FORCED),
    (ExitFacts(code=KILL, stop_action="pause"), ExitCause.PAUSED_BY_KILL),
    (ExitFacts(code=KILL, stop_action="cancel"), ExitCause.CANCEL_FORCED),
    (ExitFacts(code=1, stop_action="pause"), ExitCause.CRASHED),  # it failed before pausing
    (ExitFacts(code=1, disk_full=True), ExitCause.DISK_FULL),
    (ExitFacts(code=75, disk_full=True), ExitCause.PAUSED),  # a pause that worked is a pause
    # Checkpointed on the cluster's notice, by the trainer's record: the cluster's doing, even
    # when Slurm's state gave no reason; a person's pause at the same time stays a pause.
    (ExitFacts(code=75, notice="SIGTERM"), ExitCause.CLUSTER),
    (ExitFacts(code=75, notice="SIGTERM", stop_action="pause"), ExitCause.PAUSED),
    (ExitFacts(code=KILL, recorded=False, attached=True, alive_at_attach=False),
     ExitCause.INTERRUPTED),
    (ExitFacts(code=KILL, recorded=False, attached=True, alive_at_attach=True),
     ExitCause.VANISHED),
    (ExitFacts(code=0, recorded=True, attached=True, alive_at_attach=False), ExitCause.COMPLETED),
    (ExitFacts(code=2, recorded=True, attached=True), ExitCause.INVALID),
])
def test_every_ending_has_one_cause(facts, cause):
    assert exit_cause(facts) == cause


def test_only_these_causes_do_not_fail_the_job():
    assert set(STATUS) == {ExitCause.COMPLETED, ExitCause.PAUSED, ExitCause.PAUSED_BY_KILL,
                           ExitCause.CANCELLED, ExitCause.CANCEL_FORCED}
    assert STATUS[ExitCause.CANCEL_FORCED] == JobStatus.CANCELLED


def test_messages_say_why_and_end_with_the_log():
    tail = "Traceback ...\nRuntimeError: boom"
    assert exit_message(ExitCause.COMPLETED, ExitFacts(code=0), tail) is None
    crashed = exit_message(ExitCause.CRASHED, ExitFacts(code=1), tail)
    assert crashed.startswith("the trainer exited with code 1\n") and crashed.endswith("boom")
    killed = exit_message(ExitCause.KILLED, ExitFacts(code=KILL), tail)
    assert "killed by SIGKILL (out of memory, or killed from outside)" in killed
    timed = exit_message(ExitCause.TIMED_OUT, ExitFacts(code=KILL, killed_for="timeout"), "", 90)
    assert timed.startswith("timed out after 1.5 min without progress")
    full = exit_message(ExitCause.DISK_FULL, ExitFacts(code=1, disk_full=True), tail, 0, 0.2)
    assert full.startswith("no space left on device (ENOSPC)") and "0.2 MiB free now" in full
    invalid = exit_message(ExitCause.INVALID, ExitFacts(code=2),
                           "loading\nerror: dataset x.jsonl: line 3 is not valid JSON")
    assert invalid == "dataset x.jsonl: line 3 is not valid JSON"
    for cause in (ExitCause.INTERRUPTED, ExitCause.VANISHED, ExitCause.TIMED_OUT):
        assert "Resume continues from the last checkpoint" in exit_message(
            cause, ExitFacts(code=KILL), "")


def test_a_stop_on_the_clusters_notice_says_so():
    facts = ExitFacts(code=75, notice="SIGUSR1")
    assert exit_message(ExitCause.CLUSTER, facts, "").startswith(
        "the cluster stopped the job (SIGUSR1) and did not queue it again; it saved a checkpoint "
        "first. Resume continues from the last checkpoint.")
