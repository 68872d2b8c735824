"""Backend type ``openai-compatible``: any OpenAI-compatible server by URL (llama.cpp's
server, SGLang, TGI, Ollama, a paid API), on the same HTTP path as mode ``server`` of
``vllm``: pooled keep-alive connections, SSE events read minimally.

Such servers have no common load endpoint, so nothing is polled: load is what Freshet
itself has in flight, and health follows what happened to Freshet's own requests (a
connection refused or cut marks a server down; it is tried again after a backoff, and
is up again on its next answer).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Annotated

import msgspec
from msgspec import Meta, Struct, field

from freshet_vllm.http1 import Response
from freshet_vllm.params import ServerParams, build_deployments, config_error, parse_adapters
from freshet_vllm.server import VllmServerBackend
from freshet_vllm.upstream import Upstream
from gateway.plugin_api import (
    BackendConfig,
    BackendStatus,
    Fleet,
    GenerationRequest,
    HardwareKind,
    HardwareProfile,
    convert_params,
    convert_profile,
)

log = logging.getLogger(__name__)

# Nothing is known of the hardware behind a URL: no watts and no capex unless configured,
# so a paid API's cost comes from its ``list_price``.
REMOTE_PROFILE = HardwareProfile(kind="remote", max_concurrency=64)
DEFAULT_MAX_CONTEXT = 131072

Positive = Annotated[float, Meta(gt=0)]


class OpenAICompatibleParams(Struct, kw_only=True, forbid_unknown_fields=True):
    url: str | None = None
    urls: list[str] = field(default_factory=list)
    served_model: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None  # read the key from this environment variable
    headers: dict[str, str] = field(default_factory=dict)
    kind: HardwareKind = "remote"
    request_timeout_s: Positive = 120.0
    connect_timeout_s: Positive = 5.0
    retry_after_s: Positive = 0.5  # first wait before a server marked down is tried again
    max_backoff_s: Positive = 30.0
    max_in_flight: Annotated[int, Meta(ge=1)] | None = None


class PassiveUpstream(Upstream):
    """An upstream whose health is inferred from Freshet's own requests to it."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        connect_timeout_s: float,
        retry_after_s: float,
        max_backoff_s: float,
    ) -> None:
        super().__init__(url, headers, connect_timeout_s)
        self._retry_after_s = retry_after_s
        self._max_backoff_s = max_backoff_s
        self.retry_at = 0.0
        self.healthy = True  # until a request says otherwise
        self.observed_at = time.time()

    @property
    def available(self) -> bool:
        """Up, or down long enough that the next request may try it again."""
        return self.healthy or time.monotonic() >= self.retry_at

    def mark_down(self, reason: str) -> None:
        self.failures += 1
        backoff = self._retry_after_s * 2 ** min(self.failures - 1, 16)
        self.retry_at = time.monotonic() + min(self._max_backoff_s, backoff)
        self.observed_at = time.time()
        if self.healthy:
            log.warning("upstream %s is down: %s", self.url, reason)
        self.healthy = False
        self.last_error = reason

    def mark_up(self) -> None:
        if not self.healthy:
            log.info("upstream %s is up", self.url)
            self.healthy = True
            self.observed_at = time.time()
        self.failures = 0
        self.last_error = None


class OpenAICompatibleBackend(VllmServerBackend):
    label = "upstream"

    def __init__(self, config: BackendConfig, fleet: Fleet) -> None:
        own = convert_params(config, OpenAICompatibleParams)
        urls = ([own.url] if own.url else []) + own.urls
        if not urls:
            raise config_error(config, "url", "give the server's base URL (or urls: [...])")
        for i, url in enumerate(urls):
            if not url.startswith(("http://", "https://")):
                raise config_error(config, f"urls[{i}]", f"not an http(s) URL: {url!r}")
        api_key = own.api_key
        if own.api_key_env is not None:
            api_key = os.environ.get(own.api_key_env)
            if not api_key:
                raise config_error(
                    config, "api_key_env", f"environment variable {own.api_key_env} is not set"
                )
        self.id = config.id
        self.kind = own.kind
        self.params = ServerParams(
            urls=[u.rstrip("/").removesuffix("/v1") for u in urls],
            served_model=own.served_model,
            api_key=api_key,
            request_timeout_s=own.request_timeout_s,
            connect_timeout_s=own.connect_timeout_s,
            max_backoff_s=own.max_backoff_s,
            max_in_flight=own.max_in_flight,
        )
        self.model = config.model or own.served_model or config.id
        self.served_model = own.served_model or self.model
        self.gpu_indices = ()
        self._profile = convert_profile(
            config, msgspec.structs.replace(REMOTE_PROFILE, kind=own.kind)
        )
        self.adapters = parse_adapters(config)
        self._deployments = build_deployments(
            config, self.model, self._profile.max_context or DEFAULT_MAX_CONTEXT, self.adapters
        )
        headers = dict(own.headers)
        for name, value in headers.items():
            if any(c in name + value for c in "\r\n\0"):
                raise config_error(config, f"headers.{name}", "a line break in a header")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._passive = [
            PassiveUpstream(
                url, headers, own.connect_timeout_s, own.retry_after_s, own.max_backoff_s
            )
            for url in self.params.urls
        ]
        self.upstreams = list(self._passive)
        self._pollers = []

    async def start(self) -> None:
        for upstream in self.upstreams:
            upstream.open()

    async def status(self) -> BackendStatus:
        ups = self._passive
        up = [u for u in ups if u.available]
        in_flight = sum(u.in_flight for u in ups)
        detail = f"{sum(u.healthy for u in ups)}/{len(ups)} upstreams up; {in_flight} in flight"
        errors = [f"{u.url}: {u.last_error}" for u in ups if u.last_error]
        if errors:
            detail += "; " + "; ".join(errors)
        limit = self.params.max_in_flight
        return BackendStatus(
            healthy=bool(up),
            running=in_flight,
            observed_at=max((u.observed_at for u in ups), default=0.0),
            detail=detail,
            saturated=limit is not None and all(u.in_flight >= limit for u in up),
        )

    async def _open(
        self, request: GenerationRequest, model: str, body: dict[str, object]
    ) -> tuple[Response, Upstream]:
        resp, upstream = await super()._open(request, model, body)
        if isinstance(upstream, PassiveUpstream):
            upstream.mark_up()
        return resp, upstream
