"""A real single-node Slurm for the cluster tests: Debian's munged, slurmctld and slurmd, run
from a generated configuration in a temporary folder (own ports, own state, own munge socket and
key), with two GPUs faked as gres file devices. Nothing outside the folder is touched but a pid
file in REGISTRY, so that daemons a killed test run left are stopped by the next one: every
process of a cluster (daemons, job steps, the jobs themselves) carries its SLURM_CONF and is found
by it. The cluster also stops itself at exit and on SIGTERM or SIGINT."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import psutil
from harness import kill_with_group, wait_until

DAEMONS = ("munged", "slurmctld", "slurmd")
# One pid file per running cluster: its configuration, and the pytest process that owns it.
REGISTRY = Path(tempfile.gettempdir()) / "traindeck-test-slurm"
STOP_DEADLINE_S = 30.0
# Jobs the node runs at once per real core (each job takes one CPU). Most test jobs wait rather
# than compute (starting Python, held, suspended at their time limit, checkpointing for Slurm),
# and a waiting job must not keep the next test's job out of the node; the slurmd of the node
# takes the configured CPUs as they are (SlurmdParameters=config_overrides).
SLOTS_PER_CORE = 2


def missing() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    for program in (*DAEMONS, "sbatch", "squeue", "scontrol", "scancel", "munge"):
        if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
            return f"{program} is not installed (Debian: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "a private Slurm runs its daemons as root here; the tests are not root"
    return None


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def sbin(program: str) -> str:
    return shutil.which(program) or f"/usr/sbin/{program}"


def processes_of(conf: str) -> list[psutil.Process]:
    """The live processes of the cluster configured by `conf` (not this one)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.status() != psutil.STATUS_ZOMBIE and \
                    process.environ().get("SLURM_CONF") == conf:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_processes_of(conf: str, deadline_s: float = STOP_DEADLINE_S) -> None:
    """SIGKILL every process of a cluster, and fail, naming them, if some outlive the deadline."""
    wait_until(lambda: not killed_some(processes_of(conf)), deadline_s,
               lambda: f"the processes of {conf} to end: {processes_of(conf)}", interval=0.1)


def killed_some(processes: list[psutil.Process]) -> bool:
    for process in processes:
        kill_with_group(process.pid)
    psutil.wait_procs(processes, timeout=2)
    return bool(processes)


def owner_alive(record: dict) -> bool:
    try:
        return psutil.Process(record["owner"]).create_time() == record["owner_started"]
    except psutil.NoSuchProcess:
        return False


def stop_stale_clusters(registry: Path = REGISTRY) -> list[str]:
    """Stop the clusters whose owner is gone (a test run killed before it could stop them); the
    configurations stopped. Clusters of a run still going (another xdist worker) are left."""
    stopped = []
    for pid_file in sorted(registry.glob("*.json")):
        try:
            record = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            continue  # being written by its owner at this moment
        if owner_alive(record):
            continue
        stop_processes_of(record["conf"])
        pid_file.unlink(missing_ok=True)
        stopped.append(record["conf"])
    return stopped


