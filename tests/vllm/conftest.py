from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from freshet_vllm import OpenAICompatibleBackend

from tests.support.server import free_port
from tests.vllm.kit import NoFleet, config
from tests.vllm.vllm_process import VllmServer, not_installed_reason


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vLLM's CPU build serving SmolLM2-135M-Instruct, started once per test run."""
    reason = not_installed_reason()
    if reason is not None:
        pytest.skip(reason)
    server = VllmServer(free_port(), tmp_path_factory.mktemp("vllm"))
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def started() -> AsyncIterator[Callable[[Any], Awaitable[Any]]]:
    """Starts a backend made in a test (and returns it); closes every one at the end."""
    made: list[Any] = []

    async def start(backend: Any) -> Any:
        await backend.start()
        made.append(backend)
        return backend

    yield start
    for backend in made:
        await backend.aclose()


@pytest.fixture
def make(started: Callable[[Any], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An ``openai-compatible`` backend with these params, started."""

    async def build(**params: Any) -> OpenAICompatibleBackend:
        backend: OpenAICompatibleBackend = await started(
            OpenAICompatibleBackend(config(**params), NoFleet())
        )
        return backend

    return build
