"""Latency and throughput of DEEPaaS modules: Agora's model server against DEEPaaS's deepaas-run.

One run, one machine, the same modules and the same trained models (trained once here, in a
temporary $AGORA_MODULE_DATA every server reads):

- iris predict: four form fields (application/x-www-form-urlencoded), a JSON answer;
- digits predict: a PNG upload (multipart/form-data, a 128×128 picture of a data-set digit),
  a JSON answer;
- wordcount predict: a text file upload (multipart/form-data, 2 KiB), a JSON answer checked
  against the module's schema: the small DEEPaaS module with a file argument, whose own work
  is small (benchmarks/modules/wordcount, found through PYTHONPATH by every server);

each served by

- (a) deepaas:  `deepaas-run --model-name M` (DEEPaaS 2.6 from .venv-deepaas);
- (b) agora:    `python -m agora.modelserver --module M` (Agora's model server, directly);
- (c) platform: `agora up` in a temporary data directory serving the module as users deploy
  it (one replica of the deepaas-model template, one worker), called at
  `/m/{model}/v2/models/{module}/predict/` with `Authorization: Bearer <inference key>`.

Both servers run with the same number of worker processes (--workers, default 1, each's
default). Load: benchmarks/loadgen.py in its own process, C clients in closed loop on
keep-alive connections, after a warm-up; p50/p99 latency and requests per second at 1 and 10
clients. Target (Agora's): at least 2× deepaas-run's requests per second at an equal or lower
p50. Raw figures go to benchmarks/results/modelserver_latency.json.

    python benchmarks/modelserver_latency.py [--targets deepaas,agora,platform] [--duration 3] [--rounds 3]
    python benchmarks/modelserver_latency.py --platform-url http://127.0.0.1:8000 \
        --platform-key agora_…    (a running platform with models iris and digits registered)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import io
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

# benchmarks/ is on sys.path as the script's folder.
from gateway_latency import (
    ADMIN_KEY,
    Processes,
    expect,
    fmt,
    free_port,
    inference_key,
    start_agora,
    wait_port,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
DEEPAAS_VENV = ROOT / ".venv-deepaas"
DEEPAAS_RUN = DEEPAAS_VENV / "bin" / "deepaas-run"
MODULES = ("iris", "digits", "wordcount")
MODULES_PATH = BENCH / "modules"  # the wordcount module, as an installed distribution
TARGETS = ("deepaas", "agora", "platform")
IRIS_FLOWER = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.8, "petal_width": 2.2}
DIGIT_INDEX = 3  # the data set's fourth image, a 3
BOUNDARY = "agora-bench-7d1c0f2e"


@dataclass
class Target:
    """Where one module's DEEPaaS API answers: ``{base}/v2/models/{module}/…``."""

    name: str
    module: str
    base: str  # http://host:port, or http://host:port/m/{model} through the platform
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def predict_url(self) -> str:
        return f"{self.base}/v2/models/{self.module}/predict/"


# ---------------------------------------------------------------- requests


