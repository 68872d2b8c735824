"""``/schema`` works offline (#18 point 9): the viewer's page and every file it loads are
served by the gateway itself, from a pinned PyPI package, under ``/schema`` (so behind the
admin key when auth is on, like the document)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gateway.api.schema_assets import ASSETS, CACHE_CONTROL, VERSION, _script_json
from tests.security.gateways import gateway

ADMIN = "admin-secret"
AUTH_ON = {"FRESHET_AUTH": "on", "FRESHET_ADMIN_KEY": ADMIN}
BEARER = {"authorization": f"Bearer {ADMIN}"}
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def references(page: str) -> list[str]:
    parser = _References()
    parser.feed(page)
    return parser.urls


def assert_same_origin(page: str) -> list[str]:
    urls = references(page)
    assert len(urls) >= 3, urls  # icon, style sheet, script
    for url in urls:
        assert url.startswith("/schema/"), url  # same origin, and under the admin key's rule
    # Nothing in the page names another host to load from.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    for cdn in ("jsdelivr", "unpkg", "cdnjs", "@latest"):
        assert cdn not in page, cdn
    return urls


@pytest.mark.asyncio
async def test_the_page_and_every_file_it_loads_are_served_here(tmp_path: Path) -> None:
    async with gateway(tmp_path) as client:
        for path in ("/schema", "/schema/swagger"):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert page.headers["content-type"].startswith("text/html"), path
            assert "<title>Freshet</title>" in page.text
            assert '"openapi":"3.' in page.text  # the document itself, inline
            urls = assert_same_origin(page.text)
        assert {url.rsplit("/", 1)[1] for url in urls} == set(ASSETS)
        for url in urls:
            assert url.startswith(f"/schema/assets/{VERSION}/"), url
            asset = await client.get(url)
            assert asset.status_code == 200, url
            suffix = url[url.rindex(".") :]
            assert asset.headers["content-type"].startswith(CONTENT_TYPES[suffix]), url
            assert asset.headers["cache-control"] == CACHE_CONTROL
            assert asset.headers["x-content-type-options"] == "nosniff"
            assert len(asset.content) > 500, url
        script = await client.get(f"/schema/assets/{VERSION}/swagger-ui-bundle.js")
        assert b"SwaggerUIBundle" in script.content

        # Only the listed files: not the package's other files, nothing outside it.
        for name in ("index.html", "favicon-16x16.png", "..%2F__init__.py", "nothing.js"):
            assert (await client.get(f"/schema/assets/{VERSION}/{name}")).status_code == 404
        # The viewer before this one (Scalar, from a CDN) sends its bookmarks here.
        old = await client.get("/schema/scalar", follow_redirects=False)
        assert old.status_code == 308
        assert old.headers["location"] == "/schema/swagger"


@pytest.mark.asyncio
async def test_with_auth_on_the_files_need_the_admin_key_like_the_page(tmp_path: Path) -> None:
    async with gateway(tmp_path, env=AUTH_ON) as client:
        assert (await client.get("/schema")).status_code == 401
        page = await client.get("/schema", headers=BEARER)
        assert page.status_code == 200
        for url in assert_same_origin(page.text):
            assert (await client.get(url)).status_code == 401, url
            assert (await client.get(url, headers=BEARER)).status_code == 200, url


@pytest.mark.asyncio
async def test_open_schema_opens_the_files_too(tmp_path: Path) -> None:
    async with gateway(tmp_path, server={"open_schema": True}, env=AUTH_ON) as client:
        page = await client.get("/schema")
        assert page.status_code == 200
        for url in assert_same_origin(page.text):
            assert (await client.get(url)).status_code == 200, url


def test_the_inline_document_cannot_end_its_script_element() -> None:
    text = _script_json(b'{"description": "</script><script>alert(1)</script>"}')
    assert "</script" not in text
    assert "<" not in text
