"""Deployments on a real single-node Slurm cluster (scripts/slurm-test-cluster.sh), on this
host and over SSH to an OpenSSH server on loopback."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agora.deployments.backends.base import JobSpec
from agora.deployments.backends.slurm import SlurmBackend, parse_exit
from agora.deployments.templates import Resources
from agora.settings import BackendConfig, Settings
from tests.deployments.conftest import Platform
from tests.slurm_cluster import SlurmCluster
from tests.ssh_server import ssh_server

SERVE = "exec python3 -m http.server $PORT --bind $AGORA_BIND_HOST"


def slurm_backend(
    cluster: SlurmCluster, tmp_path: Path, name: str = "hpc", **options: Any
) -> BackendConfig:
    import sys

    return BackendConfig(
        name=name,
        kind="slurm",
        start_timeout=20,
        options={
            "partition": "debug",
            "work_root": str(tmp_path / "shared"),
            "python": sys.executable,
            "env": {"SLURM_CONF": cluster.env["SLURM_CONF"]},
            **options,
        },
    )


@pytest.fixture
def hpc(
    platform_factory: Callable[..., Platform], cluster: SlurmCluster, tmp_path: Path
) -> Platform:
    return platform_factory(backends=[slurm_backend(cluster, tmp_path)])


def test_batch_job_output_and_exit_status(hpc: Platform, cluster: SlurmCluster) -> None:
    dep = hpc.deploy(
        "batch",
        inputs={"command": "echo on node $(hostname) job $SLURM_JOB_ID", "cpus": 1, "memory_gb": 1},
    )
    done = hpc.wait(dep["id"], {"stopped"})
    assert done["exit_code"] == 0
    job_id = done["attempts"][0]["job_id"].split("@")[0]
    assert f"job {job_id}" in hpc.logs(dep["id"])
    assert cluster.finished_job(job_id).state == "COMPLETED"


def test_failing_job_reason(hpc: Platform) -> None:
    dep = hpc.deploy(
        "batch", inputs={"command": "echo 'ImportError: no module named torch' >&2; exit 4"}
    )
    failed = hpc.wait(dep["id"], {"failed"})
    assert failed["exit_code"] == 4
    assert "process exited with code 4" in failed["reason"]
    assert "ImportError: no module named torch" in failed["reason"]


def test_cancel_a_running_job(hpc: Platform, cluster: SlurmCluster) -> None:
    dep = hpc.deploy("batch", inputs={"command": "sleep 600"})
    running = hpc.wait(dep["id"], {"running"})
    job_id = running["attempts"][0]["job_id"].split("@")[0]
    hpc.api("POST", f"/projects/default/deployments/{dep['id']}/stop")
    hpc.wait(dep["id"], {"stopped"}, timeout=40)
    assert cluster.wait_finished(job_id) == "CANCELLED"


def test_service_on_slurm_becomes_ready(
    hpc: Platform, cluster: SlurmCluster, tmp_path: Path
) -> None:
    dep = hpc.deploy("http-service", inputs={"command": SERVE})
    running = hpc.wait(dep["id"], {"running"}, timeout=60)
    assert running["backend"] == "hpc"
    # The service token travels in the run's own file, never in the batch script Slurm keeps.
    slurm_id, _, run_key = running["attempts"][0]["job_id"].partition("@")
    run_dir = tmp_path / "shared" / "runs" / run_key
    token = json.loads((run_dir / "job.json").read_text())["token"]
    assert token and len(token) >= 32
    assert stat.S_IMODE((run_dir / "job.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    kept = cluster.run("scontrol", "write", "batch_script", slurm_id, "-").stdout
    assert "#SBATCH --job-name=agora-" in kept
    assert token not in kept and base64.b64encode(token.encode()).decode()[:20] not in kept
    hpc.api("POST", f"/projects/default/deployments/{dep['id']}/stop")
    hpc.wait(dep["id"], {"stopped"}, timeout=40)


def test_refused_by_slurm_then_runs_locally(
    platform_factory, cluster: SlurmCluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    platform = platform_factory(
        backends=[
            slurm_backend(cluster, tmp_path, name="gpu-cluster", partition="gpu"),
            BackendConfig(name="local", kind="local"),
        ]
    )
    dep = platform.deploy("batch", inputs={"command": "echo fell back"})
    done = platform.wait(dep["id"], {"stopped"})
    first, second = done["attempts"]
    assert first["backend"] == "gpu-cluster"
    assert first["error"] == "Slurm refused the job: invalid partition 'gpu'"
    assert second["backend"] == "local" and second["error"] is None
    assert "fell back" in platform.logs(dep["id"])


def test_only_refusals_everywhere_fail_with_every_reason(
    platform_factory, cluster: SlurmCluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    platform = platform_factory(
        backends=[slurm_backend(cluster, tmp_path, name="gpu-cluster", partition="gpu")]
    )
    dep = platform.deploy("batch", inputs={"command": "true"})
    failed = platform.wait(dep["id"], {"failed"})
    assert (
        failed["reason"]
        == "no backend could run it (gpu-cluster: Slurm refused the job: invalid partition 'gpu')"
    )


def test_control_plane_restart_readopts_slurm_jobs(
    platform_factory, cluster: SlurmCluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    backends = [slurm_backend(cluster, tmp_path)]
    first = platform_factory(backends=backends)
    flag = tmp_path / "go"
    job = first.deploy(
        "batch", inputs={"command": f"while [ ! -e {flag} ]; do sleep 0.2; done; echo adopted"}
    )
    service = first.deploy("http-service", inputs={"command": SERVE})
    first.wait(job["id"], {"running"})
    first.wait(service["id"], {"running"}, timeout=60)
    first.shutdown()
    flag.touch()
    second = platform_factory(backends=backends)
    assert second.wait(job["id"], {"stopped"})["exit_code"] == 0
    assert "adopted" in second.logs(job["id"])
    assert second.get(service["id"])["state"] == "running"
    second.api("POST", f"/projects/default/deployments/{service['id']}/stop")
    second.wait(service["id"], {"stopped"}, timeout=40)


def test_over_ssh_with_verified_host_key(
    platform_factory, cluster: SlurmCluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    with ssh_server() as sshd:
        config = slurm_backend(
            cluster,
            tmp_path,
            ssh_host=sshd.host,
            ssh_port=sshd.port,
            ssh_user=sshd.user,
            ssh_key=str(sshd.client_key),
            ssh_known_hosts=str(sshd.known_hosts),
        )
        platform = platform_factory(backends=[config])
        dep = platform.deploy("batch", inputs={"command": "echo via ssh"})
        platform.wait(dep["id"], {"stopped"})
        assert "via ssh" in platform.logs(dep["id"])


def test_wrong_host_key_is_refused(cluster: SlurmCluster, tmp_path: Path) -> None:
    with ssh_server() as sshd:
        bad = tmp_path / "known_hosts"
        bad.write_text(
            f"[{sshd.host}]:{sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
        )
        config = slurm_backend(
            cluster,
            tmp_path,
            ssh_host=sshd.host,
            ssh_port=sshd.port,
            ssh_user=sshd.user,
            ssh_key=str(sshd.client_key),
            ssh_known_hosts=str(bad),
        )
        backend = SlurmBackend(config, Settings(data_dir=tmp_path))
        from agora.deployments.backends import BackendError

        with pytest.raises(BackendError, match="SSH to 127.0.0.1 failed"):
            asyncio.run(backend.poll(["1@x"]))


def _spec(**resources: Any) -> JobSpec:
    r = {
        "cpus": 4,
        "memory_mb": 8192,
        "gpus": 0,
        "gpu_type": None,
        "time_limit_minutes": 90,
        **resources,
    }
    return JobSpec(
        deployment_id="dabc",
        kind="job",
        script="echo hi; rm -rf '$HOME'",
        env={"X": "1"},
        resources=Resources(**r),
        project="bio",
    )


def test_rendered_batch_script(tmp_path: Path) -> None:
    config = BackendConfig(
        name="hpc",
        kind="slurm",
        max_gpus=4,
        options={
            "partition": "gpu",
            "account": "proj42",
            "qos": "normal",
            "work_root": "/shared/agora",
            "python": "/opt/agora/bin/python",
        },
    )
    script = SlurmBackend(config, Settings(data_dir=tmp_path)).render(
        _spec(gpus=2, gpu_type="a100"), "dabc-1"
    )
    for line in (
        "#SBATCH --job-name=agora-dabc",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8192M",
        "#SBATCH --time=90",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj42",
        "#SBATCH --qos=normal",
        "#SBATCH --gres=gpu:a100:2",
        'exec /opt/agora/bin/python -m agora.deployments.runner "$RUN_DIR"',
    ):
        assert line in script
    assert "rm -rf" not in script  # the user's script travels base64-encoded
    token_spec = dataclasses.replace(_spec(), token="secret-service-token", env={"K": "v"})
    backend = SlurmBackend(config, Settings(data_dir=tmp_path))
    assert "job.json" not in backend.render(token_spec, "dabc-3")
    job = json.loads(backend.job_file(token_spec))
    assert job["token"] == "secret-service-token" and job["env"] == {"K": "v"}
    assert job["memory_limit_mb"] == 0 and job["time_limit_seconds"] is None
    no_gpu = SlurmBackend(config, Settings(data_dir=tmp_path)).render(_spec(), "dabc-2")
    assert "--gres" not in no_gpu


@pytest.mark.parametrize(
    ("value", "code"), [("0:0", 0), ("3:0", 3), ("0:9", 137), ("0:15", 143), ("x", None)]
)
def test_exit_codes_read_like_a_shell(value: str, code: int | None) -> None:
    assert parse_exit(value) == code


def test_jupyterlab_on_slurm_runs_a_cell_through_the_proxy(hpc: Platform) -> None:
    from websockets.asyncio.client import connect

    from tests.deployments.test_jupyterlab import KEY, execute, ws_url

    dep = hpc.deploy("jupyterlab")
    lab = hpc.wait(dep["id"], {"running"}, timeout=120)["id"]
    r = hpc.http.post(f"/d/{lab}/api/kernels", headers=KEY, json={"name": "python3"})
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]

    async def talk() -> str:
        url = ws_url(hpc, f"/d/{lab}/api/kernels/{kernel}/channels")
        async with connect(url, additional_headers=KEY, max_size=None) as ws:
            return await execute(ws, "import os; print(6*7, os.environ['SLURM_JOB_ID'] != '')")

    assert asyncio.run(talk()) == "42 True\n"
    hpc.api("POST", f"/projects/default/deployments/{lab}/stop")
    hpc.wait(lab, {"stopped"}, timeout=60)
