"""``/v1`` and ``/m/`` without ASGI: the gateway's requests answered straight from uvicorn's
HTTP parser (:mod:`agora.leanhttp`, where the cycle and what it does itself are described).

Bodies over ``gateway_max_body_bytes`` (``/v1``) or ``gateway_max_upload_bytes`` (``/m/``) get
413 in OpenAI's error shape. Falls back to ASGI for what :class:`~agora.leanhttp.LeanProtocol`
never takes and for apps without a gateway. Use it with
``uvicorn.Config(app, http=GatewayProtocol)`` (``agora up``, ``agora gateway``).
"""

from __future__ import annotations

from typing import Any

from agora.gateway.app import Gateway
from agora.gateway.modules import ModuleProxy
from agora.gateway.protocol import GatewayError, Reply, too_large
from agora.leanhttp import Handler, LeanCycle, LeanProtocol, behind

__all__ = ["GatewayProtocol", "LeanCycle"]


def gateway_of(app: Any) -> Gateway | None:
    """The gateway behind the app (``AgoraApp.gateway``), if any."""
    gateway: Gateway | None = behind(app, "gateway", Gateway)
    return gateway


def modules_of(app: Any) -> ModuleProxy | None:
    """The ``/m/`` proxy beside the gateway (``AgoraApp.modules``), if any."""
    modules: ModuleProxy | None = behind(app, "modules", ModuleProxy)
    return modules


class _Modules:
    """What a ``/m/`` cycle runs: the module proxy, with the query string the path lacks."""

    __slots__ = ("proxy", "query")

    def __init__(self, proxy: ModuleProxy, query: bytes) -> None:
        self.proxy = proxy
        self.query = query

    async def handle(
        self, reply: Reply, method: str, path: str, headers: Any, read_body: Any
    ) -> None:
        await self.proxy.handle(reply, method, path, self.query, headers, read_body)


class GatewayProtocol(LeanProtocol):
    """uvicorn's httptools protocol; ``/v1/*`` and ``/m/*`` are served by the gateway without
    ASGI."""

    def setup(self) -> None:
        self.gateway = gateway_of(self.app) if self.lean else None
        self.modules = modules_of(self.app) if self.gateway is not None else None
        settings = self.gateway.rt.settings if self.gateway else None
        self.max_body = settings.gateway_max_body_bytes if settings else 0
        self.max_upload = settings.gateway_max_upload_bytes if settings else 0

    def lean_route(self, path: bytes, query: bytes) -> tuple[Handler, int] | None:
        if self.gateway is None:
            return None
        if path[:4] == b"/v1/":
            return self.gateway, self.max_body
        if path[:3] == b"/m/" and self.modules is not None:
            return _Modules(self.modules, query), self.max_upload
        return None

    def body_too_large(self, limit: int) -> Exception:
        return too_large(limit)

    def client_gone(self) -> Exception:
        return GatewayError(400, "The client went away", "client_disconnected")
