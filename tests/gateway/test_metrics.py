"""The gateway's Prometheus metrics (GET /metrics): fed from the usage records and the router,
readable by administrators and the metrics token, added up across ``agora gateway --workers``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from agora.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.gateway.conftest import Gateway, standalone_gateway
from tests.helpers import PASSWORD

MSG = [{"role": "user", "content": "hello"}]
TOKEN = "metrics-token-for-the-scraper"
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels (parsed by prometheus_client)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def scrape(base: str, token: str = TOKEN) -> httpx.Response:
    return httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def wait_for(base: str, name: str, labels: dict[str, str], value: float) -> dict:
    """Scrape until the sample has the value (figures follow the usage flush, once a second)."""
    key = (name, tuple(sorted(labels.items())))
    deadline = time.monotonic() + 15
    while True:
        r = scrape(base)
        assert r.status_code == 200, r.text
        found = samples(r.text)
        if found.get(key) == value:
            return found
        assert time.monotonic() < deadline, (key, found.get(key), value)
        time.sleep(0.2)


def test_requests_tokens_latency_and_replicas(
    gateway_factory: Callable[..., Gateway], upstreams: Callable[..., str]
) -> None:
    gw = gateway_factory(metrics_token=TOKEN)
    gw.external("chat-model", upstreams("--words", "4"))
    gw.external("broken", upstreams("--fail-status", "503"))
    _, key = gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    # The failure first: usage is flushed in order, so once the last success is counted, so is it.
    r = httpx.post(gw.url + "/chat/completions", json={"model": "broken", "messages": MSG},
                   headers=auth, timeout=30)  # fmt: skip
    assert r.status_code >= 500
    for _ in range(3):
        r = httpx.post(gw.url + "/chat/completions", json={"model": "chat-model", "messages": MSG},
                       headers=auth, timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
    base = gw.platform.url
    found = wait_for(
        base,
        "agora_gateway_requests_total",
        {"model": "chat-model", "endpoint": "chat", "status": "200"},
        3,
    )
    chat = {"model": "chat-model"}
    assert found[("agora_gateway_tokens_total", (("direction", "in"), *chat.items()))] == 21
    assert found[("agora_gateway_tokens_total", (("direction", "out"), *chat.items()))] == 12
    histogram = (("endpoint", "chat"), ("model", "chat-model"))
    assert found[("agora_gateway_request_duration_seconds_count", histogram)] == 3
    assert 0 < found[("agora_gateway_request_duration_seconds_sum", histogram)] < 30
    assert found[("agora_gateway_inflight_requests", (("model", "chat-model"),))] == 0
    assert found[("agora_gateway_replicas", (("model", "chat-model"), ("state", "ready")))] == 1
    failed = [k for k, v in found.items() if k[0] == "agora_gateway_requests_total"
              and dict(k[1])["model"] == "broken" and v == 1]  # fmt: skip
    assert failed, found  # the failure is counted, with its status
    # Nothing about who called: no user, project or key in any label.
    assert not [k for k in found if {"user", "project", "key"} & {name for name, _ in k[1]}]


def test_who_may_read_the_metrics(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(metrics_token=TOKEN)
    base = gw.platform.url
    r = httpx.get(base + "/metrics")
    assert r.status_code == 401, r.text
    assert "AGORA_METRICS_TOKEN" in r.json()["detail"]
    assert scrape(base, "not-the-token").status_code == 401
    r = gw.api("POST", "/users", json={"username": "ana", "password": PASSWORD})
    assert r.status_code == 201, r.text
    login = gw.platform.http.post(
        "/api/v1/auth/login", json={"username": "ana", "password": PASSWORD}
    )
    r = scrape(base, login.json()["token"])
    assert r.status_code == 403 and "administrators" in r.json()["detail"], r.text
    for reader in (TOKEN, ADMIN_KEY):
        r = scrape(base, reader)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "# TYPE agora_gateway_requests_total counter" in r.text


@SQLITE
def test_gateway_workers_add_up_their_metrics(
    gateway_factory: Callable[..., Gateway], upstreams: Callable[..., str], redis_url: str
) -> None:
    """`agora gateway --workers 2`: whichever worker answers the scrape, it counts the requests
    both served."""
    gw = gateway_factory(redis_url=redis_url)
    gw.external("chat-model", upstreams())
    _, key = gw.key()
    with standalone_gateway(gw, "--workers", "2", redis_url=redis_url, metrics_token=TOKEN) as base:
        auth = {"Authorization": f"Bearer {key}"}
        body = {"model": "chat-model", "messages": MSG}
        for _ in range(40):  # a new connection each: the kernel spreads them over the workers
            r = httpx.post(base + "/v1/chat/completions", json=body, headers=auth, timeout=30)
            assert r.status_code == 200, r.text
        labels = {"model": "chat-model", "endpoint": "chat", "status": "200"}
        found = wait_for(base, "agora_gateway_requests_total", labels, 40)
        for _ in range(10):  # scrapes land on either worker: each answers for both
            key_ = ("agora_gateway_requests_total", tuple(sorted(labels.items())))
            assert samples(scrape(base).text)[key_] == 40
        counts = [
            v for k, v in found.items() if k[0] == "agora_gateway_request_duration_seconds_count"
        ]
        assert counts == [40]
        port = base.rsplit(":", 1)[1]
        assert (gw.platform.settings.data_dir / "run" / f"gateway-metrics-{port}").is_dir()


def test_a_short_metrics_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="AGORA_METRICS_TOKEN must be at least 24 random"):
        Settings(data_dir=tmp_path, metrics_token="short")
