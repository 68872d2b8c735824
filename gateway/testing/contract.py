"""The backend contract a plugin author runs against their backend: :func:`check_backend`
and the pytest base class :class:`BackendContract` (see :mod:`gateway.testing`)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from gateway.backend import (
    KNOWN_CAPABILITIES,
    STREAM_OPERATIONS,
    Backend,
    BackendConfig,
    BackendFactory,
    BackendStatus,
    Chunk,
    Deployment,
    Embedder,
    EmbeddingRequest,
    EmbeddingResult,
    HardwareProfile,
    Operation,
)
from gateway.errors import ConfigError, ContextLengthExceeded, FreshetError
from gateway.testing.streams import (
    as_config,
    close_stream,
    collect,
    expect,
    finished,
    idle,
    make_request,
    request_id,
)

# ---------------------------------------------------------------------------------------
# The backend contract

CHECKS: dict[str, str] = {
    "declaration": "id is the config's id; kind a lower-case name; one Deployment or more, "
    "each of this backend, with max_context > 0, operations among the gateway's and "
    "capabilities among KNOWN_CAPABILITIES; profile a HardwareProfile",
    "start": "start() completes; status() is a BackendStatus, healthy, nothing running",
    "chat": "a chat request (if declared) streams Chunks with text, and only the last has "
    "finish_reason and usage (prompt and completion tokens counted; cache and reasoning "
    "counts, if any, parts of them)",
    "text_completion": "the same for a text completion (if declared)",
    "embeddings": "(if declared) embed() of two texts gives two finite vectors of one length "
    "and usage with prompt tokens and no completion tokens",
    "max_tokens": "usage.completion_tokens never exceeds the request's max_tokens",
    "cancellation": "closing the stream after its first chunk returns promptly, and "
    "status().running and .waiting go back to 0",
    "context_length": "a prompt longer than the deployment's max_context raises "
    "ContextLengthExceeded before the first chunk",
    "undeclared_operation": "an operation the deployment does not declare is refused with "
    "a FreshetError before the first chunk",
    "status": "after all that: healthy, nothing running or waiting",
    "aclose": "aclose() completes",
}
"""Each check's name and what it asks. A check may be skipped with a reason (``skip=``)."""

ALL_OPERATIONS: tuple[Operation, ...] = typing.get_args(Operation)
# The ones Backend.stream serves (embeddings go to Embedder.embed).
OPERATIONS: tuple[Operation, ...] = tuple(op for op in ALL_OPERATIONS if op in STREAM_OPERATIONS)
_KIND = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Literal["passed", "failed", "skipped"]
    detail: str = ""


@dataclass
class ContractReport:
    """What :func:`check_backend` found, check by check (in :data:`CHECKS` order)."""

    backend_id: str
    results: dict[str, CheckResult] = field(default_factory=dict)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results.values() if r.outcome == "failed"]

    def check(self, name: str) -> None:
        """Fail (``AssertionError``) or skip (``pytest.skip``) as check ``name`` did."""
        result = self.results[name]
        if result.outcome == "failed":
            raise AssertionError(f"{self.backend_id}: {name}: {result.detail}")
        if result.outcome == "skipped":
            pytest.skip(f"{self.backend_id}: {name}: {result.detail}")

    def raise_for_failures(self) -> None:
        """One ``AssertionError`` naming every failed check; nothing when all passed."""
        if self.failures:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        lines = [f"backend contract of {self.backend_id!r}:"]
        for r in self.results.values():
            lines.append(f"  {r.outcome:7} {r.name}" + (f": {r.detail}" if r.detail else ""))
        return "\n".join(lines)


class _ContractFleet:
    """The fleet a backend under test sees: its neighbours (a twin), by id."""

    def __init__(self) -> None:
        self.backends: dict[str, Backend] = {}

    def get(self, backend_id: str) -> Backend:
        try:
            return self.backends[backend_id]
        except KeyError:
            raise ConfigError(f"unknown backend {backend_id!r}") from None


