"""DEEPaaS modules served through the platform: a project member deploys one, callers reach it at
/m/<model>/v2/… with an API key, and the project boundary holds. Real model servers (the iris
and digits example modules under `agora serve-model`) on the local backend and on the real Slurm
test cluster, started from zero by the first request."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser
from sklearn.datasets import load_digits

from tests.conftest import ADMIN_KEY, browser_tab
from tests.deployments.test_slurm import slurm_backend
from tests.gateway.conftest import Gateway
from tests.helpers import PASSWORD
from tests.modelserver.swagger import try_predict
from tests.slurm_cluster import SlurmCluster

IRIS = {"sepal_length": "5.1", "sepal_width": "3.5", "petal_length": "1.4", "petal_width": "0.2"}
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _user(gw: Gateway, name: str, project: str) -> str:
    """A user who is a member of a new project; returns their CLI session token."""
    r = gw.api("POST", "/users", json={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = gw.api("POST", "/projects", json={"name": project})
    assert r.status_code == 201, r.text
    r = gw.api("POST", f"/projects/{project}/members", json={"username": name, "role": "member"})
    assert r.status_code == 201, r.text
    r = gw.platform.http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _key(gw: Gateway, token: str, project: str) -> str:
    r = gw.api(
        "POST", f"/projects/{project}/keys", token, json={"name": "k", "scopes": ["inference"]}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _wait_training(url: str, key: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url, headers=_bearer(key), timeout=30)
        assert r.status_code == 200, r.text
        record = r.json()
        if record["status"] not in ("running", "pending") or time.monotonic() > deadline:
            return dict(record)
        time.sleep(0.2)


def test_member_serves_a_module_and_calls_it_through_the_platform(
    gateway_factory: Callable[..., Gateway], browser: Browser
) -> None:
    gw = gateway_factory(gateway_max_upload_bytes=1_048_576)
    ana = _user(gw, "ana", "lab")
    bob = _user(gw, "bob", "other")
    spec = {
        "name": "iris-lab",
        "kind": "deepaas",
        "project": "lab",
        "inputs": {"module": "iris"},
        "queue_timeout": 90,
    }
    # Members may serve DEEPaaS modules in their own project, not more.
    r = gw.api("POST", "/models", ana, json={**spec, "kind": "llm"})
    assert r.status_code == 403, r.text
    r = gw.api("POST", "/models", ana, json={**spec, "public": True})
    assert r.status_code == 403, r.text
    r = gw.api("POST", "/models", bob, json=spec)
    assert r.status_code == 404, r.text  # not bob's project
    r = gw.api("POST", "/models", ana, json={**spec, "inputs": {}})
    assert r.status_code == 422, r.text
    assert "module" in r.text
    r = gw.api("POST", "/models", ana, json=spec)
    assert r.status_code == 201, r.text
    assert r.json()["template"] == "deepaas-model"

    key = _key(gw, ana, "lab")
    base = gw.platform.url + "/m/iris-lab"
    # The first request waits while a replica starts from zero, then succeeds.
    r = httpx.post(base + "/v2/models/iris/predict/", data=IRIS, headers=_bearer(key), timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["species"] == "setosa"

    # The DEEPaaS paths are the module server's own; its links point through the platform.
    r = httpx.get(base + "/v2/models/", headers=_bearer(key), timeout=30)
    assert r.status_code == 200, r.text
    (entry,) = r.json()["models"]
    assert entry["id"] == "iris"
    assert any(link["href"].startswith("/m/iris-lab/") for link in entry["links"]), entry

    # Its Swagger UI names only relative addresses, and the document's server is the platform's
    # prefix: "Try it out" goes through the platform.
    r = httpx.get(base + "/ui", headers=_bearer(key), timeout=30)
    assert r.status_code == 200 and 'src="ui/swagger-ui-bundle.js"' in r.text, r.text
    r = httpx.get(base + "/ui/swagger-ui-bundle.js", headers=_bearer(key), timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    r = httpx.get(base + "/swagger.json", headers=_bearer(key), timeout=30)
    assert r.json()["servers"] == [{"url": "/m/iris-lab"}]
    # In a signed-in browser the page opens, and its POSTs (no CSRF header, but the browser's
    # Origin of the platform itself and the page as Referer) predict; a POST from a page
    # elsewhere, or from a deployment's page on the same origin, does not.
    cookie = {"Cookie": f"agora_session={ana}"}
    r = httpx.get(base + "/ui", headers=cookie, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(base + "/v2/models/iris/predict/", data=IRIS, headers=cookie, timeout=30)
    assert r.status_code == 403 and "X-CSRF-Token" in r.text, r.text
    public = gw.platform.settings.public_url or ""
    own = {**cookie, "Origin": public, "Referer": public + "/m/iris-lab/ui"}
    r = httpx.post(base + "/v2/models/iris/predict/", data=IRIS, headers=own, timeout=30)
    assert r.status_code == 200 and r.json()["species"] == "setosa", r.text
    for other in (
        {"Origin": "https://evil.example", "Referer": "https://evil.example/m/iris-lab/ui"},
        {"Origin": public, "Referer": public + "/d/d1234/notebook"},
    ):
        r = httpx.post(
            base + "/v2/models/iris/predict/", data=IRIS, headers={**cookie, **other}, timeout=30
        )
        assert r.status_code == 403, r.text

    # The same in Chromium, signed in as ana: "Try it out" on the module's Swagger UI predicts
    # through the platform.
    with browser_tab(browser, gw.platform.url, 30_000) as tab:
        tab.goto("/login")
        tab.get_by_label("Username").fill("ana")
        tab.get_by_label("Password").fill(PASSWORD)
        tab.get_by_role("button", name="Sign in").click()
        tab.wait_for_url(f"{gw.platform.url}/")
        tab.goto("/m/iris-lab/ui")
        assert try_predict(tab)["species"] == "setosa"

    # Bad input is the module server's 4xx, passed on as it is.
    r = httpx.post(
        base + "/v2/models/iris/predict/",
        data={**IRIS, "petal_width": "wide"},
        headers=_bearer(key),
        timeout=30,
    )
    assert 400 <= r.status_code < 500 and "petal_width" in r.text, r.text

    # Training and its status, through the platform.
    r = httpx.post(
        base + "/v2/models/iris/train/",
        params={"classifier": "knn"},
        headers=_bearer(key),
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    uuid = r.json()["uuid"]
    record = _wait_training(base + f"/v2/models/iris/train/{uuid}", key)
    assert record["status"] == "done", record
    r = httpx.get(base + "/v2/models/iris/train/", headers=_bearer(key), timeout=30)
    assert uuid in {t["uuid"] for t in r.json()}

    # The project boundary: another project's key, no key, a language-model key scope.
    bob_key = _key(gw, bob, "other")
    r = httpx.post(
        base + "/v2/models/iris/predict/", data=IRIS, headers=_bearer(bob_key), timeout=30
    )
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"
    r = httpx.post(base + "/v2/models/iris/predict/", data=IRIS, timeout=30)
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    r = httpx.get(gw.platform.url + "/m/no-such/v2/models/", headers=_bearer(key), timeout=30)
    assert r.status_code == 404

    # Too large an upload is refused before it reaches the module.
    limit = gw.platform.settings.gateway_max_upload_bytes
    r = httpx.post(
        base + "/v2/models/iris/predict/",
        files={"junk": ("big.bin", b"\0" * (limit + 1), "application/octet-stream")},
        headers=_bearer(key),
        timeout=60,
    )
    assert r.status_code == 413, r.text

    # Metered (no tokens), and the module is not an OpenAI model.
    rows = gw.wait_usage(3, model="iris-lab")
    assert sum(row["requests"] for row in rows) >= 3
    r = httpx.get(gw.url + "/models", headers=_bearer(key), timeout=30)
    assert "iris-lab" not in {m["id"] for m in r.json()["data"]}

    # Its owner's project may change and delete it; the audit trail has both.
    r = gw.api("PATCH", "/models/iris-lab", ana, json={"max_replicas": 2})
    assert r.status_code == 200, r.text
    r = gw.api("DELETE", "/models/iris-lab", bob)
    assert r.status_code == 404
    r = gw.api("DELETE", "/models/iris-lab", ana)
    assert r.status_code == 204
    r = gw.api("GET", "/audit", ADMIN_KEY, params={"action": "model."})
    assert r.status_code == 200, r.text
    mine = [e for e in r.json()["entries"] if e["target"] == "model:iris-lab"]
    assert {e["action"] for e in mine} == {"model.create", "model.update", "model.delete"}
    assert {e["actor"] for e in mine} == {"ana"}


@SQLITE
def test_a_module_on_two_replicas_trains_and_answers(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory()
    ana = _user(gw, "ana", "lab")
    spec = {"name": "iris-two", "kind": "deepaas", "project": "lab", "inputs": {"module": "iris"},
            "min_replicas": 2, "max_replicas": 2, "queue_timeout": 90}  # fmt: skip
    r = gw.api("POST", "/models", ana, json=spec)
    assert r.status_code == 201, r.text

    def running() -> list[str]:
        r = gw.api("GET", "/models/iris-two", ana)
        assert r.status_code == 200, r.text
        return [rep["id"] for rep in r.json()["replicas"] if rep["state"] == "running"]

    deadline = time.monotonic() + 120
    while len(running()) < 2:
        assert time.monotonic() < deadline, gw.api("GET", "/models/iris-two", ana).json()
        time.sleep(0.2)
    key = _key(gw, ana, "lab")
    base = gw.platform.url + "/m/iris-two"
    # A training runs on the oldest replica; its record is in the module's state directory,
    # which the replicas share, so every look at it finds it, whichever replica answers.
    r = httpx.post(base + "/v2/models/iris/train/", params={"classifier": "knn"},
                   headers=_bearer(key), timeout=30)  # fmt: skip
    assert r.status_code in (200, 201), r.text
    uuid = r.json()["uuid"]
    for _ in range(6):
        r = httpx.get(base + f"/v2/models/iris/train/{uuid}", headers=_bearer(key), timeout=30)
        assert r.status_code == 200, r.text
        r = httpx.get(base + "/v2/models/iris/train/", headers=_bearer(key), timeout=30)
        assert uuid in {t["uuid"] for t in r.json()}, r.json()
    assert _wait_training(base + f"/v2/models/iris/train/{uuid}", key)["status"] == "done"
    with httpx.Client(headers=_bearer(key), timeout=30) as http:
        for _ in range(10):
            r = http.post(base + "/v2/models/iris/predict/", data=IRIS)
            assert r.status_code == 200 and r.json()["species"] == "setosa", r.text
        # A replica's own metrics, through the platform.
        r = http.get(base + "/metrics")
        assert r.status_code == 200, r.text
        assert 'agora_modelserver_predictions_total{model="iris",status="200"}' in r.text


def _digit_png(index: int = 0) -> tuple[bytes, int]:
    digits = load_digits()
    pixels = (digits.images[index] * (255 / 16)).astype("uint8")
    image = Image.fromarray(pixels, mode="L").resize((32, 32), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue(), int(digits.target[index])


@SQLITE
def test_digits_from_the_catalog_on_slurm_predicts_and_trains(
    gateway_factory: Callable[..., Gateway], cluster: SlurmCluster, tmp_path: Path
) -> None:
    gw = gateway_factory(backends=[slurm_backend(cluster, tmp_path)])
    # From the catalog entry, as the web page's "Deploy" does, onto the Slurm backend.
    r = gw.api(
        "POST",
        "/catalog/digits/deploy",
        json={
            "project": "default",
            # One of the test node's two CPUs: other tests' jobs may hold the other.
            "inputs": {"cpus": 1, "memory_gb": 1},
            "backends": ["hpc"],
            "queue_timeout": 90,
        },
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"kind": "model", "name": "digits", "project": "default", "url": "/m/digits"}
    _, key = gw.key()
    png, label = _digit_png()
    r = httpx.post(
        gw.platform.url + "/m/digits/v2/models/digits/predict/",
        files={"image": ("digit.png", png, "image/png")},
        headers=_bearer(key),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["digit"] == label
    status = gw.api("GET", "/models/digits", ADMIN_KEY).json()
    (replica,) = status["replicas"]
    assert replica["backend"] == "hpc" and replica["state"] == "running"
    job_id = gw.platform.get(replica["id"])["attempts"][0]["job_id"].split("@")[0]
    assert cluster.job_state(job_id) == "RUNNING"
    # A text file where the image belongs: the module's own clear message, not a stack trace.
    r = httpx.post(
        gw.platform.url + "/m/digits/v2/models/digits/predict/",
        files={"image": ("notes.txt", b"just some words", "text/plain")},
        headers=_bearer(key),
        timeout=60,
    )
    assert r.status_code == 400, r.text
    assert "Traceback" not in r.text and "image" in r.text.lower()
    # Training on the Slurm node, and its status, through the platform.
    base = gw.platform.url + "/m/digits/v2/models/digits/train/"
    r = httpx.post(base, headers=_bearer(key), timeout=60)
    assert r.status_code in (200, 201), r.text
    record = _wait_training(base + r.json()["uuid"], key)
    assert record["status"] == "done", record
    # Removing the model stops its replica: the Slurm job ends and frees the node.
    assert gw.api("DELETE", "/models/digits", ADMIN_KEY).status_code == 204
    gw.platform.wait(replica["id"], {"stopped", "failed"}, timeout=60)
    assert cluster.job_state(job_id) != "RUNNING"
