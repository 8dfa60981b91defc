"""Request and response bodies of /api/v1: validated here, at the edge."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from agora.models import Role, Scope

MAX_ID = 2**31 - 1  # ids are 32-bit integers on every database


def _printable(value: str) -> str:
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value):
        raise ValueError("must not contain control characters")
    return value


Plain = AfterValidator(_printable)

Name = Annotated[
    str,
    StringConstraints(min_length=2, max_length=63, pattern=r"^[a-z0-9][a-z0-9._-]*$"),
    Field(
        description="Lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"
    ),
]
Text = Annotated[str, StringConstraints(max_length=128, strip_whitespace=True), Plain]
LongText = Annotated[str, StringConstraints(max_length=4000), Plain]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024), Plain]
Username = Annotated[str, StringConstraints(min_length=1, max_length=64), Plain]
TOTPCode = Annotated[str, StringConstraints(pattern=r"^\s*\d{3}\s?\d{3}\s*$")]


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2027-01-31T00:00:00Z")
    return value


AwareDatetime = Annotated[dt.datetime, AfterValidator(_aware)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- auth -------------------------------------------------------------------------------------


class LoginIn(Strict):
    username: Username
    password: Password
    totp_code: TOTPCode | None = None


class TokenOut(BaseModel):
    token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_at: dt.datetime
    username: str


class PasswordChangeIn(Strict):
    current_password: Password
    new_password: Password


class TOTPSetupOut(BaseModel):
    secret: str
    otpauth_uri: str


class TOTPCodeIn(Strict):
    code: TOTPCode


class TOTPDisableIn(Strict):
    password: Password
    code: TOTPCode


# --- users ------------------------------------------------------------------------------------


class UserCreate(Strict):
    username: Name
    email: EmailStr | None = None
    display_name: Text = ""
    password: Password | None = Field(
        default=None, description="Leave out to generate a one-time password"
    )
    is_admin: bool = False


class UserUpdate(Strict):
    email: EmailStr | None = None
    display_name: Text | None = None
    is_admin: bool | None = None
    disabled: bool | None = None


class UserPublic(Out):
    username: str
    email: str | None
    display_name: str
    is_admin: bool
    disabled: bool
    totp_enabled: bool
    must_change_password: bool
    sso: bool = False
    created_at: dt.datetime
    last_login_at: dt.datetime | None


class UserCreated(UserPublic):
    one_time_password: str | None = None


class OneTimePassword(BaseModel):
    username: str
    one_time_password: str


class MembershipBrief(BaseModel):
    project: str
    role: Role


class MeOut(BaseModel):
    user: UserPublic
    via: str
    scopes: list[str]
    key_project: str | None
    restriction: str | None
    projects: list[MembershipBrief]


# --- projects and members ---------------------------------------------------------------------


class ProjectCreate(Strict):
    name: Name
    title: Text = ""
    description: LongText = ""


class ProjectUpdate(Strict):
    title: Text | None = None
    description: LongText | None = None


class ProjectPublic(Out):
    name: str
    title: str
    description: str
    created_at: dt.datetime
    role: Role | None = None


class MemberAdd(Strict):
    username: Username
    role: Role = Role.member


class MemberUpdate(Strict):
    role: Role


class MemberPublic(BaseModel):
    username: str
    display_name: str
    role: Role
    source: str
    since: dt.datetime


# --- keys -------------------------------------------------------------------------------------


class KeyCreate(Strict):
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True), Plain
    ]
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=4)] = [Scope.inference]
    expires_at: AwareDatetime | None = None


class KeyPublic(Out):
    id: int
    name: str
    prefix: str
    owner: str
    project: str
    scopes: list[str]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class KeyCreated(KeyPublic):
    secret: str = Field(description="Shown once: store it now")


# --- audit and system -------------------------------------------------------------------------


class AuditPublic(Out):
    seq: int
    time: dt.datetime
    actor: str
    project: str | None
    action: str
    target: str
    outcome: str
    client_addr: str | None
    details: dict[str, Any]
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditPublic]
    next_before: int | None = Field(description="Pass as 'before' to get the next, older page")


class AuditVerification(BaseModel):
    ok: bool
    checked: int
    first_broken_seq: int | None
    reason: str | None


class SystemSettings(Strict):
    require_totp: bool | None = None
    users_can_create_projects: bool | None = None


class SystemSettingsOut(BaseModel):
    require_totp: bool
    users_can_create_projects: bool


# --- templates and deployments ----------------------------------------------------------------


class TemplateInput(BaseModel):
    name: str
    type: str
    title: str
    help: str
    default: Any
    required: bool
    min: float | None
    max: float | None
    pattern: str | None
    choices: list[str] | None


class TemplatePublic(BaseModel):
    name: str
    title: str
    description: str
    kind: str
    inputs: list[TemplateInput]


class TemplateGrants(Strict):
    projects: Annotated[list[Name], Field(max_length=1000)]


class DeploymentCreate(Strict):
    template: Annotated[str, StringConstraints(min_length=1, max_length=64), Plain]
    name: (
        Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True), Plain]
        | None
    ) = None
    inputs: Annotated[
        dict[Annotated[str, StringConstraints(max_length=64)], Any], Field(max_length=64)
    ] = {}
    backends: Annotated[list[Name], Field(min_length=1, max_length=16)] | None = None


class AttemptPublic(Out):
    number: int
    backend: str
    job_id: str | None
    submitted_at: dt.datetime | None
    ended_at: dt.datetime | None
    error: str | None


class EventPublic(Out):
    time: dt.datetime
    state: str
    message: str


class DeploymentPublic(BaseModel):
    id: str
    project: str
    owner: str | None
    name: str
    template: str
    kind: str
    inputs: dict[str, Any]
    cpus: int
    memory_mb: int
    gpus: int
    gpu_type: str | None
    time_limit_minutes: int
    backends: list[str]
    backend: str | None
    desired: str
    state: str
    reason: str | None
    exit_code: int | None
    url: str | None
    created_at: dt.datetime
    state_since: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None


class DeploymentDetail(DeploymentPublic):
    attempts: list[AttemptPublic]
    events: list[EventPublic]


_HOST = (
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])$"
)


class Announcement(Strict):
    host: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=_HOST)]
    port: Annotated[int, Field(ge=1, le=65535)]


class Quota(BaseModel):
    deployments: int
    cpus: int
    memory_mb: int
    gpus: int


class QuotaUpdate(Strict):
    deployments: Annotated[int, Field(ge=0, le=100000)] | None = None
    cpus: Annotated[int, Field(ge=0, le=10**7)] | None = None
    memory_mb: Annotated[int, Field(ge=0, le=10**10)] | None = None
    gpus: Annotated[int, Field(ge=0, le=100000)] | None = None


class QuotaOut(BaseModel):
    limits: Quota
    in_use: Quota
