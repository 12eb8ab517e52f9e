# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first, and
# the system packages through scripts/setup-system.sh (which .ci/run calls too): as root with
# apt-get it installs what is missing, elsewhere it says what to run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system demo ui test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

system:
	scripts/setup-system.sh

demo: $(STAMP) system
	$(BIN)/python -m embedrec.demo

# the web app over what `make demo` built: http://127.0.0.1:8501
ui: $(STAMP)
	$(BIN)/embedrec ui configs/serve.toml

test: $(STAMP) system
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layer contracts in pyproject.toml (the tests run it too)
	$(BIN)/python scripts/config_reference.py --check

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/faiss_store.py

clean:
	rm -rf $(VENV) data out bench-out .pytest_cache .ruff_cache .hypothesis
