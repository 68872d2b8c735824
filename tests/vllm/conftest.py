from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import free_port
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
