"""The custom resources' API types (group ``llmops.dev``, version ``v1alpha1``).

These pydantic models are the single source of truth for the CRD schemas: ``llm-operator crds``
turns them into ``crds/*.yaml`` (see ``_crdgen``), and the operator parses live objects with them.
Field names are the Kubernetes (camelCase) names; units are in the names or the descriptions
(seconds, ratios 0..1, percent 0..100).

Constraints that a single field can express (minimum, pattern) live on the field, so both the API
server (through the generated schema) and the operator (through pydantic) enforce them. Rules that
span fields are CEL ``x-kubernetes-validations`` on the model *and* checks in ``_validation``, because
the operator must not trust that every object it reads went through a CEL-capable API server.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidatorFunctionWrapHandler, WithJsonSchema, WrapValidator, model_validator
from pydantic.alias_generators import to_camel

from ._vocabulary import Phase

#: The custom resources' API group.
GROUP = "llmops.dev"
#: Their API version: the one version served and stored.
VERSION = "v1alpha1"
#: ``apiVersion`` of every LLMDeployment and LLMRollout: ``llmops.dev/v1alpha1``.
API_VERSION = f"{GROUP}/{VERSION}"

#: The serving image (runtime-image/: vLLM 0.32.0 plus the llmops_runtime entrypoint).
DEFAULT_RUNTIME_IMAGE = "ghcr.io/llm-operator/runtime:0.1.0-vllm0.32.0"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"

_DURATION_RE = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_QUANTITY_RE = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_DNS_LABEL_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS-1035 label (a Service name): lower-case letters, digits and '-', starting with a letter, ending alphanumeric.
_DNS_1035_RE = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: The prefix of the environment variables the operator sets on the serving container (``_contract.ENV_*``).
RESERVED_ENV_PREFIX = "LLMOPS_"
#: The variables the operator sets from ``model.mlflow.secretRef`` when it is given.
REGISTRY_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN")

#: A duration such as ``"30s"``, ``"5m"``, ``"1h30m"`` (Go ``time.ParseDuration`` units ms, s, m, h).
Duration = Annotated[str, StringConstraints(pattern=_DURATION_RE)]
#: A Kubernetes resource quantity (``4``, ``"500m"``, ``"16Gi"``); int-or-string in the schema.
Quantity = Annotated[int | Annotated[str, StringConstraints(pattern=_QUANTITY_RE)], Field(json_schema_extra={"x-kubernetes-int-or-string": True})]
Percent = Annotated[int, Field(ge=0, le=100)]


def _as_read(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    return value if type(value) is int else handler(value)


#: A JSON number of a status, kept as read: an integer stays one. kube-apiserver returns a whole-number float
#: as an integer (``3.0`` as ``3``); a status parsed and dumped again must say ``3`` too, not ``3.0`` (the same
#: value, not the same JSON). The schema is a plain ``number``.
Number = Annotated[float, WrapValidator(_as_read)]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse a :data:`Duration` string into seconds.

    >>> parse_duration("1h30m"), parse_duration("250ms")
    (5400.0, 0.25)

    Raises:
        ValueError: when ``text`` is not a duration.
    """
    if not re.fullmatch(_DURATION_RE, text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h30m)")
    return sum(float(num) * _DURATION_UNITS[unit] for num, _, unit in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|s|m|h)", text))


class _Model(BaseModel):
    """Base for API types: camelCase names on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_wire(self) -> dict[str, Any]:
        """The object as it stands in the API (camelCase keys, unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


#: A rule's detailed message (a CEL expression with the offending figures) for the operator's own ``InvalidSpec``
#: verdict only. kube-apiserver prices every ``string()`` conversion in a ``messageExpression`` as unbounded and
#: refuses the whole CRD ("estimated messageExpression cost exceeds budget"), so the CRD carries the plain
#: ``message`` and :mod:`._crdgen` leaves keys with this prefix out of the generated YAML.
OPERATOR_ONLY = "x-llmops-"
OPERATOR_MESSAGE = OPERATOR_ONLY + "message-expression"


def _cel(*rules: tuple[str, ...]) -> dict[str, Any]:
    """``x-kubernetes-validations`` entries: (rule, message[, fieldPath[, detail]]), where ``detail`` is a CEL
    expression for the operator's own message (:data:`OPERATOR_MESSAGE`), never sent to the API server."""
    entries = []
    for rule, message, *rest in rules:
        entry = {"rule": rule, "message": message}
        if rest:
            entry["fieldPath"] = rest[0]
        if len(rest) > 1:
            entry[OPERATOR_MESSAGE] = rest[1]
        entries.append(entry)
    return {"x-kubernetes-validations": entries}


# CEL sees only what the user wrote (the CRD sets no defaults), so optional fields are read with has().
_GPUS = "(has(self.resources) && has(self.resources.gpus) ? self.resources.gpus : 1)"
_TP = "(has(self.runtime) && has(self.runtime.tensorParallelSize) ? self.runtime.tensorParallelSize : 0)"
_PP = "(has(self.runtime) && has(self.runtime.pipelineParallelSize) ? self.runtime.pipelineParallelSize : 1)"
_MIN = "(has(self.minReplicas) ? self.minReplicas : 1)"


# --------------------------------------------------------------------------------------------- model


class SecretRef(_Model):
    """A Secret in the object's namespace."""

    name: Annotated[str, Field(min_length=1)]


class MlflowModelRef(_Model):
    """A registered model in the MLflow model registry, by exactly one of alias, stage or version.

    Aliases (MLflow 2.3+, ``models:/name@alias``) are the primary path; stages are deprecated since
    MLflow 2.9 and supported for older servers.
    """

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("[has(self.alias), has(self.stage), has(self.version)].exists_one(x, x)",
             "exactly one of alias, stage or version must be set"),
        )
    )

    name: Annotated[str, Field(min_length=1, description="Registered model name.")]
    alias: Annotated[str, Field(min_length=1)] | None = Field(None, description="Follow this alias, e.g. champion.")
    stage: Literal["Staging", "Production"] | None = Field(None, description="Follow the latest version in this stage (deprecated in MLflow).")
    version: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*$")] | None = Field(None, description="Pin this version.")
    secret_ref: SecretRef | None = Field(
        None, description="Secret with MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN; the operator's settings otherwise."
    )
    promote_alias: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")] | None = Field(
        None, description="On promotion, point this alias at the new version (e.g. production). "
                          "An aborted version leaves it where it was.")
    promote_stage: Literal["Staging", "Production"] | None = Field(
        None, description="On promotion, transition the new version to this stage, archiving the versions in it "
                          "(stages are deprecated in MLflow; prefer promoteAlias).")


class ModelSource(_Model):
    """What to serve: exactly one of an MLflow registry reference or a storage URI."""

    model_config = ConfigDict(
        json_schema_extra=_cel(("has(self.mlflow) != has(self.uri)", "exactly one of mlflow or uri must be set"))
    )

    mlflow: MlflowModelRef | None = None
    uri: Annotated[str, StringConstraints(pattern=r"^(hf|s3|gs|pvc)://[^/]+(/.*)?$")] | None = Field(
        None, description="hf://org/model, s3://bucket/path, gs://bucket/path or pvc://claim/path."
    )
    served_model_name: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="The model name clients send in requests; defaults to the LLMDeployment's name."
    )


