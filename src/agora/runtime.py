"""The process-wide objects one Agora instance runs with, built by the app factory."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update

from agora.db import Database
from agora.deployments.backends import Backend
from agora.deployments.backends import build as build_backend
from agora.deployments.templates import LoadProblem, Template, load_all
from agora.models import ApiKey, AuthSession
from agora.security import Keyring, configure_password_hashing
from agora.settings import Settings

log = logging.getLogger("agora")


class LastUsed:
    """Remembers when each credential (API key, session) was last used and writes it in
    batches, not per request: reads stay reads, and the hot path makes no database write."""

    def __init__(self, column: Any) -> None:
        self._column = column
        self._pending: dict[int, float] = {}  # seconds since the epoch
        self._lock = threading.Lock()

    def touch(self, key_id: int, when: dt.datetime) -> None:
        stamp = when.timestamp()
        with self._lock:
            self._pending[key_id] = stamp

    def touch_now(self, key_id: int) -> None:
        """``touch`` at the current time (the gateway's request path: no datetime made)."""
        now = time.time()
        with self._lock:
            self._pending[key_id] = now

    def flush(self, db: Database) -> int:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        table = self._column.class_
        with db.transaction() as session:
            for row_id, when in pending.items():
                session.execute(
                    update(table)
                    .where(table.id == row_id)
                    .values({self._column.key: dt.datetime.fromtimestamp(when, dt.UTC)})
                )
        return len(pending)

    def peek(self, key_id: int) -> dt.datetime | None:
        with self._lock:
            when = self._pending.get(key_id)
        return None if when is None else dt.datetime.fromtimestamp(when, dt.UTC)


def freeze_heap() -> None:
    """Leave what is loaded by now (the modules, the app) out of the garbage collector's full
    passes, which would otherwise scan it again and again while serving: 125 ms a pass for the
    loaded platform here, a stall for every request in flight. Python's ``gc.freeze``, for
    long-running servers; called once, just before serving (never in tests' processes)."""
    gc.collect()
    gc.freeze()


@dataclass
class Runtime:
    settings: Settings
    db: Database
    keyring: Keyring
    key_usage: LastUsed = field(default_factory=lambda: LastUsed(ApiKey.last_used_at))
    session_usage: LastUsed = field(default_factory=lambda: LastUsed(AuthSession.last_seen_at))
    templates: dict[str, Template] = field(default_factory=dict)
    template_problems: list[LoadProblem] = field(default_factory=list)
    backends: dict[str, Backend] = field(default_factory=dict)
    #: Set when the orchestrator runs here: asks it for an immediate reconcile.
    wake: Callable[[], None] = lambda: None

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        configure_password_hashing(
            settings.password_hash_time_cost,
            settings.password_hash_memory_kib,
            settings.password_hash_parallelism,
        )
        templates, problems = load_all(settings.template_dirs)
        return cls(
            settings=settings,
            db=Database(str(settings.database_url)),
            keyring=Keyring(settings.ensure_secret_key()),
            templates=templates,
            template_problems=problems,
            backends={b.name: build_backend(b, settings) for b in settings.backends},
        )

    def flush_last_used(self) -> None:
        """Writes when keys and sessions were last used (noted in memory on the request path)."""
        self.key_usage.flush(self.db)
        self.session_usage.flush(self.db)

    async def record_last_used(self) -> None:
        """Flushes the last uses every ``key_last_used_flush_seconds``, until cancelled; every
        process that serves requests runs it (``agora up``, each ``agora gateway`` worker)."""
        while True:
            await asyncio.sleep(self.settings.key_last_used_flush_seconds)
            try:
                await asyncio.to_thread(self.flush_last_used)
            except Exception:  # keep flushing later; the database may be briefly unavailable
                log.exception("could not record when API keys were last used")
