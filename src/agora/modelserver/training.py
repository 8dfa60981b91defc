"""Trainings: each runs in a process of its own; their records live in SQLite under the state
directory, so they outlive the server.

Several servers may share one state directory (a module scaled to several replicas, on one
machine or a shared file system): each record names the server running it (``owner``, new at
every start), and that server stamps its running records every ``heartbeat`` seconds. A
``running`` record whose stamp is older than three heartbeats was cut short by its server's
end: any server that reads it marks it ``error`` with that reason. A server starting up leaves
the others' trainings alone.

A record has DEEPaaS's shape: ``uuid``, ``date``, ``args``, ``status`` (``running``,
``done``, ``error``, ``cancelled``), ``message`` on error and, once done,
``result = {output, finish_date, duration}``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from agora.modelserver.errors import ModelServerError, TrainingNotFound
from agora.modelserver.files import UploadedFile
from agora.modelserver.pool import Worker, WorkerDied
from agora.modelserver.uploads import remove

logger = logging.getLogger("agora.modelserver")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trainings (
    uuid TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    date TEXT NOT NULL,
    status TEXT NOT NULL,
    args TEXT NOT NULL,
    output TEXT,
    finish_date TEXT,
    message TEXT,
    owner TEXT,
    heartbeat REAL
)
"""
#: Columns added since the first release, for state directories made by it.
_ADDED = {"owner": "TEXT", "heartbeat": "REAL"}
HEARTBEAT = 10.0
_DATE = "%Y-%m-%d %H:%M:%S.%f"


def _now() -> str:
    return datetime.now().strftime(_DATE)  # str(datetime.now()), never without microseconds


