"""From the catalog to a prediction: the built-in example modules deployed from their catalog
entries (API and web form) and called through the platform."""

from __future__ import annotations

import math
from collections.abc import Callable

import httpx

from tests.conftest import ADMIN_PASSWORD
from tests.gateway.conftest import Gateway
from tests.serving.test_served_modules import IRIS, _bearer
from tests.web.helpers import sign_in, submit


def test_catalog_entries_deploy_and_answer_through_the_platform(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory()
    r = gw.api("GET", "/catalog", params={"q": "iris"})
    assert r.status_code == 200, r.text
    assert "iris" in {e["name"] for e in r.json()["items"]}
    r = gw.api("GET", "/catalog/iris")
    assert r.json()["run"]["kind"] == "deepaas" and r.json()["run"]["entry_point"] == "iris"

    r = gw.api("POST", "/catalog/iris/deploy", json={"project": "default", "name": "flowers"})
    assert r.status_code == 201, r.text
    assert r.json() == {
        "kind": "model",
        "name": "flowers",
        "project": "default",
        "url": "/m/flowers",
    }
    r = gw.api("POST", "/catalog/embeddings/deploy", json={"project": "default"})
    assert r.status_code == 201, r.text
    # A second deployment under a name in use: a clear conflict.
    r = gw.api("POST", "/catalog/iris/deploy", json={"project": "default", "name": "flowers"})
    assert r.status_code == 409, r.text
    r = gw.api("POST", "/catalog/no-such/deploy", json={"project": "default"})
    assert r.status_code == 404, r.text

    _, key = gw.key()
    r = httpx.post(
        gw.platform.url + "/m/flowers/v2/models/iris/predict/",
        data={**IRIS, "petal_length": "5.5", "petal_width": "2.1", "sepal_length": "6.7"},
        headers=_bearer(key),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["species"] == "virginica"

    r = httpx.post(
        gw.platform.url + "/m/embeddings/v2/models/embeddings/predict/",
        data={"sentences": ["A cat sits on the mat.", "Ein Hund bellt."]},
        headers=_bearer(key),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()["predictions"]  # no response schema: DEEPaaS wraps the result
    assert body["dimensions"] == 384 and len(body["vectors"]) == 2
    assert math.isclose(sum(x * x for x in body["vectors"][0]), 1.0, rel_tol=1e-3)


def test_deploy_form_and_try_it_from_the_catalog(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory()
    client = httpx.Client(base_url=gw.platform.url, timeout=30, follow_redirects=False)
    sign_in(client, "admin", ADMIN_PASSWORD)  # type: ignore[arg-type]
    # No served model yet: "Try it" leads to the deploy form.
    r = client.get("/catalog/iris/try", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/catalog/iris/deploy"
    page = client.get("/catalog/iris/deploy")
    assert page.status_code == 200 and "Deploy" in page.text
    r = submit(
        client,  # type: ignore[arg-type]
        "/catalog/iris/deploy",
        "/catalog/iris/deploy",
        project="default",
        name="iris-web",
        min_replicas="0",
        max_replicas="2",
        workers="1",
        backend="",
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/models/iris-web"
    model = gw.api("GET", "/models/iris-web").json()["model"]
    assert model["kind"] == "deepaas" and model["max_replicas"] == 2
    assert model["inputs"]["module"] == "iris"
    r = client.get("/catalog/iris/try", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/models/iris-web/try"
    page = client.get("/models/iris-web/try")
    assert page.status_code == 200 and 'data-base="/m/iris-web"' in page.text
    # Bad form input comes back on the form, with the reason.
    r = submit(
        client,  # type: ignore[arg-type]
        "/catalog/iris/deploy",
        "/catalog/iris/deploy",
        project="default",
        name="iris-web",
        min_replicas="0",
        max_replicas="1",
        workers="1",
        backend="",
    )
    assert r.status_code == 409 and "exists already" in r.text
