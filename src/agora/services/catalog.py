"""The model catalog: entries people find, read about and run.

Entries come from sources on disk that operators configure (imported at start and on demand,
public) and from projects whose members register them (visible to those members only until an
administrator makes them public). Every change is audited; reading goes through ``_visible``,
so a project's private entries answer 404 to everyone else.

How an entry runs, for the pages and routes that start it: ``runnable(ctx, name)`` (visibility
checked) or ``run_spec(module)`` (a row at hand) give a ``RunSpec``: kind "deepaas" (template
``deepaas-model``, inputs ``{"module": <entry point>}``), "template" (any template with its
default inputs) or "none" (with the reason, for people).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, or_, select, true
from sqlalchemy.exc import IntegrityError

from agora.catalog import git
from agora.catalog.metadata import MetadataError, ModuleSpec, Problem, RunSpec, parse
from agora.catalog.sources import FileResult, Source, configured, scan
from agora.db import utcnow
from agora.errors import Conflict, Forbidden, InvalidInput, NotFound
from agora.models import CatalogLabel, CatalogModule, Membership, Role
from agora.runtime import Runtime
from agora.services import access, audit
from agora.services.context import Ctx

log = logging.getLogger("agora.catalog")
IMPORTED = ("builtin", "directory", "git")
MAX_PER_PAGE = 100
_LABEL_KINDS = {"tag": "tags", "task": "tasks", "data_type": "data_types"}


@dataclass(frozen=True)
class CatalogQuery:
    text: str = ""
    tag: str | None = None
    task: str | None = None
    data_type: str | None = None
    #: Only the entries registered in this project.
    project: str | None = None
    page: int = 1
    per_page: int = 24


@dataclass(frozen=True)
class CatalogPage:
    items: list[CatalogModule]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class Facets:
    """The tags, tasks and data types of the entries the caller can see, for filters."""

    tags: list[str]
    tasks: list[str]
    data_types: list[str]


@dataclass
class FileOutcome:
    file: str
    source: str
    name: str | None
    #: "added", "updated", "unchanged", "removed" or "failed".
    status: str
    commit: str | None = None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class ImportReport:
    sources: list[str]
    files: list[FileOutcome]

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def changed(self) -> bool:
        return any(f.status in ("added", "updated", "removed") for f in self.files)


# --- reading ----------------------------------------------------------------------------------


def _member_projects(ctx: Ctx) -> set[int]:
    p = access.principal(ctx)
    if p.project_id is not None:
        return {p.project_id}
    return set(ctx.db.scalars(select(Membership.project_id).where(Membership.user_id == p.user_id)))


def _visible(ctx: Ctx) -> ColumnElement[bool]:
    p = access.principal(ctx)
    access.require_scope(p, "read")
    if p.is_admin:
        return true()
    return or_(CatalogModule.public, CatalogModule.project_id.in_(_member_projects(ctx)))


def _label(kind: str, value: str) -> ColumnElement[bool]:
    return exists().where(
        CatalogLabel.module_id == CatalogModule.id,
        CatalogLabel.kind == kind,
        CatalogLabel.value == value.strip().lower()[:64],
    )


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(ctx: Ctx, q: CatalogQuery) -> Select[CatalogModule]:
    stmt = select(CatalogModule).where(_visible(ctx))
    for word in q.text.lower().split():
        stmt = stmt.where(CatalogModule.search_text.like(f"%{_escape_like(word)}%", escape="\\"))
    for kind, value in (("tag", q.tag), ("task", q.task), ("data_type", q.data_type)):
        if value:
            stmt = stmt.where(_label(kind, value))
    if q.project:
        project, _ = access.project_access(ctx, q.project, Role.viewer, write=False)
        stmt = stmt.where(CatalogModule.project_id == project.id)
    return stmt


def search(ctx: Ctx, q: CatalogQuery) -> CatalogPage:
    """A page of the entries the caller can see that match every word and filter."""
    if q.page < 1 or not 1 <= q.per_page <= MAX_PER_PAGE:
        raise InvalidInput(f"'page' starts at 1 and 'per_page' is 1-{MAX_PER_PAGE}")
    stmt = _filtered(ctx, q)
    total = ctx.db.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = ctx.db.scalars(
        stmt.order_by(CatalogModule.name).offset((q.page - 1) * q.per_page).limit(q.per_page)
    ).all()
    return CatalogPage(list(items), total, q.page, q.per_page)


def facets(ctx: Ctx) -> Facets:
    rows = ctx.db.execute(
        select(CatalogModule.tags, CatalogModule.tasks, CatalogModule.data_types).where(
            _visible(ctx)
        )
    ).all()
    found: dict[str, dict[str, str]] = {"tags": {}, "tasks": {}, "data_types": {}}
    for tags, tasks, data_types in rows:
        for kind, values in (("tags", tags), ("tasks", tasks), ("data_types", data_types)):
            for value in values or []:
                found[kind].setdefault(value.lower(), value)
    return Facets(
        *(sorted(found[k].values(), key=str.lower) for k in ("tags", "tasks", "data_types"))
    )


def _module(ctx: Ctx, name: str) -> CatalogModule:
    module = ctx.db.scalar(select(CatalogModule).where(CatalogModule.name == name, _visible(ctx)))
    if module is None:
        raise NotFound(f"There is no catalog entry '{name}'")
    return module


def get_module(ctx: Ctx, name: str) -> CatalogModule:
    return _module(ctx, name)


def run_spec(module: CatalogModule) -> RunSpec:
    """How an entry runs on this platform (see the module docstring)."""
    if module.run_kind == "deepaas":
        return RunSpec(
            "deepaas",
            module.template,
            dict(module.inputs),
            entry_point=module.entry_point,
            package=module.package,
        )
    if module.run_kind == "template":
        return RunSpec("template", module.template, dict(module.inputs))
    return RunSpec("none", reason=module.not_runnable_reason)


def runnable(ctx: Ctx, name: str) -> RunSpec:
    """How the entry ``name`` runs, if the caller can see it (NotFound otherwise)."""
    return run_spec(_module(ctx, name))


# --- writing ----------------------------------------------------------------------------------


def _apply(module: CatalogModule, spec: ModuleSpec, document: dict[str, Any]) -> None:
    run = spec.run
    module.name = spec.name
    module.title = spec.title
    module.summary = spec.summary
    module.description = spec.description
    module.authors = spec.authors
    module.license = spec.license
    module.tags = spec.tags
    module.tasks = spec.tasks
    module.data_types = spec.data_types
    module.libraries = spec.libraries
    module.categories = spec.categories
    module.links = spec.links
    module.resources = spec.resources
    module.versions = spec.versions
    module.dates = spec.dates
    module.run_kind = run.kind
    module.template = run.template
    module.inputs = run.inputs
    module.entry_point = run.entry_point
    module.package = run.package
    module.not_runnable_reason = run.reason
    module.metadata_format = spec.metadata_format
    module.metadata_version = spec.metadata_version
    module.document = document
    module.search_text = "\n".join(
        [spec.name, spec.title, spec.summary, spec.description, *spec.tags, *spec.tasks]
        + spec.data_types
    ).lower()
    module.updated_at = utcnow()
    wanted = {
        (kind, value.strip().lower()[:64])
        for kind, attr in _LABEL_KINDS.items()
        for value in getattr(spec, attr)
    }
    for label in list(module.labels):
        if (label.kind, label.value) in wanted:
            wanted.discard((label.kind, label.value))
        else:
            module.labels.remove(label)
    module.labels.extend(CatalogLabel(kind=k, value=v) for k, v in sorted(wanted))


def _check_template(ctx: Ctx, spec: ModuleSpec, file: str) -> None:
    template = spec.run.template
    if spec.run.kind == "template" and template not in ctx.runtime.templates:
        raise MetadataError([Problem(file, "agora.template", f"there is no template {template!r}")])


def _invalid(problems: list[Problem]) -> InvalidInput:
    first = problems[0]
    detail = str(first)
    if len(problems) > 1:
        detail += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return InvalidInput(
        detail,
        problems=[{"file": p.file, "field": p.field, "message": p.message} for p in problems],
    )


def _parse(ctx: Ctx, document: Any, file: str, name: str | None) -> ModuleSpec:
    try:
        spec = parse(document, file=file, name=name)
        _check_template(ctx, spec, file)
    except MetadataError as exc:
        raise _invalid(exc.problems) from exc
    return spec


def register(
    ctx: Ctx,
    project_name: str,
    document: Any,
    *,
    name: str | None = None,
    file: str = "document",
) -> CatalogModule:
    """Add an entry to a project's catalog (members and owners); private to its members."""
    project, _ = access.project_access(ctx, project_name, Role.member, write=True)
    spec = _parse(ctx, document, file, name)
    if ctx.db.scalar(select(CatalogModule.id).where(CatalogModule.name == spec.name)):
        raise Conflict(f"A catalog entry named '{spec.name}' exists already; choose another name")
    module = CatalogModule(
        source="project",
        source_file=file,
        public=False,
        project_id=project.id,
        owner_id=access.principal(ctx).user_id,
    )
    _apply(module, spec, document)
    ctx.db.add(module)
    ctx.db.flush()
    audit.record(
        ctx,
        "catalog.register",
        f"catalog:{spec.name}",
        project_id=project.id,
        project=project.name,
        details={"format": spec.metadata_format, "runs": spec.run.kind},
    )
    return module