def _json_args(args: dict[str, Any]) -> dict[str, Any]:
    # DEEPaaS lists a file argument as (name, content_type, original_filename).
    return {
        k: [v.name, v.content_type, v.original_filename] if isinstance(v, UploadedFile) else v
        for k, v in args.items()
    }


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class TrainingStore:
    """The records, one SQLite file; every call is a short local transaction."""

    def __init__(self, path: Path, heartbeat: float = HEARTBEAT) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_SCHEMA)
        have = {row["name"] for row in self.db.execute("PRAGMA table_info(trainings)")}
        for column, kind in _ADDED.items():
            if column not in have:
                try:
                    self.db.execute(f"ALTER TABLE trainings ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another replica added it just now
                    if "duplicate column" not in str(exc):
                        raise
        self.owner = uuid.uuid4().hex
        self.heartbeat = heartbeat

    def interrupted(self) -> int:
        """Marks as failed the trainings whose server stopped stamping them."""
        cursor = self.db.execute(
            "UPDATE trainings SET status = 'error', message = ? WHERE status = 'running' "
            "AND owner IS NOT ? AND (heartbeat IS NULL OR heartbeat < ?)",
            (
                "the model server running this training stopped before it ended "
                f"(found {_now()}); start it again",
                self.owner,
                time.time() - 3 * self.heartbeat,
            ),
        )
        return cursor.rowcount

    def beat(self) -> None:
        """Stamp this server's running trainings: they are alive."""
        self.db.execute(
            "UPDATE trainings SET heartbeat = ? WHERE owner = ? AND status = 'running'",
            (time.time(), self.owner),
        )

    def add(self, model: str, args: dict[str, Any]) -> str:
        uuid_ = uuid.uuid4().hex
        self.db.execute(
            "INSERT INTO trainings (uuid, model, date, status, args, owner, heartbeat) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (uuid_, model, _now(), "running", _dumps(_json_args(args)), self.owner, time.time()),
        )
        return uuid_

    def finish(
        self, uuid_: str, status: str, output: Any = None, message: str | None = None
    ) -> None:
        self.db.execute(
            "UPDATE trainings SET status = ?, output = ?, finish_date = ?, message = ? "
            "WHERE uuid = ? AND status = 'running'",
            (status, _dumps(output), _now(), message, uuid_),
        )

    def get(self, model: str, uuid_: str) -> dict[str, Any]:
        self.interrupted()
        row = self.db.execute(
            "SELECT * FROM trainings WHERE uuid = ? AND model = ?", (uuid_, model)
        ).fetchone()
        if row is None:
            raise TrainingNotFound(f"model '{model}' has no training {uuid_}")
        return _record(row)

    def all(self, model: str) -> list[dict[str, Any]]:
        self.interrupted()
        rows = self.db.execute(
            "SELECT * FROM trainings WHERE model = ? ORDER BY date", (model,)
        ).fetchall()
        return [_record(r) for r in rows]

    def delete(self, uuid_: str) -> None:
        self.db.execute("DELETE FROM trainings WHERE uuid = ?", (uuid_,))

    def close(self) -> None:
        self.db.close()


def _record(row: sqlite3.Row) -> dict[str, Any]:
    ret: dict[str, Any] = {
        "date": row["date"],
        "args": orjson.loads(row["args"]),
        "uuid": row["uuid"],
        "status": row["status"],
    }
    if row["status"] == "error":
        ret["message"] = row["message"]
    elif row["status"] == "done":
        start = datetime.strptime(row["date"], _DATE)
        end = datetime.strptime(row["finish_date"], _DATE)
        ret["result"] = {
            "output": orjson.loads(row["output"]),
            "finish_date": row["finish_date"],
            "duration": str(end - start),
        }
    return ret


class Trainings:
    """Starts, follows and cancels the trainings of the served models."""

    def __init__(self, store: TrainingStore) -> None:
        self.store = store
        self._running: dict[str, tuple[Worker, asyncio.Task[None]]] = {}
        self._beating: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        """How many trainings this server runs now."""
        return len(self._running)

    def start(self, worker: Worker, model: str, args: dict[str, Any], files: list[str]) -> str:
        uuid_ = self.store.add(model, args)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._follow(uuid_, worker, args, files))
        self._running[uuid_] = (worker, task)
        if self._beating is None or self._beating.done():
            self._beating = loop.create_task(self._beat())
        return uuid_

    async def _beat(self) -> None:
        while self._running:
            await asyncio.sleep(self.store.heartbeat)
            try:
                self.store.beat()
            except sqlite3.Error:
                logger.exception("could not stamp the running trainings")

    async def _follow(
        self, uuid_: str, worker: Worker, args: dict[str, Any], files: list[str]
    ) -> None:
        try:
            await worker.started()
            output = await worker.call("train", args)
        except WorkerDied as exc:
            self.store.finish(uuid_, "error", message=f"the training process died ({exc})")
        except (ModelServerError, RuntimeError) as exc:
            self.store.finish(uuid_, "error", message=str(exc))
        except asyncio.CancelledError:
            self.store.finish(uuid_, "cancelled")
            raise
        else:
            self.store.finish(uuid_, "done", output=output)
        finally:
            worker.kill()
            remove(files)
            self._running.pop(uuid_, None)

    async def cancel(self, model: str, uuid_: str) -> dict[str, Any]:
        """DEEPaaS's DELETE: stops the training if it runs, and forgets it."""
        self.store.get(model, uuid_)  # 404 for another model's training
        running = self._running.get(uuid_)
        if running is not None:
            worker, task = running
            task.cancel()
            worker.kill()
            await asyncio.gather(task, return_exceptions=True)
        record = self.store.get(model, uuid_)
        self.store.delete(uuid_)
        logger.info("training %s of model '%s' cancelled", uuid_, model)
        return record

    async def close(self) -> None:
        tasks = [self._beating] if self._beating is not None else []
        for uuid_, (worker, task) in list(self._running.items()):
            self.store.finish(uuid_, "error", message="the model server stopped during it")
            task.cancel()
            worker.kill()
            tasks.append(task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.store.close()
