"""The runner on its own: time limits, signals, exit records, the announcement."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any


def _job(run_dir: Path, script: str, **job: Any) -> None:
    run_dir.mkdir()
    (run_dir / "script.sh").write_text(script)
    base = {
        "kind": "job",
        "env": {},
        "announce_url": None,
        "token": None,
        "bind_host": "127.0.0.1",
        "announce_host": "127.0.0.1",
        "cpus": 1,
        "memory_limit_mb": 0,
        "time_limit_seconds": None,
    }
    (run_dir / "job.json").write_text(json.dumps({**base, **job}))


def _run(run_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agora.deployments.runner", str(run_dir)], start_new_session=True
    )


def _exit(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "exit.json").read_text()))


def test_time_limit_ends_the_job_cleanly(tmp_path: Path) -> None:
    run = tmp_path / "r"
    _job(
        run,
        "trap 'echo got TERM; exit 0' TERM; echo started; sleep 30 & wait",
        time_limit_seconds=1,
    )
    started = time.monotonic()
    assert _run(run).wait(timeout=20) == 0
    assert time.monotonic() - started < 10
    assert _exit(run) == {"code": 0, "reason": "time limit reached"}
    assert (run / "output.log").read_text() == "started\ngot TERM\n"


def test_exit_code_and_signal_are_recorded(tmp_path: Path) -> None:
    run = tmp_path / "a"
    _job(run, "exit 7")
    assert _run(run).wait(timeout=20) == 7
    assert _exit(run) == {"code": 7, "reason": None}
    run = tmp_path / "b"
    _job(run, "sleep 30")
    proc = _run(run)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert _exit(run)["reason"] == "stopped"


def test_memory_limit_applies_to_the_job(tmp_path: Path) -> None:
    run = tmp_path / "m"
    _job(run, f"exec {sys.executable} -c 'x = bytearray(400 * 1024 * 1024)'", memory_limit_mb=100)
    assert _run(run).wait(timeout=20) != 0
    assert "MemoryError" in (run / "output.log").read_text()


def test_service_gets_a_port_and_announces_it(tmp_path: Path) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.headers["Authorization"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    control = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    run = tmp_path / "s"
    _job(
        run,
        f"exec {sys.executable} -m http.server $PORT --bind $AGORA_BIND_HOST",
        kind="service",
        announce_url=f"http://127.0.0.1:{control.server_port}/announce",
        token="tok",
    )
    proc = _run(run)
    try:
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        [(auth, body)] = seen
        assert auth == "Bearer tok"
        assert body["host"] == "127.0.0.1" and 1024 < body["port"] < 65536
        assert float((run / "listening_at").read_text()) >= float((run / "started_at").read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        control.shutdown()
