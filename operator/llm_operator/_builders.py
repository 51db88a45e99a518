"""Pure builders: an LLMDeployment's spec in, Kubernetes manifests (plain dicts) out. No I/O.

The operator and ``llm-operator render`` call the same functions. Owner references are added by the
caller (they need the owner's uid, which only the API server knows).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic import BaseModel

from . import _contract as c
from ._api import (
    API_KEY_ENV,
    GPU_PRODUCT_LABEL,
    REGISTRY_ENV,
    RESERVED_ENV_PREFIX,
    Adapter,
    AllowRule,
    LLMDeploymentSpec,
    ParentRef,
    ResolvedModel,
    Resources,
    Runtime,
)

#: Pods metric names under which prometheus-adapter exposes vLLM's gauges (colons are not allowed).
ADAPTER_METRICS = {
    "numRequestsWaiting": ("vllm:num_requests_waiting", "vllm_num_requests_waiting"),
    "numRequestsRunning": ("vllm:num_requests_running", "vllm_num_requests_running"),
    "kvCacheUsage": ("vllm:kv_cache_usage_perc", "vllm_kv_cache_usage_perc"),
}

#: vLLM engine arguments taken from ``spec.runtime``: field name -> flag.
_ENGINE_FLAGS = {
    "max_model_len": "--max-model-len",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "pipeline_parallel_size": "--pipeline-parallel-size",
    "dtype": "--dtype",
    "quantization": "--quantization",
    "kv_cache_dtype": "--kv-cache-dtype",
    "enable_prefix_caching": "--enable-prefix-caching",
    "enforce_eager": "--enforce-eager",
    "max_num_seqs": "--max-num-seqs",
    "max_num_batched_tokens": "--max-num-batched-tokens",
}


#: The annotation on a revision's Deployment recording the defaults its pods were built with (JSON, the
#: :data:`REVISION_BASELINE` fields' values), so a later release's defaults never reach a running revision.
DEFAULTS_ANNOTATION = "llmops.dev/defaults"

#: The defaults that reach a revision's pod template, frozen at the values of the release that introduced them.
#: A revision id leaves out values equal to these, so ids do not change when a later release changes a default
#: (a revision built with the new default then differs from one built with the old, as it must), and every field
#: added later that has a default must be added here with that first default (a unit test checks it). Fields with
#: no default or an empty one (``None``, ``[]``, ``{}``) are compared with their own default.
REVISION_BASELINE: dict[str, dict[str, Any]] = {
    "runtime": {
        "image": "ghcr.io/llm-operator/runtime:0.1.0-vllm0.32.0",
        "cache": {"sizeLimit": "200Gi"},
        "startupTimeoutSeconds": 1800,
        "terminationGracePeriodSeconds": 120,
    },
    "resources": {"gpus": 1, "gpuResourceName": "nvidia.com/gpu", "shmSize": "2Gi"},
}

#: The key of :data:`DEFAULTS_ANNOTATION` recording the topology spread a revision's pods get when
#: ``resources.topologySpread`` is not set (absent: none, as for every revision built before this default existed).
SPREAD_DEFAULT_KEY = "topologySpread"
#: This release's default spread, recorded on each revision it builds: zones, then nodes, one pod of skew, as a
#: preference (``ScheduleAnyway``: a full cluster still schedules). Applied when the spec may run more than one replica.
DEFAULT_TOPOLOGY_SPREAD: tuple[dict[str, Any], ...] = (
    {"topologyKey": "topology.kubernetes.io/zone", "maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"},
    {"topologyKey": "kubernetes.io/hostname", "maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"},
)


@dataclass(frozen=True)
class Revision:
    """One servable revision: a resolved model plus the parts of the spec that shape its pods.

    ``id`` is 10 hex characters of a SHA-256 over the model URI, the served name and the effective runtime and
    resources, leaving out values equal to :data:`REVISION_BASELINE` (or to a field's own empty default), so a
    new optional field in a later release does not re-roll every revision. ``runtime`` and ``resources`` are the
    effective ones, fields the spec leaves out filled with ``defaults``: the values of the baseline fields this
    revision is built with, and the pod defaults outside the revision's identity (:data:`SPREAD_DEFAULT_KEY`),
    recorded on its Deployment (:data:`DEFAULTS_ANNOTATION`).
    """

    id: str
    model: ResolvedModel
    runtime: Runtime
    resources: Resources
    defaults: dict[str, Any] = field(default_factory=dict)
    #: The LoRA adapters it serves (their MLflow references pinned to versions by the pass: :func:`adapter_uri`).
    adapters: tuple[Adapter, ...] = ()


def _fill_unset(model: BaseModel, pins: Mapping[str, Any]) -> BaseModel:
    """``model`` with the fields it was not given (recursively) taken from ``pins`` (wire names).

    Raises:
        pydantic.ValidationError: when a pinned value no longer fits the field.
    """
    wire = model.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def fill(into: dict[str, Any], values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if key not in into:
                into[key] = copy.deepcopy(value)
            elif isinstance(into[key], dict) and isinstance(value, Mapping):
                fill(into[key], value)

    fill(wire, pins)
    return type(model).model_validate(wire)


def _identity(model: BaseModel, baseline: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``model`` names a revision: its values without those equal to their defaults, where the
    ``baseline`` fields (nested mappings entry by entry) compare with the baseline instead of this release's
    default."""
    out = model.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    full = model.model_dump(mode="json", by_alias=True)

    def rebase(into: dict[str, Any], values: Mapping[str, Any], base: Mapping[str, Any]) -> None:
        for key, first in base.items():
            if isinstance(first, dict):
                sub = into.setdefault(key, {})
                if isinstance(sub, dict):
                    rebase(sub, values.get(key) or {}, first)
                    if not sub:
                        del into[key]
            elif values.get(key) == first:
                into.pop(key, None)
            else:
                into[key] = values.get(key)

    rebase(out, full, baseline)
    return out


def _pick(values: Mapping[str, Any], keys: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that ``keys`` names (nested mappings picked entry by entry)."""
    return {key: _pick(values[key], sub) if isinstance(sub, dict) else values[key]
            for key, sub in keys.items() if key in values and values[key] is not None}


def make_revision(spec: LLMDeploymentSpec, model: ResolvedModel, defaults: Mapping[str, Any] | None = None) -> Revision:
    """The :class:`Revision` that serves ``model`` with ``spec``'s runtime and resources.

    ``defaults`` (as recorded by :data:`DEFAULTS_ANNOTATION`) fill the fields the spec leaves out, in place of
    this release's defaults: how a revision built by an earlier release is named and rendered again. A pod default
    the record lacks (:data:`SPREAD_DEFAULT_KEY`) is one that revision was built without; ``defaults=None`` (a new
    revision) takes this release's (:data:`DEFAULT_TOPOLOGY_SPREAD`).

    Raises:
        pydantic.ValidationError: when a value in ``defaults`` no longer fits its field.
    """
    runtime, resources = spec.runtime, spec.resources
    if defaults:
        runtime = _fill_unset(runtime, defaults.get("runtime") or {})  # type: ignore[assignment]
        resources = _fill_unset(resources, defaults.get("resources") or {})  # type: ignore[assignment]
    runtime_wire = runtime.model_dump(mode="json", by_alias=True)
    resources_wire = resources.model_dump(mode="json", by_alias=True)
    shaping: dict[str, Any] = {
        "model": model.uri,
        "runtime": _identity(runtime, REVISION_BASELINE["runtime"]),
        "resources": _identity(resources, REVISION_BASELINE["resources"]),
        "servedModelName": spec.model.served_model_name,
    }
    if spec.adapters:  # only then: a revision without adapters keeps the id it had before adapters existed
        shaping["adapters"] = sorted(([a.name, adapter_uri(a), a.base_model] for a in spec.adapters), key=lambda x: str(x[0]))
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    pinned: dict[str, Any] = {"runtime": _pick(runtime_wire, REVISION_BASELINE["runtime"]),
                              "resources": _pick(resources_wire, REVISION_BASELINE["resources"])}
    spread = [dict(c) for c in DEFAULT_TOPOLOGY_SPREAD] if defaults is None else (defaults or {}).get(SPREAD_DEFAULT_KEY)
    if isinstance(spread, list):
        pinned[SPREAD_DEFAULT_KEY] = copy.deepcopy(spread)
    return Revision(id=digest[:10], model=model, runtime=runtime, resources=resources, defaults=pinned,
                    adapters=tuple(sorted(spec.adapters, key=lambda a: a.name)))  # their order is not the revision's


def adapter_uri(adapter: Adapter) -> str:
    """What the serving pod fetches for ``adapter``: its storage URI, or ``models:/name/version`` (pinned),
    ``models:/name@alias`` / ``models:/name/Stage`` (followed: the pass pins them to the version they name).

    >>> adapter_uri(Adapter(name="sql", mlflow={"name": "sql-lora", "version": "3"}))
    'models:/sql-lora/3'
    """
    if adapter.uri is not None:
        return adapter.uri
    ref = adapter.mlflow
    assert ref is not None  # the schema requires exactly one of uri and mlflow
    return f"models:/{ref.name}/{ref.version}" if ref.version else (
        f"models:/{ref.name}@{ref.alias}" if ref.alias else f"models:/{ref.name}/{ref.stage}")


def adapter_dir(adapter: Adapter) -> str:
    """Where the serving pod fetches ``adapter`` (in the cache volume): a directory per name and URI, so a changed
    adapter is fetched anew and an unchanged one is reused from the cache by the next revision's pods."""
    digest = hashlib.sha256(adapter_uri(adapter).encode()).hexdigest()[:10]
    return f"{c.ADAPTER_CACHE_DIR}/{adapter.name}-{digest}"


def recorded_defaults(deployment: Mapping[str, Any] | None) -> dict[str, Any]:
    """The defaults a live revision Deployment was built with (:data:`DEFAULTS_ANNOTATION`); for one built
    before the annotation existed, :data:`REVISION_BASELINE` (the defaults of every release until then)."""
    text = ((deployment or {}).get("metadata") or {}).get("annotations", {}).get(DEFAULTS_ANNOTATION)
    try:
        recorded = json.loads(text) if text else None
    except ValueError:
        recorded = None
    return recorded if isinstance(recorded, dict) else copy.deepcopy(REVISION_BASELINE)


def spec_revision(spec: LLMDeploymentSpec, model: ResolvedModel, live: Mapping[str, Mapping[str, Any]]) -> Revision:
    """The revision ``spec`` names, given the live revision Deployments (revision id -> Deployment).

    A live revision that ``spec`` names once the fields it leaves out take the defaults that revision was built
    with is that revision, rendered as it was built: a release with new defaults (a new runtime image, say) does
    not re-template a running revision. Otherwise the spec names a new revision, built with this release's
    defaults, which reaches traffic through a rollout like any other. Pure.
    """
    fresh = make_revision(spec, model)
    for revision_id, deployment in sorted(live.items(), key=lambda kv: kv[0] != fresh.id):
        try:
            candidate = make_revision(spec, model, recorded_defaults(deployment))
        except pydantic.ValidationError:  # a recorded value this release's schema refuses: read as the baseline
            candidate = make_revision(spec, model, REVISION_BASELINE)
        if candidate.id == revision_id:
            return candidate
    return fresh


@dataclass(frozen=True)
class Routes:
    """Traffic split on the VirtualService: weights in percent 0..100 (summing to 100), mirror percent."""

    stable_weight: int = 100
    canary_weight: int = 0
    mirror_percent: int = 0


def static_model(spec: LLMDeploymentSpec) -> ResolvedModel:
    """The model as far as the spec alone says (no registry look-up).

    A URI names itself; an MLflow reference pinned to a version gives ``models:/name/version``; one that
    follows an alias or stage gives ``models:/name@alias`` / ``models:/name/Stage``, which the registry
    resolution replaces with the version behind it.
    """
    source = spec.model
    if source.uri is not None:
        scheme, _, rest = source.uri.partition("://")
        rest = rest.rstrip("/")
        # hf://org/model names the model; s3://bucket/path and pvc://claim/path name it by the path.
        name = rest if scheme == "hf" else (rest.partition("/")[2] or rest)
        return ResolvedModel(name=name, source="uri", uri=source.uri)
    ref = source.mlflow
    assert ref is not None  # the schema requires exactly one of uri and mlflow
    if ref.version is not None:
        return ResolvedModel(name=ref.name, source="mlflow", uri=f"models:/{ref.name}/{ref.version}", version=ref.version)
    if ref.alias is not None:
        return ResolvedModel(name=ref.name, source="mlflow", uri=f"models:/{ref.name}@{ref.alias}")
    return ResolvedModel(name=ref.name, source="mlflow", uri=f"models:/{ref.name}/{ref.stage}")


# ----------------------------------------------------------------------------------------- helpers


def labels(name: str, revision: str | None = None) -> dict[str, str]:
    """Labels on every child; pods and revision Deployments also carry the revision."""
    result = {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "llm-operator",
        c.LABEL_MANAGED_BY: c.MANAGER,
        c.LABEL_DEPLOYMENT: name,
    }
    if revision is not None:
        result[c.LABEL_REVISION] = revision
    return result


def _meta(name: str, namespace: str, owner: str, revision: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(owner, revision)}


def service_host(name: str, namespace: str) -> str:
    """The in-cluster DNS name of the Service ``name`` (the LLMDeployment's own by default)."""
    return f"{name}.{namespace}.svc.cluster.local"


def endpoint(name: str, namespace: str, spec: LLMDeploymentSpec) -> str:
    """The OpenAI-compatible base URL inside the cluster."""
    return f"http://{service_host(name, namespace)}:{spec.traffic.port}/v1"


def _quantity(value: float) -> str:
    """A resource quantity for a non-negative number: whole numbers as-is, fractions in milli-units."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def tensor_parallel_size(spec: LLMDeploymentSpec | Revision) -> int:
    """``runtime.tensorParallelSize``, defaulting to the GPUs per replica (1 on CPUs), of a spec or a revision."""
    runtime, resources = spec.runtime, spec.resources
    if runtime.tensor_parallel_size is not None:
        return runtime.tensor_parallel_size
    pipeline = runtime.pipeline_parallel_size or 1
    return max(1, resources.gpus // pipeline)


# -------------------------------------------------------------------------------------- Deployment


def _model_location(revision: Revision) -> tuple[str, list[dict], list[dict]]:
    """Where vLLM loads the model from: (the ``--model`` value, volumes, volume mounts)."""
    scheme, _, rest = revision.model.uri.partition("://")
    if scheme == "hf":
        return rest.rstrip("/"), [], []
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        volume = {"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        mount = {"name": "model-source", "mountPath": c.PVC_MODEL_DIR, "readOnly": True}
        return f"{c.PVC_MODEL_DIR}/{path}".rstrip("/"), [volume], [mount]
    # s3://, gs://, models:/ (MLflow): the runtime entrypoint downloads into the cache volume.
    return f"{c.MODEL_CACHE_DIR}/models/{revision.id}", [], []


#: Environment variables the operator sets by default, (name, value): conventions and privacy defaults, not the
#: runtime contract (``RESERVED_ENV_PREFIX``, and ``REGISTRY_ENV`` from a secretRef); ``runtime.env`` may replace them.
DEFAULT_ENV = (("HOME", c.HOME_DIR), ("HF_HOME", f"{c.MODEL_CACHE_DIR}/hf"), ("VLLM_NO_USAGE_STATS", "1"), ("DO_NOT_TRACK", "1"))


def _registry_env(spec: LLMDeploymentSpec) -> list[dict[str, Any]]:
    """The MLflow tracking URI and token from the Secret the model reference names (the entrypoint downloads
    ``models:/`` URIs with them); without a secretRef, set them through ``runtime.env``."""
    secret = registry_secret(spec)
    if secret is None:
        return []
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, **({"optional": True} if optional else {})}}}
            for key, optional in zip(REGISTRY_ENV, (False, True), strict=True)]


def registry_secret(spec: LLMDeploymentSpec) -> str | None:
    """The Secret naming the MLflow registry of the model and its adapters: ``model.mlflow.secretRef``, else the one
    the adapters' MLflow references name (validation keeps them to one)."""
    if spec.model.mlflow is not None and spec.model.mlflow.secret_ref is not None:
        return spec.model.mlflow.secret_ref.name
    return next((a.mlflow.secret_ref.name for a in spec.adapters if a.mlflow is not None and a.mlflow.secret_ref is not None), None)


def _api_key_env(spec: LLMDeploymentSpec) -> list[dict[str, Any]]:
    """vLLM's API key (``VLLM_API_KEY``) from the Secret key ``auth.apiKey.secretRef`` names: in the environment, so
    it is never an argument (vLLM logs its non-default arguments, and argv is readable in /proc)."""
    key = spec.auth.api_key
    if key is None:
        return []
    return [{"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": key.secret_ref.name, "key": key.secret_ref.key}}}]


