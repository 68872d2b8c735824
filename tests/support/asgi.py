"""An HTTP request's ASGI scope as Freshet's server (uvicorn, bound to 127.0.0.1:8400)
hands it to the app, for driving the app directly: headers exactly as given (a test
client would fold repeated ones, add its own ``Host`` and refuse odd bytes)."""

from __future__ import annotations

from typing import Any

LOCAL_SERVER = ("127.0.0.1", 8400)


def http_scope(
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    *,
    query: bytes = b"",
    client: tuple[str, int] = ("127.0.0.1", 50000),
    server: tuple[str, int] = LOCAL_SERVER,
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": server,
        "state": {},
    }
