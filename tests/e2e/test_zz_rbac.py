"""RBAC least privilege, proven against what kube-apiserver itself authorised: its audit log of this e2e session
(the operator ran under the ServiceAccount and ClusterRole of manifests/, with a TokenRequest token). Every
request the operator made was allowed, every verb the ClusterRole grants was used, and a request outside it is
refused. Runs last in the session (file name), after the LLMDeployment, registry and rollout tests have driven
the operator through its paths; the namespaced overlay gets the same check on a short run of its own."""

import copy

import pytest

from llm_sandbox.cluster import OPERATOR_USER, ROOT, Operator, kustomize, wait_for
from llm_sandbox.controlplane import Request
from tests.e2e.conftest import sample

pytestmark = pytest.mark.e2e

#: Grants no request in the audit log shows, with why they are needed all the same.
NOT_A_REQUEST = {
    # OwnerReferencesPermissionEnforcement checks it when a child's owner reference has blockOwnerDeletion:
    # an admission-time check inside each create, not a request of its own (proven below by taking it away).
    ("llmops.dev", "llmdeployments/finalizers", "update"),
    # The same plugin requires `delete` on a child whose owner references an update changes (an LLMDeployment
    # recreated over orphaned children: test_llmdeployment's orphan test); the operator never deletes these.
    ("", "services", "delete"),
    ("networking.istio.io", "destinationrules", "delete"),
    ("networking.istio.io", "virtualservices", "delete"),
}


def _granted(rules, need):
    group, resource, verb = need
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", []) for r in rules)


def _need(r: Request) -> tuple[str, str, str]:
    return (r.group or "", f"{r.resource}/{r.subresource}" if r.subresource else r.resource or "", r.verb)


def _uses(requests: list[Request], user: str) -> set[tuple[str, str, str]]:
    """(group, resource[/subresource], verb) the API server authorised for ``user``. A server-side apply that
    created its object (201) was authorised as `create` as well as `patch`."""
    out = set()
    for r in requests:
        if r.user != user or r.resource is None:
            continue
        resource = f"{r.resource}/{r.subresource}" if r.subresource else r.resource
        out.add((r.group or "", resource, r.verb))
        if r.verb == "patch" and r.code == 201:
            out.add((r.group or "", resource, "create"))
    return out


def _role(path, kind="ClusterRole"):
    (role,) = [d for d in kustomize(path) if d["kind"] == kind and d["metadata"]["name"] == "llm-operator"]
    return role


@pytest.fixture(scope="module")
def recorded(api, operator):
    """The operator stopped and started once, so that kube-apiserver records the watches it holds open: a watch is
    logged when it ends (a custom resource's watch has no earlier ResponseStarted record before its first event)."""
    operator.stop()
    wait_for(lambda: any(r.user == OPERATOR_USER and r.verb == "watch" and r.resource == "llmdeployments" for r in api.requests()),
             30, "the operator's watches recorded")
    operator.start()
    return api


def test_every_request_of_the_operator_was_allowed(recorded, api, operator):
    mine = [r for r in api.requests() if r.user == OPERATOR_USER]
    assert len(mine) > 200  # the session drove the operator through its paths
    # The authoriser's verdict, not the status code: a 403 from admission (an Event posted into a namespace being
    # deleted: NamespaceLifecycle) was authorised.
    rules = _role(ROOT / "manifests")["rules"]
    forbidden = [r for r in mine if r.decision == "forbid"]
    refused = sorted({(r.verb, r.path) for r in forbidden if not _granted(rules, _need(r))})
    assert refused == [], f"requests kube-apiserver's authoriser refused the operator: {refused}"
    # What the role grants was refused only while a restarted kube-apiserver's RBAC authoriser warmed up (its
    # informers sync after it answers; test_faults restarts it): each such request was allowed on a retry.
    for r in (r for r in forbidden if _granted(rules, _need(r))):
        assert any(x.decision == "allow" and _need(x) == _need(r) and x.at > r.at for x in mine), (r.verb, r.path)
    assert len([r for r in forbidden if _granted(rules, _need(r))]) <= 20


def test_the_role_grants_nothing_unused(recorded, api, operator):
    used = _uses(api.requests(), OPERATOR_USER)
    unused = [(g, res, v) for rule in _role(ROOT / "manifests")["rules"] for g in rule["apiGroups"] for res in rule["resources"]
              for v in rule["verbs"] if (g, res, v) not in used and (g, res, v) not in NOT_A_REQUEST]
    assert unused == [], f"granted but never used in the e2e session: {unused}"


