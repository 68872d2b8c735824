"""``GET /freshet/keys/usage``: each API key's spend today and use of its rate window,
beside its budgets and limits, from the ledger. Never a key's secret or its digest.

What it counts: the usage records of requests that reached a backend (what each really
cost, settled), today (UTC, from midnight) and in the current rate-limit window
(``limits.window_s``, aligned to the epoch like the limiter's). The limiter also holds
the quotes of requests still in flight, and counts requests refused before a backend
(429s, 422s) against the rate window; those are not records, so they are not here.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from msgspec import Struct, field

from gateway.api.runtime import Runtime
from gateway.state.keys import ApiKey
from gateway.state.limits import DAY_S


class KeySpend(Struct, kw_only=True):
    """Usage records of one key (or of no key) over a period."""

    requests: int = 0
    not_ok: int = 0  # records whose status is not ok (error, client_disconnected, shutdown)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    joules: float | None = None  # None: no record of the period was metered
    energy_sources: dict[str, float] = field(default_factory=dict)
    """Joules by how they were obtained (nvml, rapl, model, simulated...)."""


class KeyWindow(Struct, kw_only=True):
    requests: int = 0
    tokens: int = 0  # prompt + completion of the records in the window


class KeyUsage(Struct, kw_only=True):
    name: str
    known: bool  # False: records name a key the key store no longer has
    created: str | None  # ISO 8601 UTC
    revoked: bool
    budget_usd: float | None  # per UTC day
    budget_joules: float | None  # per UTC day
    rpm: int | None  # requests per window
    tpm: int | None  # tokens per window
    today: KeySpend
    window: KeyWindow
    # Share of each budget or limit used (1.0 = all of it); None where the key has none.
    budget_usd_used: float | None
    budget_joules_used: float | None
    rpm_used: float | None
    tpm_used: float | None


class KeysUsage(Struct, kw_only=True):
    day: str  # the UTC day counted, YYYY-MM-DD
    day_start: float  # unix seconds
    window_s: float
    window_start: float  # unix seconds
    keys: list[KeyUsage]  # the dearest today first, then by name
    unkeyed: KeySpend  # today's records made without a key (auth off)


def _share(used: float | None, limit: float | None) -> float | None:
    if limit is None or not limit:
        return None
    return (used or 0.0) / limit


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


_DAY_SQL = (
    "SELECT \"key\", status != 'ok', energy_source, COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
    "COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(usd_total), 0), SUM(joules) "
    "FROM usage WHERE ts >= ? GROUP BY \"key\", status != 'ok', energy_source"
)
_WINDOW_SQL = (
    'SELECT "key", COUNT(*), COALESCE(SUM(prompt_tokens + completion_tokens), 0) '
    'FROM usage WHERE ts >= ? GROUP BY "key"'
)


def _add(spend: KeySpend, row: tuple[Any, ...]) -> None:
    _, not_ok, source, requests, prompt, completion, usd, joules = row
    spend.requests += int(requests)
    spend.not_ok += int(requests) if not_ok else 0
    spend.prompt_tokens += int(prompt)
    spend.completion_tokens += int(completion)
    spend.usd += float(usd)
    if joules is not None:
        spend.joules = (spend.joules or 0.0) + float(joules)
        name = str(source) if source else "unknown"
        spend.energy_sources[name] = spend.energy_sources.get(name, 0.0) + float(joules)


def _usage(key: ApiKey | None, name: str, spend: KeySpend, window: KeyWindow) -> KeyUsage:
    return KeyUsage(
        name=name,
        known=key is not None,
        created=_iso(key.created) if key is not None else None,
        revoked=key.revoked if key is not None else False,
        budget_usd=key.budget_usd if key is not None else None,
        budget_joules=key.budget_joules if key is not None else None,
        rpm=key.rpm if key is not None else None,
        tpm=key.tpm if key is not None else None,
        today=spend,
        window=window,
        budget_usd_used=_share(spend.usd, key.budget_usd) if key is not None else None,
        budget_joules_used=_share(spend.joules, key.budget_joules) if key is not None else None,
        rpm_used=_share(window.requests, key.rpm) if key is not None else None,
        tpm_used=_share(window.tokens, key.tpm) if key is not None else None,
    )


async def keys_usage(runtime: Runtime, now: float | None = None) -> KeysUsage:
    now = time.time() if now is None else now
    window_s = runtime.settings.shared.limits.window_s
    day_start = (now // DAY_S) * DAY_S
    window_start = (now // window_s) * window_s
    keys = {k.name: k for k in await runtime.auth.keys.store.all()}
    await runtime.ledger.flush()  # so a client sees the requests it has just made
    spends: dict[str | None, KeySpend] = {}
    for row in await runtime.ledger.rows(_DAY_SQL, [day_start]):
        _add(spends.setdefault(row[0], KeySpend()), row)
    windows: dict[str | None, KeyWindow] = {
        row[0]: KeyWindow(requests=int(row[1]), tokens=int(row[2]))
        for row in await runtime.ledger.rows(_WINDOW_SQL, [window_start])
    }
    names = set(keys) | {name for name in spends if name is not None}
    out = [
        _usage(keys.get(name), name, spends.get(name, KeySpend()), windows.get(name, KeyWindow()))
        for name in names
    ]
    out.sort(key=lambda u: (-u.today.usd, u.name))
    return KeysUsage(
        day=_iso(day_start)[:10],
        day_start=day_start,
        window_s=window_s,
        window_start=window_start,
        keys=out,
        unkeyed=spends.get(None, KeySpend()),
    )
