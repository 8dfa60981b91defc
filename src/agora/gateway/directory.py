"""What the gateway knows, held in memory so that its request path makes no database call.

A :class:`Directory` keeps an immutable :class:`Snapshot` of the API keys that may call it,
the models and their ready replicas, the projects allowed each model, and the limits. It is
rebuilt, in a thread, when something it depends on changes:

* in this process at once: a SQLAlchemy hook marks the snapshot stale when a transaction that
  wrote a key, a user, a membership, a project, a model, a grant, a limit or a replica
  deployment commits, and the next request waits for the rebuild (so a revoked key fails on
  the very next request);
* in other processes within ``gateway_refresh_seconds``: the same hook bumps a version row
  (``system_settings['gateway.version']``) in the writing transaction, and every gateway polls
  that one row.

Ending a sign-in session (sign-out, a password change, an account disabled) and choosing a
session's project count as such changes too: the gateway caches browser sessions
(:mod:`agora.gateway.sessions`) and drops them with every rebuild.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import ORMExecuteState, Session

from agora.aio import wait_set
from agora.db import Database
from agora.gateway.limits import Limit
from agora.models import (
    ApiKey,
    AuthSession,
    Deployment,
    DeploymentState,
    GatewayModel,
    Membership,
    ModelGrant,
    Project,
    RateLimit,
    SystemSetting,
    User,
)
from agora.security import Keyring

log = logging.getLogger("agora.gateway")
VERSION_KEY = "gateway.version"
_WATCHED = (ApiKey, User, Membership, Project, GatewayModel, ModelGrant, RateLimit)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a gateway request: from an API key, or from a signed-in browser session."""

    user_id: int
    username: str
    project_id: int
    project_name: str
    key_id: int | None = None
    key_name: str | None = None
    #: Epoch seconds, or None for keys without expiry.
    expires_at: float | None = None
    can_infer: bool = True


@dataclass(frozen=True, slots=True)
class Replica:
    deployment_id: str
    base_url: str  # "http://host:port/v1"
    auth: str  # value of the Authorization header sent upstream
    health_url: str | None
    draining: bool = False
    #: Epoch seconds at which the backend ends it (its time limit), if known.
    ends_at: float | None = None


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: int
    name: str
    kind: str
    source: str
    upstream_model: str
    public: bool
    granted: frozenset[int]
    replicas: tuple[Replica, ...]
    connect_timeout: float
    first_byte_timeout: float
    total_timeout: float
    queue_timeout: float
    created: int
    #: Why the last replica failed to start, for the 503 a waiting request may get.
    last_failure: str | None = None

    def allowed(self, project_id: int) -> bool:
        return self.public or project_id in self.granted


@dataclass(frozen=True)
class Snapshot:
    keys: dict[str, Caller] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    project_limits: dict[int, Limit] = field(default_factory=dict)
    key_limits: dict[int, Limit] = field(default_factory=dict)
    version: str | None = None
    built_at: float = 0.0

    def limits_for(self, caller: Caller) -> tuple[Limit, ...]:
        out = []
        if caller.key_id is not None and (lim := self.key_limits.get(caller.key_id)):
            out.append(lim)
        if lim := self.project_limits.get(caller.project_id):
            out.append(lim)
        return tuple(out)


def _limit(scope: str, label: str, row: RateLimit) -> Limit | None:
    if all(getattr(row, f) is None for f in ("rpm", "tpm", "tokens_per_day", "tokens_per_month")):
        return None
    return Limit(
        scope=scope,
        label=label,
        rpm=row.rpm,
        tpm=row.tpm,
        tokens_per_day=row.tokens_per_day,
        tokens_per_month=row.tokens_per_month,
    )