def test_a_request_outside_the_role_is_refused(api):
    """Negative control: the operator's own credentials cannot list Nodes or bind itself cluster-admin."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=api.operator_kubeconfig())
    core = kubernetes.client.CoreV1Api(client)
    with pytest.raises(kubernetes.client.ApiException) as refused:
        core.list_node()
    assert refused.value.status == 403
    rbac = kubernetes.client.RbacAuthorizationV1Api(client)
    with pytest.raises(kubernetes.client.ApiException) as refused:
        rbac.create_cluster_role_binding({"metadata": {"name": "escalate"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                          "kind": "ClusterRole", "name": "cluster-admin"},
                                          "subjects": [{"kind": "ServiceAccount", "name": "llm-operator", "namespace": "llm-operator"}]})
    assert refused.value.status == 403
    denied = [r for r in api.requests() if r.user == OPERATOR_USER and r.decision == "forbid"]
    assert {r.resource for r in denied} >= {"nodes", "clusterrolebindings"}  # the audit log saw the refusals too


@pytest.fixture
def alone(operator):
    """The session's cluster-wide operator stopped meanwhile, so only the operator under test acts."""
    operator.stop()
    yield
    operator.start()


def test_block_owner_deletion_needs_the_finalizers_grant(api, tmp_path, alone):
    """Without `update` on llmdeployments/finalizers, OwnerReferencesPermissionEnforcement refuses every child the
    operator creates (its owner references set blockOwnerDeletion): the grant is needed, not decoration."""
    namespace = api.namespace("rbac-no-finalizers")
    role = copy.deepcopy(_role(ROOT / "manifests"))
    role["metadata"] = {"name": "llm-operator-no-finalizers"}
    role["rules"] = [r for r in role["rules"] if "llmdeployments/finalizers" not in r["resources"]]
    api.apply(role)
    api.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "no-finalizers", "namespace": "llm-operator"}})
    api.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "llm-operator-no-finalizers"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "llm-operator-no-finalizers"},
               "subjects": [{"kind": "ServiceAccount", "name": "no-finalizers", "namespace": "llm-operator"}]})
    op = Operator(api.operator_kubeconfig("llm-operator", "no-finalizers"), tmp_path / "operator.log",
                  args=["--namespace", namespace]).start()
    try:
        api.create(sample("llmdeployment-cpu"), namespace)
        user = "system:serviceaccount:llm-operator:no-finalizers"
        refused = wait_for(lambda: [r for r in api.requests() if r.user == user and r.code == 403 and r.resource == "deployments"],
                           60, "the operator's first Deployment refused")
        assert refused[0].verb == "patch"  # the server-side apply that would have created it
        assert "cannot set blockOwnerDeletion" in refused[0].message and refused[0].decision == "allow"  # admission, not RBAC
        assert api.list("apps/v1", "Deployment", namespace) == []
    finally:
        op.stop()


def test_the_namespaced_overlay_is_least_privilege_too(api, tmp_path, prometheus, alone):
    """The namespaced install (manifests/overlays/namespaced: a Role in llm-serving, nothing cluster-wide) under its
    own ServiceAccount: a short run is allowed everything it asks, and asks nothing outside llm-serving."""
    objects = kustomize(ROOT / "manifests" / "overlays" / "namespaced")
    api.namespace("llm-serving")
    sa_namespace = "llm-operator-namespaced"
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": sa_namespace}})
    for obj in objects:  # its own ServiceAccount namespace, so the session's operator keeps its grants
        if obj["kind"] in ("Role", "RoleBinding", "ServiceAccount"):
            obj = copy.deepcopy(obj)
            if obj["kind"] == "ServiceAccount":
                obj["metadata"]["namespace"] = sa_namespace
            for subject in obj.get("subjects", []):
                subject["namespace"] = sa_namespace
            api.apply(obj)
    user = f"system:serviceaccount:{sa_namespace}:llm-operator"
    op = Operator(api.operator_kubeconfig(sa_namespace, "llm-operator"), tmp_path / "operator.log", args=["--namespace", "llm-serving"],
                  env={"LLMOPS_PROMETHEUS_URL": prometheus.url}).start()
    try:
        doc = sample("llmdeployment-cpu")
        doc["metadata"]["name"] = "namespaced"
        api.create(doc, "llm-serving")
        wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True"
                             for c in ((api.get("llmops.dev/v1alpha1", "LLMDeployment", "llm-serving", "namespaced") or {})
                                       .get("status") or {}).get("conditions", [])), 90, "Ready under the namespaced install")
        api.patch("llmops.dev/v1alpha1", "LLMDeployment", "llm-serving", "namespaced", {"spec": {"model": {"uri": "hf://org/model-v2"}}})
        wait_for(lambda: [r for r in api.requests() if r.user == user and r.resource == "llmrollouts" and r.verb == "create"],
                 60, "a rollout created under the namespaced install")
    finally:
        op.stop()
    mine = [r for r in api.requests() if r.user == user]
    refused = sorted({(r.verb, r.path, r.code) for r in mine if r.decision == "forbid"})
    assert refused == []
    outside = sorted({(r.verb, r.path) for r in mine if r.namespace not in (None, "llm-serving")})
    assert outside == []
    cluster_wide = sorted({(r.group, r.resource, r.verb) for r in mine if r.namespace is None and r.resource})
    assert cluster_wide == []
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
