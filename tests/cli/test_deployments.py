"""`agora templates`, `deploy`, `ps`, `logs`, `stop`, `rm` and `quota` against a real server,
whose orchestrator runs the jobs as local processes."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.cli.conftest import AdminApi, Cli, one_line_error
from tests.helpers import PASSWORD


def _project(admin_api: AdminApi, name: str) -> str:
    admin_api.call("POST", "/projects", {"name": name})
    return name


def _deploy(cli: Cli, project: str, command: str, *more: str) -> str:
    """Launch a batch job without waiting; its ID."""
    result = cli(
        "deploy", "batch", "-p", project, "--set", f"command={command}", "--no-wait", *more
    )
    assert result.exit_code == 0, result.output
    found = re.search(r"Deployment (d[a-z0-9]+) ", result.stdout)
    assert found, result.stdout
    return found.group(1)


def _get(admin_api: AdminApi, project: str, dep_id: str) -> dict[str, Any]:
    return dict(admin_api.call("GET", f"/projects/{project}/deployments/{dep_id}"))


def _wait_for(admin_api: AdminApi, project: str, dep_id: str, state: str) -> None:
    deadline = time.monotonic() + 30
    while _get(admin_api, project, dep_id)["state"] != state:
        assert time.monotonic() < deadline, _get(admin_api, project, dep_id)
        time.sleep(0.2)


def test_templates_list_and_show(admin_cli: Cli) -> None:
    listed = admin_cli("templates", "list")
    assert listed.exit_code == 0, listed.output
    for name in ("batch", "http-service", "jupyterlab"):
        assert name in listed.stdout
    shown = admin_cli("templates", "show", "batch")
    assert shown.exit_code == 0, shown.output
    rows = {line.split("│")[1].strip(): line for line in shown.stdout.splitlines() if "│" in line}
    assert "integer" in rows["cpus"] and "1..256" in rows["cpus"] and "no" in rows["cpus"]
    assert "string" in rows["command"] and "yes" in rows["command"]
    assert "agora deploy batch --set NAME=VALUE" in shown.stdout
    data = json.loads(admin_cli("templates", "show", "batch", "--json").stdout)
    assert {i["name"]: i["default"] for i in data["inputs"]}["minutes"] == 60
    line = one_line_error(admin_cli("templates", "show", "nope"))
    assert "(HTTP 404)" in line


def test_deploy_waits_for_a_batch_job_then_ps_logs_and_rm(
    admin_cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    project = _project(admin_api, unique)
    done = admin_cli(
        "deploy",
        "batch",
        "-p",
        project,
        "--name",
        "hello",
        "--set",
        "command=echo hello; echo world",
        "--set",
        "cpus=2",
        "--wait",
    )
    assert done.exit_code == 0, done.output
    found = re.search(r"Deployment (d[a-z0-9]+) \(hello\) requested in", done.stdout)
    assert found, done.stdout
    dep_id = found.group(1)
    assert f"{dep_id} completed (exit code 0)." in done.stdout
    assert f"agora logs {dep_id} -p {project}" in done.stdout

    assert dep_id not in admin_cli("ps", "-p", project).stdout  # ended: only with --all
    listed = admin_cli("ps", "-p", project, "--all")
    row = next(line for line in listed.stdout.splitlines() if dep_id in line)
    assert all(s in row for s in ("hello", "batch", "stopped", "local", "2 CPU, 1 GiB"))
    rows = json.loads(admin_cli("ps", "-p", project, "--all", "--json").stdout)
    assert rows[0]["inputs"]["cpus"] == 2  # sent as a string, typed by the server

    assert admin_cli("logs", dep_id, "-p", project).stdout == "hello\nworld\n"
    assert admin_cli("logs", dep_id, "-p", project, "--tail", "8").stdout == "world\n"

    removed = admin_cli("rm", dep_id, "-p", project)
    assert removed.exit_code == 0 and f"Deleted {dep_id}." in removed.stdout
    assert "No deployments" in admin_cli("ps", "-p", project, "--all").stdout


def test_failed_job_exits_1_with_its_reason(
    admin_cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    project = _project(admin_api, unique)
    result = admin_cli("deploy", "batch", "-p", project, "--set", "command=echo oops >&2; exit 3")
    line = one_line_error(result)
    assert re.search(r"deployment d[a-z0-9]+ failed: process exited with code 3", line)
    assert "oops" in line


def test_logs_follow_streams_until_the_job_ends(
    admin_cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    project = _project(admin_api, unique)
    dep_id = _deploy(admin_cli, project, "for i in 1 2 3; do echo tick-$i; sleep 1; done")
    started = time.monotonic()
    followed = admin_cli("logs", dep_id, "-p", project, "-f")
    assert followed.exit_code == 0, followed.output
    assert followed.stdout == "tick-1\ntick-2\ntick-3\n"
    assert time.monotonic() - started > 1.5  # it followed the job rather than printing once
    assert _get(admin_api, project, dep_id)["state"] == "stopped"


def test_stop_and_rm_of_an_active_deployment(
    admin_cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    project = _project(admin_api, unique)
    dep_id = _deploy(admin_cli, project, "sleep 300")
    _wait_for(admin_api, project, dep_id, "running")
    row = next(
        line for line in admin_cli("ps", "-p", project).stdout.splitlines() if dep_id in line
    )
    assert "running" in row and "local" in row

    line = one_line_error(admin_cli("rm", dep_id, "-p", project))
    assert "(HTTP 409)" in line and "stop it before deleting it" in line and "--force" in line
    stopped = admin_cli("stop", dep_id, "-p", project, "--wait")
    assert stopped.exit_code == 0 and f"{dep_id} is stopped." in stopped.stdout
    assert admin_cli("rm", dep_id, "-p", project).exit_code == 0

    forced = _deploy(admin_cli, project, "sleep 300")
    removed = admin_cli("rm", forced, "-p", project, "--force")
    assert removed.exit_code == 0, removed.output
    line = one_line_error(admin_cli("logs", forced, "-p", project))
    assert "(HTTP 404)" in line


def test_invalid_input_value_is_one_line_422(
    admin_cli: Cli, admin_api: AdminApi, unique: str
) -> None:
    project = _project(admin_api, unique)
    args = ("deploy", "batch", "-p", project, "--set", "command=true")
    line = one_line_error(admin_cli(*args, "--set", "cpus=many"))
    assert line == "error: cpus: expected an integer (HTTP 422)"
    line = one_line_error(admin_cli(*args, "--set", "cpus=1000"))
    assert "cpus: must be at most 256 (HTTP 422)" in line
    malformed = admin_cli(*args, "--set", "cpus")
    assert malformed.exit_code == 2 and "--set takes KEY=VALUE" in malformed.stderr
    assert json.loads(admin_cli("ps", "-p", project, "--all", "--json").stdout) == []


def test_quota_set_show_and_refusal(admin_cli: Cli, admin_api: AdminApi, unique: str) -> None:
    project = _project(admin_api, unique)
    changed = admin_cli("quota", "set", project, "--cpus", "3", "--deployments", "1")
    assert changed.exit_code == 0, changed.output
    assert f"Quota of {project} updated." in changed.stdout
    data = json.loads(admin_cli("quota", "show", "-p", project, "--json").stdout)
    assert data["limits"]["cpus"] == 3 and data["limits"]["deployments"] == 1
    assert data["in_use"] == {"deployments": 0, "cpus": 0, "memory_mb": 0, "gpus": 0}

    dep_id = _deploy(admin_cli, project, "sleep 300", "--set", "cpus=2")
    shown = admin_cli("quota", "show", "-p", project).stdout
    cpus = next(line for line in shown.splitlines() if "CPUs" in line)
    assert re.search(r"CPUs\s*│\s*2\s*│\s*3", cpus), shown
    line = one_line_error(admin_cli("deploy", "batch", "-p", project, "--set", "command=true"))
    assert "(HTTP 403)" in line and "may use 1 concurrent deployments" in line
    assert admin_cli("rm", dep_id, "-p", project, "--force").exit_code == 0

    nothing = admin_cli("quota", "set", project)
    assert nothing.exit_code == 2 and "at least one of" in nothing.stderr


def test_sessions_default_to_their_only_project(cli: Cli, admin_api: AdminApi, unique: str) -> None:
    admin_api.user(unique)
    _project(admin_api, unique)
    admin_api.call("POST", f"/projects/{unique}/members", {"username": unique, "role": "member"})
    assert cli("login", "-u", unique, input=PASSWORD + "\n").exit_code == 0
    assert f"No active deployments in {unique}" in cli("ps").stdout
    assert "Deployments" in cli("quota", "show").stdout
    line = one_line_error(cli("quota", "set", unique, "--cpus", "100"))
    assert "(HTTP 403)" in line

    _project(admin_api, unique + "-b")
    admin_api.call("POST", f"/projects/{unique}-b/members", {"username": unique, "role": "member"})
    refused = cli("ps")
    assert refused.exit_code == 2
    assert f"you are in several projects ({unique}, {unique}-b): choose with --project" in (
        refused.stderr
    )
