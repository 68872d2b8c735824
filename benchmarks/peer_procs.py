"""The peers of the benchmark, each started in turn in front of the same mock upstream:
direct (no gateway), nginx ``proxy_pass``, LiteLLM proxy, Portkey's gateway, Freshet.

A peer that is not installed here says why (``unavailable``) instead of failing the run;
``scripts/install-bench-peers.sh`` installs them. LiteLLM and Portkey live in their own
environments under ``~/.cache/freshet/bench`` (``FRESHET_BENCH_DIR``), never in Freshet's.
Every peer listens on 127.0.0.1 and is stopped when its block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from msgspec import Struct, field

from benchmarks.loadgen import wait_http
from tests.support.server import free_port, running_server

BENCH_DIR = Path(os.environ.get("FRESHET_BENCH_DIR", Path.home() / ".cache/freshet/bench"))
LITELLM = BENCH_DIR / "litellm" / "bin" / "litellm"
PORTKEY = BENCH_DIR / "portkey" / "node_modules" / "@portkey-ai" / "gateway"
MODEL = "mock"
MODEL_B, MODEL_C = "mock-b", "mock-c"  # two more models, as a fleet has several
# What Freshet's mock backends declare; None: the type's default (peers.py sets it when no
# embeddings row is asked for, so a tree from before the operations key can be measured).
FRESHET_OPERATIONS: list[str] | None = ["chat", "text_completion", "embeddings"]
API_KEY = "sk-bench"


class Running(Struct, kw_only=True):
    """A started peer: where to send requests, with which headers, and its processes."""

    url: str  # base, without /v1
    pids: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


class Peer(Struct, kw_only=True, frozen=True):
    name: str
    label: str  # as the table shows it
    unavailable: Callable[[], str | None]
    version: Callable[[], str]
    start: Callable[[str, Path], contextlib.AbstractContextManager[Running]]


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({type(exc).__name__})"
    return (done.stdout + done.stderr).strip()


@contextlib.contextmanager
def _process(
    args: list[str],
    log: Path,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    full_env = dict(os.environ)
    for name, value in (env or {}).items():  # None: not in the peer's environment
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # its workers are stopped with it, and only they
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):  # stragglers of its group
            os.killpg(proc.pid, signal.SIGKILL)


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


# -- direct ------------------------------------------------------------------------------


@contextlib.contextmanager
def _direct(upstream: str, work: Path) -> Iterator[Running]:
    yield Running(url=upstream)


# -- nginx -------------------------------------------------------------------------------

_NGINX_CONF = """
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream mock {{ server {upstream_host}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def _nginx_unavailable() -> str | None:
    return None if shutil.which("nginx") else "nginx not installed (apt-get install nginx)"


@contextlib.contextmanager
def _nginx(upstream: str, work: Path) -> Iterator[Running]:
    port = free_port()
    conf = work / "nginx.conf"
    host = upstream.removeprefix("http://")
    conf.write_text(_NGINX_CONF.format(work=work, port=port, upstream_host=host))
    nginx = shutil.which("nginx") or "nginx"
    args = [nginx, "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf)]
    with _process([*args, "-g", "daemon off;"], work / "nginx.log") as proc:
        url = f"http://127.0.0.1:{port}"
        _ready(proc, url + "/v1/models", 20, work / "error.log")
        yield Running(url=url, pids=[proc.pid])


# -- LiteLLM -----------------------------------------------------------------------------


def _litellm_unavailable() -> str | None:
    if not LITELLM.exists():
        return "LiteLLM proxy not installed (scripts/install-bench-peers.sh)"
    return None


def _litellm_version() -> str:
    python = LITELLM.with_name("python")
    return _run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"])


@contextlib.contextmanager
def _litellm(upstream: str, work: Path) -> Iterator[Running]:
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": f"{upstream}/v1",
                            "api_key": API_KEY,
                        },
                    }
                ]
            }
        )
    )
    env: dict[str, str | None] = {
        # The model cost map ships in the package: no fetch at start (nothing outside
        # this machine is reached by the benchmark).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_DOCS": "True",
        # Without a master key the proxy refuses to start; Freshet and Portkey run here with
        # no auth too (loopback only), so LiteLLM does the same, by its documented switch.
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "LITELLM_MASTER_KEY"):
        env[name] = None  # no database, no cache, no auth: the proxy as it starts bare
    args = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with _process(args, work / "litellm.log", env=env, cwd=work) as proc:
        url = f"http://127.0.0.1:{port}"
        _ready(proc, url + "/health/liveliness", 180, work / "litellm.log")
        yield Running(url=url, pids=[proc.pid], headers={"Authorization": f"Bearer {API_KEY}"})


