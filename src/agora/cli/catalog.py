"""The model catalog from the command line: `agora catalog search|show|register|import`.

`register` reads the file and checks it here first, so every problem is listed with its field
path before anything is sent; the server checks it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from agora.catalog.metadata import MetadataError, Problem, parse
from agora.catalog.sources import default_name, load_document
from agora.cli import console
from agora.cli.client import connect
from agora.cli.console import CliError, JsonFlag
from agora.cli.deployments import ProjectOpt, project_of
from agora.cli.models import BackendOpt, Count, InputOpt, parse_inputs

catalog = typer.Typer(no_args_is_help=True, help="The model catalog: find, read, register, deploy.")

NameArg = Annotated[
    str, typer.Argument(metavar="NAME", help="The entry's name (see `agora catalog search`).")
]
LabelOpt = Annotated[str | None, typer.Option(show_default=False)]
RUNS = {"deepaas": "DEEPaaS model", "template": "template", "none": "not here"}


def entry_path(name: str) -> str:
    return "/catalog/" + quote(name, safe="")


@catalog.command("search")
def search(
    text: Annotated[str, typer.Argument(metavar="[TEXT]", help="Words to look for.")] = "",
    tag: LabelOpt = None,
    task: LabelOpt = None,
    data_type: Annotated[str | None, typer.Option("--data-type", show_default=False)] = None,
    page: Annotated[int, typer.Option(min=1)] = 1,
    per_page: Annotated[int, typer.Option(min=1, max=100)] = 24,
    as_json: JsonFlag = False,
) -> None:
    """Entries you can see that match TEXT and every filter."""
    params = {
        "q": text,
        "tag": tag,
        "task": task,
        "data_type": data_type,
        "page": page,
        "per_page": per_page,
    }
    with connect() as api:
        result: dict[str, Any] = api.get("/catalog", params=params)
    if as_json:
        console.print_json(result)
        return
    if not result["items"]:
        console.info("No catalog entries match.")
        return
    console.table(
        None,
        ["Name", "Title", "Tasks", "Data types", "Tags", "Runs"],
        [
            (
                m["name"],
                m["title"],
                ", ".join(m["tasks"]) or "-",
                ", ".join(m["data_types"]) or "-",
                ", ".join(m["tags"]) or "-",
                "yes" if m["runnable"] else "no",
            )
            for m in result["items"]
        ],
        nowrap={"Name", "Runs"},
    )
    console.info(f"Page {result['page']} of {result['pages']} ({result['total']} entries).")


def _resources(r: dict[str, Any]) -> str:
    parts = [f"{r['cpu']} CPU" if "cpu" in r else "", f"{r['gpu']} GPU" if r.get("gpu") else ""]
    parts += [f"{r['memory_MB']} MB memory" if "memory_MB" in r else ""]
    parts += [f"{r['storage_MB']} MB storage" if "storage_MB" in r else ""]
    return ", ".join(p for p in parts if p) or "-"


def _authors(authors: list[dict[str, Any]]) -> str:
    return ", ".join(a["name"] for a in authors) or "-"


def _runs(run: dict[str, Any]) -> str:
    if run["kind"] == "deepaas":
        return f"DEEPaaS entry point {run['entry_point']} (template {run['template']})"
    if run["kind"] == "template":
        inputs = ", ".join(f"{k}={v}" for k, v in sorted(run["inputs"].items()))
        return f"template {run['template']}" + (f" ({inputs})" if inputs else "")
    return f"not runnable here: {run['reason']}"


@catalog.command("show")
def show(name: NameArg, as_json: JsonFlag = False) -> None:
    """An entry: what it is, its links, resources and versions, and how it runs."""
    with connect() as api:
        m: dict[str, Any] = api.get(entry_path(name))
    if as_json:
        console.print_json(m)
        return
    out = console.out()
    out.print(Text(m["title"], style="bold"), Text(f" ({m['name']})", style="dim"))
    out.print(Text(m["summary"]))
    out.print()
    pairs = [
        ("Runs", _runs(m["run"])),
        ("Tasks", ", ".join(m["tasks"]) or "-"),
        ("Data types", ", ".join(m["data_types"]) or "-"),
        ("Tags", ", ".join(m["tags"]) or "-"),
        ("Libraries", ", ".join(m["libraries"]) or "-"),
        ("Authors", _authors(m["authors"])),
        ("License", m["license"] or "-"),
    ]
    pairs += [(f"Link: {k}", v) for k, v in sorted(m["links"].items())]
    pairs += [(f"Resources: {k}", _resources(v)) for k, v in sorted(m["resources"].items())]
    for v in m["versions"]:
        note = f" ({v['date']})" if v.get("date") else ""
        pairs.append((f"Version {v['version']}", (v.get("notes") or "-") + note))
    origin = m["project"] and f"project {m['project']}" or m["source"]
    if m["commit"]:
        origin += f" at commit {m['commit'][:12]}"
    pairs += [
        ("Source", origin),
        ("Metadata", f"{m['metadata_format']} {m['metadata_version']}"),
    ]
    console.fields(None, pairs)
    if m["description"]:
        out.print()
        out.print(Markdown(m["description"]))


def _print_problems(problems: list[dict[str, Any]] | list[Problem]) -> None:
    for p in problems:
        line = (
            str(p)
            if isinstance(p, Problem)
            else (
                f"{p['file']}: {p['field']}: {p['message']}"
                if p["field"]
                else (f"{p['file']}: {p['message']}")
            )
        )
        console.err().print(Text("  " + line, style="red"), soft_wrap=True)


@catalog.command("register")
def register(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="ai4-metadata.yml/.json (v2) or metadata.json (v1)", exists=True
        ),
    ],
    project: ProjectOpt = None,
    name: Annotated[
        str | None,
        typer.Option(help="Its name in the catalog (default: agora.name or the folder's name)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register a module in a project's catalog; only the project's members see it."""
    shown = f"{file.parent.name}/{file.name}" if file.parent.name else file.name
    entry_name = name or default_name(file.resolve().parent)
    try:
        document = load_document(file.read_bytes(), file.name, shown)
        parse(document, file=shown, name=entry_name)
    except MetadataError as exc:
        _print_problems(exc.problems)
        count = len(exc.problems)
        raise CliError(
            f"{shown} has {count} problem{'s' if count > 1 else ''}; nothing sent"
        ) from exc
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from exc
    with connect() as api:
        body = {
            "project": project_of(api, project),
            "document": document,
            "name": entry_name if (name or not _has_own_name(document)) else None,
            "file": shown,
        }
        m: dict[str, Any] = api.post("/catalog", body)
    if as_json:
        console.print_json(m)
        return
    console.success(f"Registered {m['name']} in project {m['project']} ({_runs(m['run'])}).")


