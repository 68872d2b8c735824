"""Embeddings through a ``vllm`` backend in front of a real pooling vLLM: the CPU build
serving SmolLM2-135M as an embedding model (``--runner pooling --convert embed``: last-token
pooling, L2-normalised, 576 dimensions), started for this module only (40 to 50 s on two
busy cores), driven with the ``openai`` SDK and checked against the same server's own
answer: vectors, token counts, errors, the ledger's record and its list price.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import Server, free_port, running_server
from tests.vllm.vllm_process import SERVED_MODEL, VllmServer, not_installed_reason

PRICE = {"input_per_mtok": 0.02}  # USD per million tokens, as a hosted embedding model's
TEXTS = ["The river rises in the mountains.", "A mountain stands over the valley."]


@pytest.fixture(scope="module")
def pooling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    reason = not_installed_reason()
    if reason is not None:
        pytest.skip(reason)
    server = VllmServer(
        free_port(),
        tmp_path_factory.mktemp("vllm-pooling"),
        ("--runner", "pooling", "--convert", "embed"),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    pooling_server: VllmServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    config = {
        "backends": [
            {
                "id": "embed",
                "type": "vllm",
                "model": SERVED_MODEL,
                "knowledge_cutoff": "2024-06-01",
                "urls": [pooling_server.url],
                "poll_interval_s": 0.2,
                "operations": ["embeddings"],
                "profile": {"max_context": 2048},
                "list_price": PRICE,
            }
        ]
    }
    with running_server(tmp_path_factory.mktemp("gateway-vllm-embed"), config) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def direct(pooling_server: VllmServer) -> Iterator[openai.OpenAI]:
    url = pooling_server.url + "/v1"
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as c:
        yield c


def record_of(gateway: Server, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        status, body = gateway.get("/freshet/usage?backend=embed")
        assert status == 200, body
        found = [r for r in json.loads(body)["data"] if r["request_id"] == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, request_id
            record: dict[str, Any] = found[0]
            return record
        time.sleep(0.1)


def test_vectors_and_counts_are_vllms_own(
    client: openai.OpenAI, direct: openai.OpenAI, gateway: Server
) -> None:
    theirs = direct.embeddings.create(model=SERVED_MODEL, input=TEXTS, encoding_format="float")
    # The SDK's default: base64 of little-endian float32s, decoded by the SDK.
    raw = client.embeddings.with_raw_response.create(model=SERVED_MODEL, input=TEXTS)
    ours = raw.parse()
    assert raw.headers["x-freshet-backend"] == "embed"
    assert [d.index for d in ours.data] == [0, 1]
    for mine, vllms in zip(ours.data, theirs.data, strict=True):
        assert len(mine.embedding) == len(vllms.embedding) == 576
        assert mine.embedding == pytest.approx(vllms.embedding, abs=1e-6)
        assert math.fsum(x * x for x in mine.embedding) == pytest.approx(1.0, abs=1e-5)
    # Two different sentences, two different vectors.
    cosine = math.fsum(
        a * b for a, b in zip(ours.data[0].embedding, ours.data[1].embedding, strict=True)
    )
    assert cosine < 0.999
    assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens
    assert ours.usage.total_tokens == theirs.usage.prompt_tokens

    record = record_of(gateway, raw.headers["x-request-id"])
    assert record["operation"] == "embeddings"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        theirs.usage.prompt_tokens,
        0,
    )
    assert record["usd_list"] == pytest.approx(theirs.usage.prompt_tokens * 0.02 / 1e6, abs=1e-15)


def test_token_arrays_and_floats_pass_through(gateway: Server, direct: openai.OpenAI) -> None:
    ids = [[504, 6550, 19371, 30], [69, 6225]]
    theirs = direct.embeddings.create(model=SERVED_MODEL, input=ids, encoding_format="float")
    status, body = gateway_post(gateway, {"model": SERVED_MODEL, "input": ids})
    assert status == 200, body
    ours = json.loads(body)
    assert ours["usage"]["prompt_tokens"] == theirs.usage.prompt_tokens == 6
    for mine, vllms in zip(ours["data"], theirs.data, strict=True):
        assert mine["embedding"] == pytest.approx(vllms.embedding, abs=1e-6)
    # base64 asked for explicitly: the same floats, packed.
    status, body = gateway_post(
        gateway, {"model": SERVED_MODEL, "input": ids[1], "encoding_format": "base64"}
    )
    assert status == 200, body
    packed = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert list(floats) == pytest.approx(theirs.data[1].embedding, abs=1e-6)


def test_vllms_refusals_are_clean_4xx(client: openai.OpenAI) -> None:
    # SmolLM2 is no Matryoshka model: vLLM refuses other dimensions, and so does Freshet.
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=SERVED_MODEL, input="river", dimensions=64)
    assert "dimensions" in str(info.value.body)
    # Longer than the model's 2,048 tokens.
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model=SERVED_MODEL, input="word " * 2100)
    body: Any = too_long.value.body
    assert body["code"] == "context_length_exceeded"
    # A pooling model does not chat.
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(
            model=SERVED_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert chat.value.status_code == 400


def gateway_post(gateway: Server, body: dict[str, Any]) -> tuple[int, bytes]:
    resp = httpx.post(gateway.url + "/v1/embeddings", json=body, timeout=60)
    return resp.status_code, resp.content