class AdapterMlflowRef(_Model):
    """A LoRA adapter registered in the MLflow model registry (the base model's registry), by exactly one of alias,
    stage or version. An alias or stage is followed: when it moves, the new version rolls out like any revision."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("[has(self.alias), has(self.stage), has(self.version)].exists_one(x, x)",
             "exactly one of alias, stage or version must be set"),
        )
    )

    name: Annotated[str, Field(min_length=1, description="Registered model name of the adapter.")]
    alias: Annotated[str, Field(min_length=1)] | None = None
    stage: Literal["Staging", "Production"] | None = None
    version: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*$")] | None = None
    secret_ref: SecretRef | None = Field(
        None, description="Secret with MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN, for a model that names none (a URI): "
                          "the operator resolves the adapter and the pods fetch it with them. One registry per deployment: "
                          "with model.mlflow.secretRef, or another adapter's, it must name the same Secret.")


class Adapter(_Model):
    """A LoRA adapter served on the base model (vLLM ``--lora-modules``): clients ask for it by ``name`` as the
    request's ``model``; exactly one of a storage URI or an MLflow reference says what to fetch."""

    model_config = ConfigDict(
        json_schema_extra=_cel(("has(self.mlflow) != has(self.uri)", "exactly one of mlflow or uri must be set"))
    )

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)] = Field(
        description="The model name clients send for this adapter.")
    uri: Annotated[str, StringConstraints(pattern=r"^(hf|s3|gs)://[^/]+(/.*)?$")] | None = Field(
        None, description="hf://org/adapter, s3://bucket/path or gs://bucket/path.")
    mlflow: AdapterMlflowRef | None = None
    base_model: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="The base model the adapter was trained on, when its adapter_config.json names it otherwise "
                          "than the served model is known (the serving pod refuses an adapter of another base).")


# ------------------------------------------------------------------------------------------- runtime


class EnvVar(_Model):
    """A container environment variable (``valueFrom`` as in a Pod spec)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (f"!self.name.startsWith('{RESERVED_ENV_PREFIX}')",
             f"{RESERVED_ENV_PREFIX}* variables are the operator's contract with the serving image (set from the spec); "
             "use another name", ".name"),
        )
    )

    name: Annotated[str, Field(min_length=1)]
    value: str | None = None
    value_from: dict[str, Any] | None = Field(None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class ModelCache(_Model):
    """Where model weights are cached: a PersistentVolumeClaim, or an emptyDir of ``sizeLimit``."""

    claim_name: str | None = None
    size_limit: Quantity = "200Gi"


class Runtime(_Model):
    """The vLLM server: image and engine arguments under their vLLM names (``--max-model-len`` is
    ``maxModelLen``). Anything else goes to ``extraArgs`` verbatim."""

    image: str = DEFAULT_RUNTIME_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    max_model_len: Annotated[int, Field(ge=1)] | None = Field(None, description="Context length in tokens.")
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Ratio 0..1 of each GPU's memory vLLM may use."
    )
    tensor_parallel_size: Annotated[int, Field(ge=1)] | None = Field(None, description="Defaults to resources.gpus.")
    pipeline_parallel_size: Annotated[int, Field(ge=1)] | None = None
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] | None = None
    quantization: str | None = Field(None, description="A vLLM quantization method, e.g. awq, gptq, fp8.")
    kv_cache_dtype: str | None = None
    enable_prefix_caching: bool | None = None
    enforce_eager: bool | None = None
    max_num_seqs: Annotated[int, Field(ge=1)] | None = None
    max_num_batched_tokens: Annotated[int, Field(ge=1)] | None = None
    max_loras: Annotated[int, Field(ge=1)] | None = Field(
        None, description="LoRA adapters in one batch (--max-loras); with spec.adapters, defaults to their number.")
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] | None = Field(
        None, description="The largest adapter rank (--max-lora-rank; vLLM's default 16).")
    extra_args: list[str] = Field(default_factory=list, description="Further vLLM flags, passed verbatim.")
    env: list[EnvVar] = Field(
        default_factory=list, max_length=256,
        description="Environment of the serving container, one entry per name. An entry replaces the operator's default "
                    "of the same name (HOME, HF_HOME, VLLM_NO_USAGE_STATS, DO_NOT_TRACK); LLMOPS_* names are refused, "
                    "as are MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN when model.mlflow.secretRef sets them.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    cache: ModelCache = Field(default_factory=ModelCache)
    startup_timeout_seconds: Annotated[int, Field(ge=60)] = Field(
        1800, description="Budget for downloading and loading the model before the startupProbe gives up."
    )
    termination_grace_period_seconds: Annotated[int, Field(ge=0)] = Field(
        120, description="Time vLLM gets to drain in-flight requests after SIGTERM."
    )


class Toleration(_Model):
    """A Pod toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


#: The node label NVIDIA's GPU feature discovery (and the GPU operator) sets to the GPU model, e.g.
#: ``NVIDIA-A100-SXM4-80GB``: what ``resources.gpuProducts`` matches.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


class TopologySpread(_Model):
    """One topology spread constraint over a revision's pods (the operator adds the label selector: that
    revision's pods)."""

    topology_key: Annotated[str, Field(min_length=1, max_length=316)] = Field(
        description="A node label whose values are the domains, e.g. topology.kubernetes.io/zone or kubernetes.io/hostname.")
    max_skew: Annotated[int, Field(ge=1)] = Field(1, description="Pods in one domain may exceed those in another by at most this many.")
    when_unsatisfiable: Literal["ScheduleAnyway", "DoNotSchedule"] = Field(
        "ScheduleAnyway", description="ScheduleAnyway: a preference (a full cluster still schedules); DoNotSchedule: a hard rule.")


class Resources(_Model):
    """Compute for each replica. ``gpus: 0`` serves on CPUs (vLLM's CPU build)."""

    gpus: Annotated[int, Field(ge=0)] = Field(1, description="GPUs per replica.")
    gpu_resource_name: str = DEFAULT_GPU_RESOURCE
    cpu: Quantity | None = None
    memory: Quantity | None = None
    shm_size: Quantity = Field("2Gi", description="Size of the memory-backed /dev/shm (NCCL, tensor parallelism).")
    node_selector: dict[str, str] = Field(default_factory=dict)
    gpu_products: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list, max_length=32,
        description=f"GPU models any of which will do, as the nodes' {GPU_PRODUCT_LABEL} label names them (e.g. "
                    "NVIDIA-A100-SXM4-80GB, NVIDIA-H100-80GB-HBM3): a required node affinity, the alternative to a "
                    "nodeSelector that names one.")
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class_name: str | None = None
    topology_spread: list[TopologySpread] | None = Field(
        None, max_length=8,
        description="How a revision's pods spread over nodes and zones. Not set: over topology.kubernetes.io/zone and "
                    "kubernetes.io/hostname, maxSkew 1, ScheduleAnyway, when the LLMDeployment may run more than one "
                    "replica (replicas or autoscaling.maxReplicas above 1); [] spreads nothing; a list is used as written.")


