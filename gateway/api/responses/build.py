"""The ``Response`` object, as it starts (``in_progress``, for the stream's first events) and
as a generation's :class:`Outcome` ends it: the status (``incomplete`` with reason
``max_output_tokens`` when the output was cut at the limit, ``failed`` with the error),
the output items (the text as a message, function calls) and the usage with Freshet's
cost and joules."""

from __future__ import annotations

import msgspec

from gateway import protocol as p
from gateway.api.responses import protocol as r
from gateway.outcome import Outcome

# OpenAI's codes for a failed response (the SDK's ResponseError.code); others are server_error.
ERROR_CODES = frozenset(("server_error", "rate_limit_exceeded", "invalid_prompt"))


def start(
    response_id: str,
    created_at: float,
    model: str,
    data: r.ResponseCreateParams,
) -> r.Response:
    """The response before any output: what ``response.created`` carries."""
    return r.Response(
        id=response_id,
        created_at=created_at,
        status="in_progress",
        instructions=data.instructions,
        max_output_tokens=data.max_output_tokens,
        model=model,
        parallel_tool_calls=data.parallel_tool_calls is not False,
        previous_response_id=data.previous_response_id,
        store=data.store is not False,
        temperature=data.temperature,
        text=data.text or r.TextConfig(),
        tool_choice=data.tool_choice if data.tool_choice is not None else "auto",
        tools=list(data.tools or ()),
        top_p=data.top_p,
        truncation=data.truncation or "disabled",
        user=data.user,
        metadata=dict(data.metadata or {}),
    )


def wire_usage(usage: p.Usage) -> r.Usage:
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    return r.Usage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=r.InputTokensDetails(
            cached_tokens=prompt.cached_tokens if prompt else 0,
            cache_write_tokens=prompt.cache_write_tokens if prompt else 0,
        ),
        output_tokens=usage.completion_tokens,
        output_tokens_details=r.OutputTokensDetails(
            reasoning_tokens=completion.reasoning_tokens if completion else 0
        ),
        total_tokens=usage.total_tokens,
        cost=usage.cost,
        energy_joules=usage.energy_joules,
    )


def message_id(response_id: str) -> str:
    return "msg_" + response_id.removeprefix("resp_")


def call_item_id(response_id: str, n: int) -> str:
    """The id of the ``n``-th function call item (its ``call_id`` is the model's)."""
    return f"fc_{response_id.removeprefix('resp_')}_{n}"


def item_status(outcome: Outcome) -> r.ItemStatus:
    return "incomplete" if outcome.finish_reason == "length" else "completed"


def message(response_id: str, outcome: Outcome) -> r.OutputMessage:
    text = r.OutputText(text=outcome.text)
    return r.OutputMessage(id=message_id(response_id), content=[text], status=item_status(outcome))


def calls(response_id: str, outcome: Outcome) -> list[r.FunctionCall]:
    """The function calls the model made, as output items, in the order of their index."""
    status = item_status(outcome)
    return [
        r.FunctionCall(
            id=call_item_id(response_id, n),
            arguments=call.arguments,
            call_id=call.id or f"call_{response_id.removeprefix('resp_')}_{n}",
            name=call.name,
            status=status,
        )
        for n, call in enumerate(outcome.tool_calls())
    ]


def output(response_id: str, outcome: Outcome) -> list[r.OutputItem]:
    """The output items of a finished generation: its text as one assistant message (also
    when empty, unless the model only called functions), then its function calls."""
    made = calls(response_id, outcome)
    items: list[r.OutputItem] = []
    if outcome.text or not made:
        items.append(message(response_id, outcome))
    items.extend(made)
    return items


def finish(
    base: r.Response, outcome: Outcome, usage: p.Usage, items: list[r.OutputItem]
) -> r.Response:
    """``base`` (from :func:`start`) as the outcome ended it, with ``items`` as its output."""
    error = outcome.error
    if error is not None:
        code = error.code if error.code in ERROR_CODES else "server_error"
        return msgspec.structs.replace(
            base,
            status="failed",
            error=r.ResponseError(code=code, message=error.message),
            output=items,
            usage=wire_usage(usage),
        )
    incomplete = outcome.finish_reason == "length"
    return msgspec.structs.replace(
        base,
        status="incomplete" if incomplete else "completed",
        incomplete_details=r.IncompleteDetails(reason="max_output_tokens") if incomplete else None,
        output=items,
        usage=wire_usage(usage),
    )
