"""ORM models of the foundation: identity, tenancy, credentials and the audit trail."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from agora.db import Base, UTCDateTime, utcnow


class Role(enum.StrEnum):
    viewer = "viewer"
    member = "member"
    owner = "owner"

    @property
    def rank(self) -> int:
        return {"viewer": 1, "member": 2, "owner": 3}[self.value]


class Scope(enum.StrEnum):
    read = "read"
    manage = "manage"
    inference = "inference"
    admin = "admin"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Fernet-encrypted TOTP secret (None when off); ``totp_pending`` holds one being enrolled.
    totp_secret: Mapped[str | None] = mapped_column(String(255))
    totp_pending: Mapped[str | None] = mapped_column(String(255))
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    @property
    def totp_enabled(self) -> bool:
        return self.totp_secret is not None


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="project", cascade="all, delete-orphan"
    )


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    #: "local" when set by a person, "oidc" when it follows identity-provider claims.
    source: Mapped[str] = mapped_column(String(16), default="local")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    project: Mapped[Project] = relationship(back_populates="memberships")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    #: First characters of the key, safe to show ("agora_Ab3x…").
    prefix: Mapped[str] = mapped_column(String(16))
    #: SHA-256 of the whole key: keys carry 256 random bits, so a slow hash adds nothing.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()
    project: Mapped[Project] = relationship()


class AuthSession(Base):
    """A signed-in browser (kind "web") or a CLI login (kind "cli")."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    current_project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    client_addr: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship()


class LoginThrottle(Base):
    """Failed-login state per attempted username, known or not (so it reveals nothing)."""

    __tablename__ = "login_throttle"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class SystemSetting(Base):
    __tablename__ = "system_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class AuditEntry(Base):
    """One line of the append-only, hash-chained audit trail.

    ``project_id`` is deliberately not a foreign key: entries outlive what they describe.
    """

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    actor_id: Mapped[int | None] = mapped_column(Integer, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[int | None] = mapped_column(Integer, index=True)
    project: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """A single row naming the chain's tip; updating it first serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class DeploymentState(enum.StrEnum):
    pending = "pending"
    submitted = "submitted"
    starting = "starting"
    running = "running"
    stopping = "stopping"
    stopped = "stopped"
    failed = "failed"

    @property
    def terminal(self) -> bool:
        return self in (DeploymentState.stopped, DeploymentState.failed)


class Deployment(Base):
    """A service or batch job started from a template; the orchestrator drives its ``state``
    towards ``desired``."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    #: Input values without secrets; secrets are kept encrypted in ``secret_inputs``.
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secret_inputs: Mapped[str | None] = mapped_column(Text)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpu_type: Mapped[str | None] = mapped_column(String(32))
    time_limit_minutes: Mapped[int] = mapped_column(Integer)
    #: Allowed backends, in the order they are tried.
    backends: Mapped[list[str]] = mapped_column(JSON)
    desired: Mapped[str] = mapped_column(String(8), default="running")
    state: Mapped[DeploymentState] = mapped_column(
        Enum(DeploymentState, native_enum=False, length=16), index=True
    )
    reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    #: host:port the service announced; reached only through the platform's proxy.
    address: Mapped[str | None] = mapped_column(String(255))
    readiness_path: Mapped[str | None] = mapped_column(String(255))
    strip_prefix: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Per-deployment token (encrypted): the runtime announces itself with it, and the proxy
    #: presents it to the service.
    token: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    state_since: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: Set when the deployment is a replica of a gateway model (the autoscaler owns it).
    model_id: Mapped[int | None] = mapped_column(
        ForeignKey("gateway_models.id", ondelete="SET NULL"), index=True
    )
    #: When the gateway stopped sending new requests to this replica (it is being replaced).
    draining_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    project: Mapped[Project] = relationship()
    owner: Mapped[User | None] = relationship()
    attempts: Mapped[list[DeploymentAttempt]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        order_by="DeploymentAttempt.number",
    )
    events: Mapped[list[DeploymentEvent]] = relationship(
        back_populates="deployment", cascade="all, delete-orphan", order_by="DeploymentEvent.id"
    )


class DeploymentAttempt(Base):
    """One try on one backend; failover adds the next."""

    __tablename__ = "deployment_attempts"
    __table_args__ = (UniqueConstraint("deployment_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(255))
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)

    deployment: Mapped[Deployment] = relationship(back_populates="attempts")


class DeploymentEvent(Base):
    """The timeline shown to people: state changes and what caused them."""

    __tablename__ = "deployment_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")

    deployment: Mapped[Deployment] = relationship(back_populates="events")


class ProjectQuota(Base):
    """Limits on a project's active deployments; None means the platform default."""

    __tablename__ = "project_quotas"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    deployments: Mapped[int | None] = mapped_column(Integer)
    cpus: Mapped[int | None] = mapped_column(Integer)
    memory_mb: Mapped[int | None] = mapped_column(Integer)
    gpus: Mapped[int | None] = mapped_column(Integer)


class TemplateGrant(Base):
    """When a template has grants, only the granted projects may use it."""

    __tablename__ = "template_grants"
    __table_args__ = (UniqueConstraint("template", "project_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template: Mapped[str] = mapped_column(String(64), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))


# --- inference gateway ------------------------------------------------------------------------


class GatewayModel(Base):
    """A model served through the OpenAI-compatible gateway: a public name plus replicas.

    ``source`` is "deployment" (replicas are deployments of ``template``, scaled by the
    autoscaler inside ``project_id``, whose quota they count against) or "external" (an
    OpenAI-compatible endpoint somewhere else, with its own key).
    """

    __tablename__ = "gateway_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "llm" or "embedding"
    description: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16))  # "deployment" or "external"
    #: The model name the upstream knows it by (defaults to ``name``).
    upstream_model: Mapped[str | None] = mapped_column(String(255))
    #: Every project may use it; otherwise only projects with a grant.
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    external_url: Mapped[str | None] = mapped_column(String(1024))
    #: Encrypted with the platform keyring.
    external_key: Mapped[str | None] = mapped_column(Text)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    template: Mapped[str | None] = mapped_column(String(64))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    backends: Mapped[list[str]] = mapped_column(JSON, default=list)
    min_replicas: Mapped[int] = mapped_column(Integer, default=0)
    max_replicas: Mapped[int] = mapped_column(Integer, default=1)
    #: In-flight requests per replica the autoscaler aims for.
    target_inflight: Mapped[int] = mapped_column(Integer, default=4)
    #: Seconds without requests before a replica is stopped (down to ``min_replicas``).
    idle_seconds: Mapped[int] = mapped_column(Integer, default=600)
    #: Seconds before a replica's time limit at which a fresh one replaces it.
    replace_before_seconds: Mapped[int] = mapped_column(Integer, default=300)
    connect_timeout: Mapped[float] = mapped_column(Float, default=5.0)
    first_byte_timeout: Mapped[float] = mapped_column(Float, default=120.0)
    total_timeout: Mapped[float] = mapped_column(Float, default=600.0)
    #: How long a request may wait for a replica to start before it gets 503.
    queue_timeout: Mapped[float] = mapped_column(Float, default=300.0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    project: Mapped[Project | None] = relationship()


class ModelGrant(Base):
    """A project allowed to use a non-public gateway model."""

    __tablename__ = "model_grants"
    __table_args__ = (UniqueConstraint("model_id", "project_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("gateway_models.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )


class RateLimit(Base):
    """Gateway limits for one project or one API key; None means no limit of that kind."""

    __tablename__ = "rate_limits"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), unique=True
    )
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), unique=True
    )
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger)


