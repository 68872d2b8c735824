"""What a request demands of the knowledge cutoff, from the most specific source.

Order (DESIGN §5): the body's ``freshness`` extension, then the headers
``X-Freshet-Min-Knowledge-Cutoff`` / ``X-Freshet-Max-Staleness-Days``, then the API key's
default, then the model group's default, else no need.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from gateway import protocol as p
from gateway.errors import InvalidRequest
from gateway.routing import NO_NEED, Need

HEADER_MIN = "x-freshet-min-knowledge-cutoff"
HEADER_STALENESS = "x-freshet-max-staleness-days"


def _from_spec(spec: p.Freshness | None, today: dt.date) -> dt.date | None:
    if spec is None:
        return None
    dates = []
    if spec.min_knowledge_cutoff is not None:
        dates.append(spec.min_knowledge_cutoff)
    if spec.max_staleness_days is not None:
        dates.append(today - dt.timedelta(days=spec.max_staleness_days))
    return max(dates) if dates else None  # both given: the stricter one


def _from_headers(headers: Mapping[str, str], today: dt.date) -> dt.date | None:
    raw_min = headers.get(HEADER_MIN)
    raw_days = headers.get(HEADER_STALENESS)
    dates = []
    if raw_min is not None:
        try:
            dates.append(dt.date.fromisoformat(raw_min.strip()))
        except ValueError:
            raise InvalidRequest(
                f"{HEADER_MIN} must be an ISO date (YYYY-MM-DD), got {raw_min!r}",
                param=HEADER_MIN,
            ) from None
    if raw_days is not None:
        days = int(raw_days.strip()) if raw_days.strip().isdigit() else -1
        if days < 0:
            raise InvalidRequest(
                f"{HEADER_STALENESS} must be a whole number of days >= 0, got {raw_days!r}",
                param=HEADER_STALENESS,
            )
        dates.append(today - dt.timedelta(days=days))
    return max(dates) if dates else None


def resolve_need(
    body: p.Freshness | None,
    headers: Mapping[str, str],
    key_default: p.Freshness | None = None,
    group_default: p.Freshness | None = None,
    today: dt.date | None = None,
) -> Need:
    today = today or dt.datetime.now(dt.UTC).date()
    date = _from_spec(body, today)
    if date is not None:
        return Need(min_cutoff=date, source="body")
    date = _from_headers(headers, today)
    if date is not None:
        return Need(min_cutoff=date, source="header")
    for source, spec in (("key", key_default), ("group", group_default)):
        date = _from_spec(spec, today)
        if date is not None:
            return Need(min_cutoff=date, source=source)
    return NO_NEED