def container_env(name: str, spec: LLMDeploymentSpec, revision: Revision) -> list[dict[str, Any]]:
    """The serving container's environment: the runtime contract (``LLMOPS_*``), the registry credentials from
    ``model.mlflow.secretRef``, vLLM's API key from ``auth.apiKey``, the operator's defaults (:data:`DEFAULT_ENV`)
    and ``runtime.env``.

    Each name appears once (server-side apply refuses a list with two entries of one name). A ``runtime.env``
    entry replaces an operator default of the same name; the contract and the secretRef credentials are the
    operator's (validation refuses a ``runtime.env`` entry that names one, as ``InvalidSpec``), and of
    ``runtime.env`` entries sharing a name (also refused) the last is kept, as the kubelet would.
    """
    contract = [
        {"name": c.ENV_MODEL_URI, "value": revision.model.uri},
        {"name": c.ENV_MODEL_DIR, "value": f"{c.MODEL_CACHE_DIR}/models/{revision.id}"},
        {"name": c.ENV_REVISION, "value": revision.id},
        {"name": c.ENV_GPUS, "value": str(revision.resources.gpus)},
        {"name": c.ENV_SERVED_MODEL_NAME, "value": spec.model.served_model_name or name},
    ] + ([{"name": c.ENV_ADAPTERS, "value": json.dumps(
        [{"name": a.name, "uri": adapter_uri(a), "dir": adapter_dir(a), "base": a.base_model} for a in revision.adapters],
        separators=(",", ":"))}] if revision.adapters else []) + _registry_env(spec) + _api_key_env(spec)
    reserved = {e["name"] for e in contract}
    user: dict[str, dict[str, Any]] = {}
    for entry in revision.runtime.env:
        if entry.name not in reserved and not entry.name.startswith(RESERVED_ENV_PREFIX):
            user.pop(entry.name, None)
            user[entry.name] = entry.to_wire()
    defaults = [{"name": key, "value": value} for key, value in DEFAULT_ENV if key not in user]
    return contract + defaults + list(user.values())


