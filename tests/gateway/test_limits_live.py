"""Limits through the live gateway: under 200 concurrent requests, and shared by two gateway
processes through a real redis-server. Scale from zero on the real Slurm test cluster."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.deployments.test_slurm import slurm_backend
from tests.gateway.conftest import FAKE, Gateway, standalone_gateway
from tests.slurm_cluster import SlurmCluster

MSG = [{"role": "user", "content": "hello"}]
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def burst(urls: list[str], key: str, n: int, model: str = "chat-model") -> Counter[int]:
    """n concurrent chat requests, spread over the gateway URLs; counts of status codes."""
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=n)
    clients = [
        httpx.AsyncClient(
            base_url=u, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
        )
        for u in urls
    ]
    start = asyncio.Event()

    async def one(i: int) -> None:
        await start.wait()
        r = await clients[i % len(clients)].post(
            "/chat/completions", json={"model": model, "messages": MSG}
        )
        statuses[r.status_code] += 1
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "rate_limit_exceeded"

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0.1)
    start.set()
    await asyncio.gather(*tasks)
    for c in clients:
        await c.aclose()
    return statuses


def test_limits_hold_under_200_concurrent_requests(gw: Gateway, upstreams) -> None:
    gw.external("chat-model", upstreams("--delay", "0.05"))
    key_id, key = gw.key()
    r = gw.api("PUT", f"/projects/default/keys/{key_id}/limits", gw.session(), json={"rpm": 57})
    assert r.status_code == 200, r.text
    statuses = asyncio.run(burst([gw.url], key, 200))
    assert statuses == Counter({200: 57, 429: 143})
    # The refused ones are metered as 429s, the admitted ones with their tokens.
    rows = gw.wait_usage(200)
    assert sum(r["requests"] for r in rows) == 200
    assert sum(r["errors"] for r in rows) == 143
    assert sum(r["tokens_out"] for r in rows) == 57 * 5


@SQLITE
def test_two_gateway_processes_share_limits_through_redis(
    gateway_factory: Callable[..., Gateway], upstreams, redis_url: str, tmp_path: Path
) -> None:
    gw = gateway_factory(redis_url=redis_url)
    gw.external("chat-model", upstreams())
    _, key = gw.key()
    r = gw.api("PUT", "/projects/default/limits", json={"rpm": 40})
    assert r.status_code == 200, r.text
    # A second gateway: its own process (`agora gateway`), same database and Redis.
    with standalone_gateway(gw, redis_url=redis_url) as base:
        second = base + "/v1"
        r = httpx.get(second + "/models", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        assert [m["id"] for m in r.json()["data"]] == ["chat-model"]
        statuses = asyncio.run(burst([gw.url, second], key, 100))
        assert statuses == Counter({200: 40, 429: 60})
        # A key created and revoked on the control plane reaches the other process through the
        # version row it polls (AGORA_GATEWAY_REFRESH_SECONDS, default 1 s).
        r = gw.api("PUT", "/projects/default/limits", json={})
        key_id2, key2 = gw.key(name="later")
        headers = {"Authorization": f"Bearer {key2}"}
        deadline = time.monotonic() + 5
        while httpx.get(second + "/models", headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "the new key never reached the second gateway"
            time.sleep(0.1)
        gw.api("DELETE", f"/projects/default/keys/{key_id2}", gw.session())
        deadline = time.monotonic() + 5
        while httpx.get(second + "/models", headers=headers).status_code != 401:
            assert time.monotonic() < deadline, "the revocation never reached the second gateway"
            time.sleep(0.1)
        # The standalone gateway serves only /v1: the API stays with the control plane.
        assert httpx.get(f"{base}/api/v1/health").status_code == 404


@SQLITE
def test_scale_from_zero_on_slurm(
    gateway_factory: Callable[..., Gateway], cluster: SlurmCluster, tmp_path: Path
) -> None:
    gw = gateway_factory(backends=[slurm_backend(cluster, tmp_path)])
    gw.add_model(
        name="on-slurm",
        source="deployment",
        template="fake-openai",
        upstream_model="fake",
        inputs={"script": FAKE, "served_name": "fake"},
        backends=["hpc"],
        queue_timeout=90,
    )
    _, key = gw.key()
    started = time.monotonic()
    r = httpx.post(
        gw.url + "/chat/completions",
        json={"model": "on-slurm", "messages": MSG},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    waited = time.monotonic() - started
    status = gw.api("GET", "/models/on-slurm", ADMIN_KEY).json()
    (replica,) = status["replicas"]
    assert replica["backend"] == "hpc" and replica["state"] == "running"
    assert r.json()["choices"][0]["message"]["content"].startswith(replica["id"])
    assert waited < 60
    # Slurm knows the job.
    dep = gw.platform.get(replica["id"])
    job_id = dep["attempts"][0]["job_id"].split("@")[0]
    assert cluster.job_state(job_id) == "RUNNING"


@SQLITE
def test_a_standalone_gateway_records_when_keys_were_last_used(
    gateway_factory: Callable[..., Gateway], upstreams: Callable[..., str]
) -> None:
    gw = gateway_factory()
    gw.external("chat-model", upstreams())
    key_id, key = gw.key()

    def last_used() -> str | None:
        r = gw.api("GET", "/projects/default/keys", gw.session())
        assert r.status_code == 200, r.text
        return next(k["last_used_at"] for k in r.json() if k["id"] == key_id)

    assert last_used() is None
    # Only the second gateway sees the key used: the time must reach the database from there.
    with standalone_gateway(gw, key_last_used_flush_seconds="0.2") as base:
        r = httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while last_used() is None:
            assert time.monotonic() < deadline, "the key's use was never recorded"
            time.sleep(0.1)
