"""deploy/kubernetes/: every manifest is valid against the Kubernetes API schemas, the
pieces refer to each other correctly, and the ConfigMap's fleet is one Freshet serves.

Offline: the schemas are those that the PyPI package ``kubernetes-validate`` ships (strict
variants, so a misspelt field is an error). The ServiceMonitor is a custom resource of the
Prometheus Operator, for which no schema ships: it is checked against :data:`SERVICE_MONITOR`,
the part of the operator's ``monitoring.coreos.com/v1`` CRD that this manifest uses, with the
real ObjectMeta and LabelSelector definitions.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
# A version kubernetes-validate ships schemas for (it ships 1.25 on); the oldest in support.
KUBERNETES_VERSION = "1.30"
DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
# The image's user (deploy/Dockerfile: USER 10001:10001).
IMAGE_UID = 10001

Manifest = dict[str, Any]


def _documents() -> Iterator[tuple[str, Manifest]]:
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                yield path.name, doc


DOCUMENTS = list(_documents())


def _id(item: tuple[str, Manifest]) -> str:
    name, doc = item
    return f"{name}:{doc['kind']}/{doc['metadata']['name']}"


def _one(kind: str, name: str) -> Manifest:
    (found,) = [d for _, d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _container(deployment: Manifest, name: str) -> Manifest:
    (found,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    ]
    return found


GATEWAY = _one("Deployment", "freshet")
FRESHET = _container(GATEWAY, "freshet")
REDIS = _one("Deployment", "freshet-redis")


def _env(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- schemas -----------------------------------------------------------------------------

# The fields of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) that a
# manifest here may use, as its CRD declares them; anything else is refused, so extend
# this when the manifest uses more.
DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
    r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
SERVICE_MONITOR: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "$ref": f"{DEFINITIONS_ID}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        },
        "spec": {
            "type": "object",
            "required": ["endpoints", "selector"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "$ref": f"{DEFINITIONS_ID}"
                    "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["integer", "string"]},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


def _definitions() -> referencing.Resource[Any]:
    schemas = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    strict = schemas / f"v{KUBERNETES_VERSION}.0-local-strict" / "_definitions.json"
    contents = json.loads(strict.read_text(encoding="utf-8"))
    assert contents["$id"] == DEFINITIONS_ID
    return referencing.Resource.from_contents(contents)


def _service_monitor_validator() -> jsonschema.Draft202012Validator:
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        DEFINITIONS_ID, _definitions()
    )
    return jsonschema.Draft202012Validator(SERVICE_MONITOR, registry=registry)


@pytest.mark.parametrize("item", DOCUMENTS, ids=_id)
def test_manifest_is_valid_against_the_kubernetes_schema(item: tuple[str, Manifest]) -> None:
    _, doc = item
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        _service_monitor_validator().validate(doc)
    else:
        assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_strict_schemas_refuse_a_misspelt_field() -> None:
    broken = json.loads(json.dumps(GATEWAY))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("spec", "selector"), None, "'selector' is a required property"),
        (("spec", "endpoints", 0, "interval"), "15 seconds", "does not match"),
        (("spec", "endpoints", 0, "paht"), "/metrics", "Additional properties"),
        (("metadata", "labels", "app"), 7, "is not of type"),
        (("spec", "selector", "matchLabels"), ["freshet"], "is not of type"),
    ],
)
def test_the_service_monitor_schema_refuses_what_the_crd_refuses(
    path: tuple[str | int, ...], value: object, error: str
) -> None:
    broken = json.loads(json.dumps(_one("ServiceMonitor", "freshet")))
    parent: Any = broken
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=error):
        _service_monitor_validator().validate(broken)


# -- the gateway's Deployment ----------------------------------------------------------------


def test_probes_readiness_on_ready_and_liveness_on_health() -> None:
    ports = {p["name"]: p["containerPort"] for p in FRESHET["ports"]}
    assert ports == {"http": 8400}
    readiness = FRESHET["readinessProbe"]["httpGet"]
    liveness = FRESHET["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/ready"
    assert liveness["path"] == "/health"
    assert readiness["port"] in ports
    assert liveness["port"] in ports


def test_runs_as_the_images_non_root_user_with_no_privileges() -> None:
    for deployment in (GATEWAY, REDIS):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context.get("runAsUser", pod["securityContext"]["runAsUser"]) != 0
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
    assert GATEWAY["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == IMAGE_UID


def test_every_container_has_requests_and_limits() -> None:
    for _, doc in DOCUMENTS:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            resources_ = container["resources"]
            assert {"cpu", "memory"} <= set(resources_["requests"]), container["name"]
            assert "memory" in resources_["limits"], container["name"]


def test_the_writable_paths_are_volumes() -> None:
    # The root filesystem is read-only: the data directory and /tmp must be mounted.
    mounts = {m["mountPath"]: m["name"] for m in FRESHET["volumeMounts"]}
    env = _env(FRESHET)
    assert env["FRESHET_DATA_DIR"]["value"] in mounts
    assert "/tmp" in mounts
    volumes = {v["name"] for v in GATEWAY["spec"]["template"]["spec"]["volumes"]}
    assert set(mounts.values()) <= volumes


def test_no_service_links_to_shadow_freshet_port() -> None:
    # A Service named "freshet" would otherwise give every pod FRESHET_PORT=tcp://...
    assert GATEWAY["spec"]["template"]["spec"]["enableServiceLinks"] is False
    assert _env(FRESHET)["FRESHET_PORT"]["value"] == "8400"


def test_selectors_match_their_pods() -> None:
    for _, doc in DOCUMENTS:
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert _selects(doc["spec"]["selector"]["matchLabels"], labels)
    for _, service in ((n, d) for n, d in DOCUMENTS if d["kind"] == "Service"):
        (target,) = [
            d
            for _, d in DOCUMENTS
            if d["kind"] == "Deployment"
            and _selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        names = {
            p["name"] for c in target["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names


def test_redis_url_is_the_redis_service() -> None:
    url = urlsplit(_env(FRESHET)["FRESHET_REDIS_URL"]["value"])
    assert url.scheme == "redis"
    service = _one("Service", str(url.hostname))
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    assert _selects(service["spec"]["selector"], REDIS["spec"]["template"]["metadata"]["labels"])


def test_admin_key_comes_from_the_secret_which_holds_a_placeholder() -> None:
    ref = _env(FRESHET)["FRESHET_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    secret = _one("Secret", ref["name"])
    assert set(secret.get("stringData", {})) | set(secret.get("data", {})) == {ref["key"]}
    # Never a real credential in the repository: an obvious placeholder to replace.
    assert secret["stringData"][ref["key"]].startswith("REPLACE-ME")


def _container_env() -> dict[str, str]:
    """The gateway container's environment, with secret references resolved."""
    out: dict[str, str] = {}
    for name, entry in _env(FRESHET).items():
        if "value" in entry:
            out[name] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            out[name] = _one("Secret", ref["name"])["stringData"][ref["key"]]
    return out


