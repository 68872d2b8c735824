"""Fidelity: does ``freshet replay`` agree with live serving? (issue 20)

One slice of a trace (the first 240 requests of the Azure conversation trace in
tests/fixtures/traces/azure, arrivals compressed into 20 s, prompts capped at 384 tokens and
outputs at 32) is run both ways through the same fleet (an etched card, ``asic-sim``, and a
``deterministic`` backend, whose timings are known; one request in three needs a knowledge
cutoff only the deterministic backend has):

- live: ``freshet serve`` on a free loopback port, a small asyncio load generator sending
  each request at its arrival time with the ``openai`` client (streaming), then the usage
  records of the gateway's ledger;
- replay: the same slice through the replay engine with the same config, into a ledger of
  its own.

Both sides' records are summarised the same way, per backend: requests, TTFT and
end-to-end p50, joules and dollars; the table gives the relative differences. The issue's
bounds: the same counts, latencies within 5 %, joules and dollars within 2 %.

Run:  .venv/bin/python benchmarks/fidelity.py [--requests N] [--span S] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import openai

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from gateway.cli.calibrate import measure  # noqa: E402
from gateway.ledger.sqlite import SQLiteLedger, UsageQuery  # noqa: E402
from gateway.outcome import UsageRecord  # noqa: E402
from gateway.plugins import Plugins  # noqa: E402
from gateway.protocol import Freshness  # noqa: E402
from gateway.replay.engine import Engine  # noqa: E402
from gateway.replay.traces import TraceRequest, read  # noqa: E402
from gateway.settings import load_settings  # noqa: E402
from tests.support.server import running_server, write_config  # noqa: E402

TRACE = ROOT / "tests" / "fixtures" / "traces" / "azure" / "AzureLLMInferenceTrace_conv.csv"
NEED = dt.date(2024, 1, 1)  # the card's cutoff is before it, the deterministic backend's after
# Slow enough that a few milliseconds of the gateway's own work (HTTP, routing, a busy
# machine's scheduling) stay well inside the bounds: TTFTs of 0.1 to 0.8 s, outputs of
# up to 1 s on the card and 6 s on the deterministic backend.
FLEET: dict[str, Any] = {
    "backends": [
        {
            "id": "card",
            "type": "asic-sim",
            "knowledge_cutoff": "2023-12-01",
            "cards": 2,
            "streams_per_card": 8,
            "prefill_tokens_per_s": 500,
            "decode_tokens_per_s": 50,
            "queue_limit": 256,
        },
        {
            "id": "det",
            "type": "deterministic",
            "model": "llama-3.1-8b",
            "knowledge_cutoff": "2024-06-01",
            "tokens_per_s": 5,
            "max_context": 8192,
            "profile": {
                "capex_per_hour": 1.0,
                "watts_idle": 5,
                "watts_active": 50,
                "max_concurrency": 64,
                "decode_tokens_per_s": 5,
            },
        },
    ],
    "groups": {"auto": ["card", "det"]},
}
# What each backend adds to a chat prompt's words when it counts its tokens: the card a
# Llama-3 template (begin-of-text, 5 for the message, 4 for the assistant header), the
# deterministic backend 1 a message. The load generator writes as many words as make the
# trace's prompt count on the backend the request is routed to.
TEMPLATE_TOKENS = {"card": 10, "det": 1}
MAX_PROMPT = 384
MAX_OUTPUT = 32
BOUNDS = {"ttft_p50": 0.05, "e2e_p50": 0.05, "joules": 0.02, "usd": 0.02}


def trace_slice(count: int = 240, span_s: float = 20.0) -> list[TraceRequest]:
    """The first ``count`` requests of the fixture trace, arrivals compressed into
    ``span_s`` seconds (from now, so that tariffs and dates are today's), tokens capped;
    every third request needs a cutoff of 2024-01-01 or later."""
    rows = list(read(TRACE, "azure-conv"))[:count]
    first, last = rows[0].at, rows[-1].at
    scale = span_s / (last - first) if last > first else 0.0
    start = time.time()
    return [
        TraceRequest(
            at=start + (r.at - first) * scale,
            prompt_tokens=max(TEMPLATE_TOKENS["card"] + 1, min(r.prompt_tokens, MAX_PROMPT)),
            output_tokens=max(1, min(r.output_tokens, MAX_OUTPUT)),
            cls=r.cls,
            freshness=Freshness(min_knowledge_cutoff=NEED) if i % 3 == 0 else None,
        )
        for i, r in enumerate(rows)
    ]


class BackendFigures(msgspec.Struct, kw_only=True):
    requests: int
    ttft_p50: float
    e2e_p50: float
    joules: float
    usd: float


def summarize(records: Iterable[UsageRecord]) -> dict[str, BackendFigures]:
    """Per backend, the served requests' figures (the same for both sides' records)."""
    by: dict[str, list[UsageRecord]] = {}
    for r in records:
        if r.status == "ok":
            by.setdefault(r.backend, []).append(r)
    return {
        backend: BackendFigures(
            requests=len(rs),
            # Requests with no output have no first token.
            ttft_p50=statistics.median([r.ttft_s for r in rs if r.ttft_s is not None] or [0.0]),
            e2e_p50=statistics.median(r.duration_s for r in rs),
            joules=sum(r.joules or 0.0 for r in rs),
            usd=sum(r.usd_total for r in rs),
        )
        for backend, rs in sorted(by.items())
    }


async def _records(data_dir: Path) -> list[UsageRecord]:
    ledger = SQLiteLedger(data_dir)
    await ledger.start()
    try:
        out: list[UsageRecord] = []
        while True:
            page, _ = await ledger.query(UsageQuery(limit=1000, offset=len(out)))
            out.extend(page)
            if len(page) < 1000:
                return out
    finally:
        await ledger.aclose()


def _prompt(words: int) -> str:
    return " ".join("word" for _ in range(words))


def _words(request: TraceRequest) -> int:
    """The words of the request's prompt: its tokens less the chosen backend's template."""
    target = "det" if request.freshness is not None else "card"
    return request.prompt_tokens - TEMPLATE_TOKENS[target]


async def _send(
    client: openai.AsyncOpenAI,
    request: TraceRequest,
    start: float,
    t0: float,
    words: Callable[[TraceRequest], int],
) -> None:
    await asyncio.sleep(max(0.0, start + (request.at - t0) - time.monotonic()))
    extra = (
        {"freshness": {"min_knowledge_cutoff": request.freshness.min_knowledge_cutoff.isoformat()}}
        if request.freshness is not None and request.freshness.min_knowledge_cutoff
        else None
    )
    stream = await client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": _prompt(words(request))}],
        max_tokens=request.output_tokens,
        stream=True,
        extra_body=extra,
    )
    async for _ in stream:
        pass


async def load(
    url: str, requests: Sequence[TraceRequest], words: Callable[[TraceRequest], int] = _words
) -> None:
    """Each request at its arrival time (relative to the first), streamed to the end."""
    async with openai.AsyncOpenAI(
        base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120.0
    ) as client:
        start = time.monotonic() + 0.5
        t0 = requests[0].at
        await asyncio.gather(*(_send(client, r, start, t0, words) for r in requests))


def live(
    tmp: Path,
    requests: Sequence[TraceRequest],
    fleet: Mapping[str, Any] = FLEET,
    words: Callable[[TraceRequest], int] = _words,
) -> list[UsageRecord]:
    """The slice through ``freshet serve``; its ledger's records once it has stopped."""
    with running_server(tmp, fleet, ready_timeout=180.0) as server:
        asyncio.run(load(server.url, requests, words))
    return asyncio.run(_records(server.data_dir))


