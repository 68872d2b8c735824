"""The "Plan" view of ``/freshet/ui``: a ``freshet replay`` report, read from a file the user
picks (the ``--json`` output, or the ``--html`` report, whose JSON rides in its data
block), drawn in the browser: the fleets' charts and tables, and a horizon's months and
verdicts. The file never leaves the browser: nothing is uploaded, no server path is read,
and the view shows only once signed in, as every other view.
"""

from __future__ import annotations

PLAN_HTML = """
<div class="toolbar">
  <h2>Plan</h2>
  <label for="plan-file">Replay report</label>
  <input id="plan-file" type="file" accept=".json,.html,application/json,text/html">
  <span id="plan-status" class="muted" aria-live="polite"></span>
</div>
<div id="plan-error" class="error" role="alert" hidden></div>
<div id="plan-empty" class="empty">
  Pick a report of <code>freshet replay</code>: the JSON of
  <code>freshet replay --trace T --config FLEET... --json &gt; plan.json</code>, or the
  HTML of <code>--html plan.html</code>. It is read here, in the browser; nothing is sent.
</div>
<div id="plan-content" hidden>
  <p id="plan-summary"></p>
  <div id="plan-horizon"></div>
  <h3 id="plan-fleets-title">Fleets</h3>
  <div id="plan-charts" class="plan-charts"></div>
  <div class="table-wrap"><table id="plan-fleets"></table></div>
  <div id="plan-backends"></div>
</div>
"""

