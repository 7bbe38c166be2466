"""Who may do what: authorization (everyone sees every job, only its owner or an admin acts on
it), quotas, where a user's models and datasets may come from, and what of another user's job a
person is shown (its table row and charts, never its paths, logs or error details)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config import JobConfig
from engine.console.people.notify import check_job_url
from engine.console.people.users import NotYourJob, QuotaExceeded, User, Users, user_folder_name
from engine.console.records.job import Job, JobStatus
from engine.console.running.devices import DevicePool
from engine.sources import SourceRules

HIDDEN = "details are visible to its owner and admins"


class Access:
    def __init__(self, users: Users, workspace: Path, uploads_dir: Path,
                 data_roots: tuple[Path, ...] = (),
                 find_job: Callable[[str], Job | None] = lambda job_id: None):
        self.users = users
        self.workspace = workspace
        self.uploads_dir = uploads_dir
        self.data_roots = tuple(data_roots)
        self.find_job = find_job
        # One person's console (no logins, no data roots) reads any local path, as before.
        self.confined = users.enabled or bool(self.data_roots)

    # ---- acting on jobs --------------------------------------------------------------------------

    @staticmethod
    def is_owner_or_admin(job_owner: str, user: User) -> bool:
        # The role decides; no missing user means admin (without logins the caller is
        # LOCAL_USER, an admin).
        return user.is_admin or user.name == job_owner

    def authorize(self, job: Job, user: User, action: str) -> None:
        if not self.is_owner_or_admin(job.owner, user):
            raise NotYourJob(f"not your job: {job.job_id} belongs to {job.owner}; only its owner "
                             f"or an admin may {action} it")

    def authorize_use(self, job: Job, user: User, action: str) -> None:
        """Trying a job's model, or training on it: its owner, an admin, or anyone if shared."""
        if not job.shared and not self.is_owner_or_admin(job.owner, user):
            raise NotYourJob(f"not your job: {job.job_id} belongs to {job.owner}; only its owner "
                             f"or an admin may {action} it, or anyone once {job.owner} shares it")

    def owner_of(self, job: Job) -> User:
        """The job's owner, role and quotas (an admin resuming it spends the owner's quota)."""
        try:
            return self.users.get(job.owner)
        except NotYourJob:  # a job from before logins were enabled, or a removed user
            return User(job.owner, quotas=self.users.quotas_of(job.owner))

    # ---- sources --------------------------------------------------------------------------------

    def source_rules(self, user: User) -> SourceRules:
        def may_use_job(job_id: str) -> bool:
            job = self.find_job(job_id)
            return job is not None and (job.shared or self.is_owner_or_admin(job.owner, user))

        uploads = (self.uploads_dir,) if user.is_admin else \
            (self.uploads_dir / user_folder_name(user.name),)
        return SourceRules(self.confined, self.data_roots, self.workspace, uploads, may_use_job)

    # ---- quotas ---------------------------------------------------------------------------------

    def check_may_run(self, settings: JobConfig, user: User, devices: DevicePool) -> None:
        """What `user` may run: its size within their quotas, its webhook where they may send."""
        self.check_job_size(settings, user, devices.capacity, devices.describe_capacity,
                            devices.spans_nodes)
        check_job_url(settings.notify_url, self.users.enabled, user.is_admin)

    def check_job_size(self, settings: JobConfig, user: User, gpu_capacity: float,
                       describe_capacity: Callable[[], str], spans_nodes: bool = False) -> None:
        quotas = user.quotas
        problems = []
        if settings.gpus > gpu_capacity:
            problems.append(f"gpus: this machine has {describe_capacity()}; the job asks for "
                            f"{settings.gpus}")
        if settings.nodes > 1 and not spans_nodes:
            problems.append(f"nodes: this console runs jobs on this machine only; {settings.nodes} "
                            f"nodes need a cluster (python app.py --cluster slurm)")
        if settings.preempt and not user.is_admin:
            problems.append(f"preempt: only admins may pause other jobs to make room; "
                            f"{user.name} is a {user.role}")
        checks = (("max_gpus", settings.gpus * settings.nodes, "GPUs"),
                  ("max_steps", settings.max_steps, "max_steps"),
                  ("max_epochs", settings.num_train_epochs if settings.max_steps <= 0 else None,
                   "num_train_epochs"))
        for quota, asked, what in checks:
            limit = quotas.get(quota)
            if limit is not None and asked is not None and asked > limit:
                problems.append(f"quota {quota}: {user.name} may use at most {limit}; the job "
                                f"asks for {what} {asked}")
        if problems:
            raise QuotaExceeded("\n".join(problems))

    @staticmethod
    def check_queue_quota(user: User, jobs: list[Job], adding: int = 1) -> None:
        limit = user.quotas.get("max_queued_jobs")
        queued = sum(j.owner == user.name and j.status == JobStatus.QUEUED for j in jobs)
        if limit is not None and queued + adding > limit:
            more = f" and asks for {adding} more" if adding > 1 else ""
            raise QuotaExceeded(f"quota max_queued_jobs: {user.name} has {queued} jobs queued"
                                f"{more} (quota {limit}); wait for some to start or cancel one")

    @staticmethod
    def check_job_count(user: User, jobs: list[Job], adding: int = 1) -> None:
        """Every job a user holds counts, paused and finished ones too: submitting then pausing
        must not make jobs without end."""
        limit = user.quotas.get("max_jobs")
        held = sum(j.owner == user.name for j in jobs)
        if limit is not None and held + adding > limit:
            more = f" and asks for {adding} more" if adding > 1 else ""
            raise QuotaExceeded(f"quota max_jobs: {user.name} holds {held} jobs{more} (quota "
                                f"{limit}); delete finished ones (/delete_job) to make room")

    def check_holdings(self, user: User, jobs: list[Job], adding: int = 1) -> None:
        """Whether `user` may hold and queue `adding` more jobs beside `jobs`."""
        self.check_job_count(user, jobs, adding)
        self.check_queue_quota(user, jobs, adding)

    # ---- what a person is shown ------------------------------------------------------------------

    def summary_for(self, summary: dict[str, Any], user: User) -> dict[str, Any]:
        if self.is_owner_or_admin(summary["owner"], user):
            return summary
        return {**summary, "model": _shown_source(summary.get("model")),
                "dataset": _shown_source(summary.get("dataset")),
                "error": f"{summary['status']}: {HIDDEN}" if summary.get("error") else None}

    def job_for(self, data: dict[str, Any], user: User) -> dict[str, Any]:
        if self.is_owner_or_admin(data["owner"], user):
            return data
        config = dict(data["config"])
        for key in ("model", "dataset", "eval_dataset"):
            if key in config:
                config[key] = _shown_source(config[key])
        if config.get("notify_url"):
            config["notify_url"] = HIDDEN  # a webhook URL is a secret (Slack's are)
        return {**data, "config": config, "job_dir": None, "command": None,
                "notify_error": HIDDEN if data.get("notify_error") else None,
                "error": f"{data['status']}: {HIDDEN}" if data.get("error") else None,
                "attempts": [{k: v for k, v in a.items() if k != "error"}
                             for a in data["attempts"]]}


def _shown_source(value: Any) -> Any:
    """A hub id as it is; a local path by its last part only."""
    if isinstance(value, str) and value.startswith("/"):
        return Path(value).name
    return value
