"""`agora quota …`: a project's limits on active deployments, and what is in use."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agora.cli import console
from agora.cli.client import connect
from agora.cli.console import CliError, JsonFlag
from agora.cli.deployments import ProjectOpt, memory, project_of, project_path

quota = typer.Typer(no_args_is_help=True, help="A project's limits on active deployments.")


def _print_quota(project: str, q: dict[str, Any]) -> None:
    limits, used = q["limits"], q["in_use"]
    console.table(
        f"Quota of {project}",
        ["Resource", "In use", "Limit"],
        [
            ("Deployments", str(used["deployments"]), str(limits["deployments"])),
            ("CPUs", str(used["cpus"]), str(limits["cpus"])),
            ("Memory", memory(used["memory_mb"]), memory(limits["memory_mb"])),
            ("GPUs", str(used["gpus"]), str(limits["gpus"])),
        ],
    )


@quota.command("show")
def show_quota(project: ProjectOpt = None, as_json: JsonFlag = False) -> None:
    """What the project may use at once, and what its active deployments use."""
    with connect() as api:
        project = project_of(api, project)
        q = api.get(f"{project_path(project)}/quota")
    if as_json:
        console.print_json(q)
    else:
        _print_quota(project, q)


Limit = Annotated[int | None, typer.Option(min=0, show_default=False)]


@quota.command("set")
def set_quota(
    project: Annotated[str, typer.Argument(help="Project name.", show_default=False)],
    cpus: Limit = None,
    memory_mb: Limit = None,
    gpus: Limit = None,
    deployments: Limit = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a project's limits (administrators); limits not given stay as they are."""
    body = {
        k: v
        for k, v in {
            "cpus": cpus,
            "memory_mb": memory_mb,
            "gpus": gpus,
            "deployments": deployments,
        }.items()
        if v is not None
    }
    if not body:
        raise CliError("give at least one of --cpus, --memory-mb, --gpus, --deployments", 2)
    with connect() as api:
        q = api.patch(f"{project_path(project)}/quota", body)
    if as_json:
        console.print_json(q)
        return
    console.success(f"Quota of {project} updated.")
    _print_quota(project, q)
