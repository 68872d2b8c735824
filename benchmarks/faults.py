"""Faults must not become an outage (issue 16): a real gateway in front of two mock upstreams
that fail a share of their requests, with every kind of fault, under concurrent load.

The mocks (``mock_upstream.py``'s protocol, 127.0.0.1) fail each request with probability
``--fault-rate``, the kind drawn evenly from: HTTP 500; a hang (no answer at all); a refused
connection (reset on the request and on the next connection); garbage instead of HTTP; FIN
mid-stream; RST mid-stream; a stall mid-stream (silence). ``freshet serve`` routes group
``auto`` over two ``openai-compatible`` backends, one per mock (``request_timeout_s`` 2).
Clients keep ``--concurrency`` requests in flight for ``--seconds``, every other one
streaming, each asking for 16 tokens. Then the gateway stops (its ledger flushes) and the
table says: requests, the share answered 200, 503s, other statuses, streams that ended with
an error event (a fault mid-stream: 200 and an error event, as documented), and the ledger's
rows against the requests that reached a backend (answered 200, or 502 after backends were
tried: every response but a refusal before any backend).

Run:        .venv/bin/python benchmarks/faults.py [--seconds 60] [--concurrency 64]
                [--fault-rate 0.05] [--seed 1]
Mocks only: .venv/bin/python benchmarks/faults.py mock --ports 9101,9102 [--fault-rate 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mock_upstream import MockProtocol, Settings
from tests.support.server import free_port, running_server

KINDS = ("500", "hang", "refuse", "garbage", "fin", "rst", "stall")
TOKENS = 16
_ERROR_BODY = b'{"error":{"message":"injected fault","type":"server_error","code":500}}'
_HTTP_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_ERROR_BODY), _ERROR_BODY)
)
_GARBAGE = b"HTTP/1.1 2OO Fine\r\nthis is not HTTP\r\n\r\n\x00\x01\x02"


class Faults:
    """One mock's dice and what they decided."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.rng = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.refuse_next = False  # the next connection is reset as it opens

    def roll(self) -> str | None:
        self.counts["requests"] += 1
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(KINDS)
        self.counts[kind] += 1
        return kind


class FaultyProtocol(MockProtocol):
    """The mock upstream's connection, failing requests as :class:`Faults` says."""

    def __init__(self, settings: Settings, faults: Faults) -> None:
        super().__init__(settings)
        self.faults = faults
        self.cut: str | None = None
        self.cut_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.faults.refuse_next:
            self.faults.refuse_next = False
            self.transport.abort()

    def _stream(self, model: str, chat: bool, i: int, n: int, usage: bool, first: bool) -> None:
        if self.transport is None:
            return
        if first:
            self.cut = None
            fault = self.faults.roll()
            if fault == "500":
                self._finish(_HTTP_500)
                return
            if fault == "garbage":
                self._write(_GARBAGE)  # the connection stays busy: the client drops it
                return
            if fault == "hang":
                return  # never answers; busy, so later requests on it wait too
            if fault == "refuse":
                # Reset now, and the client's next connection (its retry) as it opens.
                self.faults.refuse_next = True
                self.transport.abort()
                return
            if fault is not None:  # fin, rst or stall, after some chunks
                self.cut = fault
                self.cut_at = self.faults.rng.randint(1, max(1, n - 2))
        elif self.cut is not None and i == self.cut_at:
            kind, self.cut = self.cut, None
            if kind == "fin":
                self.transport.close()
            elif kind == "rst":
                self.transport.abort()
            return  # stall: silence from here on
        super()._stream(model, chat, i, n, usage, first)