# --------------------------------------------------------------------------------- scale and traffic


class KedaOptions(_Model):
    """KEDA's Prometheus trigger."""

    server_address: Annotated[str, Field(min_length=1)] = Field(description="Prometheus base URL.")
    polling_interval_seconds: Annotated[int, Field(ge=1)] = 15


class Autoscaling(_Model):
    """Horizontal scaling on a vLLM signal (per pod average)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (f"{_MIN} <= self.maxReplicas", "minReplicas must not exceed maxReplicas", ".minReplicas"),
            (f"{_MIN} >= 1 || (has(self.provider) && self.provider == 'keda')",
             "minReplicas 0 (scale to zero) needs provider keda", ".minReplicas"),
            ("!has(self.provider) || self.provider != 'keda' || has(self.keda)",
             "provider keda needs keda.serverAddress", ".keda"),
        )
    )

    provider: Literal["hpa", "keda"] = Field(
        "hpa", description="hpa: autoscaling/v2 on prometheus-adapter Pods metrics; keda: a ScaledObject."
    )
    min_replicas: Annotated[int, Field(ge=0)] = Field(1, description="0 (scale to zero) needs provider keda.")
    max_replicas: Annotated[int, Field(ge=1)]
    metric: Literal["numRequestsWaiting", "numRequestsRunning", "kvCacheUsage"] = Field(
        "numRequestsWaiting",
        description="vllm:num_requests_waiting, vllm:num_requests_running, or vllm:kv_cache_usage_perc (ratio 0..1).",
    )
    target: Annotated[float, Field(gt=0)] = Field(5.0, description="Per-pod average of the metric to hold.")
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        600, description="How long load must stay low before replicas are removed (models load slowly)."
    )
    keda: KedaOptions | None = None


#: Conditions under which the mesh retries a request, each one where the model server never started on it: the
#: connection failed (``connect-failure``), the server refused the HTTP/2 stream (``refused-stream``), the connection
#: was reset before the request was sent (``reset-before-request``, Envoy 1.31 / Istio 1.23), or the answer was a 503
#: (vLLM answers 503 only before it processes a request; Envoy's own 503s are no healthy or overflowing upstream).
#: ``5xx``, ``reset`` and ``gateway-error`` are left out on purpose: they retry a generation that started.
RetryCondition = Literal["connect-failure", "refused-stream", "reset-before-request", "503"]
DEFAULT_RETRY_ON: tuple[RetryCondition, ...] = ("connect-failure", "refused-stream", "reset-before-request", "503")
#: A duration above zero (Istio refuses a zero timeout: "must be a valid duration greater than 1ms").
_POSITIVE_DURATION = _cel(("duration(self) >= duration('1ms')", "must be a duration of at least 1ms"))


class Retries(_Model):
    """Retries on the VirtualService's routes, only where the model server never started on the request
    (Envoy retries only before it has sent the response's headers on, so a streamed answer is never replayed)."""

    attempts: Annotated[int, Field(ge=0, le=10)] = Field(2, description="Retries after the first attempt; 0 turns them off.")
    retry_on: list[RetryCondition] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_ON), min_length=1, max_length=4,
        description="Of connect-failure, refused-stream, reset-before-request (Istio 1.23 and later) and 503. Conditions that "
                    "would replay a generation that started (5xx, reset, gateway-error) are not accepted.",
        json_schema_extra={"x-kubernetes-list-type": "set"})


class OutlierDetection(_Model):
    """Ejecting a pod from the stable Service's load balancing after consecutive server errors."""

    consecutive_5xx_errors: Annotated[int, Field(ge=0)] = Field(
        5, alias="consecutive5xxErrors",
        description="Consecutive 5xx answers (connection failures and timeouts count as 503 and 504) that eject a pod; 0 turns ejection off.")
    interval: Duration = Field("10s", description="How often the ejections are evaluated.", json_schema_extra=_POSITIVE_DURATION)
    base_ejection_time: Duration = Field("30s", description="How long a pod stays out the first time (longer each time again).",
                                         json_schema_extra=_POSITIVE_DURATION)
    max_ejection_percent: Percent = Field(50, description="Percent 0..100 of the pods that may be ejected at once.")


class ConnectionPool(_Model):
    """Circuit-breaking limits each client proxy applies to a Service; unset values are sized from the runtime's
    ``maxNumSeqs`` (vLLM's largest default, 1024, when it is not set) and the most replicas the spec allows."""

    max_requests: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Requests in flight to the Service (http2MaxRequests; tcp.maxConnections too, HTTP/1.1 carrying "
                          "one at a time). Default: 2 x maxNumSeqs x replicas, a full batch on every pod and as many waiting "
                          "in vLLM's queues (the autoscaler's signal).")
    max_pending_requests: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Requests waiting in the client proxy for a connection (http1MaxPendingRequests). Default: "
                          "maxNumSeqs x replicas.")


#: The routers that split traffic between the stable and canary revisions (``spec.traffic.router``).
Router = Literal["istio", "gatewayAPI"]
#: A Gateway API duration (``HTTPRouteTimeouts``: up to four whole-number parts of h, m, s or ms, GEP-2257).
GATEWAY_DURATION_RE = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
# The Gateway API's own patterns (gateway.networking.k8s.io_httproutes.yaml, standard channel): a value its CRD
# refuses would make every apply of the HTTPRoute fail.
_GATEWAY_GROUP_RE = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_GATEWAY_SECTION_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_GATEWAY_HOSTNAME_RE = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ParentRef(_Model):
    """A parent of the HTTPRoute (Gateway API ``ParentReference``): a Gateway (and one of its listeners), or a
    Service for east-west traffic in a mesh that implements the Gateway API for it (GAMMA)."""

    group: Annotated[str, StringConstraints(pattern=_GATEWAY_GROUP_RE, max_length=253)] | None = Field(
        None, description="gateway.networking.k8s.io for a Gateway, '' (the core group) for a Service; by kind when not set.")
    kind: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$", max_length=63)] = "Gateway"
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    namespace: Annotated[str, StringConstraints(pattern=_DNS_LABEL_RE, max_length=63)] | None = Field(
        None, description="The parent's namespace; the LLMDeployment's when not set (a Gateway elsewhere must allow routes "
                          "from it: its listener's allowedRoutes).")
    section_name: Annotated[str, StringConstraints(pattern=_GATEWAY_SECTION_RE, max_length=253)] | None = Field(
        None, description="A listener of the Gateway (all of them when not set).")
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


class EndpointPickerRef(_Model):
    """The Service of an endpoint picker (the Gateway API Inference Extension's EPP, an ext_proc server)."""

    name: Annotated[str, StringConstraints(pattern=_DNS_1035_RE, max_length=63)]
    port: Annotated[int, Field(ge=1, le=65535)] = Field(9002, description="Its ext_proc port (9002 is the EPP's default).")


