"""A real OpenSSH server on loopback for the tests (Debian's openssh-server).

    with ssh_server(env={"SLURM_CONF": cluster.env["SLURM_CONF"]}) as server:
        subprocess.run([*server.ssh_args(), "sinfo"], check=True)

Each server gets, in a fresh temporary directory: its own ed25519 host key, a client key pair
whose public half is the only authorized key, a known_hosts file holding the host key (so clients
check it strictly), and its pid and log files. It listens on 127.0.0.1 on a free port, accepts
public keys only, for the current user (root in CI), and never touches ~/.ssh or /etc/ssh.

``env`` is set in every session by the server (sshd_config ``SetEnv``), the way a login node's
environment provides what its users' commands need: the client sends nothing, so the code under
test runs the same commands it would run against a real login node.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port, wait_for_port

SSHD = "/usr/sbin/sshd"


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path  # private key; the public one is client_key + ".pub"
    known_hosts: Path  # "[127.0.0.1]:PORT ssh-ed25519 AAAA..." only
    host_public_key: str  # "ssh-ed25519 AAAA..."
    directory: Path
    log: Path

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    @property
    def control_path(self) -> str:
        """A ControlPath for multiplexing, short enough for a unix socket (%C: a hash)."""
        return str(self.directory / "cm-%C")

    def ssh_options(
        self, *, multiplex: bool = False, known_hosts: os.PathLike[str] | str | None = None
    ) -> list[str]:
        """Options for ssh(1), without the destination: strict host key checking, key only.
        ``known_hosts`` replaces the server's file (to test a wrong or missing host key)."""
        opts = [
            "-F",
            "/dev/null",  # ignore ~/.ssh/config
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-i",
            str(self.client_key),
            "-p",
            str(self.port),
        ]
        if multiplex:
            opts += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={self.control_path}",
                "-o",
                "ControlPersist=60",
            ]
        return opts

    def ssh_args(
        self, *, multiplex: bool = False, known_hosts: os.PathLike[str] | str | None = None
    ) -> list[str]:
        """``ssh ... user@127.0.0.1``: append the remote command (one shell-quoted string is
        safest, e.g. ``shlex.join(argv)``: sshd runs it through the user's shell)."""
        opts = self.ssh_options(multiplex=multiplex, known_hosts=known_hosts)
        return ["ssh", *opts, self.destination]

    def run(
        self,
        argv: Sequence[str],
        *,
        multiplex: bool = False,
        check: bool = False,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv on the server (quoted with shlex.join); captures text output."""
        return subprocess.run(
            [*self.ssh_args(multiplex=multiplex), shlex.join(argv)],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def control(self, command: str) -> subprocess.CompletedProcess[str]:
        """``ssh -O check|exit|stop`` on the multiplexing master."""
        return subprocess.run(
            ["ssh", *self.ssh_options(multiplex=True), "-O", command, self.destination],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def close_master(self) -> None:
        """End the multiplexing master connection, if any (``ssh -O exit``)."""
        subprocess.run(
            ["ssh", *self.ssh_options(multiplex=True), "-O", "exit", self.destination],
            capture_output=True,
            timeout=10,
            check=False,
        )


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def ssh_server(env: Mapping[str, str] | None = None) -> Iterator[SshServer]:
    """Start sshd on 127.0.0.1:<free port> for the current user; yields an SshServer."""
    if not os.path.exists(SSHD):
        raise RuntimeError(
            f"{SSHD} is missing: install Debian's openssh-server package "
            "(apt-get install --no-install-recommends openssh-server)"
        )
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        raise RuntimeError("ssh and ssh-keygen are missing: apt-get install openssh-client")
    user = getpass.getuser()
    # Under /tmp (not a long $TMPDIR) so that ControlPath sockets stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="agora-ssh-", dir="/tmp"))
    host_key = directory / "ssh_host_ed25519_key"
    client_key = directory / "id_ed25519"
    _keygen(host_key, "agora-test-host")
    _keygen(client_key, "agora-test-client")
    authorized = directory / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o600)
    host_public_key = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    port = free_port()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public_key}\n")
    log = directory / "sshd.log"
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {user}",
        "StrictModes no",
        "UsePAM no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "MaxSessions 64",  # multiplexed sessions over one ControlMaster connection
        "MaxStartups 64:30:128",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
    ]
    if env:
        for key, value in env.items():
            if any(c.isspace() or c == '"' for c in value):
                raise ValueError(f"SetEnv value with spaces or quotes is not supported: {key}")
        lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()))
    config = directory / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    if os.geteuid() == 0:
        # sshd's privilege separation directory (Debian's init script makes it at boot).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"sshd rejected its configuration: {check.stderr}")
    proc = subprocess.Popen(
        [SSHD, "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = SshServer(
        host="127.0.0.1",
        port=port,
        user=user,
        client_key=client_key,
        known_hosts=known_hosts,
        host_public_key=host_public_key,
        directory=directory,
        log=log,
    )
    try:
        try:
            wait_for_port("127.0.0.1", port, timeout=15)
        except TimeoutError:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"sshd did not start (exit {proc.poll()}):\n{text}") from None
        yield server
    finally:
        server.close_master()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
