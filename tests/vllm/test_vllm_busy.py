"""The work a vLLM server has committed (issue #20): from its running and waiting requests
and the mean request time of its end-to-end histogram, for ``BackendStatus.busy_s``."""

from __future__ import annotations

import pytest
from freshet_vllm.metrics import parse_load

METRICS = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="m"} 7.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 12.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 6.0
vllm:e2e_request_latency_seconds_sum{engine="1",model_name="m"} 4.0
vllm:e2e_request_latency_seconds_count{engine="1",model_name="m"} 2.0
"""


def test_the_mean_request_time_is_read_over_engines() -> None:
    load = parse_load(METRICS)
    assert (load.e2e_sum_s, load.e2e_count) == (16.0, 8.0)  # a mean of 2 s


def test_busy_s_is_the_queue_ahead_at_the_mean_request_time() -> None:
    load = parse_load(METRICS)  # 4 running, 3 waiting
    assert load.busy_s(slots=8) == 0.0  # a slot free, nobody would wait
    # 4 slots, all busy: 3 waiting and the new one, 4 at a time, 2 s each.
    assert load.busy_s(slots=4) == pytest.approx((4 + 3 + 1 - 4) * 2.0 / 4)
    assert load.busy_s(slots=1) == pytest.approx((4 + 3 + 1 - 1) * 2.0)


def test_busy_s_is_unknown_before_any_request_finished() -> None:
    text = "\n".join(
        line for line in METRICS.splitlines() if "_sum" not in line and "_count" not in line
    )
    load = parse_load(text)
    assert load.busy_s(slots=8) == 0.0
    assert load.busy_s(slots=2) is None
