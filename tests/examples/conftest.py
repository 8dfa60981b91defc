from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def module_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test keeps the models it trains in a folder of its own (empty to start with)."""
    path = tmp_path / "module-data"
    monkeypatch.setenv("AGORA_MODULE_DATA", str(path))
    return path


@pytest.fixture(scope="session")
def default_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The modules' default models, trained once for the whole run."""
    from agora.examples import digits, iris

    root = tmp_path_factory.mktemp("default-models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGORA_MODULE_DATA", str(root))
        digits.warm()
        iris.warm()
    return root


@pytest.fixture
def trained(module_data: Path, default_models: Path) -> Path:
    """The test's module data holds the default models already (no training on warm)."""
    shutil.copytree(default_models, module_data, dirs_exist_ok=True)
    return module_data