def build_snapshot(db: Database, keyring: Keyring) -> Snapshot:
    """Read everything the request path needs, in one read transaction."""
    now = dt.datetime.now(dt.UTC)
    with db.session() as s:
        version = s.scalar(select(SystemSetting.value).where(SystemSetting.key == VERSION_KEY))
        members = {(m.user_id, m.project_id) for m in s.scalars(select(Membership)).all()}
        projects = {p.id: p.name for p in s.scalars(select(Project)).all()}
        keys: dict[str, Caller] = {}
        rows = s.execute(
            select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.revoked_at.is_(None), User.disabled.is_(False))
        ).all()
        key_names: dict[int, str] = {}
        for key, user in rows:
            if key.expires_at is not None and key.expires_at <= now:
                continue
            # A key works only while its owner may still use its project.
            if not user.is_admin and (user.id, key.project_id) not in members:
                continue
            key_names[key.id] = key.name
            keys[key.secret_hash] = Caller(
                user_id=user.id,
                username=user.username,
                project_id=key.project_id,
                project_name=projects.get(key.project_id, "?"),
                key_id=key.id,
                key_name=key.name,
                expires_at=key.expires_at.timestamp() if key.expires_at else None,
                can_infer="inference" in key.scopes,
            )
        grants: dict[int, set[int]] = {}
        for grant in s.scalars(select(ModelGrant)).all():
            grants.setdefault(grant.model_id, set()).add(grant.project_id)
        replicas: dict[int, list[Replica]] = {}
        failures: dict[int, str] = {}
        deployments = s.scalars(
            select(Deployment)
            .where(Deployment.model_id.is_not(None))
            .order_by(Deployment.created_at)
        ).all()
        for dep in deployments:
            assert dep.model_id is not None
            if dep.state == DeploymentState.running and dep.address:
                ends = None
                if dep.started_at is not None:
                    ends = dep.started_at.timestamp() + dep.time_limit_minutes * 60
                readiness = dep.readiness_path or "/health"
                replicas.setdefault(dep.model_id, []).append(
                    Replica(
                        deployment_id=dep.id,
                        base_url=f"http://{dep.address}/v1",
                        auth=f"Bearer {keyring.decrypt(dep.token)}",
                        health_url=f"http://{dep.address}{readiness}",
                        draining=dep.draining_since is not None,
                        ends_at=ends,
                    )
                )
            elif dep.state == DeploymentState.failed:
                failures[dep.model_id] = dep.reason or "it failed"
        models: dict[str, ModelEntry] = {}
        for m in s.scalars(select(GatewayModel).where(GatewayModel.enabled.is_(True))).all():
            if m.source == "external":
                auth = f"Bearer {keyring.decrypt(m.external_key)}" if m.external_key else ""
                reps: tuple[Replica, ...] = (
                    Replica("external", (m.external_url or "").rstrip("/"), auth, None),
                )
            else:
                reps = tuple(replicas.get(m.id, ()))
            models[m.name] = ModelEntry(
                id=m.id,
                name=m.name,
                kind=m.kind,
                source=m.source,
                upstream_model=m.upstream_model or m.name,
                public=m.public,
                granted=frozenset(grants.get(m.id, ())),
                replicas=reps,
                connect_timeout=m.connect_timeout,
                first_byte_timeout=m.first_byte_timeout,
                total_timeout=m.total_timeout,
                queue_timeout=m.queue_timeout,
                created=int(m.created_at.timestamp()),
                last_failure=failures.get(m.id),
            )
        project_limits: dict[int, Limit] = {}
        key_limits: dict[int, Limit] = {}
        for row in s.scalars(select(RateLimit)).all():
            if row.project_id is not None:
                name = projects.get(row.project_id, "?")
                if lim := _limit(f"project:{row.project_id}", f"project '{name}'", row):
                    project_limits[row.project_id] = lim
            elif row.api_key_id is not None:
                label = f"API key '{key_names.get(row.api_key_id, row.api_key_id)}'"
                if lim := _limit(f"key:{row.api_key_id}", label, row):
                    key_limits[row.api_key_id] = lim
    return Snapshot(
        keys=keys,
        models=models,
        project_limits=project_limits,
        key_limits=key_limits,
        version=str(version) if version is not None else None,
        built_at=time.time(),
    )


# --- change detection -------------------------------------------------------------------------

_directories: weakref.WeakSet[Directory] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hooked = False


def _touches_gateway(session: Session) -> bool:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, _WATCHED):
            return True
        if isinstance(obj, Deployment) and obj.model_id is not None:
            return True
    # A session's chosen project, or a session ended (new ones are not cached anywhere).
    return any(isinstance(obj, AuthSession) for obj in (*session.dirty, *session.deleted))


def _bump(session: Session) -> None:
    if not session.info.get("gateway_bumped"):
        session.info["gateway_bumped"] = True
        session.execute(
            update(SystemSetting)
            .where(SystemSetting.key == VERSION_KEY)
            .values(value=secrets.token_hex(8))
        )


