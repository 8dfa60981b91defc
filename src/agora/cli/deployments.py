"""Deployments: `agora deploy`, `ps`, `logs`, `stop` and `rm`.

Input values go to the server as typed (strings); the server coerces and checks them against
the template, so the CLI and the web form refuse the same things with the same words.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

import typer

from agora.cli import console
from agora.cli.client import Api, ApiError, connect
from agora.cli.console import CliError, JsonFlag

ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        help="Project (default: the API key's project, or your only one).",
        show_default=False,
    ),
]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="The deployment's ID (see `agora ps`).")]
ENDED = ("stopped", "failed")
#: Seconds between two looks at a deployment while waiting for it.
POLL_SECONDS = 0.5


def project_path(project: str) -> str:
    return "/projects/" + quote(project, safe="")


def _dep(project: str, dep_id: str) -> str:
    return f"{project_path(project)}/deployments/{quote(dep_id, safe='')}"


def project_of(api: Api, given: str | None) -> str:
    """The project named, else the API key's, else the caller's only project."""
    if given:
        return given
    me = api.get("/me")
    if me.get("key_project"):
        return str(me["key_project"])
    names = [str(m["project"]) for m in me.get("projects", [])]
    if len(names) == 1:
        return names[0]
    if not names:
        raise CliError("you are not a member of any project: name one with --project", 2)
    raise CliError(f"you are in several projects ({', '.join(names)}): choose with --project", 2)


def memory(mb: int) -> str:
    return f"{mb // 1024} GiB" if mb % 1024 == 0 else f"{mb} MiB"


def _resources(d: dict[str, Any]) -> str:
    parts = [f"{d['cpus']} CPU", memory(int(d["memory_mb"]))]
    if d["gpus"]:
        parts.append(f"{d['gpus']} GPU" + (f" ({d['gpu_type']})" if d.get("gpu_type") else ""))
    return ", ".join(parts)


def _age(iso: str) -> str:
    moment = dt.datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    seconds = max(0, int((dt.datetime.now(dt.UTC) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def one_line(text: str | None, limit: int = 400) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _wait(api: Api, path: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the deployment until ``done``, with a spinner on stderr; Ctrl-C stops waiting only."""
    started = time.monotonic()
    dep: dict[str, Any] = api.get(path)
    try:
        with console.err().status("") as status:
            while not done(dep):
                elapsed = time.monotonic() - started
                status.update(f"{dep['name']} ({dep['id']}): {dep['state']} · {elapsed:.0f} s")
                time.sleep(POLL_SECONDS)
                dep = api.get(path)
    except KeyboardInterrupt:
        raise CliError(
            f"stopped waiting: {dep['id']} is {dep['state']} and carries on (see `agora ps`)", 130
        ) from None
    return dep


def _settled(dep: dict[str, Any]) -> bool:
    return dep["state"] in ENDED or (dep["kind"] == "service" and dep["state"] == "running")


