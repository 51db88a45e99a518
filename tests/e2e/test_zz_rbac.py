"""RBAC least privilege, proven against what kube-apiserver itself authorised: its audit log of this e2e session
(the operator ran under the ServiceAccount and ClusterRole of manifests/, with a TokenRequest token). Every
request the operator made was allowed, every verb the ClusterRole grants was used, and a request outside it is
refused. Runs last in the session (file name), after the LLMDeployment, registry and rollout tests have driven
the operator through its paths; the namespaced overlay gets the same check on a short run of its own.

A refusal for want of a grant is not only the authorisation filter's (audit annotation
``authorization.k8s.io/decision: forbid``): a server-side apply of an object that does not exist yet is authorised
as `patch` by the filter, then as `create` by the patch handler itself (k8s.io/apiserver
pkg/endpoints/handlers/patch.go, ``withAuthorization`` in update.go; a PUT that creates likewise), whose 403 leaves
the decision at "allow". Its message is the filter's (``User "..." cannot create resource ...``), which tells it
from admission's 403s (a namespace being deleted, a ResourceQuota): :func:`_refusals` reads both."""

import contextlib
import copy
import re

import kubernetes
import pytest
from kubernetes import dynamic

from llm_sandbox.cluster import OPERATOR_USER, ROOT, Operator, kustomize, wait_for
from llm_sandbox.controlplane import Request
from tests.e2e.conftest import sample

pytestmark = pytest.mark.e2e

Need = tuple[str, str, str]  # (API group, resource[/subresource], verb), as the authoriser sees a request

#: Grants no request in the audit log shows, with why they are needed all the same.
NOT_A_REQUEST = {
    # OwnerReferencesPermissionEnforcement checks it when a child's owner reference has blockOwnerDeletion:
    # an admission-time check inside each create, not a request of its own (proven below by taking it away).
    ("llmops.dev", "llmdeployments/finalizers", "update"),
    # The same plugin requires `delete` on a child whose owner references an update changes (an LLMDeployment
    # recreated over orphaned children: test_llmdeployment's orphan test); the operator never deletes these.
    # (DestinationRules and VirtualServices it deletes when spec.traffic.router changes.)
    ("", "services", "delete"),
}

#: kube-apiserver's words for a request the authoriser refused (responsewriters.ForbiddenStatusError): the
#: authorisation filter's 403 and the patch and update handlers' own check of a `create` alike.
_REFUSED = re.compile(r'User "[^"]*" cannot (?P<verb>[a-z]+) resource "(?P<resource>[^"]+)" in API group "(?P<group>[^"]*)"')
#: OwnerReferencesPermissionEnforcement's refusals: admission asking the authoriser about a grant (the owner's
#: finalizers, the child's delete), a grant the role lacks all the same.
_REFUSED_IN_ADMISSION = ("cannot set blockOwnerDeletion", "cannot set an ownerRef on a resource you can't delete")


def _granted(rules, need):
    group, resource, verb = need
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", []) for r in rules)


def _need(r: Request) -> Need:
    return (r.group or "", f"{r.resource}/{r.subresource}" if r.subresource else r.resource or "", r.verb)


def _refusals(requests: list[Request], user: str) -> list[tuple[Request, Need | None]]:
    """The requests of ``user`` refused for want of a grant, each with the grant its refusal names (None when it
    names none: an admission plugin's). The authorisation filter's refusals (decision "forbid"), the handlers' of a
    `create` by server-side apply or PUT (403, decision "allow", the filter's wording) and admission's permission
    checks; not admission's other 403s (NamespaceLifecycle's "being terminated", a ResourceQuota's "exceeded quota"),
    which refuse what the role allowed. A 403 with no message is counted too: nothing shows it was not RBAC."""
    out: list[tuple[Request, Need | None]] = []
    for r in requests:
        if r.user != user or (r.code != 403 and r.decision != "forbid"):
            continue
        match = _REFUSED.search(r.message)
        if match:
            out.append((r, (match["group"], match["resource"], match["verb"])))
        elif r.decision == "forbid":
            out.append((r, _need(r)))
        elif not r.message or any(words in r.message for words in _REFUSED_IN_ADMISSION):
            out.append((r, None))
    return out


