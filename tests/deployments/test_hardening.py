"""What a hostile or broken job must not be able to do to the platform."""

from __future__ import annotations

import pytest

from agora.models import Deployment
from tests.deployments.conftest import Platform


def test_jobs_never_see_the_control_planes_settings(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control plane runs in this process: its environment is what a job could inherit.
    monkeypatch.setenv("AGORA_SECRET_KEY_FOR_TEST", "leak-me-not")
    dep = platform.deploy("batch", inputs={"command": "env"})
    platform.wait(dep["id"], {"stopped"})
    logs = platform.logs(dep["id"])
    assert "AGORA_DEPLOYMENT_ID=" in logs  # its own variables are there
    assert "leak-me-not" not in logs and "AGORA_SECRET_KEY" not in logs


def test_a_forged_exit_record_fails_that_job_only(platform: Platform) -> None:
    hostile = platform.deploy(
        "batch", inputs={"command": 'echo \'{"code": "x"}\' > "$OLDPWD/exit.json"; sleep 600'}
    )
    failed = platform.wait(hostile["id"], {"failed"})
    assert failed["reason"].startswith("its exit record is unreadable")
    other = platform.deploy("batch", inputs={"command": "echo fine"})
    assert platform.wait(other["id"], {"stopped"})["exit_code"] == 0  # the orchestrator goes on


def test_a_service_cannot_announce_another_host(platform: Platform) -> None:
    dep = platform.deploy("http-service", inputs={"command": "sleep 600"})
    platform.wait(dep["id"], {"starting"})
    with platform.runtime.db.session() as db:
        token = platform.runtime.keyring.decrypt(db.get(Deployment, dep["id"]).token)
    r = platform.http.post(
        f"/api/v1/deployments/{dep['id']}/announce",
        json={"host": "10.1.2.3", "port": 80},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 204
    failed = platform.wait(dep["id"], {"failed"})
    assert failed["reason"] == "it announced 10.1.2.3, which is not its node (127.0.0.1)"


@pytest.mark.parametrize("host", ["a:b", "x y", "-bad", "[zz]"])
def test_malformed_announced_hosts_are_422(platform: Platform, host: str) -> None:
    dep = platform.deploy("batch", inputs={"command": "sleep 600"})
    r = platform.http.post(
        f"/api/v1/deployments/{dep['id']}/announce",
        json={"host": host, "port": 80},
        headers={"Authorization": "Bearer x"},
    )
    assert r.status_code == 422


def test_non_ascii_credentials_are_refused_not_500(platform: Platform) -> None:
    dep = platform.deploy("batch", inputs={"command": "sleep 600"})
    r = platform.http.post(
        f"/api/v1/deployments/{dep['id']}/announce",
        json={"host": "127.0.0.1", "port": 80},
        headers={"Authorization": "Bearer tök".encode()},
    )
    assert r.status_code == 401
    platform.http.cookies.set("agora_session", "agoras_x")
    r = platform.http.post("/api/v1/auth/logout", headers={"X-CSRF-Token": "ünïcode".encode()})
    assert r.status_code in (401, 403)
    platform.http.cookies.clear()


def test_a_project_with_active_deployments_cannot_be_deleted(platform: Platform) -> None:
    platform.api("POST", "/projects", json={"name": "lab"})
    dep = platform.deploy("batch", project="lab", inputs={"command": "sleep 600"})
    r = platform.api("DELETE", "/projects/lab")
    assert r.status_code == 409
    assert "active deployment" in r.json()["detail"]
    platform.api("POST", f"/projects/lab/deployments/{dep['id']}/stop")
    platform.wait(dep["id"], {"stopped"}, project="lab", timeout=30)
    assert platform.api("DELETE", "/projects/lab").status_code == 204


def test_same_host_rules() -> None:
    from agora.deployments.lifecycle import same_host

    assert same_host("node01", "node01")
    assert same_host("node01.cluster.example.org", "node01")
    assert not same_host("node02", "node01")
    assert not same_host("10.0.0.1", "10.0.0.2")