@functools.cache
def digit_png() -> tuple[bytes, int]:
    """A picture of one of the data set's digits, 128×128 pixels, dark ink on white paper."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = 255 - np.round(digits.images[DIGIT_INDEX] * (255 / 16)).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize((128, 128), Image.Resampling.BILINEAR).save(out, format="PNG")
    return out.getvalue(), int(digits.target[DIGIT_INDEX])


TEXT_LINE = "the quick brown fox jumps over the lazy dog while researchers train models\n"
TEXT = TEXT_LINE * 28  # 2,100 bytes, 28 lines, 364 words


def predict_body(module: str) -> tuple[bytes, str]:
    """The predict request's body and content type: form fields (iris) or an upload."""
    if module == "iris":
        return urlencode(IRIS_FLOWER).encode(), "application/x-www-form-urlencoded"
    if module == "digits":
        field, filename, ctype, data = "image", "digit.png", "image/png", digit_png()[0]
    else:
        field, filename, ctype, data = "text", "notes.txt", "text/plain", TEXT.encode()
    body = (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def raw_request(target: Target) -> bytes:
    """The whole HTTP/1.1 request loadgen sends again and again on each connection."""
    u = urlsplit(target.predict_url)
    body, content_type = predict_body(target.module)
    head = [
        f"POST {u.path} HTTP/1.1",
        f"Host: {u.netloc}",
        "Accept: application/json",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in target.headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def expected(module: str) -> tuple[str, Any]:
    """The key in the JSON answer that `verify` checks, and its right value."""
    if module == "iris":
        return "species", "virginica"
    if module == "wordcount":
        return "words", len(TEXT.split())
    return "digit", digit_png()[1]


def verify(target: Target) -> None:
    """One request through httpx, as a client would send it, must get the right answer."""
    body, content_type = predict_body(target.module)
    headers = {**target.headers, "Content-Type": content_type, "Accept": "application/json"}
    r = httpx.post(target.predict_url, content=body, headers=headers, timeout=60)
    key, value = expected(target.module)
    answer = expect(r, 200)
    if answer.get(key) != value:
        raise RuntimeError(
            f"{target.name} {target.module}: {key} {answer.get(key)!r}, not {value!r}"
        )


# ---------------------------------------------------------------- servers


def train_models(data: Path) -> None:
    """The modules' default models, trained once here: every server loads the same files."""
    os.environ["AGORA_MODULE_DATA"] = str(data)
    from agora.examples import digits, iris

    digits.warm()
    iris.warm()


Started = tuple[Target, tuple[subprocess.Popen[bytes], Path, int]]


def start_deepaas(
    procs: Processes, module: str, env: dict[str, str], workers: int, tmp: Path
) -> Started:
    port = free_port()
    cmd = [str(DEEPAAS_RUN), "--model-name", module, "--listen-ip", "127.0.0.1",
           "--listen-port", str(port), "--workers", str(workers)]  # fmt: skip
    # DEEPaaS keeps every upload in a temporary file it never removes: keep them in ours.
    uploads = tmp / f"deepaas-{module}-uploads"
    uploads.mkdir()
    proc, log = procs.start(f"deepaas-{module}", cmd, env={**env, "TMPDIR": str(uploads)})
    return Target("deepaas", module, f"http://127.0.0.1:{port}"), (proc, log, port)


def start_modelserver(
    procs: Processes, module: str, env: dict[str, str], workers: int, tmp: Path
) -> Started:
    port = free_port()
    cmd = [sys.executable, "-m", "agora.modelserver", "--module", module, "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers),
           "--state-dir", str(tmp / f"modelserver-{module}")]  # fmt: skip
    proc, log = procs.start(f"agora-{module}", cmd, env=env)
    return Target("agora", module, f"http://127.0.0.1:{port}"), (proc, log, port)


def wait_ready(target: Target, proc: subprocess.Popen[bytes], log: Path, port: int) -> None:
    """The port opens, then the module lists and answers (warming can come after the port)."""
    wait_port(port, proc, log, 120)
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{target.base}/v2/models/", headers=target.headers, timeout=5)
            if r.status_code == 200:
                break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target.name} {target.module}: /v2/models/ not answering")
        time.sleep(0.1)
    verify(target)


# ---------------------------------------------------------------- (c) the platform


def platform_target(base_url: str, headers: dict[str, str], model: str, module: str) -> Target:
    """(c) Through the platform with auth: ``{base_url}/m/{model}/v2/models/{module}/predict/``
    with ``headers`` (``Authorization: Bearer <agora api key>`` with the inference scope)."""
    return Target("platform", module, f"{base_url.rstrip('/')}/m/{model}", dict(headers))


def setup_platform(url: str, modules: list[str]) -> str:
    """Each module served by the platform as users deploy it (one replica: a deployment of the
    deepaas-model template on the local backend, one worker, the same server code as (b)),
    request limits that never bind, and an inference key (made from a signed-in session, as
    `agora login` does)."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as c:
        for module in modules:
            expect(
                c.post(
                    "/api/v1/models",
                    json={
                        "name": module,
                        "kind": "deepaas",
                        "inputs": {"module": module, "workers": 1},
                        "min_replicas": 1,
                        "max_replicas": 1,
                        "public": True,
                    },
                ),
                201,
            )
        return inference_key(c)


def teardown_platform(url: str, modules: list[str], data: Path) -> None:
    """Removes the models, which stops their replicas (deployments outlive `agora up` by
    design, to be adopted by the next start), and waits for their processes to end; kills what
    is left after 30 s."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as c:
        for module in modules:
            with contextlib.suppress(httpx.HTTPError):
                c.delete(f"/api/v1/models/{module}")
    deadline = time.monotonic() + 30
    while (left := replica_processes(data)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def replica_processes(data: Path) -> list[int]:
    """Deployment runners started from ``data``, and the servers in their sessions."""
    runners: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"agora.deployments.runner" in cmdline and str(data).encode() in cmdline:
                runners.append(int(entry.name))
    found = set(runners)
    for pid in runners:
        with contextlib.suppress(OSError):
            session = os.getsid(pid)
            found.update(
                int(e.name) for e in Path("/proc").iterdir()
                if e.name.isdigit() and _sid(int(e.name)) == session
            )  # fmt: skip
    return sorted(found)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def wait_platform(target: Target, timeout: float = 180) -> None:
    """Until the platform passes predict through (the model's directory entry is live)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            verify(target)
            return
        except (RuntimeError, httpx.HTTPError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---------------------------------------------------------------- load


def latency_run(
    target: Target, concurrency: int, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    request_file = tmp / f"request-{target.name}-{target.module}.http"
    request_file.write_bytes(raw_request(target))
    # Agora's server writes compact JSON, DEEPaaS's has spaces: check a value, not "key": value.
    answer = {"iris": '"virginica"', "digits": '"digit"', "wordcount": '"longest_word"'}[
        target.module
    ]
    cmd = [
        sys.executable, str(BENCH / "loadgen.py"),
        "--url", target.predict_url,
        "--request-file", str(request_file),
        "--expect", answer,
        "--concurrency", str(concurrency),
        "--warmup", str(args.warmup),
        "--duration", str(args.duration),
        "--min-requests", str(args.min_requests),
        "--max-duration", str(args.max_duration),
    ]  # fmt: skip
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=args.warmup + args.max_duration + 120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"loadgen against {target.name} {target.module} failed:\n{out.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def median_run(runs: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any]:
    """A target's run with the median req/s (its p50 and p99 from that same run), with every
    round's req/s and, against deepaas-run, the median of the rounds' ratios: a ratio compares
    two runs seconds apart, so it moves less with the machine than either figure."""
    mine = runs[name]
    ranked = sorted(mine, key=lambda r: r["rps"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["rounds_rps"] = [round(r["rps"], 1) for r in mine]
    chosen["errors"] = sum(r["errors"] for r in mine)
    base = runs.get("deepaas")
    if base:
        ratios = [r["rps"] / b["rps"] for r, b in zip(mine, base, strict=True) if b["rps"]]
        chosen["ratio"] = statistics.median(ratios) if ratios else math.nan
    return chosen


def settle(target: Target) -> None:
    """After a run, one request: it queues behind whatever the target still works on."""
    with contextlib.suppress(httpx.HTTPError, RuntimeError):
        verify(target)
    time.sleep(0.3)


# ---------------------------------------------------------------- report


def pct(r: dict[str, Any], q: str) -> float:
    return float(r.get("latency_ms", {}).get(q, math.nan))


def print_table(
    results: dict[str, dict[int, dict[str, dict[str, Any]]]], args: argparse.Namespace
) -> None:
    print(
        f"\nlatency in ms; C clients in closed loop on keep-alive connections, {args.duration:g} s"
        f" (≥ {args.min_requests} requests) after ≥ {args.warmup:g} s of warm-up; "
        f"{args.workers} worker process(es) per server; the median of {args.rounds} rounds "
        "taken in turns; ×: median of the rounds' req/s over deepaas-run's"
    )
    print(
        f"{'module':7} {'C':>3} {'target':9} {'req/s':>8} {'p50':>8} {'p99':>8} {'×':>7} {'errors':>6}"
    )
    for module, by_c in results.items():
        for c, by_target in by_c.items():
            for name, r in by_target.items():
                ratio = r.get("ratio", math.nan)
                print(
                    f"{module:7} {c:>3} {name:9} {r['rps']:8.1f} {fmt(pct(r, 'p50')):>8} "
                    f"{fmt(pct(r, 'p99')):>8} {fmt(ratio):>7} {r['errors']:>6}"
                    + (f"  {r['error_sample']}" if r["errors"] else "")
                )


def checks(results: dict[str, dict[int, dict[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Agora's target against deepaas-run, per module and concurrency; no failed requests."""
    out: list[dict[str, Any]] = []

    def add(what: str, target: str, value: float, limit: float, at_most: bool) -> None:
        ok = (value <= limit) if at_most else (value >= limit)
        out.append({"check": what, "target": target, "value": value, "limit": limit,
                    "ok": bool(ok and not math.isnan(value))})  # fmt: skip

    for module, by_c in results.items():
        for c, by in by_c.items():
            if "deepaas" not in by:
                continue
            d = by["deepaas"]
            for name in ("agora", "platform"):
                if name not in by:
                    continue
                r = by[name]
                add(f"{module} @{c}: req/s ≥ 2× deepaas-run's", name, r["ratio"], 2.0, False)
                add(
                    f"{module} @{c}: p50 ≤ deepaas-run's (ms)",
                    name,
                    pct(r, "p50") - pct(d, "p50"),
                    0.0,
                    True,
                )
    for name in TARGETS:
        failed = [
            r[name]["errors"] for by_c in results.values() for r in by_c.values() if name in r
        ]
        if failed:
            add("no failed requests", name, sum(failed), 0, True)
    return out


def print_checks(results: list[dict[str, Any]]) -> None:
    if not results:
        return
    print("\ntargets (Agora's: against deepaas-run)")
    for r in results:
        v = r["value"]
        shown = (
            f"{v:.2f}×"
            if "req/s" in r["check"]
            else (f"{v:+.2f} ms" if "p50" in r["check"] else f"{v:.0f}")
        )
        print(f"  {r['check']:40} {r['target']:9} {shown:>10} {'PASS' if r['ok'] else 'FAIL'}")


# Which packages each side's Python has: the examples answer through ONNX Runtime where it is
# installed (agora.examples.store.Predictor), so both sides must have the same ones.
RUNTIME_PACKAGES = ("deepaas", "scikit-learn", "onnxruntime", "skl2onnx", "numpy", "pillow")
_VERSIONS = (
    "import importlib.metadata as m, json\n"
    "def v(p):\n"
    "    try: return m.version(p)\n"
    "    except m.PackageNotFoundError: return None\n"
    f"print(json.dumps({{p: v(p) for p in {RUNTIME_PACKAGES!r}}}))"
)


def package_versions(python: Path | str) -> dict[str, str | None]:
    out = subprocess.run([str(python), "-c", _VERSIONS], capture_output=True, text=True,
                         check=True)  # fmt: skip
    found: dict[str, str | None] = json.loads(out.stdout)
    return found


def same_model_code(names: list[str]) -> dict[str, dict[str, str | None]]:
    """The packages the models run on, per side; exits when deepaas-run's differ from Agora's
    (a comparison of servers must not be one of model runtimes)."""
    sides = {"agora": package_versions(sys.executable)}
    if "deepaas" in names:
        sides["deepaas"] = package_versions(DEEPAAS_VENV / "bin" / "python")
        differ = [p for p in RUNTIME_PACKAGES[1:] if sides["agora"][p] != sides["deepaas"][p]]
        if differ:
            sys.exit(
                "the models would not run on the same packages under both servers: "
                + ", ".join(
                    f"{p} {sides['agora'][p]} here, {sides['deepaas'][p]} in {DEEPAAS_VENV.name}"
                    for p in differ
                )
                + " (make deepaas-venv install)"
            )
    return sides


def versions() -> dict[str, Any]:
    py = DEEPAAS_VENV / "bin" / "python"
    deepaas = package_versions(py)["deepaas"] if py.exists() else None
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    import agora

    return {"python": platform.python_version(), "deepaas": deepaas or None,
            "agora": agora.__version__, "agora_commit": commit or None}  # fmt: skip


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated")
    parser.add_argument("--concurrency", default="1,10", help="clients for the latency runs")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before a run counts")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds each run counts")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs per target and setting, taking turns"
    )
    parser.add_argument(
        "--min-requests", type=int, default=100, help="a run goes on until this many"
    )
    parser.add_argument(
        "--max-duration", type=float, default=15.0, help="…for at most these seconds"
    )
    parser.add_argument("--platform-url", help="measure (c) on this running platform instead")
    parser.add_argument("--platform-key", help="an inference key for --platform-url")
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--out", type=Path, default=BENCH / "results/modelserver_latency.json")
    args = parser.parse_args()
    names = [t for t in args.targets.split(",") if t]
    modules = [m for m in args.modules.split(",") if m]
    if set(names) - set(TARGETS) or set(modules) - set(MODULES):
        parser.error(f"targets: {', '.join(TARGETS)}; modules: {', '.join(MODULES)}")
    if "platform" in names and "agora" not in names and not args.platform_url:
        parser.error("the platform target sits in front of Agora's model server: add agora")
    if args.platform_url and not args.platform_key:
        parser.error("--platform-url needs --platform-key (an inference key)")
    if "deepaas" in names and not DEEPAAS_RUN.exists():
        sys.exit(f"{DEEPAAS_RUN.relative_to(ROOT)} is missing: `make deepaas-venv`")
    packages = same_model_code(names)
    conc = [int(c) for c in args.concurrency.split(",")]
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(
            f"note: load average {load_before[0]:.2f} before the run: other work shares the CPUs",
            flush=True,
        )

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="agora-ms-bench-") as tmp_s,
        Processes(args.logs or Path(tmp_s)) as procs,
    ):
        tmp = Path(tmp_s)
        train_models(tmp / "module-data")
        # every server (and the platform's replicas, through the job environment) finds the
        # wordcount module on PYTHONPATH
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(MODULES_PATH), os.environ.get("PYTHONPATH")) if p
        )
        env = {k: v for k, v in os.environ.items() if k != "AGORA_SERVICE_TOKEN"}
        env["AGORA_MODULE_DATA"] = str(tmp / "module-data")
        targets: dict[str, dict[str, Target]] = {m: {} for m in modules}
        pending: list[Started] = []
        # All servers start side by side; each is waited for in turn.
        for module in modules:
            if "deepaas" in names:
                t, p = start_deepaas(procs, module, env, args.workers, tmp)
                pending.append((t, p))
            if "agora" in names:
                t, p = start_modelserver(procs, module, env, args.workers, tmp)
                pending.append((t, p))
        platform_pending = None
        if "platform" in names and not args.platform_url:
            platform_pending = start_agora(procs, tmp)
        for t, (proc, log, port) in pending:
            wait_ready(t, proc, log, port)
            targets[t.module][t.name] = t
        if "platform" in names:
            if args.platform_url:
                url, key = args.platform_url, args.platform_key
            else:
                url, (proc, log, port) = platform_pending  # type: ignore[misc]
                wait_port(port, proc, log, 120)
                # runs before `agora up` is stopped (the stack unwinds last in, first out)
                procs.callback(teardown_platform, url, list(modules), tmp / "agora")
                key = setup_platform(url, list(modules))
            for module in modules:
                t = platform_target(url, {"Authorization": f"Bearer {key}"}, module, module)
                wait_platform(t)
                targets[module]["platform"] = t
        print(f"ready after {time.monotonic() - started:.0f} s", flush=True)

        results: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
        # Targets take turns within each setting, round after round, so that drifting
        # background load (this machine's speed moves by up to 1.5× within minutes) hits them
        # alike; each target's figures are its median round's.
        for module in modules:
            results[module] = {}
            for c in conc:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
                for round_ in range(1, args.rounds + 1):
                    for name in names:
                        t = targets[module][name]
                        print(f"  {module} C={c} {name} #{round_} …", end="", flush=True)
                        r = latency_run(t, c, args, tmp)
                        runs[name].append(r)
                        print(f" {r['rps']:.0f} req/s, p50 {fmt(pct(r, 'p50'))} ms", flush=True)
                        settle(t)
                results[module][c] = {name: median_run(runs, name) for name in names}

    elapsed = time.monotonic() - started
    print_table(results, args)
    found = checks(results)
    print_checks(found)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds": round(elapsed, 1),
                "machine": {"nproc": os.cpu_count(), "platform": platform.platform(),
                            "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
                "versions": versions(),
                "packages": packages,
                "settings": {"targets": names, "modules": modules, "concurrency": conc,
                             "workers": args.workers, "warmup_s": args.warmup,
                             "duration_s": args.duration, "rounds": args.rounds,
                             "platform_url": args.platform_url,
                             "iris_request": IRIS_FLOWER, "digits_request": "128×128 PNG upload",
                             "wordcount_request": f"{len(TEXT)}-byte text file upload"},
                "results": results,
                "checks": found,
            },
            indent=2,
        )
    )  # fmt: skip
    print(f"\n{elapsed:.0f} s; raw figures: {args.out}")
    missed = [r for r in found if not r["ok"]]
    if args.strict and missed:
        sys.exit(f"{len(missed)} of Agora's targets missed")


if __name__ == "__main__":
    main()
