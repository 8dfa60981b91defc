"""Repositories the operator names (AGORA_CATALOG_GIT): cloned, fetched before each import and
read like directories. Real git against bare repositories in the test's folder (file://)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError

from agora.app import create_app
from agora.bootstrap import bootstrap
from agora.catalog import git
from agora.migrations import upgrade
from agora.runtime import Runtime
from agora.settings import Settings
from tests.catalog.documents import run_git
from tests.catalog.git_http import git_http_server
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import Api

IRIS = Path(__file__).resolve().parents[2] / "src/agora/examples/iris/ai4-metadata.yml"
Start = Callable[..., Api]


def _module(work: Path, name: str, title: str | None = None) -> None:
    """The iris example's metadata in ``work/name`` (``name`` "." for a module's own repo)."""
    document = yaml.safe_load(IRIS.read_text(encoding="utf-8"))
    document["title"] = title or document["title"]
    (work / name).mkdir(parents=True, exist_ok=True)
    (work / name / IRIS.name).write_text(yaml.safe_dump(document), encoding="utf-8")


def _push(work: Path, message: str) -> str:
    run_git(work, "add", "-A")
    run_git(work, "commit", "-q", "-m", message)
    run_git(work, "push", "-q", "origin", "HEAD")
    return run_git(work, "rev-parse", "HEAD")


def _repository(root: Path, name: str) -> tuple[str, Path]:
    """A bare repository ``root/name.git`` (its file:// URL) and a work tree that pushes to it."""
    root.mkdir(parents=True, exist_ok=True)
    bare = root / f"{name}.git"
    run_git(root, "init", "-q", "--bare", "--initial-branch=main", str(bare))
    work = root / name
    run_git(root, "clone", "-q", str(bare), str(work))
    return bare.as_uri(), work


@pytest.fixture
def start(tmp_path: Path, database_url: str) -> Iterator[Start]:
    """Starts Agora with these repositories as its catalog (the start imports them)."""
    with contextlib.ExitStack() as stack:

        def started(*urls: str, **settings: Any) -> Api:
            values = {"catalog_git": list(urls), "catalog_builtin": False, **settings}
            runtime = Runtime.create(make_settings(tmp_path, database_url, **values))
            upgrade(runtime.db)
            stack.callback(runtime.db.dispose)
            app = create_app(runtime=runtime)
            bootstrap(runtime)
            return Api(stack.enter_context(TestClient(app)), ADMIN_KEY)

        yield started


def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's http:// URLs are this host's own ports, not for a proxy."""
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)


def _import(api: Api) -> dict[str, Any]:
    r = api.post("/catalog/import")
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()
    return report


def test_first_import_clones_and_the_next_picks_up_a_pushed_commit(
    start: Start, tmp_path: Path
) -> None:
    url, work = _repository(tmp_path / "remote", "modules")
    _module(work, "iris-one")
    _module(work, "iris-two")
    first = _push(work, "two modules")

    api = start(url)
    one = api.get("/catalog/iris-one").json()
    assert (one["source"], one["commit"]) == ("git", first)
    assert api.get("/catalog/iris-two").status_code == 200
    (source,) = api.get("/catalog/sources").json()
    checkout = tmp_path / "data" / "catalog" / "git"
    assert source["source"] == source["url"] == url
    assert (source["kind"], source["branch"], source["commit"]) == ("git", None, first)
    assert Path(source["path"]).parent == checkout

    _module(work, "iris-one", title="Iris, renamed")
    second = _push(work, "renamed")
    report = _import(api)
    assert (report["updated"], report["unchanged"], report["failed"]) == (2, 0, 0)
    one = api.get("/catalog/iris-one").json()
    assert (one["title"], one["commit"]) == ("Iris, renamed", second)
    assert api.get("/catalog/sources").json()[0]["commit"] == second
    assert _import(api)["unchanged"] == 2


def test_a_branch_after_the_url_is_followed(start: Start, tmp_path: Path) -> None:
    url, work = _repository(tmp_path / "remote", "iris")
    _module(work, ".", title="On main")
    _push(work, "main")
    run_git(work, "switch", "-q", "-c", "dev")
    _module(work, ".", title="On dev")
    dev = _push(work, "dev")

    api = start(f"{url}#dev")
    entry = api.get("/catalog/iris").json()  # a module's own repository: named after it
    assert (entry["title"], entry["commit"]) == ("On dev", dev)
    assert api.get("/catalog/sources").json()[0]["branch"] == "dev"


def _catalog_of_submodules(remote: Path, *names: str) -> tuple[str, Path, dict[str, Any]]:
    """A catalog repository whose modules are submodules (each a module's own repository)."""
    modules = {}
    for name in names:
        module_url, module_work = _repository(remote, name)
        _module(module_work, ".")
        modules[name] = (module_url, module_work, _push(module_work, name))
    url, work = _repository(remote, "modules-catalog")
    for name, (module_url, _, _) in modules.items():
        # Git refuses file:// submodules unless told (CVE-2022-39253); only this test's own
        # git, building the catalog, is told. Agora allows file:// only for a file:// source.
        run_git(
            work, "-c", "protocol.file.allow=always", "submodule", "add", "-q", module_url, name
        )
    _push(work, "modules as submodules")
    return url, work, modules


def test_a_catalog_of_submodules_imports_every_module(start: Start, tmp_path: Path) -> None:
    url, work, modules = _catalog_of_submodules(tmp_path / "remote", "iris-one", "iris-two")
    api = start(url)
    for name, (_, _, commit) in modules.items():
        assert api.get(f"/catalog/{name}").json()["commit"] == commit

    # A module's new commit, recorded in the catalog; another module leaves it.
    _, one_work, _ = modules["iris-one"]
    _module(one_work, ".", title="Iris one, renamed")
    newer = _push(one_work, "renamed")
    run_git(work / "iris-one", "pull", "-q", "origin", "main")
    run_git(work, "rm", "-q", "iris-two")
    _push(work, "newer iris-one, no iris-two")
    report = _import(api)
    assert (report["updated"], report["removed"], report["failed"]) == (1, 1, 0), report
    one = api.get("/catalog/iris-one").json()
    assert (one["title"], one["commit"]) == ("Iris one, renamed", newer)
    assert api.get("/catalog/iris-two").status_code == 404


def test_a_failing_repository_is_a_problem_and_keeps_its_entries(
    start: Start, tmp_path: Path
) -> None:
    url, work = _repository(tmp_path / "remote", "modules")
    _module(work, "iris-one")
    first = _push(work, "one module")
    missing = (tmp_path / "remote" / "nothing.git").as_uri()

    api = start(missing, url)
    report = _import(api)
    assert (report["unchanged"], report["failed"]) == (1, 1)
    (failed,) = [f for f in report["files"] if f["status"] == "failed"]
    assert failed["source"] == failed["file"] == missing
    message = failed["problems"][0]["message"]
    assert message.startswith("git clone failed: ") and "does not appear to be a git" in message
    assert message.endswith(
        "check the URL, the branch and that this server may read the repository"
    )

    # The repository moves away: its entries stay as last read.
    (tmp_path / "remote" / "modules.git").rename(tmp_path / "moved.git")
    report = _import(api)
    failed = [f for f in report["files"] if f["source"] == url]
    assert [f["status"] for f in failed] == ["failed"]
    message = failed[0]["problems"][0]["message"]
    assert message.startswith("git fetch failed: ")
    assert message.endswith(f"the entries read at commit {first[:12]} are kept")
    assert report["removed"] == 0
    assert api.get("/catalog/iris-one").json()["commit"] == first

    (tmp_path / "moved.git").rename(tmp_path / "remote" / "modules.git")
    assert _import(api)["unchanged"] == 1


def test_a_submodule_that_cannot_be_fetched_is_a_problem_and_removes_nothing(
    start: Start, tmp_path: Path
) -> None:
    url, _, _ = _catalog_of_submodules(tmp_path / "remote", "iris-one", "iris-two")
    api = start(url)
    (source,) = api.get("/catalog/sources").json()
    # Its repository is gone, and so is its checkout: the next update must clone it again.
    (tmp_path / "remote" / "iris-two.git").rename(tmp_path / "gone.git")
    checkout = Path(source["path"])
    shutil.rmtree(checkout / "iris-two")
    shutil.rmtree(checkout / ".git" / "modules" / "iris-two")

    report = _import(api)
    assert (report["unchanged"], report["failed"], report["removed"]) == (1, 1, 0), report
    (failed,) = [f for f in report["files"] if f["status"] == "failed"]
    message = failed["problems"][0]["message"]
    assert message.startswith("git submodule failed: ") and "iris-two" in message
    assert message.endswith("modules of the missing submodules keep their entries")
    assert api.get("/catalog/iris-two").status_code == 200


def test_credentials_in_a_url_are_never_shown(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_proxy(monkeypatch)
    with socket.socket() as probe:  # a port nothing listens on: refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://agora:s3cret-pw@127.0.0.1:{port}/modules.git"
    caplog.set_level(logging.INFO)

    api = start(url)
    report = api.post("/catalog/import").text
    sources = api.get("/catalog/sources").text
    audit = api.get("/audit", params={"action": "catalog.import"}).text
    shown = f"http://***@127.0.0.1:{port}/modules.git"
    assert shown in report and shown in sources and shown in audit
    assert "Failed to connect" in report
    for text in (report, sources, audit, caplog.text):
        assert "s3cret-pw" not in text
    assert shown in caplog.text  # the start logged the problem


@pytest.mark.parametrize(
    "url",
    ["ext::sh -c touch% {marker}", "ext::sh", "fd::3", "git://example.org/x", "/srv/modules"],
)
def test_other_transports_are_refused_by_the_settings(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    monkeypatch.setenv("AGORA_CATALOG_GIT", json.dumps([url.format(marker=marker)]))
    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=tmp_path)
    (error,) = refused.value.errors()
    assert error["loc"] == ("catalog_git",)
    assert "is not a git URL Agora accepts: use https://, http://, ssh://" in error["msg"]
    assert not marker.exists()


def test_a_branch_must_be_a_branch_name(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="'--upload-pack=x' is not a branch name"):
        Settings(data_dir=tmp_path, catalog_git=["https://example.org/x.git#--upload-pack=x"])


def test_masked_hides_passwords_and_http_tokens() -> None:
    assert git.masked("https://ghp_token@github.com/a/b") == "https://***@github.com/a/b"
    assert git.masked("https://u:p@github.com/a/b") == "https://***@github.com/a/b"
    assert git.masked("ssh://git:pw@example.org/a") == "ssh://git:***@example.org/a"
    assert git.masked("ssh://git@example.org/a") == "ssh://git@example.org/a"
    assert git.masked("git@github.com:a/b.git") == "git@github.com:a/b.git"
    with pytest.raises(ValueError, match=r"^'git:\*\*\*@host:a/b' is not a git URL"):
        git.Remote.parse("git:pw@host:a/b")


def test_a_git_command_that_hangs_is_stopped_at_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_proxy(monkeypatch)
    with socket.socket() as server:  # accepts connections, never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        remote = git.Remote.parse(f"http://127.0.0.1:{port}/modules.git")
        began = time.monotonic()
        with pytest.raises(git.GitFailure, match=r"git clone did not finish within 0.5 s"):
            git.update(remote, tmp_path / "checkout", timeout=0.5)
    assert time.monotonic() - began < 5
    assert not (tmp_path / "checkout").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no half clone left


def test_credentials_go_to_git_through_a_helper_never_its_command_line(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password-protected repository over real smart HTTP: cloned and fetched with the URL's
    credentials, which never appear in a command line nor in the checkout's config."""
    _no_proxy(monkeypatch)
    url, work = _repository(tmp_path / "remote", "modules")
    _module(work, "iris")
    _push(work, "iris")
    with git_http_server(tmp_path / "remote", user="agora", password="s3cret/pw") as server:
        # "/" percent-encoded, as it must be in a URL; git gets it decoded.
        source = f"http://agora:s3cret%2Fpw@127.0.0.1:{server.port}/modules.git"
        api = start(source)
        assert api.get("/catalog/iris").status_code == 200
        assert ("agora", "s3cret/pw") in server.seen
        (checkout,) = (tmp_path / "data/catalog/git").iterdir()
        config = (checkout / ".git/config").read_text()
        assert f"url = http://127.0.0.1:{server.port}/modules.git" in config
        assert "s3cret" not in config

        # A checkout an older Agora made with the credentials in its config loses them.
        run_git(checkout, "remote", "set-url", "origin", source.replace("%2F", "/"))
        _module(work, "iris", title="Iris, fetched")
        _push(work, "fetched")
        report = _import(api)
        assert report["updated"] == 1, report
        assert api.get("/catalog/iris").json()["title"] == "Iris, fetched"
        assert "s3cret" not in (checkout / ".git/config").read_text()
        assert server.in_process_list == []

        # Without the password: git's own refusal, and no prompt.
        wrong = git.Remote.parse(f"http://agora:wrong@127.0.0.1:{server.port}/modules.git")
        with pytest.raises(git.GitFailure, match="Authentication failed"):
            git.update(wrong, tmp_path / "other", timeout=30)


def test_a_submodule_on_another_host_never_gets_the_credentials(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_proxy(monkeypatch)
    with (
        git_http_server(tmp_path / "elsewhere") as elsewhere,
        git_http_server(tmp_path / "remote", user="agora", password="s3cret") as server,
    ):
        _, module_work = _repository(tmp_path / "elsewhere", "iris-one")
        _module(module_work, ".")
        commit = _push(module_work, "iris-one")
        _, work = _repository(tmp_path / "remote", "modules-catalog")
        module_url = f"http://127.0.0.1:{elsewhere.port}/iris-one.git"
        run_git(work, "submodule", "add", "-q", module_url, "iris-one")
        _push(work, "a module elsewhere")
        api = start(f"http://agora:s3cret@127.0.0.1:{server.port}/modules-catalog.git")
        assert api.get("/catalog/iris-one").json()["commit"] == commit
    assert ("agora", "s3cret") in server.seen
    assert elsewhere.seen and set(elsewhere.seen) == {None}


def test_credentials_with_control_characters_are_refused() -> None:
    with pytest.raises(ValueError, match="the user name or password has control characters"):
        git.Remote.parse("https://agora:pw%0Aprotocol=file@example.org/x.git")


def test_checkouts_of_repositories_no_longer_configured_are_removed(
    start: Start, tmp_path: Path
) -> None:
    one, work_one = _repository(tmp_path / "remote", "one")
    two, work_two = _repository(tmp_path / "remote", "two")
    _module(work_one, "iris-one")
    _push(work_one, "one")
    _module(work_two, "iris-two")
    _push(work_two, "two")
    checkouts = tmp_path / "data/catalog/git"
    start(one, two)
    assert sorted(p.name.split("-")[0] for p in checkouts.iterdir()) == ["one", "two"]
    api = start(one)
    assert [p.name.split("-")[0] for p in checkouts.iterdir()] == ["one"]
    assert api.get("/catalog/iris-two").status_code == 404