def engine_args(name: str, spec: LLMDeploymentSpec, revision: Revision) -> list[str]:
    """vLLM OpenAI-server arguments for ``revision``: model, served name, port, engine args, extraArgs."""
    model_arg, _, _ = _model_location(revision)
    args = [
        "--model", model_arg,
        "--served-model-name", spec.model.served_model_name or name,
        "--host", "0.0.0.0",
        "--port", str(c.CONTAINER_PORT),
        "--tensor-parallel-size", str(tensor_parallel_size(revision)),
    ]
    runtime = revision.runtime
    for attribute, flag in _ENGINE_FLAGS.items():
        value = getattr(runtime, attribute)
        if value is None:
            continue
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args + _lora_args(revision) + list(runtime.extra_args)


#: ``--max-loras`` when ``runtime.maxLoras`` is not set: as many as there are adapters, at most this many. vLLM reserves
#: GPU memory for max_loras x max_lora_rank of weights, taken from the KV cache: beyond a few, adapters wait their turn
#: in a batch (vLLM swaps them in from CPU memory) rather than shrink every request's cache.
DEFAULT_MAX_LORAS = 8


def _lora_args(revision: Revision) -> list[str]:
    """vLLM's LoRA arguments for the revision's adapters: ``--enable-lora``, ``--lora-modules name=dir`` (where the
    entrypoint fetched each, :func:`adapter_dir`), ``--max-loras`` (``runtime.maxLoras``, else as many as there are
    adapters up to :data:`DEFAULT_MAX_LORAS`) and ``--max-lora-rank`` when set (vLLM's default is 16)."""
    runtime = revision.runtime
    if not revision.adapters:
        return [flag for flag, value in (("--max-loras", runtime.max_loras), ("--max-lora-rank", runtime.max_lora_rank))
                if value is not None for flag in (flag, str(value))]
    args = ["--enable-lora", "--lora-modules", *(f"{a.name}={adapter_dir(a)}" for a in revision.adapters),
            "--max-loras", str(runtime.max_loras or min(len(revision.adapters), DEFAULT_MAX_LORAS))]
    return args + (["--max-lora-rank", str(runtime.max_lora_rank)] if runtime.max_lora_rank else [])


