"""Names shared by the operator's manifests, the runtime image and the monitoring rules.

Labels and annotations on the objects the operator creates, the Prometheus label names they become
after relabelling (``llmops.dev/revision`` -> ``llmops_dev_revision``), and the serving container's
environment contract. Stdlib only: the runtime image imports this module too.
"""

from __future__ import annotations

LABEL_DEPLOYMENT = "llmops.dev/deployment"
LABEL_REVISION = "llmops.dev/revision"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "llm-operator"
FIELD_MANAGER = "llm-operator"

#: Prometheus label names the revision labels become under the usual ``labelmap`` relabelling.
PROM_LABEL_DEPLOYMENT = "llmops_dev_deployment"
PROM_LABEL_REVISION = "llmops_dev_revision"

#: vLLM's ``finished_reason`` on ``vllm:request_success_total`` (``vllm.v1.engine.FinishReason``; every value in
#: ``_vllm_facts.FINISHED_REASONS``) for a server-side failure, always answered with HTTP 500: the only requests the
#: error ratio, the burn rates, the SLO alerts and the dashboard count as errors. ``abort`` (the client went away),
#: ``stop`` and ``length`` are not errors.
FINISHED_REASON_ERROR = "error"
#: ... for an output vLLM cut off as a repetitive token pattern (only for requests that ask for
#: ``repetition_detection``): answered, so not an error, but a quality signal (``repetitionRatioVsStable``).
FINISHED_REASON_REPETITION = "repetition"

#: Subset names on the DestinationRule; route weights name them.
SUBSET_STABLE = "stable"
SUBSET_CANARY = "canary"

# The serving container.
CONTAINER_NAME = "vllm"
CONTAINER_PORT = 8000
PORT_NAME = "http"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
MODEL_CACHE_DIR = "/var/cache/llmops"
PVC_MODEL_DIR = "/mnt/models"
SHM_DIR = "/dev/shm"
HOME_DIR = "/home/vllm"
TMP_DIR = "/tmp"

# Environment the operator sets on the serving container (read by the runtime entrypoint,
# runtime-image/llmops_runtime, whose _contract.py is a link to this file).
#: What to serve: models:/name/version, models:/name@alias, s3://..., gs://..., hf://org/model, or a local path.
ENV_MODEL_URI = "LLMOPS_MODEL_URI"
#: Where a fetched model is unpacked (in the cache volume); vLLM's --model points here for fetched models.
ENV_MODEL_DIR = "LLMOPS_MODEL_DIR"
ENV_REVISION = "LLMOPS_REVISION"
#: GPUs the pod was given (its resource limit); 0 means the CPU device and no GPU preflight.
ENV_GPUS = "LLMOPS_GPUS"
ENV_SERVED_MODEL_NAME = "LLMOPS_SERVED_MODEL_NAME"
#: The model size in bytes when known in advance (else measured on disk after the fetch), for the preflight.
ENV_MODEL_BYTES = "LLMOPS_MODEL_BYTES"

#: The serving container's command: the runtime entrypoint, which execs vLLM's OpenAI server with the args.
RUNTIME_COMMAND = ["python3", "-m", "llmops_runtime"]
#: The serving container's user and group: the image's ``USER`` and the pod's ``runAsUser``/``runAsGroup``/``fsGroup``.
RUNTIME_UID = 1000
#: The module the entrypoint execs (``python -m``), with the container's args.
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
#: The file that marks a finished download in ENV_MODEL_DIR (JSON: uri, files, bytes, seconds).
COMPLETE_MARKER = ".llmops-complete.json"
#: The LoRA adapters to serve on the base model (``spec.adapters``), a JSON list of objects ``{"name": the model
#: name clients send, "uri": what to fetch (the same schemes as ENV_MODEL_URI), "dir": where to fetch it (under
#: ADAPTER_CACHE_DIR; vLLM's ``--lora-modules name=dir`` points there), "base": the base model the adapter must
#: have been trained on, or null}``. The entrypoint fetches each like the model (completion marker, atomic rename)
#: and refuses to start when an adapter's ``adapter_config.json`` names another base model.
ENV_ADAPTERS = "LLMOPS_ADAPTERS"
#: Where adapters are fetched, in the cache volume.
ADAPTER_CACHE_DIR = f"{MODEL_CACHE_DIR}/adapters"


def revision_deployment_name(deployment: str, revision: str) -> str:
    """The Deployment serving one revision: ``<llmdeployment>-<revision>`` (at most 63 characters)."""
    return f"{deployment}-{revision}"
