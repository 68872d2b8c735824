"""pytest plugin for plugin authors (``pytest11`` entry point ``freshet``).

Fixtures for configs built on the deterministic backend; see :mod:`gateway.builtins.deterministic`.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.builtins.deterministic import DeterministicBackend, DeterministicParams

__all__ = ["DeterministicBackend", "DeterministicParams", "deterministic_config"]


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
