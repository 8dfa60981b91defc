"""Time from `agora deploy` to ready for a trivial HTTP service, on the local and Slurm backends.

Each run is split into the backend's share (from the moment Agora submits until the service
listens on its node: sbatch, Slurm scheduling, process start, the service's own start) and
Agora's share (everything else: the API call, the orchestrator noticing, the announcement, the
readiness probe). The direct path — the same service started without Agora (a subprocess, or
sbatch and a poll of the port) — runs in the same session for comparison.

    python benchmarks/deploy_latency.py [--runs 5]      (root: it starts the Slurm test cluster)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEY = "agora_" + "B" * 43
SERVE = "exec python3 -m http.server $PORT --bind $AGORA_BIND_HOST"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.005)
    raise TimeoutError(port)


def start_slurm() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/slurm-test-cluster.sh"), "start"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line.removeprefix("export ").partition("=")
            env[k] = v.strip("'\"")
    return env


def start_agora(data: Path, slurm_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    backends = [
        {"name": "local", "kind": "local"},
        {
            "name": "slurm",
            "kind": "slurm",
            "options": {
                "partition": "debug",
                "work_root": str(data / "shared"),
                "python": sys.executable,
                "env": slurm_env,
            },
        },
    ]
    env = {
        **os.environ,
        "AGORA_DATA_DIR": str(data),
        "AGORA_PORT": str(port),
        "AGORA_BOOTSTRAP_ADMIN_KEY": KEY,
        "AGORA_BOOTSTRAP_ADMIN_PASSWORD": "bench-password-123",
        "AGORA_BACKENDS": json.dumps(backends),
        "AGORA_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agora.cli.main", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def ts(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def via_agora(client: httpx.Client, data: Path, backend: str) -> dict[str, float]:
    t0 = time.time()
    r = client.post(
        "/api/v1/projects/default/deployments",
        json={
            "template": "http-service",
            "inputs": {"command": SERVE},
            "backends": [backend],
        },
    )
    r.raise_for_status()
    dep_id = r.json()["id"]
    while True:
        dep = client.get(f"/api/v1/projects/default/deployments/{dep_id}").json()
        if dep["state"] == "running":
            break
        if dep["state"] == "failed":
            raise RuntimeError(dep["reason"])
        time.sleep(0.005)
    total = time.time() - t0
    attempt = dep["attempts"][-1]
    run_key = attempt["job_id"].split("@")[-1]
    run_dir = (
        (data / "shared" / "runs" / run_key) if backend == "slurm" else (data / "runs" / run_key)
    )
    listening = float((run_dir / "listening_at").read_text())
    started = float((run_dir / "started_at").read_text())
    submitted = ts(attempt["submitted_at"])
    client.post(f"/api/v1/projects/default/deployments/{dep_id}/stop")
    while client.get(f"/api/v1/projects/default/deployments/{dep_id}").json()["state"] != "stopped":
        time.sleep(0.05)
    backend_share = listening - submitted
    return {
        "total": total,
        "backend": backend_share,
        "agora": total - backend_share,
        "to_submit": submitted - t0,
        "node_start": started - submitted,
    }


def direct_local() -> float:
    port = free_port()
    t0 = time.time()
    # The same command line the template runs, through bash as the runner does.
    proc = subprocess.Popen(
        ["bash", "-c", f"exec python3 -m http.server {port} --bind 127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    elapsed = time.time() - t0
    proc.terminate()
    proc.wait()
    return elapsed


def direct_slurm(env: dict[str, str]) -> float:
    port = free_port()
    t0 = time.time()
    job = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-p",
            "debug",
            "-o",
            "/dev/null",
            f"--wrap=exec python3 -m http.server {port} --bind 127.0.0.1",
        ],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    wait_port(port)
    elapsed = time.time() - t0
    subprocess.run(["scancel", job], env={**os.environ, **env}, check=False)
    return elapsed


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/deploy_latency.json")
    args = parser.parse_args()
    slurm_env = start_slurm()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="agora-bench-") as tmp:
        proc, url = start_agora(Path(tmp), slurm_env)
        try:
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
            ) as c:
                for backend in ("local", "slurm"):
                    runs = [via_agora(c, Path(tmp), backend) for _ in range(args.runs)]
                    direct = [
                        direct_local() if backend == "local" else direct_slurm(slurm_env)
                        for _ in range(args.runs)
                    ]
                    results[backend] = {k: [r[k] for r in runs] for k in runs[0]}
                    results[backend]["direct"] = direct
        finally:
            proc.terminate()
            proc.wait()
    print(f"deploy → ready, seconds, median of {args.runs} runs (min, max)\n")
    print(
        f"{'backend':8} {'direct path':28} {'via Agora':28} {'backend share':28} {'Agora share':28}"
    )
    for backend, r in results.items():
        print(
            f"{backend:8} {summary(r['direct']):28} {summary(r['total']):28} "
            f"{summary(r['backend']):28} {summary(r['agora']):28}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "results": results}, indent=2))
    print(f"\nraw figures: {args.out}")


if __name__ == "__main__":
    main()
