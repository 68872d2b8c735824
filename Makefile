# The two commands of the README: `make run` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.freshet-installed

.PHONY: run test install lint typecheck unit clean

run: install
	$(BIN)/freshet serve

test: install lint typecheck
	$(BIN)/pytest

install: $(STAMP)

$(STAMP): pyproject.toml plugins/*/pyproject.toml requirements/constraints.txt scripts/install.sh
	bash scripts/install.sh
	@touch $@

lint: install
	$(BIN)/ruff check gateway plugins tests benchmarks

typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy --strict $(wildcard plugins/*/freshet_*)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
