"""A job's metric records read as they grow, the analytics drawn from them, machine telemetry."""