def _mounted_config() -> tuple[Manifest, str]:
    """The ConfigMap and key that FRESHET_CONFIG names, through the pod's volume mounts."""
    path = Path(_env(FRESHET)["FRESHET_CONFIG"]["value"])
    (mount,) = [m for m in FRESHET["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    (volume,) = [
        v for v in GATEWAY["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    ]
    return _one("ConfigMap", volume["configMap"]["name"]), path.name


def _image_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("freshet_image_check", DEPLOY / "image_check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configmap_fleet_loads_with_the_pods_environment(tmp_path: Path) -> None:
    configmap, key = _mounted_config()
    config = tmp_path / key
    config.write_text(configmap["data"][key], encoding="utf-8")
    env = _container_env()
    settings = load_settings(None, env={**env, "FRESHET_CONFIG": str(config)})
    assert settings.config_file == str(config)
    assert settings.host == "0.0.0.0"
    assert settings.port == FRESHET["ports"][0]["containerPort"]
    assert str(settings.data_dir) == env["FRESHET_DATA_DIR"]
    assert settings.shared.redis.url == env["FRESHET_REDIS_URL"]
    assert settings.shared.admin_key == env["FRESHET_ADMIN_KEY"]
    assert settings.shared.auth == "on"
    assert {b.type for b in settings.backends} == {"llamacpp", "asic-sim", "vllm"}
    assert set(settings.groups["auto"]) == {b.id for b in settings.backends}
    # The backends are built by their plugins as `freshet serve` builds them (not started).
    assert _image_check().check_fleet(str(config)) == []


# -- the rest --------------------------------------------------------------------------------


def test_hpa_scales_the_gateway() -> None:
    (hpa,) = [d for _, d in DOCUMENTS if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "freshet",
    )
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # Utilization is relative to the request: the container must have one.
    assert FRESHET["resources"]["requests"]["cpu"]


def test_service_monitor_scrapes_the_gateways_metrics() -> None:
    monitor = _one("ServiceMonitor", "freshet")
    (service,) = [
        d
        for _, d in DOCUMENTS
        if d["kind"] == "Service"
        and _selects(monitor["spec"]["selector"]["matchLabels"], d["metadata"]["labels"])
    ]
    assert service["metadata"]["name"] == "freshet"
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"


def _kustomization() -> Manifest:
    data: Manifest = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    return data


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _kustomization()
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_every_object() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, rendered)) == sorted(key(d) for _, d in DOCUMENTS)


def test_the_kubernetes_readme_names_every_manifest() -> None:
    readme = (KUBE / "README.md").read_text(encoding="utf-8")
    for name in _kustomization()["resources"]:
        assert name in readme, name
    assert "kubernetes/" in (DEPLOY / "README.md").read_text(encoding="utf-8")


def test_image_check_passes_on_this_install() -> None:
    # What deploy/Dockerfile runs at build time, on the development install here.
    assert _image_check().main([str(ROOT / "plugins")]) == 0
