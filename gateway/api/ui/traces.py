"""The "Traces" view of ``/freshet/ui``: the recent traces kept in memory, filtered by
model, backend, status and key (by ``/freshet/traces``) and searched (in the page), with
their HTTP status; and one trace as a waterfall of its spans with their attributes.

Above the list, what is not ok is counted the way the Cost view counts it: a trace that
reached a backend has a usage record with the same status; one refused before any
backend (401, 404, 422, 429...) has none, and is counted apart.
"""

from __future__ import annotations

TRACES_HTML = """
<div class="toolbar">
  <h2>Traces</h2>
  <button id="traces-refresh" type="button">Refresh</button>
  <span class="muted">The most recent requests, kept in memory by this process
    (<code>FRESHET_TRACES_KEPT</code>); send them to Jaeger or Tempo with
    <code>OTEL_EXPORTER_OTLP_ENDPOINT</code>.</span>
  <span id="traces-status" class="muted" aria-live="polite"></span>
</div>
<form id="traces-filters" class="toolbar filters" role="search">
  <label>Model <select id="traces-model" data-filter="model"><option value="">any</option>
    </select></label>
  <label>Backend <select id="traces-backend" data-filter="backend"><option value="">any</option>
    </select></label>
  <label>Status <select id="traces-status-filter" data-filter="status">
    <option value="">any</option><option value="ok">ok</option>
    <option value="not_ok">not ok</option><option value="error">error</option>
    <option value="client_disconnected">client left</option>
    <option value="shutdown">shutdown</option></select></label>
  <label>Key <select id="traces-key" data-filter="key"><option value="">any</option>
    </select></label>
  <label>Search <input id="traces-search" type="search" placeholder="id, model, error, 429…"
    autocomplete="off"></label>
  <button id="traces-clear" type="button">Clear</button>
</form>
<p id="traces-counts" class="muted"></p>
<div id="traces-error" class="error" role="alert" hidden></div>
<div id="traces-empty" class="empty" hidden>
  No traces yet. Send a request to <code>/v1/chat/completions</code>, then refresh.
</div>
<div id="traces-none" class="empty" hidden>No kept trace matches these filters.</div>
<div id="traces-content" hidden>
  <div class="table-wrap">
    <table id="traces-table" class="pick"><thead></thead><tbody></tbody></table>
  </div>
  <section id="trace-detail" hidden>
    <h3 id="trace-title"></h3>
    <p id="trace-meta" class="muted"></p>
    <div class="table-wrap">
      <table id="waterfall" class="pick waterfall"><thead><tr>
        <th>span</th><th>duration</th><th class="bars">timeline</th>
      </tr></thead><tbody></tbody></table>
    </div>
    <h3 id="span-title"></h3>
    <div class="table-wrap"><table id="span-attributes" class="attributes">
      <tbody></tbody></table></div>
  </section>
</div>
"""