def _resources(resources: Resources) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.cpu is not None:
        requests["cpu"] = str(resources.cpu)  # no CPU limit: throttling a serving process costs latency
    if resources.memory is not None:
        requests["memory"] = limits["memory"] = str(resources.memory)
    if resources.gpus > 0:
        limits[resources.gpu_resource_name] = str(resources.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _tolerations(resources: Resources) -> list[dict[str, Any]]:
    tolerations = [t.to_wire() for t in resources.tolerations]
    if resources.gpus > 0 and not any(t.get("key") == resources.gpu_resource_name for t in tolerations):
        # GPU nodes are commonly tainted with the GPU resource name (GKE and AKS do it by default).
        tolerations.append({"key": resources.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def may_scale_out(spec: LLMDeploymentSpec) -> bool:
    """Whether the spec may run more than one replica of a revision (``autoscaling.maxReplicas``, else ``replicas``)."""
    return (spec.autoscaling.max_replicas if spec.autoscaling is not None else spec.replicas) > 1


def topology_spread(name: str, spec: LLMDeploymentSpec, revision: Revision) -> list[dict[str, Any]]:
    """The pods' ``topologySpreadConstraints``, each over ``revision``'s pods: ``resources.topologySpread`` as
    written; when it is not set, the default the revision was built with (:data:`SPREAD_DEFAULT_KEY`; none for a
    revision built before that default) if the spec may run more than one replica (:func:`may_scale_out`)."""
    written = revision.resources.topology_spread
    if written is not None:
        constraints = [t.model_dump(mode="json", by_alias=True) for t in written]
    elif may_scale_out(spec):
        constraints = copy.deepcopy(revision.defaults.get(SPREAD_DEFAULT_KEY) or [])
    else:
        constraints = []
    selector = {"matchLabels": {c.LABEL_DEPLOYMENT: name, c.LABEL_REVISION: revision.id}}
    return [{**constraint, "labelSelector": copy.deepcopy(selector)} for constraint in constraints]


def node_affinity(resources: Resources) -> dict[str, Any] | None:
    """A required node affinity for ``resources.gpuProducts`` (nodes whose GPU product label is any of them)."""
    if not resources.gpu_products:
        return None
    term = {"matchExpressions": [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(resources.gpu_products)}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def build_deployment(name: str, namespace: str, spec: LLMDeploymentSpec, revision: Revision, replicas: int) -> dict[str, Any]:
    """The Deployment serving ``revision`` with ``replicas`` pods.

    Each pod runs vLLM's OpenAI server with the engine arguments as flags, the GPU limit, a memory-backed
    ``/dev/shm``, a writable model cache, probes on ``/health`` whose startup budget is
    ``runtime.startupTimeoutSeconds``, and a restricted security context (see docs/security.md). The runtime
    and resources are the revision's (the spec's, with the defaults the revision was built with); those defaults
    are recorded in the :data:`DEFAULTS_ANNOTATION` annotation.
    """
    runtime, resources = revision.runtime, revision.resources
    _, source_volumes, source_mounts = _model_location(revision)
    pod_labels = labels(name, revision.id) | {
        "service.istio.io/canonical-name": name,
        "service.istio.io/canonical-revision": revision.id,
    }
    cache_volume: dict[str, Any] = (
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": runtime.cache.claim_name}}
        if runtime.cache.claim_name
        else {"name": "model-cache", "emptyDir": {"sizeLimit": str(runtime.cache.size_limit)}}
    )
    env = container_env(name, spec, revision)

    def probe(period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": c.HEALTH_PATH, "port": c.PORT_NAME}, "timeoutSeconds": 5,
                "periodSeconds": period, "failureThreshold": failures}

    container: dict[str, Any] = {
        "name": c.CONTAINER_NAME,
        "image": runtime.image,
        "command": list(c.RUNTIME_COMMAND),
        "args": engine_args(name, spec, revision),
        "ports": [{"name": c.PORT_NAME, "containerPort": c.CONTAINER_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(resources),
        # The startup probe alone covers the model download and load; liveness starts after it succeeds.
        "startupProbe": probe(10, math.ceil(runtime.startup_timeout_seconds / 10)),
        "readinessProbe": probe(5, 3),
        "livenessProbe": probe(15, 4),
        "volumeMounts": [
            {"name": "dshm", "mountPath": c.SHM_DIR},
            {"name": "model-cache", "mountPath": c.MODEL_CACHE_DIR},
            {"name": "tmp", "mountPath": c.TMP_DIR},
            {"name": "home", "mountPath": c.HOME_DIR},
        ] + source_mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if runtime.image_pull_policy:
        container["imagePullPolicy"] = runtime.image_pull_policy
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": runtime.termination_grace_period_seconds,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": c.RUNTIME_UID,
            "runAsGroup": c.RUNTIME_UID,
            "fsGroup": c.RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(resources.shm_size)}},
            cache_volume,
            {"name": "tmp", "emptyDir": {}},
            {"name": "home", "emptyDir": {}},
        ] + source_volumes,
    }
    if resources.node_selector:
        pod_spec["nodeSelector"] = dict(resources.node_selector)
    affinity = node_affinity(resources)
    if affinity:
        pod_spec["affinity"] = affinity
    spread = topology_spread(name, spec, revision)
    if spread:
        pod_spec["topologySpreadConstraints"] = spread
    tolerations = _tolerations(resources)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if resources.priority_class_name:
        pod_spec["priorityClassName"] = resources.priority_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **_meta(c.revision_deployment_name(name, revision.id), namespace, name, revision.id),
            # The defaults the pods are built with, so a later release renders this revision the same way.
            "annotations": {"llmops.dev/model-uri": revision.model.uri,
                            DEFAULTS_ANNOTATION: json.dumps(revision.defaults, sort_keys=True, separators=(",", ":"))},
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            # The startup budget plus ten minutes for scheduling and image pulls.
            "progressDeadlineSeconds": runtime.startup_timeout_seconds + 600,
            # A revision is rendered from the defaults it was built with, so its pod template changes only when a
            # release changes the template itself; then surge one pod at a time, never taking a serving pod down first.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": {c.LABEL_DEPLOYMENT: name, c.LABEL_REVISION: revision.id}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(c.CONTAINER_PORT),
                        "prometheus.io/path": c.METRICS_PATH,
                        "kubectl.kubernetes.io/default-container": c.CONTAINER_NAME,
                    },
                },
                "spec": pod_spec,
            },
        },
    }


