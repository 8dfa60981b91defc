"""The two metadata formats as pydantic models, checked as their schemas say.

- ``MetadataV2``: ``ai4-metadata.yml``/``.json`` (https://github.com/ai4os/ai4-metadata,
  ``metadata_version`` 2.x.y), plus ``license``, which real modules add;
- ``MetadataV1``: the legacy DEEP ``metadata.json``;
- ``AgoraBlock``: Agora's ``agora`` extension block, the same in both.

Unknown top-level fields are kept (both formats grow); inside ``agora`` they are refused.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"

TASKS = (
    "Computer Vision",
    "Natural Language Processing",
    "Time Series",
    "Recommender Systems",
    "Anomaly Detection",
    "Regression",
    "Classification",
    "Clustering",
    "Dimensionality Reduction",
    "Generative Models",
    "Graph Neural Networks",
    "Optimization",
    "Reinforcement Learning",
    "Transfer Learning",
    "Uncertainty Estimation",
    "Other",
)
DATA_TYPES = ("Image", "Text", "Time Series", "Tabular", "Graph", "Audio", "Video", "Other")
CATEGORIES = ("AI4 pre trained", "AI4 trainable", "AI4 inference", "AI4 tools")
LIBRARIES = (
    "TensorFlow",
    "PyTorch",
    "Keras",
    "Scikit-learn",
    "XGBoost",
    "LightGBM",
    "CatBoost",
    "Other",
)
#: Fields of version 1 that version 2 forbids (the v2 schema's ``not: anyOf``).
V1_ONLY = ("tosca", "sources", "dataset_url", "cite_url", "date_creation", "keywords")


# --- shared field types ------------------------------------------------------------------------


def _url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not a URL (http:// or https://)")
    return value.strip()


def _one_of(choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of: {', '.join(choices)}")
        return value

    return AfterValidator(check)


def _paragraphs(value: Any) -> Any:
    """v1 descriptions are often a list of lines or paragraphs."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return value


def _date(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date()
    return value


Url = Annotated[str, AfterValidator(_url)]
Short = Annotated[str, Field(min_length=1, max_length=200)]
Day = Annotated[dt.date, BeforeValidator(_date)]
Tags = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=64)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)


class Resources(BaseModel):
    #: The schema leaves resource blocks open: keys it does not name are ignored, not refused.
    model_config = ConfigDict(extra="ignore")

    cpu: int | None = Field(default=None, ge=0)
    gpu: int | None = Field(default=None, ge=0)
    memory_MB: int | None = Field(default=None, ge=0)  # noqa: N815 - the schema's spelling
    gpu_memory_MB: int | None = Field(default=None, ge=0)  # noqa: N815
    gpu_compute_capability: float | None = Field(default=None, ge=0)
    storage_MB: int | None = Field(default=None, ge=0)  # noqa: N815


class Version(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[str, Field(min_length=1, max_length=64)]
    date: Day | None = None
    notes: str = ""


class Author(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Short
    email: str | None = None
    affiliation: str | None = None
    orcid: str | None = None


def _authors(value: Any) -> Any:
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


class AgoraBlock(BaseModel):
    """The ``agora`` extension block."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    entry_point: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    package: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    template: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    inputs: dict[str, Any] = Field(default_factory=dict)
    authors: Annotated[list[Author], BeforeValidator(_authors)] = Field(default_factory=list)
    license: Annotated[str, Field(max_length=128)] | None = None
    versions: list[Version] = Field(default_factory=list)


# --- version 2 (ai4-metadata) -----------------------------------------------------------------


class LinksV2(_Doc):
    source_code: Url
    documentation: Url | None = None
    #: Real modules write an image name ("ai4oshub/demo-app") as often as a URL: not checked.
    docker_image: str | None = None
    zenodo_doi: Url | None = None
    dataset: Url | None = None
    weights: Url | None = None
    citation: Url | None = None
    base_model: Url | None = None
    self: Url | None = None


class DatesV2(_Doc):
    created: Day
    updated: Day


class ResourcesV2(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inference: Resources | None = None
    training: Resources | None = None


class MetadataV2(_Doc):
    metadata_version: Annotated[str, Field(pattern=r"^2\.[0-9]{1,6}\.[0-9]{1,6}$")]
    title: Short
    summary: Annotated[str, Field(min_length=1, max_length=1000)]
    description: str
    doi: str | None = None
    links: LinksV2
    dates: DatesV2 | None = None
    libraries: list[Annotated[str, _one_of(LIBRARIES)]]
    tasks: list[Annotated[str, _one_of(TASKS)]]
    categories: list[Annotated[str, _one_of(CATEGORIES)]]
    tags: Tags
    data_type: list[Annotated[str, _one_of(DATA_TYPES)]] = Field(
        default_factory=list, alias="data-type"
    )
    resources: ResourcesV2 | None = None
    license: Annotated[str, Field(max_length=128)] | None = None
    agora: AgoraBlock | None = None


# --- version 1 (DEEP metadata.json) -----------------------------------------------------------


class SourcesV1(_Doc):
    dockerfile_repo: Url | None = None
    docker_registry_repo: str | None = None
    code: Url | None = None
    pre_trained_weights: Url | None = None


class ToscaV1(_Doc):
    title: str = ""
    url: Url | None = None
    inputs: list[str] = Field(default_factory=list)


class MetadataV1(_Doc):
    title: Short
    summary: Annotated[str, Field(min_length=1, max_length=1000)]
    description: Annotated[str, BeforeValidator(_paragraphs)] = ""
    keywords: Tags = Field(default_factory=list)
    license: Annotated[str, Field(max_length=128)] | None = None
    date_creation: Day | None = None
    dataset_url: Url | None = None
    training_files_url: Url | None = None
    cite_url: Url | None = None
    doi: str | None = None
    sources: SourcesV1 | None = None
    continuous_integration: dict[str, Any] = Field(default_factory=dict)
    tosca: list[ToscaV1] = Field(default_factory=list)
    agora: AgoraBlock | None = None
