"""Small SVG chart and formatting helpers for ``/freshet/ui`` (no library, no network).

Defines, in the page's script scope: ``h`` / ``svg`` (element builders), ``fmt`` (number
formats: three significant digits, exponent form below 0.001), ``sourceLabel`` /
``sourcesText`` (how joules were obtained, in words), ``colorFor`` and
``charts.stackedBars`` / ``charts.pairedBars`` (linear or log scale). Each chart draws one
``<g class="series" data-series=NAME>`` per series and fills the figure's ``ul.legend``.
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
  // Three significant digits, as `freshet cost report`; below 0.001 (and from a billion
  // up) in exponent form, so $0.000000155 reads $1.55e-7. Dollars from $1 up in cents.
  significant(value, digits = 3) {
    if (value === null || value === undefined) return "-";
    if (value === 0) return "0";
    const abs = Math.abs(value);
    if (abs < 1e-3 || abs >= 1e9) return value.toExponential(digits - 1).replace("e+", "e");
    const magnitude = Math.floor(Math.log10(abs));
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
  joules(value) {
    return value === null || value === undefined ? "-" : `${fmt.significant(value)} J`;
  },
  integer(value) {
    return value === null || value === undefined ? "-" : value.toLocaleString("en-US");
  },
  percent(share) {
    if (share === null || share === undefined) return "-";
    const p = share * 100;
    return `${p >= 10 || p === 0 ? Math.round(p) : fmt.significant(p, 2)}%`;
  },
  tick(value) { return String(Number(value.toPrecision(6))); },
};

// How the joules were obtained (the records' `energy_source`), in words.
const SOURCE_WORDS = {
  nvml: "measured (NVML)", rapl: "measured (RAPL)", model: "modelled", simulated: "simulated",
};
function sourceLabel(source) {
  if (source === null || source === undefined || source === "") return "not metered";
  return SOURCE_WORDS[source] || source;
}
// {source: joules} -> "simulated", or "modelled 84% · simulated 16%" when mixed.
function sourcesText(joulesBySource) {
  const entries = Object.entries(joulesBySource || {});
  if (!entries.length) return "not metered";
  if (entries.length === 1) return sourceLabel(entries[0][0]);
  const total = entries.reduce((sum, [, j]) => sum + j, 0);
  return entries.sort((a, b) => b[1] - a[1])
    .map(([source, j]) => `${sourceLabel(source)} ${total ? fmt.percent(j / total) : ""}`.trim())
    .join(" · ");
}

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

// The plot area, its grid and y axis: `ticks` are [value, label] in data units, `y` maps
// a data value to its height on the plot.
function frame(title, yTitle, ticks, y) {
  const root = svg("svg", {
    viewBox: `0 0 ${SIZE.w} ${SIZE.h}`, role: "img", "aria-label": title,
  });
  for (const [value, label] of ticks) {
    const at = y(value);
    root.append(
      svg("line", {class: "grid", x1: SIZE.left, x2: SIZE.w - SIZE.right, y1: at, y2: at}),
      svg("text", {x: SIZE.left - 6, y: at + 4, "text-anchor": "end"}, label),
    );
  }
  const plotH = SIZE.h - SIZE.top - SIZE.bottom;
  const midY = SIZE.top + plotH / 2;
  const bottom = SIZE.top + plotH;
  root.append(
    svg("line", {class: "axis", x1: SIZE.left, x2: SIZE.left, y1: SIZE.top, y2: bottom}),
    svg("line", {class: "axis", x1: SIZE.left, x2: SIZE.w - SIZE.right, y1: bottom, y2: bottom}),
    svg("text", {class: "axis-title", x: 14, y: midY, "text-anchor": "middle",
                 transform: `rotate(-90 14 ${midY})`}, yTitle),
  );
  return {root, bottom, plotW: SIZE.w - SIZE.left - SIZE.right};
}

// A linear axis from 0, in a unit scaled so that ticks read 0-999.
function linearScale(max, unit) {
  const {factor, unit: shown} = scaled(max, unit);
  const axis = niceAxis(max * factor);
  const plotH = SIZE.h - SIZE.top - SIZE.bottom;
  return {
    shown, factor,
    ticks: axis.ticks.map((t) => [t / factor, fmt.tick(t)]),
    y: (value) => SIZE.top + plotH - (value * factor / axis.top) * plotH,
    title: (yTitle) => `${yTitle} (${shown})`,
  };
}

// A log axis over whole decades around the positive values: a hundredfold difference
// (the CPU's J/token beside the ASIC's) stays visible. It starts at least a decade under
// the smallest value, so that the shortest bar is never a sliver.
function logScale(values, unit) {
  const positive = values.filter((v) => v > 0);
  const lo = Math.floor(Math.log10(Math.min(...positive)) - 1);
  let hi = Math.ceil(Math.log10(Math.max(...positive)));
  if (hi <= lo + 1) hi = lo + 2;
  const plotH = SIZE.h - SIZE.top - SIZE.bottom;
  const ticks = [];
  for (let k = lo; k <= hi; k++) {
    const text = fmt.significant(Number((10 ** k).toPrecision(1)), 1);
    ticks.push([10 ** k, unit === "$" ? `$${text}` : text]);
  }
  return {
    shown: unit, factor: 1, ticks,
    y: (value) => {
      const v = Math.max(value, 10 ** lo);
      return SIZE.top + plotH - ((Math.log10(v) - lo) / (hi - lo)) * plotH;
    },
    title: (yTitle) => `${yTitle} (${unit}, log scale)`,
  };
}

// One entry per series; `notes` (optional, by name) follow the name, e.g. "simulated".
function legend(figure, names, notes) {
  const list = figure.querySelector("ul.legend");
  list.replaceChildren();
  for (const name of names) {
    const swatch = h("span", {class: "swatch"});
    swatch.style.background = colorFor(name);
    const note = notes && notes[name];
    list.append(h("li", {"data-series": name}, swatch, name,
                  note ? h("span", {class: "note"}, ` · ${note}`) : null));
  }
}

function noData(figure, message) {
  figure.querySelector(".plot").replaceChildren(h("div", {class: "no-data"}, message));
  figure.querySelector("ul.legend").replaceChildren();
}

const charts = {
  // Bars per time bucket, one stacked segment per series: {name, values[]} (null = 0).
  // `labels` name the buckets; `dates`, `keys`, `tickSteps` are optional (see tick labels).
  // `notes` (optional) name each series' note in the legend.
  stackedBars(figure, {labels, dates, keys, tickSteps, series, unit, yTitle, xTitle, empty,
                       notes}) {
    const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
    const max = Math.max(0, ...totals);
    if (!series.length || max === 0) { noData(figure, empty); return; }
    const scale = linearScale(max, unit);
    const {factor, shown, y} = scale;
    const title = figure.querySelector("figcaption").textContent;
    const {root, plotW} = frame(title, scale.title(yTitle), scale.ticks, y);
    const band = plotW / labels.length;
    const base = labels.map(() => 0);
    for (const s of series) {
      const group = svg("g", {class: "series", "data-series": s.name, fill: colorFor(s.name)});
      s.values.forEach((value, i) => {
        if (!value) return;
        const top = base[i] + value;
        const when = dates ? `${dates[i]} ${labels[i]}` : labels[i];
        const tip = `${s.name} · ${when} · ${fmt.significant(value * factor)} ${shown}` +
          (notes && notes[s.name] ? ` (${notes[s.name]})` : "");
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
    legend(figure, series.map((s) => s.name), notes);
  },

  // Two bars per category (input, output): {name, input, output, note?}; null = not
  // measured. `log`: a log scale (per-token figures that differ a hundredfold). Each bar
  // carries its value; a category's `note` (e.g. how its joules were obtained) goes under
  // its name.
  pairedBars(figure, {categories, unit, yTitle, empty, log}) {
    const values = categories.flatMap((c) => [c.input, c.output]).filter((v) => v !== null);
    const max = Math.max(0, ...values);
    if (!values.length || max === 0) { noData(figure, empty); return; }
    const scale = log ? logScale(values, unit) : linearScale(max, unit);
    const {factor, shown, y} = scale;
    const title = figure.querySelector("figcaption").textContent;
    const {root, bottom, plotW} = frame(title, scale.title(yTitle), scale.ticks, y);
    const band = plotW / categories.length;
    const bar = Math.min(56, band * 0.34);
    const show = (v) => (unit === "$" ? fmt.usd(v) : `${fmt.significant(v * factor)} ${shown}`);
    categories.forEach((c, i) => {
      const center = SIZE.left + (i + 0.5) * band;
      const group = svg("g", {class: "series", "data-series": c.name, fill: colorFor(c.name)});
      [["in", c.input, -bar - 2, 0.5], ["out", c.output, 2, 1]].forEach(([side, v, dx, alpha]) => {
        const x = center + dx;
        if (v === null || (log && v <= 0)) {
          group.append(svg("text", {x: x + bar / 2, y: bottom - 4, "text-anchor": "middle"},
                           v === null ? "n/a" : show(v)));
        } else {
          const top = y(v);
          group.append(svg("rect", {x, width: bar, y: top, height: Math.max(0.5, bottom - top),
                                    "fill-opacity": alpha, "data-side": side, "data-value": v},
            svg("title", {}, `${c.name} · ${side}put · ${show(v)}` +
                             (c.note ? ` (${c.note})` : ""))));
          group.append(svg("text", {class: "bar-value", x: x + bar / 2, y: top - 3,
                                    "text-anchor": "middle"}, show(v)));
        }
        group.append(svg("text", {x: x + bar / 2, y: bottom + 13, "text-anchor": "middle"}, side));
      });
      group.append(svg("text", {class: "axis-title", x: center, y: bottom + 29,
                                "text-anchor": "middle"}, c.name));
      if (c.note) {
        group.append(svg("text", {class: "category-note", x: center, y: bottom + 42,
                                  "text-anchor": "middle"}, c.note));
      }
      root.append(group);
    });
    figure.querySelector(".plot").replaceChildren(root);
    const notes = Object.fromEntries(categories.filter((c) => c.note).map((c) => [c.name, c.note]));
    legend(figure, categories.map((c) => c.name), notes);
  },
};
"""
