"""The real single-node Slurm cluster of tests/slurm_cluster.py works as Agora will use it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.slurm_cluster import SCRIPT, SlurmCluster, slurm_cluster

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the Slurm test cluster needs root")


def submit(cluster: SlurmCluster, *args: str) -> str:
    out = cluster.run("sbatch", "--parsable", *args)
    # --parsable prints "JOBID" or "JOBID;CLUSTER"
    return out.stdout.strip().split(";")[0]


def test_start_is_quick_and_idempotent(cluster: SlurmCluster) -> None:
    assert cluster.start_seconds < 30, cluster.start_seconds
    t0 = time.monotonic()
    again = subprocess.run(
        ["bash", str(SCRIPT), "start", str(cluster.conf_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert time.monotonic() - t0 < 5
    assert f"export SLURM_CONF={cluster.conf}" in again.stdout
    status = subprocess.run(
        ["bash", str(SCRIPT), "status", str(cluster.conf_dir)], capture_output=True, text=True
    )
    assert status.returncode == 0, status.stdout + status.stderr
    for daemon in ("munged", "slurmctld", "slurmd"):
        assert f"{daemon}: running" in status.stdout
    assert (cluster.conf_dir / "log" / "slurmctld.log").exists()


def test_partitions(cluster: SlurmCluster) -> None:
    rows = [line.split("|") for line in cluster.run("sinfo", "-h", "-o", "%P|%a").stdout.split()]
    assert sorted(rows) == [["batch", "up"], ["debug*", "up"]]  # "*": the default partition
    assert cluster.partitions == ("debug", "batch")


def test_job_completes_with_output_and_record(cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "out-%j.txt"
    job = submit(cluster, "-p", "debug", "-o", str(out), "--wrap", "echo hi")
    assert job.isdigit()
    assert cluster.wait_finished(job) == "COMPLETED"
    line = cluster.run("squeue", "-h", "-t", "all", "-j", job, "-o", "%i|%T|%r|%N|%P").stdout
    jid, state, reason, node, partition = line.strip().split("|")
    assert (jid, state, reason, partition) == (job, "COMPLETED", "None", "debug")
    assert node
    assert (tmp_path / f"out-{job}.txt").read_text() == "hi\n"
    record = cluster.finished_job(job)
    assert (record.state, record.exit_code) == ("COMPLETED", "0:0")


def test_failing_job_reports_exit_code(cluster: SlurmCluster, tmp_path: Path) -> None:
    job = submit(cluster, "-p", "debug", "-o", str(tmp_path / "out-%j"), "--wrap", "exit 3")
    assert cluster.wait_finished(job) == "FAILED"
    line = cluster.run("squeue", "-h", "-t", "all", "-j", job, "-o", "%T|%r").stdout.strip()
    assert line == "FAILED|NonZeroExitCode"
    record = cluster.finished_job(job)
    assert (record.state, record.exit_code) == ("FAILED", "3:0")


def test_unknown_partition_refused(cluster: SlurmCluster) -> None:
    out = cluster.run("sbatch", "--parsable", "-p", "gpu", "--wrap", "true", check=False)
    assert out.returncode != 0
    assert "invalid partition" in out.stderr.lower(), out.stderr


def test_impossible_requests_refused(cluster: SlurmCluster) -> None:
    too_much_memory = cluster.run("sbatch", "--mem=100000G", "--wrap", "true", check=False)
    assert too_much_memory.returncode != 0
    assert "Memory specification can not be satisfied" in too_much_memory.stderr
    too_many_cpus = cluster.run("sbatch", "--cpus-per-task=4096", "--wrap", "true", check=False)
    assert too_many_cpus.returncode != 0
    assert "More processors requested than permitted" in too_many_cpus.stderr


def test_cancelled_job(cluster: SlurmCluster, tmp_path: Path) -> None:
    job = submit(cluster, "-p", "batch", "-o", str(tmp_path / "out-%j"), "--wrap", "sleep 300")
    deadline = time.monotonic() + 30
    while cluster.job_state(job) != "RUNNING":
        assert time.monotonic() < deadline, cluster.job_state(job)
        time.sleep(0.1)
    cluster.run("scancel", job)
    assert cluster.wait_finished(job) == "CANCELLED"
    assert cluster.finished_job(job).state == "CANCELLED"


def test_resource_requests_accepted(cluster: SlurmCluster, tmp_path: Path) -> None:
    job = submit(
        cluster,
        "-p",
        "batch",
        "--cpus-per-task=1",
        "--mem=100M",
        "--time=00:01:00",
        "-J",
        "agora-resources",
        "-o",
        str(tmp_path / "out-%j"),
        "--wrap",
        "echo $SLURM_CPUS_PER_TASK $SLURM_MEM_PER_NODE",
    )
    line = cluster.run("squeue", "-h", "-t", "all", "-j", job, "-o", "%j|%P|%C|%m|%l").stdout
    assert line.strip() == "agora-resources|batch|1|100M|1:00"
    assert cluster.wait_finished(job) == "COMPLETED"
    assert (tmp_path / f"out-{job}").read_text() == "1 100\n"


def test_plain_sacct_has_no_database(cluster: SlurmCluster) -> None:
    """Documents the setup: finished jobs come from `sacct -c` (the job completion file)."""
    out = cluster.run("sacct", "-n", "-P", "-X", "-o", "JobID,State", check=False)
    assert out.returncode != 0
    assert "accounting storage is disabled" in out.stderr


def test_slurmdbd_accounting(cluster: SlurmCluster, tmp_path: Path) -> None:
    """The opt-in slurmdbd mode: plain sacct, filters, steps, names with spaces. A second
    cluster in its own directory, on its own ports, beside the default one."""
    ports = {"ctld": 16827, "slurmd": 16828, "dbd": 16829, "db": 16316}
    with slurm_cluster("/tmp/agora-slurm-dbd", accounting="slurmdbd", ports=ports) as dbd:
        assert dbd.accounting == "slurmdbd"
        assert dbd.sacct == ["sacct"]
        assert dbd.start_seconds < 60, dbd.start_seconds
        out = str(tmp_path / "out-%j")
        ok = submit(dbd, "-J", "with space", "-o", out, "--wrap", "echo hi")
        failed = submit(dbd, "-p", "batch", "-o", out, "--wrap", "exit 3")
        assert dbd.wait_finished(ok) == "COMPLETED"
        assert dbd.wait_finished(failed) == "FAILED"
        assert dbd.finished_job(ok).exit_code == "0:0"
        assert dbd.finished_job(failed).exit_code == "3:0"
        fmt = ["-n", "-P", "-o", "JobID,JobName,Partition,State,ExitCode", "-j", f"{ok},{failed}"]
        deadline = time.monotonic() + 10
        while True:  # the controller sends slurmdbd the full records a moment after the end
            rows = dbd.run("sacct", *fmt).stdout.split("\n")
            if f"{ok}|with space|debug|COMPLETED|0:0" in rows or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert f"{ok}|with space|debug|COMPLETED|0:0" in rows
        assert f"{ok}.batch|batch||COMPLETED|0:0" in rows
        assert f"{failed}|wrap|batch|FAILED|3:0" in rows
        only_failed = dbd.run("sacct", "-n", "-P", "-X", "-o", "JobID", "-s", "F", "-j", failed)
        assert only_failed.stdout.split() == [failed]
        # The default cluster is unaffected.
        assert cluster.run("sinfo", "-h", "-o", "%P").stdout.split() == ["debug*", "batch"]
