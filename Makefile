# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job on sample_data/: the sample workspace, its limits, and the reports over its real
# 20-minute recording of ruff, mypy and pytest agents (sample_data/record.py made it).
SAMPLE := sample_data/.devloop-workspace
# The same workspace recorded over 3 hours under `devloop watch`, edits replayed at a human pace
# (sample_data/record_watch.py): what autotune and its walk-forward backtest are shown on.
WATCHED := sample_data/.devloop-watch
demo: setup
	$(BIN)/devloop workspace validate --workspace-dir $(SAMPLE)
	$(BIN)/devloop workspace limits --workspace-dir $(SAMPLE) --at 10:00
	$(BIN)/devloop workspace store-info --workspace-dir $(SAMPLE)
	$(BIN)/devloop workspace metrics --workspace-dir $(SAMPLE) --detailed
	$(BIN)/devloop workspace analytics peak-usage --workspace-dir $(SAMPLE)
	$(BIN)/devloop workspace analytics bottlenecks --workspace-dir $(SAMPLE) --threshold 80
	$(BIN)/devloop workspace analytics efficiency --workspace-dir $(SAMPLE)
	$(BIN)/devloop workspace health --workspace-dir $(SAMPLE) --detailed --memory-analysis
	$(BIN)/devloop workspace analytics runs --workspace-dir $(WATCHED) --summary
	$(BIN)/devloop workspace autotune --workspace-dir $(WATCHED) --format table \
		--output /tmp/devloop-suggestions.json --report /tmp/devloop-autotune.html
	$(BIN)/devloop workspace apply-tuning /tmp/devloop-suggestions.json --workspace-dir $(WATCHED) \
		--dry-run

# The whole suite in two passes: the tests that measure real processes in real time (marked
# `realtime`: CPU use, collector ticks, enforcement) one at a time on a quiet machine, the rest
# on two workers first. Both passes always run; the target fails if either did.
test: setup
	status=0; \
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not realtime" || status=1; \
	$(BIN)/python -m pytest -m realtime || status=1; \
	exit $$status

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q tests/test_layers.py

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/collector.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/storage.py --store $(SAMPLE)/metrics
	$(BIN)/python bench/storage.py --simulate --hours 24

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
