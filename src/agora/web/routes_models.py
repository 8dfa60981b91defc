"""The inference gateway in the web UI: the chat page, the models and their replicas, the API page.

The chat page talks to the gateway (``/v1``) from the browser with the session cookie; its
conversations stay in the browser (localStorage). The model pages call the gateway services like
the REST API does; replicas refresh through agora.js and the usage charts come from
``/api/v1/usage`` (models.js).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from agora.api.routes.models import ModelSettings
from agora.errors import AgoraError
from agora.models import Deployment, DeploymentState, GatewayModel
from agora.services import gateway, projects
from agora.services.context import Ctx
from agora.services.gateway import ModelStatus
from agora.web.forms import undo, validated
from agora.web.guards import PageCtx, mark_web, session_csrf
from agora.web.render import redirect, render
from agora.web.routes_deployments import FormDep, age

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_web), Depends(session_csrf)])
ModelName = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*$")
]


@dataclass(frozen=True)
class Setting:
    """One scaling or timeout setting of a model as a form control."""

    name: str
    title: str
    help: str
    step: str  # "1" for whole numbers, "any" for seconds with fractions
    min: str
    max: str


#: The settings the model page shows; the autoscaler's only for models served by deployments.
SCALING = (
    Setting("min_replicas", "Minimum replicas", "Kept running without requests.", "1", "0", "1000"),
    Setting("max_replicas", "Maximum replicas", "Never more than this.", "1", "0", "1000"),
    Setting(
        "target_inflight",
        "Target in-flight per replica",
        "Requests one replica should handle at once; more start when exceeded.",
        "1",
        "1",
        "10000",
    ),
    Setting(
        "idle_seconds",
        "Idle seconds",
        "Without requests this long, replicas stop (down to the minimum).",
        "1",
        "1",
        "604800",
    ),
    Setting(
        "replace_before_seconds",
        "Replace before end (s)",
        "A fresh replica starts this long before one reaches its time limit.",
        "1",
        "0",
        "86400",
    ),
)
TIMEOUTS = (
    Setting("connect_timeout", "Connect timeout (s)", "", "any", "0.001", "86400"),
    Setting("first_byte_timeout", "First byte timeout (s)", "", "any", "0.001", "86400"),
    Setting("total_timeout", "Total timeout (s)", "", "any", "0.001", "86400"),
    Setting("queue_timeout", "Queue timeout (s)", "Waiting for a replica.", "any", "0", "86400"),
)
_FLAGS = ("enabled", "public")


@dataclass(frozen=True)
class ModelRow:
    """A model with what its list entry shows about its replicas and load."""

    model: GatewayModel
    ready: int
    replicas: int
    inflight: int
    queued: int


def _ready(d: Deployment) -> bool:
    return d.state == DeploymentState.running and d.draining_since is None


def _row(st: ModelStatus) -> ModelRow:
    live = [d for d in st.replicas if not d.state.terminal]
    ready = sum(1 for d in live if _ready(d))
    return ModelRow(st.model, ready, len(live), st.inflight, st.queued)


def _is_admin(ctx: Ctx) -> bool:
    return ctx.principal is not None and ctx.principal.is_admin


def _current_project(ctx: Ctx) -> str:
    current = projects.current_project(ctx)
    return current[0].name if current else ""


# --- chat -------------------------------------------------------------------------------------


@router.get("/chat")
def chat(request: Request, ctx: PageCtx) -> Response:
    return render(
        request,
        ctx,
        "chat.html",
        project_name=_current_project(ctx),
        gateway_on=request.app.state.gateway is not None,
    )


# --- models -----------------------------------------------------------------------------------


@router.get("/models")
def model_list(request: Request, ctx: PageCtx) -> Response:
    rows = [_row(gateway.status(ctx, m.name)) for m in gateway.list_models(ctx)]
    return render(request, ctx, "models.html", rows=rows, can_manage=_is_admin(ctx))


@router.get("/models/{name}")
def model_page(request: Request, ctx: PageCtx, name: ModelName) -> Response:
    return _detail(request, ctx, name)


@router.post("/models/{name}/settings")
def change_settings(request: Request, ctx: PageCtx, name: ModelName, form: FormDep) -> Response:
    raw = _settings_form(form)
    try:
        body = validated(ModelSettings, **raw)
        gateway.update_model(ctx, name, body.model_dump(exclude_unset=True))
    except AgoraError as exc:
        undo(ctx, request, exc)
        return _detail(request, ctx, name, exc, {k: str(v) for k, v in raw.items()})
    return redirect(request, f"/models/{name}", f"Settings of {name} saved.")


def _settings_form(form: FormData) -> dict[str, object]:
    """The posted settings that were filled in (an empty box leaves a setting as it is)."""
    values: dict[str, object] = {}
    for s in (*SCALING, *TIMEOUTS):
        text = _last(form, s.name).strip()
        if text:
            values[s.name] = text
    for flag in _FLAGS:
        if form.getlist(flag):
            values[flag] = _last(form, flag) == "true"
    url = _last(form, "external_url").strip()
    if url:
        values["external_url"] = url
    key = _last(form, "external_key")
    if key:
        values["external_key"] = key
    return values


def _last(form: FormData, key: str) -> str:
    """The last value sent under ``key`` (a checkbox follows its hidden 'false')."""
    values = [v for v in form.getlist(key) if isinstance(v, str)]
    return values[-1] if values else ""


def _detail(
    request: Request,
    ctx: Ctx,
    name: str,
    error: AgoraError | None = None,
    submitted: dict[str, str] | None = None,
) -> Response:
    st = gateway.status(ctx, name)
    model = st.model
    values = {s.name: _number(getattr(model, s.name)) for s in (*SCALING, *TIMEOUTS)}
    values |= submitted or {}
    return render(
        request,
        ctx,
        "model.html",
        status=error.status if error else 200,
        model=model,
        row=_row(st),
        replicas=st.replicas,
        per_replica=st.per_replica,
        trainings=st.trainings,
        capacity=sum(1 for d in st.replicas if _ready(d)) * model.target_inflight,
        scaling=SCALING if model.source == "deployment" else (),
        timeouts=TIMEOUTS,
        values=values,
        can_manage=gateway.can_manage(ctx, model),
        error=error.detail if error else None,
        age=age,
    )


def _number(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --- API access -------------------------------------------------------------------------------


@router.get("/api-access")
def api_access(request: Request, ctx: PageCtx) -> Response:
    models = gateway.list_models(ctx)
    llms = [m.name for m in models if m.kind == "llm" and m.enabled]
    return render(
        request,
        ctx,
        "api_access.html",
        base_url=str(request.app.state.runtime.settings.public_url).rstrip("/") + "/v1",
        example_model=llms[0] if llms else "MODEL-NAME",
        models=models,
        member_of=[(p, role) for p, role in projects.list_projects(ctx) if role is not None],
    )
