"""`agora templates …`: what can be deployed, and the inputs each template takes."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from agora.cli import console
from agora.cli.client import connect
from agora.cli.console import JsonFlag
from agora.cli.deployments import ProjectOpt, one_line, project_path

templates = typer.Typer(no_args_is_help=True, help="Deployment templates: list, show.")


def _limits(i: dict[str, Any]) -> str:
    if i["choices"]:
        return " | ".join(i["choices"])
    if i["pattern"]:
        return f"matches {i['pattern']}"
    low, high = (None if v is None else f"{v:g}" for v in (i["min"], i["max"]))
    if low and high:
        return f"{low}..{high}"
    return f">= {low}" if low else f"<= {high}" if high else ""


@templates.command("list")
def list_templates(project: ProjectOpt = None, as_json: JsonFlag = False) -> None:
    """Templates to deploy from (with --project: those open to that project)."""
    with connect() as api:
        rows: list[dict[str, Any]] = api.get(
            f"{project_path(project)}/templates" if project else "/templates"
        )
    if as_json:
        console.print_json(rows)
        return
    console.table(
        None,
        ["Name", "Kind", "Title", "Inputs"],
        [
            (t["name"], t["kind"], t["title"], ", ".join(i["name"] for i in t["inputs"]))
            for t in rows
        ],
        nowrap={"Name", "Kind"},
    )


@templates.command("show")
def show_template(
    name: Annotated[str, typer.Argument(help="Template name.", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """A template's description and inputs: types, defaults and limits."""
    with connect() as api:
        t = api.get("/templates/" + quote(name, safe=""))
    if as_json:
        console.print_json(t)
        return
    console.fields(
        None,
        [("Name", t["name"]), ("Title", t["title"]), ("Kind", t["kind"])]
        + [("Description", one_line(t["description"]))],
    )
    console.table(
        None,
        ["Input", "Type", "Default", "Required", "Limits", "Help"],
        [
            (
                i["name"],
                i["type"],
                "-" if i["default"] is None else str(i["default"]),
                console.yes_no(i["required"]),
                _limits(i),
                i["help"] or i["title"],
            )
            for i in t["inputs"]
        ],
        nowrap={"Input", "Type"},
    )
    console.info(f"Set inputs with: agora deploy {t['name']} --set NAME=VALUE …")
