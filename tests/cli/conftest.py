"""A real `agora up` server in a subprocess, and the CLI run in-process against it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from agora.cli.main import app
from tests.helpers import PASSWORD
from tests.servers import free_port

SECRET_KEY = "k" * 48
ADMIN_PASSWORD = "admin-password-for-cli-tests"
ADMIN_KEY = "agora_" + "C" * 43
CHEAP_HASHES = {
    "AGORA_PASSWORD_HASH_TIME_COST": "1",
    "AGORA_PASSWORD_HASH_MEMORY_KIB": "1024",
    "AGORA_PASSWORD_HASH_PARALLELISM": "1",
}


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}
    env.update(CHEAP_HASHES)
    env.update(
        AGORA_SECRET_KEY=SECRET_KEY,
        AGORA_LOG_LEVEL="warning",
        PYTHONIOENCODING="utf-8",
        PYTHONUNBUFFERED="1",
        COLUMNS="120",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def agora_up(data_dir: Path, logs: Path, **env: str) -> Iterator[Server]:
    """`python -m agora.cli.main up` on a free port until the block ends (then Ctrl+C)."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob("stdout-*")))
    out, err = logs / f"stdout-{n}.txt", logs / f"stderr-{n}.txt"
    cmd = [sys.executable, "-m", "agora.cli.main", "up", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir)]
    with out.open("wb") as fo, err.open("wb") as fe:
        process = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=_server_env(env))
    server = Server(f"http://127.0.0.1:{port}", data_dir, process, out, err)
    try:
        _wait_until_serving(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_serving(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"agora up exited early:\n{server.stdout}\n{server.stderr}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/api/v1/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"agora up did not answer in {timeout} s:\n{server.stderr}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the session, with known bootstrap secrets; tests use unique names."""
    root = tmp_path_factory.mktemp("agora-cli-server")
    with agora_up(
        root / "data",
        root / "logs",
        AGORA_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
        AGORA_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
    ) as s:
        yield s


@dataclass
class AdminApi:
    """Direct REST calls for setting up what a test needs (not what it checks)."""

    url: str
    token: str = ADMIN_KEY

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        r = httpx.request(method, self.url + "/api/v1" + path, json=body, headers=headers)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    def user(self, username: str, password: str = PASSWORD, **kw: Any) -> None:
        self.call("POST", "/users", {"username": username, "password": password, **kw})

    def login(self, username: str, password: str = PASSWORD, totp: str | None = None) -> str:
        body = {"username": username, "password": password}
        if totp:
            body["totp_code"] = totp
        r = httpx.post(self.url + "/api/v1/auth/login", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["token"])


@pytest.fixture
def admin_api(server: Server) -> AdminApi:
    return AdminApi(server.url)


_counter = iter(range(1_000_000))


@pytest.fixture
def unique() -> str:
    """A name no other test on the shared server uses."""
    return f"t{os.getpid()}x{next(_counter)}"


@dataclass
class Cli:
    """Runs `agora …` in-process with its own config file and a given URL/token."""

    config_path: Path
    url: str
    token: str | None = None

    def __call__(
        self, *args: str, input: str | None = None, token: str | None = None, **env: str | None
    ) -> Result:
        environ: dict[str, str | None] = {
            "AGORA_CLI_CONFIG": str(self.config_path),
            "AGORA_URL": self.url,
            "AGORA_TOKEN": token if token is not None else self.token,
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        environ.update(env)
        return CliRunner().invoke(app, list(args), input=input, env=environ)


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    """The CLI pointed at the shared server, signed in with nothing (pass token=… or log in)."""
    return Cli(tmp_path / "config" / "cli.toml", server.url)


@pytest.fixture
def admin_cli(cli: Cli) -> Cli:
    return Cli(cli.config_path, cli.url, ADMIN_KEY)


def one_line_error(result: Result) -> str:
    """The error a failed command printed: exactly one line on stderr, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert lines[0].startswith("error: ")
    return lines[0]
