"""`agora catalog …` against a real `agora up` server whose catalog reads a temporary directory."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.catalog.documents import v1, v2, write_module
from tests.cli.conftest import ADMIN_KEY, ADMIN_PASSWORD, AdminApi, Cli, Server, agora_up


@pytest.fixture(scope="module")
def catalog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("agora-catalog-cli")
    catalog_dir = root / "catalog"
    write_module(catalog_dir, "mods", v2(agora={"entry_point": "mods", "license": "MIT"}))
    write_module(catalog_dir, "image-classification", v1())
    with agora_up(
        root / "data",
        root / "logs",
        AGORA_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
        AGORA_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
        AGORA_CATALOG_DIRS=json.dumps([str(catalog_dir)]),
        AGORA_CATALOG_BUILTIN="false",
    ) as server:
        yield server, catalog_dir


@pytest.fixture
def admin_cli(catalog_server: tuple[Server, Path], tmp_path: Path) -> Cli:
    return Cli(tmp_path / "cli.toml", catalog_server[0].url, ADMIN_KEY)


def _ok(result: object) -> str:
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    return str(result.stdout)  # type: ignore[attr-defined]


def test_search_and_show(admin_cli: Cli) -> None:
    out = _ok(admin_cli("catalog", "search"))
    assert "mods" in out and "image-classification" in out
    assert "Page 1 of 1 (2 entries)." in out
    out = _ok(admin_cli("catalog", "search", "--task", "Time Series"))
    assert "mods" in out and "image-classification" not in out
    out = _ok(admin_cli("catalog", "search", "imagenet", "--json"))
    assert [m["name"] for m in json.loads(out)["items"]] == ["image-classification"]
    assert "No catalog entries match." in _ok(admin_cli("catalog", "search", "--tag", "nope"))

    out = _ok(admin_cli("catalog", "show", "mods"))
    assert "DEEP OC Massive Online Data Streams" in out
    assert "DEEPaaS entry point mods (template deepaas-model)" in out
    assert "https://github.com/deephdc/DEEP-OC-mods" in out
    assert "2000 MB memory" in out and "License" in out and "MIT" in out
    assert "References" in out  # the Markdown description, rendered
    out = _ok(admin_cli("catalog", "show", "image-classification"))
    assert "not runnable here: Only a Docker image" in out
    missing = admin_cli("catalog", "show", "nothing")
    assert missing.exit_code == 1 and "There is no catalog entry 'nothing'" in missing.stderr


def test_import_prints_problems_per_file(
    admin_cli: Cli, catalog_server: tuple[Server, Path]
) -> None:
    _, catalog_dir = catalog_server
    write_module(catalog_dir, "zz-bad", v2(links={"source_code": "nope"}, tags=None))
    try:
        result = admin_cli("catalog", "import")
        assert result.exit_code == 1
        assert "mods" in result.stdout and "unchanged" in result.stdout
        assert "failed" in result.stdout
        err = result.stderr
        name = catalog_dir.name
        assert f"{name}/zz-bad/ai4-metadata.yml: links.source_code: not a URL" in err
        assert f"{name}/zz-bad/ai4-metadata.yml: tags: required" in err
        assert "imported with problems: 0 added, 0 updated, 0 removed, 1 failed" in err
        listed = _ok(admin_cli("catalog", "import", "--list"))
        assert str(catalog_dir) in listed and "directory" in listed
    finally:
        (catalog_dir / "zz-bad" / "ai4-metadata.yml").unlink()
        (catalog_dir / "zz-bad").rmdir()
    assert "Imported 1 source: 0 added" in _ok(admin_cli("catalog", "import"))


def test_register_checks_the_file_first_then_registers(
    admin_cli: Cli, catalog_server: tuple[Server, Path], tmp_path: Path
) -> None:
    server, _ = catalog_server
    admin = AdminApi(server.url)
    admin.call("POST", "/projects", {"name": "cli-lab"})
    admin.user("carol")
    admin.call("POST", "/projects/cli-lab/members", {"username": "carol", "role": "member"})
    carol = Cli(admin_cli.config_path, admin_cli.url, admin.login("carol"))

    bad = write_module(tmp_path, "bad-module", v2(links={"source_code": "x"}, tasks=["Magic"]))
    result = carol("catalog", "register", str(bad), "--project", "cli-lab")
    assert result.exit_code == 1
    assert "bad-module/ai4-metadata.yml: links.source_code: not a URL" in result.stderr
    assert "bad-module/ai4-metadata.yml: tasks[0]:" in result.stderr
    assert "has 2 problems; nothing sent" in result.stderr

    good = write_module(tmp_path, "my-streams", v2(agora={"template": "jupyterlab"}))
    out = _ok(carol("catalog", "register", str(good), "--project", "cli-lab"))
    assert "Registered my-streams in project cli-lab (template jupyterlab)." in out
    assert "my-streams" in _ok(carol("catalog", "search", "streams"))
    admin.user("dave")
    dave = Cli(admin_cli.config_path, admin_cli.url, admin.login("dave"))
    assert dave("catalog", "show", "my-streams").exit_code == 1


def test_deploy_serves_a_deepaas_entry_and_refuses_one_that_cannot_run(admin_cli: Cli) -> None:
    out = _ok(admin_cli("catalog", "deploy", "mods", "-p", "default", "--max-replicas", "2"))
    assert "mods is served as mods in project default" in out
    assert "/m/mods" in out
    shown = json.loads(_ok(admin_cli("models", "show", "mods", "--json")))
    model = shown.get("model", shown)
    assert model["kind"] == "deepaas" and model["inputs"]["module"] == "mods"
    assert model["max_replicas"] == 2 and model["min_replicas"] == 0
    refused = admin_cli("catalog", "deploy", "image-classification", "-p", "default")
    assert refused.exit_code == 1
    assert "cannot run on this platform" in refused.output


def test_import_lists_and_fetches_repositories_with_credentials_masked(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    write_module(modules, "mods", v2())
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "mods"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=modules,
            check=True,
        )
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = f"http://agora:s3cret-pw@127.0.0.1:{port}/catalog.git"
    with agora_up(
        tmp_path / "data",
        tmp_path / "logs",
        AGORA_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
        AGORA_CATALOG_GIT=json.dumps([modules.as_uri(), secret]),
        AGORA_CATALOG_BUILTIN="false",
        http_proxy="",
    ) as server:
        cli = Cli(tmp_path / "cli.toml", server.url, ADMIN_KEY)
        listed = _ok(cli("catalog", "import", "--list"))
        assert modules.as_uri() in listed and str(tmp_path / "data" / "catalog" / "git") in listed
        assert f"http://***@127.0.0.1:{port}/catalog.git" in listed
        result = cli("catalog", "import")
        assert result.exit_code == 1
        assert "mods" in result.stdout and "unchanged" in result.stdout
        assert f"http://***@127.0.0.1:{port}/catalog.git: git clone failed: " in result.stderr
        assert "imported with problems: 0 added, 0 updated, 0 removed, 1 failed" in result.stderr
        assert "s3cret-pw" not in listed + result.output + server.stdout + server.stderr