# ------------------------------------------------------------------------------- Service and Istio


#: The roles an LLMDeployment's Services play: ``stable`` (the Service named after the LLMDeployment, what
#: clients call) and ``canary`` (``<name>-canary``); the route weights name them.
ROLES = (c.SUBSET_STABLE, c.SUBSET_CANARY)


def service_name(name: str, role: str) -> str:
    """The Service (and DestinationRule) of one role: ``<name>`` for stable, ``<name>-canary`` for canary."""
    return name if role == c.SUBSET_STABLE else f"{name}-{role}"


def build_service(name: str, namespace: str, spec: LLMDeploymentSpec, role: str, revision: str) -> dict[str, Any]:
    """The ClusterIP Service of one role, selecting only ``revision``'s pods.

    ``<name>`` (stable) is what clients call: a client outside the mesh (no sidecar, a non-Istio ingress) reaches
    the stable revision and nothing else, whatever the rollout's weights. ``<name>-canary`` selects the canary
    revision (the stable one when there is none, so a canary weight never routes to nothing); mesh clients reach
    it through the VirtualService's weights, mirror and blue-green preview route, and a client outside the mesh
    only by calling it by name (a preview). As Argo Rollouts' ``stableService``/``canaryService``, pinned to
    revisions rather than pod-template hashes.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(service_name(name, role), namespace, name),
        "spec": {
            "type": "ClusterIP",
            "selector": {c.LABEL_DEPLOYMENT: name, c.LABEL_REVISION: revision},
            "ports": [{
                "name": c.PORT_NAME, "port": spec.traffic.port, "targetPort": c.PORT_NAME,
                "protocol": "TCP", "appProtocol": "http",
            }],
        },
    }


#: Concurrent sequences per pod assumed when ``runtime.maxNumSeqs`` is not set: the largest default of vLLM's API
#: server (1024 on H100/H200/B200-class GPUs, 256 on others, 128 per CPU socket; ``EngineArgs.get_batch_defaults``
#: in vllm/engine/arg_utils.py), so the mesh's limits never bound a pod below what it runs.
VLLM_MAX_NUM_SEQS_CEILING = 1024


def connection_pool(spec: LLMDeploymentSpec) -> dict[str, Any]:
    """Istio ``connectionPool`` limits for one of the LLMDeployment's Services, per client proxy (Envoy's circuit
    breakers): ``traffic.connectionPool`` where set, else sized from ``runtime.maxNumSeqs`` (or
    :data:`VLLM_MAX_NUM_SEQS_CEILING`) and the most replicas the spec allows: 2 x sequences x replicas requests in
    flight (a full batch on every pod and as many in vLLM's queues, which the autoscaler reads), as many connections
    (HTTP/1.1 carries one request at a time), and sequences x replicas waiting for a connection."""
    pool = spec.traffic.connection_pool
    replicas = max(1, spec.autoscaling.max_replicas if spec.autoscaling is not None else spec.replicas)
    seqs = spec.runtime.max_num_seqs or VLLM_MAX_NUM_SEQS_CEILING
    requests = pool.max_requests or 2 * seqs * replicas
    pending = pool.max_pending_requests or seqs * replicas
    return {"tcp": {"maxConnections": requests}, "http": {"http2MaxRequests": requests, "http1MaxPendingRequests": pending}}


def outlier_detection(spec: LLMDeploymentSpec) -> dict[str, Any] | None:
    """Istio ``outlierDetection`` from ``traffic.outlierDetection`` (None when ``consecutive5xxErrors`` is 0)."""
    outliers = spec.traffic.outlier_detection
    if outliers.consecutive_5xx_errors == 0:
        return None
    return {"consecutive5xxErrors": outliers.consecutive_5xx_errors, "interval": outliers.interval,
            "baseEjectionTime": outliers.base_ejection_time, "maxEjectionPercent": outliers.max_ejection_percent}


def build_destination_rule(name: str, namespace: str, role: str, spec: LLMDeploymentSpec) -> dict[str, Any]:
    """The traffic policy for one role's Service: least-request balancing (no subsets: the Services split) and
    the connection limits (:func:`connection_pool`); the stable Service also ejects pods after consecutive 5xx
    (:func:`outlier_detection`). The canary's does not: ejecting a failing canary pod would answer its share with
    the client proxy's own 503s, which neither vLLM's metrics nor Istio's destination-reported ones count, and
    hide from the analysis the errors it is there to see."""
    policy: dict[str, Any] = {
        # vLLM's throughput depends on batch occupancy: send each request to the least busy pod.
        "loadBalancer": {"simple": "LEAST_REQUEST"},
        "connectionPool": connection_pool(spec),
    }
    outliers = outlier_detection(spec) if role == c.SUBSET_STABLE else None
    if outliers:
        policy["outlierDetection"] = outliers
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": _meta(service_name(name, role), namespace, name),
        "spec": {"host": service_host(service_name(name, role), namespace), "trafficPolicy": policy},
    }


def route_policy(spec: LLMDeploymentSpec) -> dict[str, Any]:
    """The ``timeout`` and ``retries`` of every route of the VirtualService (``traffic.timeout``, ``traffic.retries``;
    ``attempts: 0`` turns Istio's default retries off as well)."""
    retries = spec.traffic.retries
    policy: dict[str, Any] = {"timeout": spec.traffic.timeout, "retries": {"attempts": retries.attempts}}
    if retries.attempts:
        policy["retries"]["retryOn"] = ",".join(retries.retry_on)
    return policy


def build_virtual_service(name: str, namespace: str, spec: LLMDeploymentSpec, routes: Routes,
                          preview_header: str | None = None) -> dict[str, Any]:
    """The VirtualService on the Service clients call, routing mesh traffic to the stable and canary Services
    with ``routes``' weights (host-level splitting: each destination is one role's Service).

    The weights and mirror are owned by the rollout logic: with no rollout in progress, reconciling an
    LLMDeployment passes in the weights it read from the live object (:func:`routes_of`), so structure changes
    never reset them. ``preview_header`` (blue-green) adds a first route sending requests that carry the
    header with value ``true`` to the canary Service. Every route has the request timeout and the retries of
    :func:`route_policy` (a mirror is never retried: Istio sends it and drops the answer).
    """
    host = service_host(name, namespace)

    def destination(role: str) -> dict[str, Any]:
        return {"host": service_host(service_name(name, role), namespace), "port": {"number": spec.traffic.port}}

    policy = route_policy(spec)
    http: dict[str, Any] = {
        "name": "primary",
        "route": [
            {"destination": destination(c.SUBSET_STABLE), "weight": routes.stable_weight},
            {"destination": destination(c.SUBSET_CANARY), "weight": routes.canary_weight},
        ],
        **copy.deepcopy(policy),
    }
    if routes.mirror_percent > 0:
        http["mirror"] = destination(c.SUBSET_CANARY)
        http["mirrorPercentage"] = {"value": float(routes.mirror_percent)}
    routes_list = [http]
    if preview_header:
        routes_list.insert(0, {"name": "preview", "match": [{"headers": {preview_header: {"exact": "true"}}}],
                               "route": [{"destination": destination(c.SUBSET_CANARY), "weight": 100}], **copy.deepcopy(policy)})
    vs_spec: dict[str, Any] = {"hosts": [host, *spec.traffic.hosts], "http": routes_list}
    if spec.traffic.gateways:
        vs_spec["gateways"] = [*spec.traffic.gateways, "mesh"]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _meta(name, namespace, name),
        "spec": vs_spec,
    }


def build_routing(name: str, namespace: str, spec: LLMDeploymentSpec, stable: str, canary: str | None, routes: Routes,
                  preview_header: str | None = None) -> list[dict[str, Any]]:
    """Everything that routes to the revisions, in the order it is safe to apply: the stable and canary Services
    (the canary's on the stable revision when ``canary`` is None), their DestinationRules, the VirtualService."""
    revisions = {c.SUBSET_STABLE: stable, c.SUBSET_CANARY: canary or stable}
    return ([build_service(name, namespace, spec, role, revisions[role]) for role in ROLES]
            + [build_destination_rule(name, namespace, role, spec) for role in ROLES]
            + [build_virtual_service(name, namespace, spec, routes, preview_header)])


def routes_of(virtual_service: dict[str, Any] | None) -> Routes | None:
    """The weights and mirror percent of a live VirtualService built by :func:`build_virtual_service` (or by a
    release that routed to DestinationRule subsets named ``stable`` and ``canary``)."""
    if not virtual_service:
        return None
    canary_prefix = service_name(virtual_service.get("metadata", {}).get("name", ""), c.SUBSET_CANARY) + "."

    def role(destination: Mapping[str, Any]) -> str:
        if destination.get("subset"):
            return str(destination["subset"])
        return c.SUBSET_CANARY if str(destination.get("host", "")).startswith(canary_prefix) else c.SUBSET_STABLE

    for http in virtual_service.get("spec", {}).get("http", []):
        if http.get("name") != "primary":
            continue
        weights = {role(r.get("destination", {})): int(r.get("weight", 0)) for r in http.get("route", [])}
        mirror = http.get("mirrorPercentage", {}).get("value", 0) if http.get("mirror") else 0
        return Routes(weights.get(c.SUBSET_STABLE, 0), weights.get(c.SUBSET_CANARY, 0), int(mirror))
    return None


# ------------------------------------------------------------------------------------- Gateway API

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
INFERENCE_API_VERSION = "inference.networking.k8s.io/v1"
INFERENCE_GROUP = "inference.networking.k8s.io"


def build_inference_pool(name: str, namespace: str, spec: LLMDeploymentSpec, role: str, revision: str) -> dict[str, Any]:
    """The InferencePool of one role (``<name>`` stable, ``<name>-canary`` canary; the Services' names), selecting
    only ``revision``'s pods on vLLM's container port, with the role's endpoint picker
    (``traffic.gatewayAPI.endpointPicker``, which must be set). As the Services do, a pool keeps its name and
    follows its role's revision, so the picker deployed for it (``--pool-name``) serves every rollout."""
    gateway = spec.traffic.gateway_api
    assert gateway is not None and gateway.endpoint_picker is not None
    picker = gateway.endpoint_picker.stable if role == c.SUBSET_STABLE else gateway.endpoint_picker.canary
    return {
        "apiVersion": INFERENCE_API_VERSION,
        "kind": "InferencePool",
        "metadata": _meta(service_name(name, role), namespace, name),
        "spec": {
            "selector": {"matchLabels": {c.LABEL_DEPLOYMENT: name, c.LABEL_REVISION: revision}},
            "targetPorts": [{"number": c.CONTAINER_PORT}],
            "endpointPickerRef": {"kind": "Service", "name": picker.name, "port": {"number": picker.port},
                                  "failureMode": gateway.endpoint_picker.failure_mode},
        },
    }


def _backend(name: str, spec: LLMDeploymentSpec, role: str) -> dict[str, Any]:
    """A backendRef to one role's InferencePool (with endpoint pickers) or Service (without)."""
    gateway = spec.traffic.gateway_api
    if gateway is not None and gateway.endpoint_picker is not None:
        return {"group": INFERENCE_GROUP, "kind": "InferencePool", "name": service_name(name, role)}
    return {"group": "", "kind": "Service", "name": service_name(name, role), "port": spec.traffic.port}


def build_http_route(name: str, namespace: str, spec: LLMDeploymentSpec, routes: Routes,
                     preview_header: str | None = None) -> dict[str, Any]:
    """The HTTPRoute of ``router: gatewayAPI`` on ``traffic.gatewayAPI``'s parents and hostnames: its primary rule
    (the one without a header match) splits by ``routes``' weights across the stable and canary backends
    (:func:`_backend`) and, with a mirror percent, mirrors that share to the canary Service (the ``RequestMirror``
    filter's ``percent``, Gateway API v1.3; the answers are dropped); ``preview_header`` (blue-green) adds a rule
    matching that header set to ``true``, to the canary (a rule with a header match takes precedence over one
    without, whatever their order). Every rule has ``traffic.timeout`` as its request timeout; retries are not set
    (the HTTPRoute's ``retry`` is in the experimental channel only). The rules are told apart by their matches, not
    named (a rule's ``name`` is Gateway API v1.4's: an older CRD prunes it, and the route would differ from what
    was applied on every pass).

    The weights and the mirror belong to the rollout, as on the VirtualService: the planner passes in what it
    read from the live object (:func:`http_routes_of`) while a structure edit lands mid-rollout."""
    gateway = spec.traffic.gateway_api
    assert gateway is not None
    everything = {"path": {"type": "PathPrefix", "value": "/"}}
    timeouts = {"request": spec.traffic.timeout}
    primary: dict[str, Any] = {
        "matches": [copy.deepcopy(everything)],
        "backendRefs": [{**_backend(name, spec, c.SUBSET_STABLE), "weight": routes.stable_weight},
                        {**_backend(name, spec, c.SUBSET_CANARY), "weight": routes.canary_weight}],
        "timeouts": dict(timeouts),
    }
    if routes.mirror_percent > 0:
        primary["filters"] = [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": service_name(name, c.SUBSET_CANARY), "port": spec.traffic.port},
            "percent": routes.mirror_percent}}]
    rules = [primary]
    if preview_header:
        rules.insert(0, {"matches": [{**copy.deepcopy(everything), "headers": [{"type": "Exact", "name": preview_header, "value": "true"}]}],
                         "backendRefs": [{**_backend(name, spec, c.SUBSET_CANARY), "weight": 1}],
                         "timeouts": dict(timeouts)})
    route_spec: dict[str, Any] = {"parentRefs": [_parent_ref(ref) for ref in gateway.parent_refs], "rules": rules}
    if gateway.hostnames:
        route_spec["hostnames"] = list(gateway.hostnames)
    return {"apiVersion": GATEWAY_API_VERSION, "kind": "HTTPRoute", "metadata": _meta(name, namespace, name), "spec": route_spec}


