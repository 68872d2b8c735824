"""Backend type ``openai-compatible``: any OpenAI-compatible server by URL (llama.cpp's
server, SGLang, TGI, Ollama, a paid API), on the same HTTP path as mode ``server`` of
``vllm``: pooled keep-alive connections, SSE events read minimally.

Such servers have no common load endpoint, so nothing is polled: load is what Freshet
itself has in flight, and health follows what happened to Freshet's own requests. The
backend's health is the gateway's one model for it (its circuit, gateway/state/health.py):
this backend never calls itself unhealthy. Behind it, each server (``urls``) follows the
same outlier rules (:class:`~freshet_vllm.upstream.Outlier`, tuned by the backend's own
``health:``): failures before the first byte count, a failure rate or failures in a row
eject a server for a while (never more than ``max_ejection_percent`` of them), a server back
from ejection is probed by one request at a time, and when every server is ejected they are
all tried anyway, the soonest back first.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Annotated

import msgspec
from msgspec import Meta, Struct, field

from freshet_vllm import wire
from freshet_vllm.http1 import Response
from freshet_vllm.params import ServerParams, build_deployments, config_error, parse_adapters
from freshet_vllm.server import _CONNECT_ERRORS, _PATHS, VllmServerBackend
from freshet_vllm.upstream import Outlier, OutlierRules, Upstream, trace_headers
from gateway.plugin_api import (
    DEFAULT_OPERATIONS,
    BackendConfig,
    BackendError,
    BackendStatus,
    BackendUnavailable,
    Fleet,
    FreshetError,
    GenerationRequest,
    HardwareKind,
    HardwareProfile,
    Operation,
    RateLimited,
    convert_params,
    convert_profile,
)

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

# Nothing is known of the hardware behind a URL: no watts and no capex unless configured,
# so a paid API's cost comes from its ``list_price``.
REMOTE_PROFILE = HardwareProfile(kind="remote", max_concurrency=64)
DEFAULT_MAX_CONTEXT = 131072
# What an OpenAI-compatible server is assumed to do beyond text (the config's
# ``capabilities`` replaces it): tools and structured output, passed on in OpenAI's shape.
CAPABILITIES = frozenset(("tools", "json_schema"))

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
    # Older names of health.ejection_s and health.max_ejection_s.
    retry_after_s: Positive | None = None
    max_backoff_s: Positive | None = None
    max_in_flight: Annotated[int, Meta(ge=1)] | None = None
    health: OutlierRules = field(default_factory=OutlierRules)  # for the servers behind it
    # What the server does for this model; embeddings go to its /v1/embeddings.
    operations: frozenset[Operation] = DEFAULT_OPERATIONS


class PassiveUpstream(Upstream):
    """An upstream whose health is inferred from Freshet's own requests to it."""

    def __init__(
        self, url: str, headers: dict[str, str], connect_timeout_s: float, rules: OutlierRules
    ) -> None:
        super().__init__(url, headers, connect_timeout_s)
        self.outlier = Outlier(rules)
        self.observed_at = time.time()

    @property
    def healthy(self) -> bool:
        """Not ejected now."""
        return not self.outlier.ejected()

    @healthy.setter
    def healthy(self, value: bool) -> None:
        """Inferred from requests: what the base class would set is ignored."""

    @property
    def available(self) -> bool:
        return not self.outlier.ejected()

    def failed(self, reason: str, may_eject: Callable[[], bool]) -> None:
        """It failed a request before the response's first byte."""
        self.last_error = reason
        self.observed_at = time.time()
        if self.outlier.failure(may_eject):
            log.warning(
                "upstream %s ejected for %.1f s (%d failures in a row): %s",
                self.url,
                self.outlier.ejected_until - time.monotonic(),
                self.outlier.failures,
                reason,
            )

    def mark_down(self, reason: str) -> None:
        """Called by the stream when the connection fails mid-stream: that request's
        failure, not the server's (see :class:`~freshet_vllm.upstream.Outlier`)."""
        self.last_error = reason
        self.observed_at = time.time()
        self.outlier.cut()

    def mark_up(self) -> None:
        if self.outlier.probing and not self.outlier.ejected():
            log.info("upstream %s is up", self.url)
        self.outlier.success()
        self.failures = 0
        self.observed_at = time.time()

    def view(self) -> dict[str, object]:
        """This server's health for ``/freshet/backends``."""
        outlier = self.outlier
        requests, failures = outlier.counts()
        left = outlier.ejected_until - time.monotonic()
        return {
            "url": self.url,
            "state": outlier.state,
            "ejected_until": time.time() + left if left > 0 else None,
            "ejections": outlier.ejections,
            "consecutive_failures": outlier.failures,
            "requests": requests,
            "failures": failures,
            "stream_failures": outlier.cuts,
            "in_flight": self.in_flight,
            "last_error": self.last_error,
        }


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
            max_backoff_s=own.max_backoff_s or own.health.max_ejection_s,
            max_in_flight=own.max_in_flight,
            operations=own.operations,
        )
        self.model = config.model or own.served_model or config.id
        self.served_model = own.served_model or self.model
        self.gpu_indices = ()
        self._profile = convert_profile(
            config, msgspec.structs.replace(REMOTE_PROFILE, kind=own.kind)
        )
        self.adapters = parse_adapters(config)
        self._deployments = build_deployments(
            config,
            self.model,
            self._profile.max_context or DEFAULT_MAX_CONTEXT,
            self.adapters,
            own.operations,
            CAPABILITIES,
        )
        headers = dict(own.headers)
        for name, value in headers.items():
            if any(c in name + value for c in "\r\n\0"):
                raise config_error(config, f"headers.{name}", "a line break in a header")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        rules = own.health
        if own.retry_after_s is not None:
            rules = msgspec.structs.replace(rules, ejection_s=own.retry_after_s)
        if own.max_backoff_s is not None:
            rules = msgspec.structs.replace(rules, max_ejection_s=own.max_backoff_s)
        if rules.max_ejection_s < rules.ejection_s:
            raise config_error(config, "health.max_ejection_s", "must be >= ejection_s")
        self.rules = rules
        self._passive = [
            PassiveUpstream(url, headers, own.connect_timeout_s, rules) for url in self.params.urls
        ]
        self.upstreams = list(self._passive)
        self._pollers = []
        self.panics = 0  # requests sent while every server was ejected

    async def start(self) -> None:
        for upstream in self.upstreams:
            upstream.open()

    async def status(self) -> BackendStatus:
        ups = self._passive
        in_flight = sum(u.in_flight for u in ups)
        up = [u for u in ups if u.available]
        detail = f"{len(up)}/{len(ups)} upstreams up; {in_flight} in flight"
        for u in ups:
            if not u.available:
                left = u.outlier.ejected_until - time.monotonic()
                detail += f"; {u.url}: ejected for {left:.1f} s ({u.last_error})"
        limit = self.params.max_in_flight
        return BackendStatus(
            # The gateway's health model decides about the backend as a whole (it hears
            # every failure this backend raises); servers are ejected only inside it.
            healthy=True,
            running=in_flight,
            observed_at=max((u.observed_at for u in ups), default=0.0),
            detail=detail,
            saturated=limit is not None and all(u.in_flight >= limit for u in (up or ups)),
        )

    def upstream_health(self) -> list[dict[str, object]]:
        """Each server's health, for ``/freshet/backends``."""
        return [u.view() for u in self._passive]

    def _order(self) -> list[PassiveUpstream]:
        """Servers in the order to try them: those not ejected, a probing one only while it
        has no request in flight, least loaded first; when every one is ejected, all of them,
        the soonest back first (panic: tried rather than refused)."""
        now = time.monotonic()
        up = [u for u in self._passive if not u.outlier.ejected(now)]
        if up:
            if len(up) == 1:
                return up
            return sorted(up, key=lambda u: (u.outlier.probing and u.in_flight > 0, u.in_flight))
        self.panics += 1
        return sorted(self._passive, key=lambda u: u.outlier.ejected_until)

    def _may_eject(self) -> bool:
        ejected = sum(1 for u in self._passive if u.outlier.ejected())
        return ejected + 1 <= self.rules.max_ejected(len(self._passive))

    async def _open(
        self, request: GenerationRequest, model: str, body: dict[str, object]
    ) -> tuple[Response, Upstream]:
        """POST to the first server in :meth:`_order` that takes it; the next one on a
        failure before the response (connection, timeout, garbage, 5xx)."""
        path = _PATHS[request.operation]
        failures: list[str] = []
        limit = self.params.max_in_flight
        order = self._order()
        encoded = _encode(body)
        if limit is not None and all(u.in_flight >= limit for u in order):
            raise RateLimited(
                f"backend {self.id}: every {self.label} server has {limit} requests in flight"
            )
        for upstream in order:
            if limit is not None and upstream.in_flight >= limit:
                continue
            assert upstream.http is not None, "start() was not called"
            upstream.in_flight += 1
            try:
                resp = await upstream.http.post(
                    path, encoded, self.params.request_timeout_s, trace_headers()
                )
            except _CONNECT_ERRORS as exc:
                upstream.in_flight -= 1
                reason = f"{type(exc).__name__}: {exc}"
                upstream.failed(reason, self._may_eject)
                failures.append(f"{upstream.url}: {reason}")
                continue
            except BaseException:
                upstream.in_flight -= 1
                raise
            if resp.status == 200:
                upstream.mark_up()
                return resp, upstream
            upstream.in_flight -= 1
            try:
                error: FreshetError = wire.map_http_error(
                    resp.status, await resp.read(), request, model, upstream.url, self.label
                )
            except _CONNECT_ERRORS as exc:
                error = BackendError(f"{self.label} at {upstream.url} failed: {exc!r}")
            finally:
                resp.release()
            if not isinstance(error, BackendError):
                raise error  # the client's or the capacity's: not the server's health
            upstream.failed(error.message, self._may_eject)
            if len(order) == 1:
                raise error
            failures.append(error.message)
        reasons = "; ".join(failures)
        raise BackendUnavailable(
            f"backend {self.id}: no {self.label} server took the request: {reasons}"
        )
