"""The gateway's limiter, in process and on a real Redis server; time is injected, never slept."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from agora.gateway.limits import (
    Limit,
    Limiter,
    LimiterUnavailable,
    MemoryLimiter,
    RedisLimiter,
    Refusal,
    build_limiter,
)
from tests.servers import free_port

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 5, 17, 12, 0, tzinfo=UTC).timestamp()  # the start of a minute


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
def new_limiter(request: pytest.FixtureRequest) -> Callable[[], Limiter]:
    if request.param == "memory":
        return MemoryLimiter
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisLimiter(url)


@pytest.fixture
async def limiter(new_limiter: Callable[[], Limiter]) -> AsyncIterator[Limiter]:
    lim = new_limiter()
    yield lim
    await lim.close()


def key(**values: int) -> Limit:
    """A limit on a scope of its own, so tests sharing the Redis server do not meet."""
    return Limit(f"key:{uuid.uuid4().hex}", "API key 'ci'", **values)


def project(**values: int) -> Limit:
    return Limit(f"project:{uuid.uuid4().hex}", "project 'alpha'", **values)


async def admitted(limiter: Limiter, limits: list[Limit], n: int, now: float) -> int:
    results = await asyncio.gather(*(limiter.admit(limits, now=now) for _ in range(n)))
    return sum(r is None for r in results)


async def test_rpm_is_exact_under_200_concurrent_admits(limiter: Limiter) -> None:
    limit = key(rpm=50)
    results = await asyncio.gather(*(limiter.admit([limit], now=T0 + 1) for _ in range(200)))
    assert sum(r is None for r in results) == 50
    assert {(r.kind, r.limit, r.scope) for r in results if r} == {("rpm", 50, limit.scope)}
    assert (await limiter.snapshot(limit, now=T0 + 1))["requests_minute"] == 50


async def test_two_redis_limiters_share_the_rpm(redis_url: str) -> None:
    limit = key(rpm=37)
    first, second = RedisLimiter(redis_url), RedisLimiter(redis_url)  # two gateway processes
    try:
        results = await asyncio.gather(
            *(lim.admit([limit], now=T0 + 5) for _ in range(100) for lim in (first, second))
        )
    finally:
        await first.close()
        await second.close()
    assert sum(r is None for r in results) == 37


def test_memory_limiter_is_exact_across_threads_and_loops() -> None:
    limiter, limit, counts = MemoryLimiter(), key(rpm=25), []

    def gateway_thread() -> None:
        counts.append(asyncio.run(admitted(limiter, [limit], 40, T0)))

    threads = [threading.Thread(target=gateway_thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 25


async def test_rpm_refusal_says_when_to_retry(limiter: Limiter) -> None:
    limit = key(rpm=60)
    assert await admitted(limiter, [limit], 60, T0 + 10) == 60
    refusal = await limiter.admit([limit], now=T0 + 10)
    # The previous minute's 60 decay from T0 + 60; one slot is free after a sixtieth of a minute.
    assert refusal == Refusal(
        limit.scope,
        "rpm",
        60,
        51,
        "Rate limit reached for API key 'ci': 60 requests per minute. Retry in 51 s.",
    )
    assert await limiter.admit([limit], now=T0 + 60.5) is not None
    assert await limiter.admit([limit], now=T0 + 10 + 51) is None
    assert await limiter.admit([limit], now=T0 + 10 + 51) is not None


async def test_sliding_minute_admits_as_the_previous_minute_decays(limiter: Limiter) -> None:
    limit = key(rpm=60)
    assert await admitted(limiter, [limit], 60, T0 + 50) == 60
    # Half-way through the next minute, half of the previous one still counts.
    assert await admitted(limiter, [limit], 60, T0 + 90) == 30
    # Long after, the whole rpm again.
    assert await admitted(limiter, [limit], 100, T0 + 600) == 60


async def test_tpm_refuses_once_tokens_reach_it(limiter: Limiter) -> None:
    limit = key(tpm=1000)
    assert await limiter.admit([limit], now=T0 + 5) is None
    await limiter.add_tokens([limit], 999, now=T0 + 5)
    assert await limiter.admit([limit], now=T0 + 5) is None  # room for one more token
    await limiter.add_tokens([limit], 500, now=T0 + 6)  # the bounded overshoot
    refusal = await limiter.admit([limit], now=T0 + 6)
    assert refusal is not None
    assert (refusal.kind, refusal.limit) == ("tpm", 1000)
    # 1499 tokens this minute: next minute they count 1499 * (1 - f), room for one at f = 500/1499.
    assert refusal.retry_after == 75
    assert refusal.message == (
        "Token rate limit reached for API key 'ci': 1,000 tokens per minute. Retry in 1 min 15 s."
    )
    assert await limiter.admit([limit], now=T0 + 6 + 74) is not None
    assert await limiter.admit([limit], now=T0 + 6 + 75) is None


async def test_day_limit_refuses_until_utc_midnight(limiter: Limiter) -> None:
    midnight = datetime(2030, 5, 18, tzinfo=UTC).timestamp()
    limit = key(tokens_per_day=100)
    await limiter.add_tokens([limit], 60, now=midnight - 3600)
    assert await limiter.admit([limit], now=midnight - 10) is None
    await limiter.add_tokens([limit], 40, now=midnight - 10)
    refusal = await limiter.admit([limit], now=midnight - 10)
    assert refusal is not None
    assert (refusal.kind, refusal.limit, refusal.retry_after) == ("day", 100, 10)
    assert refusal.message == (
        "Daily token quota reached for API key 'ci': 100 tokens per day (UTC). Retry in 10 s."
    )
    assert await limiter.admit([limit], now=midnight - 0.5) is not None
    assert await limiter.admit([limit], now=midnight) is None


async def test_month_limit_refuses_until_the_first_of_next_month(limiter: Limiter) -> None:
    new_year = datetime(2031, 1, 1, tzinfo=UTC).timestamp()
    limit = key(tokens_per_month=1000)
    await limiter.add_tokens([limit], 400, now=new_year - 20 * 86400)
    await limiter.add_tokens([limit], 600, now=new_year - 3600 - 5)
    refusal = await limiter.admit([limit], now=new_year - 3600 - 5)
    assert refusal is not None
    assert (refusal.kind, refusal.retry_after) == ("month", 3605)
    assert refusal.message.endswith("1,000 tokens per month (UTC). Retry in 1 h 0 min.")
    assert await limiter.admit([limit], now=new_year) is None
    assert (await limiter.snapshot(limit, now=new_year))["tokens_month"] == 0


async def test_project_refusal_counts_nothing_against_the_key(limiter: Limiter) -> None:
    ci, alpha = key(rpm=10, tpm=10_000), project(rpm=3)
    other = key(rpm=10)
    assert await admitted(limiter, [ci, alpha], 3, T0) == 3
    refusal = await limiter.admit([ci, alpha], now=T0)
    assert refusal is not None
    assert (refusal.scope, refusal.kind, refusal.limit) == (alpha.scope, "rpm", 3)
    assert refusal.message.startswith("Rate limit reached for project 'alpha': 3 requests")
    assert await limiter.admit([other, alpha], now=T0) is not None
    assert (await limiter.snapshot(ci, now=T0))["requests_minute"] == 3
    assert (await limiter.snapshot(other, now=T0))["requests_minute"] == 0


async def test_first_exceeded_limit_is_reported(limiter: Limiter) -> None:
    ci = key(rpm=100, tokens_per_day=50)
    await limiter.add_tokens([ci], 50, now=T0)
    refusal = await limiter.admit([ci, project(rpm=0)], now=T0)
    assert refusal is not None
    assert (refusal.scope, refusal.kind) == (ci.scope, "day")


async def test_snapshot_reports_the_sliding_estimates(limiter: Limiter) -> None:
    limit = key(rpm=100)  # tokens are metered even without a token limit
    assert await admitted(limiter, [limit], 4, T0 + 10) == 4
    await limiter.add_tokens([limit], 250, now=T0 + 10)
    assert await limiter.snapshot(limit, now=T0 + 20) == {
        "requests_minute": 4,
        "tokens_minute": 250,
        "tokens_day": 250,
        "tokens_month": 250,
    }
    assert await limiter.snapshot(limit, now=T0 + 90) == {
        "requests_minute": 2,
        "tokens_minute": 125,
        "tokens_day": 250,
        "tokens_month": 250,
    }


async def test_limits_without_values_are_no_ops(limiter: Limiter) -> None:
    nothing = key()
    assert await admitted(limiter, [nothing], 300, T0) == 300
    await limiter.add_tokens([nothing], 10**9, now=T0)
    assert await limiter.admit([], now=T0) is None
    assert set((await limiter.snapshot(nothing, now=T0)).values()) == {0}


async def test_no_op_and_empty_limits_do_not_touch_redis() -> None:
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        assert await limiter.admit([]) is None
        assert await limiter.admit([key()]) is None
        await limiter.add_tokens([key()], 10)
        await limiter.add_tokens([key(rpm=1)], 0)
    finally:
        await limiter.close()


async def test_unreachable_redis_raises_limiter_unavailable() -> None:
    limiter = build_limiter(f"redis://127.0.0.1:{free_port()}")
    limit = key(rpm=10)
    try:
        with pytest.raises(LimiterUnavailable, match="Redis server did not answer"):
            await limiter.admit([limit])
        with pytest.raises(LimiterUnavailable):
            await limiter.add_tokens([limit], 5)
        with pytest.raises(LimiterUnavailable):
            await limiter.snapshot(limit)
    finally:
        await limiter.close()


def test_build_limiter_without_url_is_in_process() -> None:
    assert isinstance(build_limiter(None), MemoryLimiter)


async def warm(limiter: RedisLimiter) -> None:
    """Both scripts loaded in the server (a first call finds them missing and loads them)."""
    await limiter.admit([key(rpm=1)], now=T0)
    await limiter.add_tokens([key(tpm=1)], 1, now=T0)


def count_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per command (or pipeline, or script call) sent to Redis from now on."""
    sent: list[int] = []
    send = Connection.send_packed_command

    async def counting_send(self: Connection, command: object, check_health: bool = True) -> None:
        sent.append(1)
        await send(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(Connection, "send_packed_command", counting_send)
    return sent


async def test_redis_admit_and_add_tokens_are_one_round_trip_each(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter, limits = RedisLimiter(redis_url), [key(rpm=10, tpm=100), project(tokens_per_day=9)]
    try:
        await warm(limiter)
        sent = count_sends(monkeypatch)
        assert await limiter.admit(limits, now=T0) is None
        assert len(sent) == 1
        await limiter.add_tokens(limits, 20, now=T0)
        assert len(sent) == 2
    finally:
        monkeypatch.undo()
        await limiter.close()


async def test_redis_counters_expire(redis_url: str) -> None:
    limiter, limit = RedisLimiter(redis_url), key(rpm=10)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await limiter.admit([limit])
        await limiter.add_tokens([limit], 7)
        names = [k async for k in client.scan_iter(match=f"agora:rl:{limit.scope}:*")]
        assert len(names) == 4  # requests and tokens this minute, tokens today and this month
        for name in names:
            assert 0 < await client.ttl(name) <= 33 * 86400
    finally:
        await client.aclose()
        await limiter.close()


async def test_redis_batches_the_admits_and_token_counts_of_one_turn(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 requests arriving together cost one script call to admit and one to meter, and the
    rpm stays exact across them."""
    limiter, limit = RedisLimiter(redis_url), key(rpm=150, tpm=10**6)
    try:
        await warm(limiter)
        sent = count_sends(monkeypatch)
        results = await asyncio.gather(*(limiter.admit([limit], now=T0 + 1) for _ in range(200)))
        assert sum(r is None for r in results) == 150 and len(sent) == 1
        await asyncio.gather(*(limiter.add_tokens([limit], 3, now=T0 + 1) for _ in range(150)))
        assert len(sent) == 2
        monkeypatch.undo()
        assert (await limiter.snapshot(limit, now=T0 + 1))["tokens_minute"] == 450
    finally:
        monkeypatch.undo()
        await limiter.close()


async def test_redis_limiter_survives_a_flushed_script_cache_and_dropped_connections(
    redis_url: str,
) -> None:
    limiter, limit = RedisLimiter(redis_url), key(rpm=3)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await limiter.admit([limit], now=T0) is None
        await admin.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
        assert await limiter.admit([limit], now=T0) is None
        await admin.client_kill_filter(_type="normal", skipme=True)  # the pooled ones break
        await limiter.add_tokens([limit], 5, now=T0)
        assert await limiter.admit([limit], now=T0) is None
        refusal = await limiter.admit([limit], now=T0)
        assert refusal is not None and refusal.kind == "rpm"
        assert (await limiter.snapshot(limit, now=T0))["tokens_minute"] == 5
    finally:
        await admin.aclose()
        await limiter.close()
