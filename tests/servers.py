"""Real servers for the tests, started on loopback from Debian's packages.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
``postgres`` system user (created by Debian's package) and is started through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL's {name} is missing: run 'make test-deps' (apt-get install postgresql)"
        )
    return candidates[-1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster; yields a SQLAlchemy URL of its 'agora' database."""
    if external := os.environ.get("AGORA_TEST_POSTGRES_URL"):
        yield external
        return
    root = Path(tempfile.mkdtemp(prefix="agora-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    log = root / "server.log"
    subprocess.run(
        _as_postgres(
            [
                _pg_bin("initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "agora",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            [
                _pg_bin("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            _as_postgres(
                [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "agora", "agora"]
            ),
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://agora@127.0.0.1:{port}/agora"
    finally:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def wait_for_port(host: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


@contextlib.contextmanager
def agora_server(settings, port: int):  # type: ignore[no-untyped-def]
    """Agora under uvicorn in a thread (lifespan and orchestrator included); yields the runtime.

    Leaving the block shuts it down the way a stopped control plane goes: processes it started
    keep running.
    """
    import threading

    import uvicorn

    from agora.app import create_app
    from agora.bootstrap import bootstrap
    from agora.gateway.front import GatewayProtocol
    from agora.runtime import Runtime

    runtime = Runtime.create(settings)
    app = create_app(runtime=runtime)
    bootstrap(runtime)
    server = uvicorn.Server(
        # The HTTP protocol `agora up` runs: /v1 answered by the gateway's lean front.
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            http=GatewayProtocol,
        )
    )
    thread = threading.Thread(target=server.run, name="agora-server", daemon=True)
    thread.start()
    try:
        wait_for_port("127.0.0.1", port)
        yield runtime
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        runtime.db.dispose()


def kill_runs(root: Path) -> None:
    """End deployment processes a test left running (run directories under ``root``)."""
    import signal

    for pid_file in root.glob("**/runs/*/pid"):
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            pid = int(pid_file.read_text())
            try:
                if pid_file.parent.name.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue  # the pid now belongs to another process
            except OSError:
                pass  # the leader is gone; its group id cannot be reused while members live
            os.killpg(pid, signal.SIGKILL)
