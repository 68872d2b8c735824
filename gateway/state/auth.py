"""Who may call: API keys on ``/v1/*``, the admin key on ``/freshet/*``.

``auth: auto`` (the default) is *off* only when the gateway is bound to a loopback
address and no API key exists (the embedded default on a laptop), *on* otherwise; ``on``
and ``off`` force it. The state is decided once the key store has been read at start,
and logged; under ``auto`` the first key created while the gateway runs turns it on
within ``keys.refresh_s`` (logged too), and it stays on (revoking every key does not open
the gateway again until a restart). With auth on, ``/v1/*`` needs
``Authorization: Bearer fk-...`` of a key that is not revoked, and the admin routes
(``/freshet/*``, and ``/schema*`` unless ``server.open_schema``) need
``Authorization: Bearer $FRESHET_ADMIN_KEY``; ``/health``, ``/ready``, ``/metrics`` and
the UI page itself (which holds no data) are open.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Literal

from gateway.errors import AuthenticationError, BackendUnavailable
from gateway.settings import SharedSettings
from gateway.state.keys import ApiKey, KeyRing, digest

log = logging.getLogger(__name__)

State = Literal["on", "off"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Auth:
    def __init__(self, settings: SharedSettings, host: str, keys: KeyRing) -> None:
        self._settings = settings
        self._host = host
        self.keys = keys
        self.state: State | None = None  # decided at start
        admin = settings.admin_key
        self._admin_digest = digest(admin).encode() if admin else None
        keys.on_change(self._keys_changed)

    def _keys_changed(self) -> None:
        if self.state == "off" and self._settings.auth == "auto" and len(self.keys) > 0:
            self.state = "on"
            self._log_on(f"auto: an API key was created ({len(self.keys)} now)")

    def decide(self) -> State:
        mode = self._settings.auth
        n = len(self.keys)
        if mode == "auto" and not self.keys.loaded:
            # Keys unknown (the shared store did not answer): never open up by accident.
            state: State = "on"
            why = "auto: the key store could not be read at start"
        elif mode == "auto":
            state = "off" if is_loopback(self._host) and n == 0 else "on"
            why = (
                f"auto: bound to {self._host} with no API keys"
                if state == "off"
                else f"auto: {n} API key(s), bound to {self._host}"
            )
        else:
            state, why = mode, "configured"
        self.state = state
        if state == "off":
            log.warning("auth: OFF (%s); anyone who can reach the port may use it", why)
        else:
            self._log_on(why)
        return state

    def _log_on(self, why: str) -> None:
        admin = "set" if self._admin_digest else "NOT SET: admin routes are closed"
        log.warning("auth: ON (%s); /v1 needs an API key; FRESHET_ADMIN_KEY %s", why, admin)

    def _decided(self) -> State:
        if self.state is None:
            raise BackendUnavailable("the gateway is starting; retry shortly")
        return self.state

    async def client(self, authorization: str | None) -> ApiKey | None:
        """The caller's key (``None`` when auth is off and none was sent)."""
        state = self._decided()
        token = bearer(authorization)
        if token is None:
            if state == "off":
                return None
            raise AuthenticationError(
                "missing API key: send 'Authorization: Bearer <key>' (create one with "
                "`freshet keys create --name NAME`)"
            )
        key = await self.keys.lookup(digest(token))
        if key is None or key.revoked:
            if state == "off":
                return None  # a stray header on an open gateway is not an error
            raise AuthenticationError(
                "invalid API key" if key is None else f"API key {key.name!r} was revoked"
            )
        return key

    def admin(self, authorization: str | None) -> None:
        if self._decided() == "off":
            return
        token = bearer(authorization)
        if self._admin_digest is None:
            raise AuthenticationError(
                "admin routes are closed: set FRESHET_ADMIN_KEY on the gateway to open them"
            )
        if token is None or not hmac.compare_digest(digest(token).encode(), self._admin_digest):
            raise AuthenticationError("this route needs the admin key (FRESHET_ADMIN_KEY)")
