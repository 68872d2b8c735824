"""Backends declare the operations they serve (#18 point 10): the router drops a deployment
that does not serve the request's operation (``operation(...)``), and a request that no
deployment can serve is a 400 naming what is missing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from gateway.backend import DEFAULT_OPERATIONS, BackendStatus, Deployment, Operation
from gateway.builtins.routers import CheapestFresh
from gateway.errors import FreshnessUnsatisfiable
from gateway.flow.decision import OperationUnsupported, decide
from gateway.routing import NO_NEED, Decision, Need
from tests.security.gateways import gateway
from tests.unit.flow.test_decision import SHAPE, FixedCost


def dep(backend: str, operations: frozenset[Operation] = DEFAULT_OPERATIONS) -> Deployment:
    return Deployment(
        backend_id=backend,
        model=f"m-{backend}",
        knowledge_cutoff=dt.date(2024, 1, 1),
        max_context=4096,
        operations=operations,
    )


CHAT_ONLY = frozenset({"chat"})


def run(
    deployments: list[Deployment], operation: Operation | None, need: Need = NO_NEED
) -> Decision:
    return decide(
        "g",
        deployments,
        SHAPE,
        need,
        {d.backend_id: BackendStatus(healthy=True) for d in deployments},
        {d.backend_id: FixedCost(1 + i) for i, d in enumerate(deployments)},  # type: ignore[misc]
        frozenset(),
        CheapestFresh(),
        "cheapest-fresh",
        operation=operation,
    )


def test_the_default_is_both_operations() -> None:
    assert set(DEFAULT_OPERATIONS) == {"chat", "text_completion"}
    assert dep("a").operations == DEFAULT_OPERATIONS
    legacy = Deployment(backend_id="a", model="m", knowledge_cutoff=None, max_context=1)
    assert legacy.operations == DEFAULT_OPERATIONS


def test_a_deployment_that_does_not_serve_the_operation_is_dropped_with_a_reason() -> None:
    d = run([dep("chatty", CHAT_ONLY), dep("both")], "text_completion")
    assert [c.deployment.backend_id for c in d.ordered] == ["both"]
    assert [(c.deployment.backend_id, c.dropped) for c in d.dropped] == [
        ("chatty", "operation(no text_completion)")
    ]
    assert "dropped=chatty:operation(no text_completion)" in d.header()
    # The cheaper chat-only deployment still wins a chat request.
    chat = run([dep("chatty", CHAT_ONLY), dep("both")], "chat")
    assert [c.deployment.backend_id for c in chat.ordered] == ["chatty", "both"]
    assert chat.dropped == []


def test_no_deployment_serving_the_operation_is_a_400_naming_it() -> None:
    with pytest.raises(OperationUnsupported) as caught:
        run([dep("a", CHAT_ONLY), dep("b", CHAT_ONLY)], "text_completion")
    exc = caught.value
    assert exc.status == 400
    assert exc.code == "unsupported_operation"
    assert exc.param == "model"
    assert "text_completion (/v1/completions)" in exc.message
    assert "serve: chat" in exc.message


def test_without_an_operation_nothing_is_checked() -> None:
    d = run([dep("a", CHAT_ONLY)], None)
    assert [c.deployment.backend_id for c in d.ordered] == ["a"]


def test_freshness_is_judged_among_the_deployments_that_serve_the_operation() -> None:
    fresh_chat_only = msgspec.structs.replace(
        dep("new", CHAT_ONLY), knowledge_cutoff=dt.date(2025, 6, 1)
    )
    need = Need(min_cutoff=dt.date(2025, 1, 1), source="body")
    with pytest.raises(FreshnessUnsatisfiable) as caught:
        run([fresh_chat_only, dep("old")], "text_completion", need)
    assert "the freshest available is 2024-01-01" in caught.value.message


CONFIG_BACKENDS = [
    {
        "id": "chatty",
        "type": "deterministic",
        "model": "chat-model",
        "knowledge_cutoff": "2024-06-01",
        "operations": ["chat"],
    },
    {
        "id": "both",
        "type": "deterministic",
        "model": "both-model",
        "knowledge_cutoff": "2024-06-01",
    },
]


@pytest.mark.asyncio
async def test_the_gateway_routes_by_operation_and_refuses_what_nothing_serves(
    tmp_path: Path,
) -> None:
    groups = {"auto": ["chatty", "both"]}
    async with gateway(tmp_path, backends=CONFIG_BACKENDS, groups=groups) as client:
        legacy = await client.post(
            "/v1/completions", json={"model": "auto", "prompt": "river", "max_tokens": 3}
        )
        assert legacy.status_code == 200, legacy.text
        assert legacy.headers["x-freshet-backend"] == "both"
        assert "chatty:operation(no text_completion)" in legacy.headers["x-freshet-route"]

        refused = await client.post(
            "/v1/completions", json={"model": "chat-model", "prompt": "river", "max_tokens": 3}
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "unsupported_operation"
        assert error["type"] == "invalid_request_error"
        assert "text_completion (/v1/completions)" in error["message"]

        chat = await client.post(
            "/v1/chat/completions",
            json={
                "model": "chat-model",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
            },
        )
        assert chat.status_code == 200, chat.text
        assert chat.headers["x-freshet-backend"] == "chatty"
