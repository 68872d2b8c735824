"""The CPU a request costs inside the gateway's process, without the HTTP server around it:
Freshet's generation path against a bare proxy on the same upstream client, in one run.

`peers.py` measures the whole server under wrk, where the machine's other processes (wrk,
the mock) move a single run's figures by 10-20 %. Here each side runs in a process of its
own that drives the ASGI app directly, as the server calls it (the server's connection
hook and one-write extension included, so no watcher task and no per-header work), with
``--concurrency`` requests in flight against the mock upstream, and reads its own CPU
time: what is left is what Freshet does per request beyond what any Python proxy on the
same client does (the floor: post the body, read the answer, hand it back). The client's
side of HTTP (uvicorn's parsing and the socket to the client, the same for both) is not
in these figures; add `peers.py`'s floor for the whole.

Cases: one-token answers (as `peers.py` asks), 32-token answers the mock sends at once
(as the independent harness's mock streams them), the same streamed to a streaming
client, and one-token answers with tracing off (``OTEL_SDK_DISABLED=true``). Config as a
user writes it: three ``openai-compatible`` backends, one per mock model, defaults
otherwise (SQLite ledger, traces kept in memory, metrics). Rounds alternate the sides.

``--without``: where Freshet's part goes. The one-token case again, with one feature at
a time taken out of the measured process (tracing and kept traces by their settings; the
others by making their entry point do nothing: the metrics of a finished request, the
ledger's record, the quotes' learning, energy metering; routing by deciding once per
model and reusing the decision), then all of them at once, in alternating rounds: what
the request costs without each. These are measurements, not settings anyone should run.

Run:  .venv/bin/python benchmarks/flow_cpu.py [--requests 15000] [--rounds 3] [--without]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.asgi import http_scope  # noqa: E402
from tests.support.server import free_port  # noqa: E402

CONFIG = """backends:
  - {{id: mock, type: openai-compatible, knowledge_cutoff: unknown, model: mock, url: "{url}"}}
  - {{id: mock-b, type: openai-compatible, knowledge_cutoff: unknown, model: mock-b, url: "{url}"}}
  - {{id: mock-c, type: openai-compatible, knowledge_cutoff: unknown, model: mock-c, url: "{url}"}}
