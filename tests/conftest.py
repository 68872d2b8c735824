from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import Server, running_server

# The headless-browser fixture for the UI tests.
pytest_plugins = ["tests.support.browser"]


@pytest.fixture(scope="session")
def default_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded default fleet (real SmolLM2 on llama.cpp), started once per run."""
    with running_server(tmp_path_factory.mktemp("default-gateway")) as server:
        yield server
