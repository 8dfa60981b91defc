from __future__ import annotations

import datetime as dt
import json
import re

import httpx

from tests.cli.conftest import AdminApi, Cli, one_line_error
from tests.helpers import PASSWORD


def _signed_in(cli: Cli, admin_api: AdminApi, username: str) -> Cli:
    admin_api.user(username)
    result = cli("login", "-u", username, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    return cli


def _owned_project(admin_api: AdminApi, project: str, owner: str) -> None:
    """Only administrators create projects by default: one makes it and hands it over."""
    admin_api.call("POST", "/projects", {"name": project})
    admin_api.call("POST", f"/projects/{project}/members", {"username": owner, "role": "owner"})


def test_projects_create_list_show_delete(admin_cli: Cli, unique: str) -> None:
    cli = admin_cli
    created = cli("projects", "create", unique, "--title", "Climate models", "--description", "x")
    assert created.exit_code == 0, created.output
    assert f"Created project {unique}" in created.stdout

    listed = cli("projects", "list")
    assert unique in listed.stdout and "Climate models" in listed.stdout
    rows = json.loads(cli("projects", "list", "--json").stdout)
    assert [p["title"] for p in rows if p["name"] == unique] == ["Climate models"]
    shown = json.loads(cli("projects", "show", unique, "--json").stdout)
    assert shown["title"] == "Climate models" and shown["description"] == "x"
    assert "Climate models" in cli("projects", "show", unique).stdout

    refused = cli("projects", "delete", unique, input="n\n")
    assert refused.exit_code == 1
    assert unique in cli("projects", "list").stdout
    deleted = cli("projects", "delete", unique, "--yes")
    assert deleted.exit_code == 0, deleted.output
    line = one_line_error(cli("projects", "show", unique))
    assert "(HTTP 404)" in line and unique in line


def test_invalid_project_name_is_one_line_422(admin_cli: Cli) -> None:
    line = one_line_error(admin_cli("projects", "create", "Not A Name"))
    assert "(HTTP 422)" in line and "name" in line


def test_users_see_only_their_projects(cli: Cli, admin_api: AdminApi, unique: str) -> None:
    _signed_in(cli, admin_api, unique)
    admin_api.call("POST", "/projects", {"name": unique + "-other"})
    _owned_project(admin_api, unique, unique)
    assert [p["name"] for p in json.loads(cli("projects", "list", "--json").stdout)] == [unique]
    line = one_line_error(cli("projects", "create", unique + "-mine"))
    assert "(HTTP 403)" in line


def test_members_add_set_role_remove(cli: Cli, admin_api: AdminApi, unique: str) -> None:
    _signed_in(cli, admin_api, unique)
    friend = unique + "f"
    admin_api.user(friend, display_name="A Friend")
    _owned_project(admin_api, unique, unique)

    added = cli("members", "add", unique, friend)
    assert added.exit_code == 0, added.output
    assert f"Added {friend} to {unique} as member" in added.stdout
    listed = cli("members", "list", unique)
    assert friend in listed.stdout and "A Friend" in listed.stdout

    changed = cli("members", "set-role", unique, friend, "viewer")
    assert changed.exit_code == 0, changed.output
    roles = {
        m["username"]: m["role"]
        for m in json.loads(cli("members", "list", unique, "--json").stdout)
    }
    assert roles == {unique: "owner", friend: "viewer"}

    bad = one_line_error(cli("members", "set-role", unique, friend, "emperor"))
    assert "(HTTP 422)" in bad and "role" in bad

    removed = cli("members", "remove", unique, friend)
    assert removed.exit_code == 0, removed.output
    left = {m["username"] for m in json.loads(cli("members", "list", unique, "--json").stdout)}
    assert left == {unique}
    missing = one_line_error(cli("members", "remove", unique, friend))
    assert "(HTTP 404)" in missing


def test_key_created_shown_once_then_revoked_then_refused(
    cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    _signed_in(cli, admin_api, unique)
    _owned_project(admin_api, unique, unique)
    created = cli(
        "keys",
        "create",
        unique,
        "--name",
        "ci",
        "--scope",
        "read",
        "--scope",
        "inference",
        "--expires",
        "30d",
    )
    assert created.exit_code == 0, created.output
    assert "Shown once" in created.stdout
    found = re.search(r"(agora_\w{32,})", created.stdout)
    assert found, created.stdout
    secret = found.group(1)
    me = httpx.get(cli.url + "/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and sorted(me.json()["scopes"]) == ["inference", "read"]

    keys = json.loads(cli("keys", "list", unique, "--json").stdout)
    assert [k["name"] for k in keys] == ["ci"]
    expires = dt.datetime.fromisoformat(keys[0]["expires_at"])
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    listed = cli("keys", "list", unique)
    assert "ci" in listed.stdout and "active" in listed.stdout
    assert secret not in listed.stdout

    revoked = cli("keys", "revoke", unique, str(keys[0]["id"]))
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in cli("keys", "list", unique).stdout
    again = httpx.get(cli.url + "/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert again.status_code == 401

    with_revoked_key = Cli(cli.config_path, cli.url, secret)
    line = one_line_error(with_revoked_key("whoami"))
    assert "revoked" in line and "(HTTP 401)" in line


def test_key_expiry_as_a_date_and_bad_expiry_is_a_usage_error(
    cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    _signed_in(cli, admin_api, unique)
    _owned_project(admin_api, unique, unique)
    year = dt.datetime.now(dt.UTC).year + 2
    created = cli(
        "keys", "create", unique, "--name", "dated", "--expires", f"{year}-01-31", "--json"
    )
    assert created.exit_code == 0, created.output
    expires = dt.datetime.fromisoformat(json.loads(created.stdout)["expires_at"])
    assert expires == dt.datetime(year, 1, 31, tzinfo=dt.UTC)

    bad = cli("keys", "create", unique, "--name", "x", "--expires", "soonish")
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output