def _before_flush(session: Session, _ctx: Any, _instances: Any) -> None:
    if _touches_gateway(session):
        session.info["gateway_changed"] = True


def _after_flush(session: Session, _ctx: Any) -> None:
    if session.info.get("gateway_changed"):
        _bump(session)


def _on_execute(state: ORMExecuteState) -> None:
    """Bulk ``DELETE`` statements (signing out ends sessions this way) bypass the flush hooks.
    Bulk updates are left alone: the batched last-used writes are updates of keys and sessions
    that change nothing the gateway caches."""
    if not state.is_delete:
        return
    mapper = state.bind_mapper
    if mapper is not None and issubclass(mapper.class_, (*_WATCHED, AuthSession)):
        state.session.info["gateway_changed"] = True
        _bump(state.session)


def _after_commit(session: Session) -> None:
    changed = session.info.pop("gateway_changed", False)
    session.info.pop("gateway_bumped", None)
    if not changed:
        return
    bind = session.get_bind()
    url = str(bind.engine.url) if bind is not None else None
    for directory in list(_directories):
        if directory.db_url == url:
            directory.mark_stale()


def _after_rollback(session: Session) -> None:
    session.info.pop("gateway_changed", None)
    session.info.pop("gateway_bumped", None)


def install_change_hooks() -> None:
    """Watch every ORM session for changes the gateway depends on (once per process)."""
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        event.listen(Session, "before_flush", _before_flush)
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "do_orm_execute", _on_execute)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", lambda s, _t: _after_rollback(s))
        _hooked = True


class Directory:
    """The current snapshot, and the task that keeps it fresh."""

    def __init__(self, db: Database, keyring: Keyring, refresh_seconds: float) -> None:
        self.db = db
        self.db_url = str(db.engine.url)
        self.keyring = keyring
        self.refresh_seconds = refresh_seconds
        self.snapshot = Snapshot()
        # Local changes are numbered; a rebuild that started after change N covers it.
        self._changes = itertools.count(1)
        self._want = 1
        self._have = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._next: asyncio.Future[None] | None = None
        #: Called with the new snapshot after every rebuild (the router syncs its replicas).
        self.listeners: list[Callable[[Snapshot], None]] = []
        install_change_hooks()
        _directories.add(self)

    @property
    def stale(self) -> bool:
        return self._have < self._want

    def mark_stale(self) -> None:
        """Called from whichever thread committed the change."""
        self._want = next(self._changes) + 1
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wakeup.set)

    async def current(self) -> Snapshot:
        """The snapshot; when a change was committed here, waits for the rebuild first."""
        for _ in range(3):
            if self._have >= self._want:
                break
            if self._next is None or self._wakeup is None:
                await self.rebuild()  # not running as a task (a bare test app): build now
                continue
            waiter = self._next
            self._wakeup.set()
            await asyncio.shield(waiter)
        return self.snapshot

    async def rebuild(self) -> None:
        covers = self._want
        try:
            snapshot = await asyncio.to_thread(build_snapshot, self.db, self.keyring)
        finally:
            done, self._next = self._next, asyncio.get_running_loop().create_future()
            if done is not None and not done.done():
                done.set_result(None)
        self._have = max(self._have, covers)
        self.snapshot = snapshot
        for listener in self.listeners:
            listener(snapshot)

    async def run(self) -> None:
        """Keep the snapshot fresh: at once on local changes, by polling for remote ones."""
        loop = asyncio.get_running_loop()
        wakeup = asyncio.Event()
        self._loop, self._wakeup, self._next = loop, wakeup, loop.create_future()
        while True:
            wakeup.clear()
            try:
                if self.stale or await asyncio.to_thread(self._remote_changed):
                    await self.rebuild()
            except Exception:
                log.exception("could not refresh the gateway's view of keys and models")
                await asyncio.sleep(self.refresh_seconds)
                continue
            if self.stale:
                continue
            await wait_set(wakeup, self.refresh_seconds)

    def _remote_changed(self) -> bool:
        with self.db.session() as s:
            version = s.scalar(select(SystemSetting.value).where(SystemSetting.key == VERSION_KEY))
        return (str(version) if version is not None else None) != self.snapshot.version
