"""Request and token limits of the inference gateway, in process or shared through Redis.

Windows. ``rpm`` and ``tpm`` use a sliding-window approximation: the count of the current fixed
minute (epoch-aligned) plus the previous minute's count weighted by the part of the previous minute
still inside the sliding minute. A limit admits while ``estimate + 1 <= limit``; as the estimate
is never below the current fixed minute's count, no fixed minute ever admits more than ``rpm``
requests, and a burst cannot double up across a minute boundary. ``tokens_per_day`` and
``tokens_per_month`` count UTC calendar days and months. Retry-After is the time until the
refused window would admit if nothing else were counted: when the weighted previous minute has
decayed enough (or the next minute, then that decay), or the next UTC midnight or first of a month.

Overshoot. rpm has none: the check and the count are one atomic step. A request's tokens are known
only after it ran, so ``admit`` refuses once a token window has reached its limit and
``add_tokens`` meters afterwards: a token limit is overshot by at most the tokens of the requests
already admitted and still in flight when it is reached, each bounded by its prompt plus its
``max_tokens`` (without one, by what the model's server allows: its context length).

A limit with any field set counts requests and tokens in all its windows (so ``snapshot`` shows use
of windows without a limit too); a limit with no field set is ignored.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript as Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

Kind = Literal["rpm", "tpm", "day", "month"]
_KINDS: tuple[Kind, ...] = ("rpm", "tpm", "day", "month")
_PREFIX = "agora:rl:"
_EPS = 1e-6  # float slack in the comparison; counts are integers, so rpm stays exact
_TTL_MINUTE = 3 * 60  # a minute's counter is read during the next minute too
_TTL_DAY = 2 * 86400
_TTL_MONTH = 33 * 86400
_WORDING: dict[Kind, tuple[str, str]] = {
    "rpm": ("Rate limit", "requests per minute"),
    "tpm": ("Token rate limit", "tokens per minute"),
    "day": ("Daily token quota", "tokens per day (UTC)"),
    "month": ("Monthly token quota", "tokens per month (UTC)"),
}


class LimiterUnavailable(Exception):
    """The shared counters (Redis) did not answer; the gateway answers 503."""


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str  # "key:12", "project:3": names the counters
    label: str  # for people: "API key 'ci'"
    rpm: int | None = None
    tpm: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    @property
    def values(self) -> tuple[int | None, int | None, int | None, int | None]:
        """The limits in the order of ``Kind``."""
        return (self.rpm, self.tpm, self.tokens_per_day, self.tokens_per_month)

    #: Any field set (a limit with none is ignored); computed once, read per request.
    active: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        active = (
            self.rpm is not None
            or self.tpm is not None
            or self.tokens_per_day is not None
            or self.tokens_per_month is not None
        )
        object.__setattr__(self, "active", active)


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str
    kind: Kind
    limit: int
    retry_after: int  # whole seconds >= 1
    message: str


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to make, once per request
class _Windows:
    """The windows ``now`` falls in, and where they end."""

    now: float
    minute: int
    elapsed: float  # fraction of the current minute gone, in [0, 1)
    day: int
    month: int  # year * 12 + month - 1
    month_end: float

    @classmethod
    def at(cls, now: float | None) -> _Windows:
        now = time.time() if now is None else now
        minute = math.floor(now / 60)
        day = math.floor(now / 86400)
        month, month_end = _month_of(day)
        return cls(
            now=now,
            minute=minute,
            elapsed=(now - minute * 60) / 60,
            day=day,
            month=month,
            month_end=month_end,
        )

    def keys(self, scope: str) -> list[str]:
        """Counter names: requests (this, last minute), tokens (same), tokens of day, of month."""
        return _keys(scope, self.minute, self.day, self.month)

    def estimate(self, previous: int, current: int) -> float:
        return previous * (1 - self.elapsed) + current

    def retry_after(self, kind: Kind, limit: int, previous: int, current: int) -> int:
        """Seconds until the window admits again if nothing else is counted."""
        minute_end = (self.minute + 1) * 60.0
        if kind == "day":
            end = (self.day + 1) * 86400.0
        elif kind == "month":
            end = self.month_end
        elif (room := limit - 1) < 0:  # a zero limit never admits; name the window's end
            end = minute_end
        elif current > room:  # wait for the next minute, then for this one to decay
            end = minute_end + 60 * (1 - room / current)
        elif previous > 0:
            end = minute_end - 60 * (room - current) / previous
        else:
            end = self.now
        return max(1, math.ceil(end - self.now))

    def check(self, limit: Limit, counts: Sequence[int]) -> Refusal | None:
        """The first window of ``limit`` without room for one more, given ``keys()``' counts."""
        # Unrolled (once per request and limit): estimate(previous, current) + 1 > limit.
        keep = 1 - self.elapsed
        value = limit.rpm
        if value is not None and counts[1] * keep + counts[0] + 1 > value + _EPS:
            return self.refusal(limit, "rpm", counts[1], counts[0])
        value = limit.tpm
        if value is not None and counts[3] * keep + counts[2] + 1 > value + _EPS:
            return self.refusal(limit, "tpm", counts[3], counts[2])
        value = limit.tokens_per_day
        if value is not None and counts[4] + 1 > value + _EPS:
            return self.refusal(limit, "day", 0, counts[4])
        value = limit.tokens_per_month
        if value is not None and counts[5] + 1 > value + _EPS:
            return self.refusal(limit, "month", 0, counts[5])
        return None

    def refusal(self, limit: Limit, kind: Kind, previous: int, current: int) -> Refusal:
        value = limit.values[_KINDS.index(kind)]
        assert value is not None
        retry = self.retry_after(kind, value, previous, current)
        what, unit = _WORDING[kind]
        message = (
            f"{what} reached for {limit.label}: {value:,} {unit}. Retry in {_duration(retry)}."
        )
        return Refusal(limit.scope, kind, value, retry, message)

    def snapshot(self, counts: Sequence[int]) -> dict[str, int]:
        return {
            "requests_minute": math.ceil(round(self.estimate(counts[1], counts[0]), 6)),
            "tokens_minute": math.ceil(round(self.estimate(counts[3], counts[2]), 6)),
            "tokens_day": counts[4],
            "tokens_month": counts[5],
        }


