"""Output caps (issue #16 point 6): a request without ``max_tokens`` ends within the
deployment's documented default, a larger ``max_tokens`` is clamped to its ceiling, on
every backend type; ``/v1/models`` states both. Before, a CPU request without
``max_tokens`` ran to the end of its 8,192-token context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from freshet_llamacpp.backend import LlamaCppBackend

from gateway.backend import Backend, BackendConfig, Deployment
from gateway.builtins.deterministic import DeterministicBackend
from gateway.errors import ConfigError
from gateway.settings import load_settings
from tests.support.server import running_server
from tests.vllm.fake_upstream import FakeVllm

COUNT = "Count from 1 to 500, separated by commas."


class _NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


def test_the_types_defaults() -> None:
    cpu = LlamaCppBackend(BackendConfig(id="cpu", type="llamacpp"), _NoFleet())
    dep = cpu.deployments[0]
    assert (dep.default_output_tokens, dep.max_output_tokens) == (512, 2048)
    configured = BackendConfig(
        id="cpu", type="llamacpp", default_output_tokens=100, max_output_tokens=200
    )
    dep = LlamaCppBackend(configured, _NoFleet()).deployments[0]
    assert (dep.default_output_tokens, dep.max_output_tokens) == (100, 200)
    lower = BackendConfig(id="cpu", type="llamacpp", max_output_tokens=300)
    dep = LlamaCppBackend(lower, _NoFleet()).deployments[0]
    assert (dep.default_output_tokens, dep.max_output_tokens) == (300, 300)


def test_output_limit() -> None:
    dep = Deployment(
        backend_id="b",
        model="m",
        knowledge_cutoff=None,
        max_context=8192,
        default_output_tokens=512,
        max_output_tokens=2048,
    )
    assert dep.output_limit(None) == 512
    assert dep.output_limit(None, room=100) == 100  # a long prompt: what the context leaves
    assert dep.output_limit(10) == 10
    assert dep.output_limit(5000) == 2048  # clamped
    uncapped = Deployment(backend_id="b", model="m", knowledge_cutoff=None, max_context=10)
    assert uncapped.output_limit(None) is None  # the upstream's own default
    assert uncapped.output_limit(None, room=7) == 7
    assert uncapped.output_limit(99) == 99  # the context check stays the backend's


def _config(upstream_url: str) -> dict[str, Any]:
    def det(backend_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": backend_id,
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": backend_id,
            **extra,
        }

    def api(backend_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": backend_id,
            "type": "openai-compatible",
            "knowledge_cutoff": "unknown",
            "url": upstream_url,
            **extra,
        }

    return {
        "backends": [
            det("det"),
            det("det-capped", default_output_tokens=40, max_output_tokens=50),
            {"id": "asic", "type": "asic-sim", "knowledge_cutoff": "unknown", "model": "asic"},
            {
                "id": "asic-capped",
                "type": "asic-sim",
                "knowledge_cutoff": "unknown",
                "model": "asic-capped",
                "max_output_tokens": 100,
            },
            # The llama.cpp type as shipped (512 / 2048), and with small caps (quick to run).
            {
                "id": "cpu",
                "type": "llamacpp",
                "knowledge_cutoff": "unknown",
                "model": "cpu",
                "calibrate": False,
            },
            {
                "id": "cpu-capped",
                "type": "llamacpp",
                "knowledge_cutoff": "unknown",
                "model": "cpu-capped",
                "calibrate": False,
                "default_output_tokens": 24,
                "max_output_tokens": 32,
            },
            api("api"),
            api("api-capped", default_output_tokens=64, max_output_tokens=100),
        ],
        "groups": {"both": ["det", "det-capped"]},
    }


def _chat(model: str, content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.asyncio
async def test_every_backend_type_caps_output(tmp_path: Path, fake: FakeVllm) -> None:
    with running_server(tmp_path, _config(fake.url)) as server:
        # Generous deadlines: a CPU generation on a busy machine takes seconds, not ms.
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
            listed = (await client.get("/v1/models")).json()["data"]
            caps = {m["id"]: (m["default_output_tokens"], m["max_output_tokens"]) for m in listed}
            assert caps["det"] == (16, 4096)
            assert caps["det-capped"] == (40, 50)
            assert caps["both"] == (40, 4096)  # the largest of the group's
            assert caps["asic"] == (256, 2048)
            assert caps["asic-capped"] == (100, 100)
            assert caps["cpu"] == (512, 2048)
            assert caps["cpu-capped"] == (24, 32)
            assert caps["api"] == (None, 131072)  # the upstream's own default; the context
            assert caps["api-capped"] == (64, 100)

            async def tokens(body: dict[str, Any]) -> tuple[int, str]:
                resp = await client.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200, resp.text
                data = resp.json()
                return data["usage"]["completion_tokens"], data["choices"][0]["finish_reason"]

            # Deterministic and the simulated ASIC produce exactly what they may.
            assert await tokens(_chat("det")) == (16, "length")
            assert await tokens(_chat("det-capped")) == (40, "length")
            assert await tokens(_chat("det-capped", max_tokens=1000)) == (50, "length")
            assert await tokens(_chat("asic")) == (256, "length")
            assert await tokens(_chat("asic-capped", max_tokens=1000)) == (100, "length")
            assert (await tokens(_chat("asic-capped")))[0] == 100

            # The real CPU model: a long answer is cut at the cap (the same code applies the
            # shipped 512 / 2,048); the request, which ran for minutes, now ends
            # within the shipped default (greedy, to keep the test quick).
            count = _chat("cpu-capped", COUNT, temperature=0)
            assert await tokens(count) == (24, "length")
            assert await tokens({**count, "max_tokens": 1000}) == (32, "length")
            streamed = await client.post(
                "/v1/chat/completions",
                json=_chat(
                    "cpu", stream=True, stream_options={"include_usage": True}, temperature=0
                ),
            )
            assert streamed.status_code == 200
            assert streamed.text.rstrip().endswith("data: [DONE]")
            usage = [line for line in streamed.text.splitlines() if '"usage":{' in line][-1]
            assert 0 < int(usage.split('"completion_tokens":')[1].split(",")[0]) <= 512

            # A remote upstream gets the cap as max_tokens; without caps, none is sent.
            await tokens(_chat("api-capped"))
            await tokens(_chat("api-capped", max_tokens=5000))
            await tokens(_chat("api-capped", max_tokens=7))
            await tokens(_chat("api"))
            sent = [body.get("max_tokens") for body in fake.requests]
            assert sent == [64, 100, 7, None]


def test_a_bad_cap_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    for bad in ("0", "-3", "1.5", "lots", "true"):
        path.write_text(
            f"backends:\n  - id: d\n    type: deterministic\n    knowledge_cutoff: unknown\n"
            f"    max_output_tokens: {bad}\n"
        )
        with pytest.raises(ConfigError) as err:
            load_settings(str(path), env={})
        assert err.value.key == "backends[0].max_output_tokens", bad
        assert err.value.reason.startswith("must be a whole number"), bad
    above = BackendConfig(
        id="d", type="deterministic", default_output_tokens=600, max_output_tokens=300
    )
    with pytest.raises(ConfigError, match="above max_output_tokens"):
        DeterministicBackend(above, _NoFleet())
