"""What the CLI prints: tables and JSON on stdout; warnings and one red line per error on stderr.

Consoles are built per call, not at import, so they follow whatever ``sys.stdout`` is at the time
(the test runner swaps it) and honour ``NO_COLOR`` and ``COLUMNS``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Collection, Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")
]


class CliError(Exception):
    """A failure reported as one line on stderr; the command then exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def out() -> Console:
    return Console(highlight=False)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def error_line(message: str) -> None:
    # Text, not markup: server details may hold brackets; soft_wrap keeps it on one line.
    err().print(Text(f"error: {message}", style="bold red"), soft_wrap=True)


def warn(message: str) -> None:
    err().print(Text(f"warning: {message}", style="yellow"), soft_wrap=True)


def success(message: str) -> None:
    out().print(Text(message, style="green"), soft_wrap=True)


def info(message: str) -> None:
    out().print(Text(message), soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    nowrap: Collection[str] = (),
) -> None:
    """Columns named in ``nowrap`` (times, IDs, states) stay on one line, cut with '…' if need be;
    the others fold."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        if name in nowrap:
            grid.add_column(name, no_wrap=True, overflow="ellipsis")
        else:
            grid.add_column(name, overflow="fold")
    for row in rows:
        grid.add_row(*(Text(cell) for cell in row))  # data, not markup
    out().print(grid)


def fields(title: str | None, pairs: Iterable[tuple[str, str]]) -> None:
    """A two-column listing of name/value pairs, e.g. one object's details."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in pairs:
        grid.add_row(name, Text(value))
    if title:
        out().print(Text(title, style="bold"))
    out().print(grid)


def secret_panel(title: str, pairs: Iterable[tuple[str, str]], footer: str) -> None:
    """Secrets the server shows once, framed so they are not missed; values never wrap."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(no_wrap=True)
    for name, value in pairs:
        grid.add_row(name, Text(value))
    body = Group(grid, Text(""), Text(footer, style="bold yellow"))
    out().print(Panel.fit(body, title=title, border_style="yellow", title_align="left"))


def when(value: str | None) -> str:
    """An API timestamp as 'YYYY-MM-DD HH:MM' in UTC; '-' when absent."""
    if not value:
        return "-"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M")


def yes_no(value: object) -> str:
    return "yes" if value else "no"


def mask(secret: str | None) -> str:
    """A token shown by its ends only: 'agora_AbCd…xyz9'; short secrets show nothing at all."""
    if not secret:
        return "-"
    prefix = next((p for p in ("agoras_", "agora_") if secret.startswith(p)), "")
    body = secret[len(prefix) :]
    if len(body) < 16:
        return prefix + "…"
    return f"{prefix}{body[:4]}…{body[-4:]}"
