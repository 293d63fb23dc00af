# smescore — two commands on a fresh machine: `make demo` and `make test`.
PY        ?= python3.11
VENV      ?= .venv
BIN       := $(VENV)/bin
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0
export TF_ENABLE_ONEDNN_OPTS := 0

DEMO_DIR  ?= out/demo
DEMO_FIRMS ?= 3000
DEMO_MONTHS ?= 36
DEMO_END  ?= 2026-10-31

.PHONY: setup system-deps lock demo test bench clean

# The venv is rebuilt whenever the lock changes; pip's wheel cache makes a rebuild cheap.
$(BIN)/.installed: requirements.lock setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

setup: $(BIN)/.installed

# Debian packages the tests run for real (Pushgateway, promtool, Chromium); no-ops when present.
system-deps:
	@bash infra/install_system_deps.sh

lock:
	$(PY) -m venv /tmp/smescore-lock-venv
	/tmp/smescore-lock-venv/bin/pip install --quiet -r requirements.in
	( head -2 requirements.lock; /tmp/smescore-lock-venv/bin/pip freeze --all | grep -v -e '^pip==' -e '^# Editable' -e '^-e ' -e '^smescore' ) > requirements.lock.new
	mv requirements.lock.new requirements.lock

demo: setup
	$(BIN)/smescore generate --out $(DEMO_DIR)/feeds --firms $(DEMO_FIRMS) --months $(DEMO_MONTHS) --end-date $(DEMO_END) --seed 7
	$(BIN)/smescore train --feeds $(DEMO_DIR)/feeds --registry $(DEMO_DIR)/registry --as-of $(DEMO_END)
	$(BIN)/smescore score --feeds $(DEMO_DIR)/feeds --registry $(DEMO_DIR)/registry --as-of $(DEMO_END) --warehouse $(DEMO_DIR)/warehouse.duckdb --summary --report-dir $(DEMO_DIR)/reports

# The suite runs a real Pushgateway, promtool and headless Chromium: install them first (CI is root).
# Two workers (pytest-xdist), a test module each at a time so a module's fixtures are built once:
# alone, the suite kept one of CI's two cores busy. Each worker builds the session's fixtures.
TEST_WORKERS ?= 2
test: setup system-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope tests

bench: setup
	$(BIN)/python -m bench.run_all

clean:
	rm -rf out .pytest_cache
