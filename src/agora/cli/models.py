"""The inference gateway from the command line: `agora models …`, `agora limits …`, `agora usage`.

An upstream's API key is never a command-line value (it would land in the shell's history and in
`ps`): it is read from the environment variable named by --external-key-env, or asked for hidden
with --external-key-prompt. The server never sends it back; `show` says only whether there is one.
Template inputs (--input KEY=VALUE) go to the server as typed, like `agora deploy --set`: the server
types them by the template (integers, numbers, booleans) and refuses bad ones.
"""

from __future__ import annotations

import os
from typing import Annotated, Any
from urllib.parse import quote

import typer

from agora.cli import console
from agora.cli.client import Api, ApiError, connect
from agora.cli.console import CliError, JsonFlag
from agora.cli.deployments import ProjectOpt, one_line, project_of, project_path

models = typer.Typer(no_args_is_help=True, help="Models served by the inference gateway.")
limits = typer.Typer(
    no_args_is_help=True, help="Gateway rate and token limits of a project or an API key."
)

NameArg = Annotated[
    str, typer.Argument(metavar="NAME", help="The model's name (see `agora models list`).")
]
Count = Annotated[int | None, typer.Option(min=0, max=1000, show_default=False)]
Positive = Annotated[int | None, typer.Option(min=1, show_default=False)]
Secs = Annotated[float | None, typer.Option(min=0, show_default=False, metavar="SECONDS")]
KeyEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--external-key-env",
        metavar="VAR",
        help="Read the upstream's API key from this environment variable.",
        show_default=False,
    ),
]
KeyPromptOpt = Annotated[
    bool,
    typer.Option("--external-key-prompt", help="Ask for the upstream's API key (hidden)."),
]
InputOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        metavar="KEY=VALUE",
        help="A replica template input (e.g. model_path=…); repeat for several.",
        show_default=False,
    ),
]
BackendOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--backend",
        help="Backend for replicas; repeat for a failover order (default: all allowed).",
        show_default=False,
    ),
]
PublicOpt = Annotated[
    bool | None,
    typer.Option(
        "--public/--private",
        help="Usable by every project, or only by granted ones.",
        show_default=False,
    ),
]
UpstreamOpt = Annotated[
    str | None,
    typer.Option(
        metavar="MODEL",
        help="The name the upstream knows it by (default: NAME).",
        show_default=False,
    ),
]
DescriptionOpt = Annotated[str | None, typer.Option(help="What the model is.", show_default=False)]
LIMIT_FIELDS = ("rpm", "tpm", "tokens_per_day", "tokens_per_month")
LIMIT_TITLES = {
    "rpm": "Requests per minute",
    "tpm": "Tokens per minute",
    "tokens_per_day": "Tokens per day",
    "tokens_per_month": "Tokens per month",
}
LimitOpt = Annotated[
    str | None,
    typer.Option(metavar="N|none", help="'none' lifts this limit.", show_default=False),
]
#: Narrower terminals get no bar column in `agora usage`.
BAR_MIN_WIDTH = 110
BAR_WIDTH = 20


def model_path(name: str) -> str:
    return "/models/" + quote(name, safe="")


def parse_inputs(items: list[str] | None, option: str = "--input") -> dict[str, str]:
    """KEY=VALUE pairs as strings, as `agora deploy --set` sends them (the server types them)."""
    inputs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{option} takes KEY=VALUE, not {item!r}", 2)
        inputs[key.strip()] = value
    return inputs


def external_key(env_var: str | None, prompt: bool) -> str | None:
    """The upstream key from the named variable or a hidden prompt; None when neither is asked."""
    if env_var and prompt:
        raise CliError("give --external-key-env or --external-key-prompt, not both", 2)
    if env_var:
        value = os.environ.get(env_var, "").strip()
        if not value:
            raise CliError(
                f"--external-key-env: the environment variable {env_var} is not set or empty", 2
            )
        return value
    if prompt:
        value = str(typer.prompt("Upstream API key", hide_input=True, err=True)).strip()
        if not value:
            raise CliError("no API key given", 2)
        return value
    return None


