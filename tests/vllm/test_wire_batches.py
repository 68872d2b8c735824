"""What one read of vLLM's stream brings, decoded at once (``wire.parse_lines``) and the
commonest event read directly (``wire.plain_text``): the same events, texts and errors as
line by line, for any lines (property tests)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from freshet_vllm.wire import Event, parse_line, parse_lines, plain_text, stream_error
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BackendError
from tests.vllm.test_wire import DELTA, LAST, ROLE, USAGE

CAPTURED = [ROLE, DELTA, LAST, USAGE, b"data: [DONE]", b"", b": keep-alive", b"event: x"]

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
choice = st.fixed_dictionaries(
    {"index": st.just(0)},
    optional={
        "delta": st.fixed_dictionaries({}, optional={"content": st.none() | texts}),
        "text": st.none() | texts,
        "finish_reason": st.none() | st.sampled_from(["stop", "length"]),
        "stop_reason": st.none() | texts | st.integers(0, 9),
    },
)
payload = st.fixed_dictionaries(
    {"choices": st.lists(choice, max_size=2)},
    optional={
        "usage": st.none() | st.just({"prompt_tokens": 3, "completion_tokens": 2}),
        "error": st.just({"message": "engine died"}),
        "object": st.sampled_from(["chat.completion.chunk", "error"]),
    },
)
line = st.one_of(
    payload.map(lambda p: b"data: " + json.dumps(p).encode()),
    st.sampled_from(CAPTURED),
    st.sampled_from([b"data: {not json", b'data: {"choices": 1}', b'data: {"a": 1}, {"b": 2}']),
    st.binary(max_size=12).map(lambda b: b"data: " + b),
)


def one_by_one(lines: list[bytes]) -> list[Event] | str:
    try:
        return [e for e in (parse_line(x) for x in lines) if e is not None]
    except BackendError as exc:
        return exc.message


def at_once(lines: list[bytes]) -> list[Event] | str:
    try:
        return parse_lines(lines)
    except BackendError as exc:
        return exc.message


@settings(max_examples=300, deadline=None)
@given(st.lists(line, max_size=8))
def test_a_read_at_once_is_its_lines_one_by_one(lines: list[bytes]) -> None:
    assert at_once(lines) == one_by_one(lines)


@settings(max_examples=300, deadline=None)
@given(payload)
def test_plain_text_is_the_general_reading_where_it_answers(data: dict[str, Any]) -> None:
    event = parse_line(b"data: " + json.dumps(data).encode())
    assert event is not None
    text = plain_text(event)
    if text is not None:  # nothing else in the event: the general reading agrees
        assert text == event.text
        assert (event.tool_calls, event.finish_reason, event.stop_sequence) == ([], None, None)
        assert (event.usage, stream_error(event)) == (None, None)


def test_the_commonest_events_are_plain() -> None:
    delta, last, usage = (parse_line(x) for x in (DELTA, LAST, USAGE))
    assert delta is not None
    assert plain_text(delta) == " How"
    assert last is not None
    assert plain_text(last) is None  # it finishes
    assert usage is not None
    assert plain_text(usage) is None


def test_a_malformed_line_among_good_ones_is_named() -> None:
    with pytest.raises(BackendError, match="not json"):
        parse_lines([DELTA, b"data: {not json", LAST])
