"""Failures the trainer explains in one line (kept free of heavy imports: main() catches them)."""


class TrainingGaveUp(RuntimeError):
    """Training cannot go on, for a reason a person can act on (the message says what to do)."""
