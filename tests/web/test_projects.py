"""Dashboard, projects, members and API keys through the pages."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD
from tests.helpers import PASSWORD, Api
from tests.web.helpers import HTML, sign_in, submit, text_of


def test_new_key_secret_is_shown_once(api: Api, client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = submit(
        client,
        "/projects/default/keys",
        "/projects/default/keys",
        key_name="notebook",
        scopes=["inference", "read"],
        expires="2999-12-31",
    )
    assert r.status_code == 200
    secret = re.search(r'id="new-key-secret"[^>]*value="(agora_[A-Za-z0-9]+)"', r.text)
    assert secret, r.text
    assert r.headers["cache-control"] == "no-store"
    assert api.as_(secret.group(1)).get("/me").status_code == 200

    listing = client.get("/projects/default/keys", headers=HTML)
    assert "notebook" in listing.text
    assert secret.group(1) not in listing.text
    assert secret.group(1)[:12] in listing.text  # the prefix identifies it
    assert "3000-01-01 00:00 UTC" in listing.text  # valid through the chosen day


def test_key_errors_are_shown_on_the_form(api: Api, client: TestClient) -> None:
    api.user("viv")
    api.project("lab", viv="viewer")
    sign_in(client, "viv", PASSWORD)
    page = "/projects/lab/keys"
    r = submit(client, page, page, key_name="k", scopes=[])
    assert r.status_code == 422 and "at least one scope" in text_of(r)
    r = submit(client, page, page, key_name="k", scopes=["manage"])
    assert r.status_code == 403 and "cannot grant: manage" in text_of(r)
    r = submit(client, page, page, key_name="k", scopes=["read"], expires="2001-01-01")
    assert r.status_code == 422 and "future" in text_of(r)
    denied = api.get("/audit", params={"outcome": "denied", "actor": "viv"}).json()["entries"]
    assert [e["target"] for e in denied] == ["POST /projects/lab/keys"]


def test_revoke_key(api: Api, client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = submit(
        client, "/projects/default/keys", "/projects/default/keys", key_name="tmp", scopes=["read"]
    )
    secret = re.search(r'value="(agora_[A-Za-z0-9]+)"', r.text).group(1)  # type: ignore[union-attr]
    key_id = api.as_(secret).get("/projects/default/keys").json()[-1]["id"]
    r = submit(client, "/projects/default/keys", f"/projects/default/keys/{key_id}/revoke")
    assert r.status_code == 303
    assert api.as_(secret).get("/me").status_code == 401
    assert "revoked" in client.get("/projects/default/keys", headers=HTML).text


def test_owner_manages_members(api: Api, client: TestClient) -> None:
    api.user("olga")
    api.user("mike")
    api.project("lab", olga="owner")
    sign_in(client, "olga", PASSWORD)
    page = "/projects/lab"
    r = submit(client, page, page + "/members", username="nobody", role="member")
    assert r.status_code == 404 and "User 'nobody' does not exist" in text_of(r)
    r = submit(client, page, page + "/members", username="mike", role="member")
    assert r.status_code == 303
    r = submit(client, page, page + "/members/mike/role", role="viewer")
    assert r.status_code == 303
    members = {m["username"]: m["role"] for m in api.get("/projects/lab/members").json()}
    assert members == {"olga": "owner", "mike": "viewer"}
    r = submit(client, page, page + "/members/olga/role", role="member")
    assert r.status_code == 422 and "last owner" in text_of(r)
    r = submit(client, page, page + "/members/mike/remove")
    assert r.status_code == 303
    assert [m["username"] for m in api.get("/projects/lab/members").json()] == ["olga"]


def test_member_sees_no_owner_forms(api: Api, client: TestClient) -> None:
    api.user("mia")
    api.project("lab", mia="member")
    sign_in(client, "mia", PASSWORD)
    page = client.get("/projects/lab", headers=HTML)
    assert page.status_code == 200
    assert "Add a member" not in page.text and "Delete this project" not in page.text


def test_other_projects_are_not_found(api: Api, client: TestClient) -> None:
    api.user("nina")
    sign_in(client, "nina", PASSWORD)
    for path in ("/projects/default", "/projects/default/keys"):
        r = client.get(path, headers=HTML)
        assert r.status_code == 404, path
        assert "does not exist or you are not a member" in text_of(r)


def test_project_switcher_remembers_the_choice(api: Api, client: TestClient) -> None:
    api.project("zeta")
    sign_in(client, "admin", ADMIN_PASSWORD)
    assert "default" in text_of(client.get("/", headers=HTML)).split("Current project")[1][:40]
    r = submit(client, "/", "/switch-project", project="zeta")
    assert r.status_code == 303
    dashboard = text_of(client.get("/", headers=HTML))
    assert "zeta" in dashboard.split("Current project")[1][:40]


def test_admin_creates_a_project(api: Api, client: TestClient) -> None:
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = submit(client, "/projects", "/projects", name="Bad Name!")
    assert r.status_code == 422 and "Name:" in text_of(r)
    r = submit(client, "/projects", "/projects", name="genomics", title="Genomics")
    assert r.status_code == 303 and r.headers["location"] == "/projects/genomics"
    assert api.get("/projects/genomics").json()["title"] == "Genomics"


def test_users_create_projects_only_when_allowed(api: Api, client: TestClient) -> None:
    api.user("paul")
    sign_in(client, "paul", PASSWORD)
    assert "New project" not in client.get("/projects", headers=HTML).text
    r = submit(client, "/projects", "/projects", name="mine")
    assert r.status_code == 403 and "Only platform administrators" in text_of(r)
    api.patch("/system/settings", {"users_can_create_projects": True})
    assert "New project" in client.get("/projects", headers=HTML).text
    assert submit(client, "/projects", "/projects", name="mine").status_code == 303
    assert api.get("/projects/mine/members").json()[0]["role"] == "owner"
