"""Against a real cluster (kind, say): opt in with KUBECONFIG and LLMOPS_E2E_CLUSTER=1.

Everything happens in a fresh namespace that is deleted afterwards. The LLMDeployment runs 0 replicas,
so no GPU or vLLM image is needed: the test proves the API-server side (schemas, CEL, status subresource,
server-side apply, garbage collection), which the local endpoint only approximates. Istio's CRDs are
installed from ../shared/schemas when the cluster lacks them (CRDs only, no control plane).
"""

import os
import uuid

import pytest
import yaml

from llm_sandbox.cluster import ROOT, Operator, crd_files, wait_for
from tests.schemas import SHARED_SCHEMAS, validate

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not (os.environ.get("LLMOPS_E2E_CLUSTER") == "1" and os.environ.get("KUBECONFIG")),
        reason="runs against a real cluster: set KUBECONFIG and LLMOPS_E2E_CLUSTER=1",
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import kubernetes
    from kubernetes import dynamic

    client = dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=os.environ["KUBECONFIG"]))
    crd_api = client.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    for path in crd_files():
        crd = yaml.safe_load(path.read_text())
        crd_api.server_side_apply(body=crd, name=crd["metadata"]["name"], field_manager="llmops-e2e", force_conflicts=True)
    try:
        client.resources.get(api_version="networking.istio.io/v1", kind="VirtualService")
    except kubernetes.dynamic.exceptions.ResourceNotFoundError:
        for crd in yaml.safe_load_all((SHARED_SCHEMAS / "istio-crds.yaml").read_text()):
            if crd and crd["spec"]["group"] == "networking.istio.io":
                crd_api.server_side_apply(body=crd, name=crd["metadata"]["name"], field_manager="llmops-e2e", force_conflicts=True)
    for name in ("llmdeployments.llmops.dev", "virtualservices.networking.istio.io"):
        wait_for(lambda name=name: any(c["type"] == "Established" and c["status"] == "True"
                             for c in (crd_api.get(name=name).to_dict().get("status") or {}).get("conditions", [])), 60, f"{name} established")
    client.resources.invalidate_cache() if hasattr(client.resources, "invalidate_cache") else None
    namespace = f"llmops-e2e-{uuid.uuid4().hex[:6]}"
    ns_api = client.resources.get(api_version="v1", kind="Namespace")
    ns_api.create(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    operator = Operator(os.environ["KUBECONFIG"], tmp_path_factory.mktemp("op") / "operator.log", resync_seconds=5)
    operator.start()
    yield client, namespace
    operator.stop()
    ns_api.delete(name=namespace)


def test_llmdeployment_on_a_real_api_server(cluster):
    client, namespace = cluster
    doc = yaml.safe_load((ROOT / "samples" / "llmdeployment-cpu.yaml").read_text())
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["replicas"] = 0
    llmd = client.resources.get(api_version="llmops.dev/v1alpha1", kind="LLMDeployment")
    created = llmd.create(body=doc, namespace=namespace).to_dict()

    def status():
        return (llmd.get(name="tiny-cpu", namespace=namespace).to_dict().get("status") or {})

    wait_for(lambda: status().get("observedGeneration") == created["metadata"]["generation"], 60, "status")
    ready = next(c for c in status()["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "ScaledToZero")
    for api_version, kind in [("apps/v1", "Deployment"), ("v1", "Service"), ("networking.istio.io/v1", "DestinationRule"),
                              ("networking.istio.io/v1", "VirtualService"), ("policy/v1", "PodDisruptionBudget")]:
        (child,) = client.resources.get(api_version=api_version, kind=kind).get(
            namespace=namespace, label_selector="llmops.dev/deployment=tiny-cpu").to_dict()["items"]
        assert child["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
        validate({k: v for k, v in child.items() if k != "status"})

    # The API server's own CEL refuses what the operator would mark InvalidSpec.
    bad = {**doc, "metadata": {"name": "bad", "namespace": namespace},
           "spec": {**doc["spec"], "runtime": {"tensorParallelSize": 2}}}
    with pytest.raises(Exception, match="tensorParallelSize"):
        llmd.create(body=bad, namespace=namespace)

    llmd.delete(name="tiny-cpu", namespace=namespace)
    deployments = client.resources.get(api_version="apps/v1", kind="Deployment")
    wait_for(lambda: not deployments.get(namespace=namespace).to_dict()["items"], 120, "garbage collection")
