"""The edge's pieces for Anthropic's API: the key in ``x-api-key``, errors in its shape."""

from __future__ import annotations

import pytest

from gateway.api.anthropic.errors import error_body, error_event
from gateway.api.edge import credential
from gateway.errors import FreshetError, InvalidRequest, NotFound


def test_x_api_key_stands_for_a_bearer_where_the_api_allows_it() -> None:
    assert credential({"x-api-key": "fk-a"}, api_key_header=True) == "Bearer fk-a"
    assert credential({"x-api-key": "fk-a"}) is None  # OpenAI's paths: Authorization only
    assert credential({"authorization": "Bearer fk-a"}, api_key_header=True) == "Bearer fk-a"
    both = {"x-api-key": "fk-a", "authorization": "Bearer fk-a"}
    assert credential(both, api_key_header=True) == "Bearer fk-a"
    with pytest.raises(InvalidRequest) as info:
        credential({"x-api-key": "fk-a", "authorization": "Bearer fk-b"}, api_key_header=True)
    assert info.value.param == "x-api-key"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
    ],
)
def test_error_types_by_status(status: int, kind: str) -> None:
    error = FreshetError("nope")
    error.status = status
    assert error_body(error).error.type == kind


def test_the_code_is_kept_in_the_message_and_the_event_is_named() -> None:
    body = error_body(NotFound("no model 'x'"))
    assert body.error.type == "not_found_error"
    assert body.error.message.startswith("no model 'x'")
    event = error_event(NotFound("gone"))
    assert event.startswith(b"event: error\ndata: {")
    assert b'"type":"error"' in event
    assert event.endswith(b"\n\n")
