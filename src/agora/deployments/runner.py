"""Runs one deployment's script on its node, under any backend.

``python -m agora.deployments.runner RUN_DIR`` reads ``RUN_DIR/job.json``, applies the resource
limits the OS allows, starts ``RUN_DIR/script.sh`` under bash with its output in
``RUN_DIR/output.log``, and, for a service, picks a free port ($PORT), waits until the service
listens and announces ``host:port`` to the control plane with the deployment's token. It
forwards SIGTERM to the script, ends it at its time limit, and writes ``RUN_DIR/exit.json`` so
the exit status survives a restart of the control plane. Standard library only: it starts fast.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

GRACE_SECONDS = 10


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def apply_limits(job: dict[str, Any]) -> None:
    cpus = int(job.get("cpus") or 0)
    if cpus and hasattr(os, "sched_getaffinity"):
        available = sorted(os.sched_getaffinity(0))
        if cpus < len(available):
            os.sched_setaffinity(0, available[:cpus])
    memory_mb = int(job.get("memory_limit_mb") or 0)
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def write_exit(run_dir: Path, code: int, reason: str | None) -> None:
    tmp = run_dir / "exit.json.tmp"
    tmp.write_text(json.dumps({"code": code, "reason": reason}))
    os.replace(tmp, run_dir / "exit.json")


def announce(job: dict[str, Any], host: str, port: int, child: subprocess.Popen[bytes]) -> None:
    """Wait until the service accepts connections, then tell the control plane where it is."""
    import urllib.error  # imported here: 75 ms that would otherwise delay the service's start
    import urllib.request

    probe_host = "127.0.0.1" if job["bind_host"] in ("0.0.0.0", "") else job["bind_host"]  # noqa: S104
    while child.poll() is None:
        try:
            with socket.create_connection((probe_host, port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    (Path(job["run_dir"]) / "listening_at").write_text(repr(time.time()))
    body = json.dumps({"host": host, "port": port}).encode()
    while child.poll() is None:
        request = urllib.request.Request(  # noqa: S310 - the control plane's own URL
            job["announce_url"],
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {job['token']}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                print(f"agora-runner: announcement refused: HTTP {exc.code}", file=sys.stderr)
                return
        except OSError:
            pass  # the control plane may be restarting: keep trying while the service runs
        time.sleep(1)


def main(argv: list[str]) -> int:
    run_dir = Path(argv[1])
    started = time.time()
    job = json.loads((run_dir / "job.json").read_text())
    job["run_dir"] = str(run_dir)
    (run_dir / "runner.pid").write_text(str(os.getpid()))
    # When the node started the job: lets benchmarks split the backend's time from Agora's.
    (run_dir / "started_at").write_text(repr(started))
    apply_limits(job)
    env = {**os.environ, **job["env"]}
    env["AGORA_BIND_HOST"] = job["bind_host"]
    port = None
    if job["kind"] == "service":
        port = free_port(job["bind_host"])
        env["PORT"] = str(port)
    with open(run_dir / "output.log", "ab", buffering=0) as log:
        child = subprocess.Popen(  # noqa: S603
            ["/bin/bash", str(run_dir / "script.sh")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=run_dir,
        )
    reason: list[str] = []

    def stop(signum: int, _frame: object) -> None:
        reason.append("stopped")
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    if port is not None:
        host = job.get("announce_host") or socket.gethostname()
        threading.Thread(target=announce, args=(job, host, port, child), daemon=True).start()
    limit = job.get("time_limit_seconds")
    try:
        code = child.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        reason.append("time limit reached")
        child.terminate()
        try:
            code = child.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
    if code < 0:
        code = 128 - code  # killed by a signal, as the shell reports it
    write_exit(run_dir, code, reason[-1] if reason else None)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