TRACES_JS = r"""
const TEXT_FIELDS = new Set(["time", "model", "backend", "key", "status", "energy_source"]);
const TRACE_COLUMNS = [
  ["time", "time (UTC)", (v) => v.slice(11, 23)],
  ["model", "model", (v) => v ?? "-"],
  ["backend", "backend", (v) => v ?? "-"],
  ["key", "key", (v) => v ?? "-"],
  ["status", "status", (v) => v],
  ["http_status", "HTTP", (v) => (v === null ? "-" : String(v))],
  ["input_tokens", "tokens in", fmt.integer],
  ["output_tokens", "tokens out", fmt.integer],
  ["ttft_ms", "TTFT (ms)", (v) => fmt.significant(v)],
  ["duration_ms", "duration (ms)", (v) => fmt.significant(v)],
  ["joules", "energy (J)", (v) => fmt.significant(v)],
  ["energy_source", "energy source", (v) => (v === null ? "-" : sourceLabel(v))],
  ["usd", "cost", fmt.usd],
];
const FILTERS = ["model", "backend", "status", "key"];
const FILTER_IDS = {model: "traces-model", backend: "traces-backend",
                    status: "traces-status-filter", key: "traces-key"};
const seen = {model: new Set(), backend: new Set(), key: new Set()};
let selectedTrace = null;
let listed = [];

const fetchJSON = (path, params) => api(path, params);

// The values seen so far (and the one chosen) are the choices of each filter.
function fillChoices(rows) {
  for (const row of rows) {
    for (const field of ["model", "backend", "key"]) if (row[field]) seen[field].add(row[field]);
  }
  for (const field of ["model", "backend", "key"]) {
    const select = document.getElementById(FILTER_IDS[field]);
    const chosen = select.value;
    if (chosen) seen[field].add(chosen);
    select.replaceChildren(h("option", {value: ""}, "any"),
      ...[...seen[field]].sort().map((v) => h("option", {value: v}, v)));
    select.value = chosen;
  }
}

function matchesSearch(row, words) {
  if (!words.length) return true;
  const text = [row.trace_id, row.model, row.response_model, row.backend, row.key, row.status,
                row.http_status, row.error_type, row.name]
    .filter((v) => v !== null && v !== undefined).join(" ").toLowerCase();
  return words.every((word) => text.includes(word));
}

// "12 traces · 7 not ok: 3 reached a backend (error 2 · client left 1), 4 refused before
// any backend (404, 422)". The first count is the Cost view's "not ok" for the same requests.
function drawCounts(rows) {
  const notOk = rows.filter((r) => r.status !== "ok");
  const recorded = notOk.filter((r) => r.backend !== null);
  const refused = notOk.filter((r) => r.backend === null);
  const byStatus = {};
  for (const r of recorded) byStatus[r.status] = (byStatus[r.status] || 0) + 1;
  const words = {error: "error", client_disconnected: "client left", shutdown: "shutdown"};
  const parts = Object.entries(byStatus).map(([s, n]) => `${words[s] || s} ${n}`).join(" · ");
  const codes = [...new Set(refused.map((r) => r.http_status).filter((c) => c))].sort();
  const counts = document.getElementById("traces-counts");
  counts.dataset.shown = rows.length;
  counts.dataset.notOk = notOk.length;
  counts.dataset.notOkRecorded = recorded.length;
  counts.dataset.refused = refused.length;
  counts.textContent = `${rows.length} ${rows.length === 1 ? "trace" : "traces"} shown · ` +
    `${notOk.length} not ok: ${recorded.length} reached a backend` +
    (parts ? ` (${parts})` : "") + " and have a usage record, as counted on Cost; " +
    `${refused.length} refused before any backend` +
    (codes.length ? ` (${codes.join(", ")})` : "") + ", with no usage record.";
}

function traceRow(row) {
  const cells = TRACE_COLUMNS.map(([field, , format]) => h("td", {
    "data-field": field, "data-value": row[field] === null ? "" : row[field],
    class: [TEXT_FIELDS.has(field) ? "text" : "", field === "status" ? `status-${row.status}` : ""]
      .join(" ").trim() || null,
  }, format(row[field] ?? null)));
  const tr = h("tr", {"data-trace": row.trace_id, tabindex: "0"}, cells);
  if (row.error_type) tr.title = row.error_type;
  tr.addEventListener("click", () => showTrace(row.trace_id));
  tr.addEventListener("keydown", (e) => { if (e.key === "Enter") showTrace(row.trace_id); });
  return tr;
}

// Spans in tree order (parents first, children by start), each with its depth.
function ordered(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const span of spans) {
    const parent = ids.has(span.parent_span_id) ? span.parent_span_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(span);
  }
  const out = [];
  const walk = (parent, depth) => {
    for (const span of (children.get(parent) || []).sort((a, b) => a.start_ms - b.start_ms)) {
      out.push([span, depth]);
      walk(span.span_id, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

function bar(span, total) {
  const x = (span.start_ms / total) * 1000;
  const w = Math.max(2, (span.duration_ms / total) * 1000);
  const root = svg("svg", {viewBox: "0 0 1000 14", preserveAspectRatio: "none",
                           role: "img", "aria-label": `${span.name} timeline`});
  root.append(svg("rect", {class: `bar kind-${span.kind} status-${span.status}`,
                           x, y: 2, width: Math.min(w, 1000 - x), height: 10}));
  for (const event of span.events) {
    const at = (event.time_ms / total) * 1000;
    root.append(svg("line", {class: "event", x1: at, x2: at, y1: 0, y2: 14},
                    svg("title", {}, event.name)));
  }
  return root;
}

function showSpan(span) {
  for (const tr of document.querySelectorAll("#waterfall tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.span === span.span_id);
  }
  document.getElementById("span-title").textContent =
    `${span.name} — ${span.kind}, ${fmt.significant(span.duration_ms)} ms` +
    (span.status_message ? ` — ${span.status_message}` : "");
  const rows = Object.keys(span.attributes).sort().map((key) => {
    const value = span.attributes[key];
    const shown = Array.isArray(value) ? value.join("\n") : String(value);
    return h("tr", {"data-key": key}, h("th", {}, key), h("td", {}, shown));
  });
  for (const event of span.events) {
    const detail = Object.entries(event.attributes).map(([k, v]) => `${k}=${v}`).join(" ");
    rows.push(h("tr", {"data-key": `event:${event.name}`}, h("th", {}, `event ${event.name}`),
                h("td", {}, `+${fmt.significant(event.time_ms)} ms ${detail}`)));
  }
  document.querySelector("#span-attributes tbody").replaceChildren(...rows);
}

async function showTrace(traceId) {
  selectedTrace = traceId;
  for (const tr of document.querySelectorAll("#traces-table tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.trace === traceId);
  }
  const error = document.getElementById("traces-error");
  try {
    const view = await fetchJSON(`/freshet/traces/${encodeURIComponent(traceId)}`);
    const s = view.summary;
    const total = Math.max(s.duration_ms, 0.001);
    document.getElementById("trace-title").textContent = `Trace ${s.trace_id}`;
    const energy = s.joules === null ? null
      : `${fmt.joules(s.joules)} (${sourceLabel(s.energy_source)})`;
    document.getElementById("trace-meta").textContent = [
      `${s.name}`,
      `${s.status}${s.error_type ? ` (${s.error_type})` : ""}`,
      s.http_status === null ? null : `HTTP ${s.http_status}`,
      s.key ? `key ${s.key}` : null,
      `${fmt.significant(s.duration_ms)} ms`,
      energy,
      s.usd === null ? null : fmt.usd(s.usd),
      `${view.spans.length} ${view.spans.length === 1 ? "span" : "spans"}`,
    ].filter((part) => part !== null).join(" · ");
    const body = document.querySelector("#waterfall tbody");
    const rows = ordered(view.spans).map(([span, depth]) => {
      const name = h("td", {class: "span-name"}, span.name);
      name.style.paddingLeft = `${0.5 + depth * 1.2}rem`;
      const tr = h("tr", {"data-span": span.span_id, "data-depth": depth, tabindex: "0"},
                   name, h("td", {}, `${fmt.significant(span.duration_ms)} ms`),
                   h("td", {class: "bars"}, bar(span, total)));
      tr.addEventListener("click", () => showSpan(span));
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") showSpan(span); });
      return tr;
    });
    body.replaceChildren(...rows);
    document.getElementById("trace-detail").hidden = false;
    if (view.spans.length) showSpan(ordered(view.spans)[0][0]);
    document.body.dataset.traceShown = traceId;
  } catch (failure) {
    if (failure instanceof AuthRequired) return;
    error.textContent = `Could not load trace ${traceId}: ${failure.message}`;
    error.hidden = false;
  }
}

function filterParams() {
  const params = new URLSearchParams({limit: "100"});
  for (const field of FILTERS) {
    const value = document.getElementById(FILTER_IDS[field]).value;
    if (value) params.set(field, value);
  }
  return params;
}

// The rows the search leaves; the first (or the one chosen before) opens.
async function drawList() {
  const words = document.getElementById("traces-search").value.toLowerCase().split(/\s+/)
    .filter((w) => w);
  const rows = listed.filter((row) => matchesSearch(row, words));
  const filtered = words.length > 0 || FILTERS.some((f) =>
    document.getElementById(FILTER_IDS[f]).value);
  document.getElementById("traces-empty").hidden = rows.length > 0 || filtered;
  document.getElementById("traces-none").hidden = rows.length > 0 || !filtered;
  document.getElementById("traces-content").hidden = rows.length === 0;
  const table = document.getElementById("traces-table");
  table.tHead.replaceChildren(h("tr", {}, TRACE_COLUMNS.map(([field, title]) =>
    h("th", {class: TEXT_FIELDS.has(field) ? "text" : null}, title))));
  table.tBodies[0].replaceChildren(...rows.map(traceRow));
  drawCounts(rows);
  const keep = rows.some((r) => r.trace_id === selectedTrace) ? selectedTrace : null;
  if (rows.length) await showTrace(keep || rows[0].trace_id);
  else document.getElementById("trace-detail").hidden = true;
}

async function loadTraces() {
  const status = document.getElementById("traces-status");
  const error = document.getElementById("traces-error");
  status.textContent = "loading…";
  try {
    listed = await fetchJSON("/freshet/traces", filterParams());
    error.hidden = true;
    fillChoices(listed);
    const now = new Date().toISOString().slice(11, 19);
    status.textContent = `${listed.length} traces, updated ${now} UTC`;
    await drawList();
    document.body.dataset.tracesLoaded = "true";
  } catch (failure) {
    if (failure instanceof AuthRequired) return;
    error.textContent = `Could not load the traces: ${failure.message}`;
    error.hidden = false;
    status.textContent = "";
  }
}

views.traces = {
  load: loadTraces,
  // Chosen from elsewhere (the Cost view's "not ok"): these filters, the rest cleared.
  filter(values) {
    for (const field of FILTERS) {
      document.getElementById(FILTER_IDS[field]).value = values[field] || "";
    }
    document.getElementById("traces-search").value = "";
  },
  init() {
    document.getElementById("traces-refresh").addEventListener("click", loadTraces);
    for (const field of FILTERS) {
      document.getElementById(FILTER_IDS[field]).addEventListener("change", loadTraces);
    }
    document.getElementById("traces-search").addEventListener("input", drawList);
    document.getElementById("traces-filters").addEventListener("submit", (e) => e.preventDefault());
    document.getElementById("traces-clear").addEventListener("click", () => {
      views.traces.filter({});
      loadTraces();
    });
  },
};
"""

TRACES_CSS = """
table.pick tbody tr { cursor: pointer; }
table.pick tbody tr:hover { background: #f3f6fc; }
table.pick tbody tr.selected { background: #e8effc; }
#traces-table th.text, #traces-table td.text { text-align: left; }
td.status-error, td.status-shutdown { color: var(--bad); font-weight: 600; }
form.filters { margin: 0.6rem 0 0.2rem; }
form.filters input { font: inherit; padding: 0.2rem 0.4rem; }
#traces-counts { margin: 0.4rem 0 0.8rem; }
td.status-client_disconnected { color: #b54708; }
table.waterfall td.span-name { text-align: left; white-space: nowrap; }
table.waterfall th.bars, table.waterfall td.bars { width: 60%; text-align: left; }
table.waterfall td.bars svg { width: 100%; height: 14px; display: block; }
rect.bar { fill: var(--accent); }
rect.bar.kind-server { fill: #5470c6; }
rect.bar.kind-client { fill: #18a058; }
rect.bar.status-error { fill: var(--bad); }
line.event { stroke: #e07b00; stroke-width: 3; }
table.attributes th { text-align: left; width: 30%; white-space: nowrap; }
table.attributes td { text-align: left; white-space: pre-wrap; word-break: break-all; }
"""
