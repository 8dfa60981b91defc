"""Latency Agora's inference gateway adds to an OpenAI-compatible upstream, against LiteLLM's proxy.

One run, one machine: a fast upstream written for the benchmark (benchmarks/fast_upstream.py: a
bare asyncio protocol, or with --upstream starlette|fastapi the same answers from such an app) is
called directly, through Agora's gateway (`agora up`, with key checks, limits and metering
on) and through LiteLLM's proxy (`litellm[proxy]`, one worker, a master key, no database) that
is configured with the same upstream and key. For non-streaming and streaming chat completions:

- latency at 1, 10 and 100 concurrent clients (closed loop, keep-alive connections, after a
  warm-up; benchmarks/loadgen.py in its own process): p50 and p99 of the whole request and,
  for streams, of the time to the first SSE `data:` chunk, and what each gateway adds to the
  direct path;
- maximum requests per second: wrk (one thread) at 10 and 100 connections, the best of the
  two.

The targets are printed with PASS/FAIL; raw figures go to benchmarks/results/gateway_latency.json.

    python benchmarks/gateway_latency.py [--targets direct,agora,litellm] [--duration 4]
    python benchmarks/gateway_latency.py --targets direct,litellm        (no Agora)
    python benchmarks/gateway_latency.py --upstream fastapi   (the upstream a FastAPI app)
    python benchmarks/gateway_latency.py --agora-url http://127.0.0.1:8000 --agora-key agora_…
        --upstream-port 9000                     (a running gateway with bench-model → :9000)
    python benchmarks/gateway_latency.py --gateway-workers 4
        (Agora measured through `agora gateway --workers 4` beside `agora up`: the scale-out
        gateway, limits shared through a redis-server started for the run)

LiteLLM lives in its own virtual environment (benchmarks/.venv-litellm, from
benchmarks/requirements-litellm.txt), made here if missing; wrk comes from Debian's packages
(`make bench-deps`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from loadgen import request_body  # benchmarks/ is on sys.path as the script's folder

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
ADMIN_KEY = "agora_" + "B" * 43
ADMIN_PASSWORD = "bench-password-123"
UPSTREAM_KEY = "sk-bench-upstream-0123456789"
LITELLM_KEY = "sk-litellm-bench-master-0123456789"
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_REQUIREMENTS = BENCH / "requirements-litellm.txt"
MODEL = "bench-model"
ANSWER = "Hello! This is the bench upstream."  # what fast_upstream.py says
MODES = ("non-streaming", "streaming")


@dataclass
class Target:
    name: str
    base: str  # http://host:port/v1
    key: str

    @property
    def chat_url(self) -> str:
        return self.base + "/chat/completions"


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout} s:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Processes(contextlib.ExitStack):
    """Starts servers with their output in log files; ends them all on exit."""

    def __init__(self, logs: Path) -> None:
        super().__init__()
        self.logs = logs

    def start(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"{name}.log"
        out = self.enter_context(log.open("wb"))
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.callback(stop, proc)
        return proc, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_upstream(procs: Processes, port: int, framework: str = "bare") -> Target:
    proc, log = procs.start(
        "upstream",
        [
            sys.executable,
            str(BENCH / "fast_upstream.py"),
            "--port",
            str(port),
            "--key",
            UPSTREAM_KEY,
            "--model",
            MODEL,
            "--framework",
            framework,
        ],
    )
    wait_port(port, proc, log, 30)
    return Target("direct", f"http://127.0.0.1:{port}/v1", UPSTREAM_KEY)


def ensure_litellm() -> Path:
    """LiteLLM's own virtual environment (its pins clash with Agora's); made when missing."""
    exe = LITELLM_VENV / "bin" / "litellm"
    stamp = LITELLM_VENV / ".installed"
    if exe.exists() and stamp.exists():
        return exe
    print(
        f"installing LiteLLM into {LITELLM_VENV.relative_to(ROOT)} (once, about a minute)",
        flush=True,
    )
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(LITELLM_VENV)], check=True)
    (LITELLM_VENV / ".gitignore").write_text("*\n")
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(LITELLM_REQUIREMENTS)], check=True)
    stamp.touch()
    return exe


def litellm_version() -> str | None:
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or None


def start_litellm(procs: Processes, tmp: Path, upstream: Target) -> tuple[Target, Any]:
    exe = ensure_litellm()
    port = free_port()
    cfg = tmp / "litellm.yaml"
    # JSON is YAML: the same upstream and key as the direct path, one master key, no database.
    cfg.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": upstream.base,
                            "api_key": UPSTREAM_KEY,
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False, "set_verbose": False},
                "general_settings": {"master_key": LITELLM_KEY},
            },
            indent=2,
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        {
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",  # no .env loading
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list at start
            "LITELLM_TELEMETRY": "False",
            "DISABLE_ADMIN_UI": "True",
            "NO_DOCS": "True",
        }
    )
    proc, log = procs.start(
        "litellm",
        [
            str(exe),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env,
    )
    return Target("litellm", f"http://127.0.0.1:{port}/v1", LITELLM_KEY), (proc, log, port)


def agora_env(tmp: Path, port: int, redis_url: str | None) -> dict[str, str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGORA_")},
        "AGORA_DATA_DIR": str(tmp / "agora"),
        "AGORA_PORT": str(port),
        "AGORA_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "AGORA_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "AGORA_LOG_LEVEL": "warning",
    }
    if redis_url:
        env["AGORA_REDIS_URL"] = redis_url
    return env


def start_agora(procs: Processes, tmp: Path, redis_url: str | None = None) -> tuple[str, Any]:
    port = free_port()
    (tmp / "agora").mkdir()
    env = agora_env(tmp, port, redis_url)
    proc, log = procs.start("agora", [sys.executable, "-m", "agora.cli.main", "up"], env=env)
    return f"http://127.0.0.1:{port}", (proc, log, port)


def start_redis(procs: Processes) -> str:
    """A redis-server of its own for the run (Debian's package), nothing kept on disk."""
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("--gateway-workers needs redis-server (apt-get install redis-server)")
    port = free_port()
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc, log = procs.start("redis", cmd)
    wait_port(port, proc, log, 30)
    return f"redis://127.0.0.1:{port}/0"


def start_gateways(procs: Processes, tmp: Path, redis_url: str, workers: int) -> str:
    """`agora gateway --workers N` on the database of the `agora up` already running."""
    port = free_port()
    env = agora_env(tmp, port, redis_url)
    cmd = [sys.executable, "-m", "agora.cli.main", "gateway", "--workers", str(workers)]
    proc, log = procs.start("agora-gateway", cmd, env=env)
    wait_port(port, proc, log, 120)
    return f"http://127.0.0.1:{port}"


def expect(r: httpx.Response, status: int) -> dict[str, Any]:
    if r.status_code != status:
        raise RuntimeError(
            f"{r.request.method} {r.request.url}: {r.status_code} (wanted {status}): {r.text[:500]}"
        )
    body: dict[str, Any] = r.json()
    return body


def setup_agora(url: str, upstream: Target) -> str:
    """The model (external, the upstream and its key), limits that never bind, an inference key."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as c:
        expect(
            c.post(
                "/api/v1/models",
                json={
                    "name": MODEL,
                    "kind": "llm",
                    "source": "external",
                    "external_url": upstream.base,
                    "external_key": UPSTREAM_KEY,
                    "public": True,
                },
            ),
            201,
        )
        return inference_key(c)


def inference_key(c: httpx.Client) -> str:
    """Project limits that never bind (so limit checks run) and an inference key for the
    default project. Agora makes API keys only from a signed-in session: the admin signs in,
    as `agora login` does."""
    expect(
        c.put(
            "/api/v1/projects/default/limits",
            json={
                "rpm": 100_000_000,
                "tpm": 100_000_000_000,
                "tokens_per_day": 100_000_000_000,
                "tokens_per_month": 100_000_000_000,
            },
        ),
        200,
    )
    login = expect(
        c.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}),
        200,
    )
    key = expect(
        c.post(
            "/api/v1/projects/default/keys",
            json={"name": "bench", "scopes": ["inference"]},
            headers={"Authorization": f"Bearer {login['token']}"},
        ),
        201,
    )
    return str(key["secret"])


def wait_model(target: Target, timeout: float = 60) -> None:
    """Until the gateway lists the model for this key."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(
                target.base + "/models",
                headers={"Authorization": f"Bearer {target.key}"},
                timeout=5,
            )
            if r.status_code == 200 and any(m.get("id") == MODEL for m in r.json().get("data", [])):
                return
            last = f"{r.status_code} {r.text[:300]}"
        except (httpx.HTTPError, ValueError) as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise TimeoutError(
        f"{target.name}: {MODEL} not listed at {target.base}/models after {timeout} s: {last}"
    )


