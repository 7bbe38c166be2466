"""After a console restart: follow again every job the database says is running, with the
devices it held. A trainer that survived the restart is re-attached; one that ended while no
console was watching is reaped by the next scheduler round (its exit record, or "interrupted")."""

from __future__ import annotations

import logging

from engine.console.records.job import Job
from engine.console.records.workspace import Workspace
from engine.console.running.devices import DevicePool
from engine.console.running.supervisor import Supervisor

log = logging.getLogger("traindeck.engine")


def reattach(running: list[Job], supervisor: Supervisor, devices: DevicePool,
             workspace: Workspace, clustered: bool) -> None:
    for job in running:
        trainer = supervisor.attach(job, workspace.job_paths(job.job_id))
        slots = (job.attempts[-1].get("devices") if job.attempts else None) or []
        if clustered:
            devices.take(job.job_id, job.config.gpus * job.config.nodes)
        else:
            devices.assigned[job.job_id] = slots or devices.free()[:1]
        log.info("job %s: %s", job.job_id,
                 "re-attached" if trainer.alive_at_attach else "trainer gone, reaping")
