"""Who may log in and do what, their quotas, and how they are told of their jobs' ends."""