@catalog.command("deploy")
def deploy(
    entry: NameArg,
    project: ProjectOpt = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="The served model's name (default: the entry's).", show_default=False
        ),
    ] = None,
    inputs: InputOpt = None,
    backend: BackendOpt = None,
    min_replicas: Count = None,
    max_replicas: Count = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a catalog entry in a project: a DEEPaaS model is served at /m/NAME (scaled from zero
    unless --min-replicas), an app starts as a deployment of its template."""
    with connect() as api:
        body: dict[str, Any] = {"project": project_of(api, project)}
        for key, value in (
            ("name", name),
            ("inputs", parse_inputs(inputs) if inputs else None),
            ("backends", backend or None),
            ("min_replicas", min_replicas),
            ("max_replicas", max_replicas),
        ):
            if value is not None:
                body[key] = value
        done: dict[str, Any] = api.post(entry_path(entry) + "/deploy", body)
    if as_json:
        console.print_json(done)
        return
    if done["kind"] == "model":
        console.success(
            f"{entry} is served as {done['name']} in project {done['project']}: "
            f"DEEPaaS clients use the base URL {api.url.rstrip('/')}{done['url']}"
        )
    else:
        console.success(f"{entry} is starting as deployment {done['name']} ({done['url']}).")


def _has_own_name(document: Any) -> bool:
    agora = document.get("agora") if isinstance(document, dict) else None
    return isinstance(agora, dict) and bool(agora.get("name"))


@catalog.command("import")
def import_sources(
    source: Annotated[
        str | None,
        typer.Option(help="Only this source (as `--list` shows it).", show_default=False),
    ] = None,
    list_only: Annotated[bool, typer.Option("--list", help="List the sources only.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """(Re)import the catalog sources the operator configured (administrators)."""
    with connect() as api:
        sources: list[dict[str, Any]] = api.get("/catalog/sources")
        if list_only:
            console.table(
                None,
                # A repository's source is its URL (credentials masked) and #branch if any.
                ["Source", "Kind", "Path", "Commit"],
                [(s["source"], s["kind"], s["path"], (s["commit"] or "-")[:12]) for s in sources],
                nowrap={"Kind", "Commit"},
            )
            return
        chosen = [s for s in sources if source is None or s["source"] == source]
        if source is not None and not chosen:
            raise CliError(f"there is no catalog source {source!r} (see --list)", 2)
        reports = []
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console.err(),
            transient=True,
        ) as progress:
            task = progress.add_task("Importing", total=len(chosen))
            for s in chosen:
                progress.update(task, description=f"Importing {s['source']}")
                reports.append(api.post("/catalog/import", {"source": s["source"]}))
                progress.advance(task)
    if as_json:
        console.print_json(reports)
        return
    files = [f for r in reports for f in r["files"]]
    if files:
        console.table(
            None,
            ["File", "Name", "Status", "Commit"],
            [(f["file"], f["name"] or "-", f["status"], (f["commit"] or "-")[:12]) for f in files],
            nowrap={"Status", "Commit"},
        )
    failed = [f for f in files if f["status"] == "failed"]
    for f in failed:
        _print_problems(f["problems"])
    counts = {k: sum(r[k] for r in reports) for k in ("added", "updated", "removed", "failed")}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    if failed:
        raise CliError(f"imported with problems: {summary}")
    console.success(f"Imported {len(chosen)} source{'s' if len(chosen) != 1 else ''}: {summary}.")
