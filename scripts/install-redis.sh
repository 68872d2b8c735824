#!/usr/bin/env bash
# Install the Redis server that tests/redis/ start on loopback ports of their own:
# Debian's `redis-server` package. Idempotent: does nothing when redis-server is there;
# only says what to do when not root or without apt-get (the Redis tests then skip).
#
# The package's own service is not needed (tests start `redis-server --port <free>`); on
# machines without systemd it does not start anyway.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  echo "install-redis: $(redis-server --version | cut -d' ' -f1-3) already installed" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-redis: redis-server is missing; as root: apt-get install redis-server" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-redis: no apt-get; install redis-server (>= 7) to run the shared-state tests" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends redis-server
redis-server --version >&2
