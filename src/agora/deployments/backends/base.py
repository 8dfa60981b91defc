"""The backend contract, small enough to read in a minute.

A backend implements five coroutines; the orchestrator owns timeouts, retries, failover,
persistence and audit. Job ids are strings the backend chooses; the core stores them and hands
them back, so a restarted control plane adopts running jobs by id alone.

- ``submit(spec) -> job_id``: start the job, or raise ``SubmitRefused`` with the backend's
  reason ("invalid partition 'gpu'"). Never wait for the job to start.
- ``poll(job_ids) -> {job_id: JobStatus}``: the state of many jobs in one round trip. An id the
  backend no longer knows maps to ``GONE``; when the backend cannot tell right now (the
  controller does not answer), ``UNKNOWN`` keeps the job alive.
- ``logs(job_id, max_bytes) -> str``: the tail of the job's output.
- ``cancel(job_id, force)``: ask the job to end (SIGTERM / scancel); ``force`` kills it.

A service learns its port on its node and announces ``host:port`` to the control plane itself
(see ``agora.deployments.runner``); backends do not need to know it.
"""

from __future__ import annotations

import abc
import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from agora.deployments.templates import Resources
from agora.settings import BackendConfig, Settings


def job_environment() -> dict[str, str]:
    """The environment jobs start from: this process's, without Agora's own settings.

    The control plane's variables carry its secrets (AGORA_SECRET_KEY, the database URL with
    its password, the OIDC client secret); a job must never see them.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    EXITED = "exited"  # ended on its own; see exit_code
    CANCELLED = "cancelled"
    FAILED = "failed"  # the backend ended it (node failure, time limit, out of memory…)
    UNKNOWN = "unknown"
    GONE = "gone"

    @property
    def ended(self) -> bool:
        return self in (JobState.EXITED, JobState.CANCELLED, JobState.FAILED, JobState.GONE)


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    exit_code: int | None = None
    #: The backend's own words, e.g. Slurm's pending reason or why it ended the job.
    reason: str | None = None
    #: The node it runs on, where the backend knows it: a service must announce this host.
    node: str | None = None


@dataclass(frozen=True)
class JobSpec:
    deployment_id: str
    kind: str  # "service" or "job"
    script: str
    env: dict[str, str]
    resources: Resources
    project: str
    #: Where a service announces its address, and the token it authenticates with.
    announce_url: str | None = None
    token: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def job_name(self) -> str:
        return f"agora-{self.deployment_id}"


class BackendError(Exception):
    """The backend could not be asked (a command failed, SSH is down)."""


class SubmitRefused(BackendError):
    """The backend will not take this job; the message says why, in the backend's words."""


class Backend(abc.ABC):
    kind: ClassVar[str]

    def __init__(self, config: BackendConfig, settings: Settings) -> None:
        self.config = config
        self.name = config.name
        self.settings = settings

    @abc.abstractmethod
    async def submit(self, spec: JobSpec) -> str: ...

    @abc.abstractmethod
    async def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]: ...

    @abc.abstractmethod
    async def logs(self, job_id: str, max_bytes: int = 65536) -> str: ...

    @abc.abstractmethod
    async def cancel(self, job_id: str, force: bool = False) -> None: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (SSH masters and the like)."""

    def check_resources(self, r: Resources) -> None:
        """Refuse what this backend can never run, before anything is submitted."""
        c = self.config
        if r.cpus > c.max_cpus:
            raise SubmitRefused(
                f"asks for {r.cpus} CPUs; backend '{c.name}' runs at most {c.max_cpus}"
            )
        if r.memory_mb > c.max_memory_mb:
            raise SubmitRefused(
                f"asks for {r.memory_mb} MiB; backend '{c.name}' runs at most {c.max_memory_mb} MiB"
            )
        if r.gpus > c.max_gpus:
            raise SubmitRefused(
                f"asks for {r.gpus} GPUs; backend '{c.name}' has at most {c.max_gpus}"
            )


def run_dir(settings: Settings, job_key: str) -> Path:
    return settings.runs_dir / job_key
