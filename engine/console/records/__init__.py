"""The job record and its state machine, the job store and the workspace's folders."""
