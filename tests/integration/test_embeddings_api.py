"""``POST /v1/embeddings`` on the real gateway, driven by the real ``openai`` SDK: the
embedded default (the chat model's pooled embeddings on llama.cpp) and an
``openai-compatible`` backend in front of it (a pass-through, priced by its list price).
Vectors come as floats or as base64 (the SDK's default, which it decodes); bad input is a
400 in OpenAI's error shape; every request leaves its usage record."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import Server, running_server, usage_record

MODEL = "smollm2-135m"
TEXTS = ["The river rises after rain.", "A mountain stands over the valley."]


@pytest.fixture(scope="module")
def client(default_gateway: Server) -> Iterator[openai.OpenAI]:
    url = default_gateway.url + "/v1"
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def via(front: Server) -> Iterator[openai.OpenAI]:
    """The client of the gateway in front."""
    with openai.OpenAI(base_url=front.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def front(default_gateway: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway whose one backend is the default gateway, as a paid API would be."""
    config = {
        "backends": [
            {
                "id": "up",
                "type": "openai-compatible",
                "model": MODEL,
                "knowledge_cutoff": "unknown",
                "url": default_gateway.url + "/v1",
                "operations": ["chat", "text_completion", "embeddings"],
                "list_price": {"input_per_mtok": 0.02, "output_per_mtok": 0.0},
            },
            {"id": "d", "type": "deterministic", "model": "words", "knowledge_cutoff": "unknown"},
        ]
    }
    with running_server(tmp_path_factory.mktemp("embeddings-front"), config) as server:
        yield server


def _unit(vector: Sequence[float]) -> None:
    assert all(math.isfinite(x) for x in vector)
    assert math.fsum(x * x for x in vector) == pytest.approx(1.0, abs=1e-4)


def _close(a: Sequence[float], b: Sequence[float]) -> None:
    assert len(a) == len(b)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-6


def test_one_string_as_floats(client: openai.OpenAI, default_gateway: Server) -> None:
    raw = client.embeddings.with_raw_response.create(
        model=MODEL, input=TEXTS[0], encoding_format="float"
    )
    result = raw.parse()
    assert raw.headers["x-freshet-backend"] == "cpu"
    assert raw.headers["x-freshet-knowledge-cutoff"] == "2024-06-01"
    assert float(raw.headers["x-freshet-cost-usd"]) > 0
    assert result.object == "list"
    assert result.model == MODEL
    assert [d.index for d in result.data] == [0]
    assert result.data[0].object == "embedding"
    vector = result.data[0].embedding
    assert len(vector) >= 64
    _unit(vector)
    assert result.usage.prompt_tokens > 3
    assert result.usage.total_tokens == result.usage.prompt_tokens
    extra = result.usage.model_extra or {}
    assert extra["cost"] > 0
    assert extra["energy_joules"] > 0
    record = usage_record(default_gateway, raw.headers["x-request-id"])
    assert record["operation"] == "embeddings"
    assert record["status"] == "ok"
    assert record["stream"] == 0
    assert record["backend"] == "cpu"
    assert record["prompt_tokens"] == result.usage.prompt_tokens
    assert record["completion_tokens"] == 0
    assert record["usd_total"] == pytest.approx(extra["cost"])
    assert record["joules"] > 0


def test_traced_like_any_request(client: openai.OpenAI, default_gateway: Server) -> None:
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=["a river", "a hill"])
    request_id = raw.headers["x-request-id"]
    found: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while not found and time.monotonic() < deadline:
        _, body = default_gateway.get("/freshet/traces?limit=50")
        for row in json.loads(body):
            if row["name"] == f"embeddings {MODEL}":
                _, view = default_gateway.get(f"/freshet/traces/{row['trace_id']}")
                spans = {s["name"]: s for s in json.loads(view)["spans"]}
                server = spans[row["name"]]
                if server["attributes"]["freshet.request.id"] == request_id:
                    found = spans
                    assert row["status"] == "ok"
                    assert row["backend"] == "cpu"
                    break
        time.sleep(0.1)
    assert set(found) == {f"embeddings {MODEL}", "route", "backend cpu"}
    assert found[f"embeddings {MODEL}"]["attributes"]["gen_ai.operation.name"] == "embeddings"


