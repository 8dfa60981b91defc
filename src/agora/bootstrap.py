"""First start: the admin account, its project and an admin API key."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from agora.models import Membership, Role, User
from agora.runtime import Runtime
from agora.security import API_KEY_PREFIX, hash_password, one_time_password
from agora.services import keys, projects, users
from agora.services.context import Ctx


@dataclass
class BootstrapResult:
    username: str
    password: str | None  # None when it came from the environment
    api_key: str | None
    project: str


def bootstrap(runtime: Runtime) -> BootstrapResult | None:
    """Create the first admin when there are no users; return its secrets to print once."""
    s = runtime.settings
    with runtime.db.transaction() as db:
        if db.scalar(select(func.count()).select_from(User)):
            return None
        ctx = Ctx(db=db, runtime=runtime, client_addr="bootstrap")
        given_password = (
            s.bootstrap_admin_password.get_secret_value() if s.bootstrap_admin_password else None
        )
        given_key = s.bootstrap_admin_key.get_secret_value() if s.bootstrap_admin_key else None
        if given_key is not None and (
            not given_key.startswith(API_KEY_PREFIX) or len(given_key) < 38
        ):
            raise ValueError(
                "AGORA_BOOTSTRAP_ADMIN_KEY must be 'agora_' and at least 32 more characters"
            )
        if given_password is not None:
            users.check_password_rules(given_password, s.bootstrap_admin_username)
        password = given_password or one_time_password()
        admin = User(
            username=s.bootstrap_admin_username,
            display_name="Administrator",
            password_hash=hash_password(password),
            must_change_password=given_password is None,
            is_admin=True,
        )
        db.add(admin)
        db.flush()
        ctx.extra["bootstrap"] = True
        from agora.services import audit

        audit.record(
            ctx,
            "user.create",
            f"user:{admin.username}",
            actor="bootstrap",
            details={"is_admin": True},
        )
        project = projects.ensure_project(ctx, s.bootstrap_project)
        db.add(Membership(project_id=project.id, user_id=admin.id, role=Role.owner))
        new_key = keys.issue(
            ctx,
            project.id,
            admin.id,
            "bootstrap admin key",
            ["admin", "inference", "manage", "read"],
            None,
            secret=given_key,
        )
        return BootstrapResult(
            username=admin.username,
            password=None if given_password else password,
            api_key=None if given_key else new_key.secret,
            project=project.name,
        )