def _may_change(ctx: Ctx, module: CatalogModule) -> None:
    p = access.principal(ctx)
    if p.is_admin:
        access.require_scope(p, "manage")
        return
    if module.source != "project" or module.project is None:
        raise Forbidden("Only platform administrators may change imported catalog entries")
    if module.project_id not in _member_projects(ctx):
        raise Forbidden(f"Only members of project '{module.project.name}' may change this entry")
    access.project_access(ctx, module.project.name, Role.member, write=True)


def update(
    ctx: Ctx, name: str, *, document: Any = None, public: bool | None = None
) -> CatalogModule:
    """Replace a registered entry's document (its project's members) or publish it (admins)."""
    module = _module(ctx, name)
    _may_change(ctx, module)
    changes: dict[str, Any] = {}
    if public is not None and public != module.public:
        access.require_admin(ctx)
        module.public = public
        changes["public"] = public
    if document is not None:
        if module.source != "project":
            raise Conflict(
                f"'{name}' is imported from {module.source_path}: change its file there and "
                "import again"
            )
        spec = _parse(ctx, document, module.source_file or "document", name)
        if spec.name != name:
            raise InvalidInput(f"agora.name: an entry keeps its name ('{name}')")
        _apply(module, spec, document)
        changes["document"] = {"format": spec.metadata_format, "runs": spec.run.kind}
    project = module.project
    audit.record(
        ctx,
        "catalog.update",
        f"catalog:{name}",
        project_id=project.id if project else None,
        project=project.name if project else None,
        details={"changes": changes},
    )
    ctx.db.flush()
    return module


