"""Trainer processes: devices, warm spares, the supervisor following them, Slurm, how each ended."""
