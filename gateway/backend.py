"""What a backend is: the contract between the gateway and every backend plugin.

A backend plugin registers a *factory* (usually the backend class itself) under a type
name. The gateway builds one backend per configured entry, calls :meth:`Backend.start`
in the app's lifespan, and then asks it to :meth:`Backend.stream` requests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol, TypeVar, runtime_checkable

import msgspec
from msgspec import Meta, Struct, field

from gateway.errors import ConfigError

# The tools contract (gateway.tools), re-exported: part of what a backend sees.
from gateway.tools import (
    FINISH_TOOL_CALLS as FINISH_TOOL_CALLS,
)
from gateway.tools import (
    ContentPart as ContentPart,
)
from gateway.tools import (
    ImagePart as ImagePart,
)
from gateway.tools import (
    NamedTool as NamedTool,
)
from gateway.tools import (
    ResponseFormat as ResponseFormat,
)
from gateway.tools import (
    TextPart as TextPart,
)
from gateway.tools import (
    ToolCall as ToolCall,
)
from gateway.tools import (
    ToolCallDelta as ToolCallDelta,
)
from gateway.tools import (
    ToolChoice as ToolChoice,
)
from gateway.tools import (
    ToolSpec as ToolSpec,
)

T = TypeVar("T")

# Open names: a plugin may bring a hardware kind or an energy source the core has never
# heard of, without a change here. Config validation asks only for a tidy name (lower case,
# digits, ``.``, ``_``, ``-``), which keeps them usable as metric labels and ledger values.
_NAME = Meta(
    min_length=1,
    max_length=64,
    pattern=r"^[a-z0-9][a-z0-9._-]*$",
    description="a lower-case name, e.g. gpu",
)

HardwareKind = Annotated[str, _NAME]
"""What a backend runs on: any name; the core knows :data:`KNOWN_HARDWARE_KINDS`."""

KNOWN_HARDWARE_KINDS: tuple[str, ...] = ("gpu", "cpu", "asic", "remote")
"""The hardware kinds the built-in plugins use. ``freshet-energy`` picks a default meter by
kind (``asic``: simulated, ``gpu`` with GPU indices: NVML, ``cpu``: RAPL); any other kind
is measured by the power model of its profile. ``remote``: generation happens elsewhere
(a paid API, a server whose hardware is unknown)."""

EnergySource = Annotated[str, _NAME]
"""Where a request's joules came from: any name; the core knows
:data:`KNOWN_ENERGY_SOURCES`."""

KNOWN_ENERGY_SOURCES: tuple[str, ...] = ("nvml", "rapl", "model", "simulated")
"""The energy sources the built-in meters report: ``nvml`` (NVIDIA board counters),
``rapl`` (CPU package counters), ``model`` (the profile's power curve over time),
``simulated`` (the backend's own figure, e.g. ``freshet-asic-sim``). A third-party meter
(a smart PDU, a cloud power API) reports its own name."""

Operation = Literal["chat", "text_completion", "embeddings"]
"""What a request asks for: ``chat`` (``/v1/chat/completions``, the request's ``messages``),
``text_completion`` (``/v1/completions``, its ``prompt``) or ``embeddings``
(``/v1/embeddings``: served by a backend that is also an :class:`Embedder`, never by
:meth:`Backend.stream`)."""

STREAM_OPERATIONS: frozenset[Operation] = frozenset(("chat", "text_completion"))
"""The operations :meth:`Backend.stream` serves (they generate tokens)."""

DEFAULT_OPERATIONS: frozenset[Operation] = frozenset(("chat", "text_completion"))
"""The operations a :class:`Deployment` serves unless it declares its own: both, as every
backend did before backends declared theirs."""

Capability = Annotated[str, _NAME]
"""What a deployment can do beyond plain text generation: any name; the core knows
:data:`KNOWN_CAPABILITIES`."""

KNOWN_CAPABILITIES: tuple[str, ...] = ("tools", "json_schema", "vision", "embeddings")
"""The capabilities the core routes on: ``tools`` (function calling: a request's ``tools``
with a ``tool_choice`` other than ``none``), ``json_schema`` (structured output: a
``response_format`` of ``json_object`` or ``json_schema``), ``vision`` (image content
parts), ``embeddings``. A request needing one (:meth:`GenerationRequest.needs`) is never
routed to a deployment without it: the router drops it as ``capability(...)``, and a
request no deployment can serve is a 400 naming what is missing."""


class HardwareProfile(Struct, kw_only=True, frozen=True):
    """What a backend's hardware costs and can do. Every figure is configuration."""

    kind: HardwareKind = "cpu"
    watts_idle: float = 0.0
    watts_active: float = 0.0
    capex_per_hour: float = 0.0
    pue: float | None = None
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    max_concurrency: int = 1
    max_context: int | None = None
    # Board watts by number of concurrent requests, e.g. ((0, 100), (1, 300), (128, 600)):
    # piecewise-linear between points. Empty: linear from watts_idle at 0 requests to
    # watts_active at max_concurrency.
    power_curve: tuple[tuple[float, float], ...] = ()
    # Bought rather than rented: the purchase price and the years it is written off over.
    # With both, capex_per_hour is capex_usd / (life_years x 8,760 h) (over any rental
    # figure, a plugin's default included); the fleet planner (``freshet replay``) also
    # counts the price up front for pay-back.
    capex_usd: float = 0.0
    life_years: float = 0.0

    def __post_init__(self) -> None:
        if self.capex_usd < 0 or self.life_years < 0:
            raise ValueError("capex_usd and life_years must not be negative")
        if self.capex_usd > 0:
            if self.life_years <= 0:
                raise ValueError("capex_usd needs life_years (the years it is written off over)")
            msgspec.structs.force_setattr(
                self, "capex_per_hour", self.capex_usd / (self.life_years * 8760.0)
            )


class Deployment(Struct, kw_only=True, frozen=True):
    """A backend serving one model (plus an optional adapter): what the router chooses.

    Output caps: ``default_output_tokens`` is what a request without ``max_tokens`` may
    generate; ``max_output_tokens`` is the absolute ceiling, to which a larger
    ``max_tokens`` is clamped (``finish_reason: length`` says so). ``None`` leaves the
    bound to the context (prompt + output <= ``max_context``). The backend applies them
    with :meth:`output_limit`, where it knows the prompt's exact size; ``GET /v1/models``
    states them.

    ``operations``: what this deployment serves (default :data:`DEFAULT_OPERATIONS`). The
    router never sends it a request of another operation: it drops it with the reason
    ``operation(...)``, and a request that no deployment of its model can serve is a 400.

    ``capabilities``: what it can do beyond text (:data:`KNOWN_CAPABILITIES`; default
    none). A request that needs one it lacks (:meth:`GenerationRequest.needs`) is dropped
    the same way, with the reason ``capability(...)``.
    """

    backend_id: str
    model: str
    knowledge_cutoff: dt.date | None
    max_context: int
    adapter: str | None = None
    default_output_tokens: int | None = None
    max_output_tokens: int | None = None
    operations: frozenset[Operation] = DEFAULT_OPERATIONS
    capabilities: frozenset[Capability] = frozenset()

    @property
    def name(self) -> str:
        return f"{self.model}:{self.adapter}" if self.adapter else self.model

    def output_limit(self, requested: int | None, room: int | None = None) -> int | None:
        """How many tokens a request may generate here; ``None``: until the context is full.

        ``requested`` is the request's ``max_tokens``; ``room`` what the context leaves
        after the exact prompt, when the backend knows it. Without ``max_tokens`` the
        default (else the ceiling) applies, cut to ``room``; an explicit ``max_tokens`` is
        clamped to the ceiling and left for the backend to check against the context (a
        400 ``context_length_exceeded`` when it does not fit, as before).
        """
        ceiling = self.max_output_tokens
        if requested is None:
            limit = self.default_output_tokens
            if limit is None or (ceiling is not None and limit > ceiling):
                limit = ceiling
            if room is not None:
                limit = room if limit is None else min(limit, room)
            return limit
        return requested if ceiling is None else min(requested, ceiling)

    def with_output_limit(
        self, request: GenerationRequest, room: int | None = None
    ) -> GenerationRequest:
        """``request`` with ``max_tokens`` set to :meth:`output_limit` (itself if unchanged)."""
        limit = self.output_limit(request.max_tokens, room)
        if limit == request.max_tokens:
            return request
        return msgspec.structs.replace(request, max_tokens=limit)


class Message(Struct, kw_only=True, frozen=True):
    """One message of a chat. ``content`` is its text (the text parts joined);
    ``parts`` its content parts in order when it had any other than text (images: only a
    ``vision`` deployment is sent one, see :data:`KNOWN_CAPABILITIES`), else empty.
    An assistant message may carry ``tool_calls``; a ``tool`` message is the result of the
    call whose id is ``tool_call_id``."""

    role: str
    content: str = ""
    parts: Sequence[ContentPart] = ()
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str | None = None


class GenerationRequest(Struct, kw_only=True):
    """A request as a backend sees it: already parsed, routed and normalised.

    ``tools``, ``tool_choice``, ``parallel_tool_calls``: function calling (see
    :data:`ToolChoice`); a backend that answers with calls streams
    :attr:`Chunk.tool_calls` and ends with ``finish_reason="tool_calls"``.
    ``response_format``: structured output (``None``: text).
    """

    request_id: str
    operation: Operation
    model: str
    adapter: str | None = None
    messages: Sequence[Message] = ()
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: Sequence[str] = ()
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    tools: Sequence[ToolSpec] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The client takes the answer in one piece (a non-streaming request): nobody sees how
    # it is cut into chunks, so a backend may hand over what it has at once as one chunk
    # (counting its tokens in ``Chunk.pieces``) rather than token by token.
    whole: bool = False

    def effective_tool_choice(self) -> ToolChoice:
        """``tool_choice`` with OpenAI's default filled in: ``none`` without tools, else
        ``auto``."""
        if not self.tools:
            return "none"
        return "auto" if self.tool_choice is None else self.tool_choice

    def needs(self) -> frozenset[str]:
        """The capabilities a deployment must have to serve this request
        (:data:`KNOWN_CAPABILITIES`)."""
        needed: set[str] = set()
        if self.tools and self.effective_tool_choice() != "none":
            needed.add("tools")
        if self.response_format is not None and self.response_format.type != "text":
            needed.add("json_schema")
        if any(isinstance(part, ImagePart) for m in self.messages for part in m.parts):
            needed.add("vision")
        return frozenset(needed)


class BackendUsage(Struct, kw_only=True):
    """What one request really used on a backend; carried by the last chunk."""

    prompt_tokens: int
    completion_tokens: int
    # Parts of the counts above, as OpenAI counts them (0: none, or the backend cannot
    # tell): prompt tokens read from a prefix cache, prompt tokens written to one (paid
    # upstreams that bill cache writes, e.g. Anthropic's), and completion tokens spent on
    # reasoning. cached_prompt_tokens + cache_write_tokens <= prompt_tokens.
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    # Seconds from the backend accepting the request to its first token, and to its end.
    time_to_first_token_s: float | None = None
    duration_s: float | None = None
    # Set by backends that know their own energy (simulated hardware, on-board meters).
    energy_joules: float | None = None
    energy_source: EnergySource | None = None
    timings: Mapping[str, float] = field(default_factory=dict)


class Chunk(Struct, kw_only=True):
    """One piece of a backend's output. The last chunk has ``finish_reason`` and ``usage``.

    ``tool_calls``: pieces of tool calls (:class:`ToolCallDelta`); an answer with calls
    ends with ``finish_reason`` :data:`FINISH_TOOL_CALLS`.
    """

    text: str = ""
    finish_reason: str | None = None
    usage: BackendUsage | None = None
    # The prompt's real token count, when the backend knows it before the end (set on the
    # first chunk): a request cut short is then recorded with it, not an estimate.
    prompt_tokens: int | None = None
    tool_calls: Sequence[ToolCallDelta] = ()
    # On the last chunk, when the output ended at one of the request's ``stop`` strings and
    # the backend knows which: that string (Anthropic's ``stop_sequence``).
    stop_sequence: str | None = None
    # The output tokens (or tool-call pieces) ``text`` and ``tool_calls`` carry: more than
    # one when a backend hands over several at once (see ``GenerationRequest.whole``).
    # Counted as the output of a request that ends before the backend's usage.
    pieces: int = 1


class BackendStatus(Struct, kw_only=True):
    healthy: bool
    running: int = 0
    waiting: int = 0
    observed_at: float = 0.0
    detail: str | None = None
    saturated: bool = False  # every slot busy and the queue full: a request would get 429
    # The work the backend has committed to, for quotes (see docs/plugins.md). ``busy_s``:
    # wall seconds until a request admitted now could start (0.0: a slot is free and nobody
    # waits), counting what is left of the running requests and everything queued ahead of
    # it. ``None``: the backend does not know; the quote then estimates it from ``running``
    # and ``waiting`` as if every request were the size of the new one.
    busy_s: float | None = None
    # LoRA adapters: the names resident now (a request to another one first pays
    # ``adapter_swap_s`` to load it), and how many fit at once. ``None``: not reported (the
    # quote counts no swap).
    adapters_loaded: tuple[str, ...] | None = None
    adapter_swap_s: float = 0.0
    adapter_slots: int | None = None


class BackendConfig(Struct, kw_only=True, frozen=True):
    """One entry of the config's ``backends:`` list, as handed to a backend factory.

    ``params`` holds the type-specific keys; a plugin validates them with
    :func:`gateway.settings.convert_params` so errors name the config key.
    """

    id: str
    type: str
    model: str | None = None
    knowledge_cutoff: dt.date | None = None
    profile: Mapping[str, Any] = field(default_factory=dict)
    adapters: Sequence[Mapping[str, Any]] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    # For the cost model: which energy meter and settings (``meter: auto|nvml|rapl|model``),
    # and list prices per token for paid upstream APIs.
    energy: Mapping[str, Any] = field(default_factory=dict)
    list_price: Mapping[str, Any] = field(default_factory=dict)
    index: int = 0
    source: str | None = None
    # Output caps (see :class:`Deployment`); ``None``: the backend type's own default.
    default_output_tokens: int | None = None
    max_output_tokens: int | None = None
    # The config's ``capabilities: [...]`` (see :class:`Deployment`); ``None``: the
    # backend type's own default (:meth:`capabilities_or`).
    capabilities: frozenset[Capability] | None = None

    def capabilities_or(self, default: frozenset[str]) -> frozenset[str]:
        """This backend's capabilities: the config's list when it has one (it replaces the
        type's ``default``, so ``capabilities: []`` declares none), else ``default``."""
        return default if self.capabilities is None else self.capabilities

    def output_caps(
        self, default: int | None, ceiling: int | None
    ) -> tuple[int | None, int | None]:
        """This backend's ``(default_output_tokens, max_output_tokens)``: the config's keys
        over the backend type's ``default`` and ``ceiling``; the default never exceeds the
        ceiling."""
        ceiling = self.max_output_tokens if self.max_output_tokens is not None else ceiling
        default = self.default_output_tokens if self.default_output_tokens is not None else default
        if default is not None and ceiling is not None and default > ceiling:
            if self.default_output_tokens is not None:
                raise ConfigError(
                    f"default_output_tokens ({default}) is above max_output_tokens ({ceiling})",
                    file=self.source,
                    key=f"backends[{self.index}].default_output_tokens",
                )
            default = ceiling  # a lower configured ceiling lowers the type's default
        return default, ceiling


@runtime_checkable
class Backend(Protocol):
    """The methods and attributes the gateway uses on a backend object.

    Optional: ``remote = True`` says that generation happens outside this process (an
    HTTP server), so the event loop is free while a request waits for its first byte;
    the trace exporter uses such moments (see :func:`is_remote`).

    Which operations a backend serves, each of its :attr:`deployments` says
    (:attr:`Deployment.operations`); :meth:`stream` is only ever asked for those.
    """

    id: str
    kind: HardwareKind

    @property
    def deployments(self) -> Sequence[Deployment]: ...

    @property
    def profile(self) -> HardwareProfile: ...

    async def start(self) -> None:
        """Load models, open connections. Called once in the app's lifespan."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Generate. Errors raised before the first chunk let the gateway fall back.

        Closing the iterator (client gone) must stop the generation promptly.
        """
        ...

    async def status(self) -> BackendStatus: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TokenCounter(Protocol):
    """Optional for a backend: count a request's prompt exactly, as :meth:`Backend.stream`
    would see it (chat template included), without generating. ``count_tokens`` endpoints
    use it when the chosen backend has it, and an estimate otherwise."""

    async def count_tokens(self, request: GenerationRequest) -> int: ...


class EmbeddingRequest(Struct, kw_only=True):
    """A ``/v1/embeddings`` request as a backend sees it: parsed, bounded and routed.

    Exactly one of ``texts`` (strings) and ``tokens`` (token id arrays, passed as the
    client sent them) holds the inputs, each non-empty. ``dimensions``: the client's wish
    for shorter vectors; a backend that cannot honour it raises :class:`InvalidRequest`.
    """

    request_id: str
    model: str
    adapter: str | None = None
    texts: Sequence[str] = ()
    tokens: Sequence[Sequence[int]] = ()
    dimensions: int | None = None
    user: str | None = None

    @property
    def count(self) -> int:
        return len(self.texts) or len(self.tokens)


class EmbeddingResult(Struct, kw_only=True):
    """One vector per input, in order, and what the request used (``completion_tokens``
    0; ``prompt_tokens`` every input's tokens; timings and energy as for a generation)."""

    vectors: Sequence[Sequence[float]]
    usage: BackendUsage


@runtime_checkable
class Embedder(Protocol):
    """Optional for a backend: embed texts (``POST /v1/embeddings``). A backend that has it
    declares ``embeddings`` in its deployments' :attr:`Deployment.operations`; errors
    raised let the gateway fall back as before a stream's first chunk."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult: ...


def is_remote(backend: object) -> bool:
    """Whether ``backend`` generates outside this process (its ``remote`` attribute)."""
    return getattr(backend, "remote", False) is True


class Fleet(Protocol):
    """What a backend factory may look up in the rest of the fleet (e.g. a functional twin)."""

    def get(self, backend_id: str) -> Backend: ...


BackendFactory = Callable[[BackendConfig, Fleet], Backend]


def convert_section(value: Any, type_: type[T], source: str | None, key: str) -> T:
    """Validate a config section for a plugin; errors name ``key`` and the file."""
    return convert(value, type_, source, key)


def convert(value: Any, type_: type[T], source: str | None, key: str) -> T:
    try:
        return msgspec.convert(value, type_, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = ""
        if " - at `$" in message:
            message, _, at = message.partition(" - at `$")
            path = at.rstrip("`")
        raise ConfigError(message, file=source, key=f"{key}{path}") from exc
