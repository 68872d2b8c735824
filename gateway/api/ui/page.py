"""The page shell of ``/freshet/ui``: document, header with one nav entry per view, styles.

Everything is inline: the page must work on a machine without internet, and the
Content-Security-Policy sent with it allows nothing from elsewhere.
"""

from __future__ import annotations

CSS = """
:root {
  --fg: #1d2330; --muted: #5d6678; --line: #d9dee7; --bg: #f6f7f9; --panel: #ffffff;
  --accent: #2f6fde; --bad: #b42318;
  font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
  color: var(--fg); background: var(--bg);
}
[hidden] { display: none !important; }
body { margin: 0; }
header.top {
  display: flex; align-items: center; gap: 2rem; padding: 0.6rem 1.5rem;
  background: var(--panel); border-bottom: 1px solid var(--line);
}
header.top h1 { font-size: 1.2rem; margin: 0; letter-spacing: 0.02em; }
header.top h1 small { color: var(--muted); font-weight: normal; font-size: 0.8rem; }
nav a {
  color: var(--muted); text-decoration: none; padding: 0.4rem 0.8rem; border-radius: 6px;
}
nav a[aria-current="page"] { color: var(--accent); background: #e8effc; font-weight: 600; }
main { padding: 1rem 1.5rem 2rem; max-width: 1500px; margin: 0 auto; }
.toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 1rem; }
.toolbar h2 { margin: 0 1rem 0 0; font-size: 1.3rem; }
.toolbar label { color: var(--muted); font-size: 0.9rem; }
select, button { font: inherit; padding: 0.25rem 0.5rem; }
.muted { color: var(--muted); font-size: 0.85rem; }
.error {
  margin: 1rem 0; padding: 0.8rem 1rem; border: 1px solid var(--bad); color: var(--bad);
  background: #fef3f2; border-radius: 6px;
}
.empty {
  margin: 2rem 0; padding: 2rem; text-align: center; color: var(--muted);
  border: 1px dashed var(--line); border-radius: 8px; background: var(--panel);
}
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 0.8rem;
  margin: 1rem 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 0.7rem 1rem; }
.card .label { color: var(--muted); font-size: 0.8rem; }
.card .value { font-size: 1.35rem; font-weight: 600; margin-top: 0.2rem; }
.card .sub { color: var(--muted); font-size: 0.8rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 0.8rem; }
figure.chart {
  margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 0.7rem 1rem;
}
figure.chart figcaption { font-weight: 600; }
figure.chart .note { color: var(--muted); font-size: 0.8rem; margin: 0.1rem 0 0.3rem; }
figure.chart svg { width: 100%; height: auto; display: block; }
figure.chart .no-data { color: var(--muted); padding: 3rem 0; text-align: center; }
svg text { font-size: 11px; fill: var(--muted); }
svg text.axis-title { font-size: 11px; fill: var(--fg); }
svg .grid { stroke: #eceff4; }
svg .axis { stroke: #9aa3b2; }
ul.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 1rem; padding: 0;
  margin: 0.4rem 0 0; font-size: 0.85rem; }
ul.legend .swatch { display: inline-block; width: 0.8rem; height: 0.8rem; border-radius: 2px;
  margin-right: 0.35rem; vertical-align: -1px; }
ul.legend .note { color: var(--muted); }
svg text.bar-value { font-size: 10px; fill: var(--fg); }
svg text.category-note { font-size: 10px; font-style: italic; }
h3 { margin: 1.5rem 0 0.5rem; font-size: 1.05rem; }
.table-wrap { overflow-x: auto; background: var(--panel); border: 1px solid var(--line);
  border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 0.8rem; }
th, td { padding: 0.4rem 0.45rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { text-align: right; color: var(--muted); font-weight: 600; background: #fafbfc; }
th:first-child, td:first-child { text-align: left; }
td { text-align: right; font-variant-numeric: tabular-nums; }
th.text, td.text { text-align: left; }
#cost-table th { white-space: normal; vertical-align: bottom; }
#cost-table td[data-field=energy_source] { white-space: normal; min-width: 8rem; }
tfoot td { font-weight: 600; border-top: 2px solid var(--line); border-bottom: none; }
footer { color: var(--muted); font-size: 0.8rem; padding: 0 1.5rem 1.5rem; text-align: center; }
"""


def document(
    *,
    nav: str,
    sections: str,
    script: str,
    version: str,
    style: str = CSS,
    auth: str = "unknown",
    admin_key: str = "set",
    signin: str = "",
) -> str:
    """The whole page; ``nav``, ``sections``, ``signin`` and ``script`` are trusted, built by
    the views. ``auth`` (on, off or unknown) and ``admin_key`` (set or unset) tell the
    script whether to ask for the admin key before loading anything."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Freshet</title>
<link rel="icon" href="data:,">
<style>{style}</style>
</head>
<body data-auth="{auth}" data-admin-key="{admin_key}">
<header class="top">
  <h1>Freshet <small>{version}</small></h1>
  <nav id="nav" aria-label="Sections">{nav}</nav>
  <div class="session">
    <span id="session-state" class="muted"></span>
    <button id="signout" type="button" hidden>Sign out</button>
  </div>
</header>
<main id="main">
{signin}
{sections}
</main>
<footer>Times are UTC. Energy is what the meters measured, modelled or simulated (each figure
says which); dollars are energy, hardware (capex) and list prices. Data:
<code>/freshet/cost/report</code>, <code>/freshet/cost/series</code>,
<code>/freshet/cost/breakdown</code>, <code>/freshet/keys/usage</code>,
<code>/freshet/traces</code>.</footer>
<script>{script}</script>
</body>
</html>
"""