def _parent_ref(ref: ParentRef) -> dict[str, Any]:
    """A parentRef as written, its group defaulted by its kind: a Gateway's is the Gateway API's, a Service's (a
    mesh's east-west route, GAMMA) the core group."""
    wire = ref.to_wire()
    if ref.group is None:
        wire["group"] = "" if ref.kind == "Service" else "gateway.networking.k8s.io"
    return wire


def is_primary_rule(rule: Mapping[str, Any]) -> bool:
    """Whether an HTTPRoute rule built by :func:`build_http_route` is its primary one (no header match: the
    blue-green preview rule has one)."""
    return not any(match.get("headers") for match in rule.get("matches") or [])


def http_routes_of(route: Mapping[str, Any] | None) -> Routes | None:
    """The weights (percent of the primary rule's stable and canary backends' total: a Gateway API weight is a
    share, not a percentage, and one edited by hand to 900/100 is 90/10) and the mirror percent of a live HTTPRoute
    built by :func:`build_http_route`. Backends that are not this LLMDeployment's roles are left out; a weight not
    set is 1, as the Gateway API defaults it."""
    if not route:
        return None
    name = route.get("metadata", {}).get("name", "")
    roles = {service_name(name, role): role for role in ROLES}
    for rule in route.get("spec", {}).get("rules", []):
        if not is_primary_rule(rule):
            continue
        weights = {role: 0 for role in ROLES}
        for ref in rule.get("backendRefs", []):
            if ref.get("name") in roles:
                weights[roles[ref["name"]]] += int(ref.get("weight", 1))
        total = sum(weights.values())
        canary = round(100 * weights[c.SUBSET_CANARY] / total) if total else 0
        mirror = next((int(f.get("requestMirror", {}).get("percent", 100)) for f in rule.get("filters", [])
                       if f.get("type") == "RequestMirror"), 0)
        return Routes(100 - canary if total else 0, canary, mirror)
    return None


