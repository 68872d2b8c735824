"""``freshet serve --workers N``: N processes on one port, each with its own Runtime.

uvicorn's supervisor binds the socket once and starts N worker processes that accept on
it; each worker calls :func:`app_from_env` to build its app. The settings travel in the
environment (``FRESHET_CONFIG``, ``FRESHET_HOST``, ``FRESHET_PORT`` and the rest), which
the workers inherit. With ``FRESHET_REDIS_URL`` set the workers share keys, limits,
budgets, backend health and the ledger; without it each worker has its own limits and
health (and they share the SQLite ledger and key store in the data directory).
"""

from __future__ import annotations

import contextlib
import logging
import os

from litestar import Litestar

from gateway.api.app import create_app
from gateway.settings import Settings, load_settings

log = logging.getLogger(__name__)
LOG_LEVEL_ENV = "FRESHET_LOG_LEVEL"


def app_from_env() -> Litestar:
    level = os.environ.get(LOG_LEVEL_ENV, "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return create_app(settings, signals=True)


def serve_workers(settings: Settings, workers: int, log_level: str) -> None:
    """Run ``workers`` processes on ``settings.host:settings.port`` until stopped."""
    from uvicorn.supervisors import Multiprocess

    from gateway.api.server import server_config

    env = {
        "FRESHET_HOST": settings.host,
        "FRESHET_PORT": str(settings.port),
        "FRESHET_DATA_DIR": str(settings.data_dir),
        LOG_LEVEL_ENV: log_level,
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
    # What uvicorn.run does for workers, with the config that carries the connection
    # limits (each worker applies them to its own connections).
    config = server_config(
        settings,
        "gateway.cli.workers:app_from_env",
        log_level=log_level,
        workers=workers,
        factory=True,
    )
    sock = config.bind_socket()
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[sock]).run()
