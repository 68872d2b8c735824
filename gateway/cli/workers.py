"""``freshet serve --workers N``: N processes on one port, each with its own Runtime.

The supervisor binds the socket once (before anything loads, so a port in use is an
immediate error) and uvicorn's supervisor starts N worker processes that accept on it; each
worker calls :func:`app_from_env` to build its app. The settings travel in the environment
(``FRESHET_CONFIG``, ``FRESHET_HOST``, ``FRESHET_PORT``, the log settings and the rest),
which the workers inherit. With ``FRESHET_REDIS_URL`` set the workers share keys, limits,
budgets, backend health and the ledger; without it each worker has its own limits and
health (and they share the SQLite ledger and key store in the data directory).

What the workers share besides:

- **Their worker id**, 1..N, on every log line: each worker takes the first free slot in the
  supervisor's run directory (a lock file it holds while it lives), so a worker that died
  is replaced under the same id.
- **Metrics**: ``/metrics`` reports the whole process group, whichever worker answers the
  scrape. The supervisor creates the run directory and points prometheus_client's
  multiprocess mode at it (``PROMETHEUS_MULTIPROC_DIR``); each worker keeps its values in a
  file named by its worker id (so its replacement carries its counters on: no reset), and a
  scrape merges them (:class:`gateway.telemetry.metrics.Metrics`). Every worker brings its
  backend gauges up to date every second, so those of the workers that did not answer the
  scrape are at most a second old. The directory is removed when the supervisor stops.
- **Traces are not shared**: each worker keeps its own last traces in memory;
  ``/freshet/traces`` lists those of the worker that answered, and each row says which
  (``worker``). Export them over OTLP for one view of all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gateway.api.app import create_app
from gateway.cli.logs import WORKER_ENV, AccessLog, LogSettings, setup
from gateway.settings import Settings, load_settings

log = logging.getLogger(__name__)
RUN_DIR_ENV = "FRESHET_WORKERS_DIR"
REFRESH_S = 1.0

_slot: int | None = None  # the lock file's descriptor, held while this worker lives


def claim_worker_id(run_dir: Path, workers: int) -> int:
    """The first worker id in 1.. whose lock no living worker holds (kept until exit)."""
    global _slot
    for worker in range(1, workers + 64):
        fd = os.open(run_dir / f"worker-{worker}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _slot = fd
        return worker
    raise RuntimeError(f"no free worker id in {run_dir}")


def _use_worker_files(worker: int) -> None:
    """prometheus_client's multiprocess values, in files named by worker id, not pid: a
    replacement worker continues the counters of the one it replaces (before any metric
    exists in this process)."""
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(lambda: worker)  # type: ignore[no-untyped-call]


def app_from_env() -> Any:
    """A worker's app (uvicorn's factory): worker id, logging, metrics files, the app."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    workers = int(os.environ.get("FRESHET_WORKERS", "1"))
    worker = claim_worker_id(Path(run_dir), workers) if run_dir else 0
    os.environ[WORKER_ENV] = str(worker)
    logs = LogSettings.from_env(worker)
    setup(logs)
    if run_dir and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _use_worker_files(worker)
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, signals=True)
    if run_dir:
        _refresh_gauges(app)
    return AccessLog(app) if logs.access_log else app


def _refresh_gauges(app: Any) -> None:
    """Keep this worker's backend gauges current, for the scrapes other workers answer."""
    from gateway.api.runtime import Runtime

    runtime: Runtime = app.state.runtime
    tasks: list[asyncio.Task[None]] = []

    async def loop() -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await runtime.telemetry.refresh()
            except Exception:  # a backend's status() failing must not end the loop
                log.debug("refreshing the backend gauges failed", exc_info=True)

    async def start(_: Any) -> None:
        tasks.append(asyncio.create_task(loop(), name="freshet-worker-gauges"))

    async def stop(_: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app.on_startup.append(start)
    app.on_shutdown.insert(0, stop)


def serve_workers(settings: Settings, workers: int, logs: LogSettings, served: str = "") -> None:
    """Run ``workers`` processes on ``settings.host:settings.port`` until stopped;
    ``served`` says what they serve, for the log."""
    from uvicorn.supervisors import Multiprocess

    from gateway.api.serving import bind, server_config

    sock = bind(settings.host, settings.port)  # BindError: the caller's to report
    run_dir = tempfile.mkdtemp(prefix="freshet-workers-")
    env = {
        "FRESHET_HOST": settings.host,
        "FRESHET_PORT": str(settings.port),
        "FRESHET_DATA_DIR": str(settings.data_dir),
        "FRESHET_WORKERS": str(workers),
        RUN_DIR_ENV: run_dir,
        "PROMETHEUS_MULTIPROC_DIR": run_dir,
        **logs.env(),
    }
    if settings.config_file:
        env["FRESHET_CONFIG"] = os.path.abspath(settings.config_file)
    os.environ.update(env)
    if settings.shared.redis.url:
        log.info("%d workers share keys, limits, budgets, health and the ledger on redis", workers)
    else:
        log.warning(
            "%d workers WITHOUT redis: rate limits, budgets and backend health are PER "
            "PROCESS (a key's limits apply %d times over); set FRESHET_REDIS_URL to share them",
            workers,
            workers,
        )
    log.info(
        "serving %s with %d workers on http://%s:%d",
        served or "the fleet",
        workers,
        settings.host,
        sock.getsockname()[1],
    )
    # What uvicorn.run does for workers, with the config that carries the connection
    # limits (each worker applies them to its own connections).
    config = server_config(
        settings,
        "gateway.cli.workers:app_from_env",
        log_level=logs.level,
        workers=workers,
        factory=True,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
