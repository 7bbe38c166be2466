"""A cluster's notice that the job must give its node back, noted from the trainer's first line:
importing the training libraries takes seconds, and a notice that came then would otherwise end
the process before it could checkpoint (the job failed while the cluster had requeued it)."""

from __future__ import annotations

import os
import signal


class Preemption:
    """Slurm sends SIGTERM before a requeue or cancel, and the --signal (USR1) ahead of the time
    limit. Training stops at the next step boundary with a complete checkpoint, as for a pause; a
    requeued job resumes from it."""

    def __init__(self):
        self.number: int | None = None

    @property
    def signalled(self) -> str | None:
        return signal.Signals(self.number).name if self.number else None

    def install(self) -> None:
        if "SLURM_JOB_ID" not in os.environ:
            return  # locally SIGTERM keeps its meaning
        for number in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(number, self._note)

    def _note(self, number, _frame) -> None:
        # Recorded before any call: Slurm may signal twice at once, and Python runs a pending
        # handler at the next call, inside this one.
        if self.number is None:
            self.number = number
            print(f"{self.signalled} from the cluster: checkpointing at the end of this step",
                  flush=True)


PREEMPTION = Preemption()
