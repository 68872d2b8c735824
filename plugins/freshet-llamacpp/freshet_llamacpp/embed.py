"""The thread side of ``/v1/embeddings`` on llama.cpp: the chat model's pooled embeddings.

A second llama.cpp instance of the backend's own GGUF, opened with ``embedding=True`` and
mean pooling: each input's vector is the mean of the model's last hidden states over its
tokens, L2-normalised. It is what a chat model can give, not a retrieval-grade embedding
model: fine for tests, demos and rough similarity, not for search quality. Everything here
runs in the backend's one embedding thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from gateway.plugin_api import BackendError, BackendUsage, ContextLengthExceeded, InvalidRequest


class PooledEmbedder:
    """One embedding instance. Not thread-safe: the backend calls it from one thread."""

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int) -> None:
        # One input is decoded at a time and must fit one batch: a non-causal pooled decode
        # needs every token of the sequence in the same micro-batch.
        self.llama = llama_cpp.Llama(
            model_path=str(model_path),
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.n_ctx = self.llama.n_ctx()
        self.dimensions = self.llama.n_embd()
        self._vocab = self.llama.n_vocab()

    def tokenize(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode(), add_bos=True)

    def embed(
        self,
        texts: Sequence[str],
        tokens: Sequence[Sequence[int]],
        cancel: threading.Event,
    ) -> tuple[list[list[float]], BackendUsage]:
        """One normalised vector per input (``texts``, else ``tokens``), and the usage.
        Every input is checked before the first is decoded, so a bad one costs nothing."""
        started = time.perf_counter()
        param = "input"
        inputs = [self.tokenize(t) for t in texts] if texts else [list(t) for t in tokens]
        for i, ids in enumerate(inputs):
            if not ids:  # a text of nothing the tokenizer keeps
                raise InvalidRequest(f"input[{i}] has no tokens", param=param)
            if len(ids) > self.n_ctx:
                raise ContextLengthExceeded(
                    f"input[{i}] has {len(ids)} tokens; this model embeds at most {self.n_ctx}",
                    param=param,
                )
            bad = next((t for t in ids if t >= self._vocab), None)
            if bad is not None:
                raise InvalidRequest(
                    f"input[{i}] has token id {bad}; the model's vocabulary has {self._vocab}",
                    param=param,
                )
        vectors = []
        for ids in inputs:
            if cancel.is_set():
                break
            vectors.append(self._one(ids))
        ended = time.perf_counter()
        usage = BackendUsage(
            prompt_tokens=sum(len(ids) for ids in inputs),
            completion_tokens=0,
            time_to_first_token_s=ended - started,
            duration_s=ended - started,
            timings={"prefill_s": ended - started},
        )
        return vectors, usage

    def _one(self, ids: list[int]) -> list[float]:
        llama = self.llama
        # llama-cpp-python's own embed() does the same with the tokens it makes from text;
        # here the tokens may also be the client's.
        batch: Any = llama._batch  # llama-cpp-python's internals are untyped
        ctx: Any = llama._ctx
        batch.reset()
        batch.add_sequence(ids, 0, True)
        ctx.kv_cache_clear()
        try:
            ctx.decode(batch)
        except RuntimeError as exc:
            raise BackendError(f"llama.cpp could not embed the input: {exc}") from exc
        finally:
            batch.reset()
        pooled = llama_cpp.llama_get_embeddings_seq(ctx.ctx, 0)
        vector = [float(x) for x in pooled[: self.dimensions]]
        norm = math.sqrt(math.fsum(x * x for x in vector))
        return [x / norm for x in vector] if norm > 0 else vector
