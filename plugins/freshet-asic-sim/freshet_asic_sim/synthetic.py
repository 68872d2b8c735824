"""Token counting and the deterministic filler text the card serves when it has no twin.

Tokens here are words and single punctuation marks (``\\w+|[^\\w\\s]``), a rough stand-in for
Llama 3's BPE; chat prompts add Llama-3-template overhead (begin-of-text, 5 per message for
its header and end marker, 4 for the assistant header). The filler is built from those
same tokens, so counting the generated text gives exactly the number requested.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator

from gateway.plugin_api import GenerationRequest

_TOKEN = re.compile(r"\w+|[^\w\s]")

_BEGIN_OF_TEXT = 1
_PER_MESSAGE = 5
_ASSISTANT_HEADER = 4

SENTENCES: tuple[str, ...] = (
    "the card answers from silicon and every weight is etched into the chip",
    "fresh water comes down from the hills after the rain and fills the river",
    "one small card serves one model for a tenth of the power of a graphics card",
    "tokens stream out faster than anyone can read them",
    "this text is filler from a simulated card and carries no meaning",
    "the model never changes but an adapter can teach it a few newer facts",
    "a request waits in the queue until a stream is free and then runs to the end",
)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def prompt_tokens(request: GenerationRequest) -> int:
    if request.prompt is not None:
        return _BEGIN_OF_TEXT + count_tokens(request.prompt)
    return (
        _BEGIN_OF_TEXT
        + sum(_PER_MESSAGE + count_tokens(m.content) for m in request.messages)
        + _ASSISTANT_HEADER
    )


def request_key(request: GenerationRequest) -> int:
    """A stable number from the request's text and seed: same request, same filler."""
    text = (
        request.prompt
        if request.prompt is not None
        else "\n".join(f"{m.role}:{m.content}" for m in request.messages)
    )
    return zlib.crc32(f"{request.seed or 0}|{text}".encode())


def filler(n: int, key: int) -> Iterator[str]:
    """``n`` pieces of readable text, one token each; joined, they count as ``n`` tokens."""
    sentence = key % len(SENTENCES)
    produced = 0
    first = True
    while produced < n:
        words = SENTENCES[sentence].split()
        for i, word in enumerate(words):
            if produced >= n:
                return
            text = word.capitalize() if i == 0 else word
            yield text if first else " " + text
            first = False
            produced += 1
        if produced < n:
            yield "."
            produced += 1
        sentence = (sentence + 1) % len(SENTENCES)
