# genops: `make run` sets up .venv and runs the whole pipeline; `make test` runs the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1

.PHONY: constraints setup run smoke test lint docs bench mlflow-ui prefect-server retrain clean stack-up stack-down stack-status

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,stack,dask]" -c constraints.txt
	touch $@

constraints: setup  ## after a deliberate upgrade: write what .venv holds as the tested versions
	{ head -2 constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.new && \
	  mv constraints.new constraints.txt

run: setup          ## the whole pipeline (Prefect flow over the DVC stages) on the bundled MNIST digits
	genops pipeline

smoke: setup        ## every family at tiny sizes in a scratch workspace (~2-3 min): check data and setup
	genops pipeline --smoke

test: setup lint docs  ## unit + integration tests (real Prefect, MLflow, DVC, great-expectations, ONNX Runtime)
	$(PY) -m pytest -q

docs: setup         ## docs/ as a site in .genops/site (mkdocs, warnings are errors)
	$(VENV)/bin/mkdocs build --strict -q

lint: setup
	$(VENV)/bin/ruff check src flows tests benchmarks

bench: setup        ## writes benchmarks/results.json
	$(PY) benchmarks/run.py

mlflow-ui: setup    ## browse runs and the model registry at http://127.0.0.1:5000
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlruns

prefect-server: setup
	prefect server start

retrain: setup      ## serve the scheduled retraining deployment (needs PREFECT_API_URL of a running server)
	$(PY) flows/retrain.py

stack-up: setup     ## PostgreSQL + SeaweedFS (S3) + MLflow server + Prefect server, work pool, worker (127.0.0.1)
	genops stack up

stack-down: setup   ## stop every service of the stack (state stays in .genops/stack)
	genops stack down

stack-status: setup
	genops stack status

clean:
	rm -rf .genops data/prepared checkpoints exported metrics reports mlflow.db mlruns dvc.lock
