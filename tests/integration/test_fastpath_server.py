"""The fast path under a real server (uvicorn): request bodies that arrive in pieces, a
body over the limit sent chunked (no content-length), and a client that leaves while its
request is still arriving."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.server import Server, running_server

CONFIG = {
    "backends": [
        {
            "id": "det",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "det",
            "tokens_per_s": 0,
        }
    ],
    "groups": {"auto": ["det"]},
    "server": {"max_body_bytes": 4096},
}
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("fastpath"), CONFIG) as server:
        yield server


def _pieces(content: str, size: int) -> Iterator[bytes]:
    body = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    ).encode()
    for i in range(0, len(body), size):
        time.sleep(0.002)  # separate reads on the server's side
        yield body[i : i + size]


def _post_chunked(server: Server, pieces: Iterator[bytes]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(
        "POST", CHAT, body=pieces, headers={"content-type": "application/json"}, encode_chunked=True
    )
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_a_body_in_pieces_is_read_whole(gateway: Server) -> None:
    status, headers, body = _post_chunked(gateway, _pieces("hello " * 100, 97))
    assert status == 200, body
    assert json.loads(body)["usage"]["completion_tokens"] == 2
    assert headers["x-freshet-backend"] == "det"


def test_a_chunked_body_over_the_limit_is_413(gateway: Server) -> None:
    status, headers, body = _post_chunked(gateway, _pieces("x" * 6000, 1000))
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert headers["x-request-id"].startswith("req_")


def test_a_declared_length_over_the_limit_is_413_before_the_body(gateway: Server) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: 100000\r\n\r\n{"
        )
        reply = b""
        while b"request_too_large" not in reply:  # headers and body may come apart
            piece = sock.recv(65536)
            if not piece:
                break
            reply += piece
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b"request_too_large" in reply


def test_a_client_that_leaves_mid_body_costs_nothing(gateway: Server) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b'content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"model": '
        )
        time.sleep(0.1)
    # The gateway is unharmed, logged nothing unhandled, and recorded nothing for it.
    status, _, body = _post_chunked(gateway, _pieces("hi", 1000))
    assert status == 200, body
    assert "unhandled" not in gateway.log_text()
    assert "Traceback" not in gateway.log_text()


def _raw_exchange(server: Server, requests: bytes, expect: int) -> bytes:
    """Send ``requests`` as they are; read until ``expect`` responses' bodies are in or the
    server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(requests)
        data = b""
        while data.count(b'"chat.completion"') < expect:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
        return data


def _chat_request(close: bool = False) -> bytes:
    body = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    ).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n" + ("connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


def _responses(data: bytes) -> list[tuple[list[bytes], bytes]]:
    """Split HTTP/1.1 responses with a content-length: (header lines, body) each."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(v) for n, _, v in (h.partition(b": ") for h in lines[1:])
                      if n.lower() == b"content-length")  # fmt: skip
        out.append((lines, rest[:length]))
        data = rest[length:]
    return out


def test_a_json_answer_is_one_whole_response(gateway: Server) -> None:
    """The generation path hands the server its answer in one message (one write): the
    status line, the server's own headers, exactly one content-length matching the body,
    and a kept-alive connection that answers the next request (pipelined) the same way."""
    data = _raw_exchange(gateway, _chat_request() + _chat_request(), 2)
    answers = _responses(data)
    assert len(answers) == 2
    for lines, body in answers:
        assert lines[0] == b"HTTP/1.1 200 OK"
        names = [line.partition(b": ")[0].lower() for line in lines[1:]]
        assert names.count(b"content-length") == 1
        assert {b"date", b"x-request-id", b"x-freshet-route"} <= set(names)
        assert not {b"transfer-encoding", b"connection"} & set(names)
        assert json.loads(body)["object"] == "chat.completion"


def test_a_whole_response_to_connection_close_closes(gateway: Server) -> None:
    data = _raw_exchange(gateway, _chat_request(close=True), 1)
    ((lines, body),) = _responses(data)
    assert b"connection: close" in [line.lower() for line in lines]
    assert json.loads(body)["object"] == "chat.completion"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(_chat_request(close=True))
        received = b""
        while piece := sock.recv(65536):  # the server closes after the answer
            received += piece
        assert json.loads(_responses(received)[0][1])["object"] == "chat.completion"


def _chunked_frames(data: bytes) -> tuple[list[bytes], bytes]:
    """The head, then each chunk of a chunked body (until the last, empty one)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    frames = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return frames, head
        frames.append(rest[:size])
        rest = rest[size + 2 :]


def test_events_ready_together_go_out_in_one_write(gateway: Server) -> None:
    """A stream whose events are ready at once (the deterministic backend at 0 tokens a
    second) reaches the client in fewer chunks than events, every event whole and in
    order, [DONE] last."""
    body = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16,
         "stream": True}
    ).encode()  # fmt: skip
    head = (
        f"POST {CHAT} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(head + body)
        data = b""
        while piece := sock.recv(65536):
            data += piece
    frames, response_head = _chunked_frames(data)
    assert b"transfer-encoding: chunked" in response_head.lower()
    events = [e for e in b"".join(frames).split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[len(b"data: ") :]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len(chunks) >= 3
    assert len(frames) < len(events)
