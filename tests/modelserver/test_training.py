"""Training records live in SQLite under --state-dir: they outlive the server, and a training
its server's death cut short is marked as failed, with the reason, once its heartbeat is three
beats old. Servers sharing a state directory (replicas) leave each other's trainings alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.modelserver.servers import THIRDPARTY, agora_server

ARGS = ("--model", "faulty=acme_faulty")
BEAT = ("--training-heartbeat", "0.3")  # a training unstamped for 0.9 s was cut short


def _wait(url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (record := httpx.get(url, timeout=5).json())["status"] == "running":
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    result: dict[str, Any] = record
    return result


def test_records_survive_a_restart_and_cut_trainings_are_marked(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with agora_server(*ARGS, *BEAT, state_dir=state) as first:
        url = f"{first.url}/v2/models/faulty/train/"
        done = httpx.post(url, data={"seconds": "0"}).json()["uuid"]
        failed = httpx.post(url, data={"seconds": "-1"}).json()["uuid"]
        assert _wait(url + done)["result"]["output"] == {"slept": 0.0}
        assert "ValueError" in _wait(url + failed)["message"]
        cut = httpx.post(url, data={"seconds": "3"}).json()["uuid"]
        first.process.kill()  # the server dies: no chance to record anything
        first.process.wait()
        time.sleep(1)  # three heartbeats
    with agora_server(*ARGS, *BEAT, state_dir=state) as second:
        url = f"{second.url}/v2/models/faulty/train/"
        records = {r["uuid"]: r for r in httpx.get(url).json()}
        assert records[done]["status"] == "done"
        assert records[done]["result"]["output"] == {"slept": 0.0}
        assert records[failed]["status"] == "error"
        assert records[cut]["status"] == "error"
        assert "stopped before it ended" in records[cut]["message"]
        assert httpx.get(url + cut).json() == records[cut]


def test_replicas_sharing_a_state_directory_leave_each_others_trainings_alone(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with agora_server(*ARGS, *BEAT, state_dir=state) as first:
        url = f"{first.url}/v2/models/faulty/train/"
        uuid = httpx.post(url, data={"seconds": "3"}).json()["uuid"]
        assert httpx.get(f"{first.url}/health").json()["trainings"] == 1
        # A second replica starts on the same state directory while the training runs.
        with agora_server(*ARGS, *BEAT, state_dir=state) as second:
            other = f"{second.url}/v2/models/faulty/train/"
            assert httpx.get(f"{second.url}/health").json()["trainings"] == 0
            time.sleep(1.5)  # five heartbeats: a stale stamp would be reaped by now
            assert httpx.get(other + uuid).json()["status"] == "running"
            assert _wait(other + uuid)["result"]["output"] == {"slept": 3.0}
        assert httpx.get(f"{first.url}/health").json()["trainings"] == 0


def test_delete_cancels_a_running_training(tmp_path: Path) -> None:
    with agora_server(*ARGS, state_dir=tmp_path / "state", cli=True) as server:  # agora serve-model
        url = f"{server.url}/v2/models/faulty/train/"
        uuid = httpx.post(url, data={"seconds": "60"}).json()["uuid"]
        time.sleep(0.5)
        r = httpx.delete(url + uuid, timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert httpx.get(url + uuid).status_code == 404
        assert httpx.get(url + "nope").headers["content-type"] == "application/problem+json"


def test_serve_model_names_a_missing_module_in_one_line() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "agora"), "serve-model", "--module", "nope"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(THIRDPARTY)},
        timeout=60,
    )
    assert done.returncode == 1
    assert "no model 'nope' in entry-point group deepaas.v2.model" in done.stderr
    assert "acme-text" in done.stderr and "Traceback" not in done.stderr


def test_a_state_directory_of_the_first_release_is_upgraded(tmp_path: Path) -> None:
    """Records written before servers stamped their trainings: the new columns are added (by
    whichever replica comes first) and a record left running is reported as cut short."""
    import sqlite3

    from agora.modelserver.training import TrainingStore

    path = tmp_path / "trainings.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE trainings (uuid TEXT PRIMARY KEY, model TEXT NOT NULL, date TEXT NOT NULL,"
        " status TEXT NOT NULL, args TEXT NOT NULL, output TEXT, finish_date TEXT, message TEXT)"
    )
    old.execute(
        "INSERT INTO trainings VALUES ('u1', 'm', '2026-01-01 00:00:00.000000', 'running', '{}',"
        " NULL, NULL, NULL)"
    )
    old.commit()
    old.close()
    first, second = TrainingStore(path), TrainingStore(path)  # the second finds them added
    record = second.get("m", "u1")
    assert record["status"] == "error" and "stopped before it ended" in record["message"]
    uuid = first.add("m", {})
    assert second.get("m", uuid)["status"] == "running"  # fresh stamp: not reaped
    first.close()
    second.close()
