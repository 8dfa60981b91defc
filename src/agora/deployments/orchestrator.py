"""Reconciles what the database wants with what the backends report.

One cycle: load every active deployment, poll each backend once for all of its jobs, let
``lifecycle.decide`` pick each deployment's next step, and apply it. Cycles run every
``reconcile_interval`` seconds and at once when something changes (a new deployment, a stop, an
announcement). Only one process reconciles: it holds a PostgreSQL advisory lock, or a file lock
next to an SQLite database. Everything it needs is in the database, so a restarted control plane
carries on with the jobs that kept running meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.orm import Session, selectinload

from agora.aio import wait_set
from agora.db import utcnow
from agora.deployments.backends import Backend, BackendError, JobSpec, JobStatus
from agora.deployments.lifecycle import Snapshot, Step, decide
from agora.deployments.templates import Resources, render
from agora.errors import InvalidInput
from agora.models import Deployment, DeploymentAttempt, DeploymentEvent, DeploymentState
from agora.runtime import Runtime
from agora.services import audit
from agora.services.context import Ctx

log = logging.getLogger("agora.orchestrator")
ACTIVE = [s for s in DeploymentState if not s.terminal]
_LOCK_ID = 0x61676F7261  # "agora"


class Orchestrator:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http = httpx.AsyncClient(timeout=5)
        self._lock: Any = None
        from agora.gateway.autoscaler import Autoscaler

        self.autoscaler = Autoscaler(runtime)

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.rt.wake = self.wake
        try:
            while not await asyncio.to_thread(self._try_lead):
                await asyncio.sleep(5)
            log.info("orchestrator leads")
            while True:
                try:
                    await self.tick()
                except Exception:  # one bad cycle must not stop reconciliation
                    log.exception("reconcile cycle failed")
                await wait_set(self._event, self.rt.settings.reconcile_interval)
                self._event.clear()
        finally:
            self.rt.wake = lambda: None
            await self._http.aclose()
            await asyncio.to_thread(self._release)

    # --- leadership ---------------------------------------------------------------------------

    def _try_lead(self) -> bool:
        if self.rt.settings.is_sqlite:
            path = self.rt.settings.data_dir / "orchestrator.lock"
            fh = open(path, "w")  # noqa: SIM115 - held for the life of the orchestrator
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                return False
            self._lock = fh
            return True
        conn = self.rt.db.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": _LOCK_ID}).scalar()
        conn.commit()
        if got:
            self._lock = conn
            return True
        conn.close()
        return False

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # closing the file or the connection releases the lock

    # --- one cycle ----------------------------------------------------------------------------

    async def tick(self) -> None:
        try:
            await asyncio.to_thread(self.autoscaler.step)
        except Exception:  # scaling trouble must not stop reconciliation
            log.exception("autoscaling failed")
        snapshots = await asyncio.to_thread(self._load)
        statuses = await self._poll(snapshots)
        now = utcnow()
        changed = False
        for snap in snapshots:
            status = statuses.get((snap.backend, snap.job_id)) if snap.job_id else None
            step = decide(snap, status, now)
            if step != Step():
                try:
                    await self._apply(snap, step)
                except Exception:  # one deployment's trouble must not stop the others
                    log.exception("cannot apply %s to deployment %s", step, snap.id)
                    continue
                changed = changed or step.state is not None or step.submit
        if changed:
            self._event.set()  # one change often enables the next: look again at once

    def _load(self) -> list[Snapshot]:
        with self.rt.db.session() as db:
            deps = db.scalars(
                select(Deployment)
                .where(Deployment.state.in_(ACTIVE))
                .options(selectinload(Deployment.attempts))
            ).all()
            return [self._snapshot(d) for d in deps]

    def _snapshot(self, d: Deployment) -> Snapshot:
        attempt = d.attempts[-1] if d.attempts and d.attempts[-1].ended_at is None else None
        backend = attempt.backend if attempt else None
        config = self.rt.backends[backend].config if backend in self.rt.backends else None
        template = self.rt.templates.get(d.template)
        service_timeout = template.service.start_timeout if template and template.service else 300
        return Snapshot(
            id=d.id,
            kind=d.kind,
            state=d.state,
            desired=d.desired,
            state_since=d.state_since,
            address=d.address,
            backend=backend,
            job_id=attempt.job_id if attempt else None,
            submitted_at=attempt.submitted_at if attempt else None,
            start_timeout=config.start_timeout if config else 600,
            backend_known=backend is None or config is not None,
            service_timeout=service_timeout,
        )

    async def _poll(
        self, snapshots: list[Snapshot]
    ) -> dict[tuple[str | None, str | None], JobStatus]:
        by_backend: dict[str, list[str]] = defaultdict(list)
        for s in snapshots:
            if s.backend and s.job_id:
                by_backend[s.backend].append(s.job_id)
        out: dict[tuple[str | None, str | None], JobStatus] = {}
        for name, ids in by_backend.items():
            backend = self.rt.backends.get(name)
            if backend is None:
                continue
            try:
                for job_id, status in (await backend.poll(ids)).items():
                    out[(name, job_id)] = status
            except Exception as exc:  # one backend's trouble must not stop the others
                log.warning("cannot poll backend %s: %s", name, exc)
        return out

    # --- applying a step ----------------------------------------------------------------------

    async def _apply(self, snap: Snapshot, step: Step) -> None:
        backend = self.rt.backends.get(snap.backend or "")
        if step.cancel and backend and snap.job_id:
            try:
                await backend.cancel(snap.job_id, force=step.force)
            except BackendError as exc:
                log.warning("cannot cancel %s on %s: %s", snap.job_id, snap.backend, exc)
        if step.submit:
            await self._submit(snap.id)
            return
        if step.failover:
            await asyncio.to_thread(self._end_attempt, snap.id, step.failover)
            await self._submit(snap.id)
            return
        if step.probe and snap.address:
            if await self._ready(snap):
                await asyncio.to_thread(
                    self._transition,
                    snap.id,
                    DeploymentState.running,
                    "ready: answering at its readiness path",
                    None,
                )
            return
        if step.state is not None:
            message = step.message
            if step.with_logs and backend and snap.job_id:
                message += _last_lines(await _safe_logs(backend, snap.job_id))
            await asyncio.to_thread(self._transition, snap.id, step.state, message, step.exit_code)

    async def _ready(self, snap: Snapshot) -> bool:
        with self.rt.db.session() as db:
            dep = db.get(Deployment, snap.id)
            if dep is None:
                return False
            path = dep.readiness_path or "/"
            prefix = "" if dep.strip_prefix else f"/d/{dep.id}"
            token = self.rt.keyring.decrypt(dep.token)
        try:
            r = await self._http.get(
                f"http://{snap.address}{prefix}{path}",
                headers={"Authorization": f"token {token}"},
                timeout=2,
            )
        except httpx.HTTPError:
            return False
        return r.status_code < 400

    async def _submit(self, dep_id: str) -> None:
        """Submit to the next backend in the deployment's list; fail when none is left."""
        prepared = await asyncio.to_thread(self._prepare, dep_id)
        if prepared is None:
            return
        backend, spec, number = prepared
        at = utcnow()
        try:
            job_id = await backend.submit(spec)
        except BackendError as exc:
            await asyncio.to_thread(
                self._record_attempt, dep_id, number, backend.name, None, str(exc), at
            )
            await self._submit(dep_id)  # the next backend, or failure
            return
        await asyncio.to_thread(
            self._record_attempt, dep_id, number, backend.name, job_id, None, at
        )

    def _prepare(self, dep_id: str) -> tuple[Backend, JobSpec, int] | None:
        with self.rt.db.session(write=True) as db:
            dep = db.get(Deployment, dep_id)
            if dep is None or dep.state.terminal or dep.desired == "stopped":
                return None
            number = len(dep.attempts) + 1
            tried = {a.backend for a in dep.attempts}
            remaining = [b for b in dep.backends if b not in tried and b in self.rt.backends]
            if not remaining:
                reasons = "; ".join(f"{a.backend}: {a.error}" for a in dep.attempts if a.error)
                self._set_state(
                    db,
                    dep,
                    DeploymentState.failed,
                    f"no backend could run it ({reasons or 'none configured'})",
                    None,
                )
                db.commit()
                return None
            backend = self.rt.backends[remaining[0]]
            try:
                spec = self._spec(dep, backend)
            except InvalidInput as exc:
                self._set_state(db, dep, DeploymentState.failed, exc.detail, None)
                db.commit()
                return None
            return backend, spec, number

    def _spec(self, dep: Deployment, backend: Backend) -> JobSpec:
        template = self.rt.templates.get(dep.template)
        if template is None:
            raise InvalidInput(f"its template '{dep.template}' no longer exists")
        values = dict(dep.inputs)
        if dep.secret_inputs:
            values.update(json.loads(self.rt.keyring.decrypt(dep.secret_inputs)))
        project = dep.project.name
        rendered = render(template, values, {"id": dep.id, "project": project})
        options = backend.config.options
        control = str(options.get("control_plane_url") or self.rt.settings.public_url)
        token = self.rt.keyring.decrypt(dep.token)
        work_root = Path(options.get("work_root") or self.rt.settings.data_dir)
        env = {
            **rendered.env,
            "AGORA_DEPLOYMENT_ID": dep.id,
            "AGORA_PROJECT": project,
            "AGORA_PROJECT_DIR": str(work_root / "projects" / project),
            "AGORA_BASE_URL": f"/d/{dep.id}/",
            "AGORA_SERVICE_TOKEN": token,
            "AGORA_PYTHON": str(options.get("python") or sys.executable),
        }
        return JobSpec(
            deployment_id=dep.id,
            kind=dep.kind,
            script=rendered.script,
            env=env,
            resources=Resources(
                dep.cpus, dep.memory_mb, dep.gpus, dep.gpu_type, dep.time_limit_minutes
            ),
            project=project,
            announce_url=f"{control}/api/v1/deployments/{dep.id}/announce"
            if dep.kind == "service"
            else None,
            token=token,
        )

    def _record_attempt(
        self,
        dep_id: str,
        number: int,
        backend: str,
        job_id: str | None,
        error: str | None,
        submitted_at: dt.datetime,
    ) -> None:
        with self.rt.db.session(write=True) as db:
            dep = db.get(Deployment, dep_id)
            if dep is None:
                return
            now = utcnow()
            db.add(
                DeploymentAttempt(
                    deployment_id=dep_id,
                    number=number,
                    backend=backend,
                    job_id=job_id,
                    submitted_at=submitted_at,
                    ended_at=now if error else None,
                    error=error,
                )
            )
            ctx = self._ctx(db)
            if error:
                db.add(
                    DeploymentEvent(
                        deployment_id=dep_id,
                        state=dep.state.value,
                        message=f"backend '{backend}' refused it: {error}",
                    )
                )
                audit.record(
                    ctx,
                    "deployment.submit",
                    f"deployment:{dep_id}",
                    outcome="failure",
                    actor="orchestrator",
                    project_id=dep.project_id,
                    project=dep.project.name,
                    details={"backend": backend, "error": error[:500]},
                )
            else:
                self._set_state(
                    db,
                    dep,
                    DeploymentState.submitted,
                    f"submitted to '{backend}' as job {job_id}",
                    None,
                )
                audit.record(
                    ctx,
                    "deployment.submit",
                    f"deployment:{dep_id}",
                    actor="orchestrator",
                    project_id=dep.project_id,
                    project=dep.project.name,
                    details={"backend": backend, "job_id": job_id},
                )
            db.commit()

    def _end_attempt(self, dep_id: str, error: str) -> None:
        with self.rt.db.session(write=True) as db:
            dep = db.get(Deployment, dep_id)
            if dep is None or not dep.attempts:
                return
            attempt = dep.attempts[-1]
            attempt.ended_at, attempt.error = utcnow(), error
            dep.address = dep.started_at = None  # the next backend's job starts afresh
            db.add(
                DeploymentEvent(
                    deployment_id=dep_id,
                    state=dep.state.value,
                    message=f"gave up on backend '{attempt.backend}': {error}",
                )
            )
            dep.state, dep.state_since = DeploymentState.pending, utcnow()
            db.commit()

    def _transition(
        self, dep_id: str, state: DeploymentState, message: str, code: int | None
    ) -> None:
        with self.rt.db.session(write=True) as db:
            dep = db.get(Deployment, dep_id)
            if dep is None or dep.state.terminal:
                return
            self._set_state(db, dep, state, message, code)
            db.commit()

    def _set_state(
        self, db: Session, dep: Deployment, state: DeploymentState, message: str, code: int | None
    ) -> None:
        now = utcnow()
        dep.state, dep.state_since = state, now
        db.add(DeploymentEvent(deployment_id=dep.id, state=state.value, message=message))
        # Started: when the job began to run (a service's process, before it is ready), the
        # moment its backend's time limit counts from.
        if state in (DeploymentState.starting, DeploymentState.running) and dep.started_at is None:
            dep.started_at = now
        if state.terminal:
            dep.ended_at, dep.reason, dep.exit_code = now, message, code
            dep.address = None
            if dep.attempts and dep.attempts[-1].ended_at is None:
                dep.attempts[-1].ended_at = now
            audit.record(
                self._ctx(db),
                f"deployment.{state.value}",
                f"deployment:{dep.id}",
                outcome="success" if state == DeploymentState.stopped else "failure",
                actor="orchestrator",
                project_id=dep.project_id,
                project=dep.project.name,
                details={"reason": message[:500], "exit_code": code},
            )

    def _ctx(self, db: Session) -> Ctx:
        return Ctx(db=db, runtime=self.rt, client_addr=None)


async def _safe_logs(backend: Backend, job_id: str) -> str:
    try:
        return await backend.logs(job_id, 4096)
    except BackendError:
        return ""


def _last_lines(text_: str, n: int = 5) -> str:
    lines = [line for line in text_.strip().splitlines() if line.strip()][-n:]
    return "; last log lines: " + " | ".join(line[:200] for line in lines) if lines else ""
