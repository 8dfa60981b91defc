"""Bad input gets a 4xx problem+json a person can act on; never a 500."""

from __future__ import annotations

from tests.helpers import Api


def _is_problem(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


def test_unknown_route_is_problem(api: Api) -> None:
    body = _is_problem(api.get("/nothing-here"), 404)
    assert "/api/v1/nothing-here" in body["detail"]


def test_wrong_method_is_problem(api: Api) -> None:
    _is_problem(api.client.put("/api/v1/me"), 405)


def test_missing_and_extra_fields_are_named(api: Api) -> None:
    body = _is_problem(api.post("/projects", {"title": "x", "colour": "red"}), 422)
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"name", "colour"}


def test_wrong_types_are_named(api: Api) -> None:
    body = _is_problem(api.post("/users", {"username": "ok-name", "is_admin": "maybe"}), 422)
    assert body["errors"][0]["field"] == "is_admin"


def test_malformed_json_is_422(api: Api) -> None:
    r = api.client.post(
        "/api/v1/projects",
        content=b"{not json",
        headers={**api._h(), "content-type": "application/json"},
    )
    _is_problem(r, 422)


def test_oversized_body_is_413(api: Api) -> None:
    big = {"name": "big", "description": "x" * 2_000_000}
    body = _is_problem(api.post("/projects", big), 413)
    assert "larger than" in body["detail"]


def test_oversized_chunked_body_is_413(api: Api) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 65536

    r = api.client.post(
        "/api/v1/projects",
        content=chunks(),
        headers={**api._h(), "content-type": "application/json"},
    )
    _is_problem(r, 413)


def test_duplicate_project_is_409(api: Api) -> None:
    assert api.post("/projects", {"name": "lab"}).status_code == 201
    body = _is_problem(api.post("/projects", {"name": "lab"}), 409)
    assert "already exists" in body["detail"]


def test_last_owner_cannot_leave(api: Api) -> None:
    token = api.user("alice")
    api.project("lab", alice="owner")
    body = _is_problem(api.as_(token).delete("/projects/lab/members/alice"), 422)
    assert "last owner" in body["detail"]


def test_huge_ids_are_422_not_500(api: Api) -> None:
    api.project("lab")
    _is_problem(api.delete("/projects/lab/keys/99999999999999999999999"), 422)
    _is_problem(api.delete("/projects/lab/keys/0"), 422)
    _is_problem(api.delete("/projects/lab/keys/12345"), 404)


def test_cookie_session_without_csrf_header_cannot_change(api: Api) -> None:
    token = api.user("alice")
    api.client.cookies.set("agora_session", token)
    try:
        r = api.client.post("/api/v1/auth/logout")
        body = _is_problem(r, 403)
        assert "X-CSRF-Token" in body["detail"]
        assert api.client.get("/api/v1/me").status_code == 200  # reads are fine
    finally:
        api.client.cookies.clear()


def test_racing_creates_give_one_success_and_conflicts(api: Api) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda _: api.post("/projects", {"name": "race"}).status_code, range(8))
        )
    assert statuses.count(201) == 1
    assert set(statuses) <= {201, 409}
