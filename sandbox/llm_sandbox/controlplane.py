"""A real Kubernetes control plane on loopback, for the e2e tests, the demo and the benchmarks.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler of one pinned release (``sandbox/controlplane/``
builds them from their Go modules; ``make control-plane``), and kwok, which plays the kubelets of simulated GPU
nodes: they register, heartbeat through their Leases, and the pods the real scheduler binds to them are reported
Running and Ready. Nothing here emulates the API: objects, validation, admission, RBAC, garbage collection, the
Deployment and ReplicaSet controllers and scheduling are the real components'.

kube-apiserver runs with Node and RBAC authorisation, the PodSecurity, NodeRestriction and
OwnerReferencesPermissionEnforcement admission plugins, service-account token issuance (the operator gets its
token from the TokenRequest API) and a JSON audit log at metadata level, which :class:`AuditLog` reads: which
user did what, and whether it was allowed. The certificates are made with ``cryptography`` at start-up.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = pathlib.Path(__file__).resolve().parents[2]
VERSIONS_FILE = ROOT / "sandbox" / "controlplane" / "VERSIONS"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"  # kwok's pod IPs: written into pod status, never sent traffic
ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
#: Nodes whose pods kwok schedules but never reports ready: a test plays their kubelet (:meth:`Cluster.set_pods_ready`).
HELD_POOL_LABEL = "llmops.dev/test-pool"


def versions() -> dict[str, str]:
    """The pinned versions (``KUBERNETES``, ``ETCD``, ``KWOK``) from ``sandbox/controlplane/VERSIONS``."""
    out = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def cache_dir() -> pathlib.Path:
    """Where ``make control-plane`` puts the binaries: one folder per set of versions, so a rebuild happens only
    when a version changes (``LLMOPS_CONTROLPLANE_DIR`` overrides)."""
    if os.environ.get("LLMOPS_CONTROLPLANE_DIR"):
        return pathlib.Path(os.environ["LLMOPS_CONTROLPLANE_DIR"])
    v = versions()
    base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    return base / "llm-operator" / f"controlplane-k8s{v['KUBERNETES']}-etcd{v['ETCD']}-kwok{v['KWOK']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------- PKI


class Pki:
    """A throwaway certificate authority for one control plane: serving and client certificates, and the
    service-account signing key. ECDSA P-256 throughout (fast to make; kube-apiserver accepts it)."""

    def __init__(self, directory: pathlib.Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm-operator-sandbox-ca")])
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(self._now)
            .not_valid_after(self._now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_path = self._write("ca.crt", self.ca_cert.public_bytes(serialization.Encoding.PEM))
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = self._write("sa.key", sa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        self.sa_pub = self._write("sa.pub", sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                                         serialization.PublicFormat.SubjectPublicKeyInfo))

    def _write(self, name: str, data: bytes) -> pathlib.Path:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(self, name: str, common_name: str, organizations: Iterable[str] = (), *, server: bool = False,
              dns: Iterable[str] = (), ips: Iterable[str] = ()) -> tuple[pathlib.Path, pathlib.Path]:
        """A certificate signed by the CA: a client certificate (CN the user, O the groups), or a serving one
        with the given names. Returns (certificate path, key path)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(subject)).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self._now).not_valid_after(self._now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
        )
        alt = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        return (self._write(f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{name}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption())))


