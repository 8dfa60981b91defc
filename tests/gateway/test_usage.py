"""Usage records written in batches: every value comes back as metered, on SQLite (one JSON
statement per batch) and on PostgreSQL (the driver's executemany)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from agora.db import Database
from agora.gateway.usage import Usage, UsageRecorder
from agora.migrations import upgrade
from agora.models import UsageRecord


def test_a_batch_round_trips(database_url: str) -> None:
    db = Database(database_url)
    upgrade(db)  # the schema as the platform makes it (the fixture empties it afterwards)
    seen: list[int] = []
    recorder = UsageRecorder(db, observer=lambda batch: seen.append(len(batch)))
    assert recorder._json == database_url.startswith("sqlite")
    t = 1_795_000_000.123456
    recorder.record(Usage(t, 7, 3, 12, "chat-model", "chat", 11, 5, 0.5234, 200, False))
    odd = "émbed 'x\""
    recorder.record(Usage(t + 1.5, None, None, None, odd, "embeddings", 0, 0, 9.0, 429, True))
    assert recorder.flush() == 2
    assert recorder.flush() == 0
    assert seen == [2]
    try:
        with db.session() as s:
            rows = s.scalars(select(UsageRecord).order_by(UsageRecord.id)).all()
            got = [
                (r.time, r.user_id, r.project_id, r.api_key_id, r.model, r.endpoint, r.tokens_in,
                 r.tokens_out, r.latency_ms, r.status, r.stream)
                for r in rows
            ]  # fmt: skip
    finally:
        db.dispose()
    when = dt.datetime.fromtimestamp(t, dt.UTC)
    assert got[0][0].tzinfo is not None and abs((got[0][0] - when).total_seconds()) < 1e-5
    assert abs((got[1][0] - when).total_seconds() - 1.5) < 1e-5
    assert got[0][1:] == (7, 3, 12, "chat-model", "chat", 11, 5, 0.523, 200, False)
    assert got[1][1:] == (None, None, None, odd, "embeddings", 0, 0, 9.0, 429, True)


def test_a_failed_batch_is_kept_for_the_next_flush(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'u.db'}")
    recorder = UsageRecorder(db)
    recorder.record(Usage(1_795_000_000.0, 1, 1, 1, "m", "chat", 1, 1, 1.0, 200, False))
    try:
        with pytest.raises(OperationalError):
            recorder.flush()  # no table yet
        upgrade(db)
        assert recorder.flush() == 1
        with db.session() as s:
            assert s.scalars(select(UsageRecord.model)).all() == ["m"]
    finally:
        db.dispose()
