"""Everything one gateway process holds, created by the app factory, kept on ``app.state``."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.api.drain import Drain
from gateway.api.responses.store import response_store
from gateway.errors import ConfigError
from gateway.flow.accounting import Accounting, build_cost_model
from gateway.flow.admission import Admission
from gateway.flow.fleet import Fleet
from gateway.flow.service import Service
from gateway.ledger.sqlite import Ledger
from gateway.plugins import Plugins
from gateway.settings import Settings, locate
from gateway.state.health import HealthState
from gateway.state.metrics import QuoteCollector, SharedStateCollector
from gateway.state.shared import SharedState
from gateway.telemetry.core import Telemetry

log = logging.getLogger(__name__)
READINESS_TIMEOUT_S = 2.0  # for each backend's status() when the readiness is logged


class Runtime:
    def __init__(self, settings: Settings, plugins: Plugins | None = None) -> None:
        """Builds everything the config names without starting it: ``freshet check`` and
        ``freshet serve`` both refuse a config this refuses (a :class:`ConfigError` that
        names the file, the line where known, the key and the reason)."""
        try:
            self._build(settings, plugins)
        except ConfigError as exc:
            located = locate(exc, settings.config_file or "<embedded default>", settings.lines)
            if located is exc:
                raise
            raise located from exc

    def _build(self, settings: Settings, plugins: Plugins | None) -> None:
        self.settings = settings
        self.plugins = plugins or Plugins(blocked=settings.blocked_plugins)
        self.fleet = Fleet(settings, self.plugins)
        # Keys, limits, health and the ledger: in-process/SQLite, or Redis when configured.
        self.shared = SharedState(settings)
        self.auth = self.shared.auth
        self.admission = Admission(self.shared.limits)
        self.ledger: Ledger = self.shared.ledger
        # Responses of POST /v1/responses, for GET and previous_response_id.
        self.responses = response_store(settings.data_dir, settings.responses, self.shared.store)
        self.drain = Drain(settings.shutdown_grace_s)
        self.accounting = Accounting(
            build_cost_model(settings, self.plugins),
            self.fleet.backends,
            settings,
            self.ledger,
            self.plugins,
            self.admission,
            stopping=lambda: self.drain.expired,
        )
        self.health: HealthState = self.shared.health
        self.telemetry = Telemetry(
            settings,
            self.fleet.backends,
            circuit_state=lambda backend_id: self.health.circuit(backend_id).state,
            ready=lambda: self.ready.is_set(),
        )
        self.telemetry.metrics.registry.register(SharedStateCollector(self.shared))
        self.telemetry.metrics.registry.register(QuoteCollector(self.accounting.calibration))
        self.ready = asyncio.Event()
        self.service = Service(
            settings,
            self.fleet,
            self.plugins.routers(),
            self.accounting,
            self.admission,
            self.health,
            self.ready.is_set,
        )
        self.start_error: BaseException | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        """Load every backend; ``/ready`` turns true when this returns."""
        self.telemetry.start()
        try:
            await self.shared.start()
            await self.ledger.start()
            await self.fleet.start()
        except Exception as exc:
            self.start_error = exc
            log.exception("starting backends failed")
            raise
        await self._log_readiness()
        self.ready.set()

    async def _log_readiness(self) -> None:
        """One line per backend with the state it reports now (its ``status()``)."""
        backends = self.fleet.backends
        results = await asyncio.gather(
            *(asyncio.wait_for(b.status(), READINESS_TIMEOUT_S) for b in backends.values()),
            return_exceptions=True,
        )
        ready: list[str] = []
        for backend_id, result in zip(backends, results, strict=True):
            if isinstance(result, BaseException):
                reason = (
                    f"no status within {READINESS_TIMEOUT_S:g} s"
                    if isinstance(result, TimeoutError)
                    else f"status failed: {result!r}"
                )
                log.warning("backend %s not ready (%s)", backend_id, reason)
            elif result.healthy:
                ready.append(backend_id)
                detail = f" ({result.detail})" if result.detail else ""
                log.info("backend %s ready%s", backend_id, detail)
            else:
                log.warning(
                    "backend %s not ready (%s)", backend_id, result.detail or "reports unhealthy"
                )
        log.info(
            "%d of %d backends ready%s",
            len(ready),
            len(backends),
            f": {', '.join(ready)}" if ready else "",
        )

    async def aclose(self) -> None:
        await self.fleet.aclose()
        await self.ledger.aclose()  # after the backends: flushes every record
        await self.responses.aclose()
        await self.shared.aclose()
        await self.telemetry.aclose()  # last: spans of requests ended above
