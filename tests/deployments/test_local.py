"""Deployments on the local backend, end to end through a running control plane."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.deployments.conftest import Platform

SERVE = "exec python3 -m http.server $PORT --bind $AGORA_BIND_HOST"


def test_batch_job_runs_and_keeps_its_output(platform: Platform) -> None:
    dep = platform.deploy("batch", inputs={"command": "echo hello from $AGORA_PROJECT; pwd"})
    assert dep["state"] == "pending"
    done = platform.wait(dep["id"], {"stopped"})
    assert done["exit_code"] == 0
    assert done["reason"] == "completed (exit code 0)"
    logs = platform.logs(dep["id"])
    assert "hello from default" in logs
    assert logs.strip().endswith("projects/default")  # ran in the project's work directory
    states = [e["state"] for e in done["events"]]
    assert states[0] == "pending" and "submitted" in states and states[-1] == "stopped"
    assert done["attempts"][0]["backend"] == "local" and done["attempts"][0]["job_id"]


def test_failing_job_says_why(platform: Platform) -> None:
    dep = platform.deploy(
        "batch", inputs={"command": "echo preparing; echo 'boom: no such file' >&2; exit 3"}
    )
    failed = platform.wait(dep["id"], {"failed"})
    assert failed["exit_code"] == 3
    assert failed["reason"].startswith("process exited with code 3; last log lines:")
    assert "boom: no such file" in failed["reason"]


def test_service_announces_itself_becomes_ready_and_stops(platform: Platform) -> None:
    dep = platform.deploy("http-service", inputs={"command": SERVE})
    running = platform.wait(dep["id"], {"running"})
    assert running["url"] == f"/d/{dep['id']}/"
    messages = " ".join(e["message"] for e in running["events"])
    assert "listens on its node" in messages and "ready" in messages
    r = platform.api("POST", f"/projects/default/deployments/{dep['id']}/stop")
    assert r.status_code == 200
    stopped = platform.wait(dep["id"], {"stopped"}, timeout=30)
    assert stopped["reason"] == "stopped"


def test_cancel_ends_the_whole_process_group(platform: Platform, tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    dep = platform.deploy(
        "batch", inputs={"command": f"(while true; do touch {marker}; sleep 0.2; done) & sleep 600"}
    )
    platform.wait(dep["id"], {"running"})
    time.sleep(0.5)
    assert marker.exists()
    platform.api("POST", f"/projects/default/deployments/{dep['id']}/stop")
    platform.wait(dep["id"], {"stopped"}, timeout=30)
    marker.unlink()
    time.sleep(0.6)
    assert not marker.exists()  # the background child was ended too


def test_delete_needs_a_stopped_deployment(platform: Platform) -> None:
    dep = platform.deploy("batch", inputs={"command": "sleep 600"})
    r = platform.api("DELETE", f"/projects/default/deployments/{dep['id']}")
    assert r.status_code == 409
    assert "stop it before deleting" in r.json()["detail"]
    platform.api("POST", f"/projects/default/deployments/{dep['id']}/stop")
    platform.wait(dep["id"], {"stopped"}, timeout=30)
    assert platform.api("DELETE", f"/projects/default/deployments/{dep['id']}").status_code == 204
    assert platform.api("GET", f"/projects/default/deployments/{dep['id']}").status_code == 404


def test_bad_inputs_are_refused_and_nothing_is_submitted(platform: Platform) -> None:
    r = platform.api(
        "POST",
        "/projects/default/deployments",
        json={"template": "batch", "inputs": {"command": "true", "cpus": 0}},
    )
    assert r.status_code == 422
    assert r.json()["detail"] == "cpus: must be at least 1"
    r = platform.api(
        "POST", "/projects/default/deployments", json={"template": "nope", "inputs": {}}
    )
    assert r.status_code == 404
    r = platform.api(
        "POST",
        "/projects/default/deployments",
        json={"template": "batch", "inputs": {"command": "true"}, "backends": ["mars"]},
    )
    assert r.status_code == 422 and "no backend 'mars'" in r.json()["detail"]
    assert platform.api("GET", "/projects/default/deployments").json() == []


def test_quota_refusal_names_limit_and_use(platform: Platform) -> None:
    r = platform.api("PATCH", "/projects/default/quota", json={"cpus": 3})
    assert r.status_code == 200 and r.json()["limits"]["cpus"] == 3
    first = platform.deploy("batch", inputs={"command": "sleep 600", "cpus": 2})
    platform.wait(first["id"], {"running"})
    r = platform.api(
        "POST",
        "/projects/default/deployments",
        json={"template": "batch", "inputs": {"command": "true", "cpus": 2}},
    )
    assert r.status_code == 403
    assert r.json()["detail"] == (
        "Project 'default' may use 3 CPUs; 2 in use by active deployments, and this needs 2 more"
    )
    assert len(platform.api("GET", "/projects/default/deployments").json()) == 1
    assert platform.api("GET", "/projects/default/quota").json()["in_use"]["cpus"] == 2


def test_wrong_announcement_token_is_refused(platform: Platform) -> None:
    dep = platform.deploy("batch", inputs={"command": "sleep 600"})
    r = platform.http.post(
        f"/api/v1/deployments/{dep['id']}/announce",
        json={"host": "127.0.0.1", "port": 9},
        headers={"Authorization": "Bearer forged"},
    )
    assert r.status_code == 401


def test_failover_to_the_next_backend_keeps_every_attempt(platform_factory) -> None:  # type: ignore[no-untyped-def]
    from agora.settings import BackendConfig

    platform = platform_factory(
        quota_gpus=1,
        backends=[
            # Claims a GPU in its limits, but the machine behind it has none: it refuses at submit.
            BackendConfig(name="gpu-box", kind="local", max_gpus=1, options={"gpus": 0}),
            BackendConfig(name="fallback", kind="local", max_gpus=1, options={"gpus": 1}),
        ],
    )
    dep = platform.deploy("batch", inputs={"command": "echo ran", "gpus": 1})
    done = platform.wait(dep["id"], {"stopped"})
    a, b = done["attempts"]
    assert (a["backend"], a["job_id"]) == ("gpu-box", None)
    assert a["error"] == "asks for 1 GPUs; this machine offers 0"
    assert b["backend"] == "fallback" and b["error"] is None
    assert any("refused it" in e["message"] for e in done["events"])


def test_control_plane_restart_adopts_running_work(platform_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = platform_factory()
    flag = tmp_path / "finish"
    survivor = first.deploy(
        "batch", inputs={"command": f"while [ ! -e {flag} ]; do sleep 0.1; done; echo survived"}
    )
    victim = first.deploy("batch", inputs={"command": "sleep 600"})
    service = first.deploy("http-service", inputs={"command": SERVE})
    for d in (survivor, victim):
        first.wait(d["id"], {"running"})
    first.wait(service["id"], {"running"})
    victim_pid = int(next(tmp_path.glob(f"**/runs/{victim['id']}-*/pid")).read_text())
    first.shutdown()
    # While the control plane is down: one job goes on, one is killed from outside.
    os.killpg(victim_pid, signal.SIGKILL)
    flag.touch()
    second = platform_factory()
    done = second.wait(survivor["id"], {"stopped"})
    assert "survived" in second.logs(survivor["id"])
    lost = second.wait(victim["id"], {"failed"})
    assert "vanished without an exit status" in lost["reason"]
    assert second.get(service["id"])["state"] == "running"  # adopted, still served
    assert done["exit_code"] == 0


def test_other_project_cannot_see_deployments(platform: Platform) -> None:
    platform.api("POST", "/users", json={"username": "eve", "password": "correct-horse-battery"})
    platform.api("POST", "/projects", json={"name": "evil"})
    platform.api("POST", "/projects/evil/members", json={"username": "eve", "role": "owner"})
    token = platform.http.post(
        "/api/v1/auth/login", json={"username": "eve", "password": "correct-horse-battery"}
    ).json()["token"]
    dep = platform.deploy("batch", inputs={"command": "sleep 600"})
    assert (
        platform.api("GET", f"/projects/default/deployments/{dep['id']}", token).status_code == 404
    )
    assert platform.api("GET", f"/projects/evil/deployments/{dep['id']}", token).status_code == 404
    assert (
        platform.api("POST", f"/projects/default/deployments/{dep['id']}/stop", token).status_code
        == 404
    )
    assert (
        platform.api("GET", f"/projects/default/deployments/{dep['id']}/logs", token).status_code
        == 404
    )


def test_logs_follow_streams_until_the_end(platform: Platform) -> None:
    dep = platform.deploy(
        "batch", inputs={"command": "for i in 1 2 3; do echo line $i; sleep 0.5; done"}
    )
    platform.wait(dep["id"], {"running", "stopped"})
    with platform.http.stream(
        "GET",
        f"/api/v1/projects/default/deployments/{dep['id']}/logs",
        params={"follow": "true"},
        headers={
            "Authorization": f"Bearer {__import__('tests.conftest', fromlist=['ADMIN_KEY']).ADMIN_KEY}"
        },
    ) as r:
        text = "".join(r.iter_text())
    assert [line for line in text.splitlines() if line.startswith("line")] == [
        "line 1",
        "line 2",
        "line 3",
    ]


def test_http_client_sees_problem_json(platform: Platform) -> None:
    r = httpx.get(
        platform.url + "/api/v1/projects/default/deployments/nonexistent",
        headers={
            "Authorization": "Bearer "
            + __import__("tests.conftest", fromlist=["ADMIN_KEY"]).ADMIN_KEY
        },
    )
    assert r.status_code == 404
