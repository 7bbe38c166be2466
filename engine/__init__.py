"""TrainDeck's engine: jobs, the queue, trainers and their supervision. No UI code lives here."""

__version__ = "0.1.0"
