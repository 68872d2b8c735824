"""The backend contract of ``gateway.testing`` finds what it claims to find (#18 point 10):
a sound backend passes every check, and each kind of broken backend fails the check meant
for it, with a message that says what to fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.backend import BackendUsage, Chunk, GenerationRequest
from gateway.builtins.deterministic import DeterministicBackend
from gateway.testing import CHECKS, BackendContract, ContractReport, check_backend

ENTRY: dict[str, Any] = {
    "id": "det",
    "type": "deterministic",
    "model": "det-model",
    "knowledge_cutoff": "2024-01-01",
}


def outcomes(report: ContractReport) -> dict[str, str]:
    return {name: r.outcome for name, r in report.results.items()}


def failed(report: ContractReport) -> dict[str, str]:
    return {r.name: r.detail for r in report.failures}


@pytest.mark.asyncio
async def test_a_sound_backend_passes_every_check() -> None:
    report = await check_backend(DeterministicBackend, ENTRY)
    assert list(report.results) == list(CHECKS)
    assert failed(report) == {}, str(report)
    assert report.results["undeclared_operation"].outcome == "skipped"  # it declares both
    report.raise_for_failures()


@pytest.mark.asyncio
async def test_a_chat_only_backend_is_checked_for_refusing_completions() -> None:
    report = await check_backend(DeterministicBackend, {**ENTRY, "operations": ["chat"]})
    assert failed(report) == {}, str(report)
    assert outcomes(report)["undeclared_operation"] == "passed"
    assert outcomes(report)["text_completion"] == "skipped"


class OldShout(DeterministicBackend):
    """The documented example as it was: it read messages[-1] whatever the operation."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        text = request.messages[-1].content
        yield Chunk(text=text.upper())
        yield Chunk(finish_reason="stop", usage=BackendUsage(prompt_tokens=1, completion_tokens=1))


class Careless(DeterministicBackend):
    """Ignores max_tokens and the context, and puts usage on every chunk."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        usage = BackendUsage(prompt_tokens=3, completion_tokens=20)
        for _ in range(19):
            yield Chunk(text=" word", usage=usage)
        yield Chunk(text=" end", finish_reason="stop", usage=usage)


class Leaky(DeterministicBackend):
    """Forgets to count a request as finished when its stream is closed early."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.running += 1
        for i in range(request.max_tokens or 16):
            yield Chunk(text=f" w{i}")
        self.running -= 1
        yield Chunk(
            finish_reason="length",
            usage=BackendUsage(prompt_tokens=3, completion_tokens=request.max_tokens or 16),
        )


class Overeager(DeterministicBackend):
    """Declares chat only, then serves text completions anyway."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        yield Chunk(text="sure")
        yield Chunk(finish_reason="stop", usage=BackendUsage(prompt_tokens=1, completion_tokens=1))


@pytest.mark.asyncio
async def test_a_crash_on_completions_fails_text_completion_with_a_hint() -> None:
    found = failed(await check_backend(OldShout, ENTRY))
    assert "IndexError" in found["text_completion"]
    assert "raise FreshetError subclasses" in found["text_completion"]
    assert "chat" not in found


@pytest.mark.asyncio
async def test_ignoring_limits_and_usage_on_every_chunk_fail_their_checks() -> None:
    found = failed(await check_backend(Careless, ENTRY))
    assert "only the last may" in found["chat"]
    assert "only the last may" in found["text_completion"]
    assert "max_tokens" in found
    assert "ContextLengthExceeded" in found["context_length"]


class Overcounted(DeterministicBackend):
    """Reports cache and reasoning counts larger than the counts they are parts of."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        yield Chunk(text="hi")
        usage = BackendUsage(
            prompt_tokens=3, completion_tokens=1, cached_prompt_tokens=5, reasoning_tokens=2
        )
        yield Chunk(finish_reason="stop", usage=usage)


@pytest.mark.asyncio
async def test_cache_and_reasoning_counts_must_be_parts_of_the_counts() -> None:
    found = failed(await check_backend(Overcounted, ENTRY))
    assert "not parts of prompt_tokens (3)" in found["chat"]
    assert "not parts of prompt_tokens (3)" in found["text_completion"]


@pytest.mark.asyncio
async def test_a_stream_closed_early_must_free_its_slot() -> None:
    found = failed(await check_backend(Leaky, ENTRY, settle_s=0.3))
    assert "running 1" in found["cancellation"]


@pytest.mark.asyncio
async def test_an_operation_not_declared_must_be_refused() -> None:
    found = failed(await check_backend(Overeager, {**ENTRY, "operations": ["chat"]}))
    assert "text_completion is not declared but streamed" in found["undeclared_operation"]


@pytest.mark.asyncio
async def test_checks_can_be_skipped_with_a_reason_and_unknown_names_are_refused() -> None:
    report = await check_backend(Careless, ENTRY, skip={"context_length": "counted upstream"})
    assert report.results["context_length"].outcome == "skipped"
    assert report.results["context_length"].detail == "counted upstream"
    with pytest.raises(ValueError, match="unknown checks"):
        await check_backend(DeterministicBackend, ENTRY, skip={"chatt": "typo"})


@pytest.mark.asyncio
async def test_a_failed_declaration_stops_the_rest() -> None:
    report = await check_backend(DeterministicBackend, {**ENTRY, "max_context": 0})
    found = failed(report)
    assert "max_context 0" in found["declaration"]
    assert found["chat"] == "not run: declaration failed"
    assert "aclose" not in found


class TestTheBaseClassRunsOnceAndReportsPerCheck(BackendContract):
    factory = DeterministicBackend
    config = ENTRY

    def test_one_run_serves_every_test(self) -> None:
        assert self.contract() is self.contract()
        assert list(self.contract().results) == list(CHECKS)
