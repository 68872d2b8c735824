"""The "Keys" view of ``/freshet/ui``: each API key's spend today and its use of the rate
window, beside its budgets and limits, from ``/freshet/keys/usage`` (never a secret)."""

from __future__ import annotations

KEYS_HTML = """
<div class="toolbar">
  <h2>Keys</h2>
  <button id="keys-refresh" type="button">Refresh</button>
  <span id="keys-status" class="muted" aria-live="polite"></span>
</div>
<div id="keys-error" class="error" role="alert" hidden></div>
<div id="keys-empty" class="empty" hidden>
  No API keys yet, and no requests today. Create one with
  <code>freshet keys create --name NAME</code> (optionally <code>--budget-usd</code>,
  <code>--rpm</code>...); under <code>auth: auto</code> the first key turns auth on.
</div>
<div id="keys-content" hidden>
  <p id="keys-note" class="muted"></p>
  <div class="table-wrap">
    <table id="keys-table"><thead><tr>
      <th>key</th><th class="text">state</th><th>requests today</th>
      <th title="usage records whose status is not ok">not ok</th><th>tokens today</th>
      <th class="use">spend today / daily $ budget</th>
      <th class="use">energy today / daily J budget</th><th class="text">energy source</th>
      <th class="use">requests this window / rpm</th>
      <th class="use">tokens this window / tpm</th>
    </tr></thead><tbody></tbody></table>
  </div>
</div>
"""

KEYS_JS = r"""
// "$0.0123 of $1.00 · 1.2%" and a bar, or the figure alone when there is no limit.
function use(field, value, limit, share, format) {
  const text = limit === null ? format(value)
    : `${format(value)} of ${format(limit)} · ${fmt.percent(share)}`;
  const td = h("td", {"data-field": field, "data-value": value ?? "",
                      "data-share": share ?? "", class: "use"}, h("div", {}, text));
  if (limit !== null) {
    const fillBar = h("span");
    fillBar.style.width = `${Math.min(100, (share || 0) * 100)}%`;
    const level = share >= 1 ? "over" : share >= 0.8 ? "warn" : "ok";
    td.append(h("div", {class: `meter ${level}`, role: "meter", "aria-valuemin": "0",
                        "aria-valuemax": String(limit), "aria-valuenow": String(value ?? 0),
                        "aria-label": `${field} used`}, fillBar));
  }
  return td;
}

function keyRow(k) {
  const state = !k.known ? "not in the key store" : k.revoked ? "revoked" : "active";
  const t = k.today;
  const td = (field, value, text, cls) => h("td", {"data-field": field, "data-value": value ?? "",
                                                   class: cls || null}, text);
  return h("tr", {"data-key": k.name},
    td("name", k.name, k.name),
    td("state", state, state, `text state-${state.split(" ")[0]}`),
    td("requests", t.requests, fmt.integer(t.requests)),
    td("not_ok", t.not_ok, fmt.integer(t.not_ok)),
    td("tokens", t.prompt_tokens + t.completion_tokens,
       fmt.integer(t.prompt_tokens + t.completion_tokens)),
    use("usd", t.usd, k.budget_usd, k.budget_usd_used, fmt.usd),
    use("joules", t.joules, k.budget_joules, k.budget_joules_used, fmt.joules),
    td("energy_source", sourcesText(t.energy_sources), sourcesText(t.energy_sources), "text"),
    use("window_requests", k.window.requests, k.rpm, k.rpm_used, fmt.integer),
    use("window_tokens", k.window.tokens, k.tpm, k.tpm_used, fmt.integer),
  );
}

async function loadKeys() {
  const status = document.getElementById("keys-status");
  const error = document.getElementById("keys-error");
  status.textContent = "loading…";
  try {
    const usage = await api("/freshet/keys/usage");
    error.hidden = true;
    const rows = usage.keys.map(keyRow);
    if (usage.unkeyed.requests) {
      rows.push(keyRow({name: "(no key)", known: true, revoked: false, today: usage.unkeyed,
                        window: {requests: 0, tokens: 0}, budget_usd: null,
                        budget_joules: null, rpm: null, tpm: null}));
      rows[rows.length - 1].classList.add("unkeyed");
    }
    document.getElementById("keys-empty").hidden = rows.length > 0;
    document.getElementById("keys-content").hidden = rows.length === 0;
    document.querySelector("#keys-table tbody").replaceChildren(...rows);
    document.getElementById("keys-note").textContent =
      `Today: ${usage.day} (UTC). This window: the current ${fmt.tick(usage.window_s)} s ` +
      "rate-limit window. Counted from the ledger: requests that reached a backend, at what " +
      "they really cost; the limiter also holds the quotes of requests still in flight.";
    status.textContent = `${usage.keys.length} ${usage.keys.length === 1 ? "key" : "keys"}, ` +
      `updated ${new Date().toISOString().slice(11, 19)} UTC`;
    document.body.dataset.keysLoaded = "true";
  } catch (failure) {
    if (failure instanceof AuthRequired) return;
    error.textContent = `Could not load the keys' usage: ${failure.message}`;
    error.hidden = false;
    status.textContent = "";
  }
}

views.keys = {
  load: loadKeys,
  init() {
    document.getElementById("keys-refresh").addEventListener("click", loadKeys);
  },
};
"""

KEYS_CSS = """
#keys-table th.text, #keys-table td.text { text-align: left; }
#keys-table th { white-space: normal; vertical-align: bottom; }
#keys-table th.use, #keys-table td.use { min-width: 9rem; }
#keys-table td[data-field=energy_source] { white-space: normal; }
#keys-table td.state-revoked { color: var(--muted); }
#keys-table td.state-not { color: #b54708; }
#keys-table tr.unkeyed td { color: var(--muted); font-style: italic; }
.meter { height: 0.45rem; background: #eceff4; border-radius: 3px; margin-top: 0.25rem;
  overflow: hidden; }
.meter > span { display: block; height: 100%; background: var(--accent); }
.meter.warn > span { background: #e07b00; }
.meter.over > span { background: var(--bad); }
#keys-note { margin: 0.6rem 0; }
"""
