"""Slurm: batch scripts submitted with sbatch, polled with one squeue (and sacct for finished
jobs) per cycle, cancelled with scancel — on this host, or over SSH to a login node.

In the spirit of batchspawner: a job-script template, command lines as argument lists (never a
shell string built from input), and parsers. The batch script carries the runner's files
(base64, so no quoting can break them), so one ``sbatch`` call does the whole submission; the
runner then runs the deployment on the compute node as on any backend.

Options (``[[backends]] options``): partition, account, qos, work_root (a directory the control
plane's node and the compute nodes share), python (the interpreter with Agora on the nodes),
control_plane_url (how nodes reach Agora), extra_sbatch (list of extra ``#SBATCH`` arguments),
env (variables for the Slurm commands, e.g. SLURM_CONF), and for SSH: ssh_host, ssh_user,
ssh_port, ssh_key, ssh_known_hosts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agora.deployments.backends.base import (
    Backend,
    BackendError,
    JobSpec,
    JobState,
    JobStatus,
    SubmitRefused,
    job_environment,
)
from agora.deployments.backends.local import runner_job

COMMAND_TIMEOUT = 30

_ACTIVE = {
    "PENDING": JobState.QUEUED,
    "REQUEUED": JobState.QUEUED,
    "REQUEUE_HOLD": JobState.QUEUED,
    "CONFIGURING": JobState.RUNNING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
}
_FAILURES = {
    "NODE_FAIL": "the node it ran on failed",
    "OUT_OF_MEMORY": "Slurm ended it: out of memory",
    "PREEMPTED": "Slurm preempted it",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "Slurm ended it at its deadline",
}
_KNOWN_REFUSALS = [
    (re.compile(r"invalid partition name", re.I), "invalid partition '{partition}'"),
    (re.compile(r"invalid account", re.I), "invalid account '{account}'"),
    (re.compile(r"invalid qos", re.I), "invalid QOS '{qos}'"),
    (
        re.compile(r"requested node configuration is not available", re.I),
        "no node offers the requested resources",
    ),
]

SCRIPT = """#!/bin/bash
{directives}
set -eu
RUN_DIR={run_dir}
umask 077
echo {script_b64} | base64 -d > "$RUN_DIR/script.sh"
exec {python} -m agora.deployments.runner "$RUN_DIR"
"""


#: Makes a run's directory (only the platform's account may enter it) and writes the job's
#: file there from standard input, on the host that submits (shared with the nodes).
_WRITE_JOB = 'umask 077 && mkdir -p -- "$1" && chmod 700 -- "$1" && cat > "$1/job.json"'


def parse_exit(value: str) -> int | None:
    """Slurm's "code:signal" as a shell would report it."""
    code, _, signal = value.partition(":")
    try:
        if signal and int(signal):
            return 128 + int(signal)
        return int(code)
    except ValueError:
        return None


