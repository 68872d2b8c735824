"""What ``freshet serve`` listens with: the socket, bound before any model loads, and the
uvicorn config with the connection limits of :mod:`gateway.api.server`."""

from __future__ import annotations

import errno
import logging
import math
import resource
import socket
from typing import Any

from gateway.api.server import ConnectionGuard, FreshetHttpProtocol, ServerConfig
from gateway.settings import Settings

__all__ = ["BindError", "bind", "max_connections", "server_config"]

log = logging.getLogger(__name__)


def max_connections(configured: int | None) -> int:
    """The configured cap, or one below the open-file limit that leaves room for the files,
    backend sockets and pipes of the process itself: min(1000, limit - 100) (half a very
    low limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = None if soft == resource.RLIM_INFINITY else soft
    if configured is None:
        return 1000 if limit is None else max(1, min(1000, max(limit // 2, limit - 100)))
    if limit is not None and configured > limit - 100:
        log.warning(
            "server.connections.max_connections is %d but the open-file limit is %d: "
            "past it new clients fail before the cap answers them; raise the limit "
            "(ulimit -n) or lower max_connections",
            configured,
            limit,
        )
    return configured


def server_config(
    settings: Settings,
    app: Any,
    *,
    log_level: str,
    workers: int = 1,
    factory: bool = False,
) -> ServerConfig:
    """The uvicorn config for ``freshet serve``; ``app`` is the app, or an import string
    of an app factory with ``factory`` (``--workers``)."""
    limits = settings.connections
    guard = ConnectionGuard(limits, max_connections(limits.max_connections))
    log.info(
        "connections: at most %d open per process; headers %d bytes (%d a line) "
        "within %g s; body reads at most %g s apart; keep-alive %g s",
        guard.max_connections,
        guard.max_header_bytes,
        guard.max_header_line_bytes,
        guard.header_timeout_s,
        guard.body_timeout_s,
        guard.keep_alive_s,
    )
    return ServerConfig(
        app,
        guard=guard,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=FreshetHttpProtocol,
        lifespan="on",
        access_log=False,  # freshet's own (--access-log: gateway.cli.logs.AccessLog)
        log_config=None,  # freshet serve sets up logging (gateway.cli.logs)
        log_level=log_level,
        timeout_keep_alive=max(1, math.ceil(limits.keep_alive_s)),
        # Past our own grace (the drain ends what is left), with room to send those ends.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s) + 5,
        workers=workers,
        factory=factory,
    )


class BindError(Exception):
    """The address cannot be bound (the message says why, in words)."""


def bind(host: str, port: int) -> socket.socket:
    """Bind the server's socket now, before any model loads, as uvicorn's
    ``Config.bind_socket`` would (the server listens on it once it starts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            reason = f"port {port} is already in use (another server is listening there?)"
        else:
            reason = exc.strerror or str(exc)
        raise BindError(f"cannot listen on {where}: {reason}") from exc
    sock.set_inheritable(True)
    return sock
