"""Which replica serves a request: least outstanding requests, health, ejection and waiting.

Every replica of a model has a :class:`ReplicaState` here that outlives snapshot rebuilds:
its outstanding requests (this process's), and until when it is left out after failing
requests (passive ejection, doubling with consecutive failures), or whether its last active
health check failed (left out until one passes; a passing check does not end a passive
ejection).
When a model has no ready replica, requests wait here (a bounded queue per model) until one is
ready or their wait is over; the autoscaler learns of them from :meth:`Router.load`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agora.aio import wait_set
from agora.gateway.directory import ModelEntry, Replica, Snapshot


@dataclass(slots=True)
class ReplicaState:
    replica: Replica
    outstanding: int = 0
    failures: int = 0
    #: Passive ejection: left out until then after failing requests (a passing health check
    #: does not end it: a replica can answer /health and still fail every request).
    ejected_until: float = 0.0
    #: Its last active health check failed: left out until one passes.
    unhealthy: bool = False
    #: Trainings the replica runs, from its last health check (model servers report them).
    trainings: int = 0
    #: When (monotonic) this gateway last saw the replica accept a training.
    training_accepted: float = 0.0

    def out(self, now: float) -> bool:
        """Left out of routing (but for panic mode)."""
        return self.unhealthy or self.ejected_until > now


@dataclass(slots=True)
class ModelLoad:
    inflight: int = 0
    queued: int = 0
    last_request_at: float | None = None


class QueueFull(Exception):
    """A model's queue of requests waiting for a replica is full."""


class Router:
    def __init__(self, eject_seconds: float, max_queue: int) -> None:
        self.eject_seconds = eject_seconds
        self.max_queue = max_queue
        self.states: dict[str, ReplicaState] = {}
        self.loads: dict[int, ModelLoad] = {}
        self._ready: dict[int, asyncio.Event] = {}
        self._turn = 0
        #: Called (no arguments) when a request starts waiting for a model with no replica.
        self.on_demand: list[Callable[[], None]] = []

    # --- snapshot sync ---------------------------------------------------------------------

    def sync(self, snapshot: Snapshot) -> None:
        """Adopt the replicas of a new snapshot, keeping the state of those that remain."""
        seen: dict[str, ReplicaState] = {}
        for model in snapshot.models.values():
            for replica in model.replicas:
                key = _key(model, replica)
                state = self.states.get(key)
                if state is None:
                    state = ReplicaState(replica)
                else:
                    state.replica = replica
                seen[key] = state
            if any(not r.draining for r in model.replicas):
                event = self._ready.get(model.id)
                if event is not None:
                    event.set()
        # Replicas that left keep their state while requests are still on them.
        for key, state in self.states.items():
            if key not in seen and state.outstanding > 0:
                seen[key] = state
        self.states = seen

    # --- choosing ----------------------------------------------------------------------------

    def candidates(self, model: ModelEntry, exclude: Iterable[str] = ()) -> list[ReplicaState]:
        now = time.monotonic()
        skip = set(exclude)
        usable: list[ReplicaState] = []
        ejected: list[ReplicaState] = []
        for replica in model.replicas:
            if replica.draining or replica.deployment_id in skip:
                continue
            state = self.states.get(_key(model, replica))
            if state is None:
                state = self.states[_key(model, replica)] = ReplicaState(replica)
            (ejected if state.out(now) else usable).append(state)
        # Panic mode: when every replica is ejected, try them anyway rather than refuse.
        return usable or ejected

    def pick(self, model: ModelEntry, exclude: Iterable[str] = ()) -> ReplicaState | None:
        """The candidate with the fewest outstanding requests; ties go round-robin, so that
        requests one after another spread too."""
        candidates = self.candidates(model, exclude)
        if not candidates:
            return None
        self._turn += 1
        n = len(candidates)
        best = candidates[self._turn % n]
        for i in range(1, n):
            state = candidates[(self._turn + i) % n]
            if state.outstanding < best.outstanding:
                best = state
        return best

    def has_ready(self, model: ModelEntry) -> bool:
        return any(not r.draining for r in model.replicas)

    async def wait_ready(
        self, model: ModelEntry, timeout: float, current: Callable[[], ModelEntry | None]
    ) -> bool:
        """Wait (queued) until the model has a ready replica; False when the wait ran out.

        ``current`` returns the model's entry in the latest snapshot.
        """
        load = self.load(model.id)
        if load.queued >= self.max_queue:
            raise QueueFull
        load.queued += 1
        for callback in self.on_demand:
            callback()
        deadline = time.monotonic() + timeout
        try:
            while True:
                entry = current()
                if entry is not None and self.has_ready(entry):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                event = self._ready.get(model.id)
                if event is None or event.is_set():
                    event = self._ready[model.id] = asyncio.Event()
                if not await wait_set(event, left):
                    return False
        finally:
            load.queued -= 1

    # --- accounting --------------------------------------------------------------------------

    def load(self, model_id: int) -> ModelLoad:
        load = self.loads.get(model_id)
        if load is None:
            load = self.loads[model_id] = ModelLoad()
        return load

    def started(self, model: ModelEntry, state: ReplicaState) -> None:
        state.outstanding += 1
        load = self.load(model.id)
        load.inflight += 1
        load.last_request_at = time.time()

    def finished(self, model: ModelEntry, state: ReplicaState) -> None:
        state.outstanding -= 1
        self.load(model.id).inflight -= 1

    def failed(self, state: ReplicaState) -> None:
        """Passive ejection: leave the replica out, longer after each consecutive failure."""
        state.failures += 1
        backoff = self.eject_seconds * (2 ** min(state.failures - 1, 5))
        state.ejected_until = time.monotonic() + backoff

    def succeeded(self, state: ReplicaState) -> None:
        if state.failures:
            state.failures = 0
            state.ejected_until = 0.0

    def training_started(self, state: ReplicaState) -> None:
        """A replica accepted a training: count it at once, and have the load reported now,
        so the autoscaler does not take the replica for idle before the next health check
        (which then gives the server's own count). Not for a replica without health checks
        (an external endpoint): nothing would ever lower the count again."""
        if not state.replica.health_url:
            return
        state.trainings = max(state.trainings, 1)
        state.training_accepted = time.monotonic()
        for callback in self.on_demand:
            callback()

    def trainings_seen(self, state: ReplicaState, count: int, sent: float) -> None:
        """A health check's count of the replica's trainings, from a check sent at ``sent``
        (monotonic). An answer to a check sent before the replica accepted a training may not
        know of it yet: it does not lower the count noted then."""
        if count or state.training_accepted < sent:
            state.trainings = count

    def checked(self, state: ReplicaState, healthy: bool) -> None:
        """An active health check's result: an unhealthy replica is left out until a check
        passes; a passive ejection runs its course either way."""
        state.unhealthy = not healthy

    def state_of(self, model: ModelEntry, replica: Replica) -> ReplicaState | None:
        return self.states.get(_key(model, replica))

    def per_replica(self, model: ModelEntry) -> dict[str, int]:
        return {
            r.deployment_id: self.states[_key(model, r)].outstanding
            for r in model.replicas
            if _key(model, r) in self.states
        }

    def trainings(self, model: ModelEntry) -> dict[str, int]:
        """The replicas of a model that run trainings, and how many."""
        out = {}
        for r in model.replicas:
            state = self.states.get(_key(model, r))
            if state is not None and state.trainings:
                out[r.deployment_id] = state.trainings
        return out


def _key(model: ModelEntry, replica: Replica) -> str:
    return f"{model.id}:{replica.deployment_id}"
