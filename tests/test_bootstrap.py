"""First start creates the admin, its project and key; later starts create nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from agora.app import create_app
from agora.bootstrap import bootstrap
from agora.runtime import Runtime
from agora.security import verify_password
from tests.conftest import make_settings


def test_first_start_prints_secrets_once(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path, database_url, bootstrap_admin_password=None, bootstrap_admin_key=None
    )
    runtime = Runtime.create(settings)
    app = create_app(runtime=runtime)
    first = bootstrap(runtime)
    assert first is not None
    assert first.password and first.api_key and first.api_key.startswith("agora_")
    assert bootstrap(runtime) is None  # a restart creates nothing and prints nothing
    with TestClient(app) as client:
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {first.api_key}"})
        assert me.json()["user"]["is_admin"] is True
        assert me.json()["user"]["must_change_password"] is True
        login = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": first.password}
        )
        assert login.status_code == 200
    runtime.db.dispose()


def test_secrets_from_environment_are_used_and_not_echoed(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url)
    runtime = Runtime.create(settings)
    create_app(runtime=runtime)
    result = bootstrap(runtime)
    assert result is not None
    assert result.password is None and result.api_key is None
    from agora.models import User

    with runtime.db.session() as db:
        admin = db.query(User).one()
        assert verify_password(admin.password_hash, "admin-password-for-tests")
        assert admin.must_change_password is False
    runtime.db.dispose()


def test_weak_bootstrap_key_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/a.db")
    settings.bootstrap_admin_key = SecretStr("agora_short")
    runtime = Runtime.create(settings)
    create_app(runtime=runtime)
    with pytest.raises(ValueError, match="at least 32"):
        bootstrap(runtime)
