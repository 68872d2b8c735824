"""From OpenAI request bodies to the normalised :class:`GenerationRequest` backends see."""

from __future__ import annotations

from collections.abc import Sequence

from gateway import protocol as p
from gateway.backend import GenerationRequest, Message
from gateway.errors import InvalidRequest


def _stop(stop: p.Stop | None) -> Sequence[str]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(s for s in stop if s)


def _single_choice(n: int | None) -> None:
    if n not in (None, 1):
        raise InvalidRequest("only n=1 is supported", param="n")


def from_chat(body: p.ChatCompletionRequest, request_id: str) -> GenerationRequest:
    _single_choice(body.n)
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported", param="logprobs")
    messages = []
    for i, msg in enumerate(body.messages):
        if isinstance(msg.content, list):
            for j, part in enumerate(msg.content):
                if part.type != "text":
                    raise InvalidRequest(
                        f"content part type {part.type!r} is not supported; only 'text'",
                        param=f"messages[{i}].content[{j}].type",
                    )
        messages.append(Message(role=msg.role, content=msg.text()))
    return GenerationRequest(
        request_id=request_id,
        operation="chat",
        model=body.model,
        messages=messages,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=_stop(body.stop),
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
    )


def from_completion(body: p.CompletionRequest, request_id: str) -> GenerationRequest:
    _single_choice(body.n)
    if body.echo:
        raise InvalidRequest("echo is not supported", param="echo")
    if body.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix")
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    return GenerationRequest(
        request_id=request_id,
        operation="text_completion",
        model=body.model,
        prompt=prompt,
        # OpenAI's documented default for legacy completions.
        max_tokens=body.max_tokens or 16,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=_stop(body.stop),
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
    )
