"""An upstream's usage with cache and reasoning counts, as the vLLM wire reads it: OpenAI's
``*_tokens_details`` (vLLM with ``--enable-prompt-tokens-details``, OpenAI itself) and
Anthropic's cache counts where a proxy passes them on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from freshet_vllm import wire

from gateway.backend import BackendUsage


def usage_of(usage: dict[str, Any] | None, pieces: int = 3) -> BackendUsage:
    line = b"data: " + json.dumps({"choices": [], "usage": usage}).encode()
    event = wire.parse_line(line)
    assert event is not None
    return wire.backend_usage(event.usage, pieces, 0.1, 0.5)


def counts(u: BackendUsage) -> tuple[int, int, int, int, int]:
    return (
        u.prompt_tokens,
        u.completion_tokens,
        u.cached_prompt_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
    )


def test_openai_details_are_parts_of_the_counts() -> None:
    u = usage_of(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 800,
            "total_tokens": 2800,
            "prompt_tokens_details": {"cached_tokens": 1500, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 500, "audio_tokens": 0},
        }
    )
    assert counts(u) == (2000, 800, 1500, 0, 500)
    assert (u.time_to_first_token_s, u.duration_s) == (0.1, 0.5)


def test_vllm_without_details_and_with_nulls() -> None:
    """vLLM sends ``prompt_tokens_details: null`` unless the flag is on."""
    plain = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert counts(usage_of(plain)) == (7, 3, 0, 0, 0)
    nulls = {**plain, "prompt_tokens_details": None, "completion_tokens_details": None}
    assert counts(usage_of(nulls)) == (7, 3, 0, 0, 0)
    empty = {**plain, "prompt_tokens_details": {"cached_tokens": None}}
    assert counts(usage_of(empty)) == (7, 3, 0, 0, 0)


def test_anthropic_counts_leave_the_cache_out_of_input_tokens() -> None:
    u = usage_of(
        {
            "input_tokens": 100,
            "output_tokens": 200,
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 3000,
        }
    )
    assert counts(u) == (4100, 200, 3000, 1000, 0)


def test_openai_counts_with_anthropic_cache_fields() -> None:
    """A proxy that counts the cache inside prompt_tokens (OpenAI's way) ..."""
    inside = {
        "prompt_tokens": 4100,
        "completion_tokens": 200,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 3000,
    }
    assert counts(usage_of(inside)) == (4100, 200, 3000, 1000, 0)
    # ... and one that kept Anthropic's (prompt_tokens smaller than its cache counts).
    outside = {**inside, "prompt_tokens": 100}
    assert counts(usage_of(outside)) == (4100, 200, 3000, 1000, 0)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # Negative or absurd counts are not believed: never more reasoning than output.
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": -5},
                "completion_tokens_details": {"reasoning_tokens": 9},
            },
            (10, 4, 0, 0, 4),
        ),
        # No usage at all: the pieces the stream delivered.
        (None, (0, 3, 0, 0, 0)),
    ],
)
def test_counts_are_bounded(
    usage: dict[str, Any] | None, expected: tuple[int, int, int, int, int]
) -> None:
    assert counts(usage_of(usage)) == expected
