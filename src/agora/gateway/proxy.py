"""Forwarding one request to a replica: retries before the first byte, streams without buffering.

* A request that cannot connect, or gets a 5xx, before any byte reached the client is retried
  on another replica (``gateway_retries`` times); the failing replica is ejected for a while.
* A stream is never retried once its first byte left: the client would see text twice.
* Timeouts per model: connect, first byte (also the longest pause between stream chunks) and
  total. A first-byte or total timeout before the answer started is a 504.
* Streams ask the upstream for usage (``stream_options.include_usage``) so that streamed tokens
  are metered; the final usage chunk is passed on only when the client asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from starlette.types import Receive, Scope, Send

from agora.gateway.directory import ModelEntry
from agora.gateway.protocol import AsgiReply, GatewayError, Reply, usage_of
from agora.gateway.router import ReplicaState
from agora.gateway.upstream import BrokenResponse, UpstreamError

if TYPE_CHECKING:
    from agora.gateway.app import Gateway

log = logging.getLogger("agora.gateway")
_JSON = b"application/json"
_WANT_USAGE = b'"stream_options":{"include_usage":true},'
_USAGE = re.compile(rb'"usage"\s*:\s*\{')  # a usage object, not the null of every chunk


class Forwarder:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.router = gateway.router
        self.retries = gateway.rt.settings.gateway_retries

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        model: ModelEntry,
        endpoint: str,
        req: dict[str, Any],
        body: bytes,
    ) -> tuple[int, int, int]:
        """Serve the request from a replica, answering through ASGI ``send``; returns (status,
        tokens in, tokens out)."""
        return await self.forward_to(AsgiReply(send, receive), model, endpoint, req, body)

    async def forward_to(
        self,
        reply: Reply,
        model: ModelEntry,
        endpoint: str,
        req: dict[str, Any],
        body: bytes,
    ) -> tuple[int, int, int]:
        """Serve the request from a replica; returns (status, tokens in, tokens out)."""
        stream = bool(req.get("stream"))
        client_usage = False
        rename = model.upstream_model != model.name
        if stream:
            options = req.get("stream_options")
            client_usage = bool(options and options.get("include_usage"))
            if not client_usage:
                if "stream_options" not in req and not rename:
                    # Ask for usage without re-serializing the request: the body is a JSON
                    # object without this key, so it goes first.
                    start = body.index(b"{") + 1
                    body = body[:start] + _WANT_USAGE + body[start:]
                else:
                    req["stream_options"] = {**(options or {}), "include_usage": True}
                    rename = True
        if rename:
            req["model"] = model.upstream_model
            body = orjson.dumps(req)
        # asyncio.timeout's work, with less of it (this runs for every request): a timer that
        # cancels this task, and the cancellation turned into a 504.
        task = asyncio.current_task()
        assert task is not None
        expired: list[bool] = []
        timer = asyncio.get_running_loop().call_later(
            model.total_timeout, expire_task, task, expired
        )
        try:
            return await self._attempts(reply, model, _PATHS[endpoint], body, stream, client_usage)
        except asyncio.CancelledError:
            if not expired or task.uncancel() > 0:
                raise
            raise GatewayError(
                504,
                f"The model '{model.name}' did not answer within {model.total_timeout:g} s",
                "upstream_timeout",
            ) from None
        finally:
            timer.cancel()

    async def _attempts(
        self,
        reply: Reply,
        model: ModelEntry,
        path: str,
        body: bytes,
        stream: bool,
        client_usage: bool,
    ) -> tuple[int, int, int]:
        tried: list[str] = []
        last_error = "no replica answered"
        while len(tried) <= self.retries:
            state = self.router.pick(model, tried)
            if state is None:
                if tried:
                    break
                model = await self.wait_for_replica(model)
                continue
            tried.append(state.replica.deployment_id)
            self.router.started(model, state)
            try:
                outcome = await self._try(reply, model, state, path, body, stream, client_usage)
            finally:
                self.router.finished(model, state)
            if isinstance(outcome, str):
                last_error = outcome
                self.router.failed(state)
                continue
            self.router.succeeded(state)
            return outcome
        raise GatewayError(
            503 if model.source == "deployment" else 502,
            f"The model '{model.name}' could not answer: {last_error}",
            "upstream_unavailable",
            retry_after=5,
        )

    async def wait_for_replica(self, model: ModelEntry) -> ModelEntry:
        """No replica is ready: wait in the model's queue while one starts (also for served
        DEEPaaS modules, agora.gateway.modules)."""
        from agora.gateway.router import QueueFull

        models = self.gw.directory
        try:
            ready = await self.router.wait_ready(
                model, model.queue_timeout, lambda: models.snapshot.models.get(model.name)
            )
        except QueueFull:
            raise GatewayError(
                503,
                f"Too many requests are waiting for model '{model.name}' to start; retry shortly",
                "queue_full",
                retry_after=10,
            ) from None
        current = models.snapshot.models.get(model.name)
        if not ready or current is None:
            why = f" (the last replica failed: {model.last_failure})" if model.last_failure else ""
            raise GatewayError(
                503,
                f"No replica of model '{model.name}' became ready within "
                f"{model.queue_timeout:g} s{why}; retry later",
                "no_capacity",
                retry_after=30,
            )
        return current

    async def _try(
        self,
        reply: Reply,
        model: ModelEntry,
        state: ReplicaState,
        path: str,
        body: bytes,
        stream: bool,
        client_usage: bool,
    ) -> tuple[int, int, int] | str:
        """One attempt. A string means it failed before the client saw a byte: retry."""
        if state.replica.base_url.startswith("http://"):
            return await self._try_lean(reply, model, state, path, body, stream, client_usage)
        http = self.gw.http
        assert http is not None
        replica = state.replica
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if replica.auth:
            headers["Authorization"] = replica.auth
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=model.connect_timeout,
            sock_connect=model.connect_timeout,
            sock_read=model.first_byte_timeout,
        )
        url = replica.base_url + path
        try:
            response = await http.post(url, data=body, headers=headers, timeout=timeout)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError) and "connect" not in str(exc).lower():
                raise first_byte_timeout(model) from None
            # The upstream's address is the operators' business: log it, tell the caller less.
            log.warning(
                "model %s, replica %s: %s: %s",
                model.name,
                replica.deployment_id,
                type(exc).__name__,
                exc,
            )
            return "its server could not be reached"
        except TimeoutError:
            raise first_byte_timeout(model) from None
        try:
            status = response.status
            if status >= 500:
                with contextlib.suppress(Exception):
                    await response.read()
                return f"HTTP {status} from a replica"
            if not stream or status != 200:
                try:
                    data = await response.read()
                except (aiohttp.ClientError, OSError) as exc:
                    log.warning(
                        "model %s, replica %s: %s: %s",
                        model.name,
                        replica.deployment_id,
                        type(exc).__name__,
                        exc,
                    )
                    return "its server broke the connection"
                except TimeoutError:
                    raise first_byte_timeout(model) from None
                ctype = response.headers.get("Content-Type", "application/json")
                return await self._send_whole(reply, model, status, ctype.encode("latin-1"), data)
            chunks = response.content.iter_any()
            return await self._stream(reply, model, chunks, client_usage)
        finally:
            response.release()

    async def _try_lean(
        self,
        reply: Reply,
        model: ModelEntry,
        state: ReplicaState,
        path: str,
        body: bytes,
        stream: bool,
        client_usage: bool,
    ) -> tuple[int, int, int] | str:
        """One attempt over the lean client (plain-HTTP replicas)."""
        replica = state.replica
        try:
            response = await self.gw.upstream.post(
                replica.base_url,
                path,
                body,
                replica.auth,
                model.connect_timeout,
                model.first_byte_timeout,
            )
        except (UpstreamError, BrokenResponse) as exc:
            log.warning("model %s, replica %s: %s", model.name, replica.deployment_id, exc)
            return "its server could not be reached"
        except TimeoutError:
            raise first_byte_timeout(model) from None
        try:
            status = response.status
            if status >= 500:
                with contextlib.suppress(Exception):
                    await response.read(model.first_byte_timeout)
                return f"HTTP {status} from a replica"
            if not stream or status != 200:
                try:
                    data = await response.read(model.first_byte_timeout)
                except (UpstreamError, BrokenResponse) as exc:
                    log.warning("model %s, replica %s: %s", model.name, replica.deployment_id, exc)
                    return "its server broke the connection"
                except TimeoutError:
                    raise first_byte_timeout(model) from None
                ctype = response.header(b"content-type") or b"application/json"
                return await self._send_whole(reply, model, status, ctype, data)
            chunks = response.iter_chunks(model.first_byte_timeout)
            return await self._stream(reply, model, chunks, client_usage)
        finally:
            response.release()

    async def _send_whole(
        self,
        reply: Reply,
        model: ModelEntry,
        status: int,
        ctype: bytes,
        data: bytes,
    ) -> tuple[int, int, int]:
        tokens = (0, 0)
        if status == 200:
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            tokens = usage_of(obj)
            if model.upstream_model != model.name and isinstance(obj, dict) and "model" in obj:
                data = _rename(data, obj, model)
        await reply.whole(status, data, ctype)
        return status, tokens[0], tokens[1]

    async def _stream(
        self,
        reply: Reply,
        model: ModelEntry,
        chunks: AsyncIterator[bytes],
        client_usage: bool,
    ) -> tuple[int, int, int] | str:
        """Relays an SSE stream. Its head goes out with its first event, so that a replica
        that breaks off before any event (dying during the prompt's prefill) is retried on
        another (the string returned) instead of leaving the client a 200 and an error."""
        started = False
        tokens = (0, 0)
        rename = None
        if model.upstream_model != model.name:
            rename = (
                b'"model":' + orjson.dumps(model.upstream_model),
                b'"model":' + orjson.dumps(model.name),
            )
        pending = b""
        try:
            async for chunk in chunks:
                if reply.gone:
                    break  # the client went away: stop reading, which stops the upstream
                if b"\r\n" in chunk:
                    chunk = chunk.replace(b"\r\n", b"\n")
                if pending:
                    chunk = pending + chunk
                cut = chunk.rfind(b"\n\n")
                if cut < 0:
                    pending = chunk
                    continue
                cut += 2
                if cut == len(chunk):
                    ready, pending = chunk, b""
                else:
                    ready, pending = chunk[:cut], chunk[cut:]
                if _USAGE.search(ready) is not None:
                    # Only a usage object counts (servers send "usage": null in every chunk).
                    ready, found = _take_usage(ready, client_usage)
                    if found is not None:
                        tokens = reply.usage = found  # metered even if the client leaves now
                if rename is not None:
                    ready = ready.replace(*rename)
                if ready:
                    if not started:
                        started = True
                        await reply.start_stream()
                    await reply.chunk(ready)
                    if b"data: [DONE]" in ready:
                        reply.finished = True
            if not started:  # an empty stream
                started = True
                await reply.start_stream()
            if pending and not reply.gone:
                await reply.chunk(pending)
        except TimeoutError:
            if not started:
                raise first_byte_timeout(model) from None
            await _stream_broken(reply)
        except (aiohttp.ClientError, OSError, BrokenResponse, UpstreamError) as exc:
            if not started:
                log.warning("model %s: a replica broke off before its first event: %s",
                            model.name, exc)  # fmt: skip
                reply.usage = None  # retried: what this attempt showed does not count
                return "its server broke off the stream before its first event"
            await _stream_broken(reply)
        finally:
            reply.unwatch()
        with contextlib.suppress(OSError, RuntimeError):
            await reply.end_stream()
        return 200, tokens[0], tokens[1]


async def _stream_broken(reply: Reply) -> None:
    """The replica failed mid-stream: the client has text already, so no retry; the stream
    ends with an error event it can show."""
    error = GatewayError(502, "The model's replica failed during the answer", "stream_broken")
    with contextlib.suppress(OSError, RuntimeError):
        await reply.chunk(b"data: " + error.body() + b"\n\n")


def _rename(data: bytes, obj: dict[str, Any], model: ModelEntry) -> bytes:
    """The answer with the public model name: a byte-level replace when the upstream's name
    occurs exactly once as the ``"model"`` value, else re-serialized."""
    old = orjson.dumps(model.upstream_model)
    new = orjson.dumps(model.name)
    for sep in (b'"model":', b'"model": '):
        key = sep + old
        if data.count(key) == 1 and data.count(b'"model"') == 1:
            return data.replace(key, sep + new)
    obj["model"] = model.name
    return orjson.dumps(obj)


def _take_usage(events: bytes, client_usage: bool) -> tuple[bytes, tuple[int, int] | None]:
    """Find the usage in complete SSE events; drop the usage-only chunk the client did not ask
    for."""
    out = []
    found = None
    for event in events.split(b"\n\n"):
        if not event:
            continue
        if event.startswith(b"data: {") and _USAGE.search(event) is not None:
            try:
                obj = orjson.loads(event[6:])
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                found = usage_of(obj)
                if not obj.get("choices") and not client_usage:
                    continue
        out.append(event + b"\n\n")
    return b"".join(out), found


def expire_task(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


def first_byte_timeout(model: ModelEntry) -> GatewayError:
    return GatewayError(
        504,
        f"The model '{model.name}' did not start answering within {model.first_byte_timeout:g} s",
        "upstream_timeout",
    )


_PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
