"""`freshet check`: a config checked as `freshet serve` checks it, run as the CLI.

Each bad config below once started a gateway that failed its requests, or crashed with a
traceback; now `check` and `serve` both refuse it with exit status 2 and a message that
names the file, the line, the key and the reason.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import FRESHET, free_port

GOOD = """\
backends:
  - id: cpu
    type: deterministic
    model: small
    knowledge_cutoff: 2024-06-01
  - id: asic
    type: asic-sim
    knowledge_cutoff: 2023-12-01
    twin: cpu
    adapters: [{{name: news, knowledge_cutoff: 2025-03-01}}]
  - id: paid
    type: openai-compatible
    model: hosted
    url: {url}
    knowledge_cutoff: unknown
    list_price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}
groups:
  auto: [asic, cpu]
prices:
  kwh_usd: 0.2
  timezone: Europe/Paris
  tariffs: [{{start: "17:00", end: "21:00", kwh_usd: 0.3}}]
routing:
  max_attempts: 2
"""

DET = "  - {id: det, type: deterministic, knowledge_cutoff: 2024-06-01}\n"

# (config text, key, line, words the reason must have)
BAD = {
    "time zone": (
        "backends:\n" + DET + "prices:\n  timezone: Mars/Olympus\n",
        "prices.timezone",
        4,
        "unknown time zone 'Mars/Olympus'",
    ),
    "twin": (
        "backends:\n"
        + DET
        + "  - id: asic\n    type: asic-sim\n    knowledge_cutoff: unknown\n    twin: ghost\n",
        "backends[1].twin",
        6,
        "no backend with id 'ghost'",
    ),
    "max_attempts": (
        "backends:\n" + DET + "routing:\n  max_attempts: 0\n",
        "routing.max_attempts",
        4,
        ">= 1",
    ),
    "date": (
        "backends:\n  - id: a\n    type: deterministic\n    knowledge_cutoff: 2025-13-45\n",
        "backends[0].knowledge_cutoff",
        4,
        "2025-13-45",
    ),
    "no cutoff": (
        "backends:\n  - id: a\n    type: deterministic\n",
        "backends[0]",
        2,
        "missing required key 'knowledge_cutoff'",
    ),
    "price": (
        "backends:\n" + DET + "prices:\n  kwh_usd: cheap\n",
        "prices.kwh_usd",
        4,
        "Expected `float`",
    ),
    "yaml": ("backends:\n" + DET + "groups: {auto: [det}\n", None, 3, "invalid YAML"),
    "misspelt": ("backnds:\n" + DET, "backnds", 1, "did you mean `backends`?"),
    "type": (
        "backends:\n  - id: gpu\n    type: vlm\n    knowledge_cutoff: unknown\n",
        "backends[0].type",
        3,
        "did you mean `vllm`?",
    ),
    "required meter": (
        "backends:\n  - id: gpu\n    type: deterministic\n    knowledge_cutoff: unknown\n"
        "    energy: {meter: nvml, gpu_indices: [0], required: true}\n",
        "backends[0].energy.meter",
        5,
        "required: true",
    ),
}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}


def _freshet(*args: str, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = _env()
    if data is not None:
        env["FRESHET_DATA_DIR"] = str(data)
    return subprocess.run([FRESHET, *args], capture_output=True, text=True, env=env, timeout=120)


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "freshet.yaml"
    path.write_text(text)
    return str(path)


def _nvml_works() -> bool:
    try:
        import pynvml  # type: ignore[import-untyped]

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - any failure means no NVML here
        return False
    return True


class _Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"object": "list", "data": []}'
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@contextlib.contextmanager
def _upstream() -> Iterator[str]:
    """A loopback server that answers GET /v1/models, as an OpenAI-compatible one does."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_good_config_shows_the_fleet_it_would_serve(tmp_path: Path) -> None:
    path = _config(tmp_path, GOOD.format(url="http://127.0.0.1:9/v1"))
    out = _freshet("check", "--config", path, data=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"config {path}: ok" in text
    for word in ("cpu", "small", "2024-06-01", "llama-3.1-8b:news", "2025-03-01", "hosted"):
        assert word in text
    assert "unknown" in text  # the paid API's cutoff
    assert "Europe/Paris" in text
    assert "max_attempts 2" in text
    assert not (tmp_path / "ledger.sqlite3").exists()  # nothing started, nothing written

    report = json.loads(_freshet("check", "--config", path, "--json", data=tmp_path).stdout)
    assert report["ok"] is True
    backends = {b["id"]: b for b in report["backends"]}
    assert backends["asic"]["models"][1] == {
        "name": "llama-3.1-8b:news",
        "knowledge_cutoff": "2025-03-01",
        "max_context": 2048,
    }
    assert backends["paid"]["models"][0]["knowledge_cutoff"] is None
    assert backends["paid"]["urls"] == ["http://127.0.0.1:9/v1"]
    assert backends["paid"]["list_price"] == {"input_per_mtok": 0.15, "output_per_mtok": 0.6}
    assert backends["asic"]["energy"] == "simulated"
    assert report["groups"]["auto"]["backends"] == ["asic", "cpu"]
    # The group reaches the card's news adapter too (issue 20): its freshest cutoff.
    assert report["groups"]["auto"]["knowledge_cutoff"] == "2025-03-01"
    assert report["prices"]["kwh_usd"] == 0.2
    assert report["prices"]["tariffs"][0]["kwh_usd"] == 0.3
    assert report["routing"]["max_attempts"] == 2
    assert "probes" not in report


def test_the_embedded_default_checks(tmp_path: Path) -> None:
    out = _freshet("check", data=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "(embedded default): ok" in out.stdout
    assert "smollm2-135m" in out.stdout
    assert "llama-3.1-8b" in out.stdout


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_and_serve_refuse_the_same_config(tmp_path: Path, case: str) -> None:
    if case == "required meter" and _nvml_works():
        pytest.skip("NVML works on this host: the meter is available")
    text, key, line, words = BAD[case]
    path = _config(tmp_path, text)
    where = f"{path}, line {line}" + (f", key {key}" if key else "")
    check = _freshet("check", "--config", path, data=tmp_path)
    assert check.returncode == 2, check.stdout + check.stderr
    assert where in check.stderr
    assert words in check.stderr
    assert "Traceback" not in check.stderr
    assert "<unicode string>" not in check.stderr
    as_json = _freshet("check", "--config", path, "--json", data=tmp_path)
    assert as_json.returncode == 2
    error = json.loads(as_json.stdout)["error"]
    assert (error["file"], error["line"], error["key"]) == (path, line, key)
    assert words in error["reason"]
    serve = _freshet("serve", "--config", path, "--port", str(free_port()), data=tmp_path)
    assert serve.returncode == 2, serve.stderr
    assert where in serve.stderr
    assert words in serve.stderr


def test_backends_refuses_an_unknown_type(tmp_path: Path) -> None:
    path = _config(tmp_path, BAD["type"][0])
    out = _freshet("backends", "--config", path, "--url", "http://127.0.0.1:9", data=tmp_path)
    assert out.returncode == 2
    assert "unknown backend type 'vlm'; did you mean `vllm`?" in out.stderr
    assert "backends[0].type" in out.stderr


def test_an_unavailable_meter_is_modelled_with_a_warning(tmp_path: Path) -> None:
    if _nvml_works():
        pytest.skip("NVML works on this host: the meter is available")
    path = _config(
        tmp_path,
        "backends:\n  - id: gpu\n    type: deterministic\n    knowledge_cutoff: unknown\n"
        "    energy: {meter: nvml, gpu_indices: [0]}   # otherwise modelled\n",
    )
    out = _freshet("check", "--config", path, "--json", data=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["backends"][0]["energy"] == "model"
    assert any("energy meter nvml unavailable" in w for w in report["warnings"])
    text = _freshet("check", "--config", path, data=tmp_path).stdout
    assert "warning: backend gpu: energy meter nvml unavailable" in text


def test_probe_reports_who_answers(tmp_path: Path) -> None:
    closed = free_port()
    with _upstream() as url:
        path = _config(tmp_path, GOOD.format(url=url))
        good = _freshet("check", "--config", path, "--probe", "--json", data=tmp_path)
        assert good.returncode == 0, good.stdout + good.stderr
        probes = json.loads(good.stdout)["probes"]
        assert [(p["backend"], p["url"], p["ok"], p["status"]) for p in probes] == [
            ("paid", url, True, 200)
        ]
        path = _config(
            tmp_path,
            GOOD.format(url=url).replace(
                f"    url: {url}\n", f"    urls: [{url}, http://127.0.0.1:{closed}]\n"
            ),
        )
        bad = _freshet("check", "--config", path, "--probe", data=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"probe paid {url}: answers (HTTP 200" in bad.stdout
    assert f"probe paid http://127.0.0.1:{closed}: DOES NOT ANSWER" in bad.stdout
