"""Administration pages: users, audit trail, platform settings; hidden from everyone else."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD
from tests.helpers import PASSWORD, Api
from tests.web.helpers import HTML, csrf, sign_in, submit, text_of


def test_non_admin_gets_404_on_admin_pages(api: Api, client: TestClient) -> None:
    api.user("bob")
    sign_in(client, "bob", PASSWORD)
    for path in ("/admin/users", "/admin/audit", "/admin/settings"):
        r = client.get(path, headers=HTML)
        assert r.status_code == 404, path
        assert "Page not found" in r.text
    token = csrf(client, "/account")
    r = client.post("/admin/settings", data={"csrf_token": token, "require_totp": "1"})
    assert r.status_code == 404
    assert api.get("/system/settings").json()["require_totp"] is False
    assert "/admin/" not in client.get("/", headers=HTML).text  # and no links to them


def test_admin_creates_a_user_whose_password_is_shown_once(api: Api, client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = submit(client, "/admin/users", "/admin/users", username="gina", email="gina@example.org")
    assert r.status_code == 200
    password = re.search(r'id="one-time-password"[^>]*value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    assert password not in client.get("/admin/users", headers=HTML).text
    r = submit(client, "/admin/users", "/admin/users", username="gina")
    assert r.status_code == 409 and "already exists" in text_of(r)

    other = TestClient(client.app)
    sign_in(other, "gina", password)
    assert other.get("/", follow_redirects=False).headers["location"] == "/account/password"


def test_admin_user_actions(api: Api, client: TestClient) -> None:
    api.user("hugo")
    sign_in(client, "admin", ADMIN_PASSWORD)
    for action in ("disable", "enable", "grant-admin", "revoke-admin", "reset-totp"):
        r = submit(client, "/admin/users", f"/admin/users/hugo/{action}")
        assert r.status_code == 303, action
    user = api.get("/users/hugo").json()
    assert (user["disabled"], user["is_admin"]) == (False, False)
    r = submit(client, "/admin/users", "/admin/users/admin/disable")
    assert r.status_code == 403 and "cannot remove your own admin rights" in text_of(r)
    r = submit(client, "/admin/users", "/admin/users/hugo/reset-password")
    assert r.status_code == 200 and 'id="one-time-password"' in r.text
    assert api.get("/users/hugo").json()["must_change_password"] is True
    assert submit(client, "/admin/users", "/admin/users/hugo/explode").status_code == 404


def test_audit_page_filters_pages_and_verifies(api: Api, client: TestClient) -> None:
    for i in range(3):
        api.project(f"p{i}")
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = client.get("/admin/audit", params={"action": "project.create"}, headers=HTML)
    assert r.status_code == 200
    assert r.text.count("project.create") >= 4  # three new ones and the bootstrap project
    assert "user.create" not in r.text.split("<tbody>")[1]

    r = client.get("/admin/audit", params={"since": "2001-02-01", "until": "2001-01-01"})
    assert r.status_code == 422 and "'since' must not be after 'until'" in text_of(r)
    r = client.get("/admin/audit", params={"since": "yesterday"})
    assert r.status_code == 422 and "YYYY-MM-DD" in text_of(r)

    r = client.get("/admin/audit", params={"verify": "1"}, headers=HTML)
    assert "The chain is intact" in text_of(r)


def test_audit_paging_by_before(api: Api, client: TestClient) -> None:
    for i in range(55):
        api.patch("/system/settings", {"require_totp": i % 2 == 0})
    api.patch("/system/settings", {"require_totp": False})
    sign_in(client, "admin", ADMIN_PASSWORD)
    first = client.get("/admin/audit", headers=HTML)
    older = re.search(r'href="(/admin/audit\?before=\d+)"', first.text)
    assert older, "no link to older entries"
    second = client.get(older.group(1), headers=HTML)
    assert second.status_code == 200 and "Newest" in second.text


def test_admin_changes_platform_settings(api: Api, client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = submit(client, "/admin/settings", "/admin/settings", users_can_create_projects="1")
    assert r.status_code == 303
    assert api.get("/system/settings").json() == {
        "require_totp": False,
        "users_can_create_projects": True,
    }
    assert "checked" in client.get("/admin/settings", headers=HTML).text
