"""Fault injection for the resilience tests: which faults a trainer was asked to meet. Light, so
that a fault can strike before the training libraries are imported."""

from __future__ import annotations

import os

FAULTS_ENV = "TRAINDECK_FAULTS"


def faults() -> dict[str, int]:
    """Fault injection for the resilience tests, e.g. TRAINDECK_FAULTS=pause-at-microstep:10.

    pause-at-microstep:N  request a pause (as a user would) right after micro-batch N
    sigterm-at-start      SIGTERM this process as it starts, before it imports the training
                          libraries (a cluster's notice landing while a trainer starts)
    sigterm-at-step:N     SIGTERM this process as optimizer step N ends, just before the step's
                          requests are read (a cluster's notice landing on a step boundary)
    kill-in-save:STEP     SIGKILL this process while checkpoint-STEP is half written
    kill-before-model     SIGKILL a run that trained to its end before it saves model/
    kill-in-model-save    SIGKILL it with model/ written but not yet put in place
    kill-before-exit      SIGKILL it with model/ in place, before exit.json and its exit
    resume-without-state  resume weights and optimizer only: no RNG state, no data position
                          (the negative control of the exactness tests)
    oom-at-step:N         run out of GPU memory in step N, once (as a too-big micro-batch does)
    oom-always            run out of GPU memory in every first step, at any micro-batch
    hold-at-step:N        once step N is done and its metrics written, wait until the job
                          folder's release-hold file appears (or a pause or cancel is asked), at
                          most HOLD_LIMIT_S: a test looks at a running job without racing it
    """
    found = {}
    for item in filter(None, os.environ.get(FAULTS_ENV, "").split(",")):
        name, _, value = item.partition(":")
        found[name.strip()] = int(value) if value.strip() else 1
    return found
