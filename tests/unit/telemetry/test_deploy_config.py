"""deploy/: the compose stack's files parse, and the Grafana dashboard queries only metric
names that `/metrics` exposes (Docker itself cannot run here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.settings import load_settings
from gateway.telemetry.metrics import SPECS, exposed_names

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
OBSERVABILITY = DEPLOY / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "freshet.json"
# A metric selector in these queries is always followed by a label matcher or a range.
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_compose_runs_freshet_with_collector_jaeger_prometheus_grafana() -> None:
    compose = _yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"freshet", "otel-collector", "jaeger", "prometheus", "grafana"} <= set(services)
    freshet = services["freshet"]
    assert freshet["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert (DEPLOY / freshet["build"]["dockerfile"].removeprefix("deploy/")).exists()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source


def test_the_demo_config_is_valid() -> None:
    settings = load_settings(str(DEPLOY / "freshet.yaml"), env={})
    assert {b.id for b in settings.backends} == {"asic", "gpu"}
    assert settings.port == 8400


def test_collector_sends_traces_to_jaeger() -> None:
    config = _yaml(OBSERVABILITY / "otel-collector.yaml")
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert traces["exporters"] == ["otlp/jaeger"]
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    for pipeline in config["service"]["pipelines"].values():
        for name in pipeline["exporters"] + pipeline.get("processors", []):
            assert name in config["exporters"] or name in config["processors"]


def test_prometheus_scrapes_freshet_metrics() -> None:
    config = _yaml(OBSERVABILITY / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "freshet"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["freshet:8400"]


def test_grafana_provisioning() -> None:
    sources = _yaml(OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    uids = {s["uid"]: s["type"] for s in sources["datasources"]}
    assert uids == {"prometheus": "prometheus", "jaeger": "jaeger"}
    providers = _yaml(OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_queries_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _queries(dashboard)
    exposed = exposed_names()
    used: set[str] = set()
    for query in queries:
        names = set(SELECTOR.findall(query)) - {"by", "without"}
        assert names, query
        assert names <= exposed, (query, names - exposed)
        used |= names
    # The four the issue asks for: tokens/s, TTFT, J/token, $ by backend.
    assert {
        "gen_ai_client_token_usage_sum",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "freshet_energy_joules_total",
        "freshet_cost_usd_total",
    } <= used
    labels = {label for spec in SPECS for label in spec.labels} | {"le"}
    for query in queries:
        for group in re.findall(r"by \(([^)]*)\)", query):
            assert {g.strip() for g in group.split(",")} <= labels, query
    assert all(t["datasource"]["uid"] == "prometheus" for p in dashboard["panels"]
               for t in p["targets"])  # fmt: skip
