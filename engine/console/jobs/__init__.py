"""What people do to jobs and what they see of them: submit, pause, resume, sweeps, the views."""
