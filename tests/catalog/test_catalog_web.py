"""The catalog pages: the cards grid with server-side search, and an entry's page."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.catalog.documents import v1, v2, write_module
from tests.conftest import ADMIN_PASSWORD
from tests.helpers import Api
from tests.web.helpers import HTML, sign_in, text_of

HOSTILE = """\
# Streams

Read **this** first.

<script>alert("owned")</script>

<img src=x onerror="alert(1)">

[click me](javascript:alert(1))
"""


def _fill(api: Api, catalog_dir: Path) -> None:
    write_module(
        catalog_dir,
        "mods",
        v2(
            description=HOSTILE,
            agora={
                "entry_point": "mods",
                "authors": [{"name": "Giang Nguyen", "affiliation": "IISAS"}],
                "license": "Apache-2.0",
                "versions": [{"version": "1.2.0", "date": "2024-02-19", "notes": "LSTM added"}],
            },
        ),
    )
    write_module(catalog_dir, "image-classification", v1())
    for i in range(30):
        write_module(catalog_dir, f"seg-{i:02}", v2(title=f"Segmenter {i}", description="x"))
    assert api.post("/catalog/import").json()["failed"] == 0


def test_catalog_grid_searches_filters_and_pages(
    api: Api, client: TestClient, catalog_dir: Path
) -> None:
    _fill(api, catalog_dir)
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = client.get("/catalog", headers=HTML)
    assert r.status_code == 200
    assert 'href="/catalog" class="active"' in r.text  # in the navigation
    assert "32 entries" in text_of(r) and "page 1 of 2" in text_of(r)
    assert r.text.count('class="card template-card catalog-card"') == 24
    assert 'href="/catalog?page=2"' in r.text
    assert '<option value="Anomaly Detection">' in r.text

    found = client.get("/catalog", params={"q": "image classifier"}, headers=HTML)
    assert 'data-entry="image-classification"' in found.text
    assert found.text.count("catalog-card") == 1
    assert "not runnable" in found.text

    second = client.get("/catalog", params={"task": "Time Series", "page": 2}, headers=HTML)
    assert second.status_code == 200 and "page 2 of 2" in text_of(second)
    assert 'href="/catalog?task=Time+Series&amp;page=1"' in second.text

    none = client.get("/catalog", params={"q": "nothing-like-this"}, headers=HTML)
    assert "No entry matches" in text_of(none)


def test_entry_page_renders_markdown_safely(
    api: Api, client: TestClient, catalog_dir: Path
) -> None:
    _fill(api, catalog_dir)
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = client.get("/catalog/mods", headers=HTML)
    assert r.status_code == 200
    page = r.text
    assert "<h1>Streams</h1>" in page and "<strong>this</strong>" in page
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in page
    assert 'href="javascript:' not in page
    assert 'href="/catalog/mods/try"' in page and 'href="/catalog/mods/deploy"' in page
    text = text_of(r)
    assert "Giang Nguyen (IISAS)" in text and "Apache-2.0" in text
    assert "1.2.0 2024-02-19 LSTM added" in text
    assert 'href="https://github.com/deephdc/DEEP-OC-mods"' in page
    assert 'href="https://doi.org/10.5281/zenodo.1234567"' in page  # DOI, in links and Cite
    assert "2000 MB" in text and "8000 MB" in text  # inference and training resources
    assert "DEEPaaS model mods" in text


def test_entry_that_does_not_run_here_says_so_without_buttons(
    api: Api, client: TestClient, catalog_dir: Path
) -> None:
    _fill(api, catalog_dir)
    sign_in(client, "admin", ADMIN_PASSWORD)
    r = client.get("/catalog/image-classification", headers=HTML)
    assert "Not runnable here." in text_of(r)
    assert "deephdc/deep-oc-image-classification-tf" in text_of(r)
    assert "/image-classification/try" not in r.text
    assert "/image-classification/deploy" not in r.text
    assert client.get("/catalog/nothing", headers=HTML).status_code == 404


def test_pages_need_a_session(client: TestClient) -> None:
    r = client.get("/catalog", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
