"""Configuration: environment, TOML file, refused weak secrets, generated key file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from agora.settings import Settings


def test_defaults_use_sqlite_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGORA_DATA_DIR", str(tmp_path / "d"))
    s = Settings()
    assert s.database_url == f"sqlite:///{tmp_path / 'd' / 'agora.db'}"
    assert s.public_url == "http://127.0.0.1:8000"
    assert not s.secure_cookies


def test_weak_secret_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGORA_SECRET_KEY", "changeme")
    with pytest.raises(ValidationError, match="at least 32"):
        Settings()


def test_generated_secret_key_is_private_and_stable(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    key = s.ensure_secret_key()
    assert len(key) >= 48
    mode = stat.S_IMODE((tmp_path / "secret_key").stat().st_mode)
    assert mode == 0o600
    assert Settings(data_dir=tmp_path).ensure_secret_key() == key


def test_toml_file_and_environment_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "agora.toml"
    config.write_text('port = 9000\nlog_level = "debug"\n[oidc]\nclient_id = "agora"\n')
    monkeypatch.setenv("AGORA_CONFIG_FILE", str(config))
    monkeypatch.setenv("AGORA_PORT", "9100")
    s = Settings(data_dir=tmp_path)
    assert s.port == 9100  # the environment wins
    assert s.log_level == "debug"
    assert s.oidc.client_id == "agora"


def test_missing_config_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGORA_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="does not exist"):
        Settings()


def test_https_public_url_makes_cookies_secure(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, public_url="https://ai.example.org/").secure_cookies
