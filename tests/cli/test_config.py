from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agora.cli import config
from tests.cli.conftest import ADMIN_KEY, AdminApi, Cli
from tests.helpers import PASSWORD

SERVER_SECRETS = {
    "AGORA_SECRET_KEY": "z" * 40,
    "AGORA_BOOTSTRAP_ADMIN_PASSWORD": "bootstrap-password-xyz",
    "AGORA_BOOTSTRAP_ADMIN_KEY": "agora_" + "B" * 43,
    "AGORA_OIDC__CLIENT_SECRET": "oidc-client-secret-xyz",
    "AGORA_DATABASE_URL": "postgresql+psycopg://agora:db-password-xyz@db.example.org:5432/agora",
}


def test_config_show_masks_the_token_and_every_server_secret(admin_cli: Cli) -> None:
    result = admin_cli("config", "show", **SERVER_SECRETS)
    assert result.exit_code == 0, result.output
    out = result.output
    assert ADMIN_KEY not in out
    assert "agora_CCCC…CCCC" in out
    assert "AGORA_TOKEN" in out
    for value in SERVER_SECRETS.values():
        assert value not in out
    assert "db-password-xyz" not in out
    assert "db.example.org" in out and "***" in out

    data = json.loads(admin_cli("config", "show", "--json", **SERVER_SECRETS).stdout)
    assert data["client"]["url"] == admin_cli.url
    assert data["client"]["token"] == "agora_CCCC…CCCC"
    server = data["server"]
    assert server["secret_key"] == server["bootstrap_admin_key"] == "******** (set)"
    assert server["oidc.client_secret"] == "******** (set)"
    assert server["database_url"] == "postgresql+psycopg://agora:***@db.example.org:5432/agora"
    assert ADMIN_KEY not in json.dumps(data)


def test_config_show_with_a_stored_session(cli: Cli, admin_api: AdminApi, unique: str) -> None:
    admin_api.user(unique)
    cli("login", "-u", unique, input=PASSWORD + "\n")
    token = cli.config_path.read_text().split('token = "')[1].split('"')[0]
    result = cli("config", "show")
    assert result.exit_code == 0, result.output
    assert token not in result.output
    assert str(cli.config_path) in result.output
    assert token[:11] + "…" + token[-4:] in result.output


def test_invalid_server_settings_are_one_line_but_the_client_part_is_shown(admin_cli: Cli) -> None:
    result = admin_cli("config", "show", AGORA_SECRET_KEY="short")
    assert result.exit_code == 1
    assert "agora_CCCC…CCCC" in result.stdout
    assert result.stderr.strip().count("\n") == 0 and "secret_key" in result.stderr


def test_config_file_is_written_private_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fresh" / "agora" / "cli.toml"
    mp = monkeypatch
    mp.setenv("AGORA_CLI_CONFIG", str(path))
    mp.delenv("AGORA_URL", raising=False)
    mp.delenv("AGORA_TOKEN", raising=False)
    config.store_login("http://agora.example:8000", 'we"ird\\name', "agoras_" + "x" * 40)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = config.load()
    assert loaded.url == "http://agora.example:8000" and loaded.username == 'we"ird\\name'
    assert loaded.token == "agoras_" + "x" * 40 and loaded.token_source == str(path)
    mp.setenv("AGORA_URL", "agora.example:8000/api/v1/")
    assert config.load().url == "http://agora.example:8000"
    assert config.load().token is not None  # same server, so the stored token still applies
    config.forget_token()
    assert config.load().token is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_default_config_location_follows_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mp = monkeypatch
    mp.delenv("AGORA_CLI_CONFIG", raising=False)
    mp.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config.config_path() == tmp_path / "agora" / "cli.toml"
