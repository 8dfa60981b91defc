"""`agora projects …` and `agora members …`."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from agora.cli import console
from agora.cli.client import connect
from agora.cli.console import JsonFlag

projects = typer.Typer(no_args_is_help=True, help="Projects: list, show, create, delete.")
members = typer.Typer(no_args_is_help=True, help="Who belongs to a project, with which role.")

ProjectArg = Annotated[str, typer.Argument(help="Project name.", show_default=False)]
UserArg = Annotated[str, typer.Argument(help="Login name.", show_default=False)]
ROLES = "viewer, member or owner"


def _p(name: str) -> str:
    return "/projects/" + quote(name, safe="")


@projects.command("list")
def list_projects(as_json: JsonFlag = False) -> None:
    """Your projects (every project for administrators)."""
    with connect() as api:
        rows: list[dict[str, Any]] = api.get("/projects")
    if as_json:
        console.print_json(rows)
        return
    if not rows:
        console.info("No projects.")
        return
    console.table(
        None,
        ["Name", "Title", "Your role", "Created"],
        [(p["name"], p["title"], p["role"] or "-", console.when(p["created_at"])) for p in rows],
        nowrap={"Name", "Created"},
    )


@projects.command("show")
def show(name: ProjectArg, as_json: JsonFlag = False) -> None:
    """One project's details."""
    with connect() as api:
        project = api.get(_p(name))
    if as_json:
        console.print_json(project)
        return
    console.fields(
        None,
        [
            ("Name", project["name"]),
            ("Title", project["title"] or "-"),
            ("Description", project["description"] or "-"),
            ("Your role", project["role"] or "-"),
            ("Created", console.when(project["created_at"])),
        ],
    )


@projects.command("create")
def create(
    name: Annotated[
        str, typer.Argument(help="Lower-case letters, digits, '.', '_', '-'.", show_default=False)
    ],
    title: Annotated[str, typer.Option(help="A human-readable title.")] = "",
    description: Annotated[str, typer.Option(help="What the project is for.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create a project; you become its owner."""
    with connect() as api:
        project = api.post("/projects", {"name": name, "title": title, "description": description})
    if as_json:
        console.print_json(project)
        return
    console.success(f"Created project {project['name']}.")


@projects.command("delete")
def delete(
    name: ProjectArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a project with its memberships and API keys."""
    if not yes:
        typer.confirm(f"Delete project {name!r} with its members and API keys?", abort=True)
    with connect() as api:
        api.delete(_p(name))
    console.success(f"Deleted project {name}.")


@members.command("list")
def list_members(project: ProjectArg, as_json: JsonFlag = False) -> None:
    """The members of a project and their roles."""
    with connect() as api:
        rows: list[dict[str, Any]] = api.get(_p(project) + "/members")
    if as_json:
        console.print_json(rows)
        return
    console.table(
        f"Members of {project}",
        ["User", "Name", "Role", "Source", "Since"],
        [
            (m["username"], m["display_name"], m["role"], m["source"], console.when(m["since"]))
            for m in rows
        ],
        nowrap={"User", "Role", "Since"},
    )


@members.command("add")
def add(
    project: ProjectArg,
    username: UserArg,
    role: Annotated[str, typer.Option(help=f"The role: {ROLES}.")] = "member",
) -> None:
    """Add a user to a project."""
    with connect() as api:
        member = api.post(_p(project) + "/members", {"username": username, "role": role})
    console.success(f"Added {member['username']} to {project} as {member['role']}.")


@members.command("set-role")
def set_role(
    project: ProjectArg,
    username: UserArg,
    role: Annotated[str, typer.Argument(help=f"The new role: {ROLES}.", show_default=False)],
) -> None:
    """Change a member's role."""
    with connect() as api:
        member = api.patch(_p(project) + "/members/" + quote(username, safe=""), {"role": role})
    console.success(f"{member['username']} is now {member['role']} of {project}.")


@members.command("remove")
def remove(project: ProjectArg, username: UserArg) -> None:
    """Remove a user from a project."""
    with connect() as api:
        api.delete(_p(project) + "/members/" + quote(username, safe=""))
    console.success(f"Removed {username} from {project}.")