def write_kubeconfig(path: pathlib.Path, server: str, ca: pathlib.Path, *, cert: pathlib.Path | None = None,
                     key: pathlib.Path | None = None, token: str | None = None, user: str = "user") -> str:
    """A kubeconfig for one user of one cluster (client certificate or bearer token)."""
    creds: dict[str, Any] = {"token": token} if token else {"client-certificate": str(cert), "client-key": str(key)}
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
        "clusters": [{"name": "sandbox", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": user}}],
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return str(path)


# ------------------------------------------------------------------------------------------- processes


@dataclass
class Process:
    """One component's process, its log in the work folder."""

    name: str
    argv: list[str]
    log: pathlib.Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env={**os.environ, **self.env}, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.popen = None

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        self.popen = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# ------------------------------------------------------------------------------------------- node pools


@dataclass(frozen=True)
class NodePool:
    """``count`` kwok nodes alike: labels, taints and capacity as a cloud GPU node pool carries them."""

    name: str
    count: int
    capacity: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    zones: tuple[str, ...] = ("zone-a", "zone-b")

    def nodes(self) -> list[dict[str, Any]]:
        out = []
        for i in range(self.count):
            name = f"{self.name}-{i}"
            zone = self.zones[i % len(self.zones)]
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                      "type": "kwok", "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": "sandbox",
                      "llmops.dev/node-pool": self.name, **self.labels}
            out.append({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels, "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1]}},
                "spec": {"taints": [dict(t) for t in self.taints]},
                "status": {"capacity": dict(self.capacity), "allocatable": dict(self.capacity),
                           "nodeInfo": {"kubeletVersion": "kwok", "architecture": "amd64", "operatingSystem": "linux"}},
            })
        return out


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}  # as GKE and the GPU operator taint

#: The default fleet: 4 nodes x 8 GPUs in two pools (the A100 pool tainted for dedicated LLM serving, as in
#: samples/llmdeployment-multigpu.yaml), two CPU nodes, and one held GPU node whose pods only a test makes ready.
DEFAULT_POOLS: tuple[NodePool, ...] = (
    NodePool("gpu-a100", 2, {"cpu": "96", "memory": "1152Gi", "pods": "110", "nvidia.com/gpu": "8", "ephemeral-storage": "2Ti"},
             labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "8", "nvidia.com/gpu.present": "true",
                     "node.kubernetes.io/instance-type": "a2-ultragpu-8g"},
             taints=(GPU_TAINT, {"key": "dedicated", "value": "llm", "effect": "NoSchedule"})),
    NodePool("gpu-l4", 2, {"cpu": "96", "memory": "384Gi", "pods": "110", "nvidia.com/gpu": "8", "ephemeral-storage": "1Ti"},
             labels={"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.count": "8", "nvidia.com/gpu.present": "true",
                     "node.kubernetes.io/instance-type": "g2-standard-96"},
             taints=(GPU_TAINT,)),
    NodePool("cpu", 2, {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"},
             labels={"node.kubernetes.io/instance-type": "n2-standard-32"}),
    NodePool("held", 1, {"cpu": "96", "memory": "384Gi", "pods": "110", "nvidia.com/gpu": "8", "ephemeral-storage": "1Ti"},
             labels={"nvidia.com/gpu.product": "NVIDIA-L4", HELD_POOL_LABEL: "held"},
             taints=(GPU_TAINT, {"key": HELD_POOL_LABEL, "value": "held", "effect": "NoSchedule"}), zones=("zone-a",)),
)

#: What a pod needs to land on the held node (merge into an LLMDeployment's ``spec.resources``).
HELD_RESOURCES = {"nodeSelector": {HELD_POOL_LABEL: "held"},
                  "tolerations": [{"key": HELD_POOL_LABEL, "operator": "Equal", "value": "held", "effect": "NoSchedule"}]}


def _kwok_config(bin_dir: pathlib.Path, held_nodes: list[str]) -> str:
    """kwok's configuration: its own stages for nodes (initialise, heartbeat with a Lease) and pods (ready,
    complete, delete) as ``make control-plane`` copied them from the kwok module, with the pod-ready stage
    skipping the held nodes."""
    docs: list[dict[str, Any]] = []
    for name in ("node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete", "pod-delete"):
        stage = yaml.safe_load((bin_dir / "kwok-stages" / f"{name}.yaml").read_text())
        if name == "pod-ready" and held_nodes:
            stage["spec"]["selector"]["matchExpressions"].append({"key": ".spec.nodeName", "operator": "NotIn", "values": held_nodes})
        docs.append(stage)
    return yaml.safe_dump_all(docs)


AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # The control plane's own chatter and kwok's node simulation: not what the tests read.
        # ... and the tests' own admin requests (most of the volume; what the tests read is the operator's).
        {"level": "None", "users": ["system:kube-scheduler", "system:kube-controller-manager", "system:apiserver", "kwok",
                                    "sandbox-admin"]},
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system", "system:nodes"]},
        {"level": "None", "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}], "namespaces": ["kube-node-lease"]},
        {"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*", "/version"]},
        {"level": "Metadata"},
    ],
}


# -------------------------------------------------------------------------------------- the control plane


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok in ``workdir``, on loopback ports.

    ``start()`` returns once the API server is ready, the controllers run and every kwok node is Ready.
    ``admin_kubeconfig`` is a system:masters client certificate (the tests' and kubectl's); the operator gets
    its own ServiceAccount token through :meth:`token_kubeconfig`.
    """

    def __init__(self, workdir: pathlib.Path, *, pools: Iterable[NodePool] = DEFAULT_POOLS, bin_dir: pathlib.Path | None = None,
                 apiserver_args: Iterable[str] = (), controller_manager_args: Iterable[str] = ()):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bin = bin_dir or cache_dir() / "bin"
        missing = [b for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok") if not (self.bin / b).exists()]
        if missing:
            raise RuntimeError(f"control-plane binaries missing in {self.bin}: {', '.join(missing)} (run `make control-plane`)")
        self.pools = tuple(pools)
        self.extra_apiserver_args = list(apiserver_args)
        self.extra_controller_manager_args = list(controller_manager_args)  # e.g. --kube-api-qps (its default: 20)
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.audit_log = self.workdir / "audit.log"
        self.processes: dict[str, Process] = {}
        self.pki = Pki(self.workdir / "pki")
        self._kubeconfigs()

    # ---------------------------------------------------------------------------------------- credentials

    def _kubeconfigs(self) -> None:
        pki, ca = self.pki, self.pki.ca_path
        self.serving = pki.issue("apiserver", "kube-apiserver", server=True,
                                 dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                      "kubernetes.default.svc.cluster.local"], ips=["127.0.0.1", "10.96.0.1"])

        def user(name: str, cn: str, orgs: Iterable[str] = ()) -> str:
            cert, key = pki.issue(name, cn, orgs)
            return write_kubeconfig(self.workdir / f"{name}.kubeconfig", self.url, ca, cert=cert, key=key, user=cn)

        self.admin_kubeconfig = user("admin", "sandbox-admin", ["system:masters"])
        self.kcm_kubeconfig = user("kube-controller-manager", "system:kube-controller-manager")
        self.scheduler_kubeconfig = user("kube-scheduler", "system:kube-scheduler")
        self.kwok_kubeconfig = user("kwok", "kwok", ["system:masters"])

    def node_kubeconfig(self, node: str) -> str:
        """A kubelet's credentials for ``node`` (``system:node:<node>`` in ``system:nodes``): the Node
        authoriser and NodeRestriction limit it to its own Node, Lease, pods and what they reference."""
        cert, key = self.pki.issue(f"node-{node}", f"system:node:{node}", ["system:nodes"])
        return write_kubeconfig(self.workdir / f"node-{node}.kubeconfig", self.url, self.pki.ca_path, cert=cert, key=key,
                                user=f"system:node:{node}")

    def token_kubeconfig(self, namespace: str, service_account: str, *, seconds: int = 24 * 3600, name: str | None = None) -> str:
        """A kubeconfig whose bearer token the TokenRequest API issued for ``namespace/service_account``."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [ISSUER], "expirationSeconds": seconds}}
        out = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token", body)
        path = self.workdir / f"{name or f'sa-{namespace}-{service_account}'}.kubeconfig"
        return write_kubeconfig(path, self.url, self.pki.ca_path, token=out["status"]["token"],
                                user=f"system:serviceaccount:{namespace}:{service_account}")

    def _ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_path))
        cert = self.workdir / "pki" / "admin.crt"
        context.load_cert_chain(str(cert), str(self.workdir / "pki" / "admin.key"))
        return context

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """One admin request (JSON in and out); raises urllib.error.HTTPError on a non-2xx answer."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self._ssl(), timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw and raw[:1] in (b"{", b"[") else raw.decode()

    # ---------------------------------------------------------------------------------------- lifecycle

    def _process(self, name: str, argv: list[str]) -> Process:
        proc = Process(name, argv, self.workdir / f"{name}.log")
        self.processes[name] = proc
        return proc.start()

    def start(self, timeout: float = 120) -> ControlPlane:
        started = time.monotonic()
        self.start_etcd()
        self.start_apiserver()
        self.wait_ready(timeout)
        self._process("kube-controller-manager", [
            str(self.bin / "kube-controller-manager"), f"--kubeconfig={self.kcm_kubeconfig}",
            f"--authentication-kubeconfig={self.kcm_kubeconfig}", f"--authorization-kubeconfig={self.kcm_kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            "--use-service-account-credentials=true", f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.pki.ca_path}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--cluster-name=sandbox", "--controllers=*", "--v=1", *self.extra_controller_manager_args,
        ])
        self._process("kube-scheduler", [
            str(self.bin / "kube-scheduler"), f"--kubeconfig={self.scheduler_kubeconfig}",
            f"--authentication-kubeconfig={self.scheduler_kubeconfig}", f"--authorization-kubeconfig={self.scheduler_kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false", "--v=1",
        ])
        held = [n["metadata"]["name"] for p in self.pools for n in p.nodes() if p.labels.get(HELD_POOL_LABEL)]
        config = self.workdir / "kwok.yaml"
        config.write_text(_kwok_config(self.bin, held))
        self._process("kwok", [
            str(self.bin / "kwok"), f"--kubeconfig={self.kwok_kubeconfig}", f"--config={config}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={'='.join(KWOK_NODE_ANNOTATION)}",
            f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40", f"--server-address=127.0.0.1:{free_port()}",
        ])
        for pool in self.pools:
            for node in pool.nodes():
                self.request("POST", "/api/v1/nodes", node)
        self._wait_nodes_ready(timeout - (time.monotonic() - started))
        self.started_in = time.monotonic() - started
        return self

    def start_etcd(self) -> None:
        self._process("etcd", [
            str(self.bin / "etcd"), "--name=sandbox", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}", f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-cluster=sandbox=http://127.0.0.1:{self.etcd_peer_port}",
            "--unsafe-no-fsync",  # a test cluster: durability across power loss is not what is tested
            "--log-level=warn",
        ])

    def start_apiserver(self) -> None:
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        cert, key = self.serving
        self._process("kube-apiserver", [
            str(self.bin / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={cert}", f"--tls-private-key-file={key}", f"--client-ca-file={self.pki.ca_path}",
            f"--service-account-issuer={ISSUER}", f"--api-audiences={ISSUER}",
            f"--service-account-key-file={self.pki.sa_pub}", f"--service-account-signing-key-file={self.pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The `kubernetes` Service's endpoints would be this loopback address, which the reconciler refuses;
            # nothing here reaches the API server through that Service.
            "--endpoint-reconciler-type=none",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,PodSecurity,OwnerReferencesPermissionEnforcement",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
            # Never rotate: 0 would mean lumberjack's default of 100 MB, and a rotated log loses the session's start.
            "--audit-log-maxsize=100000", "--audit-log-maxbackup=0", "--audit-log-mode=blocking",
            "--profiling=false", "--v=1", *self.extra_apiserver_args,
        ])

    def wait_ready(self, timeout: float = 120) -> None:
        """Until ``/readyz`` answers ok (etcd reachable, RBAC bootstrapped, the CRD informers synced)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name in ("etcd", "kube-apiserver"):
                proc = self.processes.get(name)
                if proc is not None and not proc.alive():
                    raise RuntimeError(f"{name} exited:\n{proc.tail()}")
            try:
                if self.request("GET", "/readyz", timeout=3) == "ok":
                    return
            except (urllib.error.URLError, OSError, ValueError) as error:
                last = str(error)
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready after {timeout}s ({last}):\n{self.processes['kube-apiserver'].tail()}")

    def _wait_nodes_ready(self, timeout: float) -> None:
        want = {n["metadata"]["name"] for p in self.pools for n in p.nodes()}
        deadline = time.monotonic() + max(timeout, 10)
        while time.monotonic() < deadline:
            nodes = self.request("GET", "/api/v1/nodes")["items"]
            ready = {n["metadata"]["name"] for n in nodes
                     if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))}
            if want <= ready:
                return
            if not self.processes["kwok"].alive():
                raise RuntimeError(f"kwok exited:\n{self.processes['kwok'].tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"kwok nodes not Ready: {sorted(want - ready)}\n{self.processes['kwok'].tail()}")

    def restart(self, name: str, *, kill: bool = True) -> None:
        """Crash (SIGKILL) or stop one component and start it again with the same arguments and data."""
        proc = self.processes[name]
        proc.kill() if kill else proc.stop()
        proc.start()

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.get(name)
            if proc is not None:
                proc.stop()

    def logs(self, lines: int = 20) -> str:
        return "\n".join(f"--- {name}\n{proc.tail(lines)}" for name, proc in self.processes.items())


# ------------------------------------------------------------------------------------------- the audit log


VERB_METHODS = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "update": "PUT", "patch": "PATCH",
                "delete": "DELETE", "deletecollection": "DELETE"}