# ---------------------------------------------------------------------------------------- security

#: The Istio security kinds an LLMDeployment may own, in the order they are applied (a token is verified before a
#: policy requires one) and the reverse of the order they are deleted in (:data:`SECURITY_KINDS_DELETE_ORDER`).
SECURITY_KINDS = (("security.istio.io/v1", "PeerAuthentication"), ("security.istio.io/v1", "RequestAuthentication"),
                  ("security.istio.io/v1", "AuthorizationPolicy"))
#: Deleted policy first: an AuthorizationPolicy asking for a JWT outliving its RequestAuthentication refuses everyone.
SECURITY_KINDS_DELETE_ORDER = tuple(reversed(SECURITY_KINDS))
#: What an AuthorizationPolicy always lets through, from anyone: the kubelet's probes (unless Istio rewrites them,
#: which it does by default) and Prometheus scraping vLLM's metrics on the serving port.
OPEN_PATHS = ("/health", "/metrics")


def _pods(name: str) -> dict[str, Any]:
    """The ``selector`` of a workload policy: every revision's pods of the LLMDeployment ``name``."""
    return {"matchLabels": {c.LABEL_DEPLOYMENT: name}}


def _allow_rule(rule: AllowRule) -> dict[str, Any]:
    source = {key: list(values) for key, values in (("principals", rule.principals), ("namespaces", rule.namespaces),
                                                     ("requestPrincipals", rule.request_principals)) if values}
    out: dict[str, Any] = {"from": [{"source": source}]} if source else {}
    if rule.claims:
        out["when"] = [{"key": f"request.auth.claims[{m.claim}]", "values": list(m.values)} for m in rule.claims]
    return out


