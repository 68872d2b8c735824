"""The auth middleware: the caller's API key on ``/v1/*``, the admin key on ``/freshet/*``.

It runs before the body is read, so an unauthenticated request costs a header lookup and
a hash. The key it finds is kept in the request's scope state for the handlers
(:func:`request_key`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.api.error_response import send_error
from gateway.errors import FreshetError
from gateway.state.keys import ApiKey

if TYPE_CHECKING:
    from gateway.api.runtime import Runtime

OPEN_ADMIN = frozenset({"/freshet/ui"})  # the page is static; its data calls are guarded
STATE_KEY = "api_key"


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


def auth_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            path: str = scope["path"]
            try:
                if path.startswith("/v1/"):
                    runtime: Runtime = scope["litestar_app"].state.runtime
                    key = await runtime.auth.client(_authorization(scope))
                    scope.setdefault("state", {})[STATE_KEY] = key
                elif path.startswith("/freshet/") and path not in OPEN_ADMIN:
                    runtime = scope["litestar_app"].state.runtime
                    runtime.auth.admin(_authorization(scope))
            except FreshetError as exc:
                # Answered here, inside the request-id middleware (Litestar's exception
                # handlers sit outside every middleware).
                await send_error(send, exc, None)  # the id is added outside
                return
        await app(scope, receive, send)

    return middleware


def request_key(request: Request[Any, Any, Any]) -> ApiKey | None:
    key: ApiKey | None = request.scope.get("state", {}).get(STATE_KEY)
    return key
