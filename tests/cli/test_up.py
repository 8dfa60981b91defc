from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx

from tests.cli.conftest import SECRET_KEY, Cli, agora_up, one_line_error


def test_first_start_shows_admin_secrets_once_and_restart_shows_none(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with agora_up(data, tmp_path / "logs") as first:
        out = first.stdout
        password = re.search(r"Password\s+(\S+)", out)
        key = re.search(r"API key\s+(agora_\w+)", out)
        assert password and key, out
        assert "Login name" in out and "admin" in out
        assert "Shown once: store them now" in out
        assert first.url in out
        assert str(data) in out
        assert f"SQLite {data / 'agora.db'}" in out
        me = httpx.get(
            first.url + "/api/v1/me", headers={"Authorization": f"Bearer {key.group(1)}"}
        )
        assert me.status_code == 200 and me.json()["user"]["username"] == "admin"
        login = httpx.post(
            first.url + "/api/v1/auth/login",
            json={"username": "admin", "password": password.group(1)},
        )
        assert login.status_code == 200, login.text

    with agora_up(data, tmp_path / "logs") as again:
        out = again.stdout
        assert again.url in out
        assert password.group(1) not in out
        assert key.group(1) not in out
        assert "Shown once" not in out
        assert "API key" not in out


def test_secrets_from_the_environment_are_not_printed(tmp_path: Path) -> None:
    given_password = "given-admin-password"
    given_key = "agora_" + "G" * 43
    with agora_up(
        tmp_path / "data",
        tmp_path / "logs",
        AGORA_BOOTSTRAP_ADMIN_PASSWORD=given_password,
        AGORA_BOOTSTRAP_ADMIN_KEY=given_key,
    ) as server:
        out = server.stdout
        assert "AGORA_BOOTSTRAP_ADMIN_PASSWORD" in out
        assert "AGORA_BOOTSTRAP_ADMIN_KEY" in out
        assert given_password not in out
        assert given_key not in out


def test_up_with_a_weak_secret_key_says_so_in_one_line(cli: Cli, tmp_path: Path) -> None:
    result = cli("up", "--data-dir", str(tmp_path / "d"), AGORA_SECRET_KEY="changeme")
    line = one_line_error(result)
    assert "secret_key" in line and "32" in line
    assert not (tmp_path / "d").exists()


def test_up_on_a_taken_port_says_so_in_one_line(cli: Cli, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "d"),
            AGORA_SECRET_KEY=SECRET_KEY,
        )
    line = one_line_error(result)
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_the_database_is_described_without_its_password() -> None:
    from agora.cli.server import describe_database

    url = "postgresql+psycopg://agora:s3cret-pw@db.example.org:5432/agora"
    described = describe_database(url)
    assert described == "postgresql on db.example.org:5432, database agora as agora"
    assert "s3cret-pw" not in described
    assert describe_database("sqlite:////srv/agora/agora.db") == "SQLite /srv/agora/agora.db"
