from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import httpx
import pyotp

from tests.cli.conftest import ADMIN_KEY, AdminApi, Cli, agora_up, one_line_error
from tests.helpers import PASSWORD


def _user(admin_cli: Cli, username: str) -> dict[str, object]:
    users = json.loads(admin_cli("users", "list", "--json").stdout)
    return next(u for u in users if u["username"] == username)


def test_users_create_with_a_one_time_password_shown_once(admin_cli: Cli, unique: str) -> None:
    result = admin_cli("users", "create", unique, "--email", f"{unique}@example.org")
    assert result.exit_code == 0, result.output
    assert "Shown once" in result.stdout
    password = re.search(r"Password\s+(\S+)", result.stdout)
    assert password, result.stdout
    login = httpx.post(
        admin_cli.url + "/api/v1/auth/login",
        json={"username": unique, "password": password.group(1)},
    )
    assert login.status_code == 200
    listed = admin_cli("users", "list")
    assert unique in listed.stdout and f"{unique}@example.org" in listed.stdout
    assert _user(admin_cli, unique)["must_change_password"] is True


def test_users_create_with_a_typed_password_as_admin(admin_cli: Cli, unique: str) -> None:
    result = admin_cli(
        "users", "create", unique, "--admin", "--password-prompt", input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Shown once" not in result.stdout
    user = _user(admin_cli, unique)
    assert user["is_admin"] is True and user["must_change_password"] is False


def test_users_disable_enable_make_admin(admin_cli: Cli, admin_api: AdminApi, unique: str) -> None:
    admin_api.user(unique)
    assert admin_cli("users", "disable", unique).exit_code == 0
    assert _user(admin_cli, unique)["disabled"] is True
    refused = httpx.post(
        admin_cli.url + "/api/v1/auth/login", json={"username": unique, "password": PASSWORD}
    )
    assert refused.status_code == 401
    assert admin_cli("users", "enable", unique).exit_code == 0
    assert _user(admin_cli, unique)["disabled"] is False
    admin_api.login(unique)

    assert admin_cli("users", "make-admin", unique).exit_code == 0
    assert _user(admin_cli, unique)["is_admin"] is True
    assert admin_cli("users", "make-admin", unique, "--revoke").exit_code == 0
    assert _user(admin_cli, unique)["is_admin"] is False


def test_users_reset_password_and_totp(admin_cli: Cli, admin_api: AdminApi, unique: str) -> None:
    admin_api.user(unique)
    session = admin_api.login(unique)
    secret = admin_api.call("POST", "/me/totp/setup", token=session)["secret"]
    admin_api.call("POST", "/me/totp/enable", {"code": pyotp.TOTP(secret).now()}, token=session)
    assert _user(admin_cli, unique)["totp_enabled"] is True

    reset = admin_cli("users", "reset-totp", unique)
    assert reset.exit_code == 0, reset.output
    assert _user(admin_cli, unique)["totp_enabled"] is False

    result = admin_cli("users", "reset-password", unique)
    assert result.exit_code == 0, result.output
    found = re.search(r"Password\s+(\S+)", result.stdout)
    assert found and "Shown once" in result.stdout
    admin_api.login(unique, found.group(1))  # no TOTP code asked for any more


def test_users_commands_need_an_admin(cli: Cli, admin_api: AdminApi, unique: str) -> None:
    admin_api.user(unique)
    cli("login", "-u", unique, input=PASSWORD + "\n")
    line = one_line_error(cli("users", "list"))
    assert "(HTTP 403)" in line
    missing = one_line_error(
        Cli(cli.config_path, cli.url, ADMIN_KEY)("users", "disable", "nobody-x")
    )
    assert "(HTTP 404)" in missing and "nobody-x" in missing


def test_audit_list_filters_and_json(admin_cli: Cli, admin_api: AdminApi, unique: str) -> None:
    admin_api.user(unique)
    admin_api.login(unique)
    listed = admin_cli("audit", "list", "--actor", unique, "--action", "auth.login")
    assert listed.exit_code == 0, listed.output
    assert "auth.login" in listed.stdout and unique in listed.stdout
    entries = json.loads(
        admin_cli("audit", "list", "--since", "1h", "--action", "user.create", "--json").stdout
    )
    assert any(e["target"] == f"user:{unique}" for e in entries)
    assert all(e["action"] == "user.create" for e in entries)
    limited = json.loads(admin_cli("audit", "list", "--limit", "2", "--json").stdout)
    assert len(limited) == 2 and limited[0]["seq"] > limited[1]["seq"]
    assert json.loads(admin_cli("audit", "list", "--until", "2000-01-01", "--json").stdout) == []
    bad = admin_cli("audit", "list", "--since", "last tuesday")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_audit_verify_passes_then_names_the_changed_entry(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with agora_up(data, tmp_path / "logs", AGORA_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY) as server:
        cli = Cli(tmp_path / "cli.toml", server.url, ADMIN_KEY)
        for name in ("p1", "p2", "p3"):
            AdminApi(server.url).call("POST", "/projects", {"name": name})
        ok = cli("audit", "verify")
        assert ok.exit_code == 0, ok.output
        assert "intact" in ok.stdout
        assert json.loads(cli("audit", "verify", "--json").stdout)["ok"] is True

        with sqlite3.connect(data / "agora.db") as db:
            db.execute("UPDATE audit_entries SET target = 'project:forged' WHERE seq = 3")
        db.close()
        broken = cli("audit", "verify")
        line = one_line_error(broken)
        assert "#3" in line and "broken" in line
        report = cli("audit", "verify", "--json")
        assert report.exit_code == 1
        assert json.loads(report.stdout)["first_broken_seq"] == 3
