"""`freshet cost report` against the ledger a real `freshet serve` wrote, running and stopped."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import FRESHET, Server, running_server

CONFIG: dict[str, Any] = {
    "backends": [
        {
            "id": "cheap",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-cheap",
            "list_price": {"input_per_mtok": 0.1, "output_per_mtok": 0.4},
        },
        {
            "id": "pricey",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-pricey",
            "list_price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
        },
    ],
    "groups": {"chat": ["cheap"]},
}
SENT = {"m-cheap": 4, "m-pricey": 3, "chat": 2}


def _send(server: Server, model: str) -> None:
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "count the rivers"}]}
    ).encode()
    request = urllib.request.Request(
        server.url + "/v1/chat/completions",
        data=body,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def _cost(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env["FRESHET_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [FRESHET, "cost", "report", *args], capture_output=True, text=True, env=env, timeout=60
    )


def _check_table(out: str) -> None:
    lines = out.splitlines()
    assert lines[0].startswith("Cost by backend")
    header = lines[2].split()
    assert header[:5] == ["backend", "requests", "errors", "tokens", "in"]
    rows = {line.split()[0]: line.split() for line in lines[4:-2]}
    assert set(rows) == {"cheap", "pricey"}
    assert rows["cheap"][1:3] == ["6", "0"]
    assert rows["pricey"][1:3] == ["3", "0"]
    total = lines[-1].split()
    assert total[:3] == ["total", "9", "0"]
    # $/Mtok in and out are the configured list prices (no energy plugin needed for them).
    assert rows["pricey"][-2:] == ["$3.00", "$15.00"]
    assert lines[3] == lines[-2]  # the rules above the rows and above the totals


def test_cost_report_reads_the_ledger_of_a_running_and_a_stopped_gateway(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(tmp_path, CONFIG) as server:
        for model, n in SENT.items():
            for _ in range(n):
                _send(server, model)
        status, body = server.get("/freshet/cost/report?group_by=backend")
        assert status == 200
        served: dict[str, Any] = json.loads(body)
        assert served["totals"]["requests"] == 9
        running = _cost(data_dir)  # while the gateway holds the ledger open
        assert running.returncode == 0, running.stderr
        _check_table(running.stdout)
    stopped = _cost(data_dir, "--json")
    assert stopped.returncode == 0, stopped.stderr
    report = json.loads(stopped.stdout)
    assert report == served  # the CLI and the API share the report
    _check_table(_cost(data_dir, "--by", "backend", "--since", "1h").stdout)

    by_group = json.loads(_cost(data_dir, "--by", "group", "--json").stdout)
    assert {r["value"]: r["requests"] for r in by_group["rows"]} == {None: 7, "chat": 2}
    hours = list(csv.DictReader(io.StringIO(_cost(data_dir, "--by", "hour", "--csv").stdout)))
    assert sum(int(r["requests"]) for r in hours) == 9
    assert all(r["hour"].endswith(":00:00Z") for r in hours)
    future = _cost(data_dir, "--since", "2999-01-01")
    assert future.returncode == 0
    assert "no usage recorded in this range" in future.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "--since"),
        (("--until", "soon"), "--until"),
        (("--by", "colour"), "--by"),
        (("--json", "--csv"), "one of --json and --csv"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    out = _cost(tmp_path, *args)
    assert out.returncode == 2
    assert message in out.stderr


def test_no_ledger_yet_is_an_empty_report(tmp_path: Path) -> None:
    out = _cost(tmp_path / "nothing-here", "--json")
    assert out.returncode == 0
    assert "no ledger" in out.stderr
    report = json.loads(out.stdout)
    assert (report["rows"], report["totals"]["requests"]) == ([], 0)
    assert not (tmp_path / "nothing-here").exists()  # read-only: creates nothing
