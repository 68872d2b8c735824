"""The thread side: one llama.cpp model instance generating one request at a time.

Everything here runs in a worker thread. Tokens cross to asyncio through ``emit``; the
asyncio side sets ``cancel`` when the client goes away, and the loop checks it at every
token, so a disconnect stops generation within a token.
"""

from __future__ import annotations

import atexit
import codecs
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
import llama_cpp
import llama_cpp._utils
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar

from freshet_llamacpp.tools import CallReader, EitherReader, chat_messages, plan
from gateway.plugin_api import (
    FINISH_TOOL_CALLS,
    BackendUsage,
    ContextLengthExceeded,
    Deployment,
    GenerationRequest,
    InvalidRequest,
    ToolCallDelta,
)


def _close_devnull_at_exit() -> None:
    """llama-cpp-python opens os.devnull twice at import and never closes it, which shows
    up as a ResourceWarning at every interpreter exit; close them at exit instead."""
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(llama_cpp._utils, name, None)
        if handle is not None:
            atexit.register(handle.close)


_close_devnull_at_exit()

Emit = Callable[[str | ToolCallDelta], None]


class Sampling:
    """Defaults for sampling parameters a request leaves out."""

    def __init__(self, temperature: float, top_p: float, top_k: int, min_p: float) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.min_p = min_p


class Instance:
    """One loaded model. Not thread-safe: the pool hands it to one request at a time."""

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int, n_batch: int) -> None:
        self.llama = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=n_batch,
            verbose=False,
        )
        self.n_ctx = self.llama.n_ctx()
        self._eos = self.llama.token_eos()
        vocab = self.llama._model.vocab
        self._is_eog: Callable[[int], bool] = lambda tok: bool(
            llama_cpp.llama_vocab_is_eog(vocab, tok)
        )
        template = self.llama.metadata.get("tokenizer.chat_template")
        self._formatter = (
            Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._eos),
                bos_token=self._token_text(self.llama.token_bos()),
                stop_token_ids=[self._eos],
            )
            if template
            else None
        )

    def _token_text(self, token: int) -> str:
        return "" if token < 0 else self.llama._model.token_get_text(token)

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        if request.operation == "text_completion":
            return self.llama.tokenize((request.prompt or "").encode(), add_bos=True)
        if self._formatter is None:
            raise InvalidRequest(
                f"model {request.model!r} has no chat template; use /v1/completions",
                param="model",
            )
        messages: list[Any] = chat_messages(request)
        try:
            formatted = self._formatter(messages=messages)
        except jinja2.TemplateError:
            if not any(m.role == "tool" for m in request.messages):
                raise
            # This template refuses role "tool": the results go in as user messages.
            fallback: list[Any] = chat_messages(request, tool_role=False)
            formatted = self._formatter(messages=fallback)
        return self.llama.tokenize(
            formatted.prompt.encode(), add_bos=not formatted.added_special, special=True
        )

    def _grammar(self, text: str | None, param: str) -> LlamaGrammar | None:
        """``text`` as a grammar, checked first: llama.cpp would crash on one it cannot
        parse, so such a grammar (a schema the converter got wrong) is a 400."""
        if text is None:
            return None
        sampler = llama_cpp.llama_sampler_init_grammar(
            self.llama._model.vocab, text.encode(), b"root"
        )
        if not sampler:
            raise InvalidRequest(
                "this JSON Schema cannot be enforced on llama.cpp (its grammar does not parse)",
                param=param,
            )
        llama_cpp.llama_sampler_free(sampler)
        return LlamaGrammar.from_string(text, verbose=False)

    def generate(
        self,
        request: GenerationRequest,
        sampling: Sampling,
        emit: Emit,
        cancel: threading.Event,
        caps: Deployment | None = None,
        counted: Callable[[int], None] | None = None,
        on_stop: Callable[[str], None] | None = None,
    ) -> tuple[str | None, BackendUsage]:
        """Generate for ``request``, calling ``emit`` with each piece of text or of a tool
        call; ``caps`` (the deployment) bounds the output: its default without
        ``max_tokens``, its ceiling above all (:meth:`Deployment.output_limit`). Tools and
        ``response_format`` constrain it with a grammar (:mod:`freshet_llamacpp.tools`).

        ``counted`` is told the prompt's token count before the first piece of text;
        ``on_stop`` the stop sequence that ended the output, when one did.
        Returns the finish reason (None when cancelled) and the exact usage.
        """
        started = time.perf_counter()
        how = plan(request)
        grammar = self._grammar(how.grammar, "response_format" if how.mode == "json" else "tools")
        prompt = self.prompt_tokens(request)
        if counted is not None:
            counted(len(prompt))
        room = self.n_ctx - len(prompt)
        limit = request.max_tokens if caps is None else caps.output_limit(request.max_tokens, room)
        if room <= 0 or (limit is not None and limit > room):
            wanted = limit or 1
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx} tokens. However, you "
                f"requested {len(prompt) + wanted} tokens ({len(prompt)} in the prompt, "
                f"{wanted} for the completion).",
                param="messages" if request.operation == "chat" else "prompt",
            )
        max_tokens = limit or room
        self.llama.set_seed(request.seed if request.seed is not None else random.getrandbits(31))
        stops = _StopMatcher(request.stop)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        mode = how.mode
        reader: CallReader | EitherReader | None = None
        if mode == "call":
            reader = CallReader(emit)
        elif mode == "call_or_json":
            reader = EitherReader(emit, how.tools)
        produced = 0
        first_token_at: float | None = None
        finish: str | None = None
        tokens = self.llama.generate(
            prompt,
            temp=_pick(request.temperature, sampling.temperature),
            top_p=_pick(request.top_p, sampling.top_p),
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            frequency_penalty=request.frequency_penalty or 0.0,
            presence_penalty=request.presence_penalty or 0.0,
            reset=True,
            grammar=grammar,
        )
        try:
            for token in tokens:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if cancel.is_set():
                    break
                if self._is_eog(token):
                    finish = "stop"
                    break
                produced += 1
                piece = decoder.decode(self.llama.detokenize([token]))
                if mode == "auto" and piece:
                    # The grammar lets text start with anything but '{', a call with '{'.
                    mode = "call" if piece.startswith("{") else "text"
                    reader = CallReader(emit) if mode == "call" else None
                if reader is not None:
                    reader.feed(piece)  # a call: no stop sequences inside JSON
                    stopped = False
                else:
                    text, stopped = stops.feed(piece)
                    if text:
                        emit(text)
                if stopped:
                    finish = "stop"
                    break
                if produced >= max_tokens:
                    finish = "length"
                    break
        finally:
            tokens.close()
        if reader is not None:
            called = False
            if finish is not None:
                reader.feed(decoder.decode(b"", final=True))
                called = reader.close()
            if finish == "stop" and called:
                finish = FINISH_TOOL_CALLS
        elif finish == "length" or (finish == "stop" and not stops.stopped):
            tail = stops.flush(decoder.decode(b"", final=True))
            if tail:
                emit(tail)
        elif stops.matched is not None and on_stop is not None:
            on_stop(stops.matched)
        ended = time.perf_counter()
        usage = BackendUsage(
            prompt_tokens=len(prompt),
            completion_tokens=produced,
            time_to_first_token_s=(first_token_at or ended) - started,
            duration_s=ended - started,
            timings={
                "prefill_s": (first_token_at or ended) - started,
                "decode_s": ended - (first_token_at or ended),
            },
        )
        return finish, usage


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


