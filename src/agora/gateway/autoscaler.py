"""Scales each gateway model's replicas (deployments) to the load the gateways report.

Runs in the orchestrator's leader, once per reconcile cycle, and at once when a gateway reports
a request waiting for a model with no replica (scale from zero). Per model:

* **up**: ``ceil((in flight + queued) / target_inflight)`` replicas, at most ``max_replicas``,
  at least ``min_replicas``, and at least one while requests came in the last ``idle_seconds``;
* **down**: replicas above that number are stopped once it has held for ``idle_seconds``;
  with ``min_replicas = 0`` an idle model scales to zero; a replica running a training (model
  servers report theirs to the gateways' health checks) is never stopped for this;
* **replacement**: a replica whose backend time limit ends within ``replace_before_seconds`` gets
  a fresh replica; once that one is ready the old one drains (the gateways stop sending it new
  requests) and is stopped when no gateway has a request on it;
* **backoff**: after replicas fail to start, the next try waits 5 s, 10 s, 20 s … (at most 5 min).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from agora.db import utcnow
from agora.errors import AgoraError
from agora.models import (
    Deployment,
    DeploymentState,
    GatewayLoad,
    GatewayModel,
    User,
)
from agora.runtime import Runtime
from agora.services import deployments
from agora.services.context import Ctx, Principal

log = logging.getLogger("agora.autoscaler")
_FAILURE_WINDOW = dt.timedelta(minutes=10)


def replacement_due_at(
    started: dt.datetime,
    ready: dt.datetime,
    time_limit_minutes: int,
    replace_before_seconds: float,
) -> dt.datetime | None:
    """When a replica whose job began at ``started`` and was ready at ``ready`` needs its
    replacement: its time limit's end less the lead, which is ``replace_before_seconds`` or, for
    a replica slow to start, 1.5 × its start-up time + 10 s (a replacement takes as long).
    None for a replica whose replacement would be due at once too (an endless chain)."""
    startup = max(0.0, (ready - started).total_seconds())
    lead = max(replace_before_seconds, 1.5 * startup + 10)
    if time_limit_minutes * 60 <= 2 * lead:
        return None
    return started + dt.timedelta(minutes=time_limit_minutes, seconds=-lead)


def replacement_of(
    old: Deployment, due: dt.datetime, reps: list[Deployment], taken: set[str]
) -> Deployment | None:
    """The replica already replacing ``old``: one created since its replacement fell due,
    not draining, not ``taken`` (replacing another, or being replaced itself). Found from the
    rows alone, so that a control plane that restarts mid-replacement carries on with it
    rather than starting another."""
    for dep in reps:
        if (
            dep.id != old.id
            and dep.id not in taken
            and dep.draining_since is None
            and not dep.state.terminal
            and dep.created_at >= due
        ):
            return dep
    return None


@dataclass
class _ModelMemory:
    #: Since when the model has had more replicas than it needs.
    surplus_since: dt.datetime | None = None
    #: Old replica id -> its replacement's id.
    replacing: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class Demand:
    inflight: int = 0
    queued: int = 0
    per_replica: dict[str, int] = field(default_factory=dict)
    #: Trainings per replica: every gateway checks every replica, so the most any reports.
    trainings: dict[str, int] = field(default_factory=dict)
    last_request_at: dt.datetime | None = None


class Autoscaler:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.memory: dict[int, _ModelMemory] = {}

    def step(self) -> bool:
        """One pass over every model; True when it created or stopped something."""
        changed = False
        with self.rt.db.session() as db:  # a read first: no write lock while nothing is scaled
            if (
                db.scalar(select(GatewayModel.id).where(GatewayModel.source == "deployment"))
                is None
            ):
                return False
        with self.rt.db.transaction() as db:
            models = db.scalars(
                select(GatewayModel).where(
                    GatewayModel.source == "deployment", GatewayModel.enabled.is_(True)
                )
            ).all()
            if not models:
                return False
            demand = self._demand(db)
            for model in models:
                try:
                    with db.begin_nested():
                        changed |= self._scale(db, model, demand.get(model.id, Demand()))
                except AgoraError as exc:
                    memory = self.memory.setdefault(model.id, _ModelMemory())
                    if memory.problem != exc.detail:
                        log.warning("cannot scale model %s: %s", model.name, exc.detail)
                    memory.problem = exc.detail
        if changed:
            self.rt.wake()
        return changed

    def _demand(self, db: Session) -> dict[int, Demand]:
        fresh = utcnow() - dt.timedelta(
            seconds=3 * self.rt.settings.gateway_load_report_seconds + 2
        )
        out: dict[int, Demand] = {}
        for row in db.scalars(select(GatewayLoad)):
            d = out.setdefault(row.model_id, Demand())
            if row.last_request_at and (
                d.last_request_at is None or row.last_request_at > d.last_request_at
            ):
                d.last_request_at = row.last_request_at
            if row.updated_at < fresh:
                continue  # a gateway that stopped reporting: its load is gone
            d.inflight += row.inflight
            d.queued += row.queued
            for dep_id, n in (row.per_replica or {}).items():
                d.per_replica[dep_id] = d.per_replica.get(dep_id, 0) + n
            for dep_id, n in (row.trainings or {}).items():
                d.trainings[dep_id] = max(d.trainings.get(dep_id, 0), n)
        return out

    def _scale(self, db: Session, model: GatewayModel, demand: Demand) -> bool:
        now = utcnow()
        memory = self.memory.setdefault(model.id, _ModelMemory())
        reps = db.scalars(
            select(Deployment)
            .where(Deployment.model_id == model.id, Deployment.state.not_in(_TERMINAL))
            .order_by(Deployment.created_at)
        ).all()
        reps = [d for d in reps if d.desired == "running"]
        changed = self._replace(db, model, reps, demand, memory, now)
        if changed:
            return True  # replicas came or went: judge the load again next cycle
        being_replaced = set(memory.replacing)
        serving = [d for d in reps if d.draining_since is None and d.id not in being_replaced]
        want = math.ceil((demand.inflight + demand.queued) / max(1, model.target_inflight))
        recent = demand.last_request_at is not None and (
            (now - demand.last_request_at).total_seconds() < model.idle_seconds
        )
        if recent:
            want = max(want, 1)
        want = min(max(want, model.min_replicas), model.max_replicas)
        if want > len(serving):
            memory.surplus_since = None
            wait = self._backoff(db, model, now)
            if wait is not None:
                return changed
            for _ in range(want - len(serving)):
                self._create(db, model)
            memory.problem = None
            return True
        if want < len(serving):
            if memory.surplus_since is None:
                memory.surplus_since = now
            # Idle (no request for idle_seconds): down to the minimum at once. Busy but over
            # capacity: only once that has held for idle_seconds.
            if (
                want == model.min_replicas
                and not recent
                or ((now - memory.surplus_since).total_seconds() >= model.idle_seconds)
            ):
                # Not-yet-ready ones first, then the least loaded; none that runs a training
                # (the surplus stays until it ends).
                order = sorted(
                    (d for d in serving if not demand.trainings.get(d.id)),
                    key=lambda d: (
                        d.state == DeploymentState.running,
                        demand.per_replica.get(d.id, 0),
                    ),
                )
                stopping = order[: len(serving) - want]
                for dep in stopping:
                    self._stop(db, model, dep, "no longer needed")
                if stopping:
                    memory.surplus_since = None
                    return True
        else:
            memory.surplus_since = None
        return changed

    def _replace(
        self,
        db: Session,
        model: GatewayModel,
        reps: list[Deployment],
        demand: Demand,
        memory: _ModelMemory,
        now: dt.datetime,
    ) -> bool:
        changed = False
        by_id = {d.id: d for d in reps}
        for old_id, new_id in list(memory.replacing.items()):
            old, new = by_id.get(old_id), by_id.get(new_id)
            if old is None:
                memory.replacing.pop(old_id)
                continue
            if new is None:  # the replacement failed: try another one
                memory.replacing.pop(old_id)
                continue
            if old.draining_since is None and new.state == DeploymentState.running:
                old.draining_since = now
                changed = True
        for dep in reps:
            if dep.draining_since is not None:
                drained = demand.per_replica.get(dep.id, 0) == 0
                waited = (now - dep.draining_since).total_seconds()
                # Give every gateway time to see the drain before trusting "nothing in flight".
                settle = 2 * self.rt.settings.gateway_load_report_seconds + 1
                if (drained and waited >= settle) or waited >= model.total_timeout:
                    self._stop(db, model, dep, "replaced before its time limit")
                    memory.replacing.pop(dep.id, None)
                    changed = True
                continue
            if dep.state != DeploymentState.running or dep.started_at is None:
                continue
            if dep.id in memory.replacing:
                continue
            due = replacement_due_at(
                dep.started_at,
                dep.state_since,
                dep.time_limit_minutes,
                model.replace_before_seconds,
            )
            if due is not None and now >= due:
                taken = set(memory.replacing) | set(memory.replacing.values())
                fresh = replacement_of(dep, due, reps, taken)
                if fresh is None:
                    fresh = self._create(db, model)
                    changed = True
                memory.replacing[dep.id] = fresh.id
                log.info(
                    "replacing replica %s of %s (time limit) with %s", dep.id, model.name, fresh.id
                )
        return changed

    def _backoff(self, db: Session, model: GatewayModel, now: dt.datetime) -> float | None:
        failed = db.scalars(
            select(Deployment.ended_at)
            .where(
                Deployment.model_id == model.id,
                Deployment.state == DeploymentState.failed,
                Deployment.ended_at >= now - _FAILURE_WINDOW,
            )
            .order_by(Deployment.ended_at.desc())
        ).all()
        if not failed or failed[0] is None:
            return None
        delay = min(300.0, 5.0 * 2 ** (len(failed) - 1))
        left = delay - (now - failed[0]).total_seconds()
        return left if left > 0 else None

    def _ctx(self, db: Session, model: GatewayModel) -> Ctx:
        owner = db.get(User, model.owner_id) if model.owner_id else None
        if owner is None:
            owner = db.scalar(select(User).where(User.is_admin.is_(True)).order_by(User.id))
        if owner is None:
            raise AgoraError("no administrator account owns the model's replicas")
        principal = Principal(
            user_id=owner.id, username=f"autoscaler ({model.name})", is_admin=True, via="session"
        )
        return Ctx(db=db, runtime=self.rt, principal=principal)

    def _create(self, db: Session, model: GatewayModel) -> Deployment:
        if model.template is None or model.project is None:
            raise AgoraError("the model has no replica template or project")
        template = self.rt.templates.get(model.template)
        if template is None:
            raise AgoraError(f"its template '{model.template}' no longer exists")
        inputs = dict(model.inputs or {})
        if "served_name" in template.inputs and not inputs.get("served_name"):
            inputs["served_name"] = model.upstream_model or model.name
        if "model_kind" in template.inputs:
            inputs["model_kind"] = model.kind  # the model's kind decides, not a default
        dep = deployments.create(
            self._ctx(db, model),
            model.project.name,
            model.template,
            inputs,
            name=f"model {model.name}"[:64],
            backends=model.backends or None,
        )
        dep.model_id = model.id
        db.flush()
        log.info("started replica %s of model %s", dep.id, model.name)
        return dep

    def _stop(self, db: Session, model: GatewayModel, dep: Deployment, why: str) -> None:
        assert model.project is not None
        deployments.stop(self._ctx(db, model), model.project.name, dep.id)
        log.info("stopping replica %s of model %s: %s", dep.id, model.name, why)


_TERMINAL = [s for s in DeploymentState if s.terminal]
