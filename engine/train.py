"""`python -m engine.train <job.yaml>`: the trainer's command (what the console runs, and the
headless CLI). The trainer itself lives in engine/trainer/run.py."""

import sys

from engine.trainer.preemption import PREEMPTION

if __name__ == "__main__":
    # Before any import that takes time: a cluster's notice may come while they run.
    PREEMPTION.install()

from engine.trainer.run import EXIT_FAILED, main  # noqa: E402 (after the notice handler)

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(EXIT_FAILED)
