# oO: `make run` starts the platform on embedded defaults; `make test` runs the suite.
SHELL := bash
.DEFAULT_GOAL := help

# uv from PATH, or the one `make setup` installs with pip.
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN = $(UV) run --frozen

# Keep every tool's state under ./var and nothing phoning home (oo/runtime.py sets the same).
export AIRFLOW_HOME ?= $(CURDIR)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export BENTOML_HOME ?= $(CURDIR)/var/bentoml
export MPLCONFIGDIR ?= $(CURDIR)/var/matplotlib
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true
export BENTOML_DO_NOT_TRACK ?= True
export LITELLM_LOCAL_MODEL_COST_MAP ?= True
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION ?= False

.PHONY: help setup run demo-batch test test-walkthrough test-fast lint fmt contracts lock-check status clean \
	api bench-api bench-policy train-policy bench-features feast-plan fake-todoist todoist-sync bench-ingest dags-test \
	serve learner bench-serving bench-e2e

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

setup: .venv/.synced ## install uv if missing, then the locked environment

# `make demo-batch` (and the first `make run`): simulated traffic of SIM_USERS users over SIM_DAYS
# days (seed SIM_SEED), then these DAGs.
SIM_USERS ?= 20
SIM_DAYS ?= 5
SIM_SEED ?= 0
RUN_DAGS ?= events_ingest features policy_training

run: setup ## the platform: fake Todoist, Airflow, MLflow, serving, app API until Ctrl-C (the first start seeds simulated history)
	$(RUN) python -m oo.platform up --seed "$(MAKE) --no-print-directory demo-batch"

demo-batch: setup ## the batch job end to end, no services (fake Todoist, simulated traffic, real DAGs, summary)
	$(RUN) python -m oo.cli run
	$(RUN) python -m models.cli simulate --users $(SIM_USERS) --days $(SIM_DAYS) --seed $(SIM_SEED)
	@$(MAKE) --no-print-directory dags-test DAGS="$(RUN_DAGS)"
	$(RUN) python -m models.cli summary

dags-test: setup ## run DAGS="a b" in order with `airflow dags test` (logs in var/logs/dag-<id>.log)
	@mkdir -p var/logs
	@$(RUN) airflow db migrate > var/logs/airflow-db-migrate.log 2>&1 \
		|| { tail -n 20 var/logs/airflow-db-migrate.log; echo "airflow db migrate failed"; exit 1; }
	@for dag in $(DAGS); do \
		log=var/logs/dag-$$dag.log; \
		$(RUN) airflow dags test $$dag > $$log 2>&1; \
		done_line=$$(grep -o 'DagRun Finished: dag_id='"$$dag"'.*' $$log | tail -n 1); \
		state=$$(echo "$$done_line" | grep -o 'state=[a-z_]*' | head -n 1); \
		secs=$$(echo "$$done_line" | grep -o 'run_duration=[0-9.]*' | cut -d= -f2); \
		echo "airflow dags test $$dag: $${state:-state=unknown} in $${secs:-?} s (log: $$log)"; \
		grep -oE 'events_ingest: \{.*\}|Returned value was: \{.staging.*|Returned value was: [0-9]+ |gate: .*\[models|AirflowSkipException: .*|Skipping .*' $$log \
			| sed -e 's/ \[models$$//' -e 's/^/    /' | cut -c1-220; \
		if [ "$$state" != "state=success" ]; then tail -n 40 $$log; exit 1; fi; \
	done

status: setup ## each store and service healthy or not (exit 1 when one is down), lake row counts
	$(RUN) oo status

# Two workers; a module's tests stay on one worker (some share one served process per module).
PYTEST_ARGS ?= -n 2 --dist loadfile

test: setup ## lint, import contracts, contracts check, then the whole suite (integration tests need PostgreSQL, Redis, NATS)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports
	$(RUN) python -m data_contracts.export --check
	$(RUN) pytest $(PYTEST_ARGS)

test-walkthrough: setup ## the README's whole first walkthrough in a browser, Airflow and MLflow included (15-20 min)
	OO_TEST_WALKTHROUGH=full $(RUN) pytest -p no:xdist tests/browser/test_readme_walkthrough.py

test-fast: setup ## unit tests only
	$(RUN) pytest -m "not integration and not slow"

lint: setup ## ruff and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports

fmt: setup ## format and autofix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

contracts: setup ## write data_contracts/schemas/*.json from the models
	$(RUN) python -m data_contracts.export

bench-policy: setup ## simulator, bake-off vs Vowpal Wabbit, throughput -> bench/results/policy.json (a few minutes)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(RUN) python bench/policy.py

train-policy: setup ## train, evaluate and gate tip policies on the lake's training examples now (what the DAG runs)
	$(RUN) python -c "from datetime import UTC, datetime; from oo.runtime import configure; configure(); \
	from models.policy_training import train_and_register; print(train_and_register(datetime.now(UTC)))"

lock-check: ## the lock file matches pyproject.toml
	$(UV) lock --check

bench-features: setup ## feature store: online p50/p99 (SQLite, Redis), push-to-visible, materialization -> bench/results/features.json
	$(RUN) python bench/features.py

feast-plan: setup ## feast plan on feature_repo/ with the ${VARS} from the settings
	eval "$$($(RUN) python -m oo.feature_store env)" && cd feature_repo && $(CURDIR)/.venv/bin/feast plan

fake-todoist: setup ## serve the FAKE Todoist API v1 (synthetic users) on 127.0.0.1:8765
	$(RUN) python -m oo.cli fake-todoist --port $${PORT:-8765} --users $${USERS:-3} --tasks $${TASKS:-20}

todoist-sync: setup ## sync every connected user's Todoist into the lake once (OO_TODOIST__BASE_URL picks the API)
	$(RUN) python -m oo.cli todoist-sync

bench-ingest: setup ## 1,000 users x 200 tasks from the fake API into the lake -> bench/results/ingest.json
	$(RUN) python bench/ingest.py

api: setup ## the app API (FastAPI) with uvicorn on 127.0.0.1:8000 (serving at OO_APP__SERVING_URL)
	$(RUN) uvicorn --factory app_api.main:create_app --host 127.0.0.1 --port $${PORT:-8000}

bench-api: setup ## app API under 100 req/s open-loop (tips/next, feedback), real serving (BentoML) behind it; a labelled stand-in run apart -> bench/results/api.json
	$(RUN) python bench/api.py

serve: setup ## the decision service (BentoML) on 127.0.0.1:$${PORT:-3000}; OO_SERVING__LEARNER=separate for replicas
	$(RUN) bentoml serve serving.service:TipService --host 127.0.0.1 --port $${PORT:-3000}

learner: setup ## the one online learner for replicas in OO_SERVING__LEARNER=separate mode
	$(RUN) python -m serving.learner

bench-serving: setup ## rank p50/p99/throughput vs a BentoML echo floor (wrk), reward-to-policy -> bench/results/serving.json
	@command -v wrk >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q wrk; }
	$(RUN) python bench/serving.py

bench-e2e: setup ## load and faults on the real processes: 60 s at 100 req/s, serving and learner killed, Todoist 429/5xx -> bench/results/e2e.json
	$(RUN) python bench/e2e.py

clean: ## remove local state (var/)
	rm -rf var
