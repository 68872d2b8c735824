"""Give every request an id early, and every response an ``x-request-id`` header."""

from __future__ import annotations

import secrets
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"


def new_request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = new_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(name.lower() == HEADER for name, _ in headers):
                    headers.append((HEADER, encoded))
                    message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware
