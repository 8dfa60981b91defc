"""The model catalog: search, read, register in a project, change, remove, import (admins)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, StringConstraints

from agora.api.schemas import Plain, Strict
from agora.models import CatalogModule
from agora.services import catalog, serving
from agora.services.catalog import CatalogQuery, ImportReport

router = APIRouter(tags=["catalog"])
EntryName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
Label = Annotated[str | None, Query(max_length=64)]


class RunPublic(BaseModel):
    """How the entry runs here: "deepaas" and "template" name the deployment template and its
    default inputs; "none" says why not."""

    kind: str
    runnable: bool
    template: str | None
    inputs: dict[str, Any]
    entry_point: str | None
    package: str | None
    reason: str


class EntryBrief(BaseModel):
    name: str
    title: str
    summary: str
    tags: list[str]
    tasks: list[str]
    data_types: list[str]
    source: str
    project: str | None
    public: bool
    runnable: bool


class EntryPublic(EntryBrief):
    description: str
    authors: list[dict[str, Any]]
    license: str | None
    libraries: list[str]
    categories: list[str]
    links: dict[str, str]
    resources: dict[str, Any]
    versions: list[dict[str, Any]]
    dates: dict[str, str]
    run: RunPublic
    metadata_format: str
    metadata_version: str
    source_file: str | None
    commit: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class Facets(BaseModel):
    tags: list[str]
    tasks: list[str]
    data_types: list[str]


class CatalogPagePublic(BaseModel):
    items: list[EntryBrief]
    total: int
    page: int
    per_page: int
    pages: int
    facets: Facets


class EntryRegister(Strict):
    project: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    document: dict[str, Any] = Field(
        description="The module's metadata as in ai4-metadata.yml (v2) or metadata.json (v1)"
    )
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")] | None = Field(
        default=None, description="Its name in the catalog, unless agora.name gives one"
    )
    file: Annotated[str, StringConstraints(min_length=1, max_length=255), Plain] = Field(
        default="document", description="What problems call the document (e.g. its file name)"
    )


class EntryUpdate(Strict):
    document: dict[str, Any] | None = None
    public: bool | None = Field(default=None, description="Visible to everyone (administrators)")


class ImportIn(Strict):
    source: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="Import only this source (as GET /catalog/sources names it)"
    )


class SourcePublic(BaseModel):
    source: str
    #: Where it is read: the directory, or the checkout of a repository Agora clones.
    path: str
    kind: str
    #: The repository Agora clones and fetches (credentials masked) and its branch (None: the
    #: repository's default).
    url: str | None
    branch: str | None
    #: The commit a git checkout is at: the one the last import read.
    commit: str | None


class ProblemOut(BaseModel):
    file: str
    field: str
    message: str


class FileOutcomeOut(BaseModel):
    file: str
    source: str
    name: str | None
    status: str
    commit: str | None
    problems: list[ProblemOut]


class ImportOut(BaseModel):
    sources: list[str]
    added: int
    updated: int
    unchanged: int
    removed: int
    failed: int
    files: list[FileOutcomeOut]


def brief(m: CatalogModule) -> EntryBrief:
    return EntryBrief(
        name=m.name,
        title=m.title,
        summary=m.summary,
        tags=m.tags,
        tasks=m.tasks,
        data_types=m.data_types,
        source=m.source,
        project=m.project.name if m.project else None,
        public=m.public,
        runnable=m.run_kind != "none",
    )


def public(m: CatalogModule) -> EntryPublic:
    run = catalog.run_spec(m)
    return EntryPublic(
        **brief(m).model_dump(),
        description=m.description,
        authors=m.authors,
        license=m.license,
        libraries=m.libraries,
        categories=m.categories,
        links=m.links,
        resources=m.resources,
        versions=m.versions,
        dates=m.dates,
        run=RunPublic(
            kind=run.kind,
            runnable=run.kind != "none",
            template=run.template,
            inputs=run.inputs,
            entry_point=run.entry_point,
            package=run.package,
            reason=run.reason,
        ),
        metadata_format=m.metadata_format,
        metadata_version=m.metadata_version,
        source_file=m.source_file,
        commit=m.commit,
        created_at=m.created_at,
        updated_at=m.updated_at,
    )


def import_out(report: ImportReport) -> ImportOut:
    return ImportOut(
        sources=report.sources,
        added=report.count("added"),
        updated=report.count("updated"),
        unchanged=report.count("unchanged"),
        removed=report.count("removed"),
        failed=report.count("failed"),
        files=[
            FileOutcomeOut(
                file=f.file,
                source=f.source,
                name=f.name,
                status=f.status,
                commit=f.commit,
                problems=[
                    ProblemOut(file=p.file, field=p.field, message=p.message) for p in f.problems
                ],
            )
            for f in report.files
        ],
    )


from agora.api.deps import CtxDep  # noqa: E402 - after the models FastAPI resolves


@router.get("/catalog", response_model=CatalogPagePublic)
def search(
    ctx: CtxDep,
    q: Annotated[str, Query(max_length=200, description="Words in name, title, text, tags")] = "",
    tag: Label = None,
    task: Label = None,
    data_type: Label = None,
    project: Annotated[str | None, Query(max_length=64)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=catalog.MAX_PER_PAGE)] = 24,
) -> CatalogPagePublic:
    """Catalog entries you can see that match every word and filter, a page at a time."""
    query = CatalogQuery(q, tag, task, data_type, project, page, per_page)
    result = catalog.search(ctx, query)
    f = catalog.facets(ctx)
    return CatalogPagePublic(
        items=[brief(m) for m in result.items],
        total=result.total,
        page=result.page,
        per_page=result.per_page,
        pages=result.pages,
        facets=Facets(tags=f.tags, tasks=f.tasks, data_types=f.data_types),
    )


@router.post("/catalog", response_model=EntryPublic, status_code=201)
def register(body: EntryRegister, ctx: CtxDep) -> EntryPublic:
    """Register a module in a project (members); only its members see it."""
    module = catalog.register(ctx, body.project, body.document, name=body.name, file=body.file)
    return public(module)


@router.get("/catalog/sources", response_model=list[SourcePublic])
def list_sources(ctx: CtxDep) -> list[SourcePublic]:
    """The configured catalog sources (administrators)."""
    return [
        SourcePublic(
            source=s.label,
            path=str(s.path),
            kind=s.kind,
            url=s.remote.masked_url if s.remote else None,
            branch=s.remote.branch if s.remote else None,
            commit=s.commit(),
        )
        for s in catalog.sources(ctx)
    ]


@router.post("/catalog/import", response_model=ImportOut)
def import_sources(ctx: CtxDep, body: ImportIn | None = None) -> ImportOut:
    """(Re)import the configured sources (administrators); every problem per file."""
    return import_out(catalog.import_sources(ctx, body.source if body else None))


@router.get("/catalog/{name}", response_model=EntryPublic)
def get_entry(name: EntryName, ctx: CtxDep) -> EntryPublic:
    return public(catalog.get_module(ctx, name))


@router.patch("/catalog/{name}", response_model=EntryPublic)
def update_entry(name: EntryName, body: EntryUpdate, ctx: CtxDep) -> EntryPublic:
    """Replace a registered entry's document, or make an entry public or private (admins)."""
    return public(catalog.update(ctx, name, document=body.document, public=body.public))


@router.delete("/catalog/{name}", status_code=204)
def delete_entry(name: EntryName, ctx: CtxDep) -> None:
    catalog.delete(ctx, name)


class DeployRequest(Strict):
    """Deploy a catalog entry in a project: a DEEPaaS module becomes a served model (at
    ``/m/{name}``, scaled from zero by default), an app a deployment of its template."""

    project: Annotated[str, StringConstraints(min_length=1, max_length=64), Plain]
    name: Annotated[str, StringConstraints(min_length=1, max_length=128), Plain] | None = Field(
        default=None, description="The served model's (or deployment's) name; default the entry's"
    )
    inputs: dict[str, Any] | None = Field(
        default=None, description="Template inputs on top of the entry's (workers, cpus…)"
    )
    backends: list[Annotated[str, StringConstraints(max_length=64)]] | None = None
    min_replicas: Annotated[int, Field(ge=0, le=1000)] | None = None
    max_replicas: Annotated[int, Field(ge=0, le=1000)] | None = None
    target_inflight: Annotated[int, Field(ge=1, le=10000)] | None = None
    idle_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] | None = None
    queue_timeout: Annotated[float, Field(ge=0, le=86400)] | None = None
    total_timeout: Annotated[float, Field(gt=0, le=86400)] | None = None


class DeployedPublic(BaseModel):
    kind: str  # "model" or "deployment"
    name: str
    project: str
    #: Where it answers: /m/{name} for a served module, /d/{id}/ for an app.
    url: str


@router.post("/catalog/{name}/deploy", response_model=DeployedPublic, status_code=201)
def deploy_entry(name: EntryName, body: DeployRequest, ctx: CtxDep) -> DeployedPublic:
    spec = body.model_dump(exclude={"project"}, exclude_none=True)
    done = serving.deploy(ctx, name, body.project, spec)
    if done.model is not None:
        return DeployedPublic(
            kind="model", name=done.model.name, project=body.project, url=f"/m/{done.model.name}"
        )
    assert done.deployment is not None
    return DeployedPublic(
        kind="deployment",
        name=done.deployment.id,
        project=body.project,
        url=f"/d/{done.deployment.id}/",
    )
