"""``pip install`` proven, not assumed: ``python -m build`` makes a wheel and an sdist of the
core and of every plugin; the wheels go into a fresh venv (no editable install, no
``--system-site-packages``, the source tree nowhere on the path), whose ``freshet`` lists
the plugins and serves a chat completion. The documented example plugin installs on top
of it with nothing from the package index. Third-party dependencies come from the package
index, through pip's own cache; llama-cpp-python from the wheel scripts/install.sh caches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.support.server import free_port, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs" / "plugins.md"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
PLUGIN_DIRS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
CORE = "freshet-gateway"
# Installed into the fresh venv; freshet-llamacpp too where its llama-cpp-python is cached.
SERVED_PLUGINS = ("freshet-asic-sim", "freshet-energy")
# What a build needs from a project directory (no egg-info, caches or plugin tests).
SKIP = shutil.ignore_patterns(
    "__pycache__", "*.egg-info", "build", "dist", "tests", ".*", "*.pyc", "*.so"
)


def _name(directory: Path) -> str:
    name: str = tomllib.loads((directory / "pyproject.toml").read_text())["project"]["name"]
    return name


def _wheel_stem(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _clean_env(venv: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment without this checkout's venv, PYTHONPATH or FRESHET_* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and not k.startswith("FRESHET_")
    }
    here = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != here]
    if venv is not None:
        path.insert(0, str(venv / "bin"))
        env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join(path)
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, env: Mapping[str, str], timeout: float = 300) -> str:
    out = subprocess.run(
        args, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}:\n{out.stderr}"
    return out.stdout


def _llama_wheel_dir() -> tuple[Path | None, str]:
    """scripts/install.sh's cache of the llama-cpp-python wheel built for this CPU."""
    match = re.search(r"^llama-cpp-python==(\S+)$", CONSTRAINTS.read_text(), re.M)
    if not match:
        return None, "requirements/constraints.txt pins no llama-cpp-python"
    cache = os.environ.get("FRESHET_WHEEL_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "freshet" / "wheels"
    )
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((ln for ln in cpuinfo if re.match(r"^(flags|Features)", ln)), "")
    except OSError:
        pass
    if not flags:
        return None, "no CPU flags to find install.sh's cached llama-cpp-python wheel by"
    cpukey = hashlib.md5(flags.encode()).hexdigest()[:12]  # install.sh's key
    pyver = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    pattern = f"llama-cpp-python-{match.group(1)}-{pyver}-{cpukey}-*/llama_cpp_python-*.whl"
    wheels = sorted(Path(cache).glob(pattern))
    if not wheels:
        return None, f"no llama-cpp-python wheel cached by scripts/install.sh ({pattern})"
    return wheels[-1].parent, ""


@dataclass
class Installed:
    venv: Path
    cwd: Path
    dist: Path
    built: dict[str, list[str]]
    plugins: tuple[str, ...]
    llama_skipped: str

    def env(self, **extra: str) -> dict[str, str]:
        return _clean_env(self.venv, **extra)

    def run(self, *args: str, timeout: float = 120) -> str:
        return _run(list(args), self.cwd, self.env(), timeout)