class EndpointPicker(_Model):
    """The endpoint pickers of the two InferencePools. One picker serves one pool (the EPP's ``--pool-name``), and the
    pools keep their names across revisions (``<name>`` selects the stable revision's pods, ``<name>-canary`` the
    canary's), so each picker is deployed once, for its pool, and keeps working through every rollout."""

    model_config = ConfigDict(json_schema_extra=_cel(
        ("self.stable.name != self.canary.name", "the stable and canary pools need an endpoint picker each (one EPP serves "
                                                 "one pool)", ".canary.name")))

    stable: EndpointPickerRef = Field(description="The picker of InferencePool <name> (run with --pool-name <name>).")
    canary: EndpointPickerRef = Field(description="The picker of InferencePool <name>-canary (--pool-name <name>-canary).")
    failure_mode: Literal["FailOpen", "FailClose"] = Field(
        "FailClose", description="What the gateway does when a picker does not answer: FailClose refuses the request, "
                                 "FailOpen sends it to a pod of the pool it picks itself.")


class GatewayApiTraffic(_Model):
    """The HTTPRoute of ``router: gatewayAPI``: its parents, its hostnames and its backends (the two revisions'
    InferencePools when endpoint pickers are given, their Services otherwise)."""

    parent_refs: list[ParentRef] = Field(min_length=1, max_length=32, description="The Gateways (or mesh Services) the "
                                                                                  "HTTPRoute attaches to.")
    hostnames: list[Annotated[str, StringConstraints(pattern=_GATEWAY_HOSTNAME_RE, min_length=1, max_length=253)]] = Field(
        default_factory=list, max_length=16, description="The host names it answers, lower case, a leading '*.' for a "
                                                         "wildcard (every one its parents accept when empty).")
    endpoint_picker: EndpointPicker | None = Field(
        None, description="With it, one InferencePool per revision role, each with its endpoint picker, as the HTTPRoute's "
                          "backends (the Gateway API Inference Extension); without it, the stable and canary Services, "
                          "which any Gateway API implementation routes to.")

    @model_validator(mode="after")
    def _distinct_parents(self) -> GatewayApiTraffic:
        # The HTTPRoute CRD's own rule, checked here rather than in CEL: kube-apiserver prices a pairwise check over
        # 32 parents beside the other rules of this schema beyond its budget (measured: the CRD was refused).
        seen = [(r.group if r.group is not None else ("" if r.kind == "Service" else "gateway.networking.k8s.io"), r.kind,
                 r.namespace, r.name, r.section_name, r.port) for r in self.parent_refs]  # the group as rendered
        if len(set(seen)) < len(seen):
            raise ValueError("each of parentRefs must name a distinct parent (kind, namespace, name, sectionName and port)")
        return self


class Traffic(_Model):
    """How clients reach the model (through Istio, or a Gateway API implementation), and how the mesh treats a
    failing or slow pod."""

    model_config = ConfigDict(json_schema_extra=_cel(
        ("!has(self.router) || self.router != 'gatewayAPI' || has(self.gatewayAPI)",
         "router gatewayAPI needs gatewayAPI.parentRefs (the Gateways its HTTPRoute attaches to)", ".gatewayAPI"),
        (f"!has(self.router) || self.router != 'gatewayAPI' || !has(self.timeout) || self.timeout.matches('{GATEWAY_DURATION_RE}')",
         "with router gatewayAPI, timeout is a Gateway API duration: whole numbers of h, m, s or ms (e.g. 600s, 1m30s)",
         ".timeout")))

    router: Router = Field(
        "istio", description="What splits traffic between the revisions: istio (a VirtualService over the stable and canary "
                             "Services, with DestinationRules) or gatewayAPI (an HTTPRoute, over InferencePools or the Services).")
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    hosts: list[str] = Field(default_factory=list, description="Extra hosts for the VirtualService.")
    gateways: list[str] = Field(default_factory=list, description="Istio gateways; the mesh is always included.")
    gateway_api: GatewayApiTraffic | None = Field(None, alias="gatewayAPI", description="The HTTPRoute of router gatewayAPI.")
    timeout: Annotated[Duration, StringConstraints(max_length=32)] = Field(
        "600s", description="Request timeout on every route, retries included: long enough for a long generation (a "
                            "streamed answer is cut when it runs longer).", json_schema_extra=_POSITIVE_DURATION)
    retries: Retries = Field(default_factory=Retries)
    outlier_detection: OutlierDetection = Field(default_factory=OutlierDetection)
    connection_pool: ConnectionPool = Field(default_factory=ConnectionPool)


# ------------------------------------------------------------------------------------------ auth

#: The variable vLLM reads its API key from (``vllm.envs.VLLM_API_KEY``; ``--api-key`` on the command line would be
#: in every log of the arguments, vLLM's own ``non-default args`` line among them).
API_KEY_ENV = "VLLM_API_KEY"


class SecretKeyRef(_Model):
    """One key of a Secret in the object's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = "api-key"


class ApiKeyAuth(_Model):
    """vLLM's own API key: requests to /v1 without ``Authorization: Bearer <key>`` get 401 (/health and /metrics
    stay open). The key reaches vLLM as the environment variable VLLM_API_KEY from the Secret, never as an argument."""

    secret_ref: SecretKeyRef


class JwtIssuer(_Model):
    """A JWT issuer whose tokens the serving pods' sidecars verify (an Istio RequestAuthentication rule)."""

    issuer: Annotated[str, Field(min_length=1, max_length=1024)] = Field(description="The tokens' iss claim.")
    jwks_uri: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=2048)] = Field(
        description="URL of the issuer's JSON Web Key Set.")
    audiences: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, max_length=16, description="Accepted aud values; empty: any.")


class ClaimMatch(_Model):
    """A top-level JWT claim that must hold one of ``values`` (a list claim: contain one)."""

    claim: Annotated[str, StringConstraints(pattern=r"^[^\[\]]+$", max_length=256)] = Field(description="e.g. groups, scope.")
    values: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, max_length=32)


class AllowRule(_Model):
    """Who may call: every field that is set must match (a value of each); requests matching any rule are allowed."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("[has(self.principals), has(self.namespaces), has(self.requestPrincipals), has(self.claims)].exists(x, x)",
             "set at least one of principals, namespaces, requestPrincipals, claims"),
        )
    )

    principals: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, max_length=32, description="Workload identities (mTLS), e.g. cluster.local/ns/apps/sa/chat-frontend.")
    namespaces: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, max_length=32, description="Namespaces the calling workloads run in (mTLS).")
    request_principals: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, max_length=32, description="JWT issuer/subject pairs, e.g. https://auth.example.com/user-1; '*': any valid token.")
    claims: list[ClaimMatch] | None = Field(None, max_length=8, description="JWT claims that must hold (a valid token is needed).")


class Auth(_Model):
    """Who may call the model: vLLM's API key, and/or Istio's JWT verification (RequestAuthentication) with an
    AuthorizationPolicy allowing only the listed callers, and mutual TLS for the serving pods (PeerAuthentication)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("!has(self.apiKey) || !has(self.jwt) || size(self.jwt) == 0",
             "apiKey and jwt both read the Authorization header (Istio removes a verified JWT before vLLM sees it): use one",
             ".jwt"),
        )
    )

    api_key: ApiKeyAuth | None = None
    jwt: list[JwtIssuer] = Field(
        default_factory=list, max_length=8,
        description="Issuers whose tokens are verified. A request with an invalid token gets 401; with no token, 403 "
                    "(the AuthorizationPolicy allows any valid token when allow is empty).")
    allow: list[AllowRule] = Field(
        default_factory=list, max_length=32,
        description="An ALLOW AuthorizationPolicy on the serving pods: only requests matching a rule (and GET /health, "
                    "/metrics for probes and Prometheus) pass; others get 403. Empty: none, unless jwt is set.")
    mtls: Literal["STRICT", "PERMISSIVE"] | None = Field(
        None, description="A PeerAuthentication for the serving pods: STRICT refuses plaintext callers (principals and "
                          "namespaces need mTLS). Not set: the mesh's default.")


