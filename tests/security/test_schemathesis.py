"""Schema-driven fuzzing of a real gateway process (issue 17): every operation of
``/schema/openapi.json``, with valid and invalid data from schemathesis, within a time
budget; no answer may be a 5xx. docs/security.md has a longer run's summary and the
command for it."""

from __future__ import annotations

import collections
import contextlib
import time
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from tests.security.gateways import CONFIG  # noqa: E402
from tests.support.server import running_server  # noqa: E402

BUDGET_S = 60.0
EXAMPLES = 25  # per operation and mode: some 450 cases, 15 s


@pytest.mark.slow
def test_no_operation_answers_a_5xx(tmp_path: Path) -> None:
    config = {
        **CONFIG,
        "backends": [
            *CONFIG["backends"],
            {
                "id": "old",
                "type": "deterministic",
                "model": "old",
                "knowledge_cutoff": "2023-01-01",
            },
        ],
        "groups": {"auto": ["det", "old"]},
    }
    with running_server(tmp_path, config) as server:
        schema = schemathesis.openapi.from_url(server.url + "/schema/openapi.json")
        statuses: collections.Counter[int] = collections.Counter()
        failures: list[str] = []
        deadline = time.monotonic() + BUDGET_S
        modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 14
        for operation in operations:
            for mode in modes:
                if time.monotonic() > deadline:
                    break

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def call(case: schemathesis.Case) -> None:
                    response = case.call(base_url=server.url, timeout=10)
                    statuses[response.status_code] += 1
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.formatted_path}: {response.text}")

                # Unsatisfiable: no parameters to make invalid (GET /health and the like).
                with contextlib.suppress(Unsatisfiable):
                    call()
        print(f"schemathesis: {sum(statuses.values())} cases, statuses {sorted(statuses.items())}")
        assert not failures, failures[:5]
        assert sum(statuses.values()) >= 200
        assert server.get("/health")[0] == 200
        assert "Traceback" not in server.log_text()
