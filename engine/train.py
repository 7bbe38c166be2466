"""`python -m engine.train <job.yaml>`: the trainer's command (what the console runs, and the
headless CLI). The trainer itself lives in engine/trainer/run.py."""

import sys

from engine.trainer.run import EXIT_FAILED, main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(EXIT_FAILED)