class DisruptionBudget(_Model):
    """The PodDisruptionBudget over all revisions' pods."""

    enabled: bool = True
    max_unavailable: Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=r"^[0-9]+%$")] = Field(
        1, json_schema_extra={"x-kubernetes-int-or-string": True}
    )


class Slo(_Model):
    """Service-level objectives the rollout analysis holds revisions to."""

    availability: Annotated[float, Field(gt=0, lt=100)] = Field(
        99.9, description="Percent 0..100 of requests that must succeed; the error budget is 1 - availability/100."
    )
    latency_p99_seconds: Annotated[float, Field(gt=0)] | None = Field(None, description="p99 end-to-end latency.")
    time_to_first_token_p95_seconds: Annotated[float, Field(gt=0)] | None = Field(None, description="p95 TTFT.")
    window: Duration = Field("720h", description="The SLO period the error budget spans (720h = 30 days).")


# ------------------------------------------------------------------------------------------ rollouts


class PauseStep(_Model):
    """Wait ``duration``; with no duration, wait for a manual promote."""

    duration: Duration | None = None


class AnalysisStep(_Model):
    """Run the analysis for ``duration`` and fail the rollout on a failed verdict."""

    duration: Duration | None = None


class CanaryStep(_Model):
    """One step: exactly one of setWeight, pause, analysis, setMirror."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("[has(self.setWeight), has(self.pause), has(self.analysis), has(self.setMirror)].exists_one(x, x)",
             "each step must set exactly one of setWeight, pause, analysis, setMirror"),
        )
    )

    set_weight: Percent | None = Field(None, description="Percent 0..100 of traffic to the canary.")
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None
    set_mirror: Percent | None = Field(None, description="Percent 0..100 of traffic mirrored to the canary.")


BuiltinMetric = Literal[
    "errorRatio", "latencyP99", "timeToFirstTokenP95", "interTokenLatencyP95",
    "burnRate", "errorRatioVsStable", "latencyVsStable", "outputLengthDrift", "costPer1kTokens",
    "repetitionRatioVsStable", "promptLengthDrift", "timeToFirstTokenVsStable", "interTokenLatencyVsStable",
]


class AnalysisMetric(_Model):
    """One measurement: a built-in SLI or a PromQL query, with the bounds it must stay within."""

    model_config = ConfigDict(
        json_schema_extra=_cel(("has(self.builtin) != has(self.query)", "exactly one of builtin or query must be set"))
    )

    name: Annotated[str, StringConstraints(pattern=_DNS_LABEL_RE)]
    builtin: BuiltinMetric | None = None
    query: str | None = Field(
        None, description="PromQL; may use {{revision}}, {{stable_revision}}, {{namespace}}, {{interval}}."
    )
    min: float | None = None
    max: float | None = None


class FailFast(_Model):
    """A guard between analysis runs: every ``interval`` while the new revision takes user traffic (a canary at a
    weight above 0, or the new stable in its bake), the canary's error ratio over the last ``window`` is checked
    for a hard breach, and so is a canary whose engine stopped answering (running requests and no token over
    ``stallWindow``); a breach aborts at once (routes first), whatever the analysis interval. Soft evidence
    still waits for the analysis."""

    model_config = ConfigDict(json_schema_extra=_cel(
        ("!has(self.window) || !has(self.interval) || duration(self.window) >= duration(self.interval) + duration(self.interval)",
         "window must be at least two intervals: an increase() needs two scrapes", ".window"),
        ("!has(self.stallWindow) || !has(self.interval) || "
         "duration(self.stallWindow) >= duration(self.interval) + duration(self.interval)",
         "stallWindow must be at least two intervals: an increase() needs two scrapes", ".stallWindow"),
    ))

    enabled: bool = True
    interval: Duration = Field("5s", description="How often the guard looks: one Prometheus scrape interval (at least 1s).",
                               json_schema_extra=_cel(("duration(self) >= duration('1s')", "must be at least 1s")))
    window: Duration = Field("30s", description="The counts it looks at: requests and errors over this window (at least "
                                                "two intervals: two scrapes).",
                             json_schema_extra=_cel(("duration(self) >= duration('2s')", "must be at least 2s")))

    stall_window: Duration | None = Field(
        None, description="A canary whose pods held running requests for this whole window and generated no token in "
                          "it has an engine that stopped answering (a hung engine keeps /health at 200 and its pods "
                          "Ready). Long, because a long prompt's prefill generates no token for a while; at least two "
                          "intervals (not written: 2m, or two intervals when longer). Judged per engine, and only once "
                          "the rollout's attempt has lasted the whole window.",
        json_schema_extra=_cel(("duration(self) >= duration('2s')", "must be at least 2s")))

    @model_validator(mode="after")
    def _window_spans_two_intervals(self) -> FailFast:
        # stallWindow only when written: not written it is 2m, or two intervals when longer (_measure.stall_window), so
        # a failFast written before it existed stays valid, through every re-validation of the spec's wire form too
        # (a default value would be written out there, and judged as written).
        written = [("stallWindow", self.stall_window)] if self.stall_window is not None else []
        for name, value in [("window", self.window), *written]:
            if parse_duration(value) < 2 * parse_duration(self.interval):
                raise ValueError(f"failFast.{name} {value} must be at least two intervals ({self.interval}): an increase() "
                                 "needs two scrapes")
        return self
    error_budget_factor: Annotated[float, Field(gt=1, le=1000)] = Field(
        10.0, description="A hard breach is an error ratio of at least this many times the SLO's error budget "
                          "(1 - availability/100), capped at 0.5: at 99.9% and 10, 1% of requests failing.")
    confidence: Annotated[float, Field(ge=0.9, lt=1)] = Field(
        0.999, description="Ratio 0.9..1: the guard aborts only when an exact binomial test shows the error ratio above "
                           "the hard-breach bound at this confidence (checked every interval, so higher than the "
                           "analysis's).")
    min_requests: Annotated[int, Field(ge=1)] = Field(10, description="Below this many requests in the window the guard says nothing.")


class Analysis(_Model):
    """How revisions are measured during a rollout."""

    interval: Duration = "1m"
    error_source: Literal["vllm", "istio"] = Field(
        "vllm", description="vllm: vllm:request_success_total by finished_reason; istio: istio_requests_total 5xx (reporter=destination).")
    prometheus_address: str | None = Field(None, description="Prometheus base URL; the operator's setting otherwise.")
    min_requests: Annotated[int, Field(ge=0)] = Field(20, description="Below this many requests a measurement is inconclusive.")
    confidence: Annotated[float, Field(ge=0.5, lt=1)] = Field(
        0.95, description="Ratio 0.5..1: errorRatio and burnRate fail only when an exact binomial test shows a breach at this "
                          "confidence (the one-sided Clopper-Pearson lower bound above the bound); a ratio above the bound "
                          "without that evidence is inconclusive (held, never aborted on noise).")
    require_evidence_to_pass: bool = Field(
        False, description="errorRatio and burnRate pass only when the counts show the ratio within the bound at "
                           "confidence (the upper bound below it: about 3,000 error-free requests a run at a 99.9% target); "
                           "false: a ratio within the bound on at least minRequests requests passes.")
    inconclusive_limit: Annotated[int, Field(ge=1)] = 3
    consecutive_error_limit: Annotated[int, Field(ge=1)] = 4
    metrics: list[AnalysisMetric] = Field(default_factory=list, max_length=32,
                                          description="Empty: error ratio within budget, burn rate, errors and latency against stable, "
                                                      "and the SLO latencies.")
    gpu_hour_price: Annotated[float, Field(ge=0)] | None = Field(None, description="Price of one GPU-hour, for costPer1kTokens.")
    fail_fast: FailFast = Field(default_factory=FailFast)


class GateThreshold(_Model):
    """A bound on one of the candidate version's MLflow run metrics, checked before it gets any traffic."""

    model_config = ConfigDict(
        json_schema_extra=_cel(("has(self.min) || has(self.max)", "set min, max or both"))
    )

    metric: Annotated[str, Field(min_length=1, max_length=250, description="Run metric name, e.g. accuracy.")]
    min: float | None = Field(None, description="The metric must be at least this.")
    max: float | None = Field(None, description="The metric must be at most this.")


