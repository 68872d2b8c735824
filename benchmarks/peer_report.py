"""The peer benchmark's results: JSON (everything), Markdown (tables) and an SVG chart."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from msgspec import Struct

from benchmarks.loadgen import StreamResult, WrkResult
from benchmarks.peer_extras import AsicResult, CpuResult, RssResult, SoakResult

EMBEDDINGS_SUFFIX = "-embeddings"  # the name of a peer's POST /v1/embeddings row


class PeerResult(Struct, kw_only=True):
    name: str
    label: str
    version: str = ""
    skipped: str | None = None
    startup_s: float | None = None
    rss_rest_mb: float | None = None
    rss_after_mb: float | None = None
    c1: WrkResult | None = None
    c32: WrkResult | None = None
    c256: WrkResult | None = None
    stream: StreamResult | None = None
    stream_error: str | None = None


class Target(Struct, kw_only=True):
    what: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


class Results(Struct, kw_only=True):
    started: str
    seconds: float
    machine: dict[str, Any]
    settings: dict[str, Any]
    peers: list[PeerResult]
    asic: AsicResult | None = None
    cpu: CpuResult | None = None
    soak: SoakResult | None = None
    rss: list[RssResult] = []
    profile: dict[str, Any] | None = None
    notes: list[str] = []
    targets: list[Target] = []


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def added(peer: PeerResult, direct: PeerResult | None) -> dict[str, float | None]:
    """Peer minus direct, from the same run."""
    out: dict[str, float | None] = {
        "p50": None,
        "p99": None,
        "x32": None,
        "x256": None,
        "ttft": None,
        "cpu_ms": None,
    }
    if direct is None:
        return out
    if peer.c1 and direct.c1:
        out["p50"] = peer.c1.p50_ms - direct.c1.p50_ms
        out["p99"] = peer.c1.p99_ms - direct.c1.p99_ms
    if peer.c32 and direct.c32:
        out["x32"] = peer.c32.rps / direct.c32.rps
        if peer.c32.cpu_s is not None and peer.c32.requests:
            out["cpu_ms"] = 1000 * peer.c32.cpu_s / peer.c32.requests
    if peer.c256 and direct.c256:
        out["x256"] = peer.c256.rps / direct.c256.rps
    if peer.stream and direct.stream:
        out["ttft"] = peer.stream.ttft_p50_ms - direct.stream.ttft_p50_ms
    return out


def _errors(p: PeerResult) -> int:
    return sum(r.errors for r in (p.c1, p.c32, p.c256) if r is not None) + (
        p.stream.errors if p.stream else 0
    )


def _direct(r: Results, peer: PeerResult) -> PeerResult | None:
    """The direct row to compare ``peer`` with: the same endpoint's."""
    name = "direct" + (EMBEDDINGS_SUFFIX if peer.name.endswith(EMBEDDINGS_SUFFIX) else "")
    return next((p for p in r.peers if p.name == name and not p.skipped), None)


