"""Trainings: each runs in a process of its own; their records live in SQLite under the state
directory, so they outlive the server. A record still ``running`` when the server starts was
cut short by the previous server's end: it becomes ``error`` with that reason.

A record has DEEPaaS's shape: ``uuid``, ``date``, ``args``, ``status`` (``running``,
``done``, ``error``, ``cancelled``), ``message`` on error and, once done,
``result = {output, finish_date, duration}``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
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
    message TEXT
)
"""
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

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_SCHEMA)

    def interrupted(self) -> int:
        """Marks the trainings a previous server left running as failed."""
        cursor = self.db.execute(
            "UPDATE trainings SET status = 'error', message = ? WHERE status = 'running'",
            (
                "the model server stopped while this training was running "
                f"(found at restart, {_now()}); start it again",
            ),
        )
        return cursor.rowcount

    def add(self, model: str, args: dict[str, Any]) -> str:
        uuid_ = uuid.uuid4().hex
        self.db.execute(
            "INSERT INTO trainings (uuid, model, date, status, args) VALUES (?, ?, ?, ?, ?)",
            (uuid_, model, _now(), "running", _dumps(_json_args(args))),
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
        row = self.db.execute(
            "SELECT * FROM trainings WHERE uuid = ? AND model = ?", (uuid_, model)
        ).fetchone()
        if row is None:
            raise TrainingNotFound(f"model '{model}' has no training {uuid_}")
        return _record(row)

    def all(self, model: str) -> list[dict[str, Any]]:
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

    def start(self, worker: Worker, model: str, args: dict[str, Any], files: list[str]) -> str:
        uuid_ = self.store.add(model, args)
        task = asyncio.get_running_loop().create_task(self._follow(uuid_, worker, args, files))
        self._running[uuid_] = (worker, task)
        return uuid_

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
        tasks = []
        for uuid_, (worker, task) in list(self._running.items()):
            self.store.finish(uuid_, "error", message="the model server stopped during it")
            task.cancel()
            worker.kill()
            tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)
        self.store.close()
