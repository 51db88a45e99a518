# The two commands a newcomer needs:  make demo   and   make test
# Both set up everything themselves (a virtualenv in .venv with the project and its test dependencies).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test unit e2e crds argocd-cm render clean prometheus

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## the operator reconciling samples/ against a local API endpoint
	PYTHONPATH=sandbox $(BIN)/python -m llm_sandbox.demo $(ARGS)

prometheus:  ## Debian's Prometheus (with promtool) for the rollout tests, installed when missing
	@command -v prometheus >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus >/dev/null; }

test: $(STAMP) prometheus  ## every test: unit, and e2e against the local API endpoint and a real Prometheus
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

e2e: $(STAMP) prometheus
	$(BIN)/python -m pytest tests/e2e

crds: $(STAMP)  ## regenerate crds/ and manifests/crds/ from the API models
	$(BIN)/llm-operator crds -o crds -o manifests/crds

argocd-cm: $(STAMP)  ## regenerate manifests/argocd/argocd-cm-patch.yaml from the Lua health checks and actions
	$(BIN)/python -m tests.unit.test_argocd

render: $(STAMP)  ## print what the operator would apply for every sample
	$(BIN)/llm-operator render $(foreach f,$(wildcard samples/*.yaml),-f $(f))

clean:
	rm -rf $(VENV) .sandbox .pytest_cache