def delete(ctx: Ctx, name: str) -> None:
    """Remove an entry. An imported one comes back with the next import unless its file goes."""
    module = _module(ctx, name)
    _may_change(ctx, module)
    project = module.project
    audit.record(
        ctx,
        "catalog.delete",
        f"catalog:{name}",
        project_id=project.id if project else None,
        project=project.name if project else None,
        details={"source": module.source},
    )
    ctx.db.delete(module)
    ctx.db.flush()


# --- importing --------------------------------------------------------------------------------


def sources(ctx: Ctx) -> list[Source]:
    access.require_admin(ctx)
    return _sources(ctx.runtime)


def _sources(runtime: Runtime) -> list[Source]:
    s = runtime.settings
    return configured(
        s.catalog_dirs,
        builtin=s.catalog_builtin,
        remotes=[git.Remote.parse(url) for url in s.catalog_git],
        checkouts=s.catalog_checkouts_dir,
    )


def import_sources(ctx: Ctx, only: str | None = None) -> ImportReport:
    """(Re)import every configured source, or the one labelled ``only`` (administrators)."""
    access.require_admin(ctx)
    chosen = [s for s in _sources(ctx.runtime) if only is None or s.label == only]
    if only is not None and not chosen:
        raise NotFound(f"There is no catalog source '{only}' (see GET /api/v1/catalog/sources)")
    report = _import(ctx, chosen, _update_checkouts(ctx.runtime, chosen), everything=only is None)
    _audit_import(ctx, report)
    return report


def import_at_startup(runtime: Runtime) -> ImportReport | None:
    """Import every source as the system; a failure is logged, never fatal to the start."""
    chosen = _sources(runtime)
    failures = _update_checkouts(runtime, chosen)
    try:
        with runtime.db.transaction() as db:
            ctx = Ctx(db=db, runtime=runtime)
            report = _import(ctx, chosen, failures, everything=True)
            if report.changed:
                _audit_import(ctx, report, actor="system")
    except IntegrityError:  # another replica imported at the same moment: its result stands
        log.info("catalog import raced with another process; skipped")
        return None
    for outcome in report.files:
        for problem in outcome.problems:
            log.warning("catalog entry not imported: %s", problem)
    return report


def _audit_import(ctx: Ctx, report: ImportReport, actor: str | None = None) -> None:
    by_status: dict[str, list[str]] = {}
    for f in report.files:
        if f.status != "unchanged":
            by_status.setdefault(f.status, []).append(f.name or f.file)
    audit.record(
        ctx,
        "catalog.import",
        "catalog:" + (",".join(report.sources) or "-"),
        outcome="success" if not by_status.get("failed") else "partial",
        details={k: v[:100] for k, v in by_status.items()},
        actor=actor,
    )


def _update_checkouts(runtime: Runtime, chosen: list[Source]) -> dict[Source, git.GitFailure]:
    """Clone or fetch the repositories among ``chosen`` (before any database write: this may
    take minutes); what failed, by source."""
    failures: dict[Source, git.GitFailure] = {}
    keep = {s.path.name for s in _sources(runtime) if s.remote is not None}
    for name in git.prune(runtime.settings.catalog_checkouts_dir, keep):
        log.info("catalog: removed the checkout %s (its repository is no longer configured)", name)
    for source in chosen:
        if source.remote is None:
            continue
        log.info("catalog: updating %s in %s", source.label, source.path)
        try:
            git.update(source.remote, source.path, runtime.settings.catalog_git_timeout)
        except git.GitFailure as exc:
            failures[source] = exc
    return failures


