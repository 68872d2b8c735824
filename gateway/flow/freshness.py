"""What a request demands of the knowledge cutoff, from the most specific source.

Order (DESIGN §5): the body's ``freshness`` extension, then the headers
``X-Freshet-Min-Knowledge-Cutoff`` / ``X-Freshet-Max-Staleness-Days``, then the API key's
default, then the model group's default, else no need.
"""

from __future__ import annotations

import datetime as dt

from gateway import protocol as p
from gateway.routing import NO_NEED, Need


def staleness_date(today: dt.date, days: int) -> dt.date:
    """``today`` less ``days``, or the first date there is when that is before it."""
    if days >= (today - dt.date.min).days:
        return dt.date.min
    return today - dt.timedelta(days=days)


def _from_spec(spec: p.Freshness | None, today: dt.date) -> dt.date | None:
    if spec is None:
        return None
    dates = []
    if spec.min_knowledge_cutoff is not None:
        dates.append(spec.min_knowledge_cutoff)
    if spec.max_staleness_days is not None:
        dates.append(staleness_date(today, spec.max_staleness_days))
    return max(dates) if dates else None  # both given: the stricter one


def resolve_need(
    body: p.Freshness | None,
    headers: p.Freshness | None,
    key_default: p.Freshness | None = None,
    group_default: p.Freshness | None = None,
    today: dt.date | None = None,
) -> Need:
    if body is None and headers is None and key_default is None and group_default is None:
        return NO_NEED  # the usual request: no need from anywhere, and no clock to read
    today = today or dt.datetime.now(dt.UTC).date()
    date = _from_spec(body, today)
    if date is not None:
        return Need(min_cutoff=date, source="body")
    date = _from_spec(headers, today)
    if date is not None:
        return Need(min_cutoff=date, source="header")
    for source, spec in (("key", key_default), ("group", group_default)):
        date = _from_spec(spec, today)
        if date is not None:
            return Need(min_cutoff=date, source=source)
    return NO_NEED