def verify(target: Target) -> None:
    """One request of each kind must come back with the upstream's answer."""
    headers = {"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"}
    with httpx.Client(headers=headers, timeout=30) as c:
        r = c.post(target.chat_url, content=request_body(MODEL, False))
        content = expect(r, 200)["choices"][0]["message"]["content"]
        if content != ANSWER:
            raise RuntimeError(f"{target.name}: answer {content!r}, not the upstream's {ANSWER!r}")
        words, done = [], False
        with c.stream("POST", target.chat_url, content=request_body(MODEL, True)) as s:
            if s.status_code != 200:
                raise RuntimeError(f"{target.name}: stream {s.status_code}: {s.read()[:300]!r}")
            for line in s.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data:"):
                    for ch in json.loads(line[5:]).get("choices") or []:
                        words.append((ch.get("delta") or {}).get("content") or "")
        if "".join(words) != ANSWER or not done:
            raise RuntimeError(f"{target.name}: stream said {''.join(words)!r} (done: {done})")


def settle(target: Target) -> None:
    """After a run, one request: it queues behind whatever the target still works on."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            target.chat_url,
            content=request_body(MODEL, False),
            headers={"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"},
            timeout=60,
        )
    time.sleep(0.3)


# ---------------------------------------------------------------- load


def latency_run(
    target: Target, stream: bool, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    warmup, duration = args.warmup, args.duration
    cmd = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--url", target.chat_url,
        "--key", target.key,
        "--model", MODEL,
        "--concurrency", str(concurrency),
        "--warmup", str(warmup),
        "--duration", str(duration),
        "--min-requests", str(args.min_requests),
        "--max-duration", str(args.max_duration),
    ]  # fmt: skip
    if stream:
        cmd.append("--stream")
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=warmup + args.max_duration + 120, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"loadgen against {target.name} failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(tmp: Path, target: Target, stream: bool) -> Path:
    body = request_body(MODEL, stream).decode()
    path = tmp / f"wrk-{target.name}-{'stream' if stream else 'plain'}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{body}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {target.key}"\n' + WRK_DONE
    )
    return path


def wrk_run(
    tmp: Path, target: Target, stream: bool, connections: int, duration: float
) -> dict[str, Any]:
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
        "-s", str(wrk_script(tmp, target, stream)), target.chat_url,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK-JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk against {target.name} failed:\n{out.stdout[-1000:]}{out.stderr[-1000:]}"
        )
    r: dict[str, Any] = json.loads(line.removeprefix("WRK-JSON "))
    r["connections"] = connections
    r["errors"] = r["status_errors"] + r["timeouts"] + r["connect_errors"] + r["write_errors"]
    r["rps"] = (r["requests"] - r["status_errors"]) / (r["duration_us"] / 1e6)
    return r


def wrk_version() -> str | None:
    exe = shutil.which("wrk")
    if exe is None:
        return None
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).split("Copyright")[0].strip() or None


# ---------------------------------------------------------------- report


def fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    s = f"{v:+.3f}" if signed else f"{v:.3f}"
    if abs(v) >= 10:
        s = f"{v:+.1f}" if signed else f"{v:.1f}"
    if abs(v) >= 1000:
        s = f"{v:+.0f}" if signed else f"{v:.0f}"
    return s


def pct(r: dict[str, Any], key: str, q: str) -> float:
    return float(r.get(key, {}).get(q, math.nan))


def print_latency(
    mode: str, results: dict[int, dict[str, dict[str, Any]]], args: argparse.Namespace
) -> None:
    stream = mode == "streaming"
    print(
        f"\n{mode}: latency in ms; C clients in closed loop on keep-alive connections, "
        f"{args.duration:g} s (≥ {args.min_requests} requests) after ≥ {args.warmup:g} s of "
        "warm-up; +x: added to the direct path"
    )
    head = f"{'C':>4} {'target':8} {'req/s':>8} {'p50':>8} {'p99':>8} {'+p50':>8} {'+p99':>8}"
    if stream:
        head += f" {'TTFB p50':>9} {'TTFB p99':>9} {'+TTFB p50':>9}"
    print(head + f" {'errors':>6}")
    for c, by_target in results.items():
        d = by_target["direct"]
        for name, r in by_target.items():
            added = name != "direct"
            line = (
                f"{c:>4} {name:8} {r['rps']:8.0f} {fmt(pct(r, 'latency_ms', 'p50')):>8} "
                f"{fmt(pct(r, 'latency_ms', 'p99')):>8} "
                f"{fmt(pct(r, 'latency_ms', 'p50') - pct(d, 'latency_ms', 'p50'), True) if added else '':>8} "
                f"{fmt(pct(r, 'latency_ms', 'p99') - pct(d, 'latency_ms', 'p99'), True) if added else '':>8}"
            )
            if stream:
                line += (
                    f" {fmt(pct(r, 'ttfb_ms', 'p50')):>9} {fmt(pct(r, 'ttfb_ms', 'p99')):>9} "
                    f"{fmt(pct(r, 'ttfb_ms', 'p50') - pct(d, 'ttfb_ms', 'p50'), True) if added else '':>9}"
                )
            print(line + f" {r['errors']:>6}" + (f"  {r['error_sample']}" if r["errors"] else ""))


def checks(
    latency: dict[str, Any], throughput: dict[str, Any], names: list[str]
) -> list[dict[str, Any]]:
    """The issue's targets, for each gateway measured (they are Agora's; LiteLLM's for scale)."""
    out: list[dict[str, Any]] = []

    def add(what: str, target: str, value: float, limit: float, at_most: bool) -> None:
        ok = (value <= limit) if at_most else (value >= limit)
        out.append(
            {
                "check": what,
                "target": target,
                "value": value,
                "limit": limit,
                "ok": bool(ok and not math.isnan(value)),
            }
        )

    gateways = [n for n in names if n != "direct"]
    for mode in MODES:
        for c in (1, 10):
            if c not in latency[mode]:
                continue
            by = latency[mode][c]
            d = by["direct"]
            for g in gateways:
                r = by[g]
                add(
                    f"{mode} p50 added @{c} ≤ 1 ms",
                    g,
                    pct(r, "latency_ms", "p50") - pct(d, "latency_ms", "p50"),
                    1.0,
                    True,
                )
                add(
                    f"{mode} p99 added @{c} ≤ 5 ms",
                    g,
                    pct(r, "latency_ms", "p99") - pct(d, "latency_ms", "p99"),
                    5.0,
                    True,
                )
                if mode == "streaming":
                    add(
                        f"streaming TTFB p50 added @{c} ≤ 1 ms",
                        g,
                        pct(r, "ttfb_ms", "p50") - pct(d, "ttfb_ms", "p50"),
                        1.0,
                        True,
                    )
    for mode in MODES:
        t = throughput[mode]
        for g in gateways:
            if g != "litellm" and "litellm" in t:
                add(
                    f"{mode} max req/s ≥ 10× LiteLLM's",
                    g,
                    t[g]["max_rps"] / t["litellm"]["max_rps"],
                    10.0,
                    False,
                )
            add(
                f"{mode} max req/s ≥ ⅓ of direct",
                g,
                t[g]["max_rps"] / t["direct"]["max_rps"],
                1 / 3,
                False,
            )
    for g in gateways:
        failed = sum(r[g]["errors"] for mode in MODES for r in latency[mode].values()) + sum(
            w["errors"] for mode in MODES for w in throughput[mode][g]["runs"]
        )
        add("no failed requests", g, failed, 0, True)
    return out


