"""``GET /freshet/ui``: a self-contained page (inline script and SVG, nothing fetched
from elsewhere) showing the gateway's data. Each :class:`View` is one nav entry and one
section: "Cost", "Traces" (the recent traces kept in memory), "Keys" (each API key's spend
and limits), "Plan" (a ``freshet replay`` report file the user picks, drawn in the
browser). The page is open; with auth on it asks for the admin key before it loads
anything (:mod:`gateway.api.ui.session`).
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

from litestar import Controller, MediaType, Request, Response, get
from msgspec import Struct

from gateway.api.runtime import Runtime
from gateway.api.ui.charts import CHARTS_JS
from gateway.api.ui.cost import COST_HTML, COST_JS
from gateway.api.ui.keys import KEYS_CSS, KEYS_HTML, KEYS_JS
from gateway.api.ui.page import CSS, document
from gateway.api.ui.plan import PLAN_CSS, PLAN_HTML, PLAN_JS
from gateway.api.ui.session import SESSION_CSS, SESSION_HTML, SESSION_JS
from gateway.api.ui.traces import TRACES_CSS, TRACES_HTML, TRACES_JS
from gateway.plugins import core_version


class View(Struct, kw_only=True, frozen=True):
    id: str  # the URL fragment (#cost) and the section's id suffix
    title: str
    html: str  # the section's content
    script: str  # registers views[id] = {load(), init()?}
    css: str = ""  # the view's own styles, after the page's


VIEWS: tuple[View, ...] = (
    View(id="cost", title="Cost", html=COST_HTML, script=COST_JS),
    View(id="traces", title="Traces", html=TRACES_HTML, script=TRACES_JS, css=TRACES_CSS),
    View(id="keys", title="Keys", html=KEYS_HTML, script=KEYS_JS, css=KEYS_CSS),
    View(id="plan", title="Plan", html=PLAN_HTML, script=PLAN_JS, css=PLAN_CSS),
)

# Shows the view named by the URL fragment (default: the first) and loads its data, once
# signed in (or with auth off).
_SHELL_JS = r"""
function show() {
  if (!signedIn()) return;
  const names = Object.keys(views);
  const name = names.includes(location.hash.slice(1)) ? location.hash.slice(1) : names[0];
  for (const section of document.querySelectorAll("section.view")) {
    section.hidden = section.dataset.view !== name;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  views[name].load();
}
for (const view of Object.values(views)) if (view.init) view.init();
window.addEventListener("hashchange", show);
startSession();
"""


def _script(views: tuple[View, ...]) -> str:
    parts = [CHARTS_JS, SESSION_JS, "const views = {};", *(v.script for v in views), _SHELL_JS]
    return '\n(() => {\n"use strict";\n' + "\n".join(parts) + "\n})();\n"


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def page(
    views: tuple[View, ...] = VIEWS, *, auth: str = "unknown", admin_key_set: bool = True
) -> tuple[str, str]:
    """The page and its Content-Security-Policy (only its own inline script and style).
    ``auth``: on, off or unknown (not decided yet); ``admin_key_set``: whether the gateway
    has ``FRESHET_ADMIN_KEY`` (the page never sees the key itself)."""
    nav = "".join(f'<a href="#{v.id}" data-view="{v.id}">{html.escape(v.title)}</a>' for v in views)
    sections = "\n".join(
        f'<section class="view" id="view-{v.id}" data-view="{v.id}" hidden>{v.html}</section>'
        for v in views
    )
    script = _script(views)
    style = CSS + SESSION_CSS + "".join(v.css for v in views)
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_csp_hash(script)}",
            f"style-src {_csp_hash(style)}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    body = document(
        nav=nav,
        sections=sections,
        script=script,
        version=html.escape(core_version()),
        style=style,
        auth=auth if auth in ("on", "off") else "unknown",
        admin_key="set" if admin_key_set else "unset",
        signin=SESSION_HTML,
    )
    return body, policy


class UIController(Controller):
    include_in_schema = False

    @get("/freshet/ui", media_type=MediaType.HTML, summary="Cost charts and recent traces")
    async def ui(self, request: Request[Any, Any, Any]) -> Response[str]:
        runtime: Runtime = request.app.state.runtime
        body, policy = page(
            auth=runtime.auth.state or "unknown",
            admin_key_set=runtime.settings.shared.admin_key is not None,
        )
        return Response(
            body,
            media_type=MediaType.HTML,
            headers={"content-security-policy": policy, "cache-control": "no-store"},
        )