class _StopMatcher:
    """Holds back just enough text to never emit the start of a stop sequence."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None  # the stop sequence that ended the text

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        self._pending += text
        found = [(i, s) for s in self._stops if (i := self._pending.find(s)) >= 0]
        if found:
            cut, self.matched = min(found, key=lambda hit: (hit[0], -len(hit[1])))
            out, self._pending, self.stopped = self._pending[:cut], "", True
            return out, True
        keep = len(self._pending) - self._hold
        if keep <= 0:
            return "", False
        out, self._pending = self._pending[:keep], self._pending[keep:]
        return out, False

    def flush(self, text: str) -> str:
        out, self._pending = self._pending + text, ""
        return out


def calibrate(
    instance: Instance, prompt_tokens: int = 128, output_tokens: int = 32
) -> dict[str, Any]:
    """Measure this machine's prefill and decode rates on the loaded model (a second or so)."""
    llama = instance.llama
    prompt = llama.tokenize(b" the river" * (prompt_tokens // 2), add_bos=True)[:prompt_tokens]
    llama.set_seed(0)
    # Forget what an earlier run left in the cache: a prompt it shares a prefix with would
    # skip the very prefill this times.
    llama.reset()  # type: ignore[no-untyped-call]
    started = time.perf_counter()
    first: float | None = None
    produced = 0
    gen = llama.generate(prompt, temp=0.0, reset=True)
    try:
        for _ in gen:
            if first is None:
                first = time.perf_counter()
            produced += 1
            if produced >= output_tokens:
                break
    finally:
        gen.close()
    ended = time.perf_counter()
    first = first or ended
    decode_s = max(ended - first, 1e-9)
    return {
        "prefill_tokens_per_s": len(prompt) / max(first - started, 1e-9),
        "decode_tokens_per_s": max(produced - 1, 1) / decode_s,
    }