async def serve_mocks(ports: Sequence[int], rate: float, seed: int, delay_ms: float) -> None:
    loop = asyncio.get_running_loop()
    settings = Settings(delay_ms / 1000, TOKENS, 0.001)
    faults = [Faults(rate, seed + i) for i in range(len(ports))]
    servers = []
    for port, f in zip(ports, faults, strict=True):
        server = await loop.create_server(
            lambda f=f: FaultyProtocol(settings, f),
            "127.0.0.1",
            port,
            backlog=4096,
            reuse_address=True,
        )
        servers.append(server)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("mocks ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    print(json.dumps({str(p): dict(f.counts) for p, f in zip(ports, faults, strict=True)}))


@contextlib.contextmanager
def running_mocks(
    ports: Sequence[int], rate: float, seed: int = 1, delay_ms: float = 20.0
) -> Iterator[dict[str, dict[str, int]]]:
    """The mocks in a process of their own; the dict is filled with what they injected
    once they have stopped."""
    args = [sys.executable, __file__, "mock", "--ports", ",".join(map(str, ports))]
    args += ["--fault-rate", str(rate), "--seed", str(seed), "--delay-ms", str(delay_ms)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    injected: dict[str, dict[str, int]] = {}
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"the mocks did not start: {line!r}")
        yield injected
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        if out.strip():
            injected.update(json.loads(out.strip().splitlines()[-1]))


def gateway_config(
    ports: Sequence[int], request_timeout_s: float = 2.0, dead_primary: bool = False
) -> dict[str, Any]:
    """Group ``auto``: primary and secondary, one per mock (``dead_primary``: nothing
    listens on primary's port)."""
    names = ("primary", "secondary")
    if dead_primary:
        ports = [free_port(), ports[1]]
    backends = [
        {
            "id": name,
            "type": "openai-compatible",
            "knowledge_cutoff": "unknown",
            "model": "mock",
            "url": f"http://127.0.0.1:{port}",
            "request_timeout_s": request_timeout_s,
            "connect_timeout_s": request_timeout_s,
        }
        for name, port in zip(names, ports, strict=True)
    ]
    return {"backends": backends, "groups": {"auto": list(names)}}


class Outcome(msgspec.Struct):
    status: int
    request_id: str | None
    stream: bool
    code: str | None = None  # the error's code
    message: str | None = None
    cut: bool = False  # a 200 stream that ended with an error event


async def _one(session: aiohttp.ClientSession, url: str, stream: bool) -> Outcome:
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": TOKENS,
        "stream": stream,
    }
    async with session.post(url, json=body) as resp:
        data = await resp.read()
        outcome = Outcome(resp.status, resp.headers.get("x-request-id"), stream)
    if resp.status == 200:
        if stream:
            outcome.cut = b'"error"' in data
            if not data.rstrip().endswith(b"data: [DONE]"):
                outcome.code, outcome.message = "no_done", data[-200:].decode(errors="replace")
        return outcome
    with contextlib.suppress(ValueError, KeyError, TypeError):
        error = json.loads(data)["error"]
        outcome.code, outcome.message = error.get("code"), error.get("message")
    return outcome


async def drive(base_url: str, seconds: float, concurrency: int) -> tuple[list[Outcome], int]:
    """``concurrency`` clients for ``seconds``, every other request streaming: the outcomes,
    and how many requests failed in the client (no HTTP response)."""
    url = base_url + "/v1/chat/completions"
    outcomes: list[Outcome] = []
    client_errors = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(n: int) -> None:
            nonlocal client_errors
            stream = n % 2 == 0
            while time.monotonic() < deadline:
                try:
                    outcomes.append(await _one(session, url, stream))
                except (aiohttp.ClientError, TimeoutError):
                    client_errors += 1
                stream = not stream

        await asyncio.gather(*(client(n) for n in range(concurrency)))
    return outcomes, client_errors


def ledger_ids(data_dir: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(data_dir / "ledger.sqlite3")) as conn:
        return [row[0] for row in conn.execute("SELECT request_id FROM usage")]


def reached_backend(o: Outcome) -> bool:
    """Answered by a backend, or an error after backends were tried (502; a 503 "no backend
    could serve the request (...)" before issue 16)."""
    tried = (o.message or "").startswith("no backend could serve the request (")
    return (
        o.status == 200
        or o.code == "backend_error"
        or (tried and "(no candidates)" not in (o.message or ""))
    )


