"""WebSockets through the access proxy: checked like HTTP, then messages pumped both ways."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from agora.api import problems
from agora.deployments.proxy import (
    PREFIX,
    Target,
    resolve,
    upstream_headers,
)
from agora.errors import AgoraError, BadGateway, GatewayTimeout, InvalidInput

log = logging.getLogger("agora.proxy")
OPEN_TIMEOUT = 10.0
#: How long one side may take to pass on a close that the other side started.
CLOSE_GRACE = 5.0
#: Close codes that mean "no code" or "dropped": they are never sent in a close frame.
_NO_CODE = 1005
_ABNORMAL = 1006
_BAD_GATEWAY = 1014


async def serve(ws: WebSocket) -> None:
    dep_id: str = ws.path_params["dep_id"]
    try:
        target = await resolve(ws, dep_id, state_changing=True)
        upstream = await _open(ws, target)
    except AgoraError as exc:
        await _deny(ws, _problem(ws, exc))
        return
    except InvalidStatus as exc:  # the service itself refused: pass its answer on
        answer = exc.response
        kind = answer.headers.get("content-type", "text/plain")
        await _deny(ws, Response(answer.body, answer.status_code, media_type=kind))
        return
    async with upstream:
        await ws.accept(subprotocol=upstream.subprotocol)
        await _pump(ws, upstream)


async def _open(ws: WebSocket, target: Target) -> ClientConnection:
    """Connect to the service, keeping the caller's Host and Origin (JupyterLab compares them)."""
    raw_path = ws.scope.get("raw_path") or ws.url.path.encode()
    query = ws.scope.get("query_string", b"")
    resource = target.upstream_path(raw_path) + (b"?" + query if query else b"")
    host, _, port = target.address.rpartition(":")
    skip = {"host", "origin", "user-agent"}
    headers = [
        (name, value)
        for name, value in upstream_headers(ws, target)
        if name not in skip and not name.startswith("sec-websocket-")
    ]
    subprotocols = [Subprotocol(p) for p in ws.scope.get("subprotocols", [])]
    try:
        return await connect(
            f"ws://{ws.headers.get('host', target.address)}{resource.decode('latin-1')}",
            host=host.strip("[]"),
            port=int(port),
            origin=ws.headers.get("origin"),  # type: ignore[arg-type]
            subprotocols=subprotocols or None,
            additional_headers=headers,
            user_agent_header=ws.headers.get("user-agent"),
            proxy=None,
            open_timeout=OPEN_TIMEOUT,
            max_size=None,  # the service's messages are the service's business
        )
    except InvalidURI as exc:
        raise InvalidInput("The request's Host header is not usable") from exc
    except TimeoutError as exc:
        raise GatewayTimeout(
            f"Deployment '{target.dep_id}' did not accept the WebSocket within {OPEN_TIMEOUT:g} s"
        ) from exc
    except InvalidStatus:
        raise
    except (OSError, InvalidHandshake) as exc:
        log.info("websocket to %s (%s) failed: %r", target.dep_id, target.address, exc)
        raise BadGateway(
            f"Deployment '{target.dep_id}' is running but its service could not be reached "
            f"({type(exc).__name__}); it may have just stopped or crashed"
        ) from exc


async def _pump(ws: WebSocket, upstream: ClientConnection) -> None:
    """Relay messages until one side closes, then close the other with the same code."""

    async def to_service() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                code = message.get("code", 1000)
                await upstream.close(_sendable(code), message.get("reason") or "")
                return
            text = message.get("text")
            await upstream.send(text if text is not None else message.get("bytes") or b"")

    async def to_caller() -> None:
        try:
            async for message in upstream:
                if isinstance(message, str):
                    await ws.send_text(message)
                else:
                    await ws.send_bytes(message)
        except ConnectionClosed:
            pass  # the service closed: the caller's side is closed below
        except WebSocketDisconnect:  # the caller went away while we were sending
            await upstream.close()
            return
        code = upstream.close_code or _ABNORMAL
        code = _BAD_GATEWAY if code == _ABNORMAL else _sendable(code)
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await ws.close(code, upstream.close_reason or "")

    tasks = [asyncio.create_task(to_service()), asyncio.create_task(to_caller())]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending:  # let the other side see the close and pass it on
            await asyncio.wait(pending, timeout=CLOSE_GRACE)
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception) and not isinstance(
            outcome, ConnectionClosed | WebSocketDisconnect
        ):
            log.error("websocket relay failed", exc_info=outcome)


def _sendable(code: int) -> int:
    """A close code that may go into a close frame (RFC 6455, section 7.4)."""
    if code in (_NO_CODE, _ABNORMAL) or not (1000 <= code <= 4999) or 1015 <= code < 3000:
        return 1000
    return code


def _problem(ws: WebSocket, exc: AgoraError) -> Response:
    headers = {}
    if (retry := exc.extra.get("retry_after")) is not None:
        headers["Retry-After"] = str(retry)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problems.problem(
        exc.status,
        exc.detail,
        code=exc.code,
        title=exc.title,
        instance=ws.url.path,
        headers=headers or None,
    )


async def _deny(ws: WebSocket, response: Response) -> None:
    """Refuse the handshake with an HTTP answer where the server can send one."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
    else:
        await ws.close(1008)


def install(app: FastAPI) -> None:
    app.router.add_websocket_route(PREFIX + "{dep_id}/{path:path}", serve)
