"""A runtime whose catalog reads one temporary directory (the built-in examples off unless a
test asks for them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agora.settings import Settings
from tests.conftest import make_settings


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    path = tmp_path / "catalog"
    path.mkdir()
    return path


@pytest.fixture
def settings(tmp_path: Path, database_url: str, catalog_dir: Path) -> Settings:
    return make_settings(tmp_path, database_url, catalog_dirs=[catalog_dir], catalog_builtin=False)
