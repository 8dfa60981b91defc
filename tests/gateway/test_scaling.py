"""Replicas as deployments: scale from zero, routing, retries when a replica dies, replacement
before a time limit, scale down when idle."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from agora.gateway.autoscaler import replacement_due_at, replacement_of
from agora.models import Deployment, DeploymentState
from tests.gateway.conftest import FAKE, Gateway

MSG = [{"role": "user", "content": "hello"}]
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def model(gw: Gateway, name: str = "scaled", **spec: object) -> dict:
    inputs = {"script": FAKE, "served_name": "fake", **spec.pop("inputs", {})}  # type: ignore[dict-item]
    return gw.add_model(
        name=name,
        source="deployment",
        template="fake-openai",
        inputs=inputs,
        upstream_model="fake",
        **spec,
    )


def replicas(gw: Gateway, name: str = "scaled") -> list[dict]:
    r = gw.api("GET", f"/models/{name}")
    assert r.status_code == 200, r.text
    return list(r.json()["replicas"])


def wait_for(check, timeout: float = 30, every: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every)


def test_scale_from_zero_the_first_request_waits_and_succeeds(gw: Gateway) -> None:
    model(gw, min_replicas=0, max_replicas=2, idle_seconds=2, queue_timeout=60)
    assert replicas(gw) == []
    _, key = gw.key()
    started = time.monotonic()
    answer = gw.client(key).chat.completions.create(model="scaled", messages=MSG)
    waited = time.monotonic() - started
    reps = replicas(gw)
    assert len(reps) == 1 and reps[0]["state"] == "running"
    assert answer.choices[0].message.content.startswith(reps[0]["id"])
    assert waited < 20
    # Idle for idle_seconds: back to zero.
    wait_for(lambda: all(r["state"] in ("stopped", "stopping") for r in replicas(gw)), 30)


@SQLITE
def test_no_replica_in_time_gets_503_after_the_queue_wait(gw: Gateway) -> None:
    # The replica cannot start: its script does not exist.
    model(gw, inputs={"script": "/nonexistent.py"}, queue_timeout=1.5)
    _, key = gw.key()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        gw.client(key).chat.completions.create(model="scaled", messages=MSG)
    assert err.value.status_code == 503
    assert err.value.code == "no_capacity"
    assert 1.4 < time.monotonic() - started < 10
    assert "retry-after" in err.value.response.headers


def wait_routed(client: openai.OpenAI, replicas: int, name: str = "scaled") -> None:
    """Until the gateway lists the model with this many ready replicas."""

    def listed() -> int:
        entry = next(m for m in client.models.list().data if m.id == name)
        return int((entry.model_extra or {})["ready_replicas"])

    wait_for(lambda: listed() == replicas)


def two_replicas_one_told(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> tuple[openai.OpenAI, str, str, Path]:
    """Two running replicas, both routed to; the first fails as the returned file tells it
    (fake_upstream.py --fail-file). Health checks every 50 ms, all passing: they must not end
    the bad replica's ejection, which lasts 30 s."""
    gw = gateway_factory(gateway_eject_seconds=30, gateway_health_interval=0.05)
    fail_file = tmp_path / "fail"
    model(gw, min_replicas=2, max_replicas=2, inputs={"fail_file": str(fail_file)})
    ready = lambda: [r["id"] for r in replicas(gw) if r["state"] == "running"]  # noqa: E731
    bad, good = wait_for(lambda: len(ready()) == 2 and ready(), 60)
    _, key = gw.key()
    client = gw.client(key)
    wait_routed(client, 2)
    return client, bad, good, fail_file