def _authorised(r: Request) -> set[Need]:
    """What the authoriser allowed ``r``: its verb unless the filter refused it, and `create` as well when a
    server-side apply (or a PUT) created its object (201): the handler authorised that too."""
    if r.resource is None or r.decision != "allow":  # refused, or never authorised (API Priority and Fairness's 429)
        return set()
    need = _need(r)
    return {need, (need[0], need[1], "create")} if r.verb in ("patch", "update") and r.code == 201 else {need}


def _uses(requests: list[Request], user: str) -> set[Need]:
    """(group, resource[/subresource], verb) the API server authorised for ``user``."""
    return {need for r in requests if r.user == user for need in _authorised(r)}


def _unexplained(requests: list[Request], user: str, rules) -> list[tuple[str, str, Need | None]]:
    """(verb, path, grant) of each refusal of ``user`` the role does not explain away: what it does not grant, and
    what it grants but was never allowed on a later try (a restarted kube-apiserver's RBAC authoriser refuses
    until its informers have synced: test_faults restarts it)."""
    mine = [r for r in requests if r.user == user]
    out = set()
    for r, need in _refusals(mine, user):
        if need is None or not _granted(rules, need) or not any(x.at > r.at and need in _authorised(x) for x in mine):
            out.add((r.verb, r.path, need))
    return sorted(out, key=repr)


def _role(path, kind="ClusterRole"):
    (role,) = [d for d in kustomize(path) if d["kind"] == kind and d["metadata"]["name"] == "llm-operator"]
    return role


def _without(rules, group: str, resource: str, verb: str) -> list[dict]:
    """``rules`` less one verb on one resource (a rule naming other resources too keeps them all its verbs)."""
    out = []
    for rule in copy.deepcopy(rules):
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            others = [x for x in rule["resources"] if x != resource]
            if others:
                out.append({**rule, "resources": others})
            out.append({**rule, "resources": [resource], "verbs": [v for v in rule["verbs"] if v != verb]})
        else:
            out.append(rule)
    return out


def _allowed(api, user: str, namespace: str | None, verb: str, resource: str, group: str = "") -> bool:
    """kube-apiserver's own answer (a SubjectAccessReview, as the admin: no request of ``user`` in the audit log)
    whether ``user`` may; a binding just written takes effect when the RBAC authoriser's informers see it."""
    sa_namespace = user.split(":")[2]
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
              "spec": {"user": user, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}", "system:authenticated"],
                       "resourceAttributes": {"namespace": namespace or "", "verb": verb, "group": group, "resource": resource}}}
    return bool(api.create(review)["status"].get("allowed"))


def _client(kubeconfig: str) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=kubeconfig))


def _refused(call) -> int:
    """The HTTP status a call as another identity was refused with (0: it was not)."""
    try:
        call()
    except (dynamic.exceptions.DynamicApiError, kubernetes.client.ApiException) as error:
        return int(error.status or 0)
    return 0


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
    # Refusals for want of a grant, the filter's and the handlers' (a server-side apply that would create is
    # authorised as `create` inside the patch handler, decision "allow"); not admission's 403s (an Event posted into
    # a namespace being deleted: NamespaceLifecycle; a ResourceQuota: test_llmdeployment's failing-pass test),
    # which refuse what the role allowed.
    rules = _role(ROOT / "manifests")["rules"]
    assert _unexplained(mine, OPERATOR_USER, rules) == [], "requests kube-apiserver refused the operator for want of a grant"
    # What the role grants was refused only while a restarted kube-apiserver's RBAC authoriser warmed up (its
    # informers sync after it answers; test_faults restarts it): each such request was allowed on a retry.
    assert len([r for r, need in _refusals(mine, OPERATOR_USER) if need and _granted(rules, need)]) <= 20


