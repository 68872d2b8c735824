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

Operation = Literal["chat", "text_completion"]
"""What a request asks for: ``chat`` (``/v1/chat/completions``, the request's ``messages``)
or ``text_completion`` (``/v1/completions``, its ``prompt``)."""

DEFAULT_OPERATIONS: frozenset[Operation] = frozenset(("chat", "text_completion"))
"""The operations a :class:`Deployment` serves unless it declares its own: both, as every
backend did before backends declared theirs."""


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
    """

    backend_id: str
    model: str
    knowledge_cutoff: dt.date | None
    max_context: int
    adapter: str | None = None
    default_output_tokens: int | None = None
    max_output_tokens: int | None = None
    operations: frozenset[Operation] = DEFAULT_OPERATIONS

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
    role: str
    content: str


class GenerationRequest(Struct, kw_only=True):
    """A request as a backend sees it: already parsed, routed and normalised."""

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
    extra: Mapping[str, Any] = field(default_factory=dict)


class BackendUsage(Struct, kw_only=True):
    """What one request really used on a backend; carried by the last chunk."""

    prompt_tokens: int
    completion_tokens: int
    # Seconds from the backend accepting the request to its first token, and to its end.
    time_to_first_token_s: float | None = None
    duration_s: float | None = None
    # Set by backends that know their own energy (simulated hardware, on-board meters).
    energy_joules: float | None = None
    energy_source: EnergySource | None = None
    timings: Mapping[str, float] = field(default_factory=dict)


class Chunk(Struct, kw_only=True):
    """One piece of a backend's output. The last chunk has ``finish_reason`` and ``usage``."""

    text: str = ""
    finish_reason: str | None = None
    usage: BackendUsage | None = None
    # The prompt's real token count, when the backend knows it before the end (set on the
    # first chunk): a request cut short is then recorded with it, not an estimate.
    prompt_tokens: int | None = None


class BackendStatus(Struct, kw_only=True):
    healthy: bool
    running: int = 0
    waiting: int = 0
    observed_at: float = 0.0
    detail: str | None = None
    saturated: bool = False  # every slot busy and the queue full: a request would get 429


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
