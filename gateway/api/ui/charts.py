"""Small SVG chart and formatting helpers for ``/freshet/ui`` (no library, no network).

Defines, in the page's script scope: ``h`` / ``svg`` (element builders), ``fmt`` (number
formats matching ``freshet cost report``), ``colorFor`` and ``charts.stackedBars`` /
``charts.pairedBars``. Each chart draws one ``<g class="series" data-series=NAME>`` per
series and fills the figure's ``ul.legend``.
"""

from __future__ import annotations

CHARTS_JS = r"""
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fde", "#e07b00", "#18a058", "#d03050", "#8a4fd8", "#0e9aa7",
                 "#c2528b", "#6b8e23", "#b8860b", "#5470c6"];

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}
function h(tag, attrs, ...children) { return fill(document.createElement(tag), attrs, children); }
function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

const fmt = {
  // Same rules as the CLI: 3 significant digits, no exponent; cents from $1 up.
  significant(value, digits = 3) {
    if (value === null || value === undefined) return "-";
    if (value === 0) return "0";
    const magnitude = Math.floor(Math.log10(Math.abs(value)));
    const decimals = Math.min(20, Math.max(0, digits - 1 - magnitude));
    return value.toLocaleString("en-US", {
      minimumFractionDigits: decimals, maximumFractionDigits: decimals,
    });
  },
  usd(value) {
    if (value === null || value === undefined) return "-";
    if (Math.abs(value) >= 1) {
      return "$" + value.toLocaleString("en-US", {
        minimumFractionDigits: 2, maximumFractionDigits: 2,
      });
    }
    return "$" + fmt.significant(value);
  },
  integer(value) { return value === null ? "-" : value.toLocaleString("en-US"); },
  tick(value) { return String(Number(value.toPrecision(6))); },
};

const backendColors = new Map();
function colorFor(name) {
  if (!backendColors.has(name)) {
    backendColors.set(name, PALETTE[backendColors.size % PALETTE.length]);
  }
  return backendColors.get(name);
}

// Pick a unit prefix so that axis ticks read 0-999 rather than 0.000012.
function scaled(max, unit) {
  const steps = unit === "$"
    ? [[1, "$"], [1e-3, "milli-$"], [1e-6, "µ$"], [1e-9, "n$"]]
    : [[1e6, "M" + unit], [1e3, "k" + unit], [1, unit], [1e-3, "m" + unit],
       [1e-6, "µ" + unit], [1e-9, "n" + unit]];
  for (const [size, label] of steps) {
    if (max >= size) return {factor: 1 / size, unit: label};
  }
  return {factor: 1 / steps[steps.length - 1][0], unit: steps[steps.length - 1][1]};
}

function niceAxis(max) {
  const top = max > 0 ? max : 1;
  const raw = top / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const n = raw / power;
  const step = (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * power;
  const ticks = [];
  for (let v = 0; v <= top + step * 1e-9; v += step) ticks.push(v);
  if (ticks[ticks.length - 1] < top) ticks.push(ticks[ticks.length - 1] + step);
  return {top: ticks[ticks.length - 1], ticks};
}

const NICE_STEPS = [1, 2, 3, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 360, 720, 1440];
const SIZE = {w: 640, h: 250, left: 64, right: 14, top: 12, bottom: 50};

function frame(title, yTitle, axis, factor) {
  const plotH = SIZE.h - SIZE.top - SIZE.bottom;
  const y = (value) => SIZE.top + plotH - (value * factor / axis.top) * plotH;
  const root = svg("svg", {
    viewBox: `0 0 ${SIZE.w} ${SIZE.h}`, role: "img", "aria-label": title,
  });
  for (const tick of axis.ticks) {
    const at = y(tick / factor);
    root.append(
      svg("line", {class: "grid", x1: SIZE.left, x2: SIZE.w - SIZE.right, y1: at, y2: at}),
      svg("text", {x: SIZE.left - 6, y: at + 4, "text-anchor": "end"}, fmt.tick(tick)),
    );
  }
  const midY = SIZE.top + plotH / 2;
  root.append(
    svg("line", {class: "axis", x1: SIZE.left, x2: SIZE.left, y1: SIZE.top, y2: y(0)}),
    svg("line", {class: "axis", x1: SIZE.left, x2: SIZE.w - SIZE.right, y1: y(0), y2: y(0)}),
    svg("text", {class: "axis-title", x: 14, y: midY, "text-anchor": "middle",
                 transform: `rotate(-90 14 ${midY})`}, yTitle),
  );
  return {root, y, plotW: SIZE.w - SIZE.left - SIZE.right};
}

function legend(figure, names) {
  const list = figure.querySelector("ul.legend");
  list.replaceChildren();
  for (const name of names) {
    const swatch = h("span", {class: "swatch"});
    swatch.style.background = colorFor(name);
    list.append(h("li", {"data-series": name}, swatch, name));
  }
}

function noData(figure, message) {
  figure.querySelector(".plot").replaceChildren(h("div", {class: "no-data"}, message));
  figure.querySelector("ul.legend").replaceChildren();
}

const charts = {
  // Bars per time bucket, one stacked segment per series: {name, values[]} (null = 0).
  // `labels` name the buckets; `dates`, `keys`, `tickSteps` are optional (see tick labels).
  stackedBars(figure, {labels, dates, keys, tickSteps, series, unit, yTitle, xTitle, empty}) {
    const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
    const max = Math.max(0, ...totals);
    if (!series.length || max === 0) { noData(figure, empty); return; }
    const {factor, unit: shown} = scaled(max, unit);
    const axis = niceAxis(max * factor);
    const title = figure.querySelector("figcaption").textContent;
    const {root, y, plotW} = frame(title, `${yTitle} (${shown})`, axis, factor);
    const band = plotW / labels.length;
    const base = labels.map(() => 0);
    for (const s of series) {
      const group = svg("g", {class: "series", "data-series": s.name, fill: colorFor(s.name)});
      s.values.forEach((value, i) => {
        if (!value) return;
        const top = base[i] + value;
        const when = dates ? `${dates[i]} ${labels[i]}` : labels[i];
        const tip = `${s.name} · ${when} · ${fmt.significant(value * factor)} ${shown}`;
        group.append(svg("rect", {
          x: SIZE.left + i * band + band * 0.1, width: Math.max(1, band * 0.8),
          y: y(top), height: Math.max(0.5, y(base[i]) - y(top)),
        }, svg("title", {}, tip)));
        base[i] = top;
      });
      root.append(group);
    }
    // At most ~8 tick labels, on round times (every 10 minutes, 3 hours...) when `keys`
    // (bucket numbers since the epoch) are given; the date goes under the first tick of a day.
    const want = labels.length / 8;
    const every = (tickSteps || NICE_STEPS).find((step) => step >= want) || Math.ceil(want);
    let lastDate = null;
    labels.forEach((label, i) => {
      if ((keys ? keys[i] : i) % every) return;
      const x = SIZE.left + (i + 0.5) * band;
      const base = SIZE.h - SIZE.bottom;
      root.append(svg("text", {x, y: base + 14, "text-anchor": "middle"}, label));
      if (dates && dates[i] !== lastDate) {
        root.append(svg("text", {x, y: base + 26, "text-anchor": "middle"}, dates[i]));
        lastDate = dates[i];
      }
    });
    root.append(svg("text", {class: "axis-title", x: SIZE.left + plotW / 2, y: SIZE.h - 8,
                             "text-anchor": "middle"}, xTitle));
    figure.querySelector(".plot").replaceChildren(root);
    legend(figure, series.map((s) => s.name));
  },

  // Two bars per category (input, output): {name, input, output}; null = not measured.
  pairedBars(figure, {categories, unit, yTitle, empty}) {
    const values = categories.flatMap((c) => [c.input, c.output]).filter((v) => v !== null);
    const max = Math.max(0, ...values);
    if (!values.length || max === 0) { noData(figure, empty); return; }
    const {factor, unit: shown} = scaled(max, unit);
    const axis = niceAxis(max * factor);
    const title = figure.querySelector("figcaption").textContent;
    const {root, y, plotW} = frame(title, `${yTitle} (${shown})`, axis, factor);
    const band = plotW / categories.length;
    const bar = Math.min(56, band * 0.34);
    categories.forEach((c, i) => {
      const center = SIZE.left + (i + 0.5) * band;
      const group = svg("g", {class: "series", "data-series": c.name, fill: colorFor(c.name)});
      [["in", c.input, -bar - 2, 0.5], ["out", c.output, 2, 1]].forEach(([side, v, dx, alpha]) => {
        const x = center + dx;
        if (v === null) {
          group.append(svg("text", {x: x + bar / 2, y: y(0) - 4, "text-anchor": "middle"}, "n/a"));
        } else {
          group.append(svg("rect", {x, width: bar, y: y(v), height: Math.max(0.5, y(0) - y(v)),
                                    "fill-opacity": alpha, "data-side": side},
            svg("title", {}, `${c.name} · ${side}put · ${fmt.significant(v * factor)} ${shown}`)));
        }
        group.append(svg("text", {x: x + bar / 2, y: y(0) + 13, "text-anchor": "middle"}, side));
      });
      group.append(svg("text", {class: "axis-title", x: center, y: y(0) + 30,
                                "text-anchor": "middle"}, c.name));
      root.append(group);
    });
    figure.querySelector(".plot").replaceChildren(root);
    legend(figure, categories.map((c) => c.name));
  },
};
"""
