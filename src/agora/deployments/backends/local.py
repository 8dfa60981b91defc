"""Local processes: each deployment runs under the runner in its own session (process group),
so the control plane can die and come back while it runs, and a cancel ends the whole group."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from agora.deployments.backends.base import (
    Backend,
    JobSpec,
    JobState,
    JobStatus,
    SubmitRefused,
    job_environment,
)


def tail(path: Path, max_bytes: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            start = max(0, size - max_bytes - 1)  # one byte more: was the cut at a line start?
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return ""
    if start > 0:
        before, data = data[:1], data[1:]
        if before != b"\n":  # drop the partial first line
            data = data.split(b"\n", 1)[-1] if b"\n" in data else b""
    return data.decode("utf-8", errors="replace")


def read_exit(run_dir: Path) -> JobStatus | None:
    try:
        data = json.loads((run_dir / "exit.json").read_text())
        code, reason = int(data["code"]), data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise TypeError(reason)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OSError):
        return JobStatus(JobState.FAILED, reason="its exit record is unreadable")
    return JobStatus(JobState.EXITED, exit_code=code, reason=reason)


def write_job(run_dir: Path, spec: JobSpec, job: dict[str, object]) -> None:
    run_dir.mkdir(parents=True, mode=0o700)
    script = run_dir / "script.sh"
    script.write_text(spec.script)
    fd = os.open(run_dir / "job.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(job, fh)


def runner_job(spec: JobSpec, bind_host: str, announce_host: str | None) -> dict[str, object]:
    r = spec.resources
    return {
        "kind": spec.kind,
        "env": spec.env,
        "announce_url": spec.announce_url,
        "token": spec.token,
        "bind_host": bind_host,
        "announce_host": announce_host,
        "cpus": r.cpus,
        "memory_limit_mb": r.memory_mb,
        "time_limit_seconds": r.time_limit_minutes * 60,
    }


class LocalBackend(Backend):
    """Options: ``cpus`` and ``gpus`` this machine offers (default: all CPUs, no GPUs),
    ``enforce_memory`` (default true: RLIMIT_DATA at the requested memory)."""

    kind = "local"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def _dir(self, job_id: str) -> Path:
        return self.settings.runs_dir / job_id

    async def submit(self, spec: JobSpec) -> str:
        self.check_resources(spec.resources)
        gpus = int(self.config.options.get("gpus", 0))
        if spec.resources.gpus > gpus:
            raise SubmitRefused(f"asks for {spec.resources.gpus} GPUs; this machine offers {gpus}")
        job_id = f"{spec.deployment_id}-{secrets.token_hex(3)}"
        run_dir = self._dir(job_id)
        job = runner_job(spec, "127.0.0.1", "127.0.0.1")
        if not self.config.options.get("enforce_memory", True):
            job["memory_limit_mb"] = 0
        write_job(run_dir, spec, job)
        with open(run_dir / "runner.log", "ab") as log:
            child = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "agora.deployments.runner", str(run_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=run_dir,
                start_new_session=True,
                env=job_environment(),
            )
        (run_dir / "pid").write_text(str(child.pid))
        self._children[child.pid] = child
        return job_id

    def _pid(self, job_id: str) -> int | None:
        try:
            return int((self._dir(job_id) / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, pid: int, job_id: str) -> bool:
        child = self._children.get(pid)
        if child is not None:
            # Our own child: poll() knows. (Its /proc cmdline is still ours between fork and
            # exec, so the check below would call a just-started runner vanished.)
            if child.poll() is None:
                return True
            del self._children[pid]  # reaped
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        # A recycled pid runs something else; a zombie is not running.
        return job_id.encode() in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"

    async def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        out = {}
        for job_id in job_ids:
            run_dir = self._dir(job_id)
            ended = read_exit(run_dir)
            pid = self._pid(job_id)
            if ended is not None:
                if pid is not None:
                    self._alive(pid, job_id)  # reap
                out[job_id] = ended
            elif not run_dir.exists() or pid is None:
                out[job_id] = JobStatus(JobState.GONE, reason="its run directory is gone")
            elif self._alive(pid, job_id) or read_exit(run_dir) is not None:
                out[job_id] = read_exit(run_dir) or JobStatus(JobState.RUNNING, node="127.0.0.1")
            else:
                out[job_id] = JobStatus(
                    JobState.FAILED, reason="the process vanished without an exit status (killed?)"
                )
        return out

    async def logs(self, job_id: str, max_bytes: int = 65536) -> str:
        return tail(self._dir(job_id) / "output.log", max_bytes)

    async def cancel(self, job_id: str, force: bool = False) -> None:
        pid = self._pid(job_id)
        if pid is None or not self._alive(pid, job_id):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL if force else signal.SIGTERM)
