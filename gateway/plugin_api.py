"""The one module a Freshet plugin imports: every type, protocol, helper and error it needs.

A plugin (built-in or third-party) writes ``from gateway.plugin_api import ...`` and
nothing else from ``gateway``, so what it may rely on is exactly ``__all__`` below; a
test pins that list, so a change to it is deliberate. The names are defined in the
core's contract modules and documented there and in ``docs/plugins.md``:

- hooks: :data:`hookimpl` and the ``register`` callback type of each registration hook
  (:mod:`gateway.hookspecs`);
- backends: the :class:`Backend` protocol, what it is given (:class:`BackendConfig`,
  :class:`Fleet`, :class:`GenerationRequest`) and what it returns (:class:`Chunk`,
  :class:`BackendUsage`, :class:`BackendStatus`, :class:`Deployment`,
  :class:`HardwareProfile`), and the operations a deployment may declare
  (:data:`Operation`, :data:`DEFAULT_OPERATIONS`) and capabilities
  (:data:`Capability`, :data:`KNOWN_CAPABILITIES`), and the parts of a request and answer
  for tools and structured output (:class:`ToolSpec`, :data:`ToolChoice`,
  :class:`NamedTool`, :class:`ResponseFormat`, :class:`ToolCall`, :class:`ToolCallDelta`,
  :data:`FINISH_TOOL_CALLS`) and content parts (:data:`ContentPart`: :class:`TextPart`,
  :class:`ImagePart`), and the optional :class:`Embedder` protocol for ``/v1/embeddings``
  (:class:`EmbeddingRequest` in, :class:`EmbeddingResult` out) (:mod:`gateway.backend`);
- config: :func:`convert_params`, :func:`convert_profile`, :func:`convert_section`,
  :func:`convert_list_price`, whose errors name the config file and key;
- cost: the :class:`CostModel` / :class:`BackendCost` / :class:`Metering` protocols, the
  :class:`EnergyMeter` protocol and their factories, and the waits a quote counts
  (:func:`queue_wait`, :func:`swap_wait`) (:mod:`gateway.cost`);
- routing: the :class:`Router` protocol and the :class:`Candidate` it orders;
- the :class:`UsageRecord` handed to ``usage_recorded``;
- replay: the :class:`Simulator` protocol a backend type registers for ``freshet replay``,
  what it is given and returns, the :class:`ServerPool` queue model, and
  :class:`Calibratable`, a backend that measures itself for ``freshet calibrate``
  (:mod:`gateway.simulator`);
- errors: the part of the :class:`FreshetError` tree a plugin raises.

Hardware kinds and energy sources are open names (plain strings): the core knows
:data:`KNOWN_HARDWARE_KINDS` and :data:`KNOWN_ENERGY_SOURCES`, and a plugin may bring new
ones without a change to the core.
"""

from __future__ import annotations

from gateway.backend import (
    DEFAULT_OPERATIONS,
    FINISH_TOOL_CALLS,
    KNOWN_CAPABILITIES,
    KNOWN_ENERGY_SOURCES,
    KNOWN_HARDWARE_KINDS,
    Backend,
    BackendConfig,
    BackendFactory,
    BackendStatus,
    BackendUsage,
    Capability,
    Chunk,
    ContentPart,
    Deployment,
    Embedder,
    EmbeddingRequest,
    EmbeddingResult,
    EnergySource,
    Fleet,
    GenerationRequest,
    HardwareKind,
    HardwareProfile,
    ImagePart,
    Message,
    NamedTool,
    Operation,
    ResponseFormat,
    TextPart,
    TokenCounter,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    convert_section,
    is_remote,
)
from gateway.cost import (
    BackendCost,
    Costing,
    CostModel,
    CostModelFactory,
    EnergyMeter,
    EnergySettings,
    ListPrice,
    MeterFactory,
    Metering,
    Quote,
    RequestShape,
    WattsAt,
    convert_list_price,
    queue_wait,
    swap_wait,
)
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    FreshetError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    RateLimited,
)
from gateway.hookspecs import (
    RegisterBackendType,
    RegisterCostModel,
    RegisterEnergyMeter,
    RegisterRoute,
    RegisterRouter,
    RegisterSimulator,
    RouterFactory,
    hookimpl,
)
from gateway.outcome import UsageRecord
from gateway.routing import Candidate, Router
from gateway.settings import convert_params, convert_profile
from gateway.simulator import (
    Calibratable,
    PooledSimulator,
    ServerPool,
    SimDone,
    SimRequest,
    SimTotals,
    Simulator,
    SimulatorFactory,
    profile_watts,
    simulated_usage,
    with_output,
)

__all__ = [
    "DEFAULT_OPERATIONS",
    "FINISH_TOOL_CALLS",
    "KNOWN_CAPABILITIES",
    "KNOWN_ENERGY_SOURCES",
    "KNOWN_HARDWARE_KINDS",
    "Backend",
    "BackendConfig",
    "BackendCost",
    "BackendError",
    "BackendFactory",
    "BackendStatus",
    "BackendUnavailable",
    "BackendUsage",
    "Calibratable",
    "Candidate",
    "Capability",
    "Chunk",
    "ConfigError",
    "ContentPart",
    "ContextLengthExceeded",
    "CostModel",
    "CostModelFactory",
    "Costing",
    "Deployment",
    "Embedder",
    "EmbeddingRequest",
    "EmbeddingResult",
    "EnergyMeter",
    "EnergySettings",
    "EnergySource",
    "Fleet",
    "FreshetError",
    "GenerationRequest",
    "HardwareKind",
    "HardwareProfile",
    "ImagePart",
    "InvalidRequest",
    "ListPrice",
    "Message",
    "MeterFactory",
    "Metering",
    "ModelNotFound",
    "NamedTool",
    "NotFound",
    "Operation",
    "PooledSimulator",
    "Quote",
    "RateLimited",
    "RegisterBackendType",
    "RegisterCostModel",
    "RegisterEnergyMeter",
    "RegisterRoute",
    "RegisterRouter",
    "RegisterSimulator",
    "RequestShape",
    "ResponseFormat",
    "Router",
    "RouterFactory",
    "ServerPool",
    "SimDone",
    "SimRequest",
    "SimTotals",
    "Simulator",
    "SimulatorFactory",
    "TextPart",
    "TokenCounter",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolSpec",
    "UsageRecord",
    "WattsAt",
    "convert_list_price",
    "convert_params",
    "convert_profile",
    "convert_section",
    "hookimpl",
    "is_remote",
    "profile_watts",
    "queue_wait",
    "simulated_usage",
    "swap_wait",
    "with_output",
]
