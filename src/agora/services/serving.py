"""Running catalog entries: a DEEPaaS module becomes a served model (``/m/{name}``) in a project,
an app becomes a deployment of its template. What the catalog's "Deploy" and "Try it" do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agora.errors import InvalidInput
from agora.models import Deployment, GatewayModel
from agora.services import catalog, deployments, gateway
from agora.services.context import Ctx

#: Model settings a deploy request may carry on to the served model.
MODEL_SETTINGS = (
    "description",
    "backends",
    "min_replicas",
    "max_replicas",
    "target_inflight",
    "idle_seconds",
    "queue_timeout",
    "total_timeout",
)


@dataclass(frozen=True)
class Deployed:
    """What deploying an entry made: a served model, or a deployment of an app template."""

    model: GatewayModel | None = None
    deployment: Deployment | None = None


def served(ctx: Ctx, entry_name: str) -> list[GatewayModel]:
    """The caller's served models that run this catalog entry's module."""
    run = catalog.runnable(ctx, entry_name)
    if run.kind != "deepaas":
        return []
    return [
        m
        for m in gateway.list_models(ctx)
        if m.kind == "deepaas" and (m.inputs or {}).get("module") == run.entry_point
    ]


def deploy(ctx: Ctx, entry_name: str, project: str, spec: dict[str, Any]) -> Deployed:
    """Deploy a catalog entry in ``project``.

    ``spec`` may name the served model (default: the entry's name), template inputs that add to
    the entry's own (``workers``, ``cpus``…), and the model settings in ``MODEL_SETTINGS``.
    """
    run = catalog.runnable(ctx, entry_name)
    inputs = {**run.inputs, **(spec.get("inputs") or {})}
    if run.kind == "none":
        raise InvalidInput(f"'{entry_name}' cannot run on this platform: {run.reason}")
    if run.kind == "template":
        assert run.template is not None
        dep = deployments.create(
            ctx, project, run.template, inputs, spec.get("name"), spec.get("backends")
        )
        return Deployed(deployment=dep)
    if run.entry_point is not None:
        inputs["module"] = run.entry_point  # the entry decides which module runs
    body: dict[str, Any] = {
        "name": spec.get("name") or entry_name,
        "kind": "deepaas",
        "source": "deployment",
        "template": run.template or "deepaas-model",
        "project": project,
        "inputs": inputs,
    }
    for key in MODEL_SETTINGS:
        if spec.get(key) is not None:
            body[key] = spec[key]
    if not body.get("description"):
        body["description"] = catalog.get_module(ctx, entry_name).title
    return Deployed(model=gateway.create_model(ctx, body))
