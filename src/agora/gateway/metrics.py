"""Prometheus metrics of a gateway process, at ``GET /metrics``.

Nothing is measured on the request path: the counters and the latency histogram are fed from
the usage records (which the gateway keeps for metering anyway) when they are written, once a
second, and the gauges (requests in flight and waiting, replicas) are sampled as often. So a
figure lags by up to ``AGORA_GATEWAY_USAGE_FLUSH_SECONDS``, which no scrape interval notices.

With ``agora gateway --workers N`` the processes share the figures through prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by that command): any process answers a
scrape with the sum of all of them (gauges: of the live ones).

Who may read them: a caller with ``Authorization: Bearer <AGORA_METRICS_TOKEN>`` (for the
scraper), or a platform administrator (API key or session). Labels carry model names, endpoints
and statuses; never a user, a project or a key.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import time
from collections import Counter as Tally
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from agora.errors import Forbidden, Unauthenticated
from agora.services import access, auth
from agora.services.context import Ctx

if TYPE_CHECKING:
    from agora.gateway.app import Gateway
    from agora.gateway.usage import Usage
    from agora.runtime import Runtime

#: The classic text format, which every Prometheus server reads (2.x included).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: Seconds: from a quick embedding to a long generation.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class GatewayMetrics:
    def __init__(self) -> None:
        shared = multiprocess_dir() is not None
        # In multiprocess mode the values live in files, read back by MultiProcessCollector;
        # otherwise in a registry of this gateway's own (tests run several gateways at once).
        self._registry = None if shared else CollectorRegistry()
        r = self._registry
        self.requests = Counter(
            "agora_gateway_requests",
            "Requests to a model through the gateway, by outcome (HTTP status; 499: the client "
            "left)",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "agora_gateway_request_duration_seconds",
            "Time from a request's arrival to its answer's end, through the gateway",
            ["model", "endpoint"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "agora_gateway_tokens",
            "Tokens metered, as the upstream counted them",
            ["model", "direction"],
            registry=r,
        )
        self.inflight = Gauge(
            "agora_gateway_inflight_requests",
            "Requests being forwarded to a model's replicas",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queued = Gauge(
            "agora_gateway_queued_requests",
            "Requests waiting for a model's first ready replica",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.replicas = Gauge(
            "agora_gateway_replicas",
            "A model's replicas as this gateway routes to them: ready, ejected after errors, "
            "or draining",
            ["model", "state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.dropped = Counter(
            "agora_gateway_usage_records_dropped",
            "Usage records dropped because the database could not take them for long",
            registry=r,
        )
        self._dropped_seen = 0
        self._gauged: set[tuple[str, ...]] = set()

    def observe(self, batch: Iterable[Usage]) -> None:
        """Count a batch of metered requests (each once)."""
        requests: Tally[tuple[str, str, str]] = Tally()
        tokens: Tally[tuple[str, str]] = Tally()
        for u in batch:
            requests[(u.model, u.endpoint, str(u.status))] += 1
            self.duration.labels(u.model, u.endpoint).observe(u.latency_ms / 1000)
            if u.tokens_in:
                tokens[(u.model, "in")] += u.tokens_in
            if u.tokens_out:
                tokens[(u.model, "out")] += u.tokens_out
        for (model, endpoint, status), n in requests.items():
            self.requests.labels(model, endpoint, status).inc(n)
        for (model, direction), count in tokens.items():
            self.tokens.labels(model, direction).inc(count)

    def sample(self, gateway: Gateway) -> None:
        """Set the gauges from the gateway's router (its own process's view)."""
        now = time.monotonic()
        snapshot = gateway.directory.snapshot
        router = gateway.router
        seen: set[tuple[str, ...]] = set()
        for model in snapshot.models.values():
            load = router.loads.get(model.id)
            self.inflight.labels(model.name).set(load.inflight if load else 0)
            self.queued.labels(model.name).set(load.queued if load else 0)
            states = {"ready": 0, "ejected": 0, "draining": 0}
            for replica in model.replicas:
                state = router.state_of(model, replica)
                if replica.draining:
                    states["draining"] += 1
                elif state is not None and state.out(now):
                    states["ejected"] += 1
                else:
                    states["ready"] += 1
            for name, n in states.items():
                self.replicas.labels(model.name, name).set(n)
                seen.add((model.name, name))
            seen.add((model.name,))
        # Models that are gone leave the figures.
        for labels in self._gauged - seen:
            gauges = (self.inflight, self.queued) if len(labels) == 1 else (self.replicas,)
            for gauge in gauges:
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        self._gauged = seen
        dropped = gateway.usage.dropped
        if dropped > self._dropped_seen:
            self.dropped.inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped

    def render(self) -> bytes:
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def check_reader(runtime: Runtime, authorization: str) -> None:
    """Whether ``authorization`` (the header's value) may read the metrics: the metrics token,
    or a platform administrator's API key or session token. Raises Unauthenticated or
    Forbidden. Reads the database (not for the request path)."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise Unauthenticated(
            "Send the metrics token (AGORA_METRICS_TOKEN) or an administrator's API key as "
            "'Authorization: Bearer …'"
        )
    token = runtime.settings.metrics_token
    if token is not None and hmac.compare_digest(value.encode(), token.get_secret_value().encode()):
        return
    with runtime.db.session() as db:
        ctx = Ctx(db=db, runtime=runtime)
        ctx.principal = auth.authenticate(ctx, value)
        try:
            access.require_admin(ctx)
        except Forbidden:
            raise Forbidden(
                "Only platform administrators and the metrics token may read the metrics"
            ) from None
