"""pytest plugin for plugin authors (``pytest11`` entry point ``freshet``).

- Fixtures for configs built on the deterministic backend; see
  :mod:`gateway.builtins.deterministic`.
- The backend contract: :func:`check_backend` runs a backend through what the gateway
  expects of it (declaration, start, chat, text completions, stream order, usage,
  ``max_tokens``, cancellation, context length, operations declared vs honoured, status,
  close) and returns a :class:`ContractReport`; :class:`BackendContract` is the same as a
  pytest base class, one test per check::

      from gateway.testing import BackendContract

      class TestMyBackend(BackendContract):
          factory = MyBackend
          config = {"id": "mine", "type": "mine", "knowledge_cutoff": "2025-01-01"}

The checks run on one backend, built and started once per class, in one event loop; no
pytest-asyncio needed. What each check asks is in :data:`CHECKS`.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.builtins.deterministic import DeterministicBackend, DeterministicParams
from gateway.testing.contract import (
    CHECKS,
    BackendContract,
    CheckResult,
    ContractReport,
    check_backend,
)

__all__ = [
    "CHECKS",
    "BackendContract",
    "CheckResult",
    "ContractReport",
    "DeterministicBackend",
    "DeterministicParams",
    "check_backend",
    "deterministic_config",
]


@pytest.fixture
def deterministic_config() -> dict[str, Any]:
    """A config mapping with one deterministic backend and a group ``auto``; edit freely."""
    return {
        "backends": [
            {
                "id": "det",
                "type": "deterministic",
                "model": "det-model",
                "knowledge_cutoff": "2024-01-01",
            },
        ],
        "groups": {"auto": ["det"]},
    }