class Report(msgspec.Struct, kw_only=True):
    seconds: float
    concurrency: int
    fault_rate: float
    requests: int
    ok: int
    status_503: int
    other: dict[str, int]  # status: count, for neither 200 nor 503
    streams_cut: int  # 200 streams ended by an error event
    client_errors: int
    reached: int
    ledger_rows: int
    ledger_matches: bool  # the ledger's request ids are exactly those that reached a backend
    injected: dict[str, int]  # fault kind: count, both mocks together
    upstream_requests: int
    examples: list[str]  # messages of non-200 answers, a few
    backends: list[dict[str, Any]]  # /freshet/backends right after the load

    @property
    def ok_share(self) -> float:
        return self.ok / self.requests if self.requests else 0.0

    def table(self) -> str:
        other = ", ".join(f"{s}: {n}" for s, n in sorted(self.other.items())) or "none"
        kinds = ", ".join(f"{k} {self.injected.get(k, 0)}" for k in KINDS)
        rows = [
            ("requests", f"{self.requests:,}"),
            ("answered 200", f"{self.ok:,} ({self.ok_share:.2%})"),
            ("503", f"{self.status_503}"),
            ("other statuses", other),
            ("200 streams ended by an error event", f"{self.streams_cut}"),
            ("client errors (no response)", f"{self.client_errors}"),
            ("requests that reached a backend", f"{self.reached:,}"),
            (
                "ledger rows",
                f"{self.ledger_rows:,} ({'the same ids' if self.ledger_matches else 'DIFFER'})",
            ),
            ("upstream attempts", f"{self.upstream_requests:,}"),
            ("faults injected", f"{sum(self.injected.get(k, 0) for k in KINDS):,}: {kinds}"),
        ]
        width = max(len(k) for k, _ in rows)
        head = (
            f"{self.seconds:g} s at c={self.concurrency}, half streaming, "
            f"{self.fault_rate:.0%} of upstream attempts failing"
        )
        return "\n".join([head, *(f"  {k.ljust(width)}  {v}" for k, v in rows)])


def run(
    seconds: float,
    concurrency: int,
    fault_rate: float,
    seed: int = 1,
    work: Path | None = None,
    extra_config: Mapping[str, Any] | None = None,
    dead_primary: bool = False,
) -> Report:
    """The whole scenario; ``work`` holds the gateway's data directory and log."""
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ports = [free_port(), free_port()]
        config = {**gateway_config(ports, dead_primary=dead_primary), **(extra_config or {})}
        with (
            running_mocks(ports, fault_rate, seed) as injected,
            running_server(work, config) as server,
        ):
            outcomes, client_errors = asyncio.run(drive(server.url, seconds, concurrency))
            backends = json.loads(server.get("/freshet/backends")[1])
        ids = ledger_ids(work / "data")
    reached = [o for o in outcomes if reached_backend(o)]
    reached_ids = {o.request_id for o in reached}
    kinds: collections.Counter[str] = collections.Counter()
    for counts in injected.values():
        kinds.update(counts)
    statuses = collections.Counter(o.status for o in outcomes)
    examples = list(
        dict.fromkeys(f"{o.status} {o.code}: {o.message}" for o in outcomes if o.status != 200)
    )
    return Report(
        seconds=seconds,
        concurrency=concurrency,
        fault_rate=fault_rate,
        requests=len(outcomes),
        ok=statuses[200],
        status_503=statuses[503],
        other={str(s): n for s, n in statuses.items() if s not in (200, 503)},
        streams_cut=sum(o.cut for o in outcomes),
        client_errors=client_errors,
        reached=len(reached),
        ledger_rows=len(ids),
        ledger_matches=len(ids) == len(set(ids)) and set(ids) == reached_ids,
        injected={k: kinds[k] for k in KINDS},
        upstream_requests=kinds["requests"],
        examples=examples[:5],
        backends=backends,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    mock = sub.add_parser("mock", help="only the faulty mocks")
    mock.add_argument("--ports", required=True)
    for p in (parser, mock):
        p.add_argument("--fault-rate", type=float, default=0.05)
        p.add_argument("--seed", type=int, default=1)
    mock.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="the report as JSON too")
    args = parser.parse_args()
    if args.command == "mock":
        ports = [int(p) for p in args.ports.split(",")]
        uvloop.run(serve_mocks(ports, args.fault_rate, args.seed, args.delay_ms))
        return
    started = time.strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()[0]
    report = run(args.seconds, args.concurrency, args.fault_rate, args.seed)
    print(f"{started}, load average {load:.2f} before the run")
    print(report.table())
    for example in report.examples:
        print("  e.g.", example[:200])
    if args.json:
        print(msgspec.json.encode(report).decode())


if __name__ == "__main__":
    main()
