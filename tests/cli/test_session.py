from __future__ import annotations

import json
import stat
import tomllib

import httpx
import pyotp

from tests.cli.conftest import AdminApi, Cli, one_line_error
from tests.helpers import PASSWORD, totp_now


def _stored(cli: Cli) -> dict[str, str]:
    with cli.config_path.open("rb") as fh:
        return tomllib.load(fh)


def test_login_with_password_stores_a_private_token_that_whoami_uses(
    cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    admin_api.user(unique, display_name="Ada Lovelace")
    result = cli("login", "--username", unique, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert f"Signed in to {cli.url} as {unique}" in result.stdout

    stored = _stored(cli)
    assert stored["url"] == cli.url and stored["username"] == unique
    assert stored["token"].startswith("agoras_")
    assert stat.S_IMODE(cli.config_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_path.parent.stat().st_mode) == 0o700

    whoami = cli("whoami")
    assert whoami.exit_code == 0, whoami.output
    assert unique in whoami.stdout and "Ada Lovelace" in whoami.stdout
    assert "session" in whoami.stdout
    assert stored["token"] not in whoami.output


def test_whoami_json_lists_projects_and_roles(
    cli: Cli, admin_api: AdminApi, admin_cli: Cli, unique: str
) -> None:
    admin_api.user(unique)
    admin_api.call("POST", "/projects", {"name": unique})
    admin_api.call("POST", f"/projects/{unique}/members", {"username": unique, "role": "viewer"})
    cli("login", "--username", unique, input=PASSWORD + "\n")
    me = json.loads(cli("whoami", "--json").stdout)
    assert me["user"]["username"] == unique
    assert me["via"] == "session"
    assert me["projects"] == [{"project": unique, "role": "viewer"}]

    as_key = json.loads(admin_cli("whoami", "--json").stdout)
    assert as_key["via"] == "api_key"
    assert as_key["key_project"] == "default"
    assert set(as_key["scopes"]) == {"admin", "inference", "manage", "read"}


def test_login_with_totp_asks_for_the_code(cli: Cli, admin_api: AdminApi, unique: str) -> None:
    admin_api.user(unique)
    session = admin_api.login(unique)
    secret = admin_api.call("POST", "/me/totp/setup", token=session)["secret"]
    admin_api.call("POST", "/me/totp/enable", {"code": pyotp.TOTP(secret).now()}, token=session)

    # The enrolment used the current 30 s step; the next step's code is accepted and unused.
    result = cli("login", "-u", unique, input=f"{PASSWORD}\n{totp_now(secret, 1)}\n")
    assert result.exit_code == 0, result.output
    assert "TOTP code" in result.output
    assert cli("whoami").exit_code == 0


def test_login_with_a_wrong_totp_code_fails_in_one_line(
    cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    admin_api.user(unique)
    session = admin_api.login(unique)
    secret = admin_api.call("POST", "/me/totp/setup", token=session)["secret"]
    admin_api.call("POST", "/me/totp/enable", {"code": pyotp.TOTP(secret).now()}, token=session)
    wrong = f"{(int(totp_now(secret, 1)) + 1) % 1_000_000:06d}"
    line = one_line_error(cli("login", "-u", unique, input=f"{PASSWORD}\n{wrong}\n"))
    assert "(HTTP 401)" in line
    assert not cli.config_path.exists()


def test_login_with_a_wrong_password_fails_in_one_line(
    cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    admin_api.user(unique)
    line = one_line_error(cli("login", "-u", unique, input="not-the-password\n"))
    assert "(HTTP 401)" in line
    assert "agora login" not in line  # no advice to do what was just done


def test_one_time_password_login_asks_to_change_it_and_password_does(
    cli: Cli, admin_cli: Cli, unique: str
) -> None:
    created = json.loads(admin_cli("users", "create", unique, "--json").stdout)
    first = created["one_time_password"]
    result = cli("login", "-u", unique, input=first + "\n")
    assert result.exit_code == 0, result.output
    assert "agora password" in result.stderr

    blocked = one_line_error(cli("projects", "list"))
    assert "(HTTP 403)" in blocked and "agora password" in blocked

    changed = cli("password", input=f"{first}\n{PASSWORD}\n{PASSWORD}\n")
    assert changed.exit_code == 0, changed.output
    assert cli("projects", "list").exit_code == 0


def test_logout_ends_the_session_and_forgets_the_token(
    cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    admin_api.user(unique)
    cli("login", "-u", unique, input=PASSWORD + "\n")
    token = _stored(cli)["token"]
    result = cli("logout")
    assert result.exit_code == 0, result.output
    assert "token" not in _stored(cli)
    refused = httpx.get(cli.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    line = one_line_error(cli("whoami"))
    assert "not signed in" in line and "agora login" in line
    assert cli("logout").exit_code == 0  # nothing to do is not an error


def test_a_config_file_others_can_read_is_not_trusted_with_a_token(
    cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    admin_api.user(unique)
    cli("login", "-u", unique, input=PASSWORD + "\n")
    cli.config_path.chmod(0o644)
    result = cli("whoami")
    assert result.exit_code == 1
    assert "can be read by other users" in result.stderr
    assert "chmod 600" in result.stderr


def test_a_stored_token_is_not_sent_to_another_server(
    cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    admin_api.user(unique)
    cli("login", "-u", unique, input=PASSWORD + "\n")
    other = Cli(cli.config_path, "http://127.0.0.1:9")
    line = one_line_error(other("whoami"))
    assert "not signed in to http://127.0.0.1:9" in line
    assert cli.url in line


def test_agora_token_overrides_the_stored_session(
    cli: Cli, admin_api: AdminApi, admin_cli: Cli, unique: str
) -> None:
    admin_api.user(unique)
    cli("login", "-u", unique, input=PASSWORD + "\n")
    me = json.loads(admin_cli("whoami", "--json").stdout)
    assert me["user"]["username"] == "admin"
