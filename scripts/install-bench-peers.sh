#!/usr/bin/env bash
# Install what benchmarks/peers.py measures Freshet against, each in its own place:
#   - Debian's `wrk` (the load generator) and `nginx` (the proxy_pass baseline);
#   - LiteLLM's proxy (PyPI `litellm[proxy]`) in its own venv: $BENCH/litellm;
#   - Portkey's gateway (npm `@portkey-ai/gateway`) under $BENCH/portkey, run with node;
#   - py-spy (the profiler) and granian (the server Freshet is measured on beside uvicorn)
#     into Freshet's venv.
# BENCH is $FRESHET_BENCH_DIR, default ~/.cache/freshet/bench. Nothing is started, and no
# peer goes into Freshet's own environment. Idempotent: what is there is left alone. A
# peer that cannot be installed is a note, not a failure: the benchmark gives it a row
# saying why.
set -uo pipefail

BENCH="${FRESHET_BENCH_DIR:-$HOME/.cache/freshet/bench}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
note() { echo "install-bench-peers: $*" >&2; }

mkdir -p "$BENCH"

# -- Debian packages -----------------------------------------------------------------------
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || note "apt-get update failed"
    # nginx's package may try to start the service; the benchmark runs its own instance
    # on 127.0.0.1 from a config of its own, so a failed service start is harmless.
    apt-get install -y -q --no-install-recommends "${missing[@]}" \
      || note "apt-get install ${missing[*]} failed"
  else
    note "missing ${missing[*]}; as root: apt-get install ${missing[*]}"
  fi
fi
note "wrk: $(command -v wrk || echo missing); nginx: $(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || echo missing); node: $(node --version 2>/dev/null || echo missing)"

# -- LiteLLM proxy, in its own venv ---------------------------------------------------------
if [ -x "$BENCH/litellm/bin/litellm" ]; then
  note "LiteLLM $("$BENCH/litellm/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null) already installed"
else
  if "$PYTHON" -m venv "$BENCH/litellm" \
    && "$BENCH/litellm/bin/pip" install -q "litellm[proxy]"; then
    note "LiteLLM installed in $BENCH/litellm"
  else
    note "LiteLLM could not be installed; its row will say so"
  fi
fi

# -- Portkey gateway, with npm ---------------------------------------------------------------
# @hono/node-server pinned to 1.13.8: newer releases break Portkey's streaming path on
# Node 20 (Portkey-AI/gateway#1389), and peers are measured at their best.
HONO=1.13.8
PORTKEY_PKG='{"name":"bench-portkey","private":true,"overrides":{"@hono/node-server":"'$HONO'"}}'
hono_installed() {
  grep -q "\"version\": \"$HONO\"" "$BENCH/portkey/node_modules/@hono/node-server/package.json" 2>/dev/null
}
if [ -f "$BENCH/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ] && hono_installed; then
  note "Portkey gateway already installed (@hono/node-server $HONO)"
elif command -v npm >/dev/null 2>&1; then
  mkdir -p "$BENCH/portkey"
  echo "$PORTKEY_PKG" >"$BENCH/portkey/package.json"
  rm -rf "$BENCH/portkey/node_modules" "$BENCH/portkey/package-lock.json"
  if (cd "$BENCH/portkey" && npm install --no-audit --no-fund @portkey-ai/gateway >/dev/null) && hono_installed; then
    note "Portkey gateway installed in $BENCH/portkey (@hono/node-server $HONO)"
  else
    note "Portkey gateway could not be installed with @hono/node-server $HONO; its row will say so"
  fi
else
  note "no npm: Portkey's row will say so"
fi

# -- into Freshet's venv: py-spy (the profile) and granian (the other server, measured) -----
for tool in py-spy granian; do
  if [ -x "$VENV/bin/$tool" ]; then
    note "$tool already installed"
  elif [ -x "$VENV/bin/pip" ]; then
    "$VENV/bin/pip" install -q "$tool" || note "$tool could not be installed (its part is skipped)"
  else
    note "no $VENV: $tool not installed (its part is skipped)"
  fi
done
exit 0
