"""The Responses API's store on SQLite: kept, found by the key that made it only, gone after
its time or past the size bound (the oldest first), shared by two processes' stores."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.api.responses import store as store_module
from gateway.api.responses.protocol import InputItem, OutputMessage, OutputText, Response
from gateway.api.responses.store import SQLiteResponses, Stored, find
from gateway.errors import ConfigError, NotFound
from gateway.settings import load_settings
from gateway.settings.sections import ResponseStoreSettings


def stored(response_id: str, key: str | None = "alice", text: str = "hello") -> Stored:
    message = OutputMessage(id="msg_" + response_id, content=[OutputText(text=text)])
    response = Response(
        id=response_id, created_at=time.time(), status="completed", model="m", output=[message]
    )
    items = [InputItem(type="message", role="user", content="hi " + response_id)]
    return Stored(key=key, input=items, response=response)


@pytest.mark.asyncio
async def test_kept_and_found_by_its_key_only(tmp_path: Path) -> None:
    store = SQLiteResponses(tmp_path, ResponseStoreSettings())
    other = SQLiteResponses(tmp_path, ResponseStoreSettings())  # another worker, same file
    await store.put(stored("resp_1"))
    found = await find(other, "resp_1", "alice", "response_id")
    assert found.key == "alice"
    assert found.response.id == "resp_1"
    assert found.input[0].content == "hi resp_1"
    assert isinstance(found.response.output[0], OutputMessage)
    assert found.response.output[0].content[0].text == "hello"
    with pytest.raises(NotFound) as info:
        await find(other, "resp_1", "bob", "previous_response_id")
    assert info.value.param == "previous_response_id"
    assert info.value.status == 404
    with pytest.raises(NotFound):
        await find(other, "resp_1", None, "response_id")
    assert await other.delete("resp_1")
    assert await store.get("resp_1") is None
    assert not await store.delete("resp_1")
    await store.aclose()
    await other.aclose()


@pytest.mark.asyncio
async def test_expired_after_its_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PRUNE_EVERY", 1)
    store = SQLiteResponses(tmp_path, ResponseStoreSettings(ttl_days=0.5 / 86400))  # 0.5 s
    await store.put(stored("resp_old"))
    assert await store.get("resp_old") is not None
    await asyncio.sleep(0.6)
    assert await store.get("resp_old") is None
    await store.put(stored("resp_new"))  # removes the expired rows
    db = store._db()
    assert [r[0] for r in db.execute("SELECT id FROM responses")] == ["resp_new"]
    await store.aclose()


@pytest.mark.asyncio
async def test_the_oldest_go_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PRUNE_EVERY", 1)
    store = SQLiteResponses(tmp_path, ResponseStoreSettings(max_stored=2))
    for n in range(4):
        await store.put(stored(f"resp_{n}"))
        await asyncio.sleep(0.01)
    assert [await store.get(f"resp_{n}") is not None for n in range(4)] == [
        False,
        False,
        True,
        True,
    ]
    await store.aclose()


@pytest.mark.asyncio
async def test_pruned_every_so_many_puts(tmp_path: Path) -> None:
    """Not on every put (a scan of the table each time would be on the request's path)."""
    store = SQLiteResponses(tmp_path, ResponseStoreSettings(max_stored=2))
    for n in range(store_module.PRUNE_EVERY + 1):
        await store.put(stored(f"resp_{n}"))
    # Pruned at the first put and at the (PRUNE_EVERY + 1)-th: the bound holds again.
    (count,) = store._db().execute("SELECT COUNT(*) FROM responses").fetchone()
    assert count == 2
    await store.put(stored("resp_next"))
    (count,) = store._db().execute("SELECT COUNT(*) FROM responses").fetchone()
    assert count == 3
    await store.aclose()


def test_the_config_bounds(tmp_path: Path) -> None:
    config = tmp_path / "freshet.yaml"
    fleet = "backends: [{id: d, type: deterministic, model: m, knowledge_cutoff: unknown}]\n"
    config.write_text(fleet + "server:\n  responses: {ttl_days: 7, max_stored: 10}\n")
    settings = load_settings(str(config), env={})
    assert settings.responses == ResponseStoreSettings(ttl_days=7, max_stored=10)
    assert load_settings(env={}).responses == ResponseStoreSettings(ttl_days=30, max_stored=100_000)
    config.write_text(fleet + "server:\n  responses: {ttl_days: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(str(config), env={})
    assert "server.responses.ttl_days" in str(info.value)
