"""Builders: spec in, manifests out. Content, not existence: args, limits, probes, labels, weights."""

import copy
import hashlib
import json
import math

import pytest

from llm_operator import _builders as b
from llm_operator._api import DEFAULT_RUNTIME_IMAGE, LLMDeploymentSpec
from llm_operator._validation import parse_llmdeployment
from tests.schemas import validate


def _spec(doc: dict) -> LLMDeploymentSpec:
    return parse_llmdeployment(doc)


def _deployment(doc: dict, replicas: int = 1) -> dict:
    spec = _spec(doc)
    revision = b.make_revision(spec, b.static_model(spec))
    return b.build_deployment(doc["metadata"]["name"], doc["metadata"].get("namespace", "default"), spec, revision, replicas)


def _flags(args: list[str]) -> dict[str, str | None]:
    out, i = {}, 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[args[i]] = args[i + 1]
            i += 2
        else:
            out[args[i]] = None
            i += 1
    return out


def test_multigpu_deployment_args_and_resources(samples):
    dep = _deployment(samples["llmdeployment-multigpu"], replicas=2)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    flags = _flags(container["args"])
    assert flags["--tensor-parallel-size"] == "4"
    assert flags["--max-model-len"] == "32768"
    assert flags["--gpu-memory-utilization"] == "0.92"
    assert flags["--quantization"] == "awq_marlin"
    assert flags["--dtype"] == "float16"
    assert "--enable-prefix-caching" in flags
    assert flags["--max-num-seqs"] == "128"
    assert flags["--served-model-name"] == "llama-3.1-70b-instruct"
    assert flags["--port"] == "8000"
    assert container["args"][-1] == "--disable-uvicorn-access-log"  # extraArgs last, verbatim
    assert container["command"] == ["python3", "-m", "llmops_runtime"]  # the entrypoint execs vLLM with these args
    assert container["resources"] == {
        "requests": {"cpu": "16", "memory": "160Gi"},
        "limits": {"memory": "160Gi", "nvidia.com/gpu": "4"},
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["priorityClassName"] == "llm-serving"
    assert dep["spec"]["replicas"] == 2
    dshm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert dshm == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_s3_model_is_fetched_into_the_revision_cache(samples):
    dep = _deployment(samples["llmdeployment-multigpu"])
    container = dep["spec"]["template"]["spec"]["containers"][0]
    revision = dep["metadata"]["labels"]["llmops.dev/revision"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LLMOPS_MODEL_URI"] == "s3://models/meta-llama/Llama-3.1-70B-Instruct-AWQ"
    assert _flags(container["args"])["--model"] == env["LLMOPS_MODEL_DIR"] == f"/var/cache/llmops/models/{revision}"


def test_hf_and_pvc_model_locations(samples):
    hf = _deployment(samples["llmdeployment-minimal"])["spec"]["template"]["spec"]
    assert _flags(hf["containers"][0]["args"])["--model"] == "Qwen/Qwen2.5-1.5B-Instruct"
    pvc = _deployment(samples["llmdeployment-keda"])["spec"]["template"]["spec"]
    assert _flags(pvc["containers"][0]["args"])["--model"] == "/mnt/models/mistralai/Mistral-7B-Instruct-v0.3"
    assert {"name": "model-source", "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True}} in pvc["volumes"]
    assert {"name": "model-source", "mountPath": "/mnt/models", "readOnly": True} in pvc["containers"][0]["volumeMounts"]


def test_probes_give_the_model_its_startup_budget(samples):
    container = _deployment(samples["llmdeployment-multigpu"])["spec"]["template"]["spec"]["containers"][0]
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2700  # startupTimeoutSeconds
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["periodSeconds"] * container["livenessProbe"]["failureThreshold"] < 2700
    default = _deployment(samples["llmdeployment-minimal"])
    probe = default["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["failureThreshold"] == math.ceil(1800 / 10)
    assert default["spec"]["progressDeadlineSeconds"] > 1800


def test_labels_selector_and_scrape_metadata(samples):
    dep = _deployment(samples["llmdeployment-minimal"])
    revision = dep["metadata"]["labels"]["llmops.dev/revision"]
    assert len(revision) == 10 and dep["metadata"]["name"] == f"qwen-small-{revision}"
    assert dep["spec"]["selector"]["matchLabels"] == {"llmops.dev/deployment": "qwen-small", "llmops.dev/revision": revision}
    template = dep["spec"]["template"]["metadata"]
    assert template["labels"]["app.kubernetes.io/managed-by"] == "llm-operator"
    assert template["labels"]["service.istio.io/canonical-revision"] == revision
    assert template["annotations"]["prometheus.io/scrape"] == "true"
    assert template["annotations"]["prometheus.io/port"] == "8000"


def test_security_context_is_restricted(samples):
    pod = _deployment(samples["llmdeployment-minimal"])["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/tmp", "/home/vllm", "/var/cache/llmops", "/dev/shm"} <= mounts  # writable places vLLM needs


def test_cpu_serving_has_no_gpu(samples):
    container = _deployment(samples["llmdeployment-cpu"])["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert _flags(container["args"])["--tensor-parallel-size"] == "1"
    assert "tolerations" not in _deployment(samples["llmdeployment-cpu"])["spec"]["template"]["spec"]


def test_revision_depends_on_model_and_runtime_not_on_scale(samples):
    doc = samples["llmdeployment-minimal"]
    spec = _spec(doc)
    base = b.make_revision(spec, b.static_model(spec)).id
    scaled = _spec({**doc, "spec": {**doc["spec"], "replicas": 5}})
    assert b.make_revision(scaled, b.static_model(scaled)).id == base
    other = _spec({**doc, "spec": {**doc["spec"], "model": {"uri": "hf://Qwen/Qwen2.5-7B-Instruct"}}})
    assert b.make_revision(other, b.static_model(other)).id != base
    longer = _spec({**doc, "spec": {**doc["spec"], "runtime": {"maxModelLen": 16384}}})
    assert b.make_revision(longer, b.static_model(longer)).id != base


def test_static_model_for_each_source(samples):
    assert b.static_model(_spec(samples["llmdeployment-mlflow"])).uri == "models:/support-assistant@champion"
    pinned = _spec({"metadata": {"name": "x"}, "spec": {"model": {"mlflow": {"name": "m", "version": "4"}}}})
    assert (b.static_model(pinned).uri, b.static_model(pinned).version) == ("models:/m/4", "4")
    staged = _spec({"metadata": {"name": "x"}, "spec": {"model": {"mlflow": {"name": "m", "stage": "Production"}}}})
    assert b.static_model(staged).uri == "models:/m/Production"


def test_istio_routing(samples):
    spec = _spec(samples["llmdeployment-multigpu"])
    dr = b.build_destination_rule("llama-70b", "llm-serving", "stable", spec)
    assert (dr["metadata"]["name"], dr["spec"]) == ("llama-70b", {
        "host": "llama-70b.llm-serving.svc.cluster.local", "trafficPolicy": {
            "loadBalancer": {"simple": "LEAST_REQUEST"},
            # maxNumSeqs 128 x maxReplicas 6: a full batch on every pod and as many waiting, per client proxy
            "connectionPool": {"tcp": {"maxConnections": 1536}, "http": {"http2MaxRequests": 1536, "http1MaxPendingRequests": 768}},
            "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 50}}})
    canary = b.build_destination_rule("llama-70b", "llm-serving", "canary", spec)
    assert (canary["metadata"]["name"], canary["spec"]["host"]) == ("llama-70b-canary", "llama-70b-canary.llm-serving.svc.cluster.local")
    assert "outlierDetection" not in canary["spec"]["trafficPolicy"]  # a failing canary pod stays visible to the analysis
    assert canary["spec"]["trafficPolicy"]["connectionPool"] == dr["spec"]["trafficPolicy"]["connectionPool"]
    vs = b.build_virtual_service("llama-70b", "llm-serving", spec, b.Routes())
    (http,) = vs["spec"]["http"]
    assert [(r["destination"]["host"], r["weight"]) for r in http["route"]] == [
        ("llama-70b.llm-serving.svc.cluster.local", 100), ("llama-70b-canary.llm-serving.svc.cluster.local", 0)]
    assert all("subset" not in r["destination"] for r in http["route"])  # the Services split, not subsets
    assert vs["spec"]["hosts"] == ["llama-70b.llm-serving.svc.cluster.local", "llama.example.com"]
    assert vs["spec"]["gateways"] == ["istio-ingress/public-gateway", "mesh"]
    assert "mirror" not in http


def test_virtual_service_weights_round_trip(samples):
    spec = _spec(samples["llmdeployment-minimal"])
    routes = b.Routes(stable_weight=70, canary_weight=30, mirror_percent=5)
    vs = b.build_virtual_service("m", "ns", spec, routes)
    assert b.routes_of(vs) == routes
    assert vs["spec"]["http"][0]["mirror"]["host"] == "m-canary.ns.svc.cluster.local"
    assert vs["spec"]["http"][0]["mirrorPercentage"] == {"value": 5.0}
    assert b.routes_of(None) is None
    # A VirtualService written by an earlier release routed to DestinationRule subsets: its weights still read.
    legacy = {"metadata": {"name": "m"}, "spec": {"http": [{"name": "primary", "route": [
        {"destination": {"host": "m.ns.svc.cluster.local", "subset": "canary"}, "weight": 30},
        {"destination": {"host": "m.ns.svc.cluster.local", "subset": "stable"}, "weight": 70}]}]}}
    assert b.routes_of(legacy) == b.Routes(70, 30, 0)


# (stable revision, canary revision or None) -> the revision each Service selects.
SERVICES = [
    ("no rollout", "aaaa", None, {"chat": "aaaa", "chat-canary": "aaaa"}),
    ("canary or blue-green preview", "aaaa", "bbbb", {"chat": "aaaa", "chat-canary": "bbbb"}),
]


@pytest.mark.parametrize("case,stable,canary,selects", SERVICES, ids=[c[0] for c in SERVICES])
def test_clients_outside_the_mesh_reach_only_the_stable_revision(samples, case, stable, canary, selects):
    """The Service clients call selects the stable revision's pods only, so a client without a sidecar (or a
    non-Istio ingress) never reaches the canary or the preview in proportion to pod counts; the mesh reaches
    the canary through the VirtualService's weights on the canary's own Service."""
    spec = _spec(samples["llmdeployment-minimal"])
    objects = b.build_routing("chat", "ml", spec, stable, canary, b.Routes(90, 10, 0))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Service", "chat"), ("Service", "chat-canary"), ("DestinationRule", "chat"), ("DestinationRule", "chat-canary"),
        ("VirtualService", "chat")]
    services = {o["metadata"]["name"]: o["spec"]["selector"] for o in objects if o["kind"] == "Service"}
    assert services == {n: {"llmops.dev/deployment": "chat", "llmops.dev/revision": rev} for n, rev in selects.items()}
    hosts = {o["metadata"]["name"]: o["spec"]["host"] for o in objects if o["kind"] == "DestinationRule"}
    assert hosts == {"chat": "chat.ml.svc.cluster.local", "chat-canary": "chat-canary.ml.svc.cluster.local"}
    (vs,) = [o for o in objects if o["kind"] == "VirtualService"]
    assert {r["destination"]["host"]: r["weight"] for r in vs["spec"]["http"][0]["route"]} == {
        "chat.ml.svc.cluster.local": 90, "chat-canary.ml.svc.cluster.local": 10}
    for obj in objects:
        validate(obj)


def test_runtime_env_overrides_the_operators_defaults_and_names_each_variable_once():
    """A runtime.env entry replaces the operator's default of the same name (the user's value wins); the runtime
    contract (LLMOPS_*) and the secretRef's credentials stay the operator's (validation refuses entries naming them,
    so these never reach the builder from a valid object; if they do, the list still has each name once, which
    server-side apply needs: it refuses two entries of one name)."""
    spec = LLMDeploymentSpec.model_validate({
        "model": {"mlflow": {"name": "m", "version": "3", "secretRef": {"name": "creds"}}},
        "runtime": {"env": [{"name": "HF_HOME", "value": "/var/cache/llmops/hub"}, {"name": "LLMOPS_REVISION", "value": "x"},
                            {"name": "MLFLOW_TRACKING_URI", "value": "http://elsewhere"}, {"name": "A", "value": "1"},
                            {"name": "A", "value": "2"}]}})
    dep = b.build_deployment("chat", "ml", spec, b.make_revision(spec, b.static_model(spec)), 1)
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), names
    by_name = {e["name"]: e for e in env}
    assert by_name["HF_HOME"]["value"] == "/var/cache/llmops/hub"  # the user's value wins over the default
    assert by_name["HOME"]["value"] == "/home/vllm" and by_name["VLLM_NO_USAGE_STATS"]["value"] == "1"
    assert by_name["LLMOPS_REVISION"]["value"] == dep["metadata"]["labels"]["llmops.dev/revision"]
    assert by_name["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["name"] == "creds"
    assert by_name["A"]["value"] == "2"  # as the kubelet would: the last of two
    validate(dep)


def test_hpa_on_vllm_queue(samples):
    spec = _spec(samples["llmdeployment-multigpu"])
    hpa = b.build_hpa("llama-70b", "llm-serving", spec, "llama-70b-abc")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-70b-abc"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (metric,) = hpa["spec"]["metrics"]
    assert metric == {"type": "Pods", "pods": {"metric": {"name": "vllm_num_requests_waiting"},
                                               "target": {"type": "AverageValue", "averageValue": "8"}}}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 900


def test_keda_scaled_object(samples):
    spec = _spec(samples["llmdeployment-keda"])
    so = b.build_scaled_object("mistral-batch", "default", spec, "mistral-batch-abc", "abc")
    assert so["spec"]["minReplicaCount"] == 0 and so["spec"]["maxReplicaCount"] == 4
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == (
        'sum(vllm:kv_cache_usage_perc{namespace="default",llmops_dev_deployment="mistral-batch",llmops_dev_revision="abc"})')
    assert trigger["metadata"]["threshold"] == "0.75"


@pytest.mark.parametrize("value,quantity", [(5, "5"), (0.8, "800m"), (2.5, "2500m"), (12.0, "12")])
def test_quantity(value, quantity):
    assert b._quantity(value) == quantity


def test_pdb_and_service(samples):
    spec = _spec(samples["llmdeployment-minimal"])
    pdb = b.build_pdb("qwen-small", "default", spec)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"llmops.dev/deployment": "qwen-small"}}}
    svc = b.build_service("qwen-small", "default", spec, "stable", "aaaa")
    assert svc["metadata"]["name"] == "qwen-small"
    assert svc["spec"]["selector"] == {"llmops.dev/deployment": "qwen-small", "llmops.dev/revision": "aaaa"}
    assert svc["spec"]["ports"][0]["name"] == "http" and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert b.build_service("qwen-small", "default", spec, "canary", "bbbb")["metadata"]["name"] == "qwen-small-canary"


# ---------------------------------------------------- whole passes (observe, plan, execute against the fake)


class _Cluster:
    """One LLMDeployment in a FakeKube, reconciled as the handler does."""

    def __init__(self, doc: dict):
        from tests.unit.fakes import FakeKube

        self.kube = FakeKube()
        doc = copy.deepcopy(doc)
        doc["metadata"].setdefault("namespace", "default")
        self.key = (doc["apiVersion"], doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"])
        self.kube.add(doc)

    def reconcile(self, now: str) -> list[tuple[str, str, str]]:
        """One pass through the handler's own entry point (``run_pass``) over the fakes: the writes it made."""
        from llm_operator._reconcile import run_pass
        from tests.unit.fakes import fake_deps

        before = len(self.kube.writes)
        run_pass(fake_deps(self.kube, now), self.key[2], self.key[3])
        return self.kube.writes[before:]

    def of(self, kind: str) -> dict[str, dict]:
        return {k[3]: v for k, v in self.kube.objects.items() if k[1] == kind}

    @property
    def status(self) -> dict:
        return self.kube.objects[self.key]["status"]

    def ready(self):
        for dep in self.of("Deployment").values():
            dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": dep["spec"]["replicas"],
                             "readyReplicas": dep["spec"]["replicas"]}

    def edit(self, **spec):
        obj = self.kube.objects[self.key]
        obj["spec"].update(copy.deepcopy(spec))
        obj["metadata"]["generation"] += 1


def _serving(samples) -> _Cluster:
    """qwen-small, served and ready, under this release's defaults."""
    cluster = _Cluster(samples["llmdeployment-minimal"])
    cluster.reconcile("2026-11-21T10:00:00Z")
    cluster.ready()
    assert cluster.reconcile("2026-11-21T10:00:30Z") == [("status", "LLMDeployment", "qwen-small")]
    return cluster


def test_a_canary_takes_mesh_traffic_only_and_the_service_switches_at_promotion(samples):
    """Through a canary at 25%, the Service clients call keeps selecting the stable revision (a client outside
    the mesh never reaches the canary before promotion); the canary's own Service carries the mesh's 25%."""
    cluster = _serving(samples)
    (stable,) = cluster.of("Deployment")
    cluster.edit(runtime={"maxModelLen": 4096}, rollout={"steps": [{"setWeight": 25}, {"pause": {}}]})
    cluster.reconcile("2026-11-21T10:01:00Z")
    cluster.reconcile("2026-11-21T10:01:10Z")
    cluster.ready()
    cluster.reconcile("2026-11-21T10:01:20Z")
    old, new = (name.rsplit("-", 1)[1] for name in (stable, next(n for n in cluster.of("Deployment") if n != stable)))

    def selects() -> dict[str, str]:
        return {n: svc["spec"]["selector"]["llmops.dev/revision"] for n, svc in cluster.of("Service").items()}

    assert b.routes_of(cluster.of("VirtualService")["qwen-small"]) == b.Routes(75, 25, 0)
    assert selects() == {"qwen-small": old, "qwen-small-canary": new}
    rollout = next(iter(cluster.of("LLMRollout").values()))
    rollout["spec"]["promote"] = True
    for at in ("2026-11-21T10:02:00Z", "2026-11-21T10:02:10Z", "2026-11-21T10:02:20Z"):
        cluster.ready()
        cluster.reconcile(at)
    assert cluster.status["stableRevision"] == new
    assert selects() == {"qwen-small": new, "qwen-small-canary": new}
    assert b.routes_of(cluster.of("VirtualService")["qwen-small"]) == b.Routes(100, 0, 0)


# ------------------------------------------------------------------------- revisions and their defaults

NEW_IMAGE = "ghcr.io/llm-operator/runtime:0.2.0-vllm0.33.0"


@pytest.fixture
def upgrade():
    """``upgrade()``: from now on, a later release of the operator whose default runtime image is another (a new
    vLLM). The pydantic default changes as a release would change it, and every model embedding ``Runtime`` is
    rebuilt around it; the fixture puts the first default back afterwards."""
    from llm_operator._api import LLMDeploymentSpec, LLMRolloutSpec, RolloutTarget, Runtime

    field = Runtime.model_fields["image"]
    first = field.default

    def release(image=NEW_IMAGE):
        field.default = image
        for model in (Runtime, RolloutTarget, LLMDeploymentSpec, LLMRolloutSpec):
            model.model_rebuild(force=True)
        assert _spec({"metadata": {"name": "x"}, "spec": {"model": {"uri": "hf://a/b"}}}).runtime.image == image

    yield release
    release(first)


def _image(dep: dict) -> str:
    return dep["spec"]["template"]["spec"]["containers"][0]["image"]


def test_a_release_with_new_defaults_leaves_running_revisions_alone(samples, upgrade):
    """An operator upgrade that changes a default (the runtime image, with a new vLLM) re-templates no running
    Deployment and starts no rollout: the revision is rendered from the defaults recorded on it."""
    cluster = _serving(samples)
    (before,) = cluster.of("Deployment").values()
    upgrade()
    assert cluster.reconcile("2026-11-21T10:01:00Z") == []  # not one write: no pod is replaced
    assert cluster.reconcile("2026-11-21T10:02:00Z") == []
    (after,) = cluster.of("Deployment").values()
    assert _image(after) == DEFAULT_RUNTIME_IMAGE and after == before
    assert cluster.of("LLMRollout") == {}


def test_new_defaults_reach_a_deployment_at_its_next_revision_through_a_rollout(samples, upgrade):
    cluster = _serving(samples)
    (stable,) = cluster.of("Deployment")
    upgrade()
    cluster.edit(runtime={"maxModelLen": 4096})
    cluster.reconcile("2026-11-21T10:01:00Z")
    (rollout,) = cluster.of("LLMRollout").values()  # the new revision goes through the rollout strategy
    cluster.reconcile("2026-11-21T10:01:10Z")
    new = {n: d for n, d in cluster.of("Deployment").items() if n != stable}
    assert [_image(d) for d in new.values()] == [NEW_IMAGE]
    assert _image(cluster.of("Deployment")[stable]) == DEFAULT_RUNTIME_IMAGE  # stable untouched meanwhile
    assert json.loads(next(iter(new.values()))["metadata"]["annotations"][b.DEFAULTS_ANNOTATION])["runtime"]["image"] == NEW_IMAGE


def test_new_defaults_reach_a_running_revision_by_an_explicit_rollout(samples, upgrade):
    """Naming the new image in the spec (even though it is now the default) is a new revision, rolled out."""
    cluster = _serving(samples)
    upgrade()
    cluster.edit(runtime={**samples["llmdeployment-minimal"]["spec"]["runtime"], "image": NEW_IMAGE})  # nothing else
    cluster.reconcile("2026-11-21T10:01:00Z")
    (rollout,) = cluster.of("LLMRollout").values()
    assert rollout["metadata"]["labels"]["llmops.dev/revision"] != cluster.status["stableRevision"]


def test_new_defaults_reach_a_running_revision_by_an_llmrollout_to_the_same_model(samples, upgrade):
    """An LLMRollout that names the model the deployment serves, and no runtime, builds its revision with this
    release's defaults: the way to move one LLMDeployment to a new release's image without editing its spec."""
    cluster = _serving(samples)
    upgrade()
    cluster.kube.add({"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout",
                      "metadata": {"name": "to-new-image", "namespace": "default", "creationTimestamp": "2026-11-21T10:01:00Z"},
                      "spec": {"deploymentName": "qwen-small", "target": {"model": {"uri": "hf://Qwen/Qwen2.5-1.5B-Instruct"}}}})
    cluster.reconcile("2026-11-21T10:01:00Z")
    images = {n: _image(d) for n, d in cluster.of("Deployment").items()}
    assert sorted(images.values()) == [DEFAULT_RUNTIME_IMAGE, NEW_IMAGE]  # stable as built, the new revision as released
    assert cluster.kube.objects[("llmops.dev/v1alpha1", "LLMRollout", "default", "to-new-image")]["status"]["phase"] == "Progressing"


def test_an_upgrade_during_a_rollout_keeps_the_revision_it_is_rolling_out(samples, upgrade):
    cluster = _serving(samples)
    cluster.edit(runtime={"maxModelLen": 4096})
    cluster.reconcile("2026-11-21T10:01:00Z")
    cluster.reconcile("2026-11-21T10:01:10Z")
    deployments = copy.deepcopy(cluster.of("Deployment"))
    assert len(deployments) == 2
    upgrade()
    assert [w for w in cluster.reconcile("2026-11-21T10:01:20Z") if w[1] != "LLMRollout"] == []
    assert cluster.of("Deployment") == deployments  # the canary is neither replaced nor re-templated
    assert len(cluster.of("LLMRollout")) == 1


def test_a_revision_built_before_defaults_were_recorded_keeps_its_pod_template(samples, upgrade):
    """A Deployment without the annotation was built by a release whose defaults were the baseline: after an
    upgrade it is rendered with those, and the only change is the annotation itself (metadata, no new pods)."""
    cluster = _serving(samples)
    (name, dep), = cluster.of("Deployment").items()
    del dep["metadata"]["annotations"][b.DEFAULTS_ANNOTATION]
    template = copy.deepcopy(dep["spec"]["template"])
    upgrade()
    assert cluster.reconcile("2026-11-21T10:01:00Z") == [("apply", "Deployment", name)]
    after = cluster.of("Deployment")[name]
    assert after["spec"]["template"] == template
    assert json.loads(after["metadata"]["annotations"][b.DEFAULTS_ANNOTATION]) == b.REVISION_BASELINE


# (case, the spec's runtime/resources, the defaults recorded on the live revision's Deployment, the defaults it was
# built with) -> whether the spec names that live revision (else a new one, with this release's defaults)
OLD = {"runtime": {"image": "old:1"}, "resources": {}}
SPEC_REVISIONS = [
    ("same defaults", {}, b.REVISION_BASELINE, b.REVISION_BASELINE, True),
    ("recorded older image", {}, OLD, OLD, True),
    ("spec names the image the revision has", {"runtime": {"image": "old:1"}}, OLD, OLD, True),
    ("spec names another image", {"runtime": {"image": "new:2"}}, OLD, OLD, False),
    ("spec changes an engine argument", {"runtime": {"maxModelLen": 10}}, b.REVISION_BASELINE, b.REVISION_BASELINE, False),
    ("recorded value refused: the baseline", {}, {"runtime": {"startupTimeoutSeconds": 5}}, b.REVISION_BASELINE, True),
]


@pytest.mark.parametrize("case,overrides,recorded,built_with,same", SPEC_REVISIONS, ids=[c[0] for c in SPEC_REVISIONS])
def test_spec_revision_matches_a_live_revision_with_the_defaults_it_was_built_with(case, overrides, recorded, built_with, same):
    spec = _spec({"metadata": {"name": "m"}, "spec": {"model": {"uri": "hf://org/model"}, **overrides}})
    model = b.static_model(spec)
    built = b.make_revision(_spec({"metadata": {"name": "m"}, "spec": {"model": {"uri": "hf://org/model"}}}), model, built_with)
    live = {built.id: {"metadata": {"annotations": {b.DEFAULTS_ANNOTATION: json.dumps(recorded)}}}}
    found = b.spec_revision(spec, model, live)
    assert (found.id == built.id) is same
    if same:
        assert (found.runtime, found.resources) == (built.runtime, built.resources)  # rendered as it was built
    else:
        assert found == b.make_revision(spec, model)  # a new revision, with this release's defaults


def test_revision_ids_are_the_ones_earlier_releases_gave():
    """Ids name the Deployments and LLMRollouts of running clusters: these were computed by the release that
    left defaults out by comparing with the pydantic defaults (``exclude_defaults``), and must not change."""
    cases = [
        ({}, "d6fae50143"),
        ({"runtime": {"image": DEFAULT_RUNTIME_IMAGE, "startupTimeoutSeconds": 1800}}, "d6fae50143"),
        ({"runtime": {"image": "other:1"}}, "737aa7e44b"),
        ({"runtime": {"cache": {"claimName": "weights"}}, "resources": {"gpus": 2}}, "d5a2ef9c03"),
        ({"resources": {"tolerations": [{"key": "k", "operator": "Exists"}], "shmSize": "2Gi"}}, "dc8bd96357"),
        ({"runtime": {"env": [{"name": "A", "value": "1"}], "cache": {"sizeLimit": "100Gi"}}}, "58e9405415"),
    ]
    for overrides, expected in cases:
        spec = _spec({"metadata": {"name": "m"}, "spec": {"model": {"uri": "hf://org/model"}, **overrides}})
        shaping = {"model": "hf://org/model",
                   "runtime": spec.runtime.model_dump(mode="json", by_alias=True, exclude_defaults=True),
                   "resources": spec.resources.model_dump(mode="json", by_alias=True, exclude_defaults=True),
                   "servedModelName": None}
        earlier = hashlib.sha256(json.dumps(shaping, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
        assert b.make_revision(spec, b.static_model(spec)).id == earlier == expected, overrides


def test_every_default_that_reaches_the_pods_has_a_baseline():
    """A field with a default other than None or empty must be in REVISION_BASELINE (with its first default), or a
    release changing that default would change every revision's id; the baseline holds nothing else."""
    from llm_operator._api import ModelCache, Resources, Runtime

    def defaults(model, prefix=""):
        out = {}
        for name, info in model.model_fields.items():
            key = prefix + (info.alias or name)
            value = info.get_default(call_default_factory=True)
            if isinstance(value, ModelCache):
                out.update(defaults(ModelCache, key + "."))
            elif value not in (None, [], {}):
                out[key] = value
        return out

    def flat(tree, prefix=""):
        return {k: v for key, sub in tree.items()
                for k, v in (flat(sub, prefix + key + ".").items() if isinstance(sub, dict) else [(prefix + key, sub)])}

    assert set(flat(b.REVISION_BASELINE["runtime"])) == set(defaults(Runtime))
    assert set(flat(b.REVISION_BASELINE["resources"])) == set(defaults(Resources))
    assert flat(b.REVISION_BASELINE["runtime"]) == defaults(Runtime)  # this release has changed none of them


# ------------------------------------------------------------------ serving policy: auth, resilience, spreading


def _doc(**spec) -> dict:
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "chat", "namespace": "ml"},
            "spec": {"model": {"uri": "hf://org/model"}, **spec}}


def _pod(doc: dict, revision: b.Revision | None = None) -> dict:
    spec = _spec(doc)
    revision = revision or b.make_revision(spec, b.static_model(spec))
    return b.build_deployment("chat", "ml", spec, revision, 2)["spec"]["template"]["spec"]


def test_the_api_key_reaches_vllm_from_its_secret_through_the_environment_only():
    spec = _spec(_doc(auth={"apiKey": {"secretRef": {"name": "chat-key", "key": "token"}}}))
    dep = b.build_deployment("chat", "ml", spec, b.make_revision(spec, b.static_model(spec)), 1)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    (key,) = [e for e in container["env"] if e["name"] == "VLLM_API_KEY"]
    assert key == {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "chat-key", "key": "token"}}}
    assert not [a for a in container["args"] if "api-key" in a]  # never an argument (vLLM logs its non-default args)
    validate(dep)
    # Without auth.apiKey, no key: vLLM serves everyone (the default).
    plain = _pod(_doc())["containers"][0]
    assert "VLLM_API_KEY" not in {e["name"] for e in plain["env"]}


def test_a_rollout_targets_runtime_env_cannot_replace_the_api_key():
    """An LLMRollout's target.runtime replaces the runtime (and its env) but not auth: the key stays the Secret's."""
    spec = LLMDeploymentSpec.model_validate({"model": {"uri": "hf://org/model"}, "auth": {"apiKey": {"secretRef": {"name": "chat-key"}}},
                                             "runtime": {"env": [{"name": "VLLM_API_KEY", "value": "guessable"}]}})
    env = b.build_deployment("chat", "ml", spec, b.make_revision(spec, b.static_model(spec)), 1)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "VLLM_API_KEY"] == [
        {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "chat-key", "key": "api-key"}}}]


