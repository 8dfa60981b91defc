"""Tenant isolation: every /api/v1 endpoint walked as anonymous, viewer, member, owner, an owner
of another project, and admin. Each role acts on a fresh project with the same members, so a
change one role makes cannot hide what the next may do. Later issues add their endpoints here."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY
from tests.helpers import Api

ROLES = ["anonymous", "viewer", "member", "owner", "other_owner", "admin"]


@dataclass
class World:
    api: Api
    tokens: dict[str, str | None]
    counter: int = 0

    def fresh_project(self) -> str:
        """A project with owner/member/viewer, plus a key of the member's to act on."""
        self.counter += 1
        name = f"alpha-{self.counter}"
        self.api.project(name, owner="owner", member="member", viewer="viewer")
        return name


@pytest.fixture
def world(api: Api) -> World:
    tokens: dict[str, str | None] = {"anonymous": None, "admin": ADMIN_KEY}
    for role in ("viewer", "member", "owner", "other_owner"):
        tokens[role] = api.user(role)
    api.project("beta", other_owner="owner")
    for extra in ("carol", "dave"):
        api.post("/users", {"username": extra, "password": "correct-horse-battery"})
    return World(api, tokens)


Call = Callable[[Api, str, World], Any]


def _member_key(w: World, project: str) -> int:
    api = w.api.as_(w.tokens["member"])
    r = api.post(f"/projects/{project}/keys", {"name": "m", "scopes": ["read"]})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _member_deployment(w: World, project: str) -> str:
    api = w.api.as_(w.tokens["member"])
    r = api.post(
        f"/projects/{project}/deployments",
        {"template": "batch", "inputs": {"command": "sleep 30"}},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# (name, call, expected status per role: anonymous, viewer, member, owner, other_owner, admin)
CASES: list[tuple[str, Call, tuple[int, ...]]] = [
    ("list projects", lambda a, p, w: a.get("/projects"), (401, 200, 200, 200, 200, 200)),
    ("read project", lambda a, p, w: a.get(f"/projects/{p}"), (401, 200, 200, 200, 404, 200)),
    (
        "rename project",
        lambda a, p, w: a.patch(f"/projects/{p}", {"title": "New"}),
        (401, 403, 403, 200, 404, 200),
    ),
    ("delete project", lambda a, p, w: a.delete(f"/projects/{p}"), (401, 403, 403, 204, 404, 204)),
    (
        "create project",
        lambda a, p, w: a.post("/projects", {"name": p + "-new"}),
        (401, 403, 403, 403, 403, 201),
    ),
    (
        "list members",
        lambda a, p, w: a.get(f"/projects/{p}/members"),
        (401, 200, 200, 200, 404, 200),
    ),
    (
        "add member",
        lambda a, p, w: a.post(f"/projects/{p}/members", {"username": "carol"}),
        (401, 403, 403, 201, 404, 201),
    ),
    (
        "change role",
        lambda a, p, w: a.patch(f"/projects/{p}/members/viewer", {"role": "member"}),
        (401, 403, 403, 200, 404, 200),
    ),
    (
        "remove another member",
        lambda a, p, w: a.delete(f"/projects/{p}/members/viewer"),
        (401, 204, 403, 204, 404, 204),  # the viewer removing themself is leaving: allowed
    ),
    ("list keys", lambda a, p, w: a.get(f"/projects/{p}/keys"), (401, 200, 200, 200, 404, 200)),
    (
        "create read key",
        lambda a, p, w: a.post(f"/projects/{p}/keys", {"name": "k", "scopes": ["read"]}),
        (401, 201, 201, 201, 404, 403),  # API keys (the admin's) cannot mint keys
    ),
    (
        "create manage key",
        lambda a, p, w: a.post(f"/projects/{p}/keys", {"name": "k", "scopes": ["manage"]}),
        (401, 403, 201, 201, 404, 403),
    ),
    (
        "revoke another user's key",
        lambda a, p, w: a.delete(f"/projects/{p}/keys/{_member_key(w, p)}"),
        (401, 404, 204, 204, 404, 204),  # the member revoking their own key: allowed
    ),
    (
        "project audit",
        lambda a, p, w: a.get(f"/projects/{p}/audit"),
        (401, 403, 403, 200, 404, 200),
    ),
    ("list users", lambda a, p, w: a.get("/users"), (401, 403, 403, 403, 403, 200)),
    ("read user", lambda a, p, w: a.get("/users/carol"), (401, 403, 403, 403, 403, 200)),
    (
        "create user",
        lambda a, p, w: a.post("/users", {"username": f"u-{p}"}),
        (401, 403, 403, 403, 403, 201),
    ),
    (
        "disable user",
        lambda a, p, w: a.patch("/users/dave", {"disabled": True}),
        (401, 403, 403, 403, 403, 200),
    ),
    (
        "reset password",
        lambda a, p, w: a.post("/users/dave/password-reset"),
        (401, 403, 403, 403, 403, 200),
    ),
    ("reset totp", lambda a, p, w: a.delete("/users/dave/totp"), (401, 403, 403, 403, 403, 204)),
    ("audit log", lambda a, p, w: a.get("/audit"), (401, 403, 403, 403, 403, 200)),
    ("audit verify", lambda a, p, w: a.get("/audit/verify"), (401, 403, 403, 403, 403, 200)),
    ("read settings", lambda a, p, w: a.get("/system/settings"), (401, 403, 403, 403, 403, 200)),
    (
        "change settings",
        lambda a, p, w: a.patch("/system/settings", {"users_can_create_projects": False}),
        (401, 403, 403, 403, 403, 200),
    ),
    ("who am I", lambda a, p, w: a.get("/me"), (401, 200, 200, 200, 200, 200)),
    # --- deployments (issue 3) ---
    ("list templates", lambda a, p, w: a.get("/templates"), (401, 200, 200, 200, 200, 200)),
    (
        "project templates",
        lambda a, p, w: a.get(f"/projects/{p}/templates"),
        (401, 200, 200, 200, 404, 200),
    ),
    (
        "list deployments",
        lambda a, p, w: a.get(f"/projects/{p}/deployments"),
        (401, 200, 200, 200, 404, 200),
    ),
    (
        "launch",
        lambda a, p, w: a.post(
            f"/projects/{p}/deployments", {"template": "batch", "inputs": {"command": "true"}}
        ),
        (401, 403, 201, 201, 404, 201),
    ),
    (
        "read another's deployment",
        lambda a, p, w: a.get(f"/projects/{p}/deployments/{_member_deployment(w, p)}"),
        (401, 200, 200, 200, 404, 200),
    ),
    (
        "stop another's deployment",
        lambda a, p, w: a.post(f"/projects/{p}/deployments/{_member_deployment(w, p)}/stop"),
        (401, 403, 200, 200, 404, 200),  # the member stopping their own: allowed
    ),
    (
        "logs of a deployment",
        lambda a, p, w: a.get(f"/projects/{p}/deployments/{_member_deployment(w, p)}/logs"),
        (401, 200, 200, 200, 404, 200),
    ),
    ("read quota", lambda a, p, w: a.get(f"/projects/{p}/quota"), (401, 200, 200, 200, 404, 200)),
    (
        "change quota",
        lambda a, p, w: a.patch(f"/projects/{p}/quota", {"cpus": 4}),
        (401, 403, 403, 403, 403, 200),
    ),
    (
        "limit a template",
        lambda a, p, w: a.put("/templates/batch/projects", {"projects": [p]}),
        (401, 403, 403, 403, 403, 200),
    ),
]


@pytest.mark.parametrize(("name", "call", "expected"), CASES, ids=[c[0] for c in CASES])
def test_who_may_do_what(world: World, name: str, call: Call, expected: tuple[int, ...]) -> None:
    got = {}
    for role in ROLES:
        project = world.fresh_project()
        response = call(world.api.as_(world.tokens[role]), project, world)
        got[role] = response.status_code
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["detail"]
    assert got == dict(zip(ROLES, expected, strict=True))


def test_denied_change_leaves_project_untouched(world: World) -> None:
    project = world.fresh_project()
    member = world.api.as_(world.tokens["member"])
    assert member.patch(f"/projects/{project}", {"title": "hijacked"}).status_code == 403
    assert world.api.get(f"/projects/{project}").json()["title"] == project


def test_other_project_is_indistinguishable_from_missing(world: World) -> None:
    other = world.api.as_(world.tokens["other_owner"])
    project = world.fresh_project()
    hidden = other.get(f"/projects/{project}").json()["detail"].replace(project, "X")
    missing = (
        other.get("/projects/no-such-project").json()["detail"].replace("no-such-project", "X")
    )
    assert hidden == missing


def test_project_list_shows_only_own_projects(world: World) -> None:
    world.fresh_project()
    names = {p["name"] for p in world.api.as_(world.tokens["other_owner"]).get("/projects").json()}
    assert names == {"beta"}


def test_api_key_is_bound_to_its_project_and_scopes(world: World) -> None:
    project = world.fresh_project()
    owner = world.api.as_(world.tokens["owner"])
    read_key = world.api.key(project, ["read"], token=world.tokens["owner"])
    inference_key = world.api.key(project, ["inference"], token=world.tokens["owner"])
    as_read = owner.as_(read_key)
    assert as_read.get(f"/projects/{project}").status_code == 200
    assert as_read.patch(f"/projects/{project}", {"title": "x"}).status_code == 403
    # A key never reaches another project, even one its owner belongs to.
    world.api.project("gamma", owner="owner")
    assert as_read.get("/projects/gamma").status_code == 404
    assert [p["name"] for p in as_read.get("/projects").json()] == [project]
    assert owner.as_(inference_key).get(f"/projects/{project}").status_code == 403


def test_admin_scope_only_for_admins(world: World) -> None:
    project = world.fresh_project()
    owner = world.api.as_(world.tokens["owner"])
    r = owner.post(f"/projects/{project}/keys", {"name": "k", "scopes": ["admin"]})
    assert r.status_code == 403
    assert "admin" in r.json()["detail"]


def test_launches_at_once_stay_within_the_quota(api: Api) -> None:
    """Eight launches at the same moment into room for two: two start, six are refused (each
    launch checks the quota with the project locked until it has committed)."""
    assert api.patch("/projects/default/quota", {"deployments": 2}).status_code == 200
    start = threading.Barrier(8)

    def launch(_: int) -> int:
        start.wait()
        body = {"template": "batch", "inputs": {"command": "sleep 60"}}
        return int(api.post("/projects/default/deployments", body).status_code)

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(launch, range(8)))
    assert statuses == [201, 201] + [403] * 6, statuses
    assert len(api.get("/projects/default/deployments").json()) == 2
