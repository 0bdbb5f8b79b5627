# Raccordo — the two commands a newcomer needs are `make demo` and `make test`.
# Everything else the project needs is installed by these targets.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_RECORDS ?= 200000

.PHONY: demo airflow airflow-cluster test lint typecheck unit install bench clean help

help:
	@echo "make demo   - install what is needed and run the demo district (SQLite, synthetic data)"
	@echo "make airflow - the demo district under Airflow 3 (airflow standalone, http://localhost:8080)"
	@echo "make airflow-cluster - the demo district on an Airflow 3 CeleryExecutor cluster (http://127.0.0.1:18580)"
	@echo "make test   - install what is needed (incl. PostgreSQL) and run lint, mypy and every test"
	@echo "make bench  - the ingestion benchmark, all loops (bench/ingest.py; BENCH_RECORDS=200000; the others: docs/performance.md)"

ASSETS := hub/web/static/vendor/bootstrap-italia/css/bootstrap-italia.min.css

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,airflow]'
	touch $(STAMP)

# Bootstrap Italia from the npm registry (package.json / package-lock.json), never committed.
$(ASSETS): package.json package-lock.json scripts/build-assets.sh
	bash scripts/build-assets.sh

install: $(STAMP) $(ASSETS)

demo: $(STAMP) $(ASSETS)
	$(BIN)/raccordo demo

airflow: $(STAMP)
	bash scripts/airflow-demo.sh

# Redis, PostgreSQL, scheduler, DAG processor, API server and one Celery worker per consortium.
airflow-cluster: $(STAMP)
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-redis.sh
	bash scripts/airflow-cluster.sh demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy hub

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

test: $(STAMP) $(ASSETS)
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-redis.sh
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python bench/ingest.py --records $(BENCH_RECORDS)

clean:
	rm -rf $(VENV) demo-workspace demo-cluster .pytest_cache .mypy_cache .ruff_cache node_modules hub/web/static/vendor
