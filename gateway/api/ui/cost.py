"""The "Cost" view of ``/freshet/ui``: charts and the report table, from the JSON API, and
how true the router's quotes were per backend (from ``/freshet/backends``).

Every joule figure says how its joules were obtained (measured, modelled, simulated: the
records' ``energy_source``, from ``/freshet/cost/breakdown``); per-token figures are drawn
on a log scale; the requests card counts the usage records that are not ok the way the
Traces view does (requests that reached a backend), and says so.
"""

from __future__ import annotations

COST_HTML = """
<div class="toolbar">
  <h2>Cost</h2>
  <label>Range
    <select id="cost-range">
      <option value="1h">last hour</option>
      <option value="6h">last 6 hours</option>
      <option value="24h" selected>last 24 hours</option>
      <option value="7d">last 7 days</option>
      <option value="30d">last 30 days</option>
      <option value="">all time</option>
    </select>
  </label>
  <label>Table by
    <select id="cost-by">
      <option value="backend" selected>backend</option>
      <option value="model">model</option>
      <option value="key">API key</option>
      <option value="group">model group</option>
      <option value="hour">hour</option>
    </select>
  </label>
  <button id="cost-refresh" type="button">Refresh</button>
  <a id="cost-csv" href="/freshet/cost/report?format=csv" download="freshet-cost.csv">Download
    CSV</a>
  <span id="cost-status" class="muted" aria-live="polite"></span>
</div>
<div id="cost-error" class="error" role="alert" hidden></div>
<div id="cost-empty" class="empty" hidden>
  No usage recorded in this range yet. Send a request to <code>/v1/chat/completions</code>,
  then refresh, or choose a longer range.
</div>
<div id="cost-content" hidden>
  <div id="cost-cards" class="cards"></div>
  <div class="charts">
    <figure class="chart" id="chart-cost">
      <figcaption>Cost over time by backend</figcaption>
      <p class="note">Dollars per time bucket: energy, hardware share and list prices.</p>
      <div class="plot"></div><ul class="legend"></ul>
    </figure>
    <figure class="chart" id="chart-energy">
      <figcaption>Energy over time by backend</figcaption>
      <p class="note">Joules per time bucket; the legend says how each backend's were
        obtained (measured, modelled or simulated).</p>
      <div class="plot"></div><ul class="legend"></ul>
    </figure>
    <figure class="chart" id="chart-j-per-token">
      <figcaption>Energy per token by backend</figcaption>
      <p class="note">Joules per input (prompt) and per output (generated) token, on a log
        scale; under each backend, how its joules were obtained.</p>
      <div class="plot"></div><ul class="legend"></ul>
    </figure>
    <figure class="chart" id="chart-usd-per-mtok">
      <figcaption>Price per million tokens by backend</figcaption>
      <p class="note">Dollars per million input and per million output tokens, on a log
        scale.</p>
      <div class="plot"></div><ul class="legend"></ul>
    </figure>
  </div>
  <h3>Report by <span id="cost-by-label">backend</span></h3>
  <div class="table-wrap">
    <table id="cost-table"><thead></thead><tbody></tbody><tfoot></tfoot></table>
  </div>
  <h3>Quotes</h3>
  <p class="note">How true the router's quotes were, per backend, over its recent requests in
    this gateway process: the relative error of the quoted time to first token
    (|actual &minus; quoted| / actual), the correction learned from them (quoted = factor
    &times; the cost model's figure + offset), and the work the backend has committed now.</p>
  <div class="table-wrap">
    <table id="quotes-table"><thead></thead><tbody></tbody></table>
  </div>
</div>
"""

