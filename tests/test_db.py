"""SQLite under concurrent writers: a writer's session takes the write lock at BEGIN, in every
transaction it begins, so a read followed by a write never fails at once with "database is
locked" because another connection committed in between."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sqlalchemy import text

from agora.db import Database


def test_a_writer_session_locks_at_begin_after_a_commit_too(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/x.db")
    with db.engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        c.exec_driver_sql("INSERT INTO t VALUES (1, 0)")
    other_done = threading.Event()

    def other_writer() -> None:
        other = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=10)
        other.execute("UPDATE t SET v = 100")
        other.close()
        other_done.set()

    with db.session(write=True) as s:
        s.execute(text("UPDATE t SET v = 1"))
        s.commit()
        # The session's second transaction begins with a read...
        assert s.execute(text("SELECT v FROM t")).scalar() == 1
        thread = threading.Thread(target=other_writer)
        thread.start()
        # ...and holds the write lock already: the other writer waits for it.
        assert not other_done.wait(0.5)
        s.execute(text("UPDATE t SET v = v + 1"))
        s.commit()
    thread.join(10)
    assert other_done.is_set()
    with db.session() as s:
        assert s.execute(text("SELECT v FROM t")).scalar() == 100
    db.dispose()


def test_a_reader_session_does_not_lock(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/x.db")
    with db.engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    with db.session() as s:
        s.execute(text("SELECT count(*) FROM t")).scalar()
        other = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=0)
        other.execute("INSERT INTO t VALUES (1, 1)")  # no wait: nobody holds the write lock
        other.close()
    db.dispose()
