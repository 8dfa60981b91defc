"""`agora models`, `agora limits` and `agora usage` against a real server."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from agora.cli import models as cli_models
from tests.cli.conftest import AdminApi, Cli, one_line_error

UPSTREAM = "http://127.0.0.1:9/v1"  # never called: registering a model contacts nothing
SECRET = "sk-upstream-secret-value-1234567890"


def _project(admin_api: AdminApi, name: str) -> str:
    admin_api.call("POST", "/projects", {"name": name})
    return name


def _ok(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def _row(stdout: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{stdout}")


def _field(stdout: str, name: str) -> str:
    found = re.search(rf"^{re.escape(name)}\s{{2,}}(.*)$", stdout, re.MULTILINE)
    assert found, f"no field {name!r} in:\n{stdout}"
    return found.group(1).strip()


def test_external_model_lifecycle(admin_cli: Cli, admin_api: AdminApi, unique: str) -> None:
    name = f"ext-{unique}"
    added = admin_cli(
        "models",
        "add",
        name,
        "--external-url",
        UPSTREAM,
        "--external-key-env",
        "UPSTREAM_KEY",
        "--upstream-model",
        "gpt-x",
        "--queue-timeout",
        "12.5",
        UPSTREAM_KEY=SECRET,
    )
    out = _ok(added)
    assert f"Added model {name} (llm, external)." in out
    assert SECRET not in added.output
    assert _field(out, "Has external key") == "yes"
    assert f"agora models grant {name} PROJECT" in out

    listed = _ok(admin_cli("models", "list"))
    assert _row(listed, name) == [name, "llm", "external", "no", "yes", "-", UPSTREAM]
    rows = json.loads(_ok(admin_cli("models", "list", "--json")))
    assert next(m for m in rows if m["name"] == name)["has_external_key"] is True

    shown = admin_cli("models", "show", name)
    out = _ok(shown)
    assert SECRET not in shown.output
    assert _field(out, "External URL") == UPSTREAM
    assert _field(out, "Has external key") == "yes"
    assert _field(out, "Upstream model") == "gpt-x"
    assert _field(out, "Granted to") == "none"
    assert "queue 12.5 s" in _field(out, "Timeouts")
    assert _field(out, "Load") == "0 in flight, 0 queued"
    data = json.loads(_ok(admin_cli("models", "show", name, "--json")))
    assert SECRET not in json.dumps(data)
    assert data["model"]["has_external_key"] is True and "external_key" not in data["model"]
    assert data["inflight"] == 0 and data["replicas"] == []

    changed = json.loads(
        _ok(
            admin_cli(
                "models", "set", name, "--max-replicas", "3", "--min-replicas", "1",
                "--target-inflight", "8", "--idle-seconds", "30", "--disabled", "--json",
            )
        )
    )  # fmt: skip
    assert changed["max_replicas"] == 3 and changed["min_replicas"] == 1
    assert changed["target_inflight"] == 8 and changed["idle_seconds"] == 30
    assert changed["enabled"] is False
    assert changed["queue_timeout"] == 12.5 and changed["upstream_model"] == "gpt-x"  # untouched
    assert changed["has_external_key"] is True
    nothing = admin_cli("models", "set", name)
    assert nothing.exit_code == 2 and "nothing to change" in nothing.stderr

    project = _project(admin_api, unique)
    other = _project(admin_api, unique + "-b")
    granted = _ok(admin_cli("models", "grant", name, project, other))
    assert f"{name} is granted to: {project}, {other}." in granted
    replaced = json.loads(_ok(admin_cli("models", "grant", name, other, "--json")))
    assert replaced == {"projects": [other]}  # the given list replaces the old one
    assert admin_api.call("GET", f"/models/{name}/projects") == {"projects": [other]}
    assert _field(_ok(admin_cli("models", "show", name)), "Granted to") == other
    assert "no project" in _ok(admin_cli("models", "grant", name, "--none"))
    neither = admin_cli("models", "grant", name)
    assert neither.exit_code == 2 and "--none" in neither.stderr

    refused = admin_cli("models", "rm", name, input="n\n")
    assert refused.exit_code == 1
    assert admin_api.call("GET", f"/models/{name}")["model"]["name"] == name
    removed = admin_cli("models", "rm", name, "--yes")
    assert f"Removed model {name}." in _ok(removed)
    line = one_line_error(admin_cli("models", "show", name))
    assert line == f"error: There is no model '{name}' (HTTP 404)"


def test_deployment_model_inputs_go_to_the_template(
    admin_cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    project = _project(admin_api, unique)
    name = f"dep-{unique}"
    added = admin_cli(
        "models", "add", name, "--kind", "embedding", "--template", "openai-cpu",
        "-p", project, "--input", "model_path=/nowhere/model", "--input", "max_concurrency=2",
        "--min-replicas", "0", "--max-replicas", "2", "--public", "--json",
    )  # fmt: skip
    m = json.loads(_ok(added))
    assert m["source"] == "deployment" and m["project"] == project and m["public"] is True
    assert m["inputs"]["max_concurrency"] == 2  # sent as text, typed by the template
    assert m["inputs"]["model_path"] == "/nowhere/model"

    changed = json.loads(_ok(admin_cli("models", "set", name, "-i", "cpus=2", "--json")))
    assert changed["inputs"]["cpus"] == 2 and changed["inputs"]["max_concurrency"] == 2

    shown = _ok(admin_cli("models", "show", name))
    assert _field(shown, "Replicas") == "0–2"
    assert "No replicas." in shown
    assert _row(_ok(admin_cli("models", "list")), name)[5] == "0–2"

    line = one_line_error(admin_cli("models", "set", name, "-i", "cpus=many"))
    assert "cpus: expected an integer (HTTP 422)" in line
    bad = admin_cli("models", "set", name, "-i", "cpus")
    assert bad.exit_code == 2 and "--input takes KEY=VALUE" in bad.stderr
    mixed = admin_cli("models", "add", name + "x", "--external-url", UPSTREAM, "-p", project)
    assert mixed.exit_code == 2 and "an external model takes no --project" in mixed.stderr
    assert _ok(admin_cli("models", "rm", name, "-y"))


def test_limits_set_changes_only_the_given_fields(
    admin_cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    project = _project(admin_api, unique)
    empty = _ok(admin_cli("limits", "show", "-p", project))
    assert _field(empty, "Requests per minute") == "no limit"

    first = admin_cli(
        "limits", "set", "-p", project, "--rpm", "60", "--tpm", "1000",
        "--tokens-per-day", "50000",
    )  # fmt: skip
    assert f"Limits of {project} updated." in _ok(first)
    assert _field(first.stdout, "Tokens per day") == "50000"

    _ok(admin_cli("limits", "set", "-p", project, "--tpm", "2000"))
    data = json.loads(_ok(admin_cli("limits", "show", "-p", project, "--json")))
    assert data == {"rpm": 60, "tpm": 2000, "tokens_per_day": 50000, "tokens_per_month": None}

    lifted = json.loads(_ok(admin_cli("limits", "set", "-p", project, "--rpm", "none", "--json")))
    assert lifted == {"rpm": None, "tpm": 2000, "tokens_per_day": 50000, "tokens_per_month": None}

    cleared = json.loads(_ok(admin_cli("limits", "set", "-p", project, "--clear", "--json")))
    assert cleared == dict.fromkeys(("rpm", "tpm", "tokens_per_day", "tokens_per_month"))
    assert admin_api.call("GET", f"/projects/{project}/limits")["tpm"] is None

    nothing = admin_cli("limits", "set", "-p", project)
    assert nothing.exit_code == 2 and "at least one of" in nothing.stderr
    bad = admin_cli("limits", "set", "-p", project, "--rpm", "lots")
    assert bad.exit_code == 2 and "--rpm takes a whole number or 'none'" in bad.stderr


def test_owner_sets_key_limits(cli: Cli, admin_api: AdminApi, unique: str) -> None:
    project = _project(admin_api, unique)
    admin_api.user(unique)
    admin_api.call("POST", f"/projects/{project}/members", {"username": unique, "role": "owner"})
    token = admin_api.login(unique)  # keys are created from a session
    key = admin_api.call("POST", f"/projects/{project}/keys", {"name": "k"}, token=token)
    key_id = str(key["id"])
    _ok(cli("limits", "set", "--key", key_id, "--rpm", "5", token=token))  # the only project
    out = _ok(cli("limits", "set", "-p", project, "--key", key_id, "--tpm", "7", token=token))
    assert f"Limits of key {key_id} of {project} updated." in out
    shown = cli("limits", "show", "-p", project, "--key", key_id, "--json", token=token)
    data = json.loads(_ok(shown))
    assert data == {"rpm": 5, "tpm": 7, "tokens_per_day": None, "tokens_per_month": None}
    assert admin_api.call("GET", f"/projects/{project}/limits")["rpm"] is None  # not the project
    line = one_line_error(cli("limits", "set", "-p", project, "--rpm", "1", token=token))
    assert "(HTTP 403)" in line  # a project's own limits are the administrators' to set


def test_usage_of_an_empty_project(admin_cli: Cli, admin_api: AdminApi, unique: str) -> None:
    project = _project(admin_api, unique)
    out = _ok(admin_cli("usage", "-p", project, "--hours", "6", "--bucket-minutes", "15"))
    assert "Gateway usage, last 6 h in 15-minute buckets" in out
    assert "Requests" in out and "Tokens out" in out
    assert "Total: 0 requests, 0 errors, 0 tokens in, 0 tokens out." in out
    assert json.loads(_ok(admin_cli("usage", "-p", project, "--json"))) == []
    line = one_line_error(admin_cli("usage", "-p", unique + "-missing"))
    assert "(HTTP 404)" in line


def test_non_admin_cannot_add_a_model(cli: Cli, admin_api: AdminApi, unique: str) -> None:
    admin_api.user(unique)
    token = admin_api.login(unique)
    line = one_line_error(
        cli("models", "add", f"m-{unique}", "--external-url", UPSTREAM, token=token)
    )
    assert "(HTTP 403)" in line
    assert json.loads(_ok(cli("models", "list", "--json", token=token))) is not None


def test_unknown_model_is_a_404(admin_cli: Cli, unique: str) -> None:
    for args in (("show",), ("set", "--public"), ("grant", unique), ("rm", "--yes")):
        line = one_line_error(admin_cli("models", args[0], f"nope-{unique}", *args[1:]))
        assert line == f"error: There is no model 'nope-{unique}' (HTTP 404)", args


def test_unset_key_variable_is_refused_before_any_request(tmp_path: Any) -> None:
    # Nothing listens at this URL: an attempted request would report that instead.
    cli = Cli(tmp_path / "cli.toml", "http://127.0.0.1:9", "agora_" + "Z" * 43)
    result = cli(
        "models", "add", "m", "--external-url", UPSTREAM,
        "--external-key-env", "AGORA_TEST_UNSET_VARIABLE", AGORA_TEST_UNSET_VARIABLE=None,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: --external-key-env: the environment variable AGORA_TEST_UNSET_VARIABLE "
        "is not set or empty"
    ]
    both = cli(
        "models", "add", "m", "--external-url", UPSTREAM,
        "--external-key-env", "X", "--external-key-prompt",
    )  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.stderr


def test_key_prompt_is_hidden(admin_cli: Cli, unique: str) -> None:
    name = f"prompt-{unique}"
    result = admin_cli(
        "models", "add", name, "--external-url", UPSTREAM, "--external-key-prompt", "--json",
        input=SECRET + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert json.loads(result.stdout)["has_external_key"] is True
    _ok(admin_cli("models", "rm", name, "--yes"))


def test_usage_table_totals_and_bars(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering only: the server's answer is stood in for (the gateway is tested elsewhere)."""
    rows = [
        {"start": "2030-01-01T10:00:00Z", "project": "p", "model": "m", "requests": 10,
         "errors": 1, "tokens_in": 100, "tokens_out": 50},
        {"start": "2030-01-01T11:00:00Z", "project": "p", "model": "m", "requests": 5,
         "errors": 0, "tokens_in": 40, "tokens_out": 20},
    ]  # fmt: skip
    asked: list[Any] = []

    class FakeApi:
        def __enter__(self) -> FakeApi:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def get(self, path: str, params: dict[str, Any]) -> Any:
            asked.append((path, params))
            return rows

    monkeypatch.setattr(cli_models, "connect", FakeApi)
    wide = _ok(cli("usage", "--model", "m", "--hours", "2"))
    assert asked[0] == ("/usage", {"project": None, "model": "m", "hours": 2, "bucket_minutes": 60})
    assert _row(wide, "2030-01-01 10:00")[:7] == [
        "2030-01-01 10:00",
        "p",
        "m",
        "10",
        "1",
        "100",
        "50",
    ]
    assert _row(wide, "2030-01-01 10:00")[7] == "█" * cli_models.BAR_WIDTH
    assert _row(wide, "2030-01-01 11:00")[7] == "█" * (cli_models.BAR_WIDTH // 2)
    assert "Total: 15 requests, 1 errors, 140 tokens in, 70 tokens out." in wide
    narrow = _ok(cli("usage", COLUMNS="80"))
    assert "█" not in narrow and "Total: 15 requests" in narrow