COST_JS = r"""
const COLUMNS = [
  ["requests", "requests", fmt.integer, "usage records: requests that reached a backend"],
  ["errors", "errors", fmt.integer, "usage records with status error"],
  ["prompt_tokens", "tokens in", fmt.integer],
  ["cached_prompt_tokens", "cached in", fmt.integer,
   "prompt tokens read from the backend's prompt cache (part of tokens in)"],
  ["completion_tokens", "tokens out", fmt.integer],
  ["reasoning_tokens", "reasoning", fmt.integer,
   "completion tokens spent reasoning (part of tokens out)"],
  ["joules", "energy (J)", fmt.significant],
  ["j_per_input_token", "J/tok in", fmt.significant],
  ["j_per_output_token", "J/tok out", fmt.significant],
  ["energy_source", "energy source", (v) => v, "how the joules were obtained"],
  ["usd_energy", "$ energy", fmt.usd],
  ["usd_capex", "$ hardware", fmt.usd],
  ["usd_list", "$ list price", fmt.usd],
  ["usd_total", "$ total", fmt.usd],
  ["usd_per_mtok_input", "$/Mtok in", fmt.usd],
  ["usd_per_mtok_output", "$/Mtok out", fmt.usd],
];
const STATUS_WORDS = {
  error: "error", client_disconnected: "client left", shutdown: "shutdown",
};

function card(label, value, ...subs) {
  return h("div", {class: "card"}, h("div", {class: "label"}, label),
           h("div", {class: "value"}, value),
           subs.filter((sub) => sub).map((sub) => h("div", {class: "sub"}, sub)));
}

function cell(row, field, format) {
  const value = row[field] ?? null;
  return h("td", {"data-field": field, "data-value": value === null ? "" : value,
                  class: field === "energy_source" ? "text" : null}, format(value));
}

// From /freshet/cost/breakdown: per group, joules by energy source and records by status.
function summarize(breakdown) {
  const groups = new Map();
  const all = {sources: {}, statuses: {}};
  for (const row of breakdown.rows) {
    if (!groups.has(row.value)) groups.set(row.value, {sources: {}, statuses: {}});
    for (const target of [groups.get(row.value), all]) {
      target.statuses[row.status] = (target.statuses[row.status] || 0) + row.requests;
      if (row.joules !== null) {
        const source = row.energy_source || "";
        target.sources[source] = (target.sources[source] || 0) + row.joules;
      }
    }
  }
  return {groups, all};
}

function withSources(row, summary) {
  const group = summary.groups.get(row.value);
  return {...row, energy_source: sourcesText(group ? group.sources : {})};
}

function drawTable(report, summary) {
  const table = document.getElementById("cost-table");
  const by = report.group_by;
  table.tHead.replaceChildren(h("tr", {}, h("th", {}, by), COLUMNS.map(([field, t, , tip]) =>
    h("th", {title: tip || null, class: field === "energy_source" ? "text" : null}, t))));
  const label = (row) => (row.value === null ? "(none)" : row.value);
  const cells = (row) => COLUMNS.map(([field, , format]) => cell(row, field, format));
  table.tBodies[0].replaceChildren(...report.rows.map((row) => h("tr", {"data-value": label(row)},
    h("td", {"data-field": "value"}, label(row)), cells(withSources(row, summary)))));
  const totals = {...report.totals, energy_source: sourcesText(summary.all.sources)};
  table.tFoot.replaceChildren(h("tr", {},
    h("td", {"data-field": "value"}, "total"), cells(totals)));
  document.getElementById("cost-by-label").textContent = by;
}

// What is not ok, counted as the Traces view counts it (records of requests that reached
// a backend): "2 not ok: error 1 · client left 1".
function notOkText(statuses) {
  const parts = Object.entries(statuses).filter(([status, n]) => status !== "ok" && n)
    .map(([status, n]) => `${STATUS_WORDS[status] || status} ${fmt.integer(n)}`);
  const total = Object.entries(statuses).reduce((sum, [s, n]) => sum + (s === "ok" ? 0 : n), 0);
  const detail = parts.length ? `: ${parts.join(" · ")}` : "";
  return {total, text: `${fmt.integer(total)} not ok${detail}`};
}

function drawCards(totals, summary) {
  const notOk = notOkText(summary.all.statuses);
  const requests = card("Requests", fmt.integer(totals.requests), null);
  const see = notOk.total
    ? h("a", {href: "#traces", id: "cost-not-ok-traces"}, "see traces") : null;
  const line = h("div", {class: "sub", id: "cost-not-ok", "data-not-ok": notOk.total},
                 notOk.text, see ? " · " : null, see);
  requests.append(line, h("div", {class: "sub"},
    "usage records: requests that reached a backend; refusals before one are in Traces"));
  const energy = totals.joules === null ? "not measured" : fmt.joules(totals.joules);
  document.getElementById("cost-cards").replaceChildren(
    requests,
    card("Tokens", fmt.integer(totals.prompt_tokens + totals.completion_tokens),
         `${fmt.integer(totals.prompt_tokens)} in · ${fmt.integer(totals.completion_tokens)} out`),
    card("Energy", energy,
         `${fmt.significant(totals.j_per_output_token)} J per output token`,
         h("span", {id: "cost-energy-source"}, sourcesText(summary.all.sources))),
    card("Cost", fmt.usd(totals.usd_total),
         `${fmt.usd(totals.usd_per_mtok_output)} per million output tokens`),
  );
  const link = document.getElementById("cost-not-ok-traces");
  if (link) link.addEventListener("click", () => views.traces.filter({status: "not_ok"}));
}

const NO_ENERGY = "No energy recorded in this range (no meter or power profile for them).";
// Tick spacing in buckets: round numbers of minutes, hours that divide a day, days.
const TICK_STEPS = {
  minute: [1, 2, 5, 10, 15, 30, 60, 120, 180],
  hour: [1, 2, 3, 6, 12, 24, 48],
  day: [1, 2, 7, 14, 28],
};
const NO_COST = "No cost recorded in this range (no prices configured?).";

function drawCharts(series, byBackend, summary) {
  // Buckets are ISO-8601 UTC: "2025-06-01T14:00:00Z".
  const byDay = series.bucket === "day";
  const labels = series.buckets.map((iso) => (byDay ? iso.slice(0, 10) : iso.slice(11, 16)));
  const dates = byDay ? null : series.buckets.map((iso) => iso.slice(0, 10));
  const keys = series.starts.map((start) => Math.round(start / series.bucket_s));
  const tickSteps = TICK_STEPS[series.bucket];
  const xTitle = `time (UTC, per ${series.bucket})`;
  // Series in the order of the report (most expensive first), as in the other charts.
  const rank = (s) => byBackend.rows.findIndex((r) => r.value === s.backend);
  const sorted = [...series.series].sort((a, b) => rank(a) - rank(b));
  const lines = (field) => sorted.map((s) => ({name: s.backend, values: s[field]}));
  const sources = Object.fromEntries([...summary.groups].map(([backend, g]) =>
    [backend, sourcesText(g.sources)]));
  charts.stackedBars(document.getElementById("chart-cost"), {
    labels, dates, keys, tickSteps, xTitle, series: lines("usd_total"), empty: NO_COST,
    unit: "$", yTitle: `cost per ${series.bucket}`,
  });
  charts.stackedBars(document.getElementById("chart-energy"), {
    labels, dates, keys, tickSteps, xTitle, series: lines("joules"), empty: NO_ENERGY,
    unit: "J", yTitle: `energy per ${series.bucket}`, notes: sources,
  });
  const rows = byBackend.rows.filter((r) => r.value !== null);
  charts.pairedBars(document.getElementById("chart-j-per-token"), {
    unit: "J", yTitle: "energy per token", empty: NO_ENERGY, log: true,
    categories: rows.map((r) => ({name: r.value, input: r.j_per_input_token,
                                  output: r.j_per_output_token, note: sources[r.value]})),
  });
  charts.pairedBars(document.getElementById("chart-usd-per-mtok"), {
    unit: "$", yTitle: "per million tokens", empty: NO_COST, log: true,
    categories: rows.map((r) => ({name: r.value, input: r.usd_per_mtok_input,
                                  output: r.usd_per_mtok_output})),
  });
}

const QUOTE_COLUMNS = [
  ["busy_s", "committed work", (v) => (v === null ? "not reported" : `${fmt.significant(v)} s`),
   "seconds until a request admitted now could start (the backend's own figure)"],
  ["observed", "requests compared", fmt.integer, "requests whose quote met what happened"],
  ["ttft_error_p50", "TTFT error p50", percent],
  ["ttft_error_p90", "TTFT error p90", percent],
  ["ttft_correction", "TTFT correction", (v) => v,
   "quoted = factor x the cost model's figure + offset"],
  ["duration_error_p90", "duration error p90", percent],
];

function percent(value) {
  return value === null || value === undefined ? "\u2013" : `${(value * 100).toFixed(1)} %`;
}

function drawQuotes(backends) {
  const table = document.getElementById("quotes-table");
  table.tHead.replaceChildren(h("tr", {}, h("th", {}, "backend"),
    QUOTE_COLUMNS.map(([field, title, , tip]) => h("th", {title: tip || null}, title))));
  const rows = backends.map((b) => {
    const q = b.quotes || {};
    const row = {
      busy_s: b.busy_s ?? null,
      observed: q.observed ?? 0,
      ttft_error_p50: q.ttft_error_p50 ?? null,
      ttft_error_p90: q.ttft_error_p90 ?? null,
      ttft_correction: q.observed
        ? `\u00d7 ${q.ttft_factor.toFixed(2)} ${q.ttft_offset_s < 0 ? "\u2212" : "+"} ` +
          `${fmt.significant(Math.abs(q.ttft_offset_s))} s`
        : "none yet",
      duration_error_p90: q.duration_error_p90 ?? null,
    };
    return h("tr", {"data-value": b.id}, h("td", {"data-field": "value"}, b.id),
      QUOTE_COLUMNS.map(([field, , format]) => h("td",
        {"data-field": field, "data-value": row[field] === null ? "" : row[field]},
        format(row[field]))));
  });
  table.tBodies[0].replaceChildren(...rows);
}

function costParams() {
  const range = document.getElementById("cost-range").value;
  const params = new URLSearchParams();
  if (range) params.set("since", range);
  return params;
}

async function downloadCsv(event) {
  event.preventDefault();
  const params = costParams();
  const by = document.getElementById("cost-by").value;
  params.set("group_by", by);
  params.set("format", "csv");
  const error = document.getElementById("cost-error");
  try {
    await download("/freshet/cost/report", params, `freshet-cost-by-${by}.csv`);
  } catch (failure) {
    if (failure instanceof AuthRequired) return;
    error.textContent = `Could not download the report: ${failure.message}`;
    error.hidden = false;
  }
}

async function loadCost() {
  const status = document.getElementById("cost-status");
  const error = document.getElementById("cost-error");
  const by = document.getElementById("cost-by").value;
  const params = costParams();
  const withBy = new URLSearchParams(params);
  withBy.set("group_by", by);
  const csv = new URLSearchParams(withBy);
  csv.set("format", "csv");
  document.getElementById("cost-csv").href = `/freshet/cost/report?${csv}`;
  status.textContent = "loading…";
  try {
    const backendParams = new URLSearchParams(params);
    backendParams.set("group_by", "backend");
    const [byBackend, series, table, breakdown, tableBreakdown, backends] = await Promise.all([
      api("/freshet/cost/report", backendParams),
      api("/freshet/cost/series", params),
      by === "backend" ? null : api("/freshet/cost/report", withBy),
      api("/freshet/cost/breakdown", backendParams),
      by === "backend" ? null : api("/freshet/cost/breakdown", withBy),
      api("/freshet/backends", new URLSearchParams()),
    ]);
    error.hidden = true;
    const empty = byBackend.totals.requests === 0;
    document.getElementById("cost-empty").hidden = !empty;
    document.getElementById("cost-content").hidden = empty;
    if (!empty) {
      const summary = summarize(breakdown);
      // Colors follow the backends' order of cost, the same in every chart.
      byBackend.rows.forEach((r) => colorFor(r.value));
      drawCards(byBackend.totals, summary);
      drawCharts(series, byBackend, summary);
      drawTable(table || byBackend, tableBreakdown ? summarize(tableBreakdown) : summary);
      drawQuotes(backends);
    }
    status.textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
    document.body.dataset.costLoaded = "true";
  } catch (failure) {
    if (failure instanceof AuthRequired) return;
    error.textContent = `Could not load the cost report: ${failure.message}`;
    error.hidden = false;
    status.textContent = "";
  }
}

views.cost = {
  load: loadCost,
  init() {
    for (const id of ["cost-range", "cost-by"]) {
      document.getElementById(id).addEventListener("change", loadCost);
    }
    document.getElementById("cost-refresh").addEventListener("click", loadCost);
    document.getElementById("cost-csv").addEventListener("click", downloadCsv);
  },
};
"""