#: The canary a new revision goes through when ``spec.rollout.steps`` is not written: 5, 10, 25 and 50 percent,
#: each held until an analysis of ``analysisDuration`` (default 5 minutes) at that weight has passed against the
#: LLMDeployment's SLOs, then the switch.
DEFAULT_CANARY_WEIGHTS = (5, 10, 25, 50)

Strategy = Literal["canary", "blueGreen", "shadow", "none"]
_BAKE_DOC = ("After the switch to the new revision: how long the analysis keeps running on it (now stable) while the "
             "previous revision stays up at its size; a failed run rolls back to the previous revision (routes first), "
             "the rollout ends Aborted with reason RolledBack. The rollout is Succeeded once the bake is over, and the "
             "previous revision goes scaleDownDelaySeconds later. 0s: no bake. Not for strategy none, nor after "
             "spec.promote.")
_STRATEGY_DOC = ("canary (the default): steps, or when none are written the default canary 5, 10, 25, 50 percent, each "
                 "analysed for analysisDuration; blueGreen: the new revision full size behind the preview header, "
                 "analysed, then switched; shadow: a share of live traffic mirrored to it, analysed, then the steps; "
                 "none: switched at once once ready, with no analysis (the only way to skip the canary).")


class RolloutTemplate(_Model):
    """How an LLMDeployment moves to a new revision; LLMRollouts default to it."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("self.strategy != 'canary' || !has(self.steps) || size(self.steps) > 0",
             "an empty canary switches at once: leave steps out for the default canary, or set strategy: none"),
        )
    )

    strategy: Strategy = Field("canary", description=_STRATEGY_DOC)
    steps: list[CanaryStep] | None = Field(
        None, max_length=64,
        description="Canary steps. Not written: the default canary (setWeight 5, 10, 25, 50, each followed by an analysis "
                    "of analysisDuration). A weight or mirror step not followed by an analysis step gets one unless "
                    "analyzeEveryStep is false.")
    analyze_every_step: bool = Field(
        True, description="Hold each weight and mirror step until an analysis at that weight has passed (one of "
                          "analysisDuration is added after a step that has none of its own). false: the steps run as written.")
    analysis: Analysis | None = None
    progress_deadline_seconds: Annotated[int, Field(ge=60)] = Field(
        1800, description="Time a new revision gets to become ready (models load slowly)."
    )
    scale_down_delay_seconds: Annotated[int, Field(ge=0)] = Field(
        300, description="How long the previous revision is kept after a switch, so a switch back is instant."
    )
    abort_scale_down_delay_seconds: Annotated[int, Field(ge=0)] = Field(
        30, description="After an abort, how long the new revision's pods stay up while proxies converge on the stable-only routes.")
    analysis_duration: Duration = Field(
        "5m", description="Length of each analysis the operator adds: the default canary's, the one after a weight step "
                          "with none of its own, and the one blue-green and shadow rollouts run before switching.")
    bake_duration: Duration = Field(
        "30m", description=_BAKE_DOC)
    warm_replicas: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Pods the previous revision keeps during the bake, while it is kept to roll back to: scaled "
                          "down abortScaleDownDelaySeconds after the switch (the routes left it then). Not written: all it had, "
                          "so a rollback takes the traffic back at full size at once. Fewer saves GPUs: a rollback still "
                          "switches at once (the failing revision stops serving) and scales the previous revision back "
                          "up meanwhile, its requests queueing until the new pods have loaded the model.")
    mirror_percent: Percent = Field(50, description="Shadow: percent 0..100 of live traffic mirrored to the new revision.")
    preview_header: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$")] = Field(
        "x-llmops-preview", description="Blue-green: requests with this header set to 'true' reach the new revision.")
    quality_gate: list[GateThreshold] = Field(
        default_factory=list, max_length=32,
        description="Offline-evaluation gate: bounds on the new MLflow version's run metrics. A version that misses "
                    "one (or lacks the metric) gets no traffic; its rollout ends Failed with reason QualityGateFailed.")
    history_limit: Annotated[int, Field(ge=0, le=1000)] = Field(
        10, description="Finished LLMRollouts the operator created for this LLMDeployment that are kept (the newest "
                        "first); older ones are deleted once their outcome is in the registry. The rollout that "
                        "explains why the spec's revision does not serve, and one whose pods still drain, are always "
                        "kept; LLMRollouts people wrote are never deleted.")


# ----------------------------------------------------------------------------------------- status


class Condition(_Model):
    """A condition per the Kubernetes API conventions."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


_CONDITIONS_LIST: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class ResolvedModel(_Model):
    """The model the stable revision serves, resolved from the spec and the MLflow registry: which model and version, trained by which run with which parameters."""  # noqa: E501 (the CRD's description: one line)

    name: str
    source: Literal["mlflow", "uri"]
    uri: str = Field(description="What the serving pods load: models:/name/version (pinned) or the storage URI.")
    version: str | None = None
    alias: str | None = Field(None, description="The alias the deployment follows, when it follows one.")
    stage: str | None = None
    artifact_uri: str | None = Field(None, description="The registry's source URI of the version's artifacts.")
    run_id: str | None = None
    metrics: dict[str, float] | None = Field(None, description="The training run's metrics (at most 64).")
    params: dict[str, str] | None = Field(None, description="The training run's parameters (at most 64).")
    tags: dict[str, str] | None = Field(None, description="The version's tags (at most 64).")