def test_the_role_grants_nothing_unused(recorded, api, operator):
    used = _uses(api.requests(), OPERATOR_USER)
    unused = [(g, res, v) for rule in _role(ROOT / "manifests")["rules"] for g in rule["apiGroups"] for res in rule["resources"]
              for v in rule["verbs"] if (g, res, v) not in used and (g, res, v) not in NOT_A_REQUEST]
    assert unused == [], f"granted but never used in the e2e session: {unused}"


def test_a_request_outside_the_role_is_refused(api):
    """Negative control: the operator's own credentials cannot list Nodes or bind itself cluster-admin."""
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


def test_a_server_side_apply_that_creates_needs_the_create_grant(api):
    """Negative control of the audit check: the operator's ClusterRole less `create` on Services, bound in a
    throwaway namespace to a ServiceAccount of its own. Its server-side apply of an absent Service (what the
    operator sends) is authorised as `patch` by the filter, then refused by the patch handler's own `create` check:
    a 403 whose audit record says decision "allow". :func:`_unexplained`, the check the operator's requests go
    through, flags it; once the Service exists the same apply is a patch and passes."""
    namespace = api.namespace("rbac-no-create", model_store=False)
    name, user = "no-create", f"system:serviceaccount:{namespace}:no-create"
    role = copy.deepcopy(_role(ROOT / "manifests"))
    role["metadata"] = {"name": "llm-operator-no-create"}
    role["rules"] = _without(role["rules"], "", "services", "create")
    assert _granted(role["rules"], ("", "services", "patch")) and not _granted(role["rules"], ("", "services", "create"))
    try:
        api.apply(role)
        api.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}})
        api.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": namespace},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
                   "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
        wait_for(lambda: _allowed(api, user, namespace, "patch", "services"), 30, "the binding in effect")
        client = _client(api.operator_kubeconfig(namespace, name))
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe", "namespace": namespace},
                   "spec": {"selector": {"app": "probe"}, "ports": [{"name": "http", "port": 8000}]}}

        def apply():
            return client.server_side_apply(client.resources.get(api_version="v1", kind="Service"), body=service, name="probe",
                                            namespace=namespace, field_manager="llm-operator", force_conflicts=True)

        mark = len(api.requests())
        assert _refused(apply) == 403
        (refused,) = wait_for(lambda: [r for r in api.requests()[mark:] if r.user == user and r.resource == "services"], 10, "the apply audited")
        assert (refused.verb, refused.code, refused.decision) == ("patch", 403, "allow")  # no "forbid": the filter allowed the patch
        assert f'User "{user}" cannot create resource "services"' in refused.message
        assert _refusals([refused], user) == [(refused, ("", "services", "create"))]
        assert _unexplained(api.requests(), user, role["rules"]) == [("patch", refused.path, ("", "services", "create"))]
        # The same apply of an object that exists is authorised as `patch` alone, which the role grants.
        api.create(service)
        assert _refused(apply) == 0
        assert _unexplained(api.requests(), user, role["rules"]) == [("patch", refused.path, ("", "services", "create"))]
        # A refusal of what the role grants is excused only by a later request allowed the same grant (a restarted
        # API server warming up): this user's later apply patched an existing Service, no `create`, so against the
        # operator's own ClusterRole too the refusal stays flagged.
        assert _unexplained(api.requests(), user, _role(ROOT / "manifests")["rules"]) != []
    finally:
        api.delete_namespace(namespace)
        with contextlib.suppress(dynamic.exceptions.NotFoundError):
            api.delete("rbac.authorization.k8s.io/v1", "ClusterRole", None, role["metadata"]["name"])


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
        assert _refusals(refused[:1], user) == [(refused[0], None)]  # ... asking the authoriser: the audit check flags it
        assert api.list("apps/v1", "Deployment", namespace) == []
    finally:
        op.stop()


LLMD = ("llmops.dev/v1alpha1", "LLMDeployment")


