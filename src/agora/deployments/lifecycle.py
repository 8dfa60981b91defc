"""The deployment state machine: one pure function decides the next step; the orchestrator
applies it. Keeping the decision free of I/O makes every transition testable on its own."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from agora.deployments.backends import JobState, JobStatus
from agora.models import DeploymentState as S

#: Seconds a stopping deployment gets before it is killed.
STOP_GRACE = 15


@dataclass(frozen=True)
class Snapshot:
    """What the orchestrator knows of one active deployment at the start of a cycle."""

    id: str
    kind: str
    state: S
    desired: str
    state_since: dt.datetime
    address: str | None
    backend: str | None  # of the current attempt
    job_id: str | None
    submitted_at: dt.datetime | None
    start_timeout: int  # of the current backend: how long it may stay queued
    service_timeout: int  # of the template: how long a service may take to become ready
    backend_known: bool = True  # False once its backend left the configuration


@dataclass(frozen=True)
class Step:
    state: S | None = None
    message: str = ""
    submit: bool = False
    cancel: bool = False
    force: bool = False
    #: Give up on the current backend for this reason and try the next one.
    failover: str | None = None
    probe: bool = False
    #: Append the job's last log lines to the message.
    with_logs: bool = False
    exit_code: int | None = None


NOTHING = Step()


def decide(s: Snapshot, status: JobStatus | None, now: dt.datetime) -> Step:
    if s.job_id is not None and not s.backend_known:
        return Step(
            state=S.failed if s.desired != "stopped" else S.stopped,
            message=f"its backend '{s.backend}' is no longer configured; its job may still run",
        )
    if s.desired == "stopped":
        return _stopping(s, status, now)
    if s.state == S.pending:
        return Step(submit=True)
    if status is None or status.state == JobState.UNKNOWN:
        return NOTHING
    waited = (now - s.state_since).total_seconds()
    if status.state == JobState.QUEUED:
        queued = (now - (s.submitted_at or s.state_since)).total_seconds()
        if queued > s.start_timeout:
            why = f" ({status.reason})" if status.reason else ""
            return Step(cancel=True, failover=f"did not start within {s.start_timeout} s{why}")
        return NOTHING
    if status.state == JobState.RUNNING:
        if s.kind == "job":
            return Step(state=S.running, message="running") if s.state == S.submitted else NOTHING
        if s.state == S.submitted:
            return Step(state=S.starting, message="process started; waiting for the service")
        if s.state == S.starting:
            if waited > s.service_timeout:
                return Step(
                    cancel=True,
                    failover=f"the service was not ready within {s.service_timeout} s",
                )
            if s.address and status.node:
                host = s.address.rsplit(":", 1)[0].strip("[]")
                if not same_host(host, status.node):
                    # Only the job's own node may be reached through the platform.
                    return Step(
                        state=S.failed,
                        cancel=True,
                        force=True,
                        message=f"it announced {host}, which is not its node ({status.node})",
                    )
                return Step(probe=True)
        return NOTHING
    return _ended(s, status)


def same_host(announced: str, node: str) -> bool:
    """Whether an announced host names the node (short and fully qualified names match)."""
    a, n = announced.lower().rstrip("."), node.lower().rstrip(".")
    return a == n or a.split(".")[0] == n.split(".")[0] and not a.replace(".", "").isdigit()


def _stopping(s: Snapshot, status: JobStatus | None, now: dt.datetime) -> Step:
    if s.job_id is None or (status is not None and status.state.ended):
        return Step(state=S.stopped, message="stopped")
    if s.state != S.stopping:
        return Step(state=S.stopping, cancel=True, message="stopping")
    if (now - s.state_since).total_seconds() > STOP_GRACE:
        return Step(cancel=True, force=True)
    return NOTHING


def _ended(s: Snapshot, status: JobStatus) -> Step:
    step = _end_of(s, status)
    if status.state in (JobState.EXITED, JobState.FAILED):
        # Harmless after a real end; ends whatever a job left behind (or a forged exit record).
        step = replace(step, cancel=True, force=True)
    return step


def _end_of(s: Snapshot, status: JobStatus) -> Step:
    code = status.exit_code
    if status.state == JobState.EXITED:
        if status.reason == "time limit reached":
            return Step(state=S.stopped, message="stopped at its time limit", exit_code=code)
        if s.kind == "job" and code == 0:
            return Step(state=S.stopped, message="completed (exit code 0)", exit_code=0)
        return Step(
            state=S.failed,
            message=f"process exited with code {code}",
            with_logs=True,
            exit_code=code,
        )
    if status.state == JobState.CANCELLED:
        why = f": {status.reason}" if status.reason else ""
        return Step(state=S.failed, message=f"cancelled outside Agora{why}", with_logs=True)
    if status.state == JobState.FAILED:
        return Step(
            state=S.failed,
            message=status.reason or f"backend '{s.backend}' ended it",
            with_logs=True,
            exit_code=code,
        )
    why = f": {status.reason}" if status.reason else ""
    return Step(state=S.failed, message=f"vanished from backend '{s.backend}'{why}")