# -- Portkey -----------------------------------------------------------------------------


def _portkey_unavailable() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs)"
    if not (PORTKEY / "build" / "start-server.js").exists():
        return "Portkey gateway not installed (scripts/install-bench-peers.sh)"
    return None


def _portkey_version() -> str:
    try:
        version = json.loads((PORTKEY / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        version = "?"
    return f"{version} (node {_run(['node', '--version']).lstrip('v')})"


@contextlib.contextmanager
def _portkey(upstream: str, work: Path) -> Iterator[Running]:
    port = free_port()
    args = ["node", str(PORTKEY / "build" / "start-server.js"), f"--port={port}", "--headless"]
    with _process(args, work / "portkey.log", env={"NODE_ENV": "production"}) as proc:
        url = f"http://127.0.0.1:{port}"
        _ready(proc, url + "/", 60, work / "portkey.log")
        headers = {
            "Authorization": f"Bearer {API_KEY}",
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"{upstream}/v1",
        }
        yield Running(url=url, pids=[proc.pid], headers=headers)


# -- what Python itself allows -------------------------------------------------------------


@contextlib.contextmanager
def _floor(upstream: str, work: Path) -> Iterator[Running]:
    port = free_port()
    script = Path(__file__).with_name("floor_proxy.py")
    with _process([sys.executable, str(script), str(port), upstream], work / "floor.log") as proc:
        url = f"http://127.0.0.1:{port}"
        _ready(proc, url + "/v1/models", 30, work / "floor.log")
        yield Running(url=url, pids=[proc.pid])


# -- Freshet -----------------------------------------------------------------------------


def freshet_config(upstream: str) -> dict[str, Any]:
    """As a user would configure it: an ``openai-compatible`` backend per model the mock
    serves (the load asks for the first), default settings otherwise (SQLite ledger,
    in-memory traces, metrics)."""
    return {
        "backends": [
            {
                "id": backend_id,
                "type": "openai-compatible",
                "knowledge_cutoff": "unknown",
                "model": model,
                "url": upstream,
                # The mock answers /v1/embeddings too (the embeddings rows).
                **({"operations": FRESHET_OPERATIONS} if FRESHET_OPERATIONS else {}),
            }
            for backend_id, model in (("mock", MODEL), ("mock-b", MODEL_B), ("mock-c", MODEL_C))
        ],
        "groups": {},
    }


def _granian_unavailable() -> str | None:
    if shutil.which("granian", path=str(Path(sys.executable).parent)) is None:
        return "granian is not installed in this venv (pip install granian)"
    return None


def _granian_version() -> str:
    import importlib.metadata as md

    return f"{_freshet_version()} on granian {md.version('granian')}"


@contextlib.contextmanager
def _freshet_granian(upstream: str, work: Path) -> Iterator[Running]:
    """The same app on granian (Rust HTTP server, uvloop) instead of uvicorn: the server
    choice, measured. The app is built by the factory ``freshet serve --workers`` uses."""
    from tests.support.server import write_config

    port = free_port()
    config = write_config(work, freshet_config(upstream))
    granian = str(Path(sys.executable).with_name("granian"))
    args = [granian, "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--loop", "uvloop", "--no-ws", "--log-level", "warning"]
    env: dict[str, str | None] = {
        "FRESHET_CONFIG": str(config),
        "FRESHET_DATA_DIR": str(work / "data"),
        "FRESHET_LOG_LEVEL": "warning",
    }
    log = work / "granian.log"
    with _process([*args, "gateway.cli.workers:app_from_env"], log, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        _ready(proc, url + "/ready", 60, log)
        yield Running(url=url, pids=[proc.pid])


def _freshet_version() -> str:
    import importlib.metadata as md

    version = md.version("freshet-gateway")
    commit = _run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"])
    return f"{version} ({commit})" if commit and " " not in commit else version


def _freshet_starter(
    workers: int,
) -> Callable[[str, Path], contextlib.AbstractContextManager[Running]]:
    @contextlib.contextmanager
    def start(upstream: str, work: Path) -> Iterator[Running]:
        config = freshet_config(upstream)
        with _freshet_server(work, config, workers) as running:
            yield running

    return start


@contextlib.contextmanager
def _freshet_server(work: Path, config: Mapping[str, Any], workers: int = 1) -> Iterator[Running]:
    if workers == 1:
        with running_server(work, config) as server:
            yield Running(url=server.url, pids=[server.proc.pid])
        return
    # running_server has no --workers: the same, by hand.
    from tests.support.server import FRESHET, write_config

    port = free_port()
    args = [FRESHET, "serve", "--port", str(port), "--log-level", "warning"]
    args += ["--config", str(write_config(work, config)), "--workers", str(workers)]
    log = work / "freshet.log"
    with _process(args, log, env={"FRESHET_DATA_DIR": str(work / "data")}) as proc:
        url = f"http://127.0.0.1:{port}"
        _ready(proc, url + "/ready", 60, log)
        yield Running(url=url, pids=[proc.pid])


@contextlib.contextmanager
def freshet_server(config: Mapping[str, Any]) -> Iterator[Running]:
    """Freshet with any config, in a data directory of its own that goes with it."""
    with tempfile.TemporaryDirectory() as tmp, _freshet_server(Path(tmp), config) as running:
        yield running


def _ready(proc: subprocess.Popen[bytes], url: str, timeout_s: float, log: Path) -> None:
    try:
        wait_http(url, timeout_s)
    except TimeoutError as exc:
        state = "exited" if proc.poll() is not None else "running"
        raise RuntimeError(f"{exc}; process {state}; log:\n{_log_tail(log)}") from exc


PEERS: dict[str, Peer] = {
    "direct": Peer(
        name="direct",
        label="direct (no gateway)",
        unavailable=lambda: None,
        version=lambda: "",
        start=_direct,
    ),
    "nginx": Peer(
        name="nginx",
        label="nginx proxy_pass",
        unavailable=_nginx_unavailable,
        version=lambda: _run(["nginx", "-v"]).rpartition("/")[2],
        start=_nginx,
    ),
    "litellm": Peer(
        name="litellm",
        label="LiteLLM proxy",
        unavailable=_litellm_unavailable,
        version=_litellm_version,
        start=_litellm,
    ),
    "portkey": Peer(
        name="portkey",
        label="Portkey gateway",
        unavailable=_portkey_unavailable,
        version=_portkey_version,
        start=_portkey,
    ),
    "python-floor": Peer(
        name="python-floor",
        label="Python floor: bare ASGI proxy",
        unavailable=lambda: None,
        version=lambda: "uvicorn + Freshet's client",
        start=_floor,
    ),
    "freshet": Peer(
        name="freshet",
        label="Freshet",
        unavailable=lambda: None,
        version=_freshet_version,
        start=_freshet_starter(1),
    ),
    "freshet-granian": Peer(
        name="freshet-granian",
        label="Freshet on granian",
        unavailable=_granian_unavailable,
        version=_granian_version,
        start=_freshet_granian,
    ),
    "freshet-w2": Peer(
        name="freshet-w2",
        label="Freshet --workers 2",
        unavailable=lambda: None,
        version=_freshet_version,
        start=_freshet_starter(2),
    ),
}


def python_version() -> str:
    return sys.version.split()[0]
