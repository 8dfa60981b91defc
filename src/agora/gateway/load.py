"""Background duties of a gateway process: report its load to the autoscaler, and check the
health of ready replicas."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

import aiohttp
from sqlalchemy import select

from agora.aio import wait_set
from agora.gateway.router import ReplicaState
from agora.models import GatewayLoad

if TYPE_CHECKING:
    from agora.gateway.app import Gateway

log = logging.getLogger("agora.gateway")


def _write_load(gw: Gateway) -> None:
    snapshot = gw.directory.snapshot
    by_id = {m.id: m for m in snapshot.models.values()}
    now = dt.datetime.now(dt.UTC)
    with gw.rt.db.transaction() as s:
        rows = {
            r.model_id: r
            for r in s.scalars(select(GatewayLoad).where(GatewayLoad.gateway == gw.id)).all()
        }
        training = {int(k.partition(":")[0]) for k, s in gw.router.states.items() if s.trainings}
        for model_id in training - gw.router.loads.keys():
            gw.router.load(model_id)  # a model whose replica trains gets a row too
        for model_id, load in gw.router.loads.items():
            model = by_id.get(model_id)
            if model is None:
                continue
            row = rows.get(model_id)
            if row is None:
                row = GatewayLoad(gateway=gw.id, model_id=model_id)
                s.add(row)
            row.inflight = load.inflight
            row.queued = load.queued
            row.per_replica = gw.router.per_replica(model)
            row.trainings = gw.router.trainings(model)
            if load.last_request_at is not None:
                row.last_request_at = dt.datetime.fromtimestamp(load.last_request_at, dt.UTC)
            row.updated_at = now


async def report_load(gw: Gateway, interval: float, demand: asyncio.Event) -> None:
    """Every ``interval`` while anything is in flight or queued (and once more when it ends),
    and at once when a request starts waiting for a model with no replica."""
    last: object = None
    while True:
        # True: a request waits for a model with no replica, report now; else the regular one.
        with_demand = await wait_set(demand, interval)
        demand.clear()
        loads = {k: (v.inflight, v.queued) for k, v in gw.router.loads.items()}
        training = {k: s.trainings for k, s in gw.router.states.items() if s.trainings}
        # Reports go on while trainings run: the autoscaler drops loads that stop coming.
        busy = any(a or b for a, b in loads.values()) or bool(training)
        state = (loads, training)
        if not (busy or with_demand or state != last):
            continue
        try:
            await asyncio.to_thread(_write_load, gw)
            last = state
            if with_demand:
                gw.rt.wake()
        except Exception:
            log.exception("could not report the gateway's load")


async def watch_health(gw: Gateway, interval: float) -> None:
    """Active health checks: a replica whose health URL fails is left out until it passes."""
    while True:
        await asyncio.sleep(interval)
        http = gw.http
        if http is None:
            continue
        states = [s for s in gw.router.states.values() if s.replica.health_url]
        if not states:
            continue

        async def check(state: ReplicaState, http: aiohttp.ClientSession = http) -> None:
            url = state.replica.health_url
            assert url is not None
            sent = time.monotonic()
            try:
                async with http.get(
                    url,
                    headers={"Authorization": state.replica.auth},
                    timeout=aiohttp.ClientTimeout(total=min(interval, 5)),
                ) as response:
                    healthy = response.status < 500
                    count = await _trainings(response) if healthy else 0
                    gw.router.trainings_seen(state, count, sent)
            except (aiohttp.ClientError, OSError, TimeoutError):
                healthy = False
            gw.router.checked(state, healthy)

        await asyncio.gather(*(check(s) for s in states), return_exceptions=True)


async def _trainings(response: aiohttp.ClientResponse) -> int:
    """How many trainings a model server's health answer says it runs (0 for other servers)."""
    if response.content_type != "application/json" or (response.content_length or 0) > 65536:
        return 0
    try:
        body = await response.json()
    except (ValueError, aiohttp.ContentTypeError):
        return 0
    count = body.get("trainings") if isinstance(body, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0
