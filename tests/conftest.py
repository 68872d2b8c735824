from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.support.server import Server, running_server
from tests.vllm.fake_upstream import FakeVllm

# The headless-browser fixture for the UI tests.
pytest_plugins = ["tests.support.browser"]


@pytest.fixture(scope="session")
def default_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded default fleet (real SmolLM2 on llama.cpp), started once per run."""
    with running_server(tmp_path_factory.mktemp("default-gateway")) as server:
        yield server


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeVllm]:
    """A fake vLLM / OpenAI-compatible upstream on a free loopback port."""
    server = FakeVllm()
    await server.start()
    yield server
    await server.close()
