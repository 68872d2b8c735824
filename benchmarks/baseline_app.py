"""The floor for HTTP overhead: a bare ASGI app on the same server stack as Freshet
(uvicorn + uvloop + httptools) that answers every request with a fixed chat completion."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

BODY = (
    b'{"id":"chatcmpl-x","choices":[{"finish_reason":"length","index":0,"message":'
    b'{"content":"the","role":"assistant"},"logprobs":null}],"created":0,"model":"det",'
    b'"usage":{"completion_tokens":1,"prompt_tokens":1,"total_tokens":2},'
    b'"object":"chat.completion"}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