@functools.lru_cache(maxsize=8)
def _month_of(day: int) -> tuple[int, float]:
    """The month (year * 12 + month - 1) a UTC day falls in, and when that month ends."""
    t = datetime.fromtimestamp(day * 86400, UTC)
    next_month = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
    return t.year * 12 + t.month - 1, next_month.timestamp()


@functools.lru_cache(maxsize=4096)
def _keys(scope: str, minute: int, day: int, month: int) -> list[str]:
    # Cached: the request path asks for the same names many times a minute. Callers must not
    # change the list.
    p = f"{_PREFIX}{scope}:"
    return [
        f"{p}r:{minute}", f"{p}r:{minute - 1}", f"{p}t:{minute}", f"{p}t:{minute - 1}",
        f"{p}d:{day}", f"{p}m:{month}",
    ]  # fmt: skip


def _duration(seconds: int) -> str:
    """The two largest units: "12 s", "1 min 15 s", "1 h 0 min", "3 d 4 h"."""
    parts = [(seconds // 86400, "d"), (seconds // 3600 % 24, "h"), (seconds // 60 % 60, "min")]
    parts.append((seconds % 60, "s"))
    first = next(i for i, (n, _) in enumerate(parts) if n or i == 3)
    return " ".join(f"{n} {unit}" for n, unit in parts[first : first + 2])


class Limiter(abc.ABC):
    """Counters behind the gateway's limits; ``now`` (seconds since the epoch) is for tests."""

    @abc.abstractmethod
    async def admit(self, limits: Sequence[Limit], now: float | None = None) -> Refusal | None:
        """Check every limit; if none is exceeded, count one request against each and return
        None; otherwise count nothing and return the first refusal. Atomic: no fixed minute
        admits more than ``rpm`` (across all processes sharing a Redis server)."""

    @abc.abstractmethod
    async def add_tokens(
        self, limits: Sequence[Limit], tokens: int, now: float | None = None
    ) -> None:
        """Meter a response's tokens (prompt and completion) against every limit."""

    @abc.abstractmethod
    async def snapshot(self, limit: Limit, now: float | None = None) -> dict[str, int]:
        """Current use: requests_minute and tokens_minute (the sliding estimates the limits are
        compared with, rounded up), tokens_day and tokens_month."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryLimiter(Limiter):
    """Counters in this process; one lock makes admit atomic across threads and event loops.

    Written for the request path (an admit and a token count per request): the counters' names
    are made once a minute per scope, the windows' checks are unrolled, and a counter's expiry is
    set when it is created (its name carries its window, so it is never read after that).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._expiry: dict[str, float] = {}
        self._minute = -1  # the minute the names below are for; counters pruned when it changes
        self._day_month = (0, 0)
        self._names: dict[str, list[str]] = {}

    def _names_of(self, scope: str, now: float) -> list[str]:
        """``_Windows.keys(scope)`` for the minute of ``now`` (under the lock)."""
        minute = math.floor(now / 60)
        if minute != self._minute:
            self._minute = minute
            day = math.floor(now / 86400)
            self._day_month = (day, _month_of(day)[0])
            self._names = {}
            for key in [k for k, at in self._expiry.items() if at <= now]:
                del self._counts[key], self._expiry[key]
        names = self._names.get(scope)
        if names is None:
            names = self._names[scope] = _keys(scope, minute, *self._day_month)
        return names

    async def admit(self, limits: Sequence[Limit], now: float | None = None) -> Refusal | None:
        t = time.time() if now is None else now
        keep = 1 - (t / 60 - math.floor(t / 60))  # the previous minute's weight
        counts = self._counts
        get = counts.get
        with self._lock:
            taken = []
            for limit in limits:
                if not limit.active:
                    continue
                names = self._names_of(limit.scope, t)
                # _Windows.check, unrolled: estimate(previous, current) + 1 > limit.
                value = limit.rpm
                if value is not None and (
                    get(names[1], 0) * keep + get(names[0], 0) + 1 > value + _EPS
                ):
                    return _Windows.at(t).refusal(limit, "rpm", get(names[1], 0), get(names[0], 0))
                value = limit.tpm
                if value is not None and (
                    get(names[3], 0) * keep + get(names[2], 0) + 1 > value + _EPS
                ):
                    return _Windows.at(t).refusal(limit, "tpm", get(names[3], 0), get(names[2], 0))
                value = limit.tokens_per_day
                if value is not None and get(names[4], 0) + 1 > value + _EPS:
                    return _Windows.at(t).refusal(limit, "day", 0, get(names[4], 0))
                value = limit.tokens_per_month
                if value is not None and get(names[5], 0) + 1 > value + _EPS:
                    return _Windows.at(t).refusal(limit, "month", 0, get(names[5], 0))
                taken.append(names[0])
            for key in taken:
                count = get(key)
                if count is None:
                    counts[key] = 1
                    self._expiry[key] = t + _TTL_MINUTE
                else:
                    counts[key] = count + 1
        return None

    async def add_tokens(
        self, limits: Sequence[Limit], tokens: int, now: float | None = None
    ) -> None:
        if tokens <= 0:
            return
        t = time.time() if now is None else now
        with self._lock:
            for limit in limits:
                if limit.active:
                    names = self._names_of(limit.scope, t)
                    self._add(names[2], tokens, t + _TTL_MINUTE)
                    self._add(names[4], tokens, t + _TTL_DAY)
                    self._add(names[5], tokens, t + _TTL_MONTH)

    async def snapshot(self, limit: Limit, now: float | None = None) -> dict[str, int]:
        w = _Windows.at(now)
        with self._lock:
            return w.snapshot([self._counts.get(k, 0) for k in w.keys(limit.scope)])

    def _add(self, key: str, amount: int, expires: float) -> None:
        count = self._counts.get(key)
        if count is None:
            self._counts[key] = amount
            self._expiry[key] = expires
        else:
            self._counts[key] = count + amount


# Several admits, evaluated one after the other as one atomic step. KEYS: six per limit (as
# _Windows.keys), request after request. ARGV: the request counter's TTL, the number of
# requests, then per request the minute's elapsed fraction, its number of limits and per limit
# rpm, tpm, per day, per month (-1: none). Returns per request 0 when admitted (its request
# counters incremented), else {limit index (1-based), kind (1-4), previous, current}. The
# comparison is _Windows.check's, with the same slack (_EPS).
_ADMIT = """
local ttl, requests = tonumber(ARGV[1]), tonumber(ARGV[2])
local function count(key) return tonumber(redis.call('GET', key) or '0') end
local out, a, k = {}, 3, 0
for r = 1, requests do
  local elapsed, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local refused = 0
  for i = 0, n - 1 do
    local base = k + i * 6
    for kind = 1, 4 do
      local limit = tonumber(ARGV[a + i * 4 + kind - 1])
      if refused == 0 and limit >= 0 then
        local previous, current = 0, 0
        if kind <= 2 then
          current, previous = count(KEYS[base + 2 * kind - 1]), count(KEYS[base + 2 * kind])
        else
          current = count(KEYS[base + kind + 2])
        end
        if previous * (1 - elapsed) + current + 1 > limit + 1e-6 then
          refused = {i + 1, kind, previous, current}
        end
      end
    end
  end
  if refused == 0 then
    for i = 0, n - 1 do
      redis.call('INCR', KEYS[k + i * 6 + 1])
      redis.call('EXPIRE', KEYS[k + i * 6 + 1], ttl)
    end
  end
  out[r] = refused
  a = a + 4 * n
  k = k + 6 * n
end
return out
"""

# Token counts. KEYS: counters; ARGV: per counter the tokens to add and its TTL.
_ADD = """
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * i])
end
return 0
"""

_BATCH = 256  # requests per script call at most


class _Batches:
    """Calls made in one event-loop turn, sent to Redis together: under load many requests
    share one script call (its encoding, its round trip and its parsing), and a lone request
    waits for no one. ``send`` gets the items of a batch and returns one result per item."""

    def __init__(self, send: Callable[[list[Any]], Awaitable[list[Any]]]) -> None:
        self._send = send
        self._items: list[tuple[Any, asyncio.Future[Any]]] = []
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, item: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._items:
            loop.call_soon(self._start)
        self._items.append((item, future))
        return future

    def _start(self) -> None:
        items, self._items = self._items, []
        for at in range(0, len(items), _BATCH):
            task = asyncio.ensure_future(self._run(items[at : at + _BATCH]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, items: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._send([item for item, _ in items])
        except BaseException as exc:
            failure = exc if isinstance(exc, LimiterUnavailable) else _unavailable(exc)
            for _, future in items:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, (LimiterUnavailable, RedisError, OSError)):
                raise
            return
        for (_, future), result in zip(items, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


class RedisLimiter(Limiter):
    """Counters in Redis, shared by every gateway process. The admits of one event-loop turn
    are one EVALSHA, and so are their token counts (:class:`_Batches`): a lone request costs one
    round trip each, a busy gateway far less than one per request. Fails fast (one retry, no
    backoff) so a request is not held up; a burst beyond ``max_connections`` waits up to
    ``timeout`` for a connection instead of failing. One script touches the counters of several
    scopes, so this needs one Redis server, not a Cluster."""

    def __init__(self, url: str, timeout: float = 1.0, max_connections: int = 50) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._admit_script = self._redis.register_script(_ADMIT)
        self._add_script = self._redis.register_script(_ADD)
        self._admits = _Batches(self._send_admits)
        self._adds = _Batches(self._send_adds)

    async def admit(self, limits: Sequence[Limit], now: float | None = None) -> Refusal | None:
        active = [limit for limit in limits if limit.active]
        if not active:
            return None
        w = _Windows.at(now)
        result = await self._admits.submit((w, active))
        if not result:
            return None
        index, kind, previous, current = cast(list[int], result)
        return w.refusal(active[index - 1], _KINDS[kind - 1], previous, current)

    async def _send_admits(self, batch: list[tuple[_Windows, list[Limit]]]) -> list[Any]:
        keys: list[str] = []
        args: list[str | int] = [_TTL_MINUTE, len(batch)]
        for w, active in batch:
            keys += [k for limit in active for k in w.keys(limit.scope)]
            args += [repr(w.elapsed), len(active)]
            args += [-1 if v is None else v for limit in active for v in limit.values]
        return cast(list[Any], await self._evalsha(self._admit_script, keys, args))

    async def add_tokens(
        self, limits: Sequence[Limit], tokens: int, now: float | None = None
    ) -> None:
        active = [limit for limit in limits if limit.active]
        if not active or tokens <= 0:
            return
        w = _Windows.at(now)
        counters = []
        for limit in active:
            names = w.keys(limit.scope)
            counters += [(names[2], _TTL_MINUTE), (names[4], _TTL_DAY), (names[5], _TTL_MONTH)]
        await self._adds.submit((counters, tokens))

    async def _send_adds(self, batch: list[tuple[list[tuple[str, int]], int]]) -> list[None]:
        totals: dict[tuple[str, int], int] = {}
        for counters, tokens in batch:
            for counter in counters:
                totals[counter] = totals.get(counter, 0) + tokens
        args: list[int] = []
        for (_, ttl), tokens in totals.items():
            args += [tokens, ttl]
        await self._evalsha(self._add_script, [key for key, _ in totals], args)
        return [None] * len(batch)

    async def _evalsha(self, script: Script, keys: list[str], args: Sequence[Any]) -> Any:
        """One EVALSHA on a pooled connection, packed by hiredis (redis-py's own packing costs
        ten times as much for the thirty-odd arguments of a batch); the script is loaded when
        the server lacks it, and a broken connection is retried once, as the client would."""
        command = hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
        pool = self._redis.connection_pool
        reconnected = loaded = False
        while True:
            try:
                conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            except (RedisError, OSError) as exc:
                raise _unavailable(exc) from exc
            try:
                await conn.send_packed_command(command, check_health=False)
                return await conn.read_response()
            except NoScriptError as exc:
                if loaded:
                    raise _unavailable(exc) from exc
                loaded = True
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                await conn.disconnect()
                if reconnected:
                    raise _unavailable(exc) from exc
                reconnected = True
                continue
            except RedisError as exc:
                raise _unavailable(exc) from exc
            finally:
                await pool.release(conn)
            try:  # NOSCRIPT: a restarted or flushed server
                await self._redis.script_load(script.script)
            except (RedisError, OSError) as exc:
                raise _unavailable(exc) from exc

    async def snapshot(self, limit: Limit, now: float | None = None) -> dict[str, int]:
        w = _Windows.at(now)
        try:
            values = await self._redis.mget(w.keys(limit.scope))
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return w.snapshot([int(v or 0) for v in values])

    async def close(self) -> None:
        await self._admits.close()
        await self._adds.close()
        await self._redis.aclose()


def _unavailable(exc: BaseException) -> LimiterUnavailable:
    return LimiterUnavailable(f"the rate limiter's Redis server did not answer: {exc}")


def build_limiter(redis_url: str | None) -> Limiter:
    """The Redis limiter when a URL is configured (several gateway processes), else in process."""
    return RedisLimiter(redis_url) if redis_url else MemoryLimiter()
