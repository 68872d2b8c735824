"""Small inline SVG charts for the replay's HTML report: no script, no external resource."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 78, 170, 34, 44

Series = tuple[str, Sequence[float | None]]


def _nice(top: float) -> float:
    if top <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(top))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * exp >= top:
            return step * exp
    return 10 * exp


def _frame(
    title: str, body: list[str], legend: Sequence[str], colors: Sequence[int] | None = None
) -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12" '
        f'role="img" aria-label="{escape(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
        *body,
    ]
    for i, name in enumerate(legend):
        y = TOP + 10 + i * 18
        x = WIDTH - RIGHT + 14
        color = PALETTE[(colors[i] if colors else i) % len(PALETTE)]
        parts.append(f'<rect x="{x}" y="{y - 9}" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text x="{x + 18}" y="{y + 1}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _axes(
    lo: float, hi: float, fmt: Callable[[float], str], x_labels: Sequence[str]
) -> tuple[list[str], Callable[[float], float], Callable[[int], float]]:
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    n = max(1, len(x_labels) - 1)

    def y_of(v: float) -> float:
        return TOP + plot_h * (1 - (v - lo) / (hi - lo if hi > lo else 1.0))

    def x_of(i: int) -> float:
        return LEFT + plot_w * i / n

    body = []
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = y_of(v)
        body.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        body.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    every = max(1, math.ceil(len(x_labels) / 12))
    for i, label in enumerate(x_labels):
        if i % every == 0 or i == len(x_labels) - 1:
            x = x_of(i)
            body.append(
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    body.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="#444"/>'
    )
    return body, y_of, x_of


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    fmt: Callable[[float], str],
    *,
    lo: float | None = None,
    hi: float | None = None,
    rule: tuple[float, str] | None = None,
    marks: Sequence[tuple[int, int, str]] = (),
    colors: Sequence[int] | None = None,
) -> str:
    """One line per series over ``x_labels``; ``rule`` a horizontal reference line with its
    label; ``marks`` (series index, x index, label) circled points; ``colors`` each series'
    palette index (default: its position), so a fleet keeps its colour across charts."""
    hue = list(colors) if colors else list(range(len(series)))
    values = [v for _, vs in series for v in vs if v is not None]
    top = hi if hi is not None else _nice(max(values, default=1.0) * 1.05)
    bottom = lo if lo is not None else 0.0
    body, y_of, x_of = _axes(bottom, top, fmt, x_labels)
    if rule is not None:
        y = y_of(rule[0])
        body.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#888" '
            'stroke-dasharray="5,4"/>'
        )
        body.append(f'<text x="{WIDTH - RIGHT - 4}" y="{y - 5:.1f}" text-anchor="end" '
                    f'fill="#555">{escape(rule[1])}</text>')  # fmt: skip
    for k, (_, vs) in enumerate(series):
        color = PALETTE[hue[k] % len(PALETTE)]
        points = [f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(vs) if v is not None]
        if points:
            body.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2.2" '
                f'points="{" ".join(points)}"/>'
            )
    for k, i, label in marks:
        vs = series[k][1]
        v = vs[i] if 0 <= i < len(vs) else None
        if v is None:
            continue
        color = PALETTE[hue[k] % len(PALETTE)]
        x, y = x_of(i), y_of(v)
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="none" stroke="{color}" '
                    'stroke-width="2"/>')  # fmt: skip
        body.append(f'<text x="{x + 8:.1f}" y="{y - 8:.1f}" fill="{color}">{escape(label)}</text>')
    return _frame(title, body, [name for name, _ in series], hue)


def bar_chart(
    title: str, labels: Sequence[str], values: Sequence[float | None], fmt: Callable[[float], str]
) -> str:
    """One bar per label."""
    known = [v for v in values if v is not None]
    top = _nice(max(known, default=1.0) * 1.1)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    body, y_of, _ = _axes(0.0, top, fmt, [])
    slot = plot_w / max(1, len(labels))
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        x = LEFT + slot * i + slot * 0.15
        color = PALETTE[i % len(PALETTE)]
        if v is not None:
            y = y_of(v)
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                        f'height="{TOP + plot_h - y:.1f}" fill="{color}"/>')  # fmt: skip
            body.append(f'<text x="{x + slot * 0.35:.1f}" y="{y - 4:.1f}" '
                        f'text-anchor="middle">{escape(fmt(v))}</text>')  # fmt: skip
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                    f'text-anchor="middle">{escape(label)}</text>')  # fmt: skip
    return _frame(title, body, [])


def stacked_shares(
    title: str, labels: Sequence[str], parts: Sequence[Sequence[tuple[str, float]]]
) -> str:
    """One bar per label, split into named shares (0..1); a name keeps its colour."""
    names: list[str] = []
    for bar in parts:
        for name, _ in bar:
            if name not in names:
                names.append(name)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    body, y_of, _ = _axes(0.0, 1.0, lambda v: f"{v * 100:.0f} %", [])
    slot = plot_w / max(1, len(labels))
    for i, (label, bar) in enumerate(zip(labels, parts, strict=True)):
        x = LEFT + slot * i + slot * 0.15
        acc = 0.0
        for name, share in bar:
            color = PALETTE[names.index(name) % len(PALETTE)]
            y_top, y_bottom = y_of(acc + share), y_of(acc)
            body.append(f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{slot * 0.7:.1f}" '
                        f'height="{max(0.0, y_bottom - y_top):.1f}" fill="{color}"/>')  # fmt: skip
            acc += share
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{TOP + plot_h + 16}" '
                    f'text-anchor="middle">{escape(label)}</text>')  # fmt: skip
    return _frame(title, body, names)
