# The two commands of the README: `make run` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.freshet-installed

.PHONY: run test install install-vllm install-browser install-redis install-bench-peers bench-peers lint typecheck clean

run: install
	$(BIN)/freshet serve

test: install install-vllm install-browser install-redis lint typecheck
	$(BIN)/pytest

install: $(STAMP)

$(STAMP): pyproject.toml plugins/*/pyproject.toml requirements/constraints.txt scripts/install.sh scripts/install-progress.sh
	bash scripts/install.sh
	@touch $@

# vLLM's CPU build in its own venv (~2 min and 3.5 GB once, cached under ~/.cache/freshet).
install-vllm:
	bash scripts/install-vllm.sh

# Debian's chromium for the UI's browser test (root + apt-get; otherwise the test skips).
install-browser:
	bash scripts/install-browser.sh

# Debian's redis-server for the shared-state tests (root + apt-get; otherwise they skip).
install-redis:
	bash scripts/install-redis.sh

# wrk, nginx, LiteLLM (own venv), Portkey (npm), py-spy and granian for benchmarks/peers.py
install-bench-peers:
	bash scripts/install-bench-peers.sh

bench-peers: install install-bench-peers
	$(BIN)/python benchmarks/peers.py

lint: install
	$(BIN)/ruff check gateway plugins tests benchmarks

typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy --strict $(patsubst %/__init__.py,%,$(wildcard plugins/*/freshet_*/__init__.py))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
