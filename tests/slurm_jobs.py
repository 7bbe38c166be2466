"""What the cluster tests share: a console on the test Slurm cluster and ways to ask about jobs."""

import os
import signal
import subprocess

from harness import console_client, start_console, stop_console, wait_until

EXACT = {"max_steps": 60, "gradient_accumulation_steps": 2, "per_device_train_batch_size": 4,
         "learning_rate": 5e-3, "warmup_steps": 0, "lora_dropout": 0.1, "save_steps": 100}


def open_cluster_console(cluster, workspace, cluster_yaml: str = "partition: debug\n"
                         "time_limit: '30'\n", env: dict[str, str] | None = None):
    """`app.py --cluster slurm` on a fresh workspace (`env`: more of the console's environment);
    a gradio_client Client that knows it."""

    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "cluster.yaml").write_text(cluster_yaml)
    process, url = start_console(workspace, "--cluster", "slurm",
                                 env={**cluster.env, **(env or {})})
    client = console_client(url)
    client.workspace = workspace
    return process, client


def close_cluster_console(process) -> None:
    stop_console(process)


class ClusterConsole:
    """A console on the test cluster that a test may kill and start again on its workspace (a
    console restart): the tests sharing it read `client` when they call, never keep it."""

    def __init__(self, cluster, workspace):
        self.cluster = cluster
        self.workspace = workspace
        self.process, self.client = open_cluster_console(cluster, workspace)

    def kill_and_restart(self) -> None:
        """SIGKILL the console, as a crash would, then start a new one on the same workspace."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process, self.client = open_cluster_console(self.cluster, self.workspace)

    def close(self) -> None:
        close_cluster_console(self.process)


def job_of(client, job_id):
    return client.predict(job_id, api_name="/get_job")


def settled(client, job_id, timeout=180):
    return wait_until(lambda: (j := job_of(client, job_id))["status"] not in ("queued", "running")
                      and j, timeout, f"job {job_id} to end")


def squeue(cluster, *args):
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True,
                          env={**os.environ, **cluster.env}).stdout
