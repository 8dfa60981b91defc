"""The client's configuration: which Agora to talk to and the token to send.

Read from ``$AGORA_CLI_CONFIG`` or ``${XDG_CONFIG_HOME:-~/.config}/agora/cli.toml`` (TOML, mode
0600 in a 0700 directory). ``AGORA_URL`` and ``AGORA_TOKEN`` (an API key) override the file, for
scripts and CI. This module is the only place the CLI reads its environment.

A stored token is only sent to the server it was issued by: when ``AGORA_URL`` points elsewhere,
the stored token is left out. A file that other users can read is not trusted with a token.
"""

from __future__ import annotations

import os
import stat
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agora.cli.console import CliError, warn

DEFAULT_URL = "http://127.0.0.1:8000"
ENV_FILE = "AGORA_CLI_CONFIG"
ENV_URL = "AGORA_URL"
ENV_TOKEN = "AGORA_TOKEN"  # noqa: S105 - a variable name, not a secret
ENV_DEBUG = "AGORA_CLI_DEBUG"
ENV_TIMEOUT = "AGORA_CLI_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
_KEYS = ("url", "username", "token")


@dataclass(frozen=True)
class ClientConfig:
    path: Path
    url: str
    url_source: str
    token: str | None
    token_source: str | None
    username: str | None
    #: What the file holds, whatever the environment says (``agora logout`` needs it).
    stored_url: str | None
    stored_token: str | None


def config_path() -> Path:
    if explicit := os.environ.get(ENV_FILE):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "agora" / "cli.toml"


def debug_enabled() -> bool:
    return os.environ.get(ENV_DEBUG, "") not in ("", "0")


def timeout() -> float:
    """Seconds to wait for each answer (``AGORA_CLI_TIMEOUT``, default 30)."""
    raw = os.environ.get(ENV_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0
    if not 0 < seconds <= 3600:
        raise CliError(f"{ENV_TIMEOUT} must be a number of seconds between 0 and 3600, not {raw!r}")
    return seconds


def normalise_url(url: str) -> str:
    """'host:8000/' or 'https://x/api/v1' → the server's root URL, without a trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/").removesuffix("/api/v1")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"not a usable Agora URL: {url!r} (expected e.g. {DEFAULT_URL})")
    return url


def _readable_by_others(path: Path) -> bool:
    return os.name == "posix" and bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def read_file(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read the CLI configuration {path}: {exc}") from exc
    values = {k: v for k, v in data.items() if k in _KEYS and isinstance(v, str) and v}
    if "token" in values and _readable_by_others(path):
        warn(
            f"{path} can be read by other users, so its token is ignored: "
            f"run 'chmod 600 {path}' or sign in again"
        )
        del values["token"]
    return values


def load() -> ClientConfig:
    path = config_path()
    stored = read_file(path)
    stored_url = normalise_url(stored["url"]) if "url" in stored else None
    if env_url := os.environ.get(ENV_URL):
        url, url_source = normalise_url(env_url), ENV_URL
    elif stored_url:
        url, url_source = stored_url, str(path)
    else:
        url, url_source = DEFAULT_URL, "default"
    token: str | None = None
    token_source: str | None = None
    if env_token := os.environ.get(ENV_TOKEN, "").strip():
        token, token_source = env_token, ENV_TOKEN
    elif stored.get("token") and stored_url == url:
        token, token_source = stored["token"], str(path)
    return ClientConfig(
        path=path,
        url=url,
        url_source=url_source,
        token=token,
        token_source=token_source,
        username=stored.get("username"),
        stored_url=stored_url,
        stored_token=stored.get("token"),
    )


def _toml_string(value: str) -> str:
    escaped = []
    for ch in value:
        if ch in ('"', "\\"):
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\u{ord(ch):04x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


def write_file(path: Path, values: dict[str, str]) -> None:
    """Replace the file atomically; it is created 0600 and never exists with looser modes."""
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    lines = ["# Written by `agora login`; holds a sign-in token: keep it private.\n"]
    lines += [f"{k} = {_toml_string(values[k])}\n" for k in _KEYS if values.get(k)]
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".cli.", suffix=".toml")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.writelines(lines)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if os.name == "posix":
            os.chmod(path, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write the CLI configuration {path}: {exc}") from exc


def store_login(url: str, username: str, token: str) -> Path:
    path = config_path()
    write_file(path, {"url": url, "username": username, "token": token})
    return path


def forget_token() -> None:
    path = config_path()
    values = read_file(path)
    values.pop("token", None)
    write_file(path, values)
