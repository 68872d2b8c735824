"""Shutdown without cutting anyone off: the drain of the generation endpoints.

On SIGTERM (or SIGINT) the server stops accepting connections (uvicorn) and the drain
begins: a generation request that arrives on a connection still open is refused with 503
and ``Retry-After``; those in flight get ``server.shutdown_grace_s`` to finish. When the
grace ends, the drain ends them itself: a stream gets an error event
(``server_shutting_down``) and ``data: [DONE]``, a request still waiting for its whole
answer gets 503 with ``Retry-After``, and each is recorded with status ``shutdown``.
uvicorn's own grace is longer (``gateway.api.serving``), so it never cuts these
responses; the ledger is flushed last, in the app's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol

from gateway.errors import BackendUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1.0


class ShuttingDown(BackendUnavailable):
    code = "server_shutting_down"

    def __init__(self, message: str = "the gateway is shutting down; retry shortly") -> None:
        super().__init__(message)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(int(RETRY_AFTER_S)), "Connection": "close"}


CONNECTION = "freshet.connection"
"""The scope key under which Freshet's HTTP server (:mod:`gateway.api.server`) hands the
app its connection, a :class:`LostHook`: the app learns there that the client left."""


class LostHook(Protocol):
    """A connection that calls ``on_lost`` (once) when the client goes away."""

    on_lost: Callable[[], None] | None


class Watch:
    """One generation request in flight: its task, and why it was cancelled, if it was."""

    __slots__ = ("connection", "left", "shutdown", "task", "watcher")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.left = False  # the client disconnected
        self.shutdown = False  # the drain's grace ended
        self.watcher: asyncio.Task[None] | None = None
        self.connection: LostHook | None = None

    def listen(self, receive: Callable[[], Any], connection: LostHook | None = None) -> None:
        """Watch for the client leaving (after the request body has been read): told by
        Freshet's server when it hands over its ``connection``, else by a task reading
        ``receive`` for ``http.disconnect`` (any other ASGI server)."""
        if connection is not None:
            self.connection = connection
            connection.on_lost = self.client_left
            return

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.client_left()
                    return

        self.watcher = asyncio.get_running_loop().create_task(watch())

    def client_left(self) -> None:
        if not self.shutdown and not self.left:
            self.left = True
            self.task.cancel()

    def end_shutdown(self) -> None:
        if not self.left and not self.shutdown:
            self.shutdown = True
            self.task.cancel()

    def stop(self) -> None:
        if self.connection is not None:
            if self.connection.on_lost == self.client_left:
                self.connection.on_lost = None
            self.connection = None
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None


class Drain:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.stopping = False  # refusing new generation requests
        self.expired = False  # the grace is over: what is left is ended
        self._active: set[Watch] = set()
        self._timer: asyncio.TimerHandle | None = None

    def enter(self, watch: Watch) -> None:
        self._active.add(watch)

    def leave(self, watch: Watch) -> None:
        self._active.discard(watch)

    @property
    def in_flight(self) -> int:
        return len(self._active)

    def begin(self) -> None:
        """Stop taking new work; end what is left once the grace is over."""
        if self.stopping:
            return
        self.stopping = True
        log.info(
            "shutting down: %d generation request(s) in flight get %g s to finish",
            len(self._active),
            self.grace_s,
        )
        self._timer = asyncio.get_running_loop().call_later(self.grace_s, self.expire)

    def expire(self) -> None:
        self.expired = True
        if self._active:
            log.warning(
                "shutdown grace over: ending %d request(s) (streams get an error event)",
                len(self._active),
            )
        for watch in list(self._active):
            watch.end_shutdown()

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def hook_signals(drain: Drain) -> Callable[[], None]:
    """Begin the drain on SIGTERM/SIGINT, then hand the signal to the handler that was
    there (uvicorn's, which stops the server). Returns the undo. Only in the main thread
    and where a Python handler is installed (a server runs us); elsewhere nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    hooked: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous) or previous is signal.default_int_handler:
            continue

        def handler(sig: signal.Signals = sig, previous: Any = previous) -> None:
            drain.begin()
            previous(sig, None)

        loop.add_signal_handler(sig, handler)
        hooked.append((sig, previous))

    def undo() -> None:
        for sig, previous in hooked:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)  # the server's own again, until it restores its

    return undo
