"""How the gateway reads a served module's request: its DEEPaaS endpoint (for routing and
metering) and a training's start (counted at once against scaling down)."""

from __future__ import annotations

import time

import pytest

from agora.gateway.directory import Replica
from agora.gateway.modules import _endpoint
from agora.gateway.router import ReplicaState, Router


@pytest.mark.parametrize(
    ("rest", "endpoint"),
    [
        ("/v2/models/iris/train/", "train"),
        ("/v2/models/iris/train/5d1a", "train"),
        ("/v2/models/iris/predict/", "predict"),
        ("/v2/models/iris/predict", "predict"),
        # A module whose name holds a word of the API is still read by the path's place.
        ("/v2/models/trainer/predict/", "predict"),
        ("/v2/models/predictor/train/", "train"),
        ("/v2/models/iris/", "models"),
        ("/v2/models/", "models"),
        ("/v2/models/iris/trainings/", "models"),
        ("/train/", "models"),
    ],
)
def test_a_modules_endpoint_is_read_from_its_place_in_the_path(rest: str, endpoint: str) -> None:
    assert _endpoint(rest) == endpoint


def state(health_url: str | None) -> ReplicaState:
    return ReplicaState(Replica("d1", "http://127.0.0.1:1/v1", "", health_url))


def test_an_accepted_training_counts_at_once_and_reports_the_load() -> None:
    router = Router(eject_seconds=2, max_queue=10)
    reported: list[bool] = []
    router.on_demand.append(lambda: reported.append(True))
    checked = state("http://127.0.0.1:1/health")
    router.training_started(checked)
    assert checked.trainings == 1 and reported == [True]
    # Without health checks (an external endpoint) nothing would lower the count again.
    unchecked = state(None)
    router.training_started(unchecked)
    assert unchecked.trainings == 0 and reported == [True]


def test_a_health_check_sent_before_the_training_does_not_lower_its_count() -> None:
    router = Router(eject_seconds=2, max_queue=10)
    replica = state("http://127.0.0.1:1/health")
    sent_before = time.monotonic()
    router.training_started(replica)
    router.trainings_seen(replica, 0, sent_before)  # it left before the training began
    assert replica.trainings == 1
    later = replica.training_accepted + 0.001
    router.trainings_seen(replica, 0, later)  # a later check: the training ended
    assert replica.trainings == 0
    router.trainings_seen(replica, 2, sent_before)  # the server's own count, when it has one
    assert replica.trainings == 2