class UsageRecord(Base):
    """One gateway request, metered: never its prompt or its output."""

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    user_id: Mapped[int | None] = mapped_column(Integer)
    project_id: Mapped[int | None] = mapped_column(Integer, index=True)
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128), index=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)


class GatewayLoad(Base):
    """What one gateway process sees of one model, reported every few seconds: the
    autoscaler sums the fresh rows of all gateways."""

    __tablename__ = "gateway_load"
    __table_args__ = (UniqueConstraint("gateway", "model_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[int] = mapped_column(ForeignKey("gateway_models.id", ondelete="CASCADE"))
    inflight: Mapped[int] = mapped_column(Integer, default=0)
    queued: Mapped[int] = mapped_column(Integer, default=0)
    #: In-flight requests per replica deployment id (for draining and the model page).
    per_replica: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    #: Trainings running per replica deployment id (from its health check): the autoscaler
    #: never stops a replica that runs one.
    trainings: Mapped[dict[str, int] | None] = mapped_column(JSON, default=dict, nullable=True)
    last_request_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- model catalog ----------------------------------------------------------------------------


class CatalogModule(Base):
    """A catalog entry: a model or app people can find, read about and (maybe) run.

    ``source`` is "builtin", "directory" or "git" (imported from disk by operators, public
    unless an admin hides it) or "project" (registered by members of ``project_id``, visible to
    them only unless made public). ``run_kind`` says how it runs: "deepaas" (``template`` is
    deepaas-model and ``inputs`` carry the entry point), "template" or "none".
    """

    __tablename__ = "catalog_modules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    license: Mapped[str | None] = mapped_column(String(128))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    tasks: Mapped[list[str]] = mapped_column(JSON, default=list)
    data_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    libraries: Mapped[list[str]] = mapped_column(JSON, default=list)
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    links: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    versions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    dates: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    run_kind: Mapped[str] = mapped_column(String(16))
    template: Mapped[str | None] = mapped_column(String(64))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    entry_point: Mapped[str | None] = mapped_column(String(128))
    package: Mapped[str | None] = mapped_column(String(128))
    not_runnable_reason: Mapped[str] = mapped_column(Text, default="")
    metadata_format: Mapped[str] = mapped_column(String(16))
    metadata_version: Mapped[str] = mapped_column(String(16))
    #: The document as given, for export and for re-reading after upgrades.
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Lower-cased name, title, summary, description and tags: what text search looks through.
    search_text: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16), index=True)
    #: The source directory (imported entries) and the file inside it.
    source_path: Mapped[str | None] = mapped_column(String(1024))
    source_file: Mapped[str | None] = mapped_column(String(1024))
    commit: Mapped[str | None] = mapped_column(String(64))
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    project: Mapped[Project | None] = relationship()
    labels: Mapped[list[CatalogLabel]] = relationship(
        back_populates="module", cascade="all, delete-orphan"
    )


class CatalogLabel(Base):
    """One tag, task or data type of an entry, as a row: filters stay indexed on any database."""

    __tablename__ = "catalog_labels"
    __table_args__ = (UniqueConstraint("module_id", "kind", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    module_id: Mapped[int] = mapped_column(ForeignKey("catalog_modules.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # "tag", "task" or "data_type"
    #: Lower-cased, for matching; ``CatalogModule`` keeps the spelling people see.
    value: Mapped[str] = mapped_column(String(64), index=True)

    module: Mapped[CatalogModule] = relationship(back_populates="labels")