def build_auth(name: str, namespace: str, spec: LLMDeploymentSpec) -> list[dict[str, Any]]:
    """The Istio policies ``spec.auth`` asks for, on every revision's pods, in :data:`SECURITY_KINDS` order:

    - a ``PeerAuthentication`` with ``mtls`` (STRICT: plaintext callers refused);
    - a ``RequestAuthentication`` verifying the ``jwt`` issuers' tokens (an invalid token gets 401; Istio removes
      a verified token before the request reaches vLLM);
    - an ALLOW ``AuthorizationPolicy`` when ``allow`` or ``jwt`` is set: a rule per ``allow`` entry (every field
      set must match; claims as ``request.auth.claims[...]`` conditions), or any valid token when ``allow`` is
      empty, plus GET of :data:`OPEN_PATHS` from anyone; every other request gets 403.

    Empty when ``spec.auth`` sets none of them (``apiKey`` is vLLM's own, in the pods' environment).
    """
    auth, out = spec.auth, []
    if auth.mtls is not None:
        out.append({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": _meta(name, namespace, name),
                    "spec": {"selector": _pods(name), "mtls": {"mode": auth.mtls}}})
    if auth.jwt:
        rules = [{"issuer": j.issuer, "jwksUri": j.jwks_uri, **({"audiences": list(j.audiences)} if j.audiences else {})}
                 for j in auth.jwt]
        out.append({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication", "metadata": _meta(name, namespace, name),
                    "spec": {"selector": _pods(name), "jwtRules": rules}})
    if auth.allow or auth.jwt:
        allowed = [_allow_rule(rule) for rule in auth.allow] or [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]
        allowed.append({"to": [{"operation": {"methods": ["GET"], "paths": list(OPEN_PATHS)}}]})
        out.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": _meta(name, namespace, name),
                    "spec": {"selector": _pods(name), "action": "ALLOW", "rules": allowed}})
    return out


# ---------------------------------------------------------------------------------- scaling, PDB


def build_hpa(name: str, namespace: str, spec: LLMDeploymentSpec, target_deployment: str) -> dict[str, Any]:
    """An ``autoscaling/v2`` HPA on the stable revision, holding the per-pod average of a vLLM gauge
    (a Pods metric served by prometheus-adapter under the names in :data:`ADAPTER_METRICS`)."""
    scaling = spec.autoscaling
    assert scaling is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, namespace, name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target_deployment},
            "minReplicas": max(1, scaling.min_replicas),
            "maxReplicas": scaling.max_replicas,
            "metrics": [{
                "type": "Pods",
                "pods": {
                    "metric": {"name": ADAPTER_METRICS[scaling.metric][1]},
                    "target": {"type": "AverageValue", "averageValue": _quantity(scaling.target)},
                },
            }],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }


def build_scaled_object(name: str, namespace: str, spec: LLMDeploymentSpec, target_deployment: str, revision: str) -> dict[str, Any]:
    """A KEDA ScaledObject with a Prometheus trigger on the revision's vLLM gauge (per-pod average)."""
    scaling = spec.autoscaling
    assert scaling is not None and scaling.keda is not None
    metric = ADAPTER_METRICS[scaling.metric][0]
    query = (
        f'sum({metric}{{namespace="{namespace}",{c.PROM_LABEL_DEPLOYMENT}="{name}",'
        f'{c.PROM_LABEL_REVISION}="{revision}"}})'
    )
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(name, namespace, name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target_deployment},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": scaling.keda.polling_interval_seconds,
            "cooldownPeriod": scaling.scale_down_stabilization_seconds,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds}},
                },
            },
            "triggers": [{
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": scaling.keda.server_address,
                    "query": query,
                    "threshold": str(scaling.target),
                },
            }],
        },
    }


def build_pdb(name: str, namespace: str, spec: LLMDeploymentSpec) -> dict[str, Any]:
    """A PodDisruptionBudget over every revision's pods (voluntary evictions one pod at a time)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace, name),
        "spec": {
            "maxUnavailable": spec.disruption_budget.max_unavailable,
            "selector": {"matchLabels": {c.LABEL_DEPLOYMENT: name}},
        },
    }
