"""What Python itself allows, for the peer benchmark: a bare ASGI proxy on Freshet's own
server stack (uvicorn + uvloop + httptools) and Freshet's own upstream client
(``freshet_vllm.http1``), with no routing, parsing, metering, auth or tracing. Freshet's
distance from this row is the cost of what Freshet does per request.

Run:  .venv/bin/python benchmarks/floor_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from freshet_vllm.http1 import Pool

_pools: list[Pool] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _pools.append(Pool(sys.argv[2], {}, 5.0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _pools[0].close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "GET":  # readiness
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    upstream = await _pools[0].post(scope["path"], body, 60.0)
    stream = b'"stream":true' in body
    if not stream:
        data = await upstream.read()
        upstream.release()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        return
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
    async for piece in upstream.iter_any():
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    upstream.release()
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
