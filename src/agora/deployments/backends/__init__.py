"""Backends run deployments somewhere: local processes, a Slurm cluster (later Kubernetes)."""

from __future__ import annotations

from agora.deployments.backends.base import (
    Backend,
    BackendError,
    JobSpec,
    JobState,
    JobStatus,
    SubmitRefused,
)
from agora.settings import BackendConfig, Settings


def build(config: BackendConfig, settings: Settings) -> Backend:
    """The backend object for one configured backend."""
    if config.kind == "local":
        from agora.deployments.backends.local import LocalBackend

        return LocalBackend(config, settings)
    from agora.deployments.backends.slurm import SlurmBackend

    backend: Backend = SlurmBackend(config, settings)
    return backend


__all__ = [
    "Backend",
    "BackendError",
    "JobSpec",
    "JobState",
    "JobStatus",
    "SubmitRefused",
    "build",
]