@SQLITE
def test_a_failing_replica_is_retried_around_and_ejected(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    client, bad, good, fail_file = two_replicas_one_told(gateway_factory, tmp_path)
    fail_file.write_text(bad)
    # In turn the two would take half the requests each. The bad one's 500 reaches no client
    # (retried on the good one), and the bad one is ejected for gateway_eject_seconds.
    served = [
        (client.chat.completions.create(model="scaled", messages=MSG).choices[0].message.content
         or "").split()[0]
        for _ in range(20)
    ]  # fmt: skip
    assert served == [good] * 20
    failed = fail_file.with_name("fail.failed").read_text().split()
    assert failed == [bad], failed


@SQLITE
def test_a_stream_cut_before_its_first_event_is_retried(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    client, bad, good, fail_file = two_replicas_one_told(gateway_factory, tmp_path)
    fail_file.write_text(f"{bad} break")
    texts = []
    for _ in range(6):
        stream = client.chat.completions.create(model="scaled", messages=MSG, stream=True)
        texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    # The cut stream reached no client: it was retried on the good replica, and the bad one
    # was left out after it.
    assert all(t.startswith(good) for t in texts), texts
    assert fail_file.with_name("fail.failed").read_text().split() == [bad]


@SQLITE
def test_a_full_wait_queue_gets_503_at_once(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(gateway_max_queue=2)
    # The replica takes 30 s to listen: requests queue for it.
    model(gw, inputs={"warmup": 30}, queue_timeout=4)
    _, key = gw.key()
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "scaled", "messages": MSG}

    async def burst() -> list[tuple[int, str, float]]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:

            async def one() -> tuple[int, str, float]:
                started = time.monotonic()
                r = await http.post("/chat/completions", json=body, headers=headers)
                return r.status_code, r.json()["error"]["code"], time.monotonic() - started

            return list(await asyncio.gather(*(one() for _ in range(5))))

    answers = asyncio.run(burst())
    assert sorted((status, code) for status, code, _ in answers) == [
        (503, "no_capacity"),
        (503, "no_capacity"),
        (503, "queue_full"),
        (503, "queue_full"),
        (503, "queue_full"),
    ]
    for _status, code, took in answers:
        # The queue's 503 comes at once; the queued ones after their wait.
        assert took < 2 if code == "queue_full" else took > 3.5, answers


@SQLITE
def test_least_outstanding_routing_spreads_load(gw: Gateway) -> None:
    model(gw, min_replicas=2, max_replicas=2, inputs={"delay": 0.2})
    wait_for(lambda: sum(r["state"] == "running" for r in replicas(gw)) == 2, 60)
    _, key = gw.key()
    client = gw.client(key)
    # Let every gateway snapshot see both replicas.
    wait_routed(client, 2)
    served: Counter[str] = Counter()

    def call() -> None:
        text = client.chat.completions.create(model="scaled", messages=MSG).choices[0].message
        served[(text.content or "").split()[0]] += 1

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(served.values()) == [4, 4]


@SQLITE
def test_a_replica_killed_under_load_fails_no_request_that_had_not_started(gw: Gateway) -> None:
    model(gw, min_replicas=2, max_replicas=2, inputs={"delay": 0.3, "chunk_delay": 0.05})
    wait_for(lambda: sum(r["state"] == "running" for r in replicas(gw)) == 2, 60)
    _, key = gw.key()
    running = [r["id"] for r in replicas(gw)]
    wait_for(lambda: gw.client(key).models.list().data[0].model_extra["ready_replicas"] == 2)
    victim = running[0]
    (pid_file,) = gw.platform.settings.runs_dir.glob(f"{victim}*/runner.pid")
    pid = int(pid_file.read_text())

    results: list[tuple[str, str]] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        stream = i % 2 == 0
        body = {"model": "scaled", "messages": MSG, "stream": stream}
        got_bytes = False
        try:
            async with client.stream("POST", "/chat/completions", json=body) as r:
                async for chunk in r.aiter_bytes():
                    got_bytes = got_bytes or bool(chunk)
                if r.status_code != 200:
                    results.append(("failed-before-start", str(r.status_code)))
                    return
            results.append(("ok", ""))
        except httpx.HTTPError as exc:
            results.append(("broken-mid-stream" if got_bytes else "failed-before-start", repr(exc)))

    async def load() -> None:
        async with httpx.AsyncClient(
            base_url=gw.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            tasks = []
            for i in range(60):
                tasks.append(asyncio.create_task(one(client, i)))
                await asyncio.sleep(0.02)
                if i == 20:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
            await asyncio.gather(*tasks)

    asyncio.run(load())
    failed = [r for r in results if r[0] == "failed-before-start"]
    assert failed == [], failed
    assert len(results) == 60
    # A stream cut mid-answer ends with an error event rather than a retry; the rest are fine.
    assert sum(r[0] == "ok" for r in results) >= 50


@SQLITE
def test_a_replica_near_its_time_limit_is_replaced_without_errors(gw: Gateway) -> None:
    # A one-minute time limit, replaced when 25 s are left: after about 35 s.
    model(
        gw,
        min_replicas=1,
        max_replicas=1,
        replace_before_seconds=25,
        inputs={"minutes": 1, "delay": 0.05},
    )
    first = wait_for(lambda: [r for r in replicas(gw) if r["state"] == "running"], 60)[0]["id"]
    _, key = gw.key()
    client = gw.client(key)
    served: list[str] = []
    errors: list[str] = []
    deadline = time.monotonic() + 75
    while time.monotonic() < deadline:
        try:
            text = client.chat.completions.create(model="scaled", messages=MSG)
            served.append((text.choices[0].message.content or "").split()[0])
        except openai.APIError as exc:
            errors.append(repr(exc))
        reps = {r["id"]: r for r in replicas(gw)}
        if reps[first]["state"] in ("stopped", "stopping") and served[-1] != first:
            break
        time.sleep(0.05)
    assert errors == []
    reps = {r["id"]: r for r in replicas(gw)}
    assert reps[first]["state"] in ("stopped", "stopping"), reps
    assert reps[first]["reason"] is None or "time limit" not in reps[first]["reason"]
    # The old replica answered until the new one was ready; both for a moment; then only the new.
    second = served[-1]
    assert served[0] == first and second != first
    assert set(served) == {first, second}, (Counter(served), replicas(gw))


@SQLITE
def test_a_replicas_time_limit_counts_from_its_job_start_not_its_readiness(gw: Gateway) -> None:
    # The job runs 5 s before its service listens (vLLM loading weights, in small).
    model(gw, min_replicas=1, max_replicas=1, inputs={"warmup": 5})
    running = wait_for(lambda: [r for r in replicas(gw) if r["state"] == "running"], 60)[0]
    seen = dt.datetime.now(dt.UTC)
    started = dt.datetime.fromisoformat(running["started_at"])
    assert (seen - started).total_seconds() >= 4.5, (seen, running)


def test_replacement_is_due_within_the_lead_and_earlier_for_a_slow_starter() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    at = lambda s: t0 + dt.timedelta(seconds=s)  # noqa: E731
    # One hour, ready after 2 s, replaced in the last 300 s.
    assert replacement_due_at(t0, at(2), 60, 300) == at(3300)
    # Ready after 400 s: its replacement is started 1.5 × 400 + 10 = 610 s before the end.
    assert replacement_due_at(t0, at(400), 60, 300) == at(2990)
    # A lead of half the lifetime or more would chain replacements: never.
    assert replacement_due_at(t0, at(2), 10, 300) is None
    assert replacement_due_at(t0, at(1500), 60, 300) is None


def test_a_replacement_under_way_is_found_from_the_rows() -> None:
    """After a restart (nothing in memory) the replica started for an old one is found again,
    rather than a second one started."""
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def dep(id_: str, created_s: float, **kw: object) -> Deployment:
        return Deployment(id=id_, created_at=t0 + dt.timedelta(seconds=created_s),
                          state=kw.get("state", DeploymentState.running),
                          draining_since=kw.get("draining_since"))  # fmt: skip

    old, other = dep("old", 0), dep("other", 100)
    fresh = dep("fresh", 3301, state=DeploymentState.starting)
    due = t0 + dt.timedelta(seconds=3300)
    assert replacement_of(old, due, [old, other, fresh], set()) is fresh
    assert replacement_of(old, due, [old, other, fresh], {"fresh"}) is None  # another's
    assert replacement_of(old, due, [old, other], set()) is None  # none yet: start one
    gone = dep("gone", 3302, state=DeploymentState.failed)
    assert replacement_of(old, due, [old, gone], set()) is None


@SQLITE
def test_a_replica_whose_replacement_would_be_due_at_once_is_not_replaced(gw: Gateway) -> None:
    model(gw, min_replicas=1, max_replicas=1, replace_before_seconds=57, inputs={"minutes": 1})
    wait_for(lambda: [r for r in replicas(gw) if r["state"] == "running"], 60)
    time.sleep(3)
    assert len(replicas(gw)) == 1


@SQLITE
def test_scales_up_under_load_and_back_down_when_idle(gw: Gateway) -> None:
    model(
        gw, min_replicas=1, max_replicas=2, target_inflight=1, idle_seconds=3, inputs={"delay": 0.5}
    )
    wait_for(lambda: [r for r in replicas(gw) if r["state"] == "running"], 60)
    _, key = gw.key()
    client = gw.client(key, timeout=60)
    stop = time.monotonic() + 60
    errors: list[str] = []

    def hammer() -> None:
        while time.monotonic() < stop:
            try:
                client.chat.completions.create(model="scaled", messages=MSG)
            except openai.APIError as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        # Four in flight, one per replica wanted, at most two: a second replica starts.
        wait_for(lambda: sum(r["state"] == "running" for r in replicas(gw)) == 2, 50)
    finally:
        stop = 0
        for t in threads:
            t.join()
    assert errors == []
    # Idle again: back to min_replicas (one) after idle_seconds.
    wait_for(lambda: sum(r["state"] in ("running", "starting") for r in replicas(gw)) == 1, 40)


@SQLITE
def test_active_health_checks_leave_a_hung_replica_out_until_it_recovers(gw: Gateway) -> None:
    model(gw, min_replicas=2, max_replicas=2, first_byte_timeout=30)
    running = wait_for(
        lambda: (r := [x for x in replicas(gw) if x["state"] == "running"]) and len(r) == 2 and r,
        60,
    )
    _, key = gw.key()
    client = gw.client(key)
    wait_for(lambda: client.models.list().data[0].model_extra["ready_replicas"] == 2)
    hung = running[0]["id"]
    (pid_file,) = gw.platform.settings.runs_dir.glob(f"{hung}*/runner.pid")
    group = os.getpgid(int(pid_file.read_text()))
    os.killpg(group, signal.SIGSTOP)  # it accepts connections but answers nothing
    try:
        time.sleep(2.5)  # health checks every 0.5 s, each waits at most 0.5 s
        served = Counter(
            (
                client.chat.completions.create(model="scaled", messages=MSG)
                .choices[0]
                .message.content
                or ""
            ).split()[0]
            for _ in range(6)
        )
        assert set(served) == {running[1]["id"]}
    finally:
        os.killpg(group, signal.SIGCONT)

    def both_serve() -> bool:
        seen = {
            (
                client.chat.completions.create(model="scaled", messages=MSG)
                .choices[0]
                .message.content
                or ""
            ).split()[0]
            for _ in range(6)
        }
        return len(seen) == 2

    wait_for(both_serve, 30, every=0.5)