SELECT = {"matchLabels": {"llmops.dev/deployment": "chat"}}
OPEN = {"to": [{"operation": {"methods": ["GET"], "paths": ["/health", "/metrics"]}}]}
JWT = {"issuer": "https://auth.example.com", "jwksUri": "https://auth.example.com/.well-known/jwks.json"}
AUTH = [
    # (case, spec.auth, {kind: spec} of the Istio objects built, in the order they are applied)
    ("none", {}, {}),
    ("api key only: vLLM's, no Istio object", {"apiKey": {"secretRef": {"name": "k"}}}, {}),
    ("mtls strict", {"mtls": "STRICT"}, {"PeerAuthentication": {"selector": SELECT, "mtls": {"mode": "STRICT"}}}),
    ("jwt, any valid token", {"jwt": [{**JWT, "audiences": ["chat"]}]}, {
        "RequestAuthentication": {"selector": SELECT, "jwtRules": [{**JWT, "audiences": ["chat"]}]},
        "AuthorizationPolicy": {"selector": SELECT, "action": "ALLOW", "rules": [
            {"from": [{"source": {"requestPrincipals": ["*"]}}]}, OPEN]}}),
    ("jwt with a claim", {"jwt": [JWT], "allow": [{"requestPrincipals": ["https://auth.example.com/*"],
                                                  "claims": [{"claim": "groups", "values": ["llm-users", "admins"]}]}]}, {
        "RequestAuthentication": {"selector": SELECT, "jwtRules": [JWT]},
        "AuthorizationPolicy": {"selector": SELECT, "action": "ALLOW", "rules": [
            {"from": [{"source": {"requestPrincipals": ["https://auth.example.com/*"]}}],
             "when": [{"key": "request.auth.claims[groups]", "values": ["llm-users", "admins"]}]}, OPEN]}}),
    ("workloads and namespaces over mtls", {"mtls": "STRICT", "allow": [
        {"principals": ["cluster.local/ns/apps/sa/chat-frontend"]}, {"namespaces": ["batch", "eval"]}]}, {
        "PeerAuthentication": {"selector": SELECT, "mtls": {"mode": "STRICT"}},
        "AuthorizationPolicy": {"selector": SELECT, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/apps/sa/chat-frontend"]}}]},
            {"from": [{"source": {"namespaces": ["batch", "eval"]}}]}, OPEN]}}),
    ("every field of one rule must match", {"allow": [{"namespaces": ["apps"], "principals": ["cluster.local/ns/apps/sa/a"]}]}, {
        "AuthorizationPolicy": {"selector": SELECT, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/apps/sa/a"], "namespaces": ["apps"]}}]}, OPEN]}}),
]


@pytest.mark.parametrize("case,auth,expected", AUTH, ids=[c[0] for c in AUTH])
def test_auth_is_rendered_as_istio_policies_on_every_revisions_pods(case, auth, expected):
    objects = b.build_auth("chat", "ml", _spec(_doc(auth=auth)))
    assert {o["kind"]: o["spec"] for o in objects} == expected
    assert [o["kind"] for o in objects] == [k for _, k in b.SECURITY_KINDS if k in expected]  # verified before required
    for obj in objects:
        assert obj["apiVersion"] == "security.istio.io/v1" and obj["metadata"]["name"] == "chat"
        assert obj["metadata"]["labels"]["llmops.dev/deployment"] == "chat"
        validate(obj)  # Istio's own CRD schema (../shared/schemas/istio-crds.yaml)


TRAFFIC = [
    # (case, spec.traffic, the primary route's timeout and retries)
    ("defaults", {}, {"timeout": "600s", "retries": {"attempts": 2, "retryOn": "connect-failure,refused-stream,reset-before-request,503"}}),
    ("a longer budget", {"timeout": "30m"}, {"timeout": "30m", "retries": {
        "attempts": 2, "retryOn": "connect-failure,refused-stream,reset-before-request,503"}}),
    ("an Istio before 1.23", {"retries": {"retryOn": ["connect-failure", "refused-stream", "503"]}},
     {"timeout": "600s", "retries": {"attempts": 2, "retryOn": "connect-failure,refused-stream,503"}}),
    ("retries off, Istio's default retries too", {"retries": {"attempts": 0}}, {"timeout": "600s", "retries": {"attempts": 0}}),
]


@pytest.mark.parametrize("case,traffic,expected", TRAFFIC, ids=[c[0] for c in TRAFFIC])
def test_every_route_has_the_timeout_and_retries_only_before_a_generation_starts(case, traffic, expected):
    spec = _spec(_doc(traffic=traffic))
    vs = b.build_virtual_service("chat", "ml", spec, b.Routes(90, 10, 5), preview_header="x-llmops-preview")
    assert [h["name"] for h in vs["spec"]["http"]] == ["preview", "primary"]
    for http in vs["spec"]["http"]:
        assert {k: http[k] for k in ("timeout", "retries")} == expected
        assert not {"5xx", "reset", "gateway-error"} & set(http["retries"].get("retryOn", "").split(","))
    assert b.routes_of(vs) == b.Routes(90, 10, 5)  # the weights still read back
    validate(vs)


POOLS = [
    # (case, spec overrides, (maxConnections = http2MaxRequests, http1MaxPendingRequests))
    ("vLLM's default sequences, one replica", {}, (2048, 1024)),
    ("maxNumSeqs x replicas", {"runtime": {"maxNumSeqs": 64}, "replicas": 3}, (384, 192)),
    ("the autoscaler's maximum", {"runtime": {"maxNumSeqs": 64}, "replicas": 1, "autoscaling": {"maxReplicas": 8}}, (1024, 512)),
    ("scaled to zero by the spec", {"runtime": {"maxNumSeqs": 64}, "replicas": 0}, (128, 64)),
    ("written", {"traffic": {"connectionPool": {"maxRequests": 100, "maxPendingRequests": 10}}}, (100, 10)),
]


@pytest.mark.parametrize("case,overrides,expected", POOLS, ids=[c[0] for c in POOLS])
def test_connection_pool_is_sized_from_max_num_seqs_and_replicas(case, overrides, expected):
    spec = _spec(_doc(**overrides))
    for role in ("stable", "canary"):
        dr = b.build_destination_rule("chat", "ml", role, spec)
        pool = dr["spec"]["trafficPolicy"]["connectionPool"]
        assert (pool["tcp"]["maxConnections"], pool["http"]["http1MaxPendingRequests"]) == expected
        assert pool["http"]["http2MaxRequests"] == pool["tcp"]["maxConnections"]
        validate(dr)


def test_outlier_detection_ejects_stable_pods_after_consecutive_5xx_and_can_be_turned_off():
    spec = _spec(_doc(traffic={"outlierDetection": {"consecutive5xxErrors": 3, "baseEjectionTime": "1m", "maxEjectionPercent": 34}}))
    stable = b.build_destination_rule("chat", "ml", "stable", spec)["spec"]["trafficPolicy"]
    assert stable["outlierDetection"] == {"consecutive5xxErrors": 3, "interval": "10s", "baseEjectionTime": "1m", "maxEjectionPercent": 34}
    assert "outlierDetection" not in b.build_destination_rule("chat", "ml", "canary", spec)["spec"]["trafficPolicy"]
    off = _spec(_doc(traffic={"outlierDetection": {"consecutive5xxErrors": 0}}))
    assert "outlierDetection" not in b.build_destination_rule("chat", "ml", "stable", off)["spec"]["trafficPolicy"]


def _spread(pod: dict) -> list[tuple[str, int, str]]:
    return [(t["topologyKey"], t["maxSkew"], t["whenUnsatisfiable"]) for t in pod.get("topologySpreadConstraints", [])]


ZONES_THEN_NODES = [("topology.kubernetes.io/zone", 1, "ScheduleAnyway"), ("kubernetes.io/hostname", 1, "ScheduleAnyway")]
SPREADS = [
    # (case, spec overrides, the constraints)
    ("one replica: nothing to spread", {"replicas": 1}, []),
    ("replicas", {"replicas": 3}, ZONES_THEN_NODES),
    ("autoscaling up to several", {"autoscaling": {"minReplicas": 1, "maxReplicas": 4}}, ZONES_THEN_NODES),
    ("autoscaling to one at most", {"replicas": 5, "autoscaling": {"maxReplicas": 1}}, []),
    ("overridden: a hard rule over nodes", {"replicas": 3, "resources": {"topologySpread": [
        {"topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}]}},
     [("kubernetes.io/hostname", 1, "DoNotSchedule")]),
    ("turned off", {"replicas": 3, "resources": {"topologySpread": []}}, []),
    ("written, with one replica", {"replicas": 1, "resources": {"topologySpread": [{"topologyKey": "topology.kubernetes.io/zone", "maxSkew": 2}]}},
     [("topology.kubernetes.io/zone", 2, "ScheduleAnyway")]),
]


@pytest.mark.parametrize("case,overrides,expected", SPREADS, ids=[c[0] for c in SPREADS])
def test_replicas_spread_over_zones_and_nodes(case, overrides, expected):
    doc = _doc(**overrides)
    pod = _pod(doc)
    assert _spread(pod) == expected
    spec = _spec(doc)
    revision = b.make_revision(spec, b.static_model(spec)).id
    for constraint in pod.get("topologySpreadConstraints", []):  # each revision spreads its own pods
        assert constraint["labelSelector"] == {"matchLabels": {"llmops.dev/deployment": "chat", "llmops.dev/revision": revision}}
    validate(b.build_deployment("chat", "ml", spec, b.make_revision(spec, b.static_model(spec)), 2))


def test_gpu_products_are_a_required_node_affinity_beside_the_node_selector():
    pod = _pod(_doc(resources={"gpuProducts": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"], "nodeSelector": {"pool": "llm"}}))
    assert pod["affinity"] == {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                               "values": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]}]}]}}}
    assert pod["nodeSelector"] == {"pool": "llm"}  # both apply
    assert "affinity" not in _pod(_doc())


def test_serving_policy_fields_name_no_new_revision():
    """auth and traffic are not part of a revision; the new resources fields left at their defaults change no id
    (ids name running Deployments): only a value written for them does."""
    def revision(**overrides) -> str:
        spec = _spec(_doc(**overrides))
        return b.make_revision(spec, b.static_model(spec)).id

    base = revision()
    assert base == "d6fae50143"  # the id every earlier release gave this spec (test_revision_ids_are_the_ones_earlier_releases_gave)
    for overrides in ({"auth": {"apiKey": {"secretRef": {"name": "k"}}, "mtls": "STRICT"}},
                      {"traffic": {"timeout": "60s", "retries": {"attempts": 0}, "connectionPool": {"maxRequests": 9}}},
                      {"replicas": 4}, {"resources": {"gpuProducts": []}}):
        assert revision(**overrides) == base, overrides
    for overrides in ({"resources": {"gpuProducts": ["NVIDIA-L4"]}}, {"resources": {"topologySpread": []}}):
        assert revision(**overrides) != base, overrides


def test_a_revision_built_before_the_spread_default_keeps_its_pod_template():
    """The default spread is recorded on the revisions this release builds (llmops.dev/defaults); one built before
    it (its record has no topologySpread) is rendered without it, so upgrading the operator replaces no pod of a
    running multi-replica revision. Its next revision gets the spread, through its rollout."""
    cluster = _Cluster(_doc(replicas=3))
    cluster.reconcile("2026-11-21T10:00:00Z")
    ((name, dep),) = cluster.of("Deployment").items()
    assert _spread(dep["spec"]["template"]["spec"]) == ZONES_THEN_NODES
    assert json.loads(dep["metadata"]["annotations"][b.DEFAULTS_ANNOTATION])[b.SPREAD_DEFAULT_KEY] == list(b.DEFAULT_TOPOLOGY_SPREAD)
    # The same revision as the previous release built it: its record lacks the spread, its pods have none.
    old = copy.deepcopy(dep)
    recorded = json.loads(old["metadata"]["annotations"][b.DEFAULTS_ANNOTATION])
    del recorded[b.SPREAD_DEFAULT_KEY]
    old["metadata"]["annotations"][b.DEFAULTS_ANNOTATION] = json.dumps(recorded, sort_keys=True, separators=(",", ":"))
    del old["spec"]["template"]["spec"]["topologySpreadConstraints"]
    del old["metadata"]["annotations"]["llmops.dev/applied-hash"]
    cluster.kube.objects[("apps/v1", "Deployment", "ml", name)] = old
    template = copy.deepcopy(old["spec"]["template"])
    cluster.ready()
    cluster.reconcile("2026-11-21T10:00:30Z")
    assert cluster.of("Deployment")[name]["spec"]["template"] == template  # no spread added under running pods
    assert cluster.reconcile("2026-11-21T10:01:00Z") == []
    cluster.edit(runtime={"maxModelLen": 4096})  # the next revision
    cluster.reconcile("2026-11-21T10:01:30Z")
    cluster.reconcile("2026-11-21T10:01:40Z")
    (new,) = [d for n, d in cluster.of("Deployment").items() if n != name]
    assert _spread(new["spec"]["template"]["spec"]) == ZONES_THEN_NODES


def test_auth_objects_are_applied_in_order_and_deleted_when_the_spec_drops_them():
    cluster = _Cluster(_doc(auth={"jwt": [JWT], "mtls": "STRICT"}))
    writes = cluster.reconcile("2026-11-21T10:00:00Z")
    security = [(verb, kind) for verb, kind, _ in writes if kind in {k for _, k in b.SECURITY_KINDS}]
    assert security == [("apply", "PeerAuthentication"), ("apply", "RequestAuthentication"), ("apply", "AuthorizationPolicy")]
    assert writes.index(("apply", "VirtualService", "chat")) < writes.index(("apply", "PeerAuthentication", "chat"))
    cluster.ready()
    cluster.reconcile("2026-11-21T10:00:30Z")
    assert [w for w in cluster.reconcile("2026-11-21T10:01:00Z") if w[1] != "LLMDeployment"] == []  # idle: no write
    cluster.edit(auth={"mtls": "STRICT"})
    writes = cluster.reconcile("2026-11-21T10:02:00Z")
    # The policy requiring a token goes before the token's verification, or everyone would be refused meanwhile.
    assert [(v, k) for v, k, _ in writes if v == "delete"] == [("delete", "AuthorizationPolicy"), ("delete", "RequestAuthentication")]
    assert set(cluster.of("PeerAuthentication")) == {"chat"} and not cluster.of("AuthorizationPolicy")
