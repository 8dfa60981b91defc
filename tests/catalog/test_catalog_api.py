"""The catalog through /api/v1/catalog: import, search, registration in projects, tenancy, audit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agora.app import create_app
from agora.bootstrap import bootstrap
from agora.runtime import Runtime
from agora.services import catalog
from agora.services.context import Ctx, Principal
from tests.catalog.documents import v1, v2, write_module
from tests.conftest import ADMIN_KEY
from tests.helpers import Api


def _seed(root: Path) -> None:
    write_module(root, "mods", v2(agora={"entry_point": "mods"}))
    write_module(root, "image-classification", v1())
    for i in range(5):
        doc = v2(
            title=f"Segmenter {i}",
            summary=f"Segments images, variant {i}",
            description="Cuts **pictures** into regions.",
            tasks=["Computer Vision"],
            tags=["images", f"v{i}"],
            **{"data-type": ["Image"]},
        )
        write_module(root, f"seg-{i}", doc)


@pytest.fixture
def seeded(runtime: Runtime, catalog_dir: Path) -> Iterator[Api]:
    """An app started after the catalog directory was filled: the start imports it."""
    _seed(catalog_dir)
    app = create_app(runtime=runtime)
    bootstrap(runtime)
    with TestClient(app) as client:
        yield Api(client, ADMIN_KEY)


def _names(api: Api, **params: object) -> list[str]:
    r = api.get("/catalog", params=params)
    assert r.status_code == 200, r.text
    return [m["name"] for m in r.json()["items"]]


def test_start_imports_sources_and_search_filters_and_pages(seeded: Api) -> None:
    api = seeded
    everything = api.get("/catalog").json()
    assert everything["total"] == 7
    assert "security" in everything["facets"]["tags"]
    assert everything["facets"]["tasks"] == ["Anomaly Detection", "Computer Vision", "Time Series"]
    assert everything["facets"]["data_types"] == ["Image", "Tabular"]

    assert _names(api, q="STREAMS") == ["mods"]
    assert _names(api, q="segments variant 3") == ["seg-3"]  # every word must match
    assert _names(api, q="pre-trained imagenet") == ["image-classification"]
    assert _names(api, q="100%") == []  # LIKE wildcards are plain characters
    assert _names(api, tag="Security") == ["mods"]
    assert _names(api, task="time series") == ["mods"]
    assert _names(api, data_type="Image", tag="v2") == ["seg-2"]
    assert len(_names(api, task="Computer Vision")) == 5

    page2 = api.get("/catalog", params={"task": "Computer Vision", "per_page": 2, "page": 2}).json()
    assert [m["name"] for m in page2["items"]] == ["seg-2", "seg-3"]
    assert (page2["total"], page2["pages"]) == (5, 3)
    r = api.get("/catalog", params={"per_page": 500})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "per_page"

    mods = api.get("/catalog/mods").json()
    assert mods["run"] == {
        "kind": "deepaas",
        "runnable": True,
        "template": "deepaas-model",
        "inputs": {"module": "mods"},
        "entry_point": "mods",
        "package": None,
        "reason": "",
    }
    classifier = api.get("/catalog/image-classification").json()
    assert classifier["run"]["runnable"] is False
    assert "Docker image" in classifier["run"]["reason"]
    assert classifier["metadata_format"] == "deep-v1"
    assert api.get("/catalog/nothing-here").status_code == 404

    (entry,) = api.get("/audit", params={"action": "catalog.import"}).json()["entries"]
    assert entry["actor"] == "system" and len(entry["details"]["added"]) == 7


def test_import_reports_problems_per_file_and_keeps_going(api: Api, catalog_dir: Path) -> None:
    write_module(catalog_dir, "mods", v2())
    write_module(catalog_dir, "badlinks", v2(links={"source_code": "not a url"}))
    write_module(catalog_dir, "broken", "{not: [valid", file="ai4-metadata.yml")
    write_module(catalog_dir, "classifier", v1())

    r = api.post("/catalog/import", {})
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["added"], report["failed"]) == (2, 2)
    failed = {f["file"]: f["problems"] for f in report["files"] if f["status"] == "failed"}
    assert failed[f"{catalog_dir.name}/badlinks/ai4-metadata.yml"] == [
        {
            "file": f"{catalog_dir.name}/badlinks/ai4-metadata.yml",
            "field": "links.source_code",
            "message": "not a URL (http:// or https://)",
        }
    ]
    assert failed[f"{catalog_dir.name}/broken/ai4-metadata.yml"][0]["message"].startswith(
        "not valid YAML"
    )

    again = api.post("/catalog/import").json()
    assert (again["added"], again["unchanged"], again["failed"]) == (0, 2, 2)

    shutil.rmtree(catalog_dir / "classifier")
    write_module(catalog_dir, "mods", v2(title="Streams, renamed"))
    third = api.post("/catalog/import", {"source": str(catalog_dir)}).json()
    assert (third["updated"], third["removed"]) == (1, 1)
    assert api.get("/catalog/mods").json()["title"] == "Streams, renamed"
    assert api.get("/catalog/classifier").status_code == 404

    entries = api.get("/audit", params={"action": "catalog.import"}).json()["entries"]
    assert [e["actor"] for e in entries] == ["admin", "admin", "admin"]
    assert entries[0]["details"]["removed"] == ["classifier"]
    assert entries[-1]["outcome"] == "partial"

    sources = api.get("/catalog/sources").json()
    assert sources == [
        {
            "source": str(catalog_dir),
            "path": str(catalog_dir),
            "kind": "directory",
            "url": None,
            "branch": None,
            "commit": None,
        }
    ]
    assert api.post("/catalog/import", {"source": "/elsewhere"}).status_code == 404


def test_only_admins_import(api: Api) -> None:
    token = api.user("alice")
    r = api.as_(token).post("/catalog/import")
    assert r.status_code == 403
    assert api.as_(token).get("/catalog/sources").status_code == 403


def test_registered_entries_stay_inside_their_project(api: Api) -> None:
    alice, bob, vera = api.user("alice"), api.user("bob"), api.user("vera")
    api.project("lab", alice="member", vera="viewer")
    api.project("other", bob="owner")
    doc = v2(agora={"template": "jupyterlab", "inputs": {}})
    r = api.as_(alice).post("/catalog", {"project": "lab", "document": doc, "name": "lab-mods"})
    assert r.status_code == 201, r.text
    assert r.json()["project"] == "lab" and r.json()["public"] is False

    assert api.as_(alice).get("/catalog/lab-mods").status_code == 200
    assert api.as_(bob).get("/catalog/lab-mods").status_code == 404
    assert "lab-mods" not in _names(api.as_(bob))
    assert api.as_(bob).patch("/catalog/lab-mods", {"document": doc}).status_code == 404
    assert api.as_(bob).delete("/catalog/lab-mods").status_code == 404
    assert "lab-mods" in _names(api.as_(alice), project="lab")
    assert api.as_(bob).get("/catalog", params={"project": "lab"}).status_code == 404
    assert api.get("/catalog/lab-mods").status_code == 200  # admins see every entry

    # A viewer reads but does not register; a key of another project does not see it.
    assert api.as_(vera).get("/catalog/lab-mods").status_code == 200
    r = api.as_(vera).post("/catalog", {"project": "lab", "document": doc, "name": "x"})
    assert r.status_code == 403
    other_key = api.key("other", ["read"], bob)
    assert api.as_(other_key).get("/catalog/lab-mods").status_code == 404

    # Made public by an administrator: everyone reads it, only its project changes it.
    assert api.as_(alice).patch("/catalog/lab-mods", {"public": True}).status_code == 403
    assert api.patch("/catalog/lab-mods", {"public": True}).status_code == 200
    assert api.as_(bob).get("/catalog/lab-mods").status_code == 200
    assert api.as_(bob).delete("/catalog/lab-mods").status_code == 403

    changed = api.as_(alice).patch(
        "/catalog/lab-mods", {"document": v2(title="Lab streams", agora={"entry_point": "m"})}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["title"] == "Lab streams"
    assert changed.json()["run"]["template"] == "deepaas-model"
    assert api.as_(alice).delete("/catalog/lab-mods").status_code == 204
    assert api.get("/catalog/lab-mods").status_code == 404

    entries = api.get("/audit", params={"action": "catalog."}).json()["entries"]
    assert [(e["action"], e["actor"], e["project"]) for e in reversed(entries)] == [
        ("catalog.register", "alice", "lab"),
        ("catalog.update", "admin", "lab"),
        ("catalog.update", "alice", "lab"),
        ("catalog.delete", "alice", "lab"),
    ]


def test_bad_documents_get_a_problem_naming_the_field(api: Api) -> None:
    doc = v2(links={"source_code": "github.com/x"}, tasks=["Telepathy"])
    r = api.post(
        "/catalog", {"project": "default", "document": doc, "name": "bad", "file": "bad.yml"}
    )
    assert r.status_code == 422
    body = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert body["detail"] == (
        "bad.yml: links.source_code: not a URL (http:// or https://) (and 1 more problem)"
    )
    assert [p["field"] for p in body["problems"]] == ["links.source_code", "tasks[0]"]

    r = api.post("/catalog", {"project": "default", "document": v2(), "name": "Bad Name"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name"
    r = api.post("/catalog", {"project": "default", "document": v2()})
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "agora.name"
    r = api.post(
        "/catalog", {"project": "default", "document": v2(agora={"template": "nope"}), "name": "x"}
    )
    assert r.status_code == 422
    assert r.json()["problems"][0]["field"] == "agora.template"

    # No database stores NUL in text: refused by field, never a server error.
    nul = v2(description="a\x00b", tags=["ok", "b\x00d"])
    r = api.post("/catalog", {"project": "default", "document": nul, "name": "nul"})
    assert r.status_code == 422
    assert [p["field"] for p in r.json()["problems"]] == ["description", "tags[1]"]

    ok = {"project": "default", "document": v2(), "name": "taken"}
    assert api.post("/catalog", ok).status_code == 201
    assert api.post("/catalog", ok).status_code == 409


def test_imported_entries_are_changed_at_their_source(api: Api, catalog_dir: Path) -> None:
    write_module(catalog_dir, "mods", v2())
    api.post("/catalog/import")
    alice = api.user("alice")
    assert api.as_(alice).delete("/catalog/mods").status_code == 403
    r = api.patch("/catalog/mods", {"document": v2()})
    assert r.status_code == 409 and "import again" in r.json()["detail"]
    assert api.patch("/catalog/mods", {"public": False}).status_code == 200
    assert api.as_(alice).get("/catalog/mods").status_code == 404
    # A project entry keeps its name against a source that later offers the same one.
    api.patch("/catalog/mods", {"public": True})
    api.delete("/catalog/mods")
    api.post("/catalog", {"project": "default", "document": v2(), "name": "mods"})
    report = api.post("/catalog/import").json()
    assert report["files"][0]["problems"][0]["message"] == "'mods' is taken by a project's entry"


def test_runnable_is_looked_up_with_visibility(runtime: Runtime, api: Api) -> None:
    api.post(
        "/catalog",
        {"project": "default", "document": v2(agora={"entry_point": "iris"}), "name": "iris-copy"},
    )
    with runtime.db.session() as db:
        admin = Ctx(db=db, runtime=runtime, principal=Principal(1, "admin", True, "session"))
        run = catalog.runnable(admin, "iris-copy")
        assert (run.kind, run.template, run.inputs) == (
            "deepaas",
            "deepaas-model",
            {"module": "iris"},
        )
