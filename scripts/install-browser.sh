#!/usr/bin/env bash
# Install the headless browser that tests/e2e/test_ui_browser.py drives: Debian's
# `chromium` package, at /usr/bin/chromium, and fonts for it. Idempotent: does nothing
# when chromium is there; only says what to do when not root or without apt-get.
#
# Playwright (a Python requirement) drives this system browser through
# `executable_path`; `playwright install` is not used, as it downloads its own browsers.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed" >&2
  exit 0
fi
# Not root, or not Debian: say what to do and carry on (the browser test skips without it).
if [ "$(id -u)" -ne 0 ]; then
  echo "install-browser: /usr/bin/chromium is missing; as root: apt-get install chromium" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: no apt-get; install Chromium at /usr/bin/chromium to run the UI test" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Fonts are only "recommended" by chromium; without them the page's text renders as boxes.
apt-get install -y -q --no-install-recommends chromium fonts-liberation fonts-dejavu-core
/usr/bin/chromium --version >&2