@dataclass(frozen=True)
class Request:
    """One request as kube-apiserver's audit log recorded it (at its first response stage): who, the authoriser's
    verb, the resource, the HTTP status and the authorisation decision."""

    user: str
    verb: str
    method: str
    path: str
    query: str
    group: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    code: int
    decision: str | None
    user_agent: str
    at: float  # when the API server received it (Unix seconds)
    message: str = ""  # responseStatus.message: why a request was refused

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Request:
        ref = event.get("objectRef") or {}
        uri = event.get("requestURI", "")
        path, _, query = uri.partition("?")
        return cls(user=event.get("user", {}).get("username", ""), verb=event.get("verb", ""),
                   method=VERB_METHODS.get(event.get("verb", ""), event.get("verb", "").upper()), path=path, query=query,
                   group=ref.get("apiGroup", "") if ref else None, resource=ref.get("resource"),
                   subresource=ref.get("subresource"), namespace=ref.get("namespace"), name=ref.get("name"),
                   code=int((event.get("responseStatus") or {}).get("code") or 0),
                   decision=(event.get("annotations") or {}).get("authorization.k8s.io/decision"),
                   user_agent=event.get("userAgent", ""),
                   at=datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp(),
                   message=(event.get("responseStatus") or {}).get("message", ""))

    @property
    def write(self) -> bool:
        return self.verb in ("create", "update", "patch", "delete", "deletecollection")


class AuditLog:
    """kube-apiserver's audit log, read incrementally (each call parses only what was appended)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self._offset = 0
        self._events: list[Request] = []
        self._seen: set[str] = set()

    def requests(self) -> list[Request]:
        if self.path.exists():
            with open(self.path, "rb") as log:
                log.seek(self._offset)
                chunk = log.read()
            if len(chunk) == 0 and self.path.stat().st_size < self._offset:
                raise RuntimeError(f"{self.path} shrank (rotated?): the audit log must be kept whole")
            end = chunk.rfind(b"\n") + 1  # only whole lines: the API server may be mid-write
            self._offset += end
            for line in chunk[:end].splitlines():
                event = json.loads(line)
                # Once per request, at its first response stage: a watch has ResponseStarted then ResponseComplete,
                # other requests (and some watches, custom resources' among them) ResponseComplete only.
                if event.get("stage") in ("ResponseStarted", "ResponseComplete") and event.get("auditID") not in self._seen:
                    self._seen.add(event.get("auditID"))
                    self._events.append(Request.from_event(event))
        return self._events

    def mark(self) -> int:
        """A position to count requests from (``requests()[mark:]``)."""
        return len(self.requests())
