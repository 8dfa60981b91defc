from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.modelserver.servers import Launch, launch_agora


@pytest.fixture(scope="session", autouse=True)
def typed_launch(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launch | None]:
    """Starts the typed models' server (the embeddings example imports torch and
    sentence-transformers: many seconds) at the start of the session when its tests will
    run, so that it warms while the other tests run."""
    if not any(item.path.name == "test_typed.py" for item in request.session.items):
        yield None
        return
    state = tmp_path_factory.mktemp("typed") / "state"
    args = ["--model", "typed=acme_typed:model"]
    args += ["--model", "embeddings=agora.examples.embeddings:model"]
    launch = launch_agora(*args, state_dir=state)
    yield launch
    launch.stop()
