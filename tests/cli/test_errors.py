"""Every failure is one red line on stderr with exit code 1 (2 for usage), never a traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cli.conftest import ADMIN_KEY, Cli, one_line_error
from tests.servers import free_port


@pytest.fixture
def nowhere(tmp_path: Path) -> Cli:
    """The CLI pointed at a port where nothing listens."""
    return Cli(tmp_path / "cli.toml", f"http://127.0.0.1:{free_port()}", ADMIN_KEY)


class _HtmlPage(BaseHTTPRequestHandler):
    """Stands in for a web server that is not Agora (a proxy's error page, another app)."""

    def do_GET(self) -> None:
        status = 502 if "projects" in self.path else 200
        body = b"<html><body>Bad gateway</body></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def not_agora() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_connection_refused_is_one_line(nowhere: Cli) -> None:
    line = one_line_error(nowhere("projects", "list"))
    assert line == f"error: cannot reach Agora at {nowhere.url}: is it running? (agora up)"


def test_login_to_nothing_is_one_line(nowhere: Cli) -> None:
    line = one_line_error(nowhere("login", "-u", "someone", input="pw\n"))
    assert "cannot reach Agora" in line


def test_a_timeout_is_one_line(silent: str, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "cli.toml", silent, ADMIN_KEY)
    line = one_line_error(cli("whoami", AGORA_CLI_TIMEOUT="0.3"))
    assert line == f"error: Agora at {silent} did not answer within 0.3 s"


def test_non_json_answers_are_one_line(not_agora: str, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "cli.toml", not_agora, ADMIN_KEY)
    error_page = one_line_error(cli("projects", "list"))
    assert "HTTP 502" in error_page and "text/html" in error_page
    success_page = one_line_error(cli("whoami"))
    assert "not JSON" in success_page and "is this an Agora server?" in success_page


def test_unknown_project_is_one_line_404(admin_cli: Cli) -> None:
    line = one_line_error(admin_cli("projects", "show", "no-such-project"))
    assert "no-such-project" in line and line.endswith("(HTTP 404)")


def test_a_bad_url_is_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "cli.toml", "ftp://example.org", ADMIN_KEY)
    assert "not a usable Agora URL" in one_line_error(cli("whoami"))


def test_usage_errors_exit_2(admin_cli: Cli) -> None:
    result = admin_cli("projects", "show")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert admin_cli("no-such-command").exit_code == 2


def test_help_lists_the_groups_and_version(admin_cli: Cli) -> None:
    result = admin_cli("--help")
    assert result.exit_code == 0
    for group in ("up", "login", "logout", "whoami", "projects", "members", "keys", "users"):
        assert group in result.stdout
    assert "audit" in result.stdout and "config" in result.stdout
    version = admin_cli("--version")
    assert version.exit_code == 0 and version.stdout.startswith("agora ")