PLAN_JS = r"""
function planFigure(id, title) {
  return h("figure", {class: "chart", id},
           h("figcaption", {}, title), h("div", {class: "plot"}), h("ul", {class: "legend"}));
}

function planTable(id, headers, rows) {
  const table = h("table", {id});
  table.append(h("thead", {}, h("tr", {}, ...headers.map((name) => h("th", {}, name)))));
  table.append(h("tbody", {}, ...rows.map((row) =>
    h("tr", {}, ...row.map((cell) => h("td", {}, cell === null || cell === undefined
                                                  ? "-" : String(cell)))))));
  return table;
}

const seconds = (v) => (v === null || v === undefined ? "-" : `${fmt.significant(v)} s`);

// Lines over the months of a horizon, one per fleet: {name, values[]} (null: no point).
function planLines(figure, {labels, series, unit, yTitle, hi, rule}) {
  const values = series.flatMap((s) => s.values).filter((v) => v !== null);
  const max = hi ?? Math.max(0, ...values);
  if (!values.length || max <= 0) { noData(figure, "nothing to draw"); return; }
  const scale = linearScale(max, unit);
  const {root, bottom, plotW} = frame(figure.querySelector("figcaption").textContent,
                                      scale.title(yTitle), scale.ticks, scale.y);
  const x = (i) => SIZE.left + (labels.length > 1 ? (i / (labels.length - 1)) * plotW : plotW / 2);
  if (rule !== undefined) {
    root.append(svg("line", {class: "grid rule", x1: SIZE.left, x2: SIZE.left + plotW,
                             y1: scale.y(rule), y2: scale.y(rule)}));
  }
  for (const s of series) {
    const points = s.values.map((v, i) => (v === null ? null : `${x(i)},${scale.y(v)}`))
      .filter((p) => p !== null);
    root.append(svg("polyline", {class: "series", "data-series": s.name, fill: "none",
                                 stroke: colorFor(s.name), "stroke-width": 2,
                                 points: points.join(" ")},
                    svg("title", {}, s.name)));
  }
  const every = Math.max(1, Math.ceil(labels.length / 12));
  labels.forEach((label, i) => {
    if (i % every) return;
    root.append(svg("text", {x: x(i), y: bottom + 14, "text-anchor": "middle"}, label));
  });
  root.append(svg("text", {class: "axis-title", x: SIZE.left + plotW / 2, y: SIZE.h - 8,
                           "text-anchor": "middle"}, "month"));
  figure.querySelector(".plot").replaceChildren(root);
  legend(figure, series.map((s) => s.name));
}

function planVerdicts(report) {
  const base = report.baseline;
  return h("ul", {id: "plan-verdicts"}, ...report.horizon.map((f) => {
    const bits = base === f.fleet ? ["the baseline"] : [];
    if (f.upfront_usd) bits.push(`${fmt.usd(f.upfront_usd)} up front`);
    if (base && f.fleet !== base) {
      const month = f.break_even_month;
      bits.push(month === null ? `does not break even against ${base} in the horizon`
        : month === 0 && f.dearer_again_month !== null
          ? `dearer than ${base} from month ${f.dearer_again_month}`
        : month === 0 ? `no dearer than ${base} from the start`
        : `breaks even against ${base} in month ${month} (${f.break_even_date})`);
    }
    if (f.months.length && f.months[0].etched_share !== null) {
      const below = f.etched_below_half_month;
      bits.push(below ? `etched share below 50 % from month ${below}`
                      : "etched share stays at or above 50 %");
    }
    return h("li", {"data-fleet": f.fleet}, h("b", {}, f.fleet), `: ${bits.join("; ")}`);
  }));
}

function planHorizon(report) {
  const box = document.getElementById("plan-horizon");
  box.replaceChildren();
  if (!report.horizon.length) return;
  const months = report.horizon[0].months.map((m) => String(m.month));
  box.append(h("h3", {}, `Horizon: ${report.horizon_months} months from ${report.start}`));
  const schedules = [...report.refresh.map((r) => `refresh ${r}`),
                     ...report.adapters.map((a) => `adapter ${a}`)];
  if (schedules.length) box.append(h("p", {class: "muted"}, `Schedules: ${schedules.join(", ")}`));
  box.append(planVerdicts(report));
  const cash = planFigure("plan-cash", "Cumulative cost, purchases up front");
  const share = planFigure("plan-etched", "Etched card's share of requests, by month");
  box.append(h("div", {class: "plan-charts"}, cash, share));
  planLines(cash, {labels: ["0", ...months], unit: "$", yTitle: "USD",
                   series: report.horizon.map((f) => ({name: f.fleet,
                     values: [f.upfront_usd, ...f.months.map((m) => m.usd_cash)]}))});
  const etched = report.horizon.filter((f) => f.months[0].etched_share !== null);
  planLines(share, {labels: months, unit: "%", yTitle: "share", hi: 100, rule: 50,
                    series: etched.map((f) => ({name: f.fleet,
                      values: f.months.map((m) => (m.etched_share === null ? null
                                                   : m.etched_share * 100))}))});
  for (const f of report.horizon) {
    box.append(h("h4", {}, f.fleet), h("div", {class: "table-wrap"}, planTable(
      `plan-months-${f.fleet}`,
      ["month", "date", "requests", "served", "refused", "etched", "TTFT p95", "hardware",
       "energy", "list", "total", "cash, cumulative"],
      f.months.map((m) => [m.month, m.date, fmt.integer(m.requests), fmt.integer(m.served),
                           fmt.integer(m.refused), fmt.percent(m.etched_share),
                           seconds(m.ttft_p95_s), fmt.usd(m.usd_hardware),
                           fmt.usd(m.usd_energy), fmt.usd(m.usd_list), fmt.usd(m.usd_total),
                           fmt.usd(m.usd_cash)]))));
  }
}

function planFleets(report) {
  const fleets = report.fleets;
  const names = fleets.map((f) => f.fleet);
  document.getElementById("plan-fleets-title").textContent =
    report.horizon.length ? "Fleets (month 1)" : "Fleets";
  const dollars = planFigure("plan-usd", "Dollars per million tokens");
  const ttft = planFigure("plan-ttft", "Time to first token, p95");
  const shares = planFigure("plan-shares", "Share of requests by backend");
  document.getElementById("plan-charts").replaceChildren(dollars, ttft, shares);
  charts.stackedBars(dollars, {labels: names, unit: "$", yTitle: "per Mtok", xTitle: "fleet",
    empty: "no tokens served", series: [{name: "$ per Mtok",
                                         values: fleets.map((f) => f.usd_per_mtok)}]});
  charts.stackedBars(ttft, {labels: names, unit: "s", yTitle: "TTFT p95", xTitle: "fleet",
    empty: "nothing served",
    series: [{name: "TTFT p95", values: fleets.map((f) => f.ttft_s.p95)}]});
  const backends = [...new Set(fleets.flatMap((f) => f.backends.map((b) => b.id)))];
  const refused = fleets.map((f) => (f.requests
    ? (100 * Object.values(f.refused).reduce((a, b) => a + b, 0)) / f.requests : 0));
  charts.stackedBars(shares, {labels: names, unit: "%", yTitle: "requests", xTitle: "fleet",
    empty: "no requests", series: [
      ...backends.map((id) => ({name: id, values: fleets.map((f) => {
        const b = f.backends.find((row) => row.id === id);
        return b ? b.share * 100 : null;
      })})),
      {name: "refused", values: refused},
    ]});
  document.getElementById("plan-fleets").replaceWith(planTable("plan-fleets",
    ["fleet", "requests", "served", "refused", "fallbacks", "TTFT p50", "TTFT p95", "e2e p95",
     "J / output token", "energy", "hardware", "list", "total", "$ / Mtok", "etched"],
    fleets.map((f) => [f.fleet, fmt.integer(f.requests), fmt.integer(f.served),
      fmt.integer(Object.values(f.refused).reduce((a, b) => a + b, 0)),
      fmt.integer(f.fallbacks), seconds(f.ttft_s.p50), seconds(f.ttft_s.p95),
      seconds(f.e2e_s.p95), fmt.joules(f.j_per_output_token), fmt.usd(f.usd_energy),
      fmt.usd(f.usd_capex), fmt.usd(f.usd_list), fmt.usd(f.usd_total),
      fmt.usd(f.usd_per_mtok), fmt.percent(f.etched_share)])));
  document.getElementById("plan-backends").replaceChildren(...fleets.flatMap((f) => [
    h("h4", {}, f.fleet, h("span", {class: "muted"}, f.config ? ` · ${f.config}` : "")),
    h("div", {class: "table-wrap"}, planTable(`plan-backends-${f.fleet}`,
      ["backend", "type", "requests", "share", "utilisation", "TTFT p50", "TTFT p95",
       "e2e p95", "joules", "idle joules", "J / output token", "total", "$ / Mtok"],
      f.backends.map((b) => [b.id, b.type, fmt.integer(b.requests), fmt.percent(b.share),
        fmt.percent(b.utilisation), seconds(b.ttft_p50_s), seconds(b.ttft_p95_s),
        seconds(b.e2e_p95_s), fmt.joules(b.joules), fmt.joules(b.idle_joules),
        fmt.joules(b.j_per_output_token), fmt.usd(b.usd_total), fmt.usd(b.usd_per_mtok)]))),
  ]));
}

// The report's JSON: the file itself, or the data block of an HTML report (found by its
// tag, not parsed as HTML: the report's own style would break this page's policy; "</" is
// written "<\/" inside the block, so the first end tag is its end).
const REPORT_BLOCK = /<script type="application\/json" id="report">([\s\S]*?)<\/script>/;
function planParse(text) {
  let data = text;
  if (text.trimStart().startsWith("<")) {
    const block = REPORT_BLOCK.exec(text);
    if (!block) throw new Error("this HTML file is not a freshet replay report (no data in it)");
    data = block[1];
  }
  let report;
  try { report = JSON.parse(data); } catch (e) { throw new Error(`not JSON: ${e.message}`); }
  if (!report || typeof report !== "object" || !report.trace || !Array.isArray(report.fleets)) {
    throw new Error("not a freshet replay report (it has no trace and fleets)");
  }
  report.horizon = report.horizon || [];
  report.refresh = report.refresh || [];
  report.adapters = report.adapters || [];
  return report;
}

async function loadPlanFile() {
  const input = document.getElementById("plan-file");
  const status = document.getElementById("plan-status");
  const error = document.getElementById("plan-error");
  const file = input.files && input.files[0];
  if (!file) return;
  try {
    const report = planParse(await file.text());
    const t = report.trace;
    const needs = Object.entries(t.freshness || {}).map(([k, v]) => `${k}: ${v}`).join("; ");
    document.getElementById("plan-summary").textContent =
      `${t.sources.join(", ")}: ${fmt.integer(t.requests)} requests over ` +
      `${fmt.significant(t.window_s / 60)} min, rate x${t.rate}; freshness: ${needs || "none"}.`;
    planHorizon(report);
    planFleets(report);
    error.hidden = true;
    document.getElementById("plan-empty").hidden = true;
    document.getElementById("plan-content").hidden = false;
    status.textContent = `${file.name}: ${report.fleets.length} ` +
      `${report.fleets.length === 1 ? "fleet" : "fleets"}`;
    document.body.dataset.planLoaded = "true";
  } catch (failure) {
    error.textContent = `Could not read ${file.name}: ${failure.message}`;
    error.hidden = false;
    status.textContent = "";
  }
}

views.plan = {
  load() {},  // nothing to fetch: the report is a file the user picks
  init() {
    document.getElementById("plan-file").addEventListener("change", loadPlanFile);
  },
};
"""

PLAN_CSS = """
.plan-charts { display: flex; flex-wrap: wrap; gap: 1rem; }
.plan-charts figure.chart { flex: 1 1 30rem; max-width: 42rem; }
#view-plan .toolbar label { font-weight: 600; }
#plan-verdicts li { margin: 0.2rem 0; }
#view-plan line.rule { stroke-dasharray: 4 3; }
#view-plan h4 { margin: 1.2rem 0 0.4rem; }
"""
