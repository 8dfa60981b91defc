"""A served module scaled to zero when idle keeps its replica while a training runs on it:
the model server reports its running trainings to the gateways' health checks, and the
autoscaler never stops a replica that runs one."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.gateway.conftest import Gateway
from tests.gateway.test_scaling import replicas, wait_for

# A DEEPaaS v2 module (module-level functions, webargs fields) whose training sleeps for
# epochs/10 s: installed for the replica as a distribution found on PYTHONPATH.
SLOW = """
import time
from webargs import fields

def get_metadata():
    return {"name": "slowtrain", "description": "Trains slowly.", "author": "tests"}

def get_predict_args():
    return {}

def predict(**kwargs):
    return {"ok": True}

def get_train_args():
    return {"epochs": fields.Int(required=True)}

def train(epochs):
    time.sleep(epochs / 10)
    return {"epochs": epochs}
"""


def install_slow_module(folder: Path) -> None:
    (folder / "slowtrain.py").write_text(SLOW)
    info = folder / "slowtrain-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slowtrain\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[deepaas.v2.model]\nslowtrain = slowtrain\n")


SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def slow_model(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, idle_seconds: float
) -> Gateway:
    """The slow module as the model "text", scaled to zero after ``idle_seconds``."""
    # Local deployments inherit the control plane's PYTHONPATH: the replica finds the module.
    install_slow_module(tmp_path)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    r = gw.api(
        "POST",
        "/models",
        json={
            "name": "text",
            "kind": "deepaas",
            "inputs": {"module": "slowtrain"},
            "min_replicas": 0,
            "idle_seconds": idle_seconds,
            "queue_timeout": 90,
            "public": True,
        },
    )
    assert r.status_code == 201, r.text
    return gw


@SQLITE
def test_a_training_keeps_an_idle_module_replica_until_it_ends(
    gateway_factory: Callable[..., Gateway], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gw = slow_model(gateway_factory(), monkeypatch, tmp_path, idle_seconds=2)
    _, key = gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    base = gw.platform.url + "/m/text/v2/models/slowtrain/train/"

    r = httpx.post(base, params={"epochs": 100}, headers=auth, timeout=120)  # 10 s
    assert r.status_code in (200, 201), r.text
    uuid = r.json()["uuid"]
    (replica,) = replicas(gw, "text")

    # No request for three times idle_seconds (the replicas are read from the control plane's
    # API, not through the gateway): the replica stays while the training runs.
    until = time.monotonic() + 6
    while time.monotonic() < until:
        assert [r["state"] for r in replicas(gw, "text")] == ["running"], replicas(gw, "text")
        time.sleep(0.5)
    # The model's API and page show the training on its replica.
    assert replicas(gw, "text")[0]["trainings"] == 1
    page = gw.platform.http.get(
        "/models/text", headers={"Authorization": f"Bearer {ADMIN_KEY}", "Accept": "text/html"}
    )
    assert page.status_code == 200 and "1 training<" in page.text, page.text[:300]
    record = wait_for(lambda: _ended(httpx.get(base + uuid, headers=auth, timeout=30).json()), 30)
    assert record["status"] == "done", record
    assert record["result"]["output"] == {"epochs": 100}
    assert replicas(gw, "text")[0]["id"] == replica["id"]
    wait_for(lambda: replicas(gw, "text")[0]["trainings"] == 0, 10)

    # Its training over, the idle replica goes.
    wait_for(lambda: all(r["state"] in ("stopped", "stopping") for r in replicas(gw, "text")), 30)


@SQLITE
def test_a_training_counts_from_the_moment_its_replica_accepts_it(
    gateway_factory: Callable[..., Gateway], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No health check runs in this test (one a minute): only the gateway's own note of the
    # accepted training keeps the idle replica, where before it went after idle_seconds.
    gw = slow_model(gateway_factory(gateway_health_interval=60), monkeypatch, tmp_path, 1)
    _, key = gw.key()
    base = gw.platform.url + "/m/text/v2/models/slowtrain/train/"
    r = httpx.post(
        base, params={"epochs": 300}, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )
    assert r.status_code in (200, 201), r.text
    wait_for(lambda: replicas(gw, "text")[0]["trainings"] == 1, 5)
    until = time.monotonic() + 4  # four times idle_seconds
    while time.monotonic() < until:
        assert [r["state"] for r in replicas(gw, "text")] == ["running"], replicas(gw, "text")
        time.sleep(0.5)


def _ended(record: dict) -> dict | None:
    return None if record["status"] == "running" else record