class ServedAdapter(_Model):
    """A LoRA adapter a revision serves, as resolved."""

    name: str = Field(description="The model name clients send for it.")
    uri: str = Field(description="What the pods fetch: models:/name/version (pinned) or the storage URI.")
    model: str | None = Field(None, description="Its registered model in MLflow.")
    version: str | None = Field(None, description="The MLflow version served.")
    alias: str | None = Field(None, description="The alias it follows, when it follows one.")
    stage: str | None = None
    base_model: str | None = Field(None, description="The base model asserted for it (spec.adapters[].baseModel).")


class RevisionStatus(_Model):
    """One model revision's Deployment."""

    revision: str
    deployment: str
    role: Literal["stable", "canary", "previous"]
    model_uri: str
    model_version: str | None = Field(None, description="The MLflow version, when modelUri is models:/<name>/<version>.")
    replicas: int = 0
    ready_replicas: int = 0


class DrainingRevision(_Model):
    """A revision whose traffic went back to stable after its LLMRollout was deleted in flight: its pods stay while the proxies converge on the stable-only routes."""  # noqa: E501 (the CRD's description: one line)

    revision: str
    scale_down_at: str = Field(description="When its Deployment is deleted (RFC 3339): abortScaleDownDelaySeconds after the routes went back.")


class LLMDeploymentSpec(_Model):
    """Desired state of an LLMDeployment."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (f"{_TP} == 0 || ({_GPUS} == 0 ? {_TP} * {_PP} == 1 : {_GPUS} % ({_TP} * {_PP}) == 0)",
             "tensorParallelSize x pipelineParallelSize must divide resources.gpus (and be 1 when gpus is 0)",
             ".runtime.tensorParallelSize",
             f"'tensorParallelSize ' + string({_TP}) + ' x pipelineParallelSize ' + string({_PP}) + "
             f"' must divide resources.gpus (' + string({_GPUS}) + ' per replica; 1 x 1 when it is 0)'"),
            ("!has(self.model.mlflow) || !has(self.model.mlflow.secretRef) || !has(self.runtime) || !has(self.runtime.env) || "
             f"self.runtime.env.all(e, {' && '.join(f'e.name != {n!r}' for n in REGISTRY_ENV)})",
             f"{' and '.join(REGISTRY_ENV)} come from model.mlflow.secretRef: set them there or in runtime.env, not both",
             ".runtime.env"),
            (f"!has(self.auth) || !has(self.auth.apiKey) || !has(self.runtime) || !has(self.runtime.env) || "
             f"self.runtime.env.all(e, e.name != '{API_KEY_ENV}')",
             f"{API_KEY_ENV} comes from auth.apiKey.secretRef: set it there or in runtime.env, not both", ".runtime.env"),
        )
    )

    model: ModelSource
    runtime: Runtime = Field(default_factory=Runtime)
    resources: Resources = Field(default_factory=Resources)
    replicas: Annotated[int, Field(ge=0)] = Field(1, description="Replicas of the stable revision when autoscaling is off.")
    autoscaling: Autoscaling | None = None
    traffic: Traffic = Field(default_factory=Traffic)
    auth: Auth = Field(default_factory=Auth)
    slo: Slo = Field(default_factory=Slo)
    rollout: RolloutTemplate = Field(default_factory=RolloutTemplate)
    disruption_budget: DisruptionBudget = Field(default_factory=DisruptionBudget)
    adapters: list[Adapter] = Field(
        default_factory=list, max_length=64,
        description="LoRA adapters served on the model, one per name. They are part of the revision: adding, changing or "
                    "removing one (or an alias of one moving) rolls out like a new model.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})


class LLMDeploymentStatus(_Model):
    """Observed state of an LLMDeployment."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_CONDITIONS_LIST)
    model: ResolvedModel | None = None
    stable_revision: str | None = None
    canary_revision: str | None = None
    spec_revision: str | None = Field(None, description="The revision the spec named at the last pass; a change starts a rollout.")
    previous_revision: str | None = None
    previous_scale_down_at: str | None = None
    rollout: str | None = Field(None, description="The LLMRollout in progress, if any.")
    revisions: list[RevisionStatus] = Field(default_factory=list)
    draining: list[DrainingRevision] = Field(
        default_factory=list, description="Revisions kept until their scale-down time after their LLMRollout was deleted in flight.")
    replicas: int | None = None
    ready_replicas: int | None = None
    endpoint: str | None = None
    router: Router | None = Field(None, description="The router whose objects split the traffic (a change of "
                                                    "spec.traffic.router deletes the other one's).")
    adapters: list[ServedAdapter] = Field(default_factory=list, description="The stable revision's LoRA adapters.")
    adapter_count: int | None = Field(None, description="How many LoRA adapters the stable revision serves.")


class TargetModel(_Model):
    """The revision a rollout moves to: an MLflow version of the deployment's registered model, or a URI."""

    model_config = ConfigDict(
        json_schema_extra=_cel(("has(self.version) != has(self.uri)", "exactly one of version or uri must be set"))
    )

    version: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*$")] | None = None
    uri: Annotated[str, StringConstraints(pattern=r"^(hf|s3|gs|pvc)://[^/]+(/.*)?$")] | None = None