def _settings(**given: Any) -> dict[str, Any]:
    return {k: v for k, v in given.items() if v is not None}


def _replicas(m: dict[str, Any]) -> str:
    if m["source"] != "deployment":
        return "-"
    return f"{m['min_replicas']}–{m['max_replicas']}"


def _secs(value: float) -> str:
    return f"{value:g} s"


# --- models -----------------------------------------------------------------------------------


@models.command("list")
def list_models(as_json: JsonFlag = False) -> None:
    """The models you may use (administrators: all of them)."""
    with connect() as api:
        rows: list[dict[str, Any]] = api.get("/models")
    if as_json:
        console.print_json(rows)
        return
    if not rows:
        console.info("No models (administrators add them with `agora models add`).")
        return
    console.table(
        None,
        ["Name", "Kind", "Source", "Public", "Enabled", "Replicas", "Served by"],
        [
            (
                m["name"],
                m["kind"],
                m["source"],
                console.yes_no(m["public"]),
                console.yes_no(m["enabled"]),
                _replicas(m),
                m["external_url"] or m["template"] or "-",
            )
            for m in rows
        ],
        nowrap={"Name", "Kind", "Source", "Public", "Enabled", "Replicas"},
    )


def _grants(api: Api, name: str) -> str | None:
    """The granted projects, or None where the caller may not see them (not an administrator)."""
    try:
        projects: list[str] = api.get(model_path(name) + "/projects")["projects"]
    except ApiError as exc:
        if exc.status in (401, 403):
            return None
        raise
    return ", ".join(projects) or "none"


def _print_model(
    m: dict[str, Any], grants: str | None = None, load: dict[str, Any] | None = None
) -> None:
    pairs = [
        ("Name", m["name"]),
        ("Kind", m["kind"]),
        ("Source", m["source"]),
        ("Description", m["description"] or "-"),
        ("Public", console.yes_no(m["public"])),
    ]
    if grants is not None and not m["public"]:
        pairs.append(("Granted to", grants))
    pairs += [
        ("Enabled", console.yes_no(m["enabled"])),
    ]
    if load is not None:
        pairs.append(("Load", f"{load['inflight']} in flight, {load['queued']} queued"))
    pairs.append(("Upstream model", m["upstream_model"] or m["name"]))
    if m["source"] == "external":
        pairs += [
            ("External URL", m["external_url"] or "-"),
            ("Has external key", console.yes_no(m["has_external_key"])),
        ]
    else:
        inputs = ", ".join(f"{k}={v}" for k, v in sorted(m["inputs"].items()) if v is not None)
        pairs += [
            ("Project", m["project"] or "-"),
            ("Template", m["template"] or "-"),
            ("Inputs", inputs or "-"),
            ("Backends", ", ".join(m["backends"]) or "all allowed"),
            ("Replicas", _replicas(m)),
            ("Target in flight", f"{m['target_inflight']} per replica"),
            ("Idle before scaling in", _secs(m["idle_seconds"])),
            ("Replace before time limit", _secs(m["replace_before_seconds"])),
        ]
    pairs += [
        (
            "Timeouts",
            f"connect {_secs(m['connect_timeout'])}, first byte {_secs(m['first_byte_timeout'])}, "
            f"total {_secs(m['total_timeout'])}, queue {_secs(m['queue_timeout'])}",
        ),
        ("Created", console.when(m["created_at"])),
    ]
    console.fields(None, pairs)


