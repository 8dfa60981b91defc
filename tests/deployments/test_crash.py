"""The control plane killed with SIGKILL (no shutdown at all) and started again: nothing is lost
or orphaned. Runs `agora up` as a real process on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import ADMIN_KEY
from tests.servers import free_port, kill_runs, wait_for_port

H = {"Authorization": f"Bearer {ADMIN_KEY}"}


@contextmanager
def agora_up(data: Path, database_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "AGORA_DATA_DIR": str(data),
        "AGORA_DATABASE_URL": database_url,
        "AGORA_PORT": str(port),
        "AGORA_SECRET_KEY": "k" * 48,
        "AGORA_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "AGORA_BOOTSTRAP_ADMIN_PASSWORD": "admin-password-for-tests",
        "AGORA_RECONCILE_INTERVAL": "0.2",
        "AGORA_PASSWORD_HASH_TIME_COST": "1",
        "AGORA_PASSWORD_HASH_MEMORY_KIB": "1024",
        "AGORA_PASSWORD_HASH_PARALLELISM": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agora.cli.main", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait(client: httpx.Client, dep_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        dep = client.get(f"/api/v1/projects/default/deployments/{dep_id}").json()
        if dep["state"] in states:
            return dict(dep)
        assert time.monotonic() < deadline, dep
        time.sleep(0.1)


def test_sigkilled_control_plane_adopts_everything(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flag = tmp_path / "finish"
    try:
        with (
            agora_up(tmp_path / "data", database_url, port) as first,
            httpx.Client(base_url=url, headers=H) as c,
        ):
            job = c.post(
                "/api/v1/projects/default/deployments",
                json={
                    "template": "batch",
                    "inputs": {
                        "command": f"while [ ! -e {flag} ]; do sleep 0.1; done; echo finished"
                    },
                },
            ).json()
            web = c.post(
                "/api/v1/projects/default/deployments",
                json={
                    "template": "http-service",
                    "inputs": {
                        "command": "exec python3 -m http.server $PORT --bind $AGORA_BIND_HOST"
                    },
                },
            ).json()
            _wait(c, job["id"], {"running"})
            _wait(c, web["id"], {"running"})
            first.send_signal(signal.SIGKILL)
            first.wait()
        flag.touch()
        with (
            agora_up(tmp_path / "data", database_url, port),
            httpx.Client(base_url=url, headers=H) as c,
        ):
            done = _wait(c, job["id"], {"stopped"})
            assert done["exit_code"] == 0
            assert (
                "finished" in c.get(f"/api/v1/projects/default/deployments/{job['id']}/logs").text
            )
            assert _wait(c, web["id"], {"running"})["state"] == "running"
            assert c.get("/api/v1/audit/verify").json()["ok"] is True
            c.post(f"/api/v1/projects/default/deployments/{web['id']}/stop")
            _wait(c, web["id"], {"stopped"})
    finally:
        kill_runs(tmp_path)
