"""Module metadata as AI4OS writes it, read into one catalog entry.

Two formats are accepted as they are found in module repositories:

- ``ai4-metadata.yml`` / ``.json``, version 2 (``metadata_version: 2.x.y``), the schema of
  https://github.com/ai4os/ai4-metadata;
- the legacy DEEP ``metadata.json`` (version 1: ``keywords``, ``sources``, ``tosca``, a
  ``description`` that may be a list of paragraphs).

Either may carry an ``agora`` block, Agora's extension, saying how the module runs here::

    agora:
      entry_point: iris          # a DEEPaaS v2 entry point -> the deepaas-model template
      package: agora-iris        # optional: the Python distribution that provides it
    # or
    agora:
      template: jupyterlab       # any deployment template, with default inputs
      inputs: {image: …}

and optionally ``name``, ``authors``, ``license`` and ``versions``. Without one the module is
listed but not runnable here. ``parse`` checks everything before it gives up: its
``MetadataError`` lists every problem, each with its file and field path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from agora.catalog.formats import (
    NAME_PATTERN,
    V1_ONLY,
    AgoraBlock,
    MetadataV1,
    MetadataV2,
    Resources,
    SourcesV1,
)

#: The template a module serving the DEEPaaS v2 interface is deployed with.
DEEPAAS_TEMPLATE = "deepaas-model"
NAME = re.compile(NAME_PATTERN)
#: Paths under /api/v1/catalog/ that are not entries.
RESERVED_NAMES = frozenset({"sources", "import"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one metadata file, at one field path ("" for the whole file)."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}: {self.field}: {self.message}"
            if self.field
            else (f"{self.file}: {self.message}")
        )


class MetadataError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


# --- the catalog entry -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """How a module runs here: ``kind`` is "deepaas", "template" or "none"."""

    kind: Literal["deepaas", "template", "none"]
    template: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    entry_point: str | None = None
    package: str | None = None
    #: Why it does not run here (kind "none"), for people.
    reason: str = ""


@dataclass
class ModuleSpec:
    """One catalog entry, whatever format it came from."""

    name: str
    title: str
    summary: str
    description: str
    metadata_format: Literal["ai4-v2", "deep-v1"]
    metadata_version: str
    authors: list[dict[str, Any]] = field(default_factory=list)
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    data_types: list[str] = field(default_factory=list)
    libraries: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)
    dates: dict[str, str] = field(default_factory=dict)
    run: RunSpec = field(default_factory=lambda: RunSpec("none"))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _problems(file: str, exc: ValidationError) -> list[Problem]:
    found = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "missing":
            message = "required"
        elif err.get("type") == "extra_forbidden":
            message = "not a known field"
        found.append(Problem(file, _loc(tuple(err.get("loc", ()))), message))
    return found


def _nul_paths(value: Any, path: str = "") -> list[str]:
    """Where strings hold NUL characters (no database stores them in text)."""
    if isinstance(value, str):
        return [path or "(document)"] if "\x00" in value else []
    if isinstance(value, dict):
        found = [path or "(document)"] if any("\x00" in str(k) for k in value) else []
        for key, item in value.items():
            found += _nul_paths(item, f"{path}.{key}" if path else str(key))
        return found
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _nul_paths(item, f"{path}[{i}]")]
    return []


def detect_format(doc: dict[str, Any]) -> Literal["ai4-v2", "deep-v1"] | None:
    version = doc.get("metadata_version")
    if version is None:
        return "deep-v1"
    if isinstance(version, str) and version.split(".")[0] == "2":
        return "ai4-v2"
    return None


def parse(doc: Any, *, file: str, name: str | None = None) -> ModuleSpec:
    """The entry a metadata document describes; MetadataError lists every problem.

    ``name`` is the default name (a directory's); the ``agora.name`` field overrides it.
    """
    if not isinstance(doc, dict):
        raise MetadataError([Problem(file, "", "the document must be a mapping of fields")])
    fmt = detect_format(doc)
    if fmt is None:
        version = doc.get("metadata_version")
        raise MetadataError(
            [Problem(file, "metadata_version", f"unsupported version {version!r} (use 2.x.y)")]
        )
    problems = [Problem(file, path, "contains a NUL character") for path in _nul_paths(doc)]
    if fmt == "ai4-v2":
        problems += [
            Problem(file, key, "a version 1 field, not allowed with metadata_version 2")
            for key in V1_ONLY
            if key in doc
        ]
    try:
        spec = (
            _from_v2(MetadataV2.model_validate(doc))
            if fmt == "ai4-v2"
            else (_from_v1(MetadataV1.model_validate(doc)))
        )
    except ValidationError as exc:
        raise MetadataError(problems + _problems(file, exc)) from exc
    agora = doc.get("agora") or {}
    chosen = (agora.get("name") if isinstance(agora, dict) else None) or name
    if not chosen:
        problems.append(Problem(file, "agora.name", "required: the module's name in the catalog"))
    elif not NAME.match(chosen):
        problems.append(
            Problem(file, "agora.name", f"{chosen!r}: use 1-64 lower-case letters, digits, . _ -")
        )
    elif chosen in RESERVED_NAMES:
        problems.append(Problem(file, "agora.name", f"{chosen!r} is reserved; choose another"))
    if agora and isinstance(agora, dict) and agora.get("entry_point") and agora.get("template"):
        problems.append(Problem(file, "agora", "give entry_point or template, not both"))
    if problems:
        raise MetadataError(problems)
    spec.name = str(chosen)
    return spec


def _run(agora: AgoraBlock | None, docker_image: str | None) -> RunSpec:
    if agora is not None and agora.entry_point:
        inputs = {**agora.inputs, "module": agora.entry_point}
        return RunSpec(
            "deepaas",
            DEEPAAS_TEMPLATE,
            inputs,
            entry_point=agora.entry_point,
            package=agora.package,
        )
    if agora is not None and agora.template:
        return RunSpec("template", agora.template, dict(agora.inputs))
    if docker_image:
        reason = f"Only a Docker image is published ({docker_image}); it does not run here."
    else:
        reason = "The module does not say how it runs on this platform."
    return RunSpec("none", reason=reason)


def _extension(spec: ModuleSpec, agora: AgoraBlock | None) -> None:
    if agora is None:
        return
    spec.authors = [a.model_dump(exclude_none=True) for a in agora.authors]
    spec.license = agora.license or spec.license
    spec.versions = [v.model_dump(mode="json") for v in agora.versions]


def _from_v2(m: MetadataV2) -> ModuleSpec:
    links = m.links
    spec = ModuleSpec(
        name="",
        title=m.title,
        summary=m.summary,
        description=m.description,
        metadata_format="ai4-v2",
        metadata_version=m.metadata_version,
        license=m.license,
        tags=list(m.tags),
        tasks=list(m.tasks),
        data_types=list(m.data_type),
        libraries=list(m.libraries),
        categories=list(m.categories),
        links=_drop_none(
            source=links.source_code,
            documentation=links.documentation,
            docker_image=links.docker_image,
            dataset=links.dataset,
            weights=links.weights,
            citation=links.citation,
            base_model=links.base_model,
            doi=_doi_url(m.doi) or links.zenodo_doi,
        ),
        resources={
            k: v.model_dump(exclude_none=True)
            for k, v in (("inference", _r(m, "inference")), ("training", _r(m, "training")))
            if v is not None
        },
        dates=(
            {"created": m.dates.created.isoformat(), "updated": m.dates.updated.isoformat()}
            if m.dates
            else {}
        ),
        run=_run(m.agora, links.docker_image),
    )
    _extension(spec, m.agora)
    return spec


def _r(m: MetadataV2, kind: str) -> Resources | None:
    return getattr(m.resources, kind) if m.resources else None


def _from_v1(m: MetadataV1) -> ModuleSpec:
    sources = m.sources or SourcesV1()
    image = sources.docker_registry_repo
    spec = ModuleSpec(
        name="",
        title=m.title,
        summary=m.summary,
        description=m.description,
        metadata_format="deep-v1",
        metadata_version="1",
        license=m.license,
        tags=list(m.keywords),
        links=_drop_none(
            source=sources.code or sources.dockerfile_repo,
            docker_image=image,
            dataset=m.dataset_url,
            weights=sources.pre_trained_weights or m.training_files_url,
            citation=m.cite_url,
            doi=_doi_url(m.doi),
        ),
        dates={"created": m.date_creation.isoformat()} if m.date_creation else {},
        run=_run(m.agora, image),
    )
    _extension(spec, m.agora)
    return spec


def _doi_url(doi: str | None) -> str | None:
    if not doi:
        return None
    return doi if doi.startswith(("http://", "https://")) else f"https://doi.org/{doi}"


def _drop_none(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v}