async def _replay(config: Path, data_dir: Path, requests: Sequence[TraceRequest]) -> None:
    settings = load_settings(str(config), env={"FRESHET_DATA_DIR": str(data_dir)})
    ledger = SQLiteLedger(data_dir)
    await ledger.start()
    try:
        await Engine(settings, Plugins()).run(requests, ledger)
    finally:
        await ledger.aclose()


def replayed(
    tmp: Path, requests: Sequence[TraceRequest], fleet: Mapping[str, Any] = FLEET
) -> list[UsageRecord]:
    """The slice through the replay engine, same config; its records."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp, fleet)
    asyncio.run(_replay(config, tmp / "data", requests))
    return asyncio.run(_records(tmp / "data"))


def rel(live_value: float, replay_value: float) -> float:
    """The replay's difference from live, relative to live."""
    if live_value == 0:
        return 0.0 if replay_value == 0 else float("inf")
    return (replay_value - live_value) / live_value


class Comparison(msgspec.Struct, kw_only=True):
    live: dict[str, BackendFigures]
    replay: dict[str, BackendFigures]

    def differences(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for backend, lv in self.live.items():
            rv = self.replay.get(backend)
            if rv is None:
                continue
            out[backend] = {
                "ttft_p50": rel(lv.ttft_p50, rv.ttft_p50),
                "e2e_p50": rel(lv.e2e_p50, rv.e2e_p50),
                "joules": rel(lv.joules, rv.joules),
                "usd": rel(lv.usd, rv.usd),
            }
        return out

    def failures(self) -> list[str]:
        """Each figure outside the issue's bounds, in words (empty: they agree)."""
        problems = []
        if {b: f.requests for b, f in self.live.items()} != {
            b: f.requests for b, f in self.replay.items()
        }:
            problems.append("request counts per backend differ")
        for backend, diffs in self.differences().items():
            for name, diff in diffs.items():
                if abs(diff) > BOUNDS[name]:
                    problems.append(f"{backend} {name}: {diff:+.1%} (bound {BOUNDS[name]:.0%})")
        return problems

    def table(self) -> str:
        head = (
            f"{'backend':<8} {'requests':>11} {'TTFT p50 s':>17} {'e2e p50 s':>17} "
            f"{'joules':>19} {'dollars':>21}"
        )
        lines = [head, f"{'':<8} {'live/replay':>11} " + " ".join(
            f"{'live/replay (diff)':>{w}}" for w in (17, 17, 19, 21)
        )]  # fmt: skip
        diffs = self.differences()
        for backend in sorted(set(self.live) | set(self.replay)):
            lv, rv = self.live.get(backend), self.replay.get(backend)
            d = diffs.get(backend, {})

            counts = f"{lv.requests if lv else 0}/{rv.requests if rv else 0}"
            cells = [
                _cell(lv, rv, d, name, fmt, width)
                for name, fmt, width in (
                    ("ttft_p50", ".3f", 17),
                    ("e2e_p50", ".3f", 17),
                    ("joules", ".1f", 19),
                    ("usd", ".6f", 21),
                )
            ]
            lines.append(f"{backend:<8} {counts:>11} " + " ".join(cells))
        return "\n".join(lines)


def _cell(
    lv: BackendFigures | None,
    rv: BackendFigures | None,
    diffs: dict[str, float],
    name: str,
    fmt: str,
    width: int,
) -> str:
    a = format(getattr(lv, name), fmt) if lv else "-"
    b = format(getattr(rv, name), fmt) if rv else "-"
    pct = f" ({diffs[name]:+.1%})" if name in diffs else ""
    return f"{a}/{b}{pct}".rjust(width)


def compare(tmp: Path, count: int = 240, span_s: float = 20.0) -> Comparison:
    requests = trace_slice(count, span_s)
    return Comparison(
        live=summarize(live(tmp / "live", requests)),
        replay=summarize(replayed(tmp / "replay", requests)),
    )


CPU_FLEET: dict[str, Any] = {
    "backends": [
        {
            "id": "cpu",
            "type": "llamacpp",
            "knowledge_cutoff": "2024-06-01",
            "n_ctx": 2048,
            "queue_limit": 256,
        }
    ],
    "groups": {"auto": ["cpu"]},
}


def cpu_compare(tmp: Path, count: int = 24, span_s: float = 60.0) -> Comparison:
    """The CPU model (SmolLM2 on llama.cpp, one instance) with the profile ``freshet
    calibrate`` measures here and now. Its output ends where the model stops, so the replay
    gets the shapes live served (prompt and output tokens as the ledger has them), at the
    same arrivals: what is compared is the timing model alone."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp, CPU_FLEET)
    settings = load_settings(str(config), env={"FRESHET_DATA_DIR": str(tmp / "data")})
    (result,) = asyncio.run(measure(settings, Plugins()))
    fleet = {**CPU_FLEET, "backends": [{**CPU_FLEET["backends"][0], "profile": result.measured}]}
    print(f"calibrated: {result.measured}", file=sys.stderr)

    requests = [
        msgspec.structs.replace(
            r, prompt_tokens=min(r.prompt_tokens, 256), output_tokens=min(r.output_tokens, 16),
            freshness=None,
        )
        for r in trace_slice(count, span_s)
    ]  # fmt: skip
    (tmp / "live").mkdir(exist_ok=True)
    served = sorted(
        (r for r in live(tmp / "live", requests, fleet, lambda r: r.prompt_tokens // 2)
         if r.status == "ok"),
        key=lambda r: r.ts,
    )  # fmt: skip
    outputs = [r.completion_tokens for r in served]
    print(f"live outputs: {outputs}", file=sys.stderr)
    shapes = [
        TraceRequest(at=r.ts, prompt_tokens=r.prompt_tokens, output_tokens=r.completion_tokens,
                     cls="cpu")
        for r in served
    ]  # fmt: skip
    return Comparison(
        live=summarize(served), replay=summarize(replayed(tmp / "replay", shapes, fleet))
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--span", type=float, default=20.0, help="seconds of arrivals")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="the CPU model instead (SmolLM2 on llama.cpp, calibrated first): 24 requests",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "live").mkdir()
        if args.cpu:
            result = cpu_compare(Path(tmp) / "cpu")
        else:
            result = compare(Path(tmp), args.requests, args.span)
    if args.json:
        print(json.dumps(msgspec.to_builtins(result) | {"differences": result.differences()}))
    else:
        print(result.table())
        problems = result.failures()
        print("\nagree within the bounds" if not problems else "\n".join(problems))
    return 0 if not result.failures() else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
