"""``POST /v1/embeddings`` in process, on deterministic backends: input checks and sizing,
the base64 encoding, and the flow shared with chat (routing by operation, fallback before
the answer, one usage record, no output tokens in the quote or the output estimate)."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from gateway.api.app import create_app
from gateway.api.edge import decode_body
from gateway.api.embeddings import protocol as e
from gateway.api.embeddings.handler import encode, to_request
from gateway.api.runtime import Runtime
from gateway.errors import InvalidRequest
from gateway.ledger.sqlite import UsageQuery
from gateway.settings import load_settings
from tests.support.inprocess import wait_ready

EMBEDS = ["chat", "text_completion", "embeddings"]
PROFILE = {"watts_active": 50, "prefill_tokens_per_s": 1000, "capex_per_hour": 1.0}
BACKENDS = [
    {"id": "words", "model": "m-words"},  # generation only
    {"id": "broken", "model": "m-broken", "operations": EMBEDS, "fail_before_first": True},
    {"id": "good", "model": "m-good", "operations": EMBEDS},
]
for _backend in BACKENDS:
    _backend.update(type="deterministic", knowledge_cutoff="unknown", profile=PROFILE)
BACKENDS[1]["profile"] = {**PROFILE, "capex_per_hour": 0.01}  # the cheapest: tried first
GROUPS = {"vec": ["words", "broken", "good"]}

decode = msgspec.json.Decoder(e.EmbeddingCreateParams).decode


def params(**body: Any) -> e.EmbeddingCreateParams:
    return decode_body(decode, msgspec.json.encode({"model": "m", **body}))


@pytest_asyncio.fixture
async def gateway(tmp_path: Any) -> AsyncIterator[tuple[AsyncTestClient[Any], Runtime]]:
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.yaml.encode({"backends": BACKENDS, "groups": GROUPS}))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path)})
    runtime = Runtime(settings)
    async with AsyncTestClient(app=create_app(settings, runtime)) as client:
        await wait_ready(client)
        yield client, runtime


def test_inputs_are_sized() -> None:
    one = to_request(params(input="the river rises"), "r1")
    assert list(one.request.texts) == ["the river rises"]
    assert one.tokens == one.longest >= 3
    many = to_request(params(input=["a", "the river rises after the rain"]), "r2")
    assert many.request.count == 2
    assert many.longest < many.tokens
    ids = to_request(params(input=[1, 2, 3]), "r3")  # one array of token ids
    assert [list(t) for t in ids.request.tokens] == [[1, 2, 3]]
    assert (ids.tokens, ids.longest) == (3, 3)
    arrays = to_request(params(input=[[1, 2], [3, 4, 5]], dimensions=8, user="u"), "r4")
    assert (arrays.tokens, arrays.longest) == (5, 3)
    assert arrays.request.dimensions == 8
    assert arrays.request.user == "u"
    assert not arrays.request.texts


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"input": [[1], []]}, "input[1]"),
        ({"input": ["a", 1]}, "input"),
        ({"input": [[1], 2]}, "input"),
        ({"input": ["a"] * (e.MAX_INPUTS + 1)}, "input"),
        ({"input": [[1]] * (e.MAX_INPUTS + 1)}, "input"),
        ({"input": [-1]}, "input[0]"),
        ({"input": [[0] * (e.MAX_TOKENS + 1)]}, "input[0]"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "encoding_format": "float16"}, "encoding_format"),
    ],
)
def test_bad_input_is_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_request(params(**body), "r")
    assert info.value.status == 400
    assert info.value.param == param


def test_a_single_token_array_may_be_long() -> None:
    # Over MAX_INPUTS ids is one input, not too many inputs.
    sized = to_request(params(input=[7] * (e.MAX_INPUTS + 5)), "r")
    assert sized.tokens == e.MAX_INPUTS + 5


def test_base64_is_little_endian_float32() -> None:
    vector = [0.1, -2.5, 3.0e-8, 1.0]
    packed = base64.b64decode(encode(vector, "base64"))  # type: ignore[arg-type]
    assert packed == struct.pack("<4f", *vector)
    assert encode(vector, "float") == vector
    assert encode((0.5, 0.25), None) == [0.5, 0.25]


async def _records(runtime: Runtime) -> list[Any]:
    await runtime.ledger.flush()
    records, _ = await runtime.ledger.query(UsageQuery(limit=100))
    return records


@pytest.mark.asyncio
async def test_routed_fallen_back_and_recorded_once(gateway: Any) -> None:
    client, runtime = gateway
    group_key = ("vec", None)
    expected_before = runtime.service.outputs.expect(*group_key)
    resp = await client.post(
        "/v1/embeddings",
        json={
            "model": "vec",
            "input": ["the river rises", "after rain"],
            "encoding_format": "float",
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-freshet-backend"] == "good"
    route = resp.headers["x-freshet-route"]
    assert "operation(no embeddings)" in route  # the generation-only backend
    body = resp.json()
    assert body["object"] == "list"
    assert body["model"] == "m-good"
    assert [d["index"] for d in body["data"]] == [0, 1]
    for item in body["data"]:
        assert item["object"] == "embedding"
        assert len(item["embedding"]) == 8
        assert math.fsum(x * x for x in item["embedding"]) == pytest.approx(1.0)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == 5
    assert body["usage"]["cost"] > 0
    (record,) = await _records(runtime)
    assert record.request_id == resp.headers["x-request-id"]
    assert record.operation == "embeddings"
    assert record.backend == "good"
    assert record.status == "ok"
    assert (record.prompt_tokens, record.completion_tokens) == (5, 0)
    assert record.fallbacks == 1  # "broken" refused first
    assert "broken" in (record.attempts or "")
    assert record.usd_total == pytest.approx(body["usage"]["cost"])
    # Nothing was generated: the expected output of the group's chat requests is as it was.
    assert runtime.service.outputs.expect(*group_key) == expected_before


@pytest.mark.asyncio
async def test_same_input_same_vector_in_both_encodings(gateway: Any) -> None:
    client, _ = gateway
    body = {"model": "m-good", "input": "the river rises"}
    floats = (await client.post("/v1/embeddings", json={**body, "encoding_format": "float"})).json()
    b64 = (await client.post("/v1/embeddings", json={**body, "encoding_format": "base64"})).json()
    packed = base64.b64decode(b64["data"][0]["embedding"])
    assert struct.unpack("<8f", packed) == pytest.approx(floats["data"][0]["embedding"])


@pytest.mark.asyncio
async def test_errors_in_openai_shape(gateway: Any) -> None:
    client, _ = gateway
    cases = [
        ({"model": "m-words", "input": "hi"}, 400, "unsupported_operation"),
        ({"model": "m-good", "input": ""}, 400, None),
        ({"model": "m-good", "input": "hi", "dimensions": 3}, 400, None),
        ({"model": "m-broken", "input": "hi"}, 502, None),  # the only candidate failed
        ({"model": "nope", "input": "hi"}, 404, "model_not_found"),
        ({"model": "m-good"}, 400, None),
    ]
    for body, status, code in cases:
        resp = await client.post("/v1/embeddings", json=body)
        assert resp.status_code == status, (body, resp.text)
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        if code is not None:
            assert error["code"] == code


@pytest.mark.asyncio
async def test_the_context_holds_each_input_not_the_batch(gateway: Any) -> None:
    client, runtime = gateway
    context = runtime.fleet.catalog.resolve("m-good").deployments[0].max_context
    each = context * 3 // 4  # fits; three of them do not, and need not
    resp = await client.post(
        "/v1/embeddings",
        json={"model": "m-good", "input": [[1] * each] * 3, "encoding_format": "float"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["prompt_tokens"] == 3 * each
    long = await client.post(
        "/v1/embeddings", json={"model": "m-good", "input": [1] * (2 * context)}
    )
    assert long.status_code == 400
    error = long.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "input"


@pytest.mark.asyncio
async def test_the_schema_describes_the_endpoint(gateway: Any) -> None:
    client, _ = gateway
    doc = (await client.get("/schema/openapi.json")).json()
    post = doc["paths"]["/v1/embeddings"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/EmbeddingCreateParams")
    params = doc["components"]["schemas"]["EmbeddingCreateParams"]
    assert {"input", "model", "encoding_format", "dimensions"} <= set(params["properties"])
    assert "400" in post["responses"]