def _example_plugin(work: Path) -> Path:
    """docs/plugins.md's example plugin as a project of its own."""
    blocks = re.findall(r"```python\n(# freshet_shout/__init__.py\n.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 1
    project = work / "src" / "freshet-shout"
    (project / "freshet_shout").mkdir(parents=True)
    (project / "freshet_shout" / "__init__.py").write_text(blocks[0])
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "freshet-shout"\nversion = "0.1.0"\n'
        'dependencies = ["freshet-gateway"]\n'
        '[project.entry-points.freshet]\nshout = "freshet_shout"\n'
    )
    return project


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    pytest.importorskip("build", reason="`build` is in the dev extras")
    work = tmp_path_factory.mktemp("wheels")
    cwd = work / "cwd"
    cwd.mkdir()
    dist = work / "dist"
    # Copies, so the build writes nothing (egg-info, build/) into the shared source tree.
    sources = {CORE: work / "src" / "core"}
    shutil.copytree(ROOT / "gateway", sources[CORE] / "gateway", ignore=SKIP)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, sources[CORE] / name)
    for plugin in PLUGIN_DIRS:
        sources[_name(plugin)] = shutil.copytree(plugin, work / "src" / plugin.name, ignore=SKIP)
    sources["freshet-shout"] = _example_plugin(work)

    env = _clean_env()
    builds = {
        name: subprocess.Popen(
            [sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, src in sources.items()
    }
    # The fresh venv is made while the builds run: no system site-packages, its own pip.
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd, env)
    for name, proc in builds.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"python -m build {name} failed:\n{log}"
    built = {name: sorted(p.name for p in dist.glob(f"{_wheel_stem(name)}-*")) for name in sources}

    def wheel(name: str) -> str:
        (path,) = dist.glob(f"{_wheel_stem(name)}-*.whl")
        return str(path)

    plugins: tuple[str, ...] = SERVED_PLUGINS
    find_links: list[str] = []
    llama_dir, llama_skipped = _llama_wheel_dir()
    if llama_dir is not None:
        plugins += ("freshet-llamacpp",)
        find_links = ["--find-links", str(llama_dir)]
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    pip.append("--no-compile")  # bytecode only for what runs: saves a third of the install
    # Third parties from the index under the project's pins, through pip's cache.
    _run(
        [*pip, "-c", str(CONSTRAINTS), *find_links, wheel(CORE), *map(wheel, plugins)],
        cwd,
        _clean_env(venv),
    )
    # The documented example plugin needs nothing the core did not bring.
    _run([*pip, "--no-index", wheel("freshet-shout")], cwd, _clean_env(venv))
    return Installed(venv, cwd, dist, built, plugins, llama_skipped)


def test_build_makes_a_wheel_and_an_sdist_of_the_core_and_every_plugin(
    installed: Installed,
) -> None:
    for name in [CORE, *map(_name, PLUGIN_DIRS)]:
        version = "0.1.0"
        stem = _wheel_stem(name)
        assert installed.built[name] == [
            f"{stem}-{version}-py3-none-any.whl",
            f"{stem}-{version}.tar.gz",
        ], name


def test_the_core_is_freshet_gateway_from_its_wheel_and_the_other_freshet_is_absent(
    installed: Installed,
) -> None:
    show = installed.run("pip", "show", CORE)
    assert f"Name: {CORE}" in show
    assert "Editable project location" not in show
    location = re.search(r"^Location: (.*)$", show, re.M)
    assert location
    assert Path(location.group(1)).resolve().is_relative_to(installed.venv.resolve())
    listed = {p["name"].lower() for p in json.loads(installed.run("pip", "list", "--format=json"))}
    assert "freshet" not in listed  # the unrelated project of that name on the index
    assert {CORE, "freshet-shout", *installed.plugins} <= listed
    assert not {"freshet-vllm"} & listed
    # Every module comes from the venv, not from the source tree.
    files = json.loads(
        installed.run(
            "python",
            "-c",
            "import json, sys, gateway, freshet_asic_sim, freshet_energy, freshet_shout;"
            "print(json.dumps([sys.prefix, *(m.__file__ for m in"
            " (gateway, freshet_asic_sim, freshet_energy, freshet_shout))]))",
        )
    )
    assert Path(files[0]).resolve() == installed.venv.resolve()
    for file in files[1:]:
        assert Path(file).resolve().is_relative_to(installed.venv.resolve()), file
        assert not Path(file).resolve().is_relative_to(ROOT.resolve()), file
    if installed.llama_skipped:
        pytest.skip(f"freshet-llamacpp not installed: {installed.llama_skipped}")


def test_the_installed_freshet_lists_the_plugins_from_their_distributions(
    installed: Installed,
) -> None:
    freshet = str(installed.venv / "bin" / "freshet")
    assert "0.1.0" in installed.run(freshet, "--version")
    plugins = {p["name"]: p for p in json.loads(installed.run(freshet, "plugins", "--json"))}
    expected = {
        "deterministic": CORE,
        "routing": CORE,
        "simulators": CORE,  # the deterministic backend's replay model
        "asic-sim": "freshet-asic-sim",
        "energy": "freshet-energy",
        "shout": "freshet-shout",
    }
    if "freshet-llamacpp" in installed.plugins:
        expected["llamacpp"] = "freshet-llamacpp"
    assert {name: plugins[name]["distribution"] for name in expected} == expected
    assert set(plugins) == set(expected)


@contextlib.contextmanager
def _serving(installed: Installed, config: Mapping[str, object]) -> Iterator[str]:
    """The venv's ``freshet serve`` on a free loopback port, once ``/ready`` answers 200."""
    path = write_config(installed.cwd, config)
    port = free_port()
    args = [str(installed.venv / "bin" / "freshet"), "serve", "--config", str(path)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = installed.env(FRESHET_DATA_DIR=str(installed.cwd / "data"), PYTHONUNBUFFERED="1")
    log = installed.cwd / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=installed.cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"freshet serve exited:\n{log.read_text()}"
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url + "/ready", timeout=5) as resp,
            ):
                if resp.status == 200:
                    break
            assert time.monotonic() < deadline, f"not ready in 60 s:\n{log.read_text()}"
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_installed_freshet_serves_a_chat_completion(installed: Installed) -> None:
    config = {
        "backends": [
            {
                "id": "det",
                "type": "deterministic",
                "model": "det-1",
                "knowledge_cutoff": "2025-01-01",
            },
            {
                "id": "asic",
                "type": "asic-sim",
                "model": "llama-3.1-8b",
                "knowledge_cutoff": "2023-12-01",
                "twin": "det",
                "time_scale": 0.01,
            },
            {"id": "loud", "type": "shout", "model": "shout-1", "knowledge_cutoff": "2025-01-01"},
        ],
        "groups": {"auto": ["asic", "det"]},
    }
    with _serving(installed, config) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        for model, backend in (("llama-3.1-8b", "asic"), ("det-1", "det"), ("shout-1", "loud")):
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "hello river"}]
            )
            out = raw.parse()
            assert raw.headers["x-freshet-backend"] == backend
            assert out.choices[0].message.content
            assert out.usage
            assert out.usage.completion_tokens > 0
        assert out.choices[0].message.content == "HELLO RIVER!"
