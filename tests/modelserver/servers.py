"""Model servers for the tests: Agora's and the real ``deepaas-run``, as subprocesses on free
loopback ports, with the third-party modules of ``thirdparty/`` on their path."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
THIRDPARTY = Path(__file__).resolve().parent / "thirdparty"
DEEPAAS_VENV = ROOT / ".venv-deepaas"


def deepaas_python() -> Path:
    """The DEEPaaS venv's interpreter; its absence fails the test (never skips it)."""
    python = DEEPAAS_VENV / "bin" / "python"
    if not python.exists():
        raise AssertionError(
            f"{DEEPAAS_VENV} is missing: run 'make deepaas-venv' to install the real DEEPaaS "
            "2.6.0 beside Agora (the compatibility tests need it)"
        )
    return python


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # this tree's source first: a worktree's servers run its own code, not the venv's install
    env["PYTHONPATH"] = os.pathsep.join([str(THIRDPARTY), str(ROOT / "src"), str(ROOT)])
    env.pop("AGORA_SERVICE_TOKEN", None)
    env.update(extra or {})
    return env


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]


class Launch:
    """A server process started now, waited for later: servers that start slowly (torch)
    start while other tests run."""

    def __init__(self, cmd: list[str], ready_path: str, env: dict[str, str], port: int, log: Path):
        self.cmd, self.ready_path, self.log = cmd, ready_path, log
        self.url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )

    def wait(self, timeout: float = 120) -> Server:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.cmd} exited ({self.process.returncode}):\n{self.log.read_text()}"
                )
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return Server(self.url, self.process)
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.cmd} not ready in {timeout} s:\n{self.log.read_text()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def running(*launches: Launch) -> Iterator[list[Server]]:
    """Waits for every launched server; stops them all at the end."""
    try:
        yield [launch.wait() for launch in launches]
    finally:
        for launch in launches:
            launch.stop()


def launch_agora(
    *args: str,
    state_dir: Path,
    python: Path | str = sys.executable,
    env: dict[str, str] | None = None,
    cli: bool = False,
) -> Launch:
    """``python -m agora.modelserver ARGS`` (``agora serve-model ARGS`` with ``cli``), ready
    once ``/health`` says 200."""
    port = free_port()
    start = (
        [str(Path(python).parent / "agora"), "serve-model"]
        if cli
        else [str(python), "-m", "agora.modelserver"]
    )
    cmd = [*start, "--port", str(port), "--host", "127.0.0.1", "--state-dir", str(state_dir)]
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    return Launch([*cmd, *args], "/health", _env(env), port, state_dir.parent / f"agora-{port}.log")


def launch_deepaas(model: str, tmp: Path) -> Launch:
    """The real ``deepaas-run`` serving one entry point, ready once ``/v2/`` answers."""
    deepaas_python()
    port = free_port()
    cmd = [str(DEEPAAS_VENV / "bin" / "deepaas-run"), "--model-name", model]
    cmd += ["--listen-ip", "127.0.0.1", "--listen-port", str(port)]
    return Launch(cmd, "/v2/", _env(None), port, tmp / f"deepaas-{port}.log")


@contextlib.contextmanager
def agora_server(*args: str, state_dir: Path, **kwargs: Any) -> Iterator[Server]:
    with running(launch_agora(*args, state_dir=state_dir, **kwargs)) as (server,):
        yield server