def markdown(r: Results) -> str:
    m = r.machine
    out = [
        "# Freshet against its peers",
        "",
        f"One run of `benchmarks/peers.py`, {r.started} ({r.seconds / 60:.1f} min). "
        f"{m['cpu']}, {m['cores']} cores shared by the load generator, the mock upstream "
        f"and the peer; {m['memory_gb']:.0f} GB; {m['os']}; Python {m['python']}; "
        f"wrk {m['wrk']}. Load average {m['load_start']} at the start, "
        f"{m['load_end']} at the end (other work on the machine shares the cores).",
        "",
        f"Mock OpenAI upstream on 127.0.0.1: answers after {r.settings['delay_ms']:g} ms; "
        f"streams {r.settings['chunks']} chunks {r.settings['interval_ms']:g} ms apart. "
        f"wrk, one thread, keep-alive, {r.settings['duration_s']:g} s per load; a 2 s "
        f"warm-up first. *Added* = peer - direct in this run (for the `/v1/embeddings` "
        f"rows, direct's own `/v1/embeddings` row; the mock answers it after the same delay).",
        "",
        "| peer | version | added p50 / p99 at c=1 (ms) | req/s at c=32 (x direct) "
        "| req/s at c=256 (x direct) | errors | added TTFT p50, streaming (ms) "
        "| RSS at rest (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in r.peers:
        if p.skipped:
            out.append(f"| {p.label} | {p.version or '—'} | not run: {p.skipped} ||||||")
            continue
        a = added(p, _direct(r, p))
        ttft_added = "failed (see below)" if p.stream_error else _f(a["ttft"])
        rps32 = f"{p.c32.rps:,.0f} ({_f(a['x32'])}x)" if p.c32 else "—"
        rps256 = f"{p.c256.rps:,.0f} ({_f(a['x256'])}x)" if p.c256 else "—"
        out.append(
            f"| {p.label} | {p.version or '—'} | {_f(a['p50'])} / {_f(a['p99'])} | {rps32} "
            f"| {rps256} | {_errors(p)} | {ttft_added} | {_f(p.rss_rest_mb, 0)} |"
        )
    out += [
        "",
        "Raw figures (ms unless stated):",
        "",
        "| peer | c=1 p50 / p99 | c=32 p50 / p99 | c=256 p50 / p99 | TTFT p50 / p99 "
        "| stream reads p50 | CPU ms per request at c=32 | RSS after the load (MB) "
        "| start-up (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r.peers:
        if p.skipped:
            continue
        a = added(p, _direct(r, p))
        cells = [f"{_f(w.p50_ms)} / {_f(w.p99_ms)}" if w else "—" for w in (p.c1, p.c32, p.c256)]
        s = p.stream
        ttft = f"{_f(s.ttft_p50_ms)} / {_f(s.ttft_p99_ms)}" if s else "—"
        reads = _f(s.chunks_p50, 0) if s else "—"
        out.append(
            f"| {p.label} | {' | '.join(cells)} | {ttft} | {reads} | {_f(a['cpu_ms'])} "
            f"| {_f(p.rss_after_mb, 0)} | {_f(p.startup_s, 1)} |"
        )
    failed = [p for p in r.peers if p.stream_error]
    if failed:
        out += [""]
        out += [f"- {p.label}: streaming failed: `{p.stream_error}`" for p in failed]
    out += _extras(r)
    if r.targets:
        out += ["", "## Freshet against the targets of issue 9", ""]
        out += ["| target | wanted | measured | met |", "|---|---|---|---|"]
        for t in r.targets:
            met = "—" if t.met is None else ("yes" if t.met else "**no**")
            out.append(f"| {t.what} | {t.target} | {t.measured} | {met} |")
    if r.notes:
        out += ["", *[f"- {n}" for n in r.notes]]
    return "\n".join(out) + "\n"


def _extras(r: Results) -> list[str]:
    out: list[str] = []
    if r.asic is not None:
        a = r.asic
        out += [
            "",
            "## Simulated etched ASIC through Freshet",
            "",
            f"- One stream, {1000:,} tokens at {a.simulated_tokens_per_s:,.0f} tok/s "
            f"(synthetic text): the client receives **{a.one_stream_tokens_per_s:,.0f} tok/s**"
            f" = {a.one_stream_ratio:.1%} of the simulated rate, request sent to last byte "
            f"(TTFT {a.one_stream_ttft_ms:.2f} ms).",
            f"- {a.streams} streams at once on {a.streams} simulated cards: "
            f"**{a.aggregate_tokens_per_s:,.0f} tok/s** in all, of "
            f"{a.aggregate_ideal_tokens_per_s:,.0f} the cards could produce; "
            f"{a.aggregate_errors} errors. Ceiling: {a.ceiling}.",
        ]
    if r.cpu is not None:
        c = r.cpu
        out += [
            "",
            "## CPU backend (SmolLM2-135M on llama.cpp)",
            "",
            f"- {c.requests} requests of {c.max_tokens} tokens: llama-cpp-python called directly "
            f"{c.direct_tokens_per_s:.1f} tok/s, through Freshet {c.gateway_tokens_per_s:.1f} "
            f"tok/s = **{c.ratio:.1%}**.",
        ]
    if r.rss:
        out += ["", "## Freshet's memory at rest, by configuration", ""]
        out += [f"- {v.config}: **{v.rss_mb:.0f} MB**" for v in r.rss]
    if r.soak is not None:
        s = r.soak
        out += [
            "",
            "## Memory under a steady load",
            "",
            f"- {s.seconds:.0f} s at {s.rate:.0f} req/s ({s.requests:,} requests, {s.errors} "
            f"errors, p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms): RSS {s.rss_start_mb:.1f} MB "
            f"→ {s.rss_end_mb:.1f} MB ({s.growth:+.1%}), at most {s.rss_max_mb:.1f} MB.",
        ]
    if r.profile is not None and "flame" in r.profile:
        out += [
            "",
            "## Where Freshet's time goes",
            "",
            f"py-spy while wrk holds 32 connections: [flame graph]({r.profile['flame']}), "
            f"[top functions]({r.profile['top']}).",
        ]
    return out


# -- chart ---------------------------------------------------------------------------------

_COLORS = {
    "direct": "#9aa0a6",
    "nginx": "#34a853",
    "litellm": "#ea4335",
    "portkey": "#f29900",
    "python": "#a142f4",
    "freshet": "#1a73e8",
}


def chart(r: Results) -> str:
    """Three panels of horizontal bars: throughput, added latency, memory."""
    rows = [p for p in r.peers if not p.skipped]
    # (title, values, unit, issue 9's target for Freshet)
    panels: list[tuple[str, list[float | None], str, float]] = [
        (
            "req/s at c=32, x direct (higher is better)",
            [added(p, _direct(r, p))["x32"] for p in rows],
            "x",
            0.8,
        ),
        (
            "added latency p50 at c=1, ms (lower is better)",
            [added(p, _direct(r, p))["p50"] for p in rows],
            " ms",
            0.5,
        ),
        ("RSS at rest, MB (lower is better)", [p.rss_rest_mb for p in rows], " MB", 80.0),
    ]
    label_w, panel_w, row_h, top = 205, 230, 26, 58
    width = label_w + len(panels) * (panel_w + 20) + 10
    height = top + row_h * len(rows) + 52
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">Freshet and its peers in front '
        f"of a {r.settings['delay_ms']:g} ms mock upstream ({r.machine['cores']} shared cores)"
        f"</text>",
    ]
    for i, p in enumerate(rows):
        y = top + i * row_h + row_h / 2 + 4
        weight = "bold" if p.name.startswith("freshet") else "normal"
        svg.append(f'<text x="10" y="{y}" font-weight="{weight}">{html.escape(p.label)}</text>')
    for k, (title, values, unit, target) in enumerate(panels):
        x0 = label_w + k * (panel_w + 20)
        svg.append(f'<text x="{x0}" y="{top - 12}" font-size="11">{html.escape(title)}</text>')
        known = [v for v in values if v is not None]
        scale = max([abs(v) for v in known] + [1e-9]) * 1.35
        svg.append(
            f'<line x1="{x0}" y1="{top - 4}" x2="{x0}" y2="{top + row_h * len(rows)}" '
            'stroke="#555"/>'
        )
        tx = x0 + panel_w * target / scale
        bottom = top + row_h * len(rows)
        svg.append(
            f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{bottom}" stroke="#d93025" '
            'stroke-dasharray="4 3"/>'
        )
        svg.append(
            f'<text x="{tx + 3:.1f}" y="{bottom + 12}" font-size="10" fill="#d93025">'
            f"target {target:g}{unit}</text>"
        )
        for i, (p, v) in enumerate(zip(rows, values, strict=True)):
            y = top + i * row_h + 4
            if v is None:
                svg.append(f'<text x="{x0 + 4}" y="{y + 13}" fill="#777">—</text>')
                continue
            w = max(1.0, panel_w * max(v, 0.0) / scale)
            color = _COLORS.get(p.name.split("-")[0], "#5f6368")
            svg.append(
                f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{row_h - 8}" fill="{color}"/>'
            )
            text = f"{v:.2f}{unit}" if unit != " MB" else f"{v:.0f}{unit}"
            svg.append(f'<text x="{x0 + w + 4:.1f}" y="{y + 13}">{text}</text>')
    svg.append(
        f'<text x="10" y="{height - 12}" font-size="10" fill="#555">{html.escape(r.started)}; '
        f"load average {r.machine['load_start']} → {r.machine['load_end']}; "
        "benchmarks/peers.py</text>"
    )
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def fmt_targets(items: Sequence[Target]) -> str:
    return "\n".join(f"{'ok ' if t.met else 'NO '} {t.what}: {t.measured}" for t in items)