class SlurmCluster:
    def __init__(self, folder: Path, gpus: int = 2, cpus: int | None = None,
                 registry: Path = REGISTRY):
        self.folder = folder
        self.gpus = gpus
        self.cpus = cpus or SLOTS_PER_CORE * (os.cpu_count() or 2)
        self.node = socket.gethostname()
        self.processes: list[subprocess.Popen] = []
        self.registry = registry
        self.pid_file = registry / f"{os.getpid()}-{folder.name}.json"
        self._stop_lock = threading.RLock()  # a signal may come while it stops

    @property
    def env(self) -> dict[str, str]:
        """What a console (or a test) needs to use this cluster's commands."""
        return {"SLURM_CONF": str(self.folder / "slurm.conf")}

    def start(self, timeout: float = 60) -> SlurmCluster:
        stop_stale_clusters(self.registry)
        self._register()
        f = self.folder
        for sub in ("state", "spool", "munge"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        (f / "munge").chmod(0o755)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        for index in range(self.gpus):
            device = f / f"gpu{index}"
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a /dev/null twin
        ctld_port, d_port = free_ports(2)
        socket_path = f / "munge" / "munge.sock"
        (f / "slurm.conf").write_text(self.slurm_conf(ctld_port, d_port, socket_path))
        (f / "gres.conf").write_text(
            f"NodeName={self.node} Name=gpu File={f}/gpu[0-{self.gpus - 1}]\n")
        self._spawn([sbin("munged"), "-F", "--force", f"--socket={socket_path}",
                     f"--key-file={key}", f"--pid-file={f}/munge/munged.pid",
                     f"--log-file={f}/munge/munged.log", f"--seed-file={f}/munge/seed"], "munged")
        self._wait(lambda: socket_path.exists(), timeout, "munged's socket")
        self._spawn([sbin("slurmctld"), "-D", "-i"], "slurmctld")
        self._spawn([sbin("slurmd"), "-D", "-N", self.node], "slurmd")
        self._wait(self._node_idle, timeout, "the Slurm node to be idle")
        return self

    def slurm_conf(self, ctld_port: int, d_port: int, socket_path: Path) -> str:
        f = self.folder
        return "\n".join([
            "ClusterName=traindeck-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={ctld_port}", f"SlurmdPort={d_port}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={socket_path}",
            f"StateSaveLocation={f}/state", f"SlurmdSpoolDir={f}/spool",
            f"SlurmctldPidFile={f}/slurmctld.pid", f"SlurmdPidFile={f}/slurmd.pid",
            f"SlurmctldLogFile={f}/slurmctld.log", f"SlurmdLogFile={f}/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1",
            "SlurmdParameters=config_overrides",
            "GresTypes=gpu", "ReturnToService=2", "MinJobAge=600", "KillWait=5",
            "InactiveLimit=0", "SlurmctldTimeout=30", "SlurmdTimeout=30",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} Boards=1 "
            f"SocketsPerBoard=1 CoresPerSocket={self.cpus} ThreadsPerCore=1 RealMemory=4000 "
            f"Gres=gpu:{self.gpus} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def _spawn(self, argv: list[str], name: str) -> None:
        out = open(self.folder / f"{name}.out", "wb")
        self.processes.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                               env={**os.environ, **self.env},
                                               start_new_session=True))

    def _node_idle(self) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited: "
                                   f"{self.log_tail(Path(process.args[0]).name)}")
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                              env={**os.environ, **self.env})
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def log_tail(self, name: str) -> str:
        try:
            return (self.folder / f"{name}.out").read_text()[-1500:]
        except OSError:
            return ""

    @staticmethod
    def _wait(predicate, timeout: float, what: str) -> None:
        wait_until(predicate, timeout, f"the Slurm test cluster: {what}", interval=0.3)

    def _register(self) -> None:
        """Before any daemon starts: a pid file for the next run, and stops at exit and on
        SIGTERM or SIGINT for this one."""
        self.registry.mkdir(parents=True, exist_ok=True)
        owner = psutil.Process()
        self.pid_file.write_text(json.dumps({"conf": self.env["SLURM_CONF"], "owner": owner.pid,
                                             "owner_started": owner.create_time()}))
        atexit.register(self.stop)
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                previous = signal.getsignal(number)
                if previous != signal.SIG_IGN:  # ignored (a run started in the background): no end
                    signal.signal(number, self._stop_then(previous))

    def _stop_then(self, previous):
        def on_signal(number, frame):
            self.stop()
            signal.signal(number, previous)
            if callable(previous):
                previous(number, frame)  # SIGINT: KeyboardInterrupt, as pytest expects
            else:
                os.kill(os.getpid(), number)  # the default: end as the signal ends a process
        return on_signal

    def stop(self) -> None:
        """Cancel the jobs, end the daemons, then end whatever of the cluster is left (job
        steps, trainers); idempotent, as it runs from the fixture, atexit and signals."""
        with self._stop_lock:
            if not self.pid_file.exists():
                return
            try:
                subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True,
                               env={**os.environ, **self.env}, timeout=10)
            except subprocess.TimeoutExpired:
                pass  # a busy slurmctld: its jobs' processes are ended by SLURM_CONF below
            for process in reversed(self.processes):
                process.terminate()
            for process in reversed(self.processes):
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
            stop_processes_of(self.env["SLURM_CONF"])
            self.pid_file.unlink(missing_ok=True)
            atexit.unregister(self.stop)
