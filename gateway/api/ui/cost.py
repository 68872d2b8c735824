"""The "Cost" view of ``/freshet/ui``: charts and the report table, from the JSON API."""

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
  <a id="cost-csv" href="/freshet/cost/report?format=csv" download>Download CSV</a>
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
      <p class="note">Joules per time bucket, as metered (or modelled, or simulated).</p>
      <div class="plot"></div><ul class="legend"></ul>
    </figure>
    <figure class="chart" id="chart-j-per-token">
      <figcaption>Energy per token by backend</figcaption>
      <p class="note">Joules per input (prompt) and per output (generated) token.</p>
      <div class="plot"></div><ul class="legend"></ul>
    </figure>
    <figure class="chart" id="chart-usd-per-mtok">
      <figcaption>Price per million tokens by backend</figcaption>
      <p class="note">Dollars per million input and per million output tokens.</p>
      <div class="plot"></div><ul class="legend"></ul>
    </figure>
  </div>
  <h3>Report by <span id="cost-by-label">backend</span></h3>
  <div class="table-wrap">
    <table id="cost-table"><thead></thead><tbody></tbody><tfoot></tfoot></table>
  </div>
</div>
"""

COST_JS = r"""
const COLUMNS = [
  ["requests", "requests", fmt.integer],
  ["errors", "errors", fmt.integer],
  ["prompt_tokens", "tokens in", fmt.integer],
  ["completion_tokens", "tokens out", fmt.integer],
  ["joules", "energy (J)", fmt.significant],
  ["j_per_input_token", "J/tok in", fmt.significant],
  ["j_per_output_token", "J/tok out", fmt.significant],
  ["usd_energy", "$ energy", fmt.usd],
  ["usd_capex", "$ hardware", fmt.usd],
  ["usd_list", "$ list price", fmt.usd],
  ["usd_total", "$ total", fmt.usd],
  ["usd_per_mtok_input", "$/Mtok in", fmt.usd],
  ["usd_per_mtok_output", "$/Mtok out", fmt.usd],
];

async function getJSON(path, params) {
  const response = await fetch(`${path}?${params}`, {headers: {accept: "application/json"}});
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(body && body.error ? body.error.message : `${response.status} ${path}`);
  }
  return body;
}


function card(label, value, sub) {
  return h("div", {class: "card"}, h("div", {class: "label"}, label),
           h("div", {class: "value"}, value), sub ? h("div", {class: "sub"}, sub) : null);
}

function cell(row, field, format) {
  const value = row[field];
  return h("td", {"data-field": field, "data-value": value === null ? "" : value}, format(value));
}

function drawTable(report) {
  const table = document.getElementById("cost-table");
  const by = report.group_by;
  table.tHead.replaceChildren(h("tr", {}, h("th", {}, by), COLUMNS.map(([, t]) => h("th", {}, t))));
  const label = (row) => (row.value === null ? "(none)" : row.value);
  const cells = (row) => COLUMNS.map(([field, , format]) => cell(row, field, format));
  table.tBodies[0].replaceChildren(...report.rows.map((row) => h("tr", {"data-value": label(row)},
    h("td", {"data-field": "value"}, label(row)), cells(row))));
  table.tFoot.replaceChildren(h("tr", {},
    h("td", {"data-field": "value"}, "total"), cells(report.totals)));
  document.getElementById("cost-by-label").textContent = by;
}

function drawCards(totals) {
  document.getElementById("cost-cards").replaceChildren(
    card("Requests", fmt.integer(totals.requests), `${fmt.integer(totals.errors)} errors`),
    card("Tokens", fmt.integer(totals.prompt_tokens + totals.completion_tokens),
         `${fmt.integer(totals.prompt_tokens)} in · ${fmt.integer(totals.completion_tokens)} out`),
    card("Energy", totals.joules === null ? "not measured" : `${fmt.significant(totals.joules)} J`,
         `${fmt.significant(totals.j_per_output_token)} J per output token`),
    card("Cost", fmt.usd(totals.usd_total),
         `${fmt.usd(totals.usd_per_mtok_output)} per million output tokens`),
  );
}

const NO_ENERGY = "No energy recorded in this range (no meter or power profile for them).";
// Tick spacing in buckets: round numbers of minutes, hours that divide a day, days.
const TICK_STEPS = {
  minute: [1, 2, 5, 10, 15, 30, 60, 120, 180],
  hour: [1, 2, 3, 6, 12, 24, 48],
  day: [1, 2, 7, 14, 28],
};
const NO_COST = "No cost recorded in this range (no prices configured?).";

function drawCharts(series, byBackend) {
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
  charts.stackedBars(document.getElementById("chart-cost"), {
    labels, dates, keys, tickSteps, xTitle, series: lines("usd_total"), empty: NO_COST,
    unit: "$", yTitle: `cost per ${series.bucket}`,
  });
  charts.stackedBars(document.getElementById("chart-energy"), {
    labels, dates, keys, tickSteps, xTitle, series: lines("joules"), empty: NO_ENERGY,
    unit: "J", yTitle: `energy per ${series.bucket}`,
  });
  const rows = byBackend.rows.filter((r) => r.value !== null);
  charts.pairedBars(document.getElementById("chart-j-per-token"), {
    unit: "J", yTitle: "energy per token", empty: NO_ENERGY,
    categories: rows.map((r) => ({name: r.value, input: r.j_per_input_token,
                                  output: r.j_per_output_token})),
  });
  charts.pairedBars(document.getElementById("chart-usd-per-mtok"), {
    unit: "$", yTitle: "price per million tokens", empty: NO_COST,
    categories: rows.map((r) => ({name: r.value, input: r.usd_per_mtok_input,
                                  output: r.usd_per_mtok_output})),
  });
}

async function loadCost() {
  const status = document.getElementById("cost-status");
  const error = document.getElementById("cost-error");
  const range = document.getElementById("cost-range").value;
  const by = document.getElementById("cost-by").value;
  const params = new URLSearchParams();
  if (range) params.set("since", range);
  const withBy = new URLSearchParams(params);
  withBy.set("group_by", by);
  const csv = new URLSearchParams(withBy);
  csv.set("format", "csv");
  document.getElementById("cost-csv").href = `/freshet/cost/report?${csv}`;
  status.textContent = "loading…";
  try {
    const backendParams = new URLSearchParams(params);
    backendParams.set("group_by", "backend");
    const [byBackend, series, table] = await Promise.all([
      getJSON("/freshet/cost/report", backendParams),
      getJSON("/freshet/cost/series", params),
      by === "backend" ? null : getJSON("/freshet/cost/report", withBy),
    ]);
    error.hidden = true;
    const empty = byBackend.totals.requests === 0;
    document.getElementById("cost-empty").hidden = !empty;
    document.getElementById("cost-content").hidden = empty;
    if (!empty) {
      // Colors follow the backends' order of cost, the same in every chart.
      byBackend.rows.forEach((r) => colorFor(r.value));
      drawCards(byBackend.totals);
      drawCharts(series, byBackend);
      drawTable(table || byBackend);
    }
    status.textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
    document.body.dataset.costLoaded = "true";
  } catch (failure) {
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
  },
};
"""