class RolloutTarget(_Model):
    """The new revision: a model, and optionally runtime settings and LoRA adapters that replace the deployment's."""

    model: TargetModel
    runtime: Runtime | None = None
    adapters: list[Adapter] | None = Field(
        None, max_length=64, description="The adapters the new revision serves (the deployment's when not given).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})


class LLMRolloutSpec(_Model):
    """Desired state of an LLMRollout. Strategy fields left out come from the LLMDeployment's
    ``spec.rollout`` template."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("!has(self.strategy) || self.strategy != 'canary' || !has(self.steps) || size(self.steps) > 0",
             "an empty canary switches at once: leave steps out for the default canary, or set strategy: none"),
        )
    )

    deployment_name: Annotated[str, StringConstraints(pattern=_DNS_LABEL_RE)]
    target: RolloutTarget
    strategy: Strategy | None = Field(None, description="The LLMDeployment's spec.rollout.strategy when not set. " + _STRATEGY_DOC)
    steps: list[CanaryStep] | None = Field(None, max_length=64)
    analyze_every_step: bool | None = Field(None, description="The LLMDeployment's spec.rollout.analyzeEveryStep when not set.")
    analysis: Analysis | None = None
    analysis_duration: Duration | None = None
    bake_duration: Duration | None = Field(None, description="The LLMDeployment's spec.rollout.bakeDuration when not set.")
    mirror_percent: Percent | None = None
    progress_deadline_seconds: Annotated[int, Field(ge=60)] | None = None
    scale_down_delay_seconds: Annotated[int, Field(ge=0)] | None = None
    abort_scale_down_delay_seconds: Annotated[int, Field(ge=0)] | None = None
    quality_gate: list[GateThreshold] | None = Field(None, max_length=32)
    paused: bool = Field(False, description="Hold at the current step.")
    abort: bool = Field(False, description="Send all traffic back to stable, then scale the new revision down.")
    promote: bool = Field(False, description="Skip the remaining steps and switch to the new revision.")
    resume: Annotated[int, Field(ge=0)] = Field(0, description="Increment to continue past an indefinite pause or an inconclusive analysis.")
    retry: Annotated[int, Field(ge=0)] = Field(0, description="Increment to start an aborted or failed rollout again from its first step.")


class MetricStatus(_Model):
    """One metric of the last analysis run: value, bounds and verdict."""

    name: str
    verdict: Literal["Pass", "Fail", "Inconclusive", "Error"]
    message: str = ""
    value: Number | None = None
    min: Number | None = None
    max: Number | None = None


class AnalysisStatus(_Model):
    """The analysis of the current step: counters and the last run."""

    runs: int = 0
    passed: int = 0
    inconclusive: int = 0
    consecutive_errors: int = 0
    last_run_at: str | None = None
    verdict: Literal["Pass", "Fail", "Inconclusive", "Error"] | None = None
    requests: Number | None = None
    metrics: list[MetricStatus] = Field(default_factory=list)


class GateStatus(_Model):
    """The quality gate's verdict on the new version (evaluated once, before any traffic)."""

    passed: bool
    message: str = ""
    evaluated_at: str | None = None


class RegistryRecord(_Model):
    """The outcome written back to the MLflow registry after the rollout finished."""

    outcome: Literal["succeeded", "aborted", "failed"]
    recorded_at: str | None = None
    error: str | None = Field(None, description="Why the last write failed (it is retried).")


class BakeStatus(_Model):
    """The bake after the switch (``bakeDuration``): when it started and ends (RFC 3339), the revision kept warm to
    roll back to."""

    started_at: str
    ends_at: str
    previous_revision: str | None = None
    cut_short: bool | None = Field(None, description="Ended by a newer revision before endsAt (no promote alias moved).")


class LLMRolloutStatus(_Model):
    """Observed state of an LLMRollout: everything needed to resume after a restart."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_CONDITIONS_LIST)
    # a Phase (a str), under the schema the Literal of its values had: the CRD stays as it was
    phase: Annotated[Phase, WithJsonSchema({"enum": [p.value for p in Phase], "type": "string"})] | None = None
    message: str | None = None
    from_revision: str | None = None
    to_revision: str | None = None
    current_step_index: int | None = None
    steps_total: int | None = None
    steps_hash: str | None = None
    step_started_at: str | None = None
    waiting_since: str | None = Field(None, description="Since when the new revision's pods are awaited (progress deadline).")
    unavailable_since: str | None = Field(None, description="Since when the canary takes traffic with no ready pod (the "
                                                            "fail-fast guard aborts after two of its intervals).")
    canary_weight: int | None = None
    mirror_weight: int | None = None
    preview: bool | None = None
    canary_replicas: int | None = None
    analysis: AnalysisStatus | None = None
    observed_retry: int | None = None
    observed_resume: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    quality_gate: GateStatus | None = None
    registry: RegistryRecord | None = None
    bake: BakeStatus | None = None


# ------------------------------------------------------------------------------------------ kinds


ColumnType = Literal["string", "integer", "number", "boolean", "date"]


class PrinterColumn(_Model):
    name: str
    type: ColumnType
    json_path: str
    priority: int = 0
    description: str | None = None


class _Kind:
    """Class attributes naming a custom resource kind and how kubectl shows it."""

    kind: ClassVar[str]
    plural: ClassVar[str]
    singular: ClassVar[str]
    short_names: ClassVar[list[str]]
    categories: ClassVar[list[str]] = ["all", "llmops"]
    printer_columns: ClassVar[list[PrinterColumn]]
    spec_model: ClassVar[type[_Model]]
    status_model: ClassVar[type[_Model]]
    #: Constraints on ``metadata.name``, declared on that property (kube-apiserver allows ``name`` and
    #: ``generateName`` there): at most ``name_max_length`` characters, and CEL rules (rule, message) whose ``self``
    #: is the name. A rule on ``metadata.name`` is ratcheted (an object stored before it keeps being writable, spec
    #: and status, as long as its name is unchanged, which it always is); a root rule is not (measured on
    #: kube-apiserver 1.37: a status write of such an object is refused).
    name_max_length: ClassVar[int | None] = None
    #: JSON paths a LIST or WATCH may filter on with a field selector (the CRD's ``selectableFields``,
    #: kube-apiserver 1.32+): the operator lists only the LLMRollouts of the deployment it reconciles.
    selectable_fields: ClassVar[list[str]] = []
    name_rules: ClassVar[list[tuple[str, str]]] = []
    name_description: ClassVar[str | None] = None


def _col(name: str, type_: ColumnType, path: str, priority: int = 0, description: str | None = None) -> PrinterColumn:
    return PrinterColumn(name=name, type=type_, json_path=path, priority=priority, description=description)


class LLMDeployment(_Kind):
    kind = "LLMDeployment"
    plural = "llmdeployments"
    singular = "llmdeployment"
    short_names = ["llmd"]
    spec_model = LLMDeploymentSpec
    status_model = LLMDeploymentStatus
    # '<name>-<10-char revision>' names a Deployment and must fit a 63-character label value; '<name>' and
    # '<name>-canary' name Services, which must be DNS-1035 labels (a custom resource's name need only be a DNS-1123
    # subdomain: 'llama-3.1-8b' and '7b-chat' are valid LLMDeployment names, not valid Service names).
    name_max_length = 52
    name_rules = [(f"self.matches('{_DNS_1035_RE}')",
                   "must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter and ending with a "
                   "letter or digit, e.g. llama-3-1-8b): the LLMDeployment's Services are named after it")]
    name_description = ("At most 52 characters and a DNS-1035 label: the revision Deployments (<name>-<revision>) and "
                        "the Services (<name>, <name>-canary) are named after it.")
    printer_columns = [
        _col("Model", "string", ".status.model.name"),
        _col("Version", "string", ".status.model.version"),
        _col("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        _col("Replicas", "integer", ".status.replicas"),
        _col("Age", "date", ".metadata.creationTimestamp"),
        _col("Available", "integer", ".status.readyReplicas", 1),
        _col("Revision", "string", ".status.stableRevision", 1),
        _col("Canary", "string", ".status.canaryRevision", 1),
        _col("GPUs", "integer", ".spec.resources.gpus", 1, "GPUs per replica"),
        _col("Adapters", "integer", ".status.adapterCount", 1, "LoRA adapters the stable revision serves"),
        _col("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', 1),
        _col("Endpoint", "string", ".status.endpoint", 1),
    ]


class LLMRollout(_Kind):
    kind = "LLMRollout"
    plural = "llmrollouts"
    singular = "llmrollout"
    short_names = ["llmro"]
    spec_model = LLMRolloutSpec
    status_model = LLMRolloutStatus
    selectable_fields = [".spec.deploymentName"]
    printer_columns = [
        _col("Deployment", "string", ".spec.deploymentName"),
        _col("From", "string", ".status.fromRevision"),
        _col("To", "string", ".status.toRevision"),
        _col("Phase", "string", ".status.phase"),
        _col("Step", "integer", ".status.currentStepIndex"),
        _col("Weight", "integer", ".status.canaryWeight"),
        _col("Age", "date", ".metadata.creationTimestamp"),
        _col("Mirror", "integer", ".status.mirrorWeight", 1),
        _col("Message", "string", ".status.message", 1),
    ]


KINDS: tuple[type[_Kind], ...] = (LLMDeployment, LLMRollout)