@models.command("show")
def show_model(name: NameArg, as_json: JsonFlag = False) -> None:
    """A model's settings, its load and its replicas."""
    with connect() as api:
        st: dict[str, Any] = api.get(model_path(name))
        grants = None if as_json or st["model"]["public"] else _grants(api, name)
    if as_json:
        console.print_json(st)
        return
    m = st["model"]
    _print_model(m, grants, st)
    if m["source"] != "deployment":
        return
    if not st["replicas"]:
        console.info("No replicas.")
        return
    console.table(
        "Replicas",
        ["ID", "State", "Backend", "Draining", "In flight", "Started", "Reason"],
        [
            (
                r["id"],
                r["state"],
                r["backend"] or "-",
                console.yes_no(r["draining"]),
                str(r["inflight"]),
                console.when(r["started_at"]),
                one_line(r["reason"], 120) or "-",
            )
            for r in st["replicas"]
        ],
        nowrap={"ID", "State", "Started"},
    )


@models.command("add")
def add_model(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The name clients put in 'model'.")],
    kind: Annotated[
        str, typer.Option(help="llm, embedding, or deepaas (a DEEPaaS module, at /m/NAME).")
    ] = "llm",
    external_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="An OpenAI-compatible upstream (https://host/v1), or a DEEPaaS one "
            "(https://host), instead of replicas.",
            show_default=False,
        ),
    ] = None,
    external_key_env: KeyEnvOpt = None,
    external_key_prompt: KeyPromptOpt = False,
    template: Annotated[
        str | None,
        typer.Option(
            help="Replica template (default: openai-cpu; deepaas-model for --kind deepaas).",
            show_default=False,
        ),
    ] = None,
    inputs: InputOpt = None,
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            "-p",
            help="Project whose quota the replicas count against (default: the server's).",
            show_default=False,
        ),
    ] = None,
    backend: BackendOpt = None,
    upstream_model: UpstreamOpt = None,
    description: DescriptionOpt = None,
    public: PublicOpt = None,
    min_replicas: Count = None,
    max_replicas: Count = None,
    target_inflight: Positive = None,
    idle_seconds: Positive = None,
    connect_timeout: Secs = None,
    first_byte_timeout: Secs = None,
    total_timeout: Secs = None,
    queue_timeout: Secs = None,
    as_json: JsonFlag = False,
) -> None:
    """Register a model: an external upstream, or replicas from a template (administrators;
    project members may serve a DEEPaaS module in their project: --kind deepaas -p PROJECT)."""
    if kind not in ("llm", "embedding", "deepaas"):
        raise CliError(f"--kind is llm, embedding or deepaas, not {kind!r}", 2)
    replica_options = [
        opt
        for opt, value in (
            ("--template", template),
            ("--input", inputs),
            ("--project", project),
            ("--backend", backend),
        )
        if value
    ]
    if external_url and replica_options:
        raise CliError(f"an external model takes no {', '.join(replica_options)}", 2)
    if not external_url and (external_key_env or external_key_prompt):
        raise CliError("an upstream API key goes with --external-url", 2)
    key = external_key(external_key_env, external_key_prompt)
    body = _settings(
        name=name,
        kind=kind,
        source="external" if external_url else "deployment",
        external_url=external_url,
        external_key=key,
        template=template,
        inputs=parse_inputs(inputs) if inputs else None,
        project=project,
        backends=backend or None,
        upstream_model=upstream_model,
        description=description,
        public=public,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_inflight=target_inflight,
        idle_seconds=idle_seconds,
        connect_timeout=connect_timeout,
        first_byte_timeout=first_byte_timeout,
        total_timeout=total_timeout,
        queue_timeout=queue_timeout,
    )
    with connect() as api:
        m = api.post("/models", body)
    if as_json:
        console.print_json(m)
        return
    console.success(f"Added model {m['name']} ({m['kind']}, {m['source']}).")
    _print_model(m)
    if not m["public"]:
        console.info(
            f"Only granted projects may use it: agora models grant {m['name']} PROJECT… "
            "(or --public)"
        )


