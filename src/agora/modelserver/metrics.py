"""Prometheus metrics of a model server, at ``GET /metrics`` (behind the service token when the
server has one, like every endpoint but ``/health``).

- ``agora_modelserver_predictions_total{model, status}``: predictions answered, by HTTP status
  (422 bad arguments, 500 the model failed, 503 queue full, 504 timeout …);
- ``agora_modelserver_prediction_seconds{model}``: their time in the server, from the body
  read to the answer (the queue wait included);
- ``agora_modelserver_queue_waiting{model}``, ``agora_modelserver_workers_warm{model}``:
  requests waiting for a worker, and workers loaded and warm (sampled at the scrape);
- ``agora_modelserver_worker_restarts_total{model}``: workers replaced after a timeout, a
  crash or a client's cancelled call;
- ``agora_modelserver_trainings_running``.

Labels carry model names and statuses only. A registry per server (tests run several in one
process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agora.modelserver.pool import Pool

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: Seconds: from a tabular prediction to a large image model's.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Sampled(Collector):
    """The pools' and trainings' state, read when scraped."""

    def __init__(self, pools: Mapping[str, Pool], trainings: Callable[[], int]) -> None:
        self.pools = pools
        self.trainings = trainings

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        waiting = GaugeMetricFamily(
            "agora_modelserver_queue_waiting",
            "Requests waiting for a free worker",
            labels=["model"],
        )
        warm = GaugeMetricFamily(
            "agora_modelserver_workers_warm", "Workers loaded and warm", labels=["model"]
        )
        restarts = CounterMetricFamily(
            "agora_modelserver_worker_restarts",
            "Workers replaced after a timeout, a crash or a cancelled call",
            labels=["model"],
        )
        for name, pool in self.pools.items():
            waiting.add_metric([name], pool.waiting)
            warm.add_metric([name], pool.warm_workers)
            restarts.add_metric([name], pool.restarts)
        yield waiting
        yield warm
        yield restarts
        yield GaugeMetricFamily(
            "agora_modelserver_trainings_running", "Trainings running", value=self.trainings()
        )


class ServerMetrics:
    def __init__(self, pools: Mapping[str, Pool], trainings: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.predictions = Counter(
            "agora_modelserver_predictions",
            "Predictions answered, by HTTP status",
            ["model", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "agora_modelserver_prediction_seconds",
            "Time of a prediction in the server, its wait for a worker included",
            ["model"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Sampled(pools, trainings))

    def predicted(self, model: str, status: int, seconds: float) -> None:
        self.predictions.labels(model, str(status)).inc()
        self.seconds.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
