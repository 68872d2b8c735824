"""A generation request learns that its client left from Freshet's server (the connection
in the scope), with no task per request; under another ASGI server, from ``receive``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gateway.api.drain import Watch


class Connection:
    def __init__(self) -> None:
        self.on_lost: Callable[[], None] | None = None

    def lose(self) -> None:  # what FreshetHttpProtocol.connection_lost does
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_the_server_tells_the_watch_and_no_task_is_made() -> None:
    work = asyncio.create_task(asyncio.sleep(60))
    watch = Watch(work)
    connection = Connection()
    tasks = len(asyncio.all_tasks())
    watch.listen(_never, connection)
    assert len(asyncio.all_tasks()) == tasks  # no watcher task
    assert connection.on_lost is not None
    connection.lose()
    with pytest.raises(asyncio.CancelledError):
        await work
    assert watch.left
    watch.stop()


@pytest.mark.asyncio
async def test_a_finished_request_is_not_told_about_a_later_loss() -> None:
    work = asyncio.create_task(asyncio.sleep(0))
    watch = Watch(work)
    connection = Connection()
    watch.listen(_never, connection)
    await work
    watch.stop()
    assert connection.on_lost is None  # the keep-alive connection forgets the request
    connection.lose()
    assert not watch.left


@pytest.mark.asyncio
async def test_without_the_server_a_task_reads_receive_for_the_disconnect() -> None:
    work = asyncio.create_task(asyncio.sleep(60))
    watch = Watch(work)
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    watch.listen(messages.get)
    assert watch.watcher is not None
    await messages.put({"type": "http.disconnect"})
    with pytest.raises(asyncio.CancelledError):
        await work
    assert watch.left
    watch.stop()


@pytest.mark.asyncio
async def test_the_end_of_the_grace_is_not_a_client_leaving() -> None:
    work = asyncio.create_task(asyncio.sleep(60))
    watch = Watch(work)
    connection = Connection()
    watch.listen(_never, connection)
    watch.end_shutdown()
    connection.lose()
    with pytest.raises(asyncio.CancelledError):
        await work
    assert watch.shutdown
    assert not watch.left
