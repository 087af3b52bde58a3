# The manual: `make run` imports the samples end to end, `make test` runs every test.
# Both create the virtualenv first. No Postgres configured? An embedded one starts under .data/.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export CONFIG_PATH ?= $(CURDIR)/config.json
export CONFIG_ENV  ?= default

.PHONY: help run serve test test-fast bench lint format protos requirements stop-db clean docker-check docker-check-azure

help:
	@echo "make run           set up, then import every file in sample/ through the real pipeline"
	@echo "make serve         REST (gunicorn) + gRPC server + workers in the foreground; Ctrl-C stops"
	@echo "make test          set up, then run the whole test suite (unit, integration, e2e)"
	@echo "make lint          ruff + mypy + import-linter (imports run one way, pyproject.toml)"
	@echo "make protos        regenerate gRPC code from protos/"
	@echo "make requirements  recompile requirements.txt and requirements-dev.txt from their .in files"
	@echo "make bench         throughput benchmark (see docs/performance.md)"
	@echo "make docker-check  build the image, run the compose stack and test it (needs Docker and docker-compose)"
	@echo "make docker-check-azure  build Azurite's image, run the stack with the azure profile and import from it"
	@echo "make stop-db       stop the embedded Postgres under .data/"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m service.edges.cli.demo

serve: $(STAMP)
	$(PY) -m service.edges.cli.serve

test: $(STAMP)
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { echo "make test: the status page test needs Chromium; install it with: sudo apt-get install chromium chromium-driver"; exit 1; }
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# ROWS=N (default 1000000), INVALID_RATIO=0.1, PROCESSES=2, THREADS=N (default: the configured
# worker_concurrency), MODES=append,upsert,upsert10,undo (default: all), TWINS=gz,zst,jsonl,xlsx (the same rows
# compressed or in another format, each appended alone; default gz, none for none), XLSX=1 (an .xlsx twin too);
# UPLOADS=0 leaves out the tus uploads (SPEC 19: 1 GiB from 1 and 8 clients, /healthz and /enqueue meanwhile), UPLOADS=only runs only them;
# BENCH_DATABASE_URL or APP_DB_DSN picks the Postgres server (else the embedded one).
bench: $(STAMP)
	$(PY) -m bench --rows $(or $(ROWS),1000000) --invalid-ratio $(or $(INVALID_RATIO),0) --processes $(or $(PROCESSES),2) $(if $(THREADS),--threads $(THREADS)) $(if $(TWINS),--twins $(TWINS)) $(if $(filter-out 0,$(XLSX)),--xlsx)

lint: $(STAMP)
	$(VENV)/bin/ruff check service actors tests bench
	$(VENV)/bin/ruff format --check service actors tests bench
	$(VENV)/bin/mypy service actors bench
	$(VENV)/bin/lint-imports --no-cache --no-logo

format: $(STAMP)
	$(VENV)/bin/ruff check --fix service actors tests
	$(VENV)/bin/ruff format service actors tests

# Generated code lands in service/generated/ and imports itself as service.generated.*
# (the -I mapping does that); it is committed, never edited, and a test fails when stale.
protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iservice/generated=protos --python_out=. --grpc_python_out=. --pyi_out=. protos/importer.proto

requirements: $(STAMP)
	$(VENV)/bin/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe -o requirements.txt requirements.in
	$(VENV)/bin/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe -o requirements-dev.txt requirements-dev.in

stop-db: $(STAMP)
	$(PY) -c 'from service.storage.db import stop_embedded; from service.config import load_config; stop_embedded(load_config().data_dir)'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Builds the image, runs the compose stack, imports every sample through REST, gRPC and
# importctl, scales to 10 workers, SIGTERMs workers mid-job, tears down (see docker/check.sh).
docker-check:
	docker/check.sh

# The compose file's optional azure profile: Azurite built from docker/azurite/, imports from it (see docker/check-azure.sh).
docker-check-azure:
	docker/check-azure.sh
