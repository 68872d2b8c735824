"""``/schema``'s viewer, served by the gateway itself: no CDN, works offline.

The page is Swagger UI, from the static files of the PyPI package ``openapi-ui-bundles``
(pinned in ``pyproject.toml`` and ``requirements/constraints.txt``). The page
(``/schema``, ``/schema/swagger``) carries the OpenAPI document inline and loads its script,
style sheet and icon from ``/schema/assets/<package version>/...``; nothing it loads leaves
the gateway. Every one of these paths is under ``/schema``, so with auth on they need the
admin key like the document itself (unless ``server.open_schema``): the assets hold no
data, but whatever lets a browser fetch the page (``open_schema``, a proxy that adds the
key) lets it fetch them too, and one rule is simpler to reason about than two. The assets'
URLs change with the package's version, so they are cached for a year (``immutable``).

``/schema/scalar``, the viewer before this one, redirects to ``/schema/swagger``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.metadata import version
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.router import Router
from openapi_ui_bundles import swagger_ui

VERSION: str = version("openapi-ui-bundles")
ASSETS: Mapping[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
"""The files served, by name, with their content types; nothing else in the package is."""
CACHE_CONTROL = "public, max-age=31536000, immutable"


@cache
def _asset(name: str) -> bytes:
    return (swagger_ui.static_path / name).read_bytes()


def _script_json(document: bytes) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>`` can end it early."""
    return document.decode().replace("<", "\\u003c").replace("\u2028", "\\u2028")


class SwaggerOffline(OpenAPIRenderPlugin):
    """Swagger UI with every file served from ``{base}/assets/{VERSION}/``."""

    def __init__(self, base: str = "/schema", path: str | Sequence[str] = "/swagger") -> None:
        self.assets = f"{base}/assets/{VERSION}"
        super().__init__(
            path=path,
            favicon=f'<link rel="icon" type="image/png" href="{self.assets}/favicon-32x32.png">',
        )
        self.base = base

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(openapi_schema.get("info", {}).get("title", "API")))
        spec = _script_json(self.render_json(request, openapi_schema))
        a = self.assets
        page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{self.favicon}
<link rel="stylesheet" href="{a}/swagger-ui.css">
{self.style}
</head>
<body>
<div id="swagger-ui"></div>
<script src="{a}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  spec: {spec},
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
}});
</script>
</body>
</html>
"""
        return page.encode()

    def receive_router(self, router: Router) -> None:
        """Add the assets' route and the old viewer's redirect to the ``/schema`` router."""
        viewer = f"{self.base}{self.paths[0]}"

        @get(f"/assets/{VERSION}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
        def serve_asset(name: FromPath[str]) -> Response[bytes]:
            media_type = ASSETS.get(name)
            if media_type is None:
                raise NotFoundException(f"no asset {name!r}")
            return Response(
                _asset(name),
                media_type=media_type,
                headers={"cache-control": CACHE_CONTROL, "x-content-type-options": "nosniff"},
            )

        @get("/scalar", include_in_schema=False, sync_to_thread=False)
        def old_viewer() -> Redirect:
            return Redirect(viewer, status_code=308)

        router.register(serve_asset)
        router.register(old_viewer)


__all__ = ["ASSETS", "CACHE_CONTROL", "VERSION", "SwaggerOffline"]
