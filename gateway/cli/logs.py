"""One log format for everything ``freshet serve`` writes: uvicorn's loggers, the gateway's
own (Python logging) and the CLI's messages, on stderr.

``--log-format text`` (the default) writes one line a record::

    2026-12-06T05:12:03.481Z INFO w0 gateway.api.runtime: backend cpu ready

``--log-format json`` writes one JSON object a line with ``ts``, ``level``, ``logger``,
``message`` and ``worker``, the request's fields where the record has them (the access log:
``method``, ``path``, ``status``, ``duration_ms``, ``backend``, ``request_id``) and
``exception`` with the traceback when there is one.

``worker`` is 0 in a single process (and in the ``--workers`` supervisor), 1..N in the
workers. Workers are separate processes started by uvicorn: they find their settings in the
environment (:data:`LEVEL_ENV`, :data:`FORMAT_ENV`, :data:`ACCESS_ENV`, :data:`WORKER_ENV`)
and call :func:`setup` again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
# Fields a record may carry (``extra=``) that the JSON format writes as keys of their own.
REQUEST_FIELDS = ("method", "path", "status", "duration_ms", "backend", "request_id")

LEVEL_ENV = "FRESHET_LOG_LEVEL"
FORMAT_ENV = "FRESHET_LOG_FORMAT"
ACCESS_ENV = "FRESHET_ACCESS_LOG"
WORKER_ENV = "FRESHET_WORKER_ID"  # also read by the trace store (gateway.telemetry.store)

# uvicorn's loggers: their own handlers (if uvicorn's default config ever ran) go, and they
# propagate to ours; but its access log stays off (uvicorn writes it when the logger has a
# handler anywhere): --access-log is ours.
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
_UVICORN_ACCESS = "uvicorn.access"


def _timestamp(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> w<worker> <logger>: <message>`` and the traceback, if any."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record.created)} {record.levelname} w{self.worker} "
            f"{record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line (never a raw newline inside it)."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self.worker,
        }
        fields = record.__dict__
        for name in REQUEST_FIELDS:
            value = fields.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class LogSettings:
    """What ``serve`` was asked for: level, format, access log; and this process's worker."""

    __slots__ = ("access_log", "format", "level", "worker")

    def __init__(
        self, level: str = "info", format: str = "text", access_log: bool = False, worker: int = 0
    ) -> None:
        if level.lower() not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
        if format not in FORMATS:
            raise ValueError(f"log format {format!r} is not one of {', '.join(FORMATS)}")
        self.level = level.lower()
        self.format = format
        self.access_log = access_log
        self.worker = worker

    def env(self) -> dict[str, str]:
        """For the ``--workers`` processes (each sets its own :data:`WORKER_ENV`)."""
        return {
            LEVEL_ENV: self.level,
            FORMAT_ENV: self.format,
            ACCESS_ENV: "1" if self.access_log else "0",
        }

    @classmethod
    def from_env(cls, worker: int | None = None) -> LogSettings:
        env = os.environ
        level = env.get(LEVEL_ENV, "info").lower()
        format = env.get(FORMAT_ENV, "text")
        return cls(
            level if level in LEVELS else "info",
            format if format in FORMATS else "text",
            env.get(ACCESS_ENV) == "1",
            int(env.get(WORKER_ENV, "0")) if worker is None else worker,
        )


def setup(settings: LogSettings, stream: TextIO | None = None) -> logging.Handler:
    """Route every logger of this process through one handler on stderr, in one format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter
    if settings.format == "json":
        formatter = JsonFormatter(settings.worker)
    else:
        formatter = TextFormatter(settings.worker)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = settings.level.upper()
    root.setLevel(level)
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level)
    uvicorn_access = logging.getLogger(_UVICORN_ACCESS)
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    logging.captureWarnings(True)
    # The trace store and the access log read the worker id from the environment.
    os.environ[WORKER_ENV] = str(settings.worker)
    return handler


# -- the access log ------------------------------------------------------------------------

access = logging.getLogger("freshet.access")

ASGIApp = Any  # (scope, receive, send) -> awaitable; typed loosely as uvicorn takes it


class AccessLog:
    """One line per HTTP request once its response has ended (or its client left):
    method, path, status, duration in ms, the backend that answered and the request id
    (both from the response's own ``x-freshet-backend`` and ``x-request-id`` headers, so
    the generation endpoints need no hook of their own).

    Only installed with ``--access-log``: without it the app is served unwrapped, so the
    request path pays nothing. A request whose client left before any answer is logged with
    status 499, one that failed before answering with 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        seen: list[Any] = [0, None, None]  # status, request id, backend

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen[0] = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-request-id":
                        seen[1] = value.decode("latin-1")
                    elif name == b"x-freshet-backend":
                        seen[2] = value.decode("latin-1")
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, sending)
            failed = False
        finally:
            status = seen[0] or (500 if failed else 499)
            duration_ms = round((time.perf_counter() - start) * 1000, 1)
            method, path = scope["method"], scope["path"]
            access.info(
                "%s %s %d %.1f ms backend=%s request_id=%s",
                method,
                path,
                status,
                duration_ms,
                seen[2] or "-",
                seen[1] or "-",
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                    "backend": seen[2],
                    "request_id": seen[1],
                },
            )
