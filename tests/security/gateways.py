"""In-process gateways for the security tests: a small deterministic fleet, the app's
settings from a config dict, and requests sent to the ASGI app exactly as written."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.settings import load_settings
from tests.support.asgi import http_scope
from tests.support.inprocess import wait_ready

CONFIG: dict[str, Any] = {
    "backends": [
        {"id": "det", "type": "deterministic", "model": "det", "knowledge_cutoff": "2024-06-01"},
    ],
    "groups": {"auto": ["det"]},
}
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
JSON = [(b"content-type", b"application/json")]
HI = [{"role": "user", "content": "hi"}]


@contextlib.asynccontextmanager
async def gateway(
    tmp: Path,
    server: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    **config: Any,
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A ready gateway on the test fleet; ``server`` is the config's ``server`` section."""
    path = tmp / "freshet.yaml"
    path.write_bytes(msgspec.yaml.encode({**CONFIG, "server": dict(server or {}), **config}))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp / "data"), **(env or {})})
    app = create_app(settings, Runtime(settings))
    async with AsyncTestClient(app=app) as client:
        await wait_ready(client)
        yield client


class Answer(msgspec.Struct):
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


async def send(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    query: bytes = b"",
    host: bytes | None = b"127.0.0.1:8400",
) -> Answer:
    """One request straight into the ASGI app, headers exactly as given (a test client
    would fold repeated ones, add its own ``Host`` and refuse odd bytes), as uvicorn bound
    to 127.0.0.1:8400 would hand it over."""
    head = [(b"host", host)] if host is not None else []
    scope = http_scope(method, path, [*head, *(headers or [])], query=query)
    sent: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def reply(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, reply)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], dict(start.get("headers") or ()), content)


def assert_openai_error(answer: Answer, status: int) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers[b"content-type"].startswith(b"application/json")
    assert answer.headers[b"x-request-id"].startswith(b"req_")
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error
