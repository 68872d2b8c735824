"""Fidelity (issue 20): ``freshet replay`` agrees with ``freshet serve`` on the same slice of
a trace, and a replayed request is recorded as a live one of the same shape is.

The fleet and the harness are benchmarks/fidelity.py's (which prints the table): an
``asic-sim`` card and a ``deterministic`` backend, whose timings are known, behind the real
router (one request in three needs a cutoff only the deterministic backend has).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import msgspec
import openai
import pytest

from benchmarks.fidelity import (
    FLEET,
    TEMPLATE_TOKENS,
    _records,
    compare,
    replayed,
)
from gateway.outcome import UsageRecord
from gateway.protocol import Freshness
from gateway.replay.traces import TraceRequest
from tests.support.server import running_server

pytestmark = pytest.mark.slow

TIMES = {"request_id", "ts", "ttft_s", "duration_s"}
# The router's expectations: live, it quotes on the gateway's estimate of the prompt (which
# no backend has counted yet); a replay knows the trace's count.
QUOTED = {"quoted_ttft_s", "quoted_duration_s", "quoted_joules", "quoted_usd"}


def test_replay_agrees_with_live_serving(tmp_path: Path) -> None:
    """240 requests arriving over 20 s: the same requests per backend (the same routing
    decisions), TTFT and end-to-end p50 within 5 %, joules and dollars within 2 %."""
    (tmp_path / "live").mkdir()
    result = compare(tmp_path, count=240, span_s=20.0)
    assert set(result.live) == {"card", "det"}, result.table()
    assert result.live["card"].requests > 0
    assert result.live["det"].requests > 0
    assert sum(f.requests for f in result.live.values()) == 240, result.table()
    assert result.failures() == [], result.table()


def _words(n: int) -> str:
    return " ".join("word" for _ in range(n))


def _fields(record: UsageRecord) -> dict[str, object]:
    return {k: v for k, v in msgspec.structs.asdict(record).items() if k not in TIMES | QUOTED}


def test_replayed_request_is_recorded_as_a_live_one(tmp_path: Path) -> None:
    """One request to the card and one (needing a newer cutoff) to the deterministic
    backend, live and then replayed with the same shapes at the same moments: every field
    of their records is the same but the times (and ids). The card's joules and dollars
    come from its model and match exactly; the deterministic backend's energy follows the
    wall clock live, so its figures match to a fraction of a per cent."""
    (tmp_path / "live").mkdir()
    with running_server(tmp_path / "live", FLEET) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": _words(120 - TEMPLATE_TOKENS["card"])}],
            max_tokens=8,
        )
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": _words(40 - TEMPLATE_TOKENS["det"])}],
            max_tokens=4,
            extra_body={"freshness": {"min_knowledge_cutoff": "2024-01-01"}},
        )
    live = sorted(asyncio.run(_records(server.data_dir)), key=lambda r: r.ts)
    assert [(r.backend, r.prompt_tokens, r.completion_tokens) for r in live] == [
        ("card", 120, 8),
        ("det", 40, 4),
    ]
    need = Freshness(min_knowledge_cutoff=dt.date(2024, 1, 1))
    requests = [
        TraceRequest(at=live[0].ts, prompt_tokens=120, output_tokens=8, cls="t", model="auto"),
        TraceRequest(
            at=live[1].ts, prompt_tokens=40, output_tokens=4, cls="t", model="auto", freshness=need
        ),
    ]
    replay = sorted(replayed(tmp_path / "replay", requests), key=lambda r: r.ts)
    card_live, det_live = live
    card_replay, det_replay = replay
    assert _fields(card_replay) == _fields(card_live)
    assert card_replay.ttft_s == pytest.approx(card_live.ttft_s, rel=0.05)
    # Where the joules came from: live, the deterministic backend's power is modelled from
    # its profile; in a replay every backend's energy is its simulator's.
    assert (det_live.energy_source, det_replay.energy_source) == ("model", "simulated")
    costs = {"energy_source", "joules", "joules_input", "joules_output", "usd_energy",
             "usd_capex", "usd_input", "usd_output", "usd_total"}  # fmt: skip
    det_l, det_r = _fields(det_live), _fields(det_replay)
    assert {k: v for k, v in det_r.items() if k not in costs} == {
        k: v for k, v in det_l.items() if k not in costs
    }
    for name in costs - {"energy_source"}:
        assert det_r[name] == pytest.approx(det_l[name], rel=0.02, abs=1e-12), name
    for record in (*live, *replay):
        assert record.quoted_usd is not None
        assert record.quoted_ttft_s is not None
    assert det_replay.duration_s == pytest.approx(det_live.duration_s, rel=0.05)
