"""Metering: one record per gateway request (who, which model, tokens, latency, status), kept
in memory and written in batches by a background task, never on the request path. Prompts and
outputs are never part of a record.

On SQLite (3.38 and later) a batch goes in as one statement over one JSON parameter
(``json_each``), not ``executemany``: the driver takes the GIL back after every row of an
``executemany``, and with the event loop busy each of those waits for the interpreter's switch
interval (5 ms), so a batch of 5,000 rows took 11 s and slowed the request path meanwhile. One
statement releases the GIL once for the whole batch (90 ms for 5,000 rows, the loop unhindered).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from sqlalchemy import insert

from agora.db import Database
from agora.models import UsageRecord

log = logging.getLogger("agora.gateway")


class Usage(NamedTuple):
    """One metered request (a tuple: the hot path makes one per request)."""

    time: float
    user_id: int | None
    project_id: int | None
    api_key_id: int | None
    model: str
    endpoint: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    status: int
    stream: bool


_COLUMNS = Usage._fields
_SQLITE_ARROWS = sqlite3.sqlite_version_info >= (3, 38, 0)  # JSON's ->> operator


class UsageRecorder:
    def __init__(
        self,
        db: Database,
        max_pending: int = 100_000,
        observer: Callable[[list[Usage]], None] | None = None,
    ) -> None:
        self.db = db
        self.max_pending = max_pending
        #: Shown each record once, as it is first flushed (the metrics).
        self.observer = observer
        self._pending: list[Usage] = []
        #: How many records at the head of ``_pending`` a failed flush put back (seen already).
        self._retried = 0
        self._lock = threading.Lock()
        self._sql: str | None = None
        self._order: list[int] | None = None
        self._json = db.engine.dialect.name == "sqlite" and _SQLITE_ARROWS
        self.dropped = 0

    def record(self, usage: Usage) -> None:
        # No lock: list.append is atomic, and flush swaps the list in one step.
        if len(self._pending) >= self.max_pending:
            self.dropped += 1  # the database is down for long: keep memory bounded
            return
        self._pending.append(usage)

    def _statement(self) -> str:
        """The INSERT: on SQLite over one JSON array parameter (rows in ``_COLUMNS``' order),
        else in the driver's own parameter style for its executemany, without SQLAlchemy's
        per-row processing (``_order``: for positional styles, the order of the values)."""
        if self._sql is None and self._json:
            table = UsageRecord.__tablename__
            values = ", ".join(f"value->>{i}" for i in range(len(_COLUMNS)))
            columns = ", ".join(_COLUMNS)
            self._sql = f"INSERT INTO {table} ({columns}) SELECT {values} FROM json_each(?)"  # noqa: S608 - names from the model
        if self._sql is None:
            compiled = insert(UsageRecord.__table__).compile(  # type: ignore[arg-type]
                dialect=self.db.engine.dialect, column_keys=list(_COLUMNS)
            )
            if compiled.positional:
                self._order = [_COLUMNS.index(name) for name in compiled.positiontup or ()]
            self._sql = str(compiled)
        return self._sql

    def flush(self) -> int:
        with self._lock:
            batch, self._pending = self._pending, []
            seen, self._retried = self._retried, 0
        if not batch:
            return 0
        if self.observer is not None and len(batch) > seen:
            try:
                self.observer(batch[seen:])
            except Exception:
                log.exception("could not count usage records in the metrics")
        try:
            sql = self._statement()
            params = self._params(batch)
            with self.db.transaction() as session:
                session.connection().exec_driver_sql(sql, params)
        except Exception:
            with self._lock:  # try again with the next batch
                kept = batch[: self.max_pending - len(self._pending)]
                self._pending[:0] = kept
                self._retried = len(kept)
            raise
        return len(batch)

    def _params(self, batch: list[Usage]) -> Any:
        """The batch as ``_statement``'s parameters: on SQLite one JSON text (the GIL let go
        once, not per row), else rows in the driver's style for its executemany."""
        stamp = _sqlite_time if self.db.engine.dialect.name == "sqlite" else _aware
        rows = [
            (
                stamp(u.time),
                u.user_id,
                u.project_id,
                u.api_key_id,
                u.model,
                u.endpoint,
                u.tokens_in,
                u.tokens_out,
                round(u.latency_ms, 3),
                u.status,
                u.stream,
            )
            for u in batch
        ]
        if self._json:
            return (orjson.dumps(rows).decode(),)
        order = self._order
        if order is None:
            return [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
        if order != list(range(len(_COLUMNS))):
            return [tuple(row[i] for i in order) for row in rows]
        return rows

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.flush)
            except Exception:
                log.exception("could not write usage records; they are kept for the next try")


def _aware(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


_second: tuple[int, str] = (0, "")


def _sqlite_time(t: float) -> str:
    """What SQLAlchemy stores for a UTC datetime in SQLite: "2026-01-02 03:04:05.678901"."""
    global _second
    whole = int(t)
    if _second[0] != whole:
        _second = (whole, dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"))
    return f"{_second[1]}.{min(999_999, round((t - whole) * 1e6)):06d}"