"""
ONE_TOKEN = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
WHOLE = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**WHOLE, "stream": True}
# name: (the mock's arguments, the request body, environment of the measured process)
CASES: dict[str, tuple[list[str], dict[str, Any], dict[str, str]]] = {
    "1 token": ([], ONE_TOKEN, {}),
    "32 tokens whole": (["--chunks", "32", "--interval-ms", "0"], WHOLE, {}),
    "32 tokens streamed": (["--chunks", "32", "--interval-ms", "0"], STREAM, {}),
    "1 token tracing off": ([], ONE_TOKEN, {"OTEL_SDK_DISABLED": "true"}),
}


# name: environment of the measured process (FLOW_CPU_WITHOUT names what _take_out removes)
WITHOUT: dict[str, dict[str, str]] = {
    "nothing": {},
    "tracing": {"OTEL_SDK_DISABLED": "true"},
    "kept traces": {"FRESHET_TRACES_KEPT": "0"},
    "metrics": {"FLOW_CPU_WITHOUT": "metrics"},
    "ledger": {"FLOW_CPU_WITHOUT": "ledger"},
    "quote learning": {"FLOW_CPU_WITHOUT": "learning"},
    "energy metering": {"FLOW_CPU_WITHOUT": "energy"},
    "routing": {"FLOW_CPU_WITHOUT": "routing"},
    "all of these": {
        "OTEL_SDK_DISABLED": "true",
        "FLOW_CPU_WITHOUT": "metrics,ledger,learning,energy,routing",
    },
}


def _take_out(names: str) -> None:
    """Make the named features' entry points do nothing (``--without``)."""
    taken = set(names.split(",")) if names else set()
    if "metrics" in taken:
        from gateway.telemetry.metrics import Metrics

        Metrics.request_done = lambda self, trace: None  # type: ignore[method-assign]
    if "ledger" in taken:
        from gateway.ledger.sqlite import SQLiteLedger

        SQLiteLedger.record = lambda self, record: None  # type: ignore[method-assign]
    if "learning" in taken:
        from gateway.state.quotes import QuoteCalibration

        QuoteCalibration.observe = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    if "energy" in taken:
        from freshet_energy.model import BackendEnergyCost

        from gateway.cost import Costing

        nothing = Costing(joules=None, energy_source=None)
        BackendEnergyCost.settle = lambda self, share, usage, at: nothing  # type: ignore[method-assign]
    if "routing" in taken:
        from gateway.flow.service import Service

        decide = Service.decide
        decided: dict[str, Any] = {}

        async def once(self: Any, ctx: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
            decision = decided.get(ctx.requested_model)
            if decision is None:
                decision = await decide(self, ctx, gen, *args, **kwargs)
                decided[ctx.requested_model] = decision
            return decision

        Service.decide = once  # type: ignore[method-assign]


class _Connection:
    on_lost = None  # the server's hook: told when the client leaves


def _scope(body: bytes) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8400"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return http_scope("POST", "/v1/chat/completions", headers)


async def _drive(serve: Any, body: bytes, requests: int, concurrency: int) -> dict[str, Any]:
    """``requests`` requests through ``serve(scope, receive, send)``, ``concurrency`` at a
    time, after a warm-up; the CPU this process spent on them."""
    from gateway.api.cycle import WHOLE_RESPONSE
    from gateway.api.drain import CONNECTION

    base = _scope(body)
    errors = served = 0

    async def one() -> None:
        nonlocal errors, served
        served += 1
        scope = dict(base)
        scope[CONNECTION] = _Connection()
        scope["extensions"] = {WHOLE_RESPONSE: {}}
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Future()  # the client stays
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            nonlocal errors
            if message["type"] == "http.response.start" and message["status"] != 200:
                errors += 1

        await serve(scope, receive, send)

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    each = max(1, requests // concurrency)
    await asyncio.gather(*(worker(max(1, each // 10)) for _ in range(concurrency)))  # warm
    errors = 0
    wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    await asyncio.gather(*(worker(each) for _ in range(concurrency)))
    n = each * concurrency
    return {
        "process_us": 1e6 * (time.process_time() - cpu) / n,
        "main_thread_us": 1e6 * (time.thread_time() - main) / n,
        "req_s": n / (time.perf_counter() - wall),
        "errors": errors,
        "served": served,  # the warm-up's requests included
    }


async def _floor(upstream: str, body: bytes, requests: int, concurrency: int) -> dict[str, Any]:
    sys.argv = ["floor", "0", upstream]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import floor_proxy

    started = asyncio.Event()

    async def lifespan_receive() -> dict[str, Any]:
        if not started.is_set():
            started.set()
            return {"type": "lifespan.startup"}
        await asyncio.Future()
        raise AssertionError

    ready = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            ready.set()

    lifespan = asyncio.ensure_future(
        floor_proxy.app({"type": "lifespan"}, lifespan_receive, lifespan_send)
    )
    await ready.wait()
    result = await _drive(floor_proxy.app, body, requests, concurrency)
    lifespan.cancel()
    return result


async def _freshet(config: str, body: bytes, requests: int, concurrency: int) -> dict[str, Any]:
    from gateway.api.app import create_app
    from gateway.api.runtime import Runtime
    from gateway.settings.load import load_settings

    _take_out(os.environ.get("FLOW_CPU_WITHOUT", ""))
    settings = load_settings(config, host="127.0.0.1", port=8400)
    runtime = Runtime(settings)
    app: Any = create_app(settings, runtime)
    await runtime.start()
    generation = app.generation
    endpoint = generation.endpoint(_scope(body))

    async def serve(scope: Any, receive: Any, send: Any) -> None:
        await generation.serve(endpoint, scope, receive, send)

    try:
        return await _drive(serve, body, requests, concurrency)
    finally:
        await runtime.aclose()


def _child(args: argparse.Namespace) -> None:
    import uvloop

    body = args.body.encode()
    if args.child == "floor":
        result = uvloop.run(_floor(args.upstream, body, args.requests, args.concurrency))
    else:
        result = uvloop.run(_freshet(args.config, body, args.requests, args.concurrency))
    print(json.dumps(result))


def child_command(
    side: str, body: bytes, upstream: str, config: str, requests: int, concurrency: int
) -> list[str]:
    """The command that measures one side in a process of its own (``--child``)."""
    return [
        sys.executable, str(Path(__file__).resolve()), "--child", side, "--upstream", upstream,
        "--config", config, "--body", body.decode(), "--requests", str(requests),
        "--concurrency", str(concurrency),
    ]  # fmt: skip


def _measure(
    side: str,
    env: dict[str, str],
    body: bytes,
    args: argparse.Namespace,
    upstream: str,
    config: str,
) -> dict[str, Any]:
    command = child_command(side, body, upstream, config, args.requests, args.concurrency)
    out = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _without(args: argparse.Namespace) -> None:
    print(
        f"c={args.concurrency}, {args.requests} requests a run, {args.rounds} rounds, "
        f"one-token answers, {args.delay_ms:g} ms upstream; Freshet's CPU microseconds a "
        "request (median of rounds, range)"
    )
    print("| without | CPU a request | less than with everything |")
    print("|---|---|---|")
    runs: dict[str, list[float]] = {name: [] for name in WITHOUT}
    floors: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, mock_upstream(args, []) as upstream:
        config = os.path.join(tmp, "freshet.yaml")
        Path(config).write_text(CONFIG.format(url=upstream))
        body = json.dumps(ONE_TOKEN, separators=(",", ":")).encode()
        for _ in range(args.rounds):
            floors.append(_measure("floor", {}, body, args, upstream, config)["process_us"])
            for name, env in WITHOUT.items():
                data = {"FRESHET_DATA_DIR": os.path.join(tmp, "data")}
                result = _measure("freshet", {**env, **data}, body, args, upstream, config)
                runs[name].append(result["process_us"])
    whole = statistics.median(runs["nothing"])
    for name, values in runs.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.1f} ({min(values):.0f}-{max(values):.0f}) "
            f"| {whole - median:.1f} |"
        )
    floor = statistics.median(floors)
    print(
        f"| everything (the floor: a bare proxy on the same client) | {floor:.1f} "
        f"({min(floors):.0f}-{max(floors):.0f}) | {whole - floor:.1f} |"
    )


@contextlib.contextmanager
def mock_upstream(args: argparse.Namespace, mock_args: list[str]) -> Iterator[str]:
    """The mock upstream on a free port, for the block: its URL."""
    port = free_port()
    mock = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "mock_upstream.py"), "--port", str(port),
         "--delay-ms", str(args.delay_ms), *mock_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        mock.terminate()
        mock.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=15000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--without", action="store_true", help="what each feature costs")
    parser.add_argument("--child", choices=["floor", "freshet"], help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    if args.without:
        _without(args)
        return
    print(
        f"c={args.concurrency}, {args.requests} requests a side, {args.rounds} rounds, "
        f"{args.delay_ms:g} ms upstream; CPU microseconds a request (median of rounds)"
    )
    print("| case | floor | Freshet | Freshet - floor | x floor | Freshet main thread | errors |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            mock_args, request, env = CASES[name]
            config = os.path.join(tmp, "freshet.yaml")
            with mock_upstream(args, mock_args) as upstream:
                Path(config).write_text(CONFIG.format(url=upstream))
                body = json.dumps(request, separators=(",", ":")).encode()
                floors, freshets, mains, errors = [], [], [], 0
                for _ in range(args.rounds):
                    data = os.path.join(tmp, "data")
                    floor = _measure("floor", {}, body, args, upstream, config)
                    ours = _measure(
                        "freshet", {**env, "FRESHET_DATA_DIR": data}, body, args, upstream, config
                    )
                    floors.append(floor["process_us"])
                    freshets.append(ours["process_us"])
                    mains.append(ours["main_thread_us"])
                    errors += floor["errors"] + ours["errors"]
            f, g = statistics.median(floors), statistics.median(freshets)
            print(
                f"| {name} | {f:.1f} | {g:.1f} ({min(freshets):.0f}-{max(freshets):.0f}) "
                f"| {g - f:.1f} | {g / f:.1f} | {statistics.median(mains):.1f} | {errors} |"
            )


if __name__ == "__main__":
    main()
