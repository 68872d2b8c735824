"""Stored responses on Redis are every gateway's: two real gateway processes on one real
Redis, driven by the `openai` SDK: one stores a response, the other returns it, continues
its conversation and deletes it; another key sees none of it."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.redis.gateways import backend, create_key, gateways


def test_two_gateways_share_stored_responses(tmp_path: Path, redis_url: str) -> None:
    config = {"backends": [backend("det")], "groups": {"auto": ["det"]}}
    alice = create_key(redis_url, tmp_path, "alice")
    bob = create_key(redis_url, tmp_path, "bob")
    with gateways(tmp_path, config, redis_url, n=2) as (one, two):
        first = openai.OpenAI(base_url=one.url + "/v1", api_key=alice, max_retries=0)
        second = openai.OpenAI(base_url=two.url + "/v1", api_key=alice, max_retries=0)
        stream = first.responses.create(
            model="auto", input="one two three", max_output_tokens=3, stream=True
        )
        made = next(e for e in stream if e.type == "response.incomplete").response
        assert second.responses.retrieve(made.id).output_text == made.output_text
        follow = second.responses.create(
            model="auto", input="four", previous_response_id=made.id, max_output_tokens=2
        )
        assert follow.usage is not None
        assert made.usage is not None
        # The deterministic backend counts a message's words + 1: the stored turn (its
        # input, its 3-word answer) came before "four".
        assert follow.usage.input_tokens == made.usage.input_tokens + (3 + 1) + (1 + 1)
        other = openai.OpenAI(base_url=two.url + "/v1", api_key=bob, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(made.id)
        first.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            second.responses.retrieve(made.id)
        assert first.responses.retrieve(follow.id).previous_response_id == made.id
