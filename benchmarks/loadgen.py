"""Closed-loop load generator for the gateway benchmark: per-request latency and streaming TTFB.

C clients, each on its own keep-alive connection, send the same pre-encoded chat completion
request back to back for a warm-up and then a measured period; every answer is parsed (status,
body, SSE end) by httptools. No coroutine per request: each connection is a protocol whose
completion callback stamps the time and writes the next request, so a request costs the load
generator a few tens of microseconds. Run it as its own process (uvloop) so it shares no GIL
with what it measures; it prints one JSON object.

    python benchmarks/loadgen.py --url http://127.0.0.1:9000/v1/chat/completions --key sk-...
        [--concurrency 10] [--duration 5] [--warmup 1] [--stream] [--model bench-model]
        [--min-requests 100] [--max-duration 20]
    python benchmarks/loadgen.py --url http://127.0.0.1:5000/ --request-file req.http --expect '"digit"'

Times: `latency` is from writing the request to the end of the response (for a stream, its
last chunk); `ttfb` (streams) to the arrival of the first body bytes that hold an SSE `data:`
line. The measured period starts when the warm-up time is over and every client has had an
answer (a slow target at 100 clients needs longer), lasts --duration and is stretched until
--min-requests are counted (at most --max-duration); requests count if they started inside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop

PROMPT = [{"role": "user", "content": "Say hello to the benchmark."}]


def request_body(model: str, stream: bool) -> bytes:
    """The one request every tool sends (wrk's script too)."""
    body: dict[str, Any] = {"model": model, "messages": PROMPT, "max_tokens": 16}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def build_request(url: str, key: str, model: str, stream: bool) -> bytes:
    u = urlsplit(url)
    raw = request_body(model, stream)
    head = (
        f"POST {u.path or '/'} HTTP/1.1\r\n"
        f"Host: {u.netloc}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n"
        f"Accept: {'text/event-stream' if stream else 'application/json'}\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def summary_ms(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {}
    return {
        "p50": percentile(v, 0.50) * 1e3,
        "p90": percentile(v, 0.90) * 1e3,
        "p99": percentile(v, 0.99) * 1e3,
        "max": v[-1] * 1e3,
        "mean": sum(v) / len(v) * 1e3,
    }


class Run:
    """Shared state of one measurement: clock boundaries, results, the running connections."""

    def __init__(self, url: str, request: bytes, stream: bool, n: int, args: Any) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.request = request
        self.stream = stream
        self.expect: bytes = getattr(args, "expect", "chat.completion").encode()
        self.n = n
        self.warm = 0  # clients with at least one answer
        self.warmup_until = math.inf
        self.duration: float = args.duration
        self.min_requests: int = args.min_requests
        self.max_duration: float = max(args.max_duration, args.duration)
        self.measure_from = self.stop_at = self.hard_stop = math.inf
        self.last_end = 0.0
        self.latency: list[float] = []
        self.ttfb: list[float] = []
        self.errors = 0
        self.error_sample = ""
        self.reconnects = 0
        self.active = n
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def maybe_begin(self, now: float) -> None:
        """Measuring starts once the warm-up time is over and every client has had an answer."""
        if now >= self.warmup_until and (self.warm == self.n or now >= self.warmup_until + 30):
            self.measure_from = now
            self.stop_at = now + self.duration
            self.hard_stop = now + self.max_duration

    def going(self, now: float) -> bool:
        """Clients start new requests until the duration is over and enough have been counted."""
        return now < self.stop_at or (
            len(self.latency) < self.min_requests and now < self.hard_stop
        )

    def error(self, why: str) -> None:
        self.errors += 1
        if not self.error_sample:
            self.error_sample = why[:300]

    def finished(self) -> None:
        self.active -= 1
        if self.active == 0 and not self.done.done():
            self.done.set_result(None)


class Client(asyncio.Protocol):
    __slots__ = (
        "busy",
        "first",
        "head",
        "now",
        "parser",
        "run",
        "t0",
        "tail",
        "transport",
        "warm",
    )

    def __init__(self, run: Run) -> None:
        self.run = run
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.t0 = self.now = self.first = 0.0
        self.head = b""  # body bytes before the first `data:` (streams), or the whole body
        self.tail = b""  # the last body bytes (streams: must end with [DONE])
        self.busy = False
        self.warm = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send(self) -> None:
        self.t0 = perf_counter()
        self.first = 0.0
        self.head = self.tail = b""
        self.busy = True
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        self.now = perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.run.error(f"bad HTTP: {exc!r}")
            self.busy = False
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        if self.run.stream:
            if not self.first:
                self.head += body
                if b"data:" in self.head:
                    self.first = self.now
            self.tail = (self.tail + body)[-64:]
        else:
            self.head += body

    def on_message_complete(self) -> None:
        run = self.run
        end = self.now
        self.busy = False
        status = self.parser.get_status_code()
        if status != 200:
            run.error(f"HTTP {status}: {(self.head or self.tail)[:200]!r}")
        elif run.stream and (not self.first or b"[DONE]" not in self.tail):
            run.error(f"stream without data or [DONE]: {self.head[:100]!r}...{self.tail!r}")
        elif not run.stream and run.expect not in self.head:
            run.error(f"answer without {run.expect!r}: {self.head[:200]!r}")
        elif self.t0 >= run.measure_from:
            run.latency.append(end - self.t0)
            run.last_end = end
            if run.stream:
                run.ttfb.append(self.first - self.t0)
        if not self.warm:
            self.warm = True
            run.warm += 1
        if run.measure_from == math.inf:
            run.maybe_begin(end)
        if self.transport.is_closing():
            return
        if run.going(end) and self.parser.should_keep_alive():
            self.send()
        else:  # the end, or the server closes: connection_lost reconnects if the run goes on
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.busy = False
            self.run.error(f"connection lost mid-request: {exc!r}")
        asyncio.get_running_loop().create_task(self.run_ended_or_reconnect())

    async def run_ended_or_reconnect(self) -> None:
        run = self.run
        if not run.going(perf_counter()):
            run.finished()
            return
        run.reconnects += 1
        try:
            await connect(run, self)
        except OSError as exc:
            run.error(f"reconnect failed: {exc!r}")
            run.finished()


async def connect(run: Run, client: Client | None = None) -> Client:
    loop = asyncio.get_running_loop()
    c = client or Client(run)
    c.parser = httptools.HttpResponseParser(c)
    await loop.create_connection(lambda: c, run.host, run.port)
    if client is not None:  # a reconnect inside the run: go on at once
        c.send()
    return c


async def measure(args: Any) -> dict[str, Any]:
    concurrency, stream = args.concurrency, args.stream
    if args.request_file:  # any request, as raw HTTP/1.1 bytes (benchmarks/modelserver_latency.py)
        request = Path(args.request_file).read_bytes()
    else:
        request = build_request(args.url, args.key, args.model, stream)
    run = Run(args.url, request, stream, concurrency, args)
    clients = [await connect(run) for _ in range(concurrency)]
    run.warmup_until = perf_counter() + args.warmup
    for c in clients:
        c.send()
    timed_out = 0
    try:
        await asyncio.wait_for(
            asyncio.shield(run.done), timeout=args.warmup + 30 + run.max_duration + 30
        )
    except TimeoutError:
        timed_out = sum(c.busy for c in clients)
        for c in clients:
            if c.busy:
                run.error("no answer within 30 s after the end of the run")
                c.busy = False
            c.transport.close()
    n = len(run.latency)
    elapsed = run.last_end - run.measure_from if n else 0.0
    return {
        "concurrency": concurrency,
        "stream": stream,
        "requests": n,
        "errors": run.errors,
        "error_sample": run.error_sample,
        "reconnects": run.reconnects,
        "timed_out": timed_out,
        "seconds": elapsed,
        "rps": n / elapsed if elapsed > 0 else 0.0,
        "latency_ms": summary_ms(run.latency),
        "ttfb_ms": summary_ms(run.ttfb) if stream else {},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="…/v1/chat/completions")
    parser.add_argument("--key", default="")
    parser.add_argument(
        "--request-file", help="send this raw HTTP/1.1 request instead of a chat completion"
    )
    parser.add_argument(
        "--expect", default="chat.completion", help="bytes every answer's body must hold"
    )
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds, not counted")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument(
        "--min-requests", type=int, default=100, help="go on past --duration until this many"
    )
    parser.add_argument("--max-duration", type=float, default=20.0, help="…but no longer than")
    args = parser.parse_args()
    result = uvloop.run(measure(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
