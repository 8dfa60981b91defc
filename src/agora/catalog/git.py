"""Catalog sources the operator names as git repositories: cloned under the data directory and
brought to their branch's newest commit before each import.

Only https://, http://, ssh://, scp-like ``user@host:path`` and file:// URLs are accepted; git's
``ext::`` and other transports that run commands never are. Git never prompts (no terminal, no
standard input), every command runs under a timeout, and a URL's credentials are masked wherever
it is shown. Credentials of an http(s) URL never reach git's command line (where every user of the
host could read them in the process list) nor the checkout's ``.git/config``: git gets the URL
without them and asks a credential helper, scoped to that scheme, host and port, which answers
from its environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

_SCHEMES = ("https", "http", "ssh", "file")
_SCHEME_URL = re.compile(r"^(?P<scheme>[a-z]+)://(?:(?P<userinfo>[^/]*)@)?(?P<rest>.*)$")
#: ``[user@]host:path`` as git reads it; a path starting with ":" would be ``transport::…``.
_SCP_URL = re.compile(r"^(?P<user>[A-Za-z0-9._~+-]+)@(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):[^:]")
_BRANCH = re.compile(r"^(?!.*\.\.)(?!.*//)[A-Za-z0-9_][A-Za-z0-9._/+-]*(?<![/.])$")
#: Userinfo of a URL inside a message from git.
_USERINFO_IN_TEXT = re.compile(r"\b([a-z]+)://([^/\s@']*)@")
#: Answers git's ``get`` with the user name and password in its environment, nothing else.
_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'printf \'username=%s\\npassword=%s\\n\' "$AGORA_GIT_USERNAME" "$AGORA_GIT_PASSWORD"; }; f'
)
#: A clone folder left by a process that died this long ago is removed by :func:`prune`.
_STALE_PARTIAL_SECONDS = 24 * 3600


class GitFailure(Exception):
    """A git command failed or ran out of time; the checkout is as it was before."""


class SubmoduleFailure(GitFailure):
    """The checkout is at the newest commit but some of its submodules could not be fetched."""


@dataclass(frozen=True)
class Remote:
    """A repository as configured: ``URL`` or ``URL#branch`` (no branch: the remote's HEAD)."""

    #: As configured, credentials included: never show it, show ``shown``.
    url: str = field(repr=False)
    branch: str | None = None

    @classmethod
    def parse(cls, value: str) -> Remote:
        """The repository ``value`` names, or ValueError saying what is accepted."""
        url, hash_, branch = value.strip().partition("#")
        shown = masked(url)
        if _protocol(url) is None:
            raise ValueError(
                f"{shown!r} is not a git URL Agora accepts: use https://, http://, ssh://, "
                "user@host:path or file:// (transports such as ext:: run commands and are refused)"
            )
        if any(c.isspace() or not c.isprintable() for c in url):
            raise ValueError(f"{shown!r}: a git URL has no spaces (write them as %20)")
        if hash_ and not _BRANCH.match(branch):
            raise ValueError(f"{shown!r}: {branch!r} is not a branch name")
        remote = cls(url, branch or None)
        credentials = remote.credentials
        if credentials and any(not c.isprintable() for c in "".join(credentials)):
            raise ValueError(f"{shown!r}: the user name or password has control characters")
        return remote

    @property
    def fetch_url(self) -> str:
        """The URL git is given: an http(s) URL without its credentials (see ``credentials``)."""
        return _without_userinfo(self.url) if self.credentials is not None else self.url

    @property
    def credentials(self) -> tuple[str, str] | None:
        """User name and password (percent-decoded) of an http(s) URL that has them."""
        found = _SCHEME_URL.match(self.url)
        if found is None or found["scheme"] not in ("http", "https") or not found["userinfo"]:
            return None
        user, _, password = found["userinfo"].partition(":")
        return unquote(user), unquote(password)

    @property
    def credential_scope(self) -> str:
        """``scheme://host[:port]``: the URLs git may send the credentials to."""
        parts = urlsplit(self.fetch_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def masked_url(self) -> str:
        return masked(self.url)

    @property
    def shown(self) -> str:
        """The URL for people and logs: its credentials masked, its branch after a ``#``."""
        return self.masked_url + (f"#{self.branch}" if self.branch else "")

    @property
    def name(self) -> str:
        """The repository's name (``…/modules-catalog.git`` → ``modules-catalog``)."""
        base = re.sub(r"\.git$", "", re.split(r"[/:]", self.url.rstrip("/"))[-1])
        return re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._")[:48] or "repository"

    @property
    def checkout_name(self) -> str:
        """A folder name for the checkout: the repository's name and a digest of URL and branch
        (credentials left out, so new ones keep the checkout)."""
        key = f"{_without_userinfo(self.url)}#{self.branch or ''}"
        return f"{self.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def masked(url: str) -> str:
    """``url`` with its credentials replaced by ``***`` (an http(s) user name may be a token)."""
    found = _SCHEME_URL.match(url)
    if found is None:  # scp-like: a user name, and a password only in a URL refused anyway
        userinfo, at, rest = url.rpartition("@")
        return f"{_masked_userinfo('', userinfo)}@{rest}" if at else url
    if found["userinfo"] is None:
        return url
    scheme = found["scheme"]
    return f"{scheme}://{_masked_userinfo(scheme, found['userinfo'])}@{found['rest']}"


def _masked_userinfo(scheme: str, userinfo: str) -> str:
    if scheme in ("http", "https"):
        return "***"
    user, colon, _ = userinfo.partition(":")
    return user + (":***" if colon else "")


def _without_userinfo(url: str) -> str:
    found = _SCHEME_URL.match(url)
    return f"{found['scheme']}://{found['rest']}" if found else url


def _protocol(url: str) -> str | None:
    """The protocol git will use for ``url`` (as GIT_ALLOW_PROTOCOL names it), if accepted."""
    found = _SCHEME_URL.match(url)
    if found is None:
        return "ssh" if _SCP_URL.match(url) else None
    scheme = found["scheme"]
    if scheme not in _SCHEMES:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # e.g. an unclosed [IPv6 address
        return None
    if scheme == "file":
        return "file" if parts.path.startswith("/") else None
    return scheme if host and not host.startswith("-") else None


def update(remote: Remote, path: Path, timeout: float) -> None:
    """Clone ``remote`` into ``path`` (shallow, submodules too), or bring the checkout there to
    the branch's newest commit. GitFailure: nothing changed; SubmoduleFailure: at the newest
    commit, some submodules missing."""

    def git(*args: str) -> None:
        _run(remote, timeout, path, *args)

    if (path / ".git").exists():
        # Also takes credentials out of a checkout an older Agora made with them in the URL.
        git("remote", "set-url", "origin", remote.fetch_url)
        git("fetch", "--quiet", "--depth", "1", "origin", remote.branch or "HEAD")
        git("reset", "--quiet", "--hard", "FETCH_HEAD")
        # -ff: also submodules the new commit dropped, so their modules leave the catalog.
        git("clean", "-ffdxq")
    else:
        _clone(remote, path, timeout)
    try:
        # As `clone --recurse-submodules --shallow-submodules`, and repeatable on a checkout.
        git("submodule", "--quiet", "sync", "--recursive")
        git("submodule", "--quiet", "update", "--init", "--recursive", "--depth", "1", "--force")
    except GitFailure as exc:
        raise SubmoduleFailure(str(exc)) from exc


def _clone(remote: Remote, path: Path, timeout: float) -> None:
    """Clone into a fresh folder beside ``path`` and move it there: a failed clone leaves no
    half checkout, and a concurrent one that finished first wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        branch = ["--branch", remote.branch] if remote.branch else []
        _run(
            remote,
            timeout,
            None,
            "clone",
            "--quiet",
            "--depth",
            "1",
            *branch,
            "--",
            remote.fetch_url,
            str(partial),
        )
        if path.exists() and not (path / ".git").exists():
            shutil.rmtree(path)  # left by an interrupted clone of an older Agora, or by hand
        try:
            partial.rename(path)
        except OSError:
            if not (path / ".git").exists():
                raise
    except OSError as exc:
        raise GitFailure(f"cannot write the checkout {path}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def prune(checkouts: Path, keep: set[str]) -> list[str]:
    """Remove the checkouts in ``checkouts`` whose repository is no longer configured (their
    names not in ``keep``), and clone folders left by a process that died a day ago or more;
    returns the names removed."""
    removed: list[str] = []
    try:
        entries = list(checkouts.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if entry.name in keep or not entry.is_dir() or entry.is_symlink():
            continue
        if entry.name.startswith("."):  # a clone in progress, or an interrupted one
            try:
                if time.time() - entry.stat().st_mtime < _STALE_PARTIAL_SECONDS:
                    continue
            except OSError:
                continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed


def _run(remote: Remote, timeout: float, cwd: Path | None, *args: str) -> None:
    git = shutil.which("git")
    if git is None:
        raise GitFailure("git is not installed on this server (catalog_git needs it)")
    protocols = "https:http:ssh" + (":file" if _protocol(remote.url) == "file" else "")
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        # Also for submodules: only these transports, never ext:: or fd::; file:// only when
        # the operator named a local repository, so a remote catalog cannot read this host's.
        "GIT_ALLOW_PROTOCOL": protocols,
        "SSH_ASKPASS_REQUIRE": "never",
        "LC_ALL": "C",
    }
    credentials = remote.credentials
    if credentials is not None:
        # No other helper is asked (an empty value resets the list), and ours only for this
        # scheme, host and port: a submodule elsewhere never gets these credentials.
        env.update(
            GIT_CONFIG_COUNT="2",
            GIT_CONFIG_KEY_0="credential.helper",
            GIT_CONFIG_VALUE_0="",
            GIT_CONFIG_KEY_1=f"credential.{remote.credential_scope}.helper",
            GIT_CONFIG_VALUE_1=_HELPER,
            AGORA_GIT_USERNAME=credentials[0],
            AGORA_GIT_PASSWORD=credentials[1],
        )
    command = [git, "-c", "protocol.ext.allow=never", *args]
    try:
        err, returncode = _communicate(command, cwd, env, timeout)
    except subprocess.TimeoutExpired:
        raise GitFailure(
            f"git {args[0]} did not finish within {timeout:g} s: is the host reachable? "
            "(AGORA_CATALOG_GIT_TIMEOUT sets the limit)"
        ) from None
    except OSError as exc:
        raise GitFailure(f"git {args[0]} could not run: {exc.strerror or exc}") from exc
    if returncode != 0:
        raise GitFailure(f"git {args[0]} failed: {_reason(err, remote)}")


def _communicate(
    command: list[str], cwd: Path | None, env: dict[str, str], timeout: float
) -> tuple[str, int]:
    """Standard error and exit status of ``command``, killed with its children on timeout."""
    # A session of its own: no terminal for ssh to prompt on, and one process group to kill
    # (git's helpers would otherwise keep the pipes open after git itself is gone).
    with subprocess.Popen(  # noqa: S603 - an argument list, no shell
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    ) as process:
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return err, process.returncode


def _reason(stderr: str, remote: Remote) -> str:
    """git's own words (its fatal and error lines), credentials masked."""
    text = stderr.replace(remote.url, masked(remote.url))
    text = _USERINFO_IN_TEXT.sub(lambda m: f"{m[1]}://{_masked_userinfo(m[1], m[2])}@", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = [
        line.split(":", 1)[1].strip().rstrip(".")
        for line in lines
        if line.startswith(("fatal:", "error:"))
    ]
    return ("; ".join(dict.fromkeys(said or lines[-1:])) or "no message")[:500]
