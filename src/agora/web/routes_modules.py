"""Served DEEPaaS modules in the web UI: "Try it" and deploying a catalog module.

The Try-it page is a form built in the browser (module_try.js) from the module server's own
OpenAPI document, fetched through the platform (``/m/{model}/…``) with the session cookie; the
prediction goes the same way, so it meets the same auth, grants and limits as an API client.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from agora.errors import AgoraError, InvalidInput, NotFound
from agora.services import catalog, gateway, projects, serving
from agora.services.context import Ctx
from agora.web.forms import undo
from agora.web.guards import PageCtx, mark_web, session_csrf
from agora.web.render import redirect, render
from agora.web.routes_catalog import EntryName
from agora.web.routes_deployments import FormDep
from agora.web.routes_models import ModelName, _current_project

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_web), Depends(session_csrf)])


@router.get("/models/{name}/try")
def try_module(request: Request, ctx: PageCtx, name: ModelName) -> Response:
    model = gateway.get_model(ctx, name)
    if model.kind != "deepaas":
        raise NotFound(f"'{name}' is not a served module: language models have the chat page")
    return render(
        request,
        ctx,
        "module_try.html",
        model=model,
        project_name=_current_project(ctx),
        base=f"/m/{model.name}",
    )


# --- from the catalog -------------------------------------------------------------------------


@router.get("/catalog/{entry}/try")
def try_entry(request: Request, ctx: PageCtx, entry: EntryName) -> Response:
    """The entry's Try-it page if one of the caller's projects serves it; else deploy it."""
    models = serving.served(ctx, entry)
    if models:
        return RedirectResponse(f"/models/{models[0].name}/try", status_code=303)
    run = catalog.runnable(ctx, entry)
    if run.kind == "template":
        return RedirectResponse(f"/deployments/new/{run.template}", status_code=303)
    return redirect(
        request, f"/catalog/{entry}/deploy", f"Deploy {entry} in one of your projects first."
    )


@router.get("/catalog/{entry}/deploy")
def deploy_form(request: Request, ctx: PageCtx, entry: EntryName) -> Response:
    return _deploy_page(request, ctx, entry)


@router.post("/catalog/{entry}/deploy")
def deploy(request: Request, ctx: PageCtx, entry: EntryName, form: FormDep) -> Response:
    values = {key: _one(form, key) for key in _FIELDS}
    try:
        spec = _spec(values)
        done = serving.deploy(ctx, entry, values["project"], spec)
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _deploy_page(request, ctx, entry, exc, values)
    if done.deployment is not None:
        target = f"/deployments/{done.deployment.id}?project={values['project']}"
        return redirect(request, target, f"{entry} is starting.")
    assert done.model is not None
    first = "" if done.model.min_replicas else " The first request starts a replica."
    return redirect(request, f"/models/{done.model.name}", f"{entry} is served.{first}")


_FIELDS = ("project", "name", "backend", "min_replicas", "max_replicas", "workers")


def _one(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _spec(values: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"inputs": {}}
    if values["name"]:
        spec["name"] = values["name"]
    if values["backend"]:
        spec["backends"] = [values["backend"]]
    for key in ("min_replicas", "max_replicas", "workers"):
        if not values[key]:
            continue
        if not values[key].isdigit() or int(values[key]) > 1000:
            raise InvalidInput(f"{key}: a whole number from 0 to 1000", field=key)
        if key == "workers":
            spec["inputs"]["workers"] = int(values[key])
        else:
            spec[key] = int(values[key])
    return spec


def _deploy_page(
    request: Request,
    ctx: Ctx,
    entry: str,
    error: AgoraError | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    module = catalog.get_module(ctx, entry)
    run = catalog.runnable(ctx, entry)
    if run.kind == "template" and error is None:
        return RedirectResponse(f"/deployments/new/{run.template}", status_code=303)
    member_of = [p.name for p, role in projects.list_projects(ctx) if role is not None]
    current = _current_project(ctx)
    shown = {
        "project": current if current in member_of else (member_of[0] if member_of else ""),
        "name": entry,
        "backend": "",
        "min_replicas": "0",
        "max_replicas": "1",
        "workers": "1",
    } | (values or {})
    return render(
        request,
        ctx,
        "catalog_deploy.html",
        status=error.status if error else 200,
        module=module,
        run=run,
        projects=member_of,
        backends=list(ctx.runtime.backends),
        values=shown,
        error=error.detail if error else None,
    )
