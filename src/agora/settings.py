"""Typed configuration: environment variables (``AGORA_*``) and an optional TOML file.

Built once by the app factory (or the CLI) and passed down; nothing reads the environment
elsewhere.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agora.catalog.git import Remote

_WEAK_SECRETS = {"", "changeme", "secret", "change-me", "agora"}


class OIDCSettings(BaseSettings):
    """Single sign-on through an OpenID Connect provider (Keycloak, INDIGO IAM, EGI Check-in)."""

    model_config = SettingsConfigDict(env_prefix="AGORA_OIDC_", extra="ignore")

    issuer: AnyHttpUrl | None = None
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    scopes: str = "openid profile email"
    display_name: str = "Single sign-on"
    username_claim: str = "preferred_username"
    #: Claim whose values map to project roles, e.g. ``groups`` or ``eduperson_entitlement``.
    roles_claim: str = "groups"
    #: Regular expressions with named groups ``project`` and ``role``; the first that matches a
    #: claim value wins. Roles outside owner/member/viewer map through ``role_aliases``.
    role_patterns: list[str] = Field(
        default_factory=lambda: [
            r"^urn:mace:egi\.eu:group:(?P<project>[A-Za-z0-9._-]+):role=(?P<role>[a-z]+)#.*$",
            r"^/?(?P<project>[A-Za-z0-9._-]+)/(?P<role>owner|member|viewer)$",
        ]
    )
    role_aliases: dict[str, str] = Field(
        default_factory=lambda: {"vm_operator": "member", "manager": "owner", "admin": "owner"}
    )
    #: Claim values that make a user a platform admin (exact match).
    admin_values: list[str] = Field(default_factory=list)
    #: Create projects named in claims that do not exist yet.
    create_projects: bool = True

    @property
    def enabled(self) -> bool:
        return self.issuer is not None and bool(self.client_id)


class BackendConfig(BaseModel):
    """One place deployments can run: the operator lists them in order of preference."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    kind: Literal["local", "slurm"]
    #: Projects that may use it ("*" for all).
    projects: list[str] = Field(default_factory=lambda: ["*"])
    #: Largest single deployment it takes.
    max_cpus: int = Field(default=64, ge=1)
    max_memory_mb: int = Field(default=262144, ge=16)
    max_gpus: int = Field(default=0, ge=0)
    #: Seconds a deployment may wait to start here before it is tried on the next backend.
    start_timeout: int = Field(default=600, ge=1)
    #: Kind-specific settings (slurm: partition, account, qos, ssh_host, …).
    options: dict[str, Any] = Field(default_factory=dict)

    def allows(self, project: str) -> bool:
        return "*" in self.projects or project in self.projects


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGORA_", extra="ignore", env_nested_delimiter="__"
    )

    data_dir: Path = Path(".agora")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    #: Public URL, used for OIDC redirects and secure cookies; derived from host/port when unset.
    public_url: str | None = None
    secret_key: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    bootstrap_admin_username: str = "admin"
    bootstrap_admin_password: SecretStr | None = None
    bootstrap_admin_key: SecretStr | None = None
    bootstrap_project: str = "default"

    session_hours: float = Field(default=12, gt=0)
    cli_token_days: float = Field(default=30, gt=0)
    login_free_attempts: int = Field(default=3, ge=1)
    login_max_delay_seconds: int = Field(default=60, ge=1)
    login_lockout_attempts: int = Field(default=10, ge=2)
    login_lockout_minutes: float = Field(default=15, gt=0)
    key_last_used_flush_seconds: float = Field(default=30, gt=0)
    #: argon2id cost for password hashes (defaults: RFC 9106's second recommended option).
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=65536, ge=8, le=4_194_304)
    password_hash_parallelism: int = Field(default=4, ge=1, le=64)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    oidc: OIDCSettings = Field(default_factory=OIDCSettings)

    #: Where deployments may run; the embedded default runs local processes.
    backends: list[BackendConfig] = Field(
        default_factory=lambda: [BackendConfig(name="local", kind="local")]
    )
    #: Extra template directories (YAML files), after the built-in ones.
    template_dirs: list[Path] = Field(default_factory=list)
    #: Model catalog sources: directories of modules or git checkouts, imported at start and
    #: on demand (POST /api/v1/catalog/import); the built-in examples come first unless off.
    catalog_dirs: list[Path] = Field(default_factory=list)
    catalog_builtin: bool = True
    #: Git repositories Agora clones (under ``data_dir``) and fetches before each import:
    #: "URL" or "URL#branch"; https://, http://, ssh://, user@host:path or file:// only.
    catalog_git: list[str] = Field(default_factory=list)
    #: Seconds each git command of an import may take (a clone of many submodules is several).
    catalog_git_timeout: float = Field(default=120, gt=0)
    #: Run the orchestrator in this process (one per installation holds the lock).
    orchestrator: bool = True
    reconcile_interval: float = Field(default=1.0, gt=0, le=60)
    #: Default per-project limits on active deployments (admins change them per project).
    quota_deployments: int = Field(default=10, ge=0)
    quota_cpus: int = Field(default=16, ge=0)
    quota_memory_mb: int = Field(default=65536, ge=0)
    quota_gpus: int = Field(default=0, ge=0)

    #: Serve the OpenAI-compatible gateway (/v1) from this process.
    gateway: bool = True
    #: Redis for rate-limit counters shared by several gateway processes (in-process if unset).
    redis_url: str | None = None
    #: Bearer token that may read the gateway's Prometheus metrics (GET /metrics) besides
    #: administrators: for the scraper, which should not hold an administrator's key.
    metrics_token: SecretStr | None = None
    #: How often a gateway checks whether keys, models and limits changed in another process.
    gateway_refresh_seconds: float = Field(default=1.0, gt=0, le=60)
    gateway_max_body_bytes: int = Field(default=8_388_608, ge=1024)
    #: Largest request (form fields and uploads) passed to a served DEEPaaS module (/m/…).
    gateway_max_upload_bytes: int = Field(default=67_108_864, ge=1024)
    #: Requests waiting for a replica to start, per model; more get 503 at once.
    gateway_max_queue: int = Field(default=1000, ge=0)
    #: Active health checks of ready replicas, and how long a failing replica is left out.
    gateway_health_interval: float = Field(default=5.0, gt=0)
    gateway_eject_seconds: float = Field(default=10.0, gt=0)
    #: Other replicas a failed request is retried on (only before any byte reached the client).
    gateway_retries: int = Field(default=2, ge=0, le=10)
    gateway_usage_flush_seconds: float = Field(default=1.0, gt=0)
    #: How often each gateway reports its load to the autoscaler, and how old a report may be.
    gateway_load_report_seconds: float = Field(default=1.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls))

    @field_validator("secret_key")
    @classmethod
    def _refuse_weak_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            raw = value.get_secret_value()
            if raw.lower() in _WEAK_SECRETS or len(raw) < 32:
                raise ValueError("AGORA_SECRET_KEY must be at least 32 random characters")
        return value

    @model_validator(mode="after")
    def _defaults_from_data_dir(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'agora.db'}"
        if self.public_url is None:
            self.public_url = f"http://{self.host}:{self.port}"
        self.public_url = self.public_url.rstrip("/")
        return self

    @field_validator("metrics_token")
    @classmethod
    def _refuse_weak_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 24:
            raise ValueError(
                "AGORA_METRICS_TOKEN must be at least 24 random characters "
                "(e.g. `openssl rand -hex 24`)"
            )
        return value

    @field_validator("backends")
    @classmethod
    def _unique_backends(cls, value: list[BackendConfig]) -> list[BackendConfig]:
        names = [b.name for b in value]
        if len(set(names)) != len(names):
            raise ValueError("backend names must be unique")
        return value

    @field_validator("catalog_git")
    @classmethod
    def _accepted_repositories(cls, value: list[str]) -> list[str]:
        remotes = [Remote.parse(item) for item in value]
        if len(set(remotes)) != len(remotes):
            raise ValueError("a repository (and branch) is listed twice")
        return value

    @property
    def runs_dir(self) -> Path:
        """Per-deployment working directories (scripts, logs, exit codes)."""
        return self.data_dir / "runs"

    @property
    def projects_dir(self) -> Path:
        """Persistent per-project work directories (notebooks, job outputs)."""
        return self.data_dir / "projects"

    @property
    def catalog_checkouts_dir(self) -> Path:
        """Clones of the ``catalog_git`` repositories."""
        return self.data_dir / "catalog" / "git"

    @property
    def is_sqlite(self) -> bool:
        return str(self.database_url).startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        return str(self.public_url).startswith("https://")

    def ensure_secret_key(self) -> str:
        """The signing/encryption key: configured, or generated once into the data directory."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads ``$AGORA_CONFIG_FILE`` (TOML) when set; environment variables win over it."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("AGORA_CONFIG_FILE")
        if not path:
            return {}
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ValueError(f"AGORA_CONFIG_FILE {path!r} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"AGORA_CONFIG_FILE {path!r} is not valid TOML: {exc}") from exc
        return data