@models.command("set")
def set_model(
    name: NameArg,
    public: PublicOpt = None,
    enabled: Annotated[
        bool | None,
        typer.Option("--enabled/--disabled", help="Serve it, or refuse requests for it."),
    ] = None,
    description: DescriptionOpt = None,
    upstream_model: UpstreamOpt = None,
    external_url: Annotated[
        str | None, typer.Option(metavar="URL", help="A new upstream URL.", show_default=False)
    ] = None,
    external_key_env: KeyEnvOpt = None,
    external_key_prompt: KeyPromptOpt = False,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="KEY=VALUE",
            help="Change a template input (the others stay); repeat for several.",
            show_default=False,
        ),
    ] = None,
    backend: BackendOpt = None,
    min_replicas: Count = None,
    max_replicas: Count = None,
    target_inflight: Positive = None,
    idle_seconds: Positive = None,
    replace_before_seconds: Annotated[
        int | None, typer.Option(min=0, max=86400, show_default=False)
    ] = None,
    connect_timeout: Secs = None,
    first_byte_timeout: Secs = None,
    total_timeout: Secs = None,
    queue_timeout: Secs = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a model's settings (administrators); settings not given stay as they are."""
    key = external_key(external_key_env, external_key_prompt)
    changes = _settings(
        public=public,
        enabled=enabled,
        description=description,
        upstream_model=upstream_model,
        external_url=external_url,
        external_key=key,
        backends=backend or None,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_inflight=target_inflight,
        idle_seconds=idle_seconds,
        replace_before_seconds=replace_before_seconds,
        connect_timeout=connect_timeout,
        first_byte_timeout=first_byte_timeout,
        total_timeout=total_timeout,
        queue_timeout=queue_timeout,
    )
    new_inputs = parse_inputs(inputs)
    if not changes and not new_inputs:
        raise CliError("nothing to change: give at least one option (see --help)", 2)
    with connect() as api:
        if new_inputs:  # PATCH replaces the inputs: keep the ones not named
            current = api.get(model_path(name))["model"]["inputs"]
            changes["inputs"] = {**current, **new_inputs}
        m = api.patch(model_path(name), changes)
    if as_json:
        console.print_json(m)
        return
    console.success(f"Model {m['name']} updated.")
    _print_model(m)