def print_checks(results: list[dict[str, Any]], names: list[str]) -> None:
    gateways = [n for n in names if n != "direct"]
    print("\ntargets (Agora's; LiteLLM's figures for scale)")
    print(f"{'check':38} " + " ".join(f"{g:>16}" for g in gateways))
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        rows.setdefault(r["check"], {})[r["target"]] = r
    for check, by in rows.items():
        cells = []
        for g in gateways:
            r = by.get(g)
            if r is None:
                cells.append(f"{'—':>16}")
                continue
            v = r["value"]
            shown = (
                f"{v:.2f}×"
                if "req/s" in check
                else (f"{v:.0f}" if check.startswith("no failed") else f"{v:+.3f} ms")
            )
            cells.append(f"{shown + (' PASS' if r['ok'] else ' FAIL'):>16}")
        print(f"{check:38} " + " ".join(cells))


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets",
        default="direct,agora,litellm",
        help="comma-separated; direct is always measured",
    )
    parser.add_argument("--concurrency", default="1,10,100", help="clients for the latency runs")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds before each latency run counts"
    )
    parser.add_argument(
        "--duration", type=float, default=4.0, help="seconds each latency run counts"
    )
    parser.add_argument(
        "--min-requests", type=int, default=100, help="a latency run goes on until this many"
    )
    parser.add_argument(
        "--max-duration", type=float, default=15.0, help="…for at most these seconds"
    )
    parser.add_argument("--wrk-connections", default="10,100", help="max req/s: the best of these")
    parser.add_argument("--wrk-duration", type=float, default=4.0)
    parser.add_argument("--agora-url", help="measure this running Agora instead of starting one")
    parser.add_argument("--agora-key", help="an inference key for --agora-url")
    parser.add_argument(
        "--upstream-port",
        type=int,
        default=0,
        help="fixed port for the upstream (default: a free one)",
    )
    parser.add_argument(
        "--upstream",
        choices=("bare", "starlette", "fastapi"),
        default="bare",
        help="the upstream: a bare asyncio protocol, a Starlette or a FastAPI app "
        "(fast_upstream.py)",
    )
    parser.add_argument(
        "--gateway-workers",
        type=int,
        default=0,
        help="measure Agora through `agora gateway --workers N` (limits in Redis) beside "
        "`agora up`, not `agora up` itself",
    )
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--out", type=Path, help="raw figures (default: results/gateway_latency"
                        "[-fastapi].json)")  # fmt: skip
    args = parser.parse_args()
    if args.out is None:
        suffix = "" if args.upstream == "bare" else f"-{args.upstream}"
        if args.gateway_workers:
            suffix += f"-workers{args.gateway_workers}"
        args.out = BENCH / f"results/gateway_latency{suffix}.json"
    names = ["direct"] + [t for t in args.targets.split(",") if t and t != "direct"]
    if args.agora_url and "agora" not in names:
        names.insert(1, "agora")
    unknown = set(names) - {"direct", "agora", "litellm"}
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.agora_url and not args.agora_key:
        parser.error("--agora-url needs --agora-key (an inference key)")
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `make bench-deps` (or apt-get install wrk)")
    conc = [int(c) for c in args.concurrency.split(",")]
    wrk_conns = [int(c) for c in args.wrk_connections.split(",")]
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(
            f"note: load average {load_before[0]:.2f} before the run: other work shares the CPUs",
            flush=True,
        )

    # The servers run in sessions of their own (no Ctrl+C noise); a TERM ends them through
    # the exit stack like Ctrl+C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="agora-gw-bench-") as tmp_s,
        Processes(args.logs or Path(tmp_s)) as procs,
    ):
        tmp = Path(tmp_s)
        upstream = start_upstream(procs, args.upstream_port or free_port(), args.upstream)
        targets = {"direct": upstream}
        pending: dict[str, Any] = {}
        # Both gateways start side by side; each is waited for in turn.
        if "litellm" in names:
            targets["litellm"], pending["litellm"] = start_litellm(procs, tmp, upstream)
        if "agora" in names:
            if args.agora_url:
                base = args.agora_url.rstrip("/").removesuffix("/v1")
                targets["agora"] = Target("agora", base + "/v1", args.agora_key)
            else:
                redis_url = start_redis(procs) if args.gateway_workers else None
                url, pending["agora"] = start_agora(procs, tmp, redis_url)
                wait_port(pending["agora"][2], pending["agora"][0], pending["agora"][1], 120)
                targets["agora"] = Target("agora", url + "/v1", setup_agora(url, upstream))
                if redis_url:
                    url = start_gateways(procs, tmp, redis_url, args.gateway_workers)
                    targets["agora"] = Target("agora", url + "/v1", targets["agora"].key)
        if "litellm" in pending:
            proc, log, port = pending["litellm"]
            wait_port(port, proc, log, 180)
        for name in names:
            wait_model(targets[name])
            verify(targets[name])
        print(
            f"ready after {time.monotonic() - started:.0f} s: "
            + ", ".join(f"{n} {targets[n].base}" for n in names),
            flush=True,
        )

        latency: dict[str, dict[int, dict[str, dict[str, Any]]]] = {m: {} for m in MODES}
        throughput: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in MODES}
        # Targets take turns within each setting, so drifting background load hits them alike.
        for mode in MODES:
            for c in conc:
                latency[mode][c] = {}
                for name in names:
                    print(f"  {mode} C={c} {name} …", end="", flush=True)
                    r = latency_run(targets[name], mode == "streaming", c, args)
                    latency[mode][c][name] = r
                    print(
                        f" {r['requests']} requests, p50 {fmt(pct(r, 'latency_ms', 'p50'))} ms",
                        flush=True,
                    )
                    settle(targets[name])
        for mode in MODES:
            for name in names:
                throughput[mode][name] = {"runs": []}
            for n in wrk_conns:
                for name in names:
                    print(f"  {mode} max req/s, wrk -c{n} {name} …", end="", flush=True)
                    w = wrk_run(tmp, targets[name], mode == "streaming", n, args.wrk_duration)
                    throughput[mode][name]["runs"].append(w)
                    print(f" {w['rps']:.0f} req/s", flush=True)
                    settle(targets[name])
            for name in names:
                throughput[mode][name]["max_rps"] = max(
                    w["rps"] for w in throughput[mode][name]["runs"]
                )

    elapsed = time.monotonic() - started
    for mode in MODES:
        print_latency(mode, latency[mode], args)
    print(
        f"\nmaximum requests per second: wrk -t1, the best of -c{' and -c'.join(map(str, wrk_conns))}, {args.wrk_duration:g} s each"
    )
    print(
        f"{'mode':14} {'target':8} "
        + " ".join(f"{'c' + str(n):>8}" for n in wrk_conns)
        + f" {'max':>8} {'÷ direct':>9} {'÷ litellm':>9}"
    )
    for mode in MODES:
        t = throughput[mode]
        for name in names:
            runs = " ".join(f"{w['rps']:8.0f}" for w in t[name]["runs"])
            vs_d = t[name]["max_rps"] / t["direct"]["max_rps"]
            vs_l = t[name]["max_rps"] / t["litellm"]["max_rps"] if "litellm" in t else math.nan
            print(f"{mode:14} {name:8} {runs} {t[name]['max_rps']:8.0f} {vs_d:9.3f} {fmt(vs_l):>9}")
    results = checks(latency, throughput, names)
    if len(names) > 1:
        print_checks(results, names)
    if "agora" not in names:
        print("\nAgora not measured (--targets): its targets are not checked")

    agora_version = None
    with contextlib.suppress(Exception):
        import agora

        agora_version = agora.__version__
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds": round(elapsed, 1),
                "machine": {
                    "nproc": os.cpu_count(),
                    "platform": platform.platform(),
                    "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(),
                },
                "versions": {
                    "python": platform.python_version(),
                    "litellm": litellm_version() if "litellm" in names else None,
                    "agora": agora_version,
                    "agora_commit": commit or None,
                    "wrk": wrk_version(),
                },
                "settings": {
                    "targets": names,
                    "upstream": args.upstream,
                    "agora_url": args.agora_url,
                    "gateway_workers": args.gateway_workers or None,
                    "concurrency": conc,
                    "warmup_s": args.warmup,
                    "duration_s": args.duration,
                    "wrk_connections": wrk_conns,
                    "wrk_duration_s": args.wrk_duration,
                    "request": request_body(MODEL, False).decode(),
                },
                "latency": latency,
                "throughput": throughput,
                "checks": results,
            },
            indent=2,
        )
    )
    print(f"\n{elapsed:.0f} s; raw figures: {args.out}")
    agora_missed = [r for r in results if r["target"] == "agora" and not r["ok"]]
    if args.strict and agora_missed:
        sys.exit(f"{len(agora_missed)} of Agora's targets missed")


if __name__ == "__main__":
    main()