def test_base64_is_what_the_sdk_decodes(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    default = client.embeddings.create(model=MODEL, input=TEXTS)  # the SDK asks for base64
    assert [d.index for d in default.data] == [0, 1]
    for a, b in zip(floats.data, default.data, strict=True):
        _close(a.embedding, b.embedding)
        _unit(b.embedding)
    assert floats.data[0].embedding != floats.data[1].embedding
    assert default.usage.prompt_tokens == floats.usage.prompt_tokens
    # On the wire: base64 of little-endian float32s, one string per input.
    wire = httpx.post(
        str(client.base_url) + "embeddings",
        json={"model": MODEL, "input": TEXTS[0], "encoding_format": "base64"},
        timeout=60,
    ).json()
    packed = base64.b64decode(wire["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(packed) // 4}f", packed)
    _close(vector, floats.data[0].embedding)


def test_token_arrays(client: openai.OpenAI, default_gateway: Server) -> None:
    arrays = [[504, 3375, 7106], [101, 202, 303, 404, 505]]
    many = client.embeddings.with_raw_response.create(
        model=MODEL, input=arrays, encoding_format="float"
    )
    result = many.parse()
    assert result.usage.prompt_tokens == 8  # exactly the ids sent: nothing added
    assert len(result.data) == 2
    for item in result.data:
        _unit(item.embedding)
    one = client.embeddings.create(model=MODEL, input=arrays[1], encoding_format="float")
    assert one.usage.prompt_tokens == 5
    _close(one.data[0].embedding, result.data[1].embedding)
    record = usage_record(default_gateway, many.headers["x-request-id"])
    assert record["prompt_tokens"] == 8
    assert record["completion_tokens"] == 0


def test_groups_route_to_a_backend_that_embeds(client: openai.OpenAI) -> None:
    # "auto" is the ASIC and the CPU model; only the CPU model embeds.
    raw = client.embeddings.with_raw_response.create(model="auto", input="hello river")
    assert raw.headers["x-freshet-backend"] == "cpu"
    assert "operation(no embeddings)" in raw.headers["x-freshet-route"]
    _unit(raw.parse().data[0].embedding)


def test_dimensions(client: openai.OpenAI) -> None:
    size = len(
        client.embeddings.create(model=MODEL, input="a", encoding_format="float").data[0].embedding
    )
    same = client.embeddings.create(model=MODEL, input="a", dimensions=size)
    assert len(same.data[0].embedding) == size
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input="a", dimensions=size // 2)
    assert info.value.code is None or isinstance(info.value.code, str)
    assert isinstance(info.value.body, dict)
    assert info.value.body["param"] == "dimensions"


BAD: list[tuple[dict[str, Any], str]] = [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["a river", ""]}, "input[1]"),
    ({"input": ["a river", 7]}, "input"),
    ({"input": [[1, 2], []]}, "input[1]"),
    ({"input": ["x"] * 2049}, "input"),
    ({"input": [-1]}, "input"),
    ({"input": [[1, 2], ["a"]]}, "input"),
    ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "a", "dimensions": 0}, "dimensions"),
    ({"input": [2**30]}, "input"),  # past the vocabulary
    ({"input": [5] * 3000}, "input"),  # past what the model embeds at once
    ({"input": None}, "input"),
    ({}, "input"),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_400(default_gateway: Server, body: dict[str, Any], param: str) -> None:
    resp = httpx.post(
        default_gateway.url + "/v1/embeddings", json={"model": MODEL, **body}, timeout=60
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert error["param"] == param or (error["param"] or "").startswith(param)


def test_a_model_that_cannot_embed_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="llama-3.1-8b", input="hello")  # the ASIC only
    assert info.value.code == "unsupported_operation"
    assert "/v1/embeddings" in info.value.message
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="hello")


def test_through_an_openai_compatible_upstream(
    front: Server, via: openai.OpenAI, client: openai.OpenAI
) -> None:
    raw = via.embeddings.with_raw_response.create(model=MODEL, input=TEXTS)
    result = raw.parse()
    assert raw.headers["x-freshet-backend"] == "up"
    direct = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    for a, b in zip(result.data, direct.data, strict=True):
        _close(a.embedding, b.embedding)
    assert result.usage.prompt_tokens == direct.usage.prompt_tokens
    tokens = via.embeddings.create(model=MODEL, input=[[504, 3375, 7106]], encoding_format="float")
    assert tokens.usage.prompt_tokens == 3  # passed upstream as sent
    _unit(tokens.data[0].embedding)
    record = usage_record(front, raw.headers["x-request-id"])
    assert record["operation"] == "embeddings"
    assert record["backend"] == "up"
    assert record["completion_tokens"] == 0
    assert record["prompt_tokens"] == result.usage.prompt_tokens
    # Priced at the upstream's list price for input tokens.
    assert record["usd_list"] == pytest.approx(result.usage.prompt_tokens * 0.02 / 1e6)
    assert record["usd_total"] > 0


def test_upstream_refusals_are_the_clients(via: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        via.embeddings.create(model=MODEL, input="a", dimensions=3)  # the upstream's 400
    assert isinstance(info.value.body, dict)
    with pytest.raises(openai.BadRequestError) as unsupported:
        via.embeddings.create(model="words", input="a")  # deterministic does not embed
    assert unsupported.value.code == "unsupported_operation"
