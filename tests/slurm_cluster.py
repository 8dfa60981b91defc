"""A real single-node Slurm cluster on loopback for the tests, started by
``scripts/slurm-test-cluster.sh`` (which installs Debian's slurm-wlm and munge when missing).

    with slurm_cluster() as cluster:
        subprocess.run(["sbatch", ...], env={**os.environ, **cluster.env})

The cluster lives in ``$SLURM_TEST_DIR`` (default ``/tmp/agora-slurm``) and has the partitions
``debug`` (default) and ``batch``; there is no ``gpu`` partition. Finished jobs stay visible to
``squeue -t all`` for MinJobAge (300 s). For finished-job records, ``accounting``:

- ``"jobcomp"`` (default, no database): the job completion file, read by ``sacct --completion``
  (``-c``) only; plain ``sacct`` answers "Slurm accounting storage is disabled". With ``-c`` only
  the ``-j`` filter works (``-s``, ``-u``, ``--name``, ``-S`` are ignored), there are no job
  steps, no Reason, and a job name or work dir with a space garbles its record.
- ``"slurmdbd"``: slurmdbd on a private MariaDB server, so plain ``sacct`` works as on a real
  cluster (needs Debian's mariadb-server and slurmdbd; the script installs them when missing).

The cluster is stopped on exit unless it was already running before (a developer's, or one kept
by ``AGORA_TEST_KEEP_SLURM=1``) or ``AGORA_TEST_KEEP_SLURM=1`` is set. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm-test-cluster.sh"
DEFAULT_DIR = "/tmp/agora-slurm"
PARTITIONS = ("debug", "batch")
FINISHED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)


@dataclass(frozen=True)
class JobRecord:
    """A finished job as ``sacct --completion`` reports it."""

    job_id: str
    state: str
    exit_code: str  # "EXIT:SIGNAL", e.g. "0:0", "3:0", "0:9"


@dataclass
class SlurmCluster:
    conf_dir: Path
    env: dict[str, str]
    accounting: str = "jobcomp"  # or "slurmdbd"
    partitions: tuple[str, ...] = PARTITIONS
    default_partition: str = "debug"
    start_seconds: float = 0.0
    started_here: bool = field(default=True)

    @property
    def conf(self) -> Path:
        return Path(self.env["SLURM_CONF"])

    def run(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (sbatch, squeue, ...) against this cluster."""
        return subprocess.run(
            list(args),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def job_state(self, job_id: str) -> str | None:
        """The controller's state of the job (``squeue -t all``), None once it forgot the job."""
        out = self.run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T", check=False)
        for line in out.stdout.splitlines():
            jid, _, state = line.partition("|")
            if jid == job_id:
                return state
        return None

    def wait_finished(self, job_id: str, timeout: float = 30) -> str:
        """Poll squeue until the job has finished; returns its final state."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in FINISHED_STATES:
                return state
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still {state} after {timeout} s")

    def active_jobs(self) -> list[str]:
        """Ids of the jobs the controller has not finished (pending, running, completing)."""
        out = self.run("squeue", "-h", "-o", "%i", check=False)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def cancel_all(self, timeout: float = 30) -> list[str]:
        """Cancel every unfinished job and wait until the node is free again; returns the ids
        that were cancelled. The node has 2 CPUs, so one test's leftover jobs would starve the
        next tests' jobs ("did not start within 20 s (Resources)")."""
        jobs = self.active_jobs()
        if not jobs:
            return []
        self.run("scancel", *jobs, check=False)
        deadline = time.monotonic() + timeout
        while self.active_jobs():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"jobs {self.active_jobs()} still there {timeout} s after scancel"
                )
            time.sleep(0.1)
        return jobs

    @property
    def sacct(self) -> list[str]:
        """The sacct command that reports finished jobs here: ``sacct -c`` without slurmdbd."""
        return ["sacct"] if self.accounting == "slurmdbd" else ["sacct", "-c"]

    def finished_job(self, job_id: str, timeout: float = 10) -> JobRecord:
        """The job's final accounting record; polled briefly (records arrive as the job ends,
        through slurmdbd a moment later)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(
                *self.sacct, "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", job_id
            )
            for line in out.stdout.splitlines():
                jid, state, exit_code = line.split("|")
                if jid == job_id and state in FINISHED_STATES:
                    return JobRecord(jid, state, exit_code)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no completion record for job {job_id} after {timeout} s")
            time.sleep(0.1)


def _script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _parse_env(stdout: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
    return env


@contextlib.contextmanager
def slurm_cluster(
    conf_dir: str | os.PathLike[str] | None = None,
    *,
    accounting: str | None = None,
    ports: dict[str, int] | None = None,
) -> Iterator[SlurmCluster]:
    """Start (or reuse) the test cluster; yields it; stops it afterwards if it was started here.

    ``accounting``: "jobcomp" or "slurmdbd" (None: as configured in the directory, else
    jobcomp). ``ports`` (for a second cluster beside the default one): any of ``ctld``,
    ``slurmd``, ``dbd``, ``db``; ports not given keep the directory's, else the defaults
    16817, 16818, 16819, 16306."""
    if os.geteuid() != 0:
        raise RuntimeError("the Slurm test cluster needs root (slurmd runs the jobs)")
    directory = Path(conf_dir or os.environ.get("SLURM_TEST_DIR") or DEFAULT_DIR)
    settings: dict[str, str] = {}
    if accounting:
        settings["SLURM_TEST_ACCOUNTING"] = accounting
    for name, port in (ports or {}).items():
        settings[f"SLURM_TEST_{name.upper()}_PORT"] = str(port)
    was_running = _script("status", str(directory), env=settings, timeout=30).returncode == 0
    t0 = time.monotonic()
    started = _script("start", str(directory), env=settings)
    elapsed = time.monotonic() - t0
    if started.returncode != 0:
        raise RuntimeError(
            f"{SCRIPT.name} start failed ({started.returncode}):\n{started.stderr}"
            f"\nlogs: {directory}/log"
        )
    env = _parse_env(started.stdout)
    if "SLURM_CONF" not in env:
        raise RuntimeError(f"{SCRIPT.name} printed no SLURM_CONF:\n{started.stdout}")
    conf = Path(env["SLURM_CONF"]).read_text()
    cluster = SlurmCluster(
        conf_dir=directory.resolve(),
        env=env,
        accounting="slurmdbd" if "accounting_storage/slurmdbd" in conf else "jobcomp",
        start_seconds=elapsed,
        started_here=not was_running,
    )
    try:
        yield cluster
    finally:
        keep = os.environ.get("AGORA_TEST_KEEP_SLURM") == "1"
        if cluster.started_here and not keep:
            _script("stop", str(directory), timeout=60)
