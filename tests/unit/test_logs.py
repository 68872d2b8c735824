"""gateway.cli.logs: the two formats and the access log, without a server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
from typing import Any

import pytest

from gateway.cli.logs import AccessLog, JsonFormatter, LogSettings, TextFormatter, setup


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("gateway.x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    record.__dict__.update(extra)
    record.created = 1_700_000_000.25
    return record


def test_json_is_one_object_a_line_with_request_fields_where_present() -> None:
    plain = json.loads(JsonFormatter(3).format(_record()))
    assert plain == {
        "ts": "2023-11-14T22:13:20.250Z",
        "level": "WARNING",
        "logger": "gateway.x",
        "message": "a b",
        "worker": 3,
    }
    access = json.loads(JsonFormatter(0).format(_record(status=200, backend="cpu", other=1)))
    assert access["status"] == 200
    assert access["backend"] == "cpu"
    assert "other" not in access
    assert "path" not in access
    record = _record()
    try:
        _fail()
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter(0).format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def _fail() -> None:
    raise ValueError("boom\nsecond line")


def test_text_is_one_line_with_the_worker() -> None:
    line = TextFormatter(2).format(_record())
    assert line == "2023-11-14T22:13:20.250Z WARNING w2 gateway.x: a b"


def test_settings_refuse_unknown_levels_and_formats() -> None:
    with pytest.raises(ValueError, match="verbose"):
        LogSettings("verbose")
    with pytest.raises(ValueError, match="xml"):
        LogSettings("info", "xml")
    assert LogSettings("INFO").level == "info"


def test_setup_sends_uvicorn_and_everything_else_through_one_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    monkeypatch.delenv("FRESHET_WORKER_ID", raising=False)
    stream = io.StringIO()
    try:
        uvicorn_error = logging.getLogger("uvicorn.error")
        uvicorn_error.addHandler(logging.StreamHandler(io.StringIO()))  # as uvicorn's config
        setup(LogSettings("info", "json", worker=1), stream)
        uvicorn_error.info("Started server process [%d]", 7)
        logging.getLogger("gateway.y").debug("not at info")
        logging.getLogger("gateway.y").warning("w")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.captureWarnings(False)
        monkeypatch.delenv("FRESHET_WORKER_ID", raising=False)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["logger"], e["message"], e["worker"]) for e in lines] == [
        ("uvicorn.error", "Started server process [7]", 1),
        ("gateway.y", "w", 1),
    ]


def _run(app: Any, caplog: pytest.LogCaptureFixture, fails: bool = False) -> dict[str, Any]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        return None

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}
    with caplog.at_level(logging.INFO, logger="freshet.access"):
        expected = pytest.raises(RuntimeError) if fails else contextlib.nullcontext()
        with expected:
            asyncio.run(AccessLog(app)(scope, receive, send))
    (record,) = [r for r in caplog.records if r.name == "freshet.access"]
    return record.__dict__


def test_access_log_takes_status_backend_and_id_from_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"x-freshet-backend", b"cpu"), (b"x-request-id", b"req_1")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    fields = _run(app, caplog)
    assert (fields["method"], fields["path"], fields["status"]) == (
        "POST",
        "/v1/chat/completions",
        201,
    )
    assert (fields["backend"], fields["request_id"]) == ("cpu", "req_1")
    assert fields["duration_ms"] >= 0
    ms = fields["duration_ms"]
    expected = f"POST /v1/chat/completions 201 {ms:.1f} ms backend=cpu request_id=req_1"
    assert fields["msg"] % fields["args"] == expected


def test_access_log_without_an_answer(caplog: pytest.LogCaptureFixture) -> None:
    async def left(scope: Any, receive: Any, send: Any) -> None:
        return None  # the client left: nothing sent

    assert _run(left, caplog)["status"] == 499
    caplog.clear()

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("bug")

    fields = _run(failing, caplog, fails=True)
    assert fields["status"] == 500
    assert fields["backend"] is None
