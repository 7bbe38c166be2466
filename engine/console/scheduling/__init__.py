"""Which queued job starts next, when it may, and what holds it back (devices, quotas, disk)."""