class SlurmBackend(Backend):
    kind = "slurm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        o = self.config.options
        self.work_root = Path(o.get("work_root") or self.settings.data_dir)
        self.python = str(o.get("python") or "python3")
        self._control_dir: str | None = None
        self._accounting: str | None = None  # "sacct", "jobcomp" once known
        self._prepared = False

    # --- running commands ---------------------------------------------------------------------

    def _argv(self, args: list[str]) -> list[str]:
        o = self.config.options
        env = [f"{k}={v}" for k, v in (o.get("env") or {}).items()]
        if not o.get("ssh_host"):
            return ["env", *env, *args] if env else args
        if self._control_dir is None:
            self._control_dir = tempfile.mkdtemp(prefix="agora-ssh-")
        ssh = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self._control_dir}/%C",
            "-o",
            "ControlPersist=300",
            "-o",
            "ConnectTimeout=10",
            "-p",
            str(o.get("ssh_port", 22)),
        ]
        if o.get("ssh_known_hosts"):
            ssh += ["-o", f"UserKnownHostsFile={o['ssh_known_hosts']}"]
        if o.get("ssh_key"):
            ssh += ["-i", str(o["ssh_key"]), "-o", "IdentitiesOnly=yes"]
        target = f"{o['ssh_user']}@{o['ssh_host']}" if o.get("ssh_user") else str(o["ssh_host"])
        # The remote side runs a shell: every argument is quoted for it.
        return [*ssh, target, "--", shlex.join(["env", *env, *args] if env else args)]

    async def _run(self, args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
        argv = self._argv(args)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=job_environment(),  # sbatch exports its environment to the job
            )
        except OSError as exc:
            raise BackendError(f"cannot run {argv[0]}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), COMMAND_TIMEOUT
            )
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise BackendError(f"{args[0]} did not answer within {COMMAND_TIMEOUT} s") from exc
        if self.config.options.get("ssh_host") and proc.returncode == 255:
            raise BackendError(f"SSH to {self.config.options['ssh_host']} failed: {_last(err)}")
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def close(self) -> None:
        o = self.config.options
        if o.get("ssh_host") and self._control_dir:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(["true"])[:-3],
                "-O",
                "exit",
                str(o["ssh_host"]),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()

    # --- the contract -------------------------------------------------------------------------

    def render(self, spec: JobSpec, run_key: str) -> str:
        o, r = self.config.options, spec.resources
        run_dir = self.work_root / "runs" / run_key
        directives = [
            f"--job-name={spec.job_name}",
            f"--cpus-per-task={r.cpus}",
            f"--mem={r.memory_mb}M",
            f"--time={r.time_limit_minutes}",
            f"--output={run_dir}.slurm-%j.out",
            "--chdir=/tmp",
        ]
        for key in ("partition", "account", "qos"):
            if o.get(key):
                directives.append(f"--{key}={o[key]}")
        if r.gpus:
            directives.append(
                f"--gres=gpu:{r.gpu_type}:{r.gpus}" if r.gpu_type else f"--gres=gpu:{r.gpus}"
            )
        directives += [str(x) for x in o.get("extra_sbatch", [])]
        for d in directives:
            if "\n" in d:
                raise SubmitRefused("an #SBATCH option contains a line break")
        return SCRIPT.format(
            directives="\n".join(f"#SBATCH {d}" for d in directives),
            run_dir=shlex.quote(str(run_dir)),
            script_b64=base64.b64encode(spec.script.encode()).decode(),
            python=shlex.quote(self.python),
        )

    @staticmethod
    def job_file(spec: JobSpec) -> str:
        """What the runner on the node reads (``job.json``): the service token and the
        environment are in it, so it is written beside the run, readable only by the
        platform's account, and never into the batch script, which Slurm keeps (and with
        ``AccountingStoreFlags=job_script`` stores in its accounting database)."""
        job = runner_job(spec, "0.0.0.0", None)  # noqa: S104 - services bind on the node
        job["memory_limit_mb"] = 0  # Slurm enforces --mem itself
        job["time_limit_seconds"] = None  # and --time
        return json.dumps(job)

    async def submit(self, spec: JobSpec) -> str:
        self.check_resources(spec.resources)
        run_key = f"{spec.deployment_id}-{secrets.token_hex(3)}"
        if not self._prepared:  # Slurm writes its output file there before the job starts
            await self._run(["mkdir", "-p", str(self.work_root / "runs")])
            self._prepared = True
        run_dir = str(self.work_root / "runs" / run_key)
        code, _, err = await self._run(
            ["sh", "-c", _WRITE_JOB, "sh", run_dir], stdin=self.job_file(spec)
        )
        if code != 0:
            why = _last(err.encode())
            raise BackendError(f"could not write the job's file in {run_dir}: {why}")
        code, out, err = await self._run(["sbatch", "--parsable"], stdin=self.render(spec, run_key))
        if code != 0:
            raise SubmitRefused(f"Slurm refused the job: {self._refusal(err)}")
        slurm_id = out.strip().split(";")[0]
        if not slurm_id.isdigit():
            raise BackendError(f"sbatch answered something unexpected: {out.strip()[:200]}")
        return f"{slurm_id}@{run_key}"

    def _refusal(self, stderr: str) -> str:
        o = self.config.options
        for pattern, message in _KNOWN_REFUSALS:
            if pattern.search(stderr):
                return message.format(
                    partition=o.get("partition", ""),
                    account=o.get("account", ""),
                    qos=o.get("qos", ""),
                )
        text = _last(stderr.encode())
        return (
            re.sub(r"^sbatch: error: (Batch job submission failed: )?", "", text)
            or "no reason given"
        )

    async def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        by_slurm = {j.split("@")[0]: j for j in job_ids}
        code, out, err = await self._run(
            ["squeue", "-h", "-t", "all", "-j", ",".join(by_slurm), "-o", "%i|%T|%r|%N"]
        )
        if code != 0 and "Invalid job id" not in err:
            return {j: JobStatus(JobState.UNKNOWN, reason=_last(err.encode())) for j in job_ids}
        result: dict[str, JobStatus] = {}
        finished: list[str] = []
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) < 3 or parts[0] not in by_slurm:
                continue
            slurm_id, state, reason = parts[0], parts[1], parts[2]
            node = parts[3].strip() if len(parts) > 3 and parts[3].strip() else None
            if state in _ACTIVE:
                why = reason if reason not in ("None", "") else None
                result[by_slurm[slurm_id]] = JobStatus(_ACTIVE[state], reason=why, node=node)
            else:
                finished.append(slurm_id)
        finished += [s for s in by_slurm if by_slurm[s] not in result and s not in finished]
        if finished:
            result.update(await self._finished(finished, by_slurm))
        return result

    async def _finished(
        self, slurm_ids: list[str], by_slurm: dict[str, str]
    ) -> dict[str, JobStatus]:
        fields = ["-n", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(slurm_ids)]
        code, out, err = 1, "", ""
        if self._accounting in (None, "sacct"):
            code, out, err = await self._run(["sacct", "-X", *fields])
            if code == 0:
                self._accounting = "sacct"
            elif "accounting storage is disabled" in err.lower():
                self._accounting = "jobcomp"
        if self._accounting == "jobcomp":
            code, out, err = await self._run(["sacct", "-c", *fields])
        if code != 0:
            return {
                by_slurm[s]: JobStatus(JobState.UNKNOWN, reason=_last(err.encode()))
                for s in slurm_ids
            }
        seen: dict[str, JobStatus] = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) < 3 or parts[0] not in by_slurm:
                continue
            state = parts[1].split()[0] if parts[1] else ""
            seen[by_slurm[parts[0]]] = self._ended(state, parse_exit(parts[2]))
        for s in slurm_ids:
            seen.setdefault(
                by_slurm[s], JobStatus(JobState.GONE, reason="Slurm no longer knows the job")
            )
        return seen

    @staticmethod
    def _ended(state: str, exit_code: int | None) -> JobStatus:
        if state in _ACTIVE:
            return JobStatus(_ACTIVE[state])
        if state in ("COMPLETED", "FAILED"):
            return JobStatus(JobState.EXITED, exit_code=exit_code)
        if state == "TIMEOUT":
            return JobStatus(JobState.EXITED, exit_code=exit_code, reason="time limit reached")
        if state.startswith("CANCELLED"):
            return JobStatus(JobState.CANCELLED, exit_code=exit_code, reason="cancelled in Slurm")
        return JobStatus(
            JobState.FAILED,
            exit_code=exit_code,
            reason=_FAILURES.get(state, f"Slurm state {state}"),
        )

    async def logs(self, job_id: str, max_bytes: int = 65536) -> str:
        slurm_id, _, run_key = job_id.partition("@")
        run_dir = self.work_root / "runs" / run_key
        code, out, _ = await self._run(["tail", "-c", str(max_bytes), str(run_dir / "output.log")])
        if code != 0:  # before the runner started: Slurm's own output file
            code, out, _ = await self._run(
                ["tail", "-c", str(max_bytes), f"{run_dir}.slurm-{slurm_id}.out"]
            )
        if code != 0:
            return ""
        if len(out.encode()) >= max_bytes:
            out = out.split("\n", 1)[-1]
        return out

    async def cancel(self, job_id: str, force: bool = False) -> None:
        slurm_id = job_id.split("@")[0]
        args = (
            ["scancel", slurm_id] if not force else ["scancel", "--signal=KILL", "--full", slurm_id]
        )
        code, _, err = await self._run(args)
        if (
            code != 0
            and "already completing or completed" not in err
            and "Invalid job id" not in err
        ):
            raise BackendError(f"scancel failed: {_last(err.encode())}")


def _last(stderr: bytes | str) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
