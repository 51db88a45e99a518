"""The install: kustomize builds of manifests/ (base, namespaced overlay, monitoring add-on) render with the
real kubectl's kustomize, every object validates against its upstream schema, the operator's pod meets the
restricted Pod Security Standard, and the dashboard's and adapter's queries are valid PromQL."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from llm_operator._builders import ADAPTER_METRICS
from llm_sandbox.cluster import kubectl_binary
from tests.conftest import ROOT
from tests.schemas import validate

BUILDS = {"base": "manifests", "namespaced": "manifests/overlays/namespaced", "monitoring": "manifests/monitoring"}


def build(path: str) -> list[dict]:
    out = subprocess.run([kubectl_binary(), "kustomize", str(ROOT / path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(objects, kind, name=None):
    (found,) = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_every_object_validates(name):
    objects = build(BUILDS[name])
    assert objects
    for obj in objects:
        validate(obj)


def test_the_base_installs_crds_namespace_rbac_operator_and_metrics_service():
    kinds = sorted(o["kind"] for o in build("manifests"))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "CustomResourceDefinition", "Deployment",
                     "Namespace", "Service", "ServiceAccount"]


def test_the_operator_pod_meets_the_restricted_pod_security_standard():
    dep = one(build("manifests"), "Deployment", "llm-operator")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" and "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert "--log-format=json" in container["args"]
    service = one(build("manifests"), "Service", "llm-operator-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    namespace = one(build("manifests"), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_namespaced_install_grants_nothing_cluster_wide():
    objects = build("manifests/overlays/namespaced")
    assert [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")] == []
    role = one(objects, "Role", "llm-operator")
    base = one(build("manifests"), "ClusterRole", "llm-operator")["rules"]
    assert role["rules"] == [r for r in base if r["apiGroups"] != ["apiextensions.k8s.io"]]  # kept in step
    assert "--namespace=llm-serving" in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert one(objects, "RoleBinding")["metadata"]["namespace"] == role["metadata"]["namespace"] == "llm-serving"


def test_the_podmonitor_relabels_the_revision_the_analysis_selects_on():
    monitor = one(build("manifests/monitoring"), "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert targets["llmops_dev_revision"] == ["__meta_kubernetes_pod_label_llmops_dev_revision"]
    assert targets["llmops_dev_deployment"] == ["__meta_kubernetes_pod_label_llmops_dev_deployment"]
    assert monitor["spec"]["scrapeProtocols"] == ["PrometheusText0.0.4"]  # keeps vllm:... names


def test_the_adapter_serves_the_metric_names_the_hpas_use():
    config = yaml.safe_load(one(build("manifests/monitoring"), "ConfigMap", "prometheus-adapter-llm-operator")["data"]["config.yaml"])
    served = {}
    for rule in config["rules"]:
        series = rule["seriesQuery"].split("{")[0]
        served[re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"), series)] = series
    assert served == {adapter: prom for prom, adapter in ADAPTER_METRICS.values()}


def _promtool_check(tmp_path, exprs):
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "check", "rules", str(path)], capture_output=True, text=True)


def _grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$namespace", "ns").replace("$deployment", "chat")


def test_every_dashboard_query_parses(tmp_path):
    dashboard = json.loads((ROOT / "manifests" / "monitoring" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for topic in ("Traffic split", "Error ratio", "burn rate", "latency", "first token", "Queue depth", "KV-cache", "tokens/s", "GPU"):
        assert topic in titles
    result = _promtool_check(tmp_path, [_grafana_to_promql(e) for e in exprs])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    broken = _promtool_check(tmp_path, ["sum(rate(vllm:request_success_total[1m])"])  # negative control
    assert broken.returncode != 0
