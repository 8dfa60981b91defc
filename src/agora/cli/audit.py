"""`agora audit …`: read and check the hash-chained audit trail (administrators)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agora.cli import console, times
from agora.cli.client import connect
from agora.cli.console import CliError, JsonFlag

audit = typer.Typer(no_args_is_help=True, help="The audit trail: list entries, verify the chain.")
PAGE = 1000  # the server's largest page


@audit.command("list")
def list_entries(
    actor: Annotated[str | None, typer.Option(help="Only this actor (login name).")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action; 'key.' matches every key action.")
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="success, failure or denied.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From: '1h', '7d' ago, a date or an ISO time.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Until: same forms as --since.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many entries.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Entries, newest first (--json adds each entry's details and hash)."""
    params: dict[str, Any] = {"actor": actor, "project": project, "action": action}
    params["outcome"] = outcome
    params["since"] = times.iso(times.past(since, "--since")) if since else None
    params["until"] = times.iso(times.past(until, "--until")) if until else None
    entries: list[dict[str, Any]] = []
    with connect() as api, console.err().status("Reading the audit trail…"):
        before = None
        while len(entries) < limit:
            size = min(PAGE, limit - len(entries))
            page = api.get("/audit", {**params, "before": before, "limit": size})
            entries += page["entries"]
            before = page["next_before"]
            if before is None:
                break
    if as_json:
        console.print_json(entries)
        return
    if not entries:
        console.info("No audit entries match.")
        return
    console.table(
        None,
        ["#", "Time (UTC)", "Actor", "Project", "Action", "Target", "Outcome"],
        [
            (
                str(e["seq"]),
                console.when(e["time"]),
                e["actor"],
                e["project"] or "-",
                e["action"],
                e["target"],
                e["outcome"],
            )
            for e in entries
        ],
        nowrap={"#", "Time (UTC)"},
    )


@audit.command("verify")
def verify(as_json: JsonFlag = False) -> None:
    """Check the whole hash chain; exit code 1 names the first entry that was changed."""
    with connect() as api, console.err().status("Verifying the audit chain…"):
        result = api.get("/audit/verify")
    if as_json:
        console.print_json(result)
    if result["ok"]:
        if not as_json:
            console.success(f"Audit trail intact: {result['checked']} entries verified.")
        return
    raise CliError(
        f"audit trail broken at entry #{result['first_broken_seq']}: {result['reason']} "
        f"({result['checked']} entries before it are intact)"
    )