def test_the_namespaced_overlay_is_least_privilege_too(api, tmp_path, prometheus, alone):
    """The namespaced install (manifests/overlays/namespaced: a Role in llm-serving, nothing cluster-wide) under its
    own ServiceAccount: a short run that uses every verb the Role grants (but NOT_A_REQUEST's) is refused nothing,
    and asks nothing outside llm-serving; the same credentials are refused outside the Role, and the audit check
    sees those refusals. The run: a pass refused by a ResourceQuota (admission's 403, not RBAC's) repeats its
    Warning (Event patch), a restarted operator finds that Event (get); an HPA, a PodDisruptionBudget and the three
    Istio security policies are created, then swapped for a ScaledObject or dropped with a new model (a rollout:
    LLMRollout create, status patches, the old Deployment deleted) routed by the Gateway API instead (an HTTPRoute and
    two InferencePools replace the VirtualService and DestinationRules), and a third model drops the ScaledObject,
    goes back to Istio's routes and prunes the first rollout (historyLimit 0); an MLflow model's Secret is read."""
    objects = kustomize(ROOT / "manifests" / "overlays" / "namespaced")
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    rules = _role(ROOT / "manifests" / "overlays" / "namespaced", "Role")["rules"]
    namespace = api.namespace("llm-serving")
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
    wait_for(lambda: _allowed(api, user, namespace, "watch", "llmdeployments", "llmops.dev"), 30, "the RoleBinding in effect")
    api.create({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services"}, "spec": {"hard": {"services": "0"}}},
               namespace)
    wait_for(lambda: (api.get("v1", "ResourceQuota", namespace, "no-services") or {}).get("status", {}).get("hard"), 30, "the quota counted")
    kubeconfig = api.operator_kubeconfig(sa_namespace, "llm-operator")
    op = Operator(kubeconfig, tmp_path / "operator.log", args=["--namespace", namespace], env={"LLMOPS_PROMETHEUS_URL": prometheus.url})
    start = len(api.requests())

    def asked(resource: str, verb: str) -> list[Request]:
        return [r for r in api.requests()[start:] if r.user == user and r.resource == resource and r.verb == verb]

    def status(name: str) -> dict:
        return (api.get(*LLMD, namespace, name) or {}).get("status") or {}

    def settled(generation: int) -> bool:
        s = status("namespaced")
        return s.get("observedGeneration") == generation and s.get("stableRevision") == s.get("specRevision") and "canaryRevision" not in s

    def child(api_version: str, kind: str) -> dict | None:
        return api.get(api_version, kind, namespace, "namespaced")

    security = [("security.istio.io/v1", k) for k in ("PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy")]
    doc = sample("llmdeployment-cpu")
    doc["metadata"]["name"] = "namespaced"
    doc["spec"].update({
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "metric": "numRequestsRunning", "target": 4},
        "auth": {"jwt": [{"issuer": "https://auth.example.com", "jwksUri": "https://auth.example.com/.well-known/jwks.json",
                          "audiences": ["namespaced"]}], "allow": [{"namespaces": ["apps"]}], "mtls": "STRICT"},
        "rollout": {"strategy": "none", "scaleDownDelaySeconds": 0, "historyLimit": 0}})
    registry = sample("llmdeployment-cpu")
    registry["metadata"]["name"] = "namespaced-registry"
    registry["spec"]["model"] = {"mlflow": {"name": "support-assistant", "alias": "champion", "secretRef": {"name": "no-such-secret"}}}
    op.start()
    try:
        api.create(doc, namespace)
        api.create(registry, namespace)  # its Secret is read (404: still the `get` the Role grants)
        wait_for(lambda: asked("events", "patch"), 60, "the refused pass's Warning counted on")
        op.stop()
        op.start()
        wait_for(lambda: asked("events", "get"), 60, "the restarted operator reading its Event back")
        api.delete("v1", "ResourceQuota", namespace, "no-services")
        wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in status("namespaced").get("conditions", []))
                 and all(child(*k) for k in [*security, ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget")]),
                 90, "Ready under the namespaced install, with its HPA, PodDisruptionBudget and policies")
        gateway = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "inference-gateway"}], "endpointPicker": {
            "stable": {"name": "namespaced-epp"}, "canary": {"name": "namespaced-canary-epp"}}}}
        api.patch(*LLMD, namespace, "namespaced", {"spec": {
            "model": {"uri": "hf://org/model-v2"}, "auth": None, "disruptionBudget": {"enabled": False}, "traffic": gateway,
            "autoscaling": {"provider": "keda", "keda": {"serverAddress": prometheus.url}, "metric": "kvCacheUsage", "target": 0.75}}})
        wait_for(lambda: settled(2) and child("keda.sh/v1alpha1", "ScaledObject") and len(api.list("apps/v1", "Deployment", namespace)) == 1
                 and api.accept_http_routes(namespace)  # as its Gateway would: then the VirtualService goes
                 and child("gateway.networking.k8s.io/v1", "HTTPRoute") and child("networking.istio.io/v1", "VirtualService") is None
                 and not any(child(*k) for k in [*security, ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget")]),
                 90, "model v2 stable, an HTTPRoute for the VirtualService, a ScaledObject for the HPA, no policies and no PodDisruptionBudget")
        api.patch(*LLMD, namespace, "namespaced", {"spec": {"model": {"uri": "hf://org/model-v3"}, "autoscaling": None, "traffic": None}})
        wait_for(lambda: settled(3) and child("keda.sh/v1alpha1", "ScaledObject") is None and len(api.list(*LLMD[:1], "LLMRollout", namespace)) == 1
                 and child("gateway.networking.k8s.io/v1", "HTTPRoute") is None and child("networking.istio.io/v1", "VirtualService"),
                 90, "model v3 stable on Istio's routes again, no ScaledObject, the first rollout pruned")
        wait_for(lambda: asked("secrets", "get"), 30, "the MLflow model's Secret read")
    finally:
        op.stop()
        for name in ("namespaced", "namespaced-registry"):
            with contextlib.suppress(dynamic.exceptions.NotFoundError):
                api.delete(*LLMD, namespace, name)
        with contextlib.suppress(dynamic.exceptions.NotFoundError):
            api.delete("v1", "ResourceQuota", namespace, "no-services")
    # A watch is logged when it ends (the operator stopped, twice).
    wait_for(lambda: all(asked(r, "watch") for r in ("llmdeployments", "llmrollouts", "deployments")), 30, "the watches recorded")
    run = [r for r in api.requests()[start:] if r.user == user]
    assert _refusals(run, user) == []  # none at all, not even while the RoleBinding took effect (the review above waited)
    assert [r for r in run if r.code == 403 and "exceeded quota" in r.message]  # admission's 403s: seen, and not counted as RBAC's
    outside = sorted({(r.verb, r.path) for r in run if r.namespace not in (None, namespace)})
    assert outside == []
    cluster_wide = sorted({(r.group, r.resource, r.verb) for r in run if r.namespace is None and r.resource})
    assert cluster_wide == []
    used = _uses(run, user)
    unused = [(g, res, v) for rule in rules for g in rule["apiGroups"] for res in rule["resources"] for v in rule["verbs"]
              if (g, res, v) not in used and (g, res, v) not in NOT_A_REQUEST]
    assert unused == [], f"granted by the namespaced Role but never used in its run: {unused}"

    # Negative control: the same credentials outside the Role (cluster-wide, another namespace, a verb it lacks)
    # are refused, and the audit check sees each refusal.
    client = _client(kubeconfig)
    resource = client.resources.get
    mark = len(api.requests())
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe", "namespace": "default"},
               "spec": {"ports": [{"port": 8000}]}}
    assert _refused(lambda: resource(api_version="llmops.dev/v1alpha1", kind="LLMDeployment").get()) == 403
    assert _refused(lambda: client.server_side_apply(resource(api_version="v1", kind="Service"), body=service, name="probe",
                                                     namespace="default", field_manager="llm-operator", force_conflicts=True)) == 403
    assert _refused(lambda: resource(api_version="v1", kind="Secret").get(namespace=namespace)) == 403
    refusals = wait_for(lambda: (f := _refusals(api.requests()[mark:], user)) and len(f) == 3 and f, 10, "the refusals audited")
    assert {need for _, need in refusals} == {("llmops.dev", "llmdeployments", "list"), ("", "services", "patch"), ("", "secrets", "list")}
    assert len(_unexplained(api.requests()[mark:], user, rules)) == 3