def deploy(
    template: Annotated[str, typer.Argument(help="Template name (see `agora templates list`).")],
    project: ProjectOpt = None,
    name: Annotated[str | None, typer.Option(help="A name to show in lists.")] = None,
    values: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="An input value; repeat for several."),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(help="Backend to use; repeat for a failover order (default: all allowed)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until a service runs or a job ends.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Launch a deployment from a template."""
    inputs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set takes KEY=VALUE, not {item!r}", 2)
        inputs[key.strip()] = value
    body: dict[str, Any] = {"template": template, "inputs": inputs}
    if name:
        body["name"] = name
    if backend:
        body["backends"] = backend
    with connect() as api:
        project = project_of(api, project)
        dep = api.post(f"{project_path(project)}/deployments", body)
        if not as_json:
            console.info(f"Deployment {dep['id']} ({dep['name']}) requested in {project}.")
        if wait:
            dep = _wait(api, _dep(project, dep["id"]), _settled)
    if as_json:
        console.print_json(dep)
    if dep["state"] == "failed" or (dep["kind"] == "service" and dep["state"] == "stopped"):
        raise CliError(f"deployment {dep['id']} {dep['state']}: {one_line(dep['reason'])}")
    if as_json:
        return
    url = f"{api.url}{dep['url']}" if dep.get("url") else None
    if dep["state"] == "running" and url:
        console.success(f"{dep['id']} is running: {url}")
    elif dep["state"] in ENDED:
        console.success(f"{dep['id']} {one_line(dep['reason']) or dep['state']}.")
        console.info(f"Its output: agora logs {dep['id']} -p {project}")
    elif url:
        console.info(f"It will be served at {url}")


def ps(
    project: ProjectOpt = None,
    show_all: Annotated[bool, typer.Option("--all", "-a", help="Include ended ones.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The project's deployments (active ones unless --all)."""
    with connect() as api:
        project = project_of(api, project)
        rows: list[dict[str, Any]] = api.get(f"{project_path(project)}/deployments")
    rows = [d for d in rows if show_all or d["state"] not in ENDED]
    if as_json:
        console.print_json(rows)
        return
    if not rows:
        hint = "" if show_all else " (--all shows ended ones too)"
        console.info(f"No {'' if show_all else 'active '}deployments in {project}{hint}.")
        return
    console.table(
        None,
        ["ID", "Name", "Template", "State", "Backend", "Resources", "Age"],
        [
            (
                d["id"],
                d["name"],
                d["template"],
                d["state"] + (" (stop requested)" if _stopping(d) else ""),
                d["backend"] or "-",
                _resources(d),
                _age(d["created_at"]),
            )
            for d in rows
        ],
        nowrap={"ID", "State", "Age"},
    )


def _stopping(d: dict[str, Any]) -> bool:
    return d["desired"] == "stopped" and d["state"] not in ENDED


def logs(
    dep_id: IdArg,
    project: ProjectOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new output until it ends.")
    ] = False,
    tail: Annotated[
        int, typer.Option(min=1, max=1_048_576, help="Print at most the last N bytes.")
    ] = 65536,
) -> None:
    """Print a deployment's output."""
    with connect() as api:
        project = project_of(api, project)
        path = _dep(project, dep_id)
        if not follow:
            typer.echo(api.text(path + "/logs", {"tail": tail}), nl=False)
            return
        _wait(api, path, lambda d: d["state"] in ENDED or any(a["job_id"] for a in d["attempts"]))
        try:
            for chunk in api.stream_text(path + "/logs", {"tail": tail, "follow": "true"}):
                typer.echo(chunk, nl=False)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


def stop(
    dep_id: IdArg,
    project: ProjectOpt = None,
    wait: Annotated[bool, typer.Option(help="Wait until it has stopped.")] = False,
) -> None:
    """Stop a deployment (its process is ended; the record stays until `agora rm`)."""
    with connect() as api:
        project = project_of(api, project)
        dep = api.post(_dep(project, dep_id) + "/stop")
        if wait:
            dep = _wait(api, _dep(project, dep_id), lambda d: d["state"] in ENDED)
    if dep["state"] in ENDED:
        console.success(f"{dep_id} is {dep['state']}.")
    else:
        console.success(f"Stopping {dep_id} (agora ps shows when it has stopped).")


def rm(
    dep_id: IdArg,
    project: ProjectOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Stop it first if it is still active.")
    ] = False,
) -> None:
    """Delete an ended deployment and its history."""
    with connect() as api:
        project = project_of(api, project)
        path = _dep(project, dep_id)
        try:
            api.delete(path)
        except ApiError as exc:
            if exc.status != 409:
                raise
            if not force:
                raise CliError(f"{exc.message}; `agora rm --force` stops it first") from None
            api.post(path + "/stop")
            _wait(api, path, lambda d: d["state"] in ENDED)
            api.delete(path)
    console.success(f"Deleted {dep_id}.")