async def check_backend(
    factory: BackendFactory,
    config: BackendConfig | Mapping[str, Any],
    *,
    neighbours: Sequence[tuple[BackendFactory, BackendConfig | Mapping[str, Any]]] = (),
    skip: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
    settle_s: float = 10.0,
) -> ContractReport:
    """Build a backend with ``factory(config, fleet)``, run every check of :data:`CHECKS`
    on it, close it, and report.

    ``config`` is the backend's entry as written in ``freshet.yaml`` (a mapping with ``id``,
    ``type``, ``knowledge_cutoff``, type-specific keys) or a ``BackendConfig``.
    ``neighbours``: other backends (factory and entry) built first and started, which the
    backend may look up in its fleet (a functional twin). ``skip``: check name -> why it
    does not apply to this backend. ``timeout_s``: the limit of each check; ``settle_s``:
    how long ``status()`` may take to show nothing running once a stream is closed.
    """
    skip = dict(skip or {})
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; the checks are {list(CHECKS)}")
    fleet = _ContractFleet()
    started: list[Backend] = []
    for make, entry in neighbours:
        neighbour = make(as_config(entry), fleet)
        fleet.backends[neighbour.id] = neighbour
    backend_config = as_config(config)
    backend = factory(backend_config, fleet)
    report = ContractReport(backend_config.id)
    results = report.results
    broken: str | None = None  # a check the others need failed

    async def run(name: str, check: Callable[[], Awaitable[str | None]]) -> None:
        if name in skip:
            results[name] = CheckResult(name, "skipped", skip[name])
            return
        if broken is not None:
            results[name] = CheckResult(name, "failed", f"not run: {broken} failed")
            return
        try:
            async with asyncio.timeout(timeout_s):
                skipped = await check()
        except AssertionError as exc:
            results[name] = CheckResult(name, "failed", str(exc))
        except TimeoutError:
            results[name] = CheckResult(name, "failed", f"did not finish in {timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - any error is the check's finding
            hint = "" if isinstance(exc, FreshetError) else " (raise FreshetError subclasses)"
            results[name] = CheckResult(name, "failed", f"{type(exc).__name__}: {exc}{hint}")
        else:
            results[name] = (
                CheckResult(name, "skipped", skipped) if skipped else CheckResult(name, "passed")
            )

    def declared() -> list[Operation]:
        ops = backend.deployments[0].operations
        return [op for op in OPERATIONS if op in ops]

    async def declaration() -> None:
        expect(isinstance(backend, Backend), "the object lacks members of the Backend protocol")
        expect(backend.id == backend_config.id, f"id {backend.id!r} is not {backend_config.id!r}")
        expect(
            isinstance(backend.kind, str) and _KIND.match(backend.kind),
            f"kind {backend.kind!r} is not a lower-case name",
        )
        deps = list(backend.deployments)
        expect(deps, "no deployments")
        names = [d.name for d in deps]
        expect(len(set(names)) == len(names), f"deployments repeat a name: {names}")
        for d in deps:
            expect(isinstance(d, Deployment), f"{d!r} is not a Deployment")
            expect(d.backend_id == backend.id, f"{d.name}: backend_id {d.backend_id!r}")
            expect(d.max_context > 0, f"{d.name}: max_context {d.max_context}")
            expect(d.operations, f"{d.name}: declares no operation")
            expect(
                set(d.operations) <= set(ALL_OPERATIONS),
                f"{d.name}: operations {sorted(d.operations)} not among {list(ALL_OPERATIONS)}",
            )
            expect(
                "embeddings" not in d.operations or isinstance(backend, Embedder),
                f"{d.name}: declares embeddings but the backend has no embed()",
            )
            expect(
                set(d.capabilities) <= set(KNOWN_CAPABILITIES),
                f"{d.name}: capabilities {sorted(d.capabilities)} not among "
                f"{list(KNOWN_CAPABILITIES)}",
            )
        expect(isinstance(backend.profile, HardwareProfile), "profile is not a HardwareProfile")

    async def start() -> None:
        for neighbour in fleet.backends.values():
            await neighbour.start()
            started.append(neighbour)
        await backend.start()
        started.append(backend)
        status = await backend.status()
        expect(isinstance(status, BackendStatus), f"status() gave a {type(status).__name__}")
        expect(status.healthy, f"status() after start() is not healthy: {status.detail}")
        expect(
            status.running == 0 and status.waiting == 0,
            f"status() after start(): running {status.running}, waiting {status.waiting}",
        )

    def generation(operation: Operation, text: str) -> Callable[[], Awaitable[str | None]]:
        async def check() -> str | None:
            if operation not in declared():
                return f"{operation} is not declared"
            chunks = await collect(
                backend, make_request(backend.deployments[0], operation, text, 8)
            )
            usage = finished(chunks)
            out = "".join(c.text for c in chunks)
            expect(out.strip(), "no text came out")
            expect(usage.completion_tokens > 0, "text came out but completion_tokens is 0")
            expect(
                usage.completion_tokens <= 8,
                f"completion_tokens {usage.completion_tokens} over max_tokens 8",
            )
            return None

        return check

    async def embeddings() -> str | None:
        dep = backend.deployments[0]
        if "embeddings" not in dep.operations:
            return "embeddings is not declared"
        expect(isinstance(backend, Embedder), "embeddings is declared but there is no embed()")
        assert isinstance(backend, Embedder)
        request = EmbeddingRequest(
            request_id=request_id(),
            model=dep.model,
            adapter=dep.adapter,
            texts=("The river rises after rain.", "A mountain stands."),
        )
        result = await backend.embed(request)
        expect(isinstance(result, EmbeddingResult), f"embed() returned {type(result).__name__}")
        vectors = [list(v) for v in result.vectors]
        expect(len(vectors) == 2, f"{len(vectors)} vectors for 2 inputs")
        expect(vectors[0] and len(vectors[0]) == len(vectors[1]), "vectors of different sizes")
        expect(all(math.isfinite(x) for v in vectors for x in v), "a vector has a NaN or infinity")
        usage = result.usage
        expect(usage.prompt_tokens > 0, f"usage.prompt_tokens is {usage.prompt_tokens}")
        expect(usage.completion_tokens == 0, "an embedding has no completion tokens")
        return None

    async def max_tokens() -> None:
        dep = backend.deployments[0]
        for operation in declared():
            request = make_request(dep, operation, "Tell me a long story about a river.", 2)
            usage = finished(await collect(backend, request))
            expect(
                usage.completion_tokens <= 2,
                f"{operation}: completion_tokens {usage.completion_tokens} over max_tokens 2",
            )

    async def cancellation() -> None:
        dep = backend.deployments[0]
        request = make_request(dep, declared()[0], "Count from 1 to 1000, separated by commas.", 64)
        stream = backend.stream(request)
        try:
            first = await anext(stream)
            expect(isinstance(first, Chunk), f"the first chunk is a {type(first).__name__}")
        finally:
            began = time.monotonic()
            await close_stream(stream)
        took = time.monotonic() - began
        expect(took < 5.0, f"closing the stream took {took:.1f} s")
        status = await idle(backend, settle_s)
        expect(
            status.running == 0 and status.waiting == 0,
            f"{settle_s:g} s after the stream was closed: running {status.running}, "
            f"waiting {status.waiting}",
        )

    async def context_length() -> None:
        dep = backend.deployments[0]
        words = dep.max_context + 64
        request = make_request(dep, declared()[0], " ".join(["river"] * words), 8)
        stream = backend.stream(request)
        try:
            chunk = await anext(stream)
        except ContextLengthExceeded:
            return
        except FreshetError as exc:
            raise AssertionError(
                f"a prompt of {words} words over max_context {dep.max_context} raised "
                f"{type(exc).__name__}, not ContextLengthExceeded"
            ) from exc
        finally:
            await close_stream(stream)
        raise AssertionError(
            f"a prompt of {words} words over max_context {dep.max_context} gave a chunk "
            f"({chunk!r}); raise ContextLengthExceeded before the first chunk"
        )

    async def undeclared_operation() -> str | None:
        dep = backend.deployments[0]
        missing = [op for op in OPERATIONS if op not in dep.operations]
        if not missing:
            return "every operation is declared"
        for operation in missing:
            stream = backend.stream(make_request(dep, operation, "hello", 8))
            try:
                await anext(stream)
            except FreshetError:
                continue
            except StopAsyncIteration:
                raise AssertionError(f"{operation} (not declared) ended without error") from None
            finally:
                await close_stream(stream)
            raise AssertionError(
                f"{operation} is not declared but streamed; raise a FreshetError "
                "(InvalidRequest) before the first chunk"
            )
        return None

    async def status() -> None:
        now = await idle(backend, settle_s)
        expect(now.healthy, f"not healthy after the checks: {now.detail}")
        expect(
            now.running == 0 and now.waiting == 0,
            f"after the checks: running {now.running}, waiting {now.waiting}",
        )

    async def aclose() -> None:
        await backend.aclose()

    async def as_check(fn: Callable[[], Awaitable[None]]) -> str | None:
        await fn()
        return None

    try:
        await run("declaration", lambda: as_check(declaration))
        if results["declaration"].outcome == "failed":
            broken = "declaration"
        await run("start", lambda: as_check(start))
        if results["start"].outcome == "failed":
            broken = broken or "start"
        await run("chat", generation("chat", "Name a river."))
        await run("text_completion", generation("text_completion", "The river rises after"))
        await run("embeddings", embeddings)
        await run("max_tokens", lambda: as_check(max_tokens))
        await run("cancellation", lambda: as_check(cancellation))
        await run("context_length", lambda: as_check(context_length))
        await run("undeclared_operation", undeclared_operation)
        await run("status", lambda: as_check(status))
        broken = None  # closing is checked whatever happened before
        await run("aclose", lambda: as_check(aclose))
    finally:
        if "aclose" not in results or results["aclose"].outcome != "passed":
            with contextlib.suppress(Exception):
                await backend.aclose()
        for neighbour in reversed([b for b in started if b is not backend]):
            with contextlib.suppress(Exception):
                await neighbour.aclose()
    return report


_reports: dict[type[BackendContract], ContractReport] = {}


class BackendContract:
    """The backend contract as a pytest base class: one test per check of :data:`CHECKS`.

    Set ``factory`` (your backend class or factory) and ``config`` (its entry as written in
    ``freshet.yaml``); optionally ``neighbours`` (a twin), ``skip`` (check name -> reason),
    ``timeout_s`` and ``settle_s`` (see :func:`check_backend`). Override
    :meth:`environment` to run something in the checks' event loop around them (a fake
    upstream server) and give the config that points at it. The backend is built, checked
    and closed once per class, on the first test.
    """

    factory: ClassVar[BackendFactory]
    config: ClassVar[BackendConfig | Mapping[str, Any]]
    neighbours: ClassVar[Sequence[tuple[BackendFactory, BackendConfig | Mapping[str, Any]]]] = ()
    skip: ClassVar[Mapping[str, str]] = {}
    timeout_s: ClassVar[float] = 60.0
    settle_s: ClassVar[float] = 10.0

    @contextlib.asynccontextmanager
    async def environment(self) -> AsyncIterator[BackendConfig | Mapping[str, Any]]:
        """Around the checks, in their event loop; yields the config to check with."""
        yield self.config

    async def _check(self) -> ContractReport:
        cls = type(self)
        async with self.environment() as config:
            return await check_backend(
                cls.factory,
                config,
                neighbours=cls.neighbours,
                skip=cls.skip,
                timeout_s=cls.timeout_s,
                settle_s=cls.settle_s,
            )

    def contract(self) -> ContractReport:
        """This class's report (the checks run on the first call)."""
        cls = type(self)
        if cls not in _reports:
            _reports[cls] = asyncio.run(self._check())
        return _reports[cls]

    def test_declaration(self) -> None:
        self.contract().check("declaration")

    def test_start(self) -> None:
        self.contract().check("start")

    def test_chat(self) -> None:
        self.contract().check("chat")

    def test_text_completion(self) -> None:
        self.contract().check("text_completion")

    def test_embeddings(self) -> None:
        self.contract().check("embeddings")

    def test_max_tokens(self) -> None:
        self.contract().check("max_tokens")

    def test_cancellation(self) -> None:
        self.contract().check("cancellation")

    def test_context_length(self) -> None:
        self.contract().check("context_length")

    def test_undeclared_operation(self) -> None:
        self.contract().check("undeclared_operation")

    def test_status(self) -> None:
        self.contract().check("status")

    def test_aclose(self) -> None:
        self.contract().check("aclose")
