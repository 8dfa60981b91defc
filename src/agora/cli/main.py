"""`agora`: Agora's command line. Every command but `up` talks to the REST API (/api/v1).

Failures end as one red line on stderr and exit code 1 (2 for usage errors), never a traceback;
set AGORA_CLI_DEBUG=1 to see the traceback of an unexpected error.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from agora import __version__
from agora.cli import config, console, session
from agora.cli.audit import audit
from agora.cli.catalog import catalog
from agora.cli.config_cmd import config_app
from agora.cli.console import CliError
from agora.cli.deployments import deploy, logs, ps, rm, stop
from agora.cli.keys import keys
from agora.cli.models import limits, models, usage
from agora.cli.modelserver import serve_model
from agora.cli.projects import members, projects
from agora.cli.quota import quota
from agora.cli.server import gateway, up
from agora.cli.templates import templates
from agora.cli.users import users


class _ReportingGroup(TyperGroup):
    """Turns a CliError raised by any command below it into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            console.error_line(exc.message)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_ReportingGroup,
    name="agora",
    help="Agora: AI on demand for research computing centres.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"agora {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Agora: AI on demand for research computing centres."""


app.command("up", help="Run the Agora server here (migrate, first admin, serve).")(up)
app.command("gateway", help="Run an extra gateway process (/v1 only) for scale-out.")(gateway)
app.command("login", help="Sign in and store a token for the next commands.")(session.login)
app.command("logout", help="End the stored session and forget its token.")(session.logout)
app.command("whoami", help="Show who you are signed in as: scopes, projects, roles.")(
    session.whoami
)
app.command("password", help="Change your own password.")(session.password)
app.add_typer(projects, name="projects", help="Projects: list, show, create, delete.")
app.add_typer(members, name="members", help="Project members and their roles.")
app.add_typer(keys, name="keys", help="API keys of a project: list, create, revoke.")
app.add_typer(users, name="users", help="User accounts (administrators).")
app.add_typer(audit, name="audit", help="The audit trail: list entries, verify the chain.")
app.add_typer(config_app, name="config", help="Show the CLI's and the server's settings.")
app.add_typer(templates, name="templates", help="Deployment templates: list, show.")
app.command("deploy", help="Launch a deployment from a template.")(deploy)
app.command("ps", help="List a project's deployments.")(ps)
app.command("logs", help="Print (or follow) a deployment's output.")(logs)
app.command("stop", help="Stop a deployment.")(stop)
app.command("rm", help="Delete an ended deployment.")(rm)
app.add_typer(quota, name="quota", help="A project's deployment quota: show, set.")
app.add_typer(models, name="models", help="Gateway models: list, show, add, set, grant, rm.")
app.add_typer(limits, name="limits", help="Gateway rate and token limits: show, set.")
app.command("usage", help="Gateway requests and tokens over time.")(usage)
app.command("serve-model", help="Serve DEEPaaS v2 model modules here (the DEEPaaS API).")(
    serve_model
)
app.add_typer(catalog, name="catalog", help="The model catalog: search, show, register, import.")


def main() -> None:
    try:
        app()
    except Exception as exc:  # a bug, not a user error: still one line unless asked
        if config.debug_enabled():
            raise
        console.error_line(
            f"unexpected {type(exc).__name__}: {exc} "
            f"(set {config.ENV_DEBUG}=1 to see where it happened)"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
