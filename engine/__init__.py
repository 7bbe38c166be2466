"""TrainDeck's engine. No UI code lives here, and it is split by the process code runs in:

- engine/console/: the console process (store, scheduler, supervisor, users, artifacts, ...);
- engine/trainer/: the trainer subprocess (`python -m engine.train`) and its tools;
- engine/*.py: what both share: the config schema and its resolution, the trainer protocol
  (job folder files, exit codes), datasets, presets, sources, the machine.

Console code never imports trainer code and the other way round; both import the shared modules,
which import neither (tests/test_layers.py walks the imports).
"""

from pathlib import Path

__version__ = "0.1.0"
REPO_DIR = Path(__file__).resolve().parent.parent