@models.command("grant")
def grant(
    name: NameArg,
    projects: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[PROJECT]...",
            help="The projects that may use it; this list replaces the current one.",
            show_default=False,
        ),
    ] = None,
    none: Annotated[
        bool, typer.Option("--none", help="Revoke every grant (no project given).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Set the projects that may use a non-public model (administrators)."""
    if bool(projects) == none:
        raise CliError("give the projects that may use it, or --none to revoke every grant", 2)
    with connect() as api:
        result = api.request(
            "PUT", model_path(name) + "/projects", body={"projects": projects or []}
        )
    if as_json:
        console.print_json(result)
        return
    granted = result["projects"]
    console.success(f"{name} is granted to: {', '.join(granted) if granted else 'no project'}.")


@models.command("rm")
def rm_model(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a model (administrators); its replicas are stopped."""
    if not yes:
        typer.confirm(f"Remove model {name!r} and stop its replicas?", abort=True)
    with connect() as api:
        api.delete(model_path(name))
    console.success(f"Removed model {name}.")


# --- limits -----------------------------------------------------------------------------------


def _limits_path(project: str, key: int | None) -> str:
    path = project_path(project)
    return f"{path}/keys/{key}/limits" if key is not None else f"{path}/limits"


def _limits_of(project: str, key: int | None) -> str:
    return f"key {key} of {project}" if key is not None else project


def _print_limits(title: str | None, values: dict[str, Any]) -> None:
    console.fields(
        title,
        [
            (LIMIT_TITLES[f], "no limit" if values.get(f) is None else str(values[f]))
            for f in LIMIT_FIELDS
        ],
    )


KeyOpt = Annotated[
    int | None,
    typer.Option(
        "--key",
        metavar="ID",
        min=1,
        help="An API key's limits (see `agora keys list`) instead of the project's.",
        show_default=False,
    ),
]


@limits.command("show")
def show_limits(project: ProjectOpt = None, key: KeyOpt = None, as_json: JsonFlag = False) -> None:
    """The gateway limits of a project or one of its API keys."""
    with connect() as api:
        project = project_of(api, project)
        values = api.get(_limits_path(project, key))
    if as_json:
        console.print_json(values)
    else:
        _print_limits(f"Limits of {_limits_of(project, key)}", values)


def _limit(option: str, raw: str) -> int | None:
    if raw.strip().lower() in ("none", "-", "off"):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise CliError(f"{option} takes a whole number or 'none', not {raw!r}", 2) from None
    if value < 0:
        raise CliError(f"{option} must not be negative", 2)
    return value


@limits.command("set")
def set_limits(
    project: ProjectOpt = None,
    key: KeyOpt = None,
    rpm: LimitOpt = None,
    tpm: LimitOpt = None,
    tokens_per_day: LimitOpt = None,
    tokens_per_month: LimitOpt = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Lift every limit (before applying any given).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Change limits (projects: administrators; keys: project owners); others stay as they are."""
    given = {
        f: _limit("--" + f.replace("_", "-"), raw)
        for f, raw in {
            "rpm": rpm,
            "tpm": tpm,
            "tokens_per_day": tokens_per_day,
            "tokens_per_month": tokens_per_month,
        }.items()
        if raw is not None
    }
    if not given and not clear:
        raise CliError(
            "give at least one of --rpm, --tpm, --tokens-per-day, --tokens-per-month, --clear", 2
        )
    with connect() as api:
        project = project_of(api, project)
        path = _limits_path(project, key)
        # PUT replaces all four: start from the current values unless clearing.
        current = dict.fromkeys(LIMIT_FIELDS) if clear else api.get(path)
        body = {f: given[f] if f in given else current.get(f) for f in LIMIT_FIELDS}
        values = api.request("PUT", path, body=body)
    if as_json:
        console.print_json(values)
        return
    console.success(f"Limits of {_limits_of(project, key)} updated.")
    _print_limits(None, values)


# --- usage ------------------------------------------------------------------------------------


def usage(
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            "-p",
            help="Only this project (default: all you may see).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only this model.", show_default=False)
    ] = None,
    hours: Annotated[int, typer.Option(min=1, max=24 * 92, help="How far back.")] = 24,
    bucket_minutes: Annotated[int, typer.Option(min=1, max=24 * 60, help="Minutes per row.")] = 60,
    as_json: JsonFlag = False,
) -> None:
    """Gateway requests and tokens per time bucket, project and model (never content)."""
    params = {"project": project, "model": model, "hours": hours, "bucket_minutes": bucket_minutes}
    with connect() as api:
        rows: list[dict[str, Any]] = api.get("/usage", params)
    if as_json:
        console.print_json(rows)
        return
    columns = ["Start (UTC)", "Project", "Model", "Requests", "Errors", "Tokens in", "Tokens out"]
    bars = bool(rows) and console.out().width >= BAR_MIN_WIDTH
    if bars:
        columns.append("")
    peak = max((r["requests"] for r in rows), default=0)
    table_rows = []
    for r in rows:
        row = [
            console.when(r["start"]),
            r["project"],
            r["model"],
            str(r["requests"]),
            str(r["errors"]),
            str(r["tokens_in"]),
            str(r["tokens_out"]),
        ]
        if bars:
            row.append("█" * max(1, round(BAR_WIDTH * r["requests"] / peak)) if peak else "")
        table_rows.append(row)
    console.table(
        f"Gateway usage, last {hours} h in {bucket_minutes}-minute buckets",
        columns,
        table_rows,
        nowrap={"Start (UTC)", "Project", "Model", ""},
    )
    totals = {
        k: sum(int(r[k]) for r in rows) for k in ("requests", "errors", "tokens_in", "tokens_out")
    }
    console.info(
        f"Total: {totals['requests']} requests, {totals['errors']} errors, "
        f"{totals['tokens_in']} tokens in, {totals['tokens_out']} tokens out."
    )