def _checkout_failed(source: Source, failure: git.GitFailure) -> FileOutcome:
    commit = source.commit()
    if isinstance(failure, git.SubmoduleFailure):
        consequence = "modules of the missing submodules keep their entries"
    elif commit is not None:
        consequence = f"the entries read at commit {commit[:12]} are kept"
    else:
        consequence = "check the URL, the branch and that this server may read the repository"
    problem = Problem(source.label, "", f"{failure}; {consequence}")
    return FileOutcome(source.label, source.label, None, "failed", problems=[problem])


def _import(
    ctx: Ctx,
    chosen: list[Source],
    failures: dict[Source, git.GitFailure],
    *,
    everything: bool = False,
) -> ImportReport:
    """Import ``chosen``; ``everything``: they are all the configured sources, so the entries
    of a source no longer configured (a directory or repository the operator removed) go."""
    report = ImportReport([s.label for s in chosen], [])
    claimed: dict[str, str] = {}
    for source in chosen:
        failure = failures.get(source)
        if failure is not None:
            report.files.append(_checkout_failed(source, failure))
            if not isinstance(failure, git.SubmoduleFailure):
                continue  # the checkout is as the last import read it: keep its entries
        results = scan(source)
        if len(results) == 1 and results[0].spec is None and results[0].file == str(source.path):
            # The directory itself is missing: keep its entries until it is back.
            report.files.append(_failed(results[0]))
            continue
        kept_files = {r.file for r in results if r.spec is None}
        seen: set[str] = set()
        for result in results:
            outcome = _import_one(ctx, source, result, claimed)
            if outcome.status != "failed" and outcome.name:
                seen.add(outcome.name)
            report.files.append(outcome)
        if failure is not None:
            continue  # submodules are missing, not gone: remove nothing
        stale = ctx.db.scalars(
            select(CatalogModule).where(
                CatalogModule.source.in_(IMPORTED), CatalogModule.source_path == str(source.path)
            )
        ).all()
        for module in stale:
            if module.name not in seen and module.source_file not in kept_files:
                report.files.append(
                    FileOutcome(module.source_file or "", source.label, module.name, "removed")
                )
                ctx.db.delete(module)
    if everything:
        configured_paths = {str(source.path) for source in chosen}
        gone = ctx.db.scalars(
            select(CatalogModule).where(
                CatalogModule.source.in_(IMPORTED),
                CatalogModule.source_path.not_in(configured_paths),
            )
        ).all()
        for module in gone:
            report.files.append(
                FileOutcome(
                    module.source_file or "", module.source_path or "", module.name, "removed"
                )
            )
            ctx.db.delete(module)
    ctx.db.flush()
    return report


def _failed(result: FileResult, problems: list[Problem] | None = None) -> FileOutcome:
    return FileOutcome(
        result.file,
        result.source.label,
        result.spec.name if result.spec else None,
        "failed",
        problems=problems or result.problems,
    )


def _import_one(
    ctx: Ctx, source: Source, result: FileResult, claimed: dict[str, str]
) -> FileOutcome:
    spec = result.spec
    if spec is None:
        return _failed(result)
    try:
        _check_template(ctx, spec, result.file)
    except MetadataError as exc:
        return _failed(result, exc.problems)
    if spec.name in claimed:
        where = f"{claimed[spec.name]} has that name already"
        return _failed(result, [Problem(result.file, "agora.name", f"'{spec.name}': {where}")])
    claimed[spec.name] = result.file
    module = ctx.db.scalar(select(CatalogModule).where(CatalogModule.name == spec.name))
    if module is not None and (
        module.source not in IMPORTED or module.source_path != str(source.path)
    ):
        owner = "a project's entry" if module.source == "project" else module.source_path
        problem = Problem(result.file, "agora.name", f"'{spec.name}' is taken by {owner}")
        return _failed(result, [problem])
    document = _document_of(result)
    status = "added"
    if module is None:
        module = CatalogModule(public=True)
        ctx.db.add(module)
    elif module.document == document and module.commit == result.commit:
        return FileOutcome(result.file, source.label, spec.name, "unchanged", result.commit)
    else:
        status = "updated"
    module.source = source.kind
    module.source_path = str(source.path)
    module.source_file = result.file
    module.commit = result.commit
    _apply(module, spec, document)
    return FileOutcome(result.file, source.label, spec.name, status, result.commit)


def _document_of(result: FileResult) -> dict[str, Any]:
    doc = result.document
    return doc if isinstance(doc, dict) else {}
