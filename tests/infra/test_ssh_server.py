"""The real OpenSSH server of tests/ssh_server.py: strict host keys, keys only, multiplexing,
and Slurm commands run through it against the test cluster."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm_cluster import SlurmCluster
from tests.ssh_server import SshServer, ssh_server

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the Slurm test cluster (and its jobs' sshd login) need root"
)


@pytest.fixture(scope="module")
def server(cluster: SlurmCluster) -> Iterator[SshServer]:
    # Every session gets SLURM_CONF from the server, as a login node's environment would.
    with ssh_server(env={"SLURM_CONF": cluster.env["SLURM_CONF"]}) as s:
        yield s


def test_command_over_ssh(server: SshServer) -> None:
    out = server.run(["echo", "hello world"], check=True)
    assert out.stdout == "hello world\n"
    who = server.run(["id", "-un"], check=True)
    assert who.stdout.strip() == server.user


def test_sinfo_over_ssh_sees_slurm_conf(server: SshServer, cluster: SlurmCluster) -> None:
    env = server.run(["printenv", "SLURM_CONF"], check=True)
    assert env.stdout.strip() == cluster.env["SLURM_CONF"]
    out = server.run(["sinfo", "-h", "-o", "%P"], check=True)
    assert sorted(out.stdout.split()) == ["batch", "debug*"]


def test_sbatch_over_multiplexed_ssh(
    server: SshServer, cluster: SlurmCluster, tmp_path: Path
) -> None:
    def remote(*argv: str) -> subprocess.CompletedProcess[str]:
        return server.run(list(argv), multiplex=True, check=True)

    logins_before = server.log.read_text().count("Accepted publickey")
    submitted = remote(
        "sbatch",
        "--parsable",
        "-p",
        "debug",
        "-J",
        "over-ssh",  # no space: `sacct -c` misreads names with spaces
        "-D",
        str(tmp_path),
        "-o",
        str(tmp_path / "out-%j.txt"),
        "--wrap",
        "echo \"hi from  $SLURM_JOB_NAME\"; echo 'single quotes'",  # quoting survives ssh
    )
    job = submitted.stdout.strip().split(";")[0]
    assert job.isdigit()
    assert server.control("check").returncode == 0  # the master connection is up
    deadline = time.monotonic() + 30
    while True:
        line = remote("squeue", "-h", "-t", "all", "-j", job, "-o", "%i|%T|%r|%N|%j").stdout
        if line.split("|")[1] == "COMPLETED":
            break
        assert time.monotonic() < deadline, line
        time.sleep(0.2)
    assert line.strip().split("|")[-1] == "over-ssh"
    assert (tmp_path / f"out-{job}.txt").read_text() == "hi from  over-ssh\nsingle quotes\n"
    record = remote("sacct", "-c", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", job)
    assert record.stdout.strip() == f"{job}|COMPLETED|0:0"
    # Several sessions went over the one master connection.
    assert server.log.read_text().count("Accepted publickey") == logins_before + 1
    server.close_master()
    assert server.control("check").returncode != 0


def test_slurm_conf_on_the_command_line(cluster: SlurmCluster) -> None:
    """Without the server's SetEnv, ``env SLURM_CONF=... sinfo`` on the remote command line
    works too (and plain sinfo finds no configuration)."""
    with ssh_server() as bare:
        plain = bare.run(["sinfo", "-h", "-o", "%P"])
        if not Path("/etc/slurm/slurm.conf").exists():
            assert plain.returncode != 0
        out = bare.run(
            ["env", f"SLURM_CONF={cluster.env['SLURM_CONF']}", "sinfo", "-h", "-o", "%P"]
        )
        assert out.returncode == 0, out.stderr
        assert sorted(out.stdout.split()) == ["batch", "debug*"]


def test_wrong_host_key_refused(server: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )
    wrong = tmp_path / "known_hosts"
    key = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    wrong.write_text(f"[127.0.0.1]:{server.port} {key}\n")
    out = subprocess.run(
        [*server.ssh_args(known_hosts=wrong), "true"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in out.stderr
    assert "Host key verification failed" in out.stderr

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    out = subprocess.run(
        [*server.ssh_args(known_hosts=empty), "true"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 255
    assert "Host key verification failed" in out.stderr


def test_unknown_client_key_refused(server: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "id_other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )
    args = server.ssh_args()
    args[args.index("-i") + 1] = str(other)
    out = subprocess.run([*args, "true"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 255
    assert "Permission denied (publickey)" in out.stderr


def test_remote_command_quoting_is_shell(server: SshServer) -> None:
    """sshd hands the command to the user's shell: quote argv with shlex.join."""
    argv = ["printf", "%s|", "a b", "$HOME", "it's"]
    out = server.run(argv, check=True)
    assert out.stdout == "a b|$HOME|it's|"
    unquoted = subprocess.run(
        [*server.ssh_args(), *argv], capture_output=True, text=True, timeout=30
    )
    assert unquoted.stdout != out.stdout  # ssh joins words with spaces, the shell re-splits
    assert shlex.join(argv) == "printf '%s|' 'a b' '$HOME' 'it'\"'\"'s'"
