"""The kubelet of one real Node, for the story: the pods the real scheduler binds to it run as local processes.

It registers its Node (labels, a taint that only the story's pods tolerate, capacity), renews its Lease in
``kube-node-lease`` and posts its status, all with a kubelet's credentials (``system:node:<name>``), so the Node
authoriser and NodeRestriction admission limit it as they limit a kubelet: its own Node and Lease, the pods bound
to it, and only the Secrets those pods reference. For each pod bound to it, it runs the main container's command
(the runtime entrypoint, which fetches the model and execs vLLM's CPU build) on the pod's own loopback address
(127.0.0.x) and the container's port, reports the pod Running with that podIP, and the Ready condition from the
readiness probe (``httpGet``, checked every half second rather than each ``periodSeconds``). A pod being deleted
gets SIGTERM, its grace period, SIGKILL, and then its final deletion, as a kubelet does.

What differs from a kubelet: no container runtime or image (the container's ``python3`` is the vLLM
environment's Python), volumes are not mounted (the model cache is a local folder), and a container that exits is
restarted after a fixed 5 s back-off rather than CrashLoopBackOff's growing one.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import pathlib
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import kubernetes

CACHE_IN_POD = "/var/cache/llmops"
#: The taint on the agent's Node and the label the story's pods select it by.
POOL_LABEL, POOL = "llmops.dev/node-pool", "local"
TAINT = {"key": "llmops.dev/sandbox-node", "value": "local", "effect": "NoSchedule"}
#: What an LLMDeployment's ``spec.resources`` needs to run on the agent's node.
PLACEMENT = {"nodeSelector": {POOL_LABEL: POOL},
             "tolerations": [{"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"], "effect": "NoSchedule"}]}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pod:
    """One pod's process on this node."""

    namespace: str
    name: str
    uid: str
    ip: str
    port: int
    process: subprocess.Popen[bytes] | None
    labels: dict[str, str]
    log: pathlib.Path
    command: list[str]
    env: dict[str, str]
    probe: dict[str, Any] | None
    started_at: str = field(default_factory=_now)
    ready: bool = False
    restarts: int = 0
    exited_at: float | None = None
    reported: tuple[Any, ...] = ()

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


class NodeAgent:
    """The kubelet of node ``name`` on the control plane behind ``cluster`` (a :class:`~llm_sandbox.cluster.Cluster`).

    ``python`` runs the pods' ``python3`` commands (the vLLM environment's); ``extra_env`` is added to every
    container's environment (thread settings for two cores, say).
    """

    def __init__(self, cluster: Any, workdir: pathlib.Path, python: str, *, name: str = "local-0", interval: float = 0.5,
                 extra_env: dict[str, str] | None = None, capacity: dict[str, str] | None = None):
        self.name = name
        self.workdir = workdir
        self.python = python
        self.interval = interval
        self.extra_env = extra_env or {}
        self.capacity = capacity or {"cpu": "8", "memory": "32Gi", "pods": "16", "ephemeral-storage": "100Gi"}
        client = kubernetes.config.new_client_from_config(config_file=cluster.plane.node_kubeconfig(name))
        self.core = kubernetes.client.CoreV1Api(client)
        self.leases = kubernetes.client.CoordinationV1Api(client)
        self.pods: dict[str, Pod] = {}  # by uid
        self._ips = (str(ipaddress.ip_address("127.0.0.10") + i) for i in range(240))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name="node-agent", daemon=True),
                         threading.Thread(target=self._heartbeat, name="node-agent-lease", daemon=True)]
        (workdir / "pods").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------ the node

    def _register(self) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "topology.kubernetes.io/zone": "zone-a", POOL_LABEL: POOL}
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels},
                "spec": {"taints": [TAINT]}}
        try:
            self.core.create_node(node)
        except kubernetes.client.ApiException as error:
            if error.status != 409:
                raise
        self._post_node_status()

    def _post_node_status(self) -> None:
        now = _now()
        conditions = [{"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": now, "lastTransitionTime": now}
                      for t, s, r, m in (("Ready", "True", "KubeletReady", "the node agent is posting ready status"),
                                         ("MemoryPressure", "False", "KubeletHasSufficientMemory", "sufficient memory"),
                                         ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                                         ("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PIDs"))]
        status = {"capacity": self.capacity, "allocatable": self.capacity, "conditions": conditions,
                  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
                  "nodeInfo": {"kubeletVersion": "llmops-node-agent", "architecture": "amd64", "operatingSystem": "linux",
                               "containerRuntimeVersion": "local-process://1", "kernelVersion": "", "osImage": "", "machineID": "",
                               "systemUUID": "", "bootID": "", "kubeProxyVersion": ""}}
        self.core.patch_node_status(self.name, {"status": status})

    def _heartbeat(self) -> None:
        """Renew the node's Lease every 10 s (the node lifecycle controller's liveness signal) and post the
        node status every 60 s, as a kubelet does."""
        last_status = time.monotonic()
        while not self._stop.wait(10):
            try:
                self._renew_lease()
                if time.monotonic() - last_status > 60:
                    self._post_node_status()
                    last_status = time.monotonic()
            except Exception as error:  # an API server restart, say: the next beat retries
                print(f"node agent heartbeat: {type(error).__name__}: {error}", flush=True)

    def _renew_lease(self) -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now}}
        try:
            self.leases.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": body["spec"]})
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
            self.leases.create_namespaced_lease("kube-node-lease", body)

    def start(self) -> NodeAgent:
        self._register()
        self._renew_lease()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        with self._lock:
            for pod in list(self.pods.values()):
                self._kill(pod, 10)
            self.pods.clear()

    def ready_pods(self) -> list[Pod]:
        with self._lock:
            return [p for p in self.pods.values() if p.ready]

    # ------------------------------------------------------------------------------------------ pods

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sync()
            except Exception as error:  # the story goes on; the next round retries
                print(f"node agent: {type(error).__name__}: {error}", flush=True)

    def _sync(self) -> None:
        bound = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}").items
        seen = set()
        for obj in bound:
            uid = obj.metadata.uid
            seen.add(uid)
            with self._lock:
                pod = self.pods.get(uid)
            if obj.metadata.deletion_timestamp is not None:
                if pod is not None:
                    self._terminate(pod, obj.spec.termination_grace_period_seconds or 30)
                self._finalize(obj)
                continue
            if pod is None:
                pod = self._start(obj)
                with self._lock:
                    self.pods[uid] = pod
            self._probe(pod)
            self._report(pod)
        with self._lock:
            gone = [p for uid, p in self.pods.items() if uid not in seen]
        for pod in gone:  # deleted without a grace period (force): stop what runs
            self._terminate(pod, 0)

    def _container_env(self, namespace: str, container: Any) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.env or []:
            if item.value is not None:
                env[item.name] = item.value
            elif item.value_from is not None and item.value_from.secret_key_ref is not None:
                ref = item.value_from.secret_key_ref
                try:  # the Node authoriser allows it: a pod bound here references the Secret
                    secret = self.core.read_namespaced_secret(ref.name, namespace)
                except kubernetes.client.ApiException:
                    if ref.optional:
                        continue
                    raise
                if ref.key in (secret.data or {}):
                    env[item.name] = base64.b64decode(secret.data[ref.key]).decode()
        return env

    def _start(self, obj: Any) -> Pod:
        meta, container = obj.metadata, obj.spec.containers[0]
        port = next((p.container_port for p in container.ports or []), 8000)
        ip = next(self._ips)
        cache = self.workdir / "cache" / meta.namespace
        env = {k: v.replace(CACHE_IN_POD, str(cache)) for k, v in self._container_env(meta.namespace, container).items()}
        env.pop("HOME", None)
        args = [a.replace(CACHE_IN_POD, str(cache)) for a in container.args or []]
        args = _set_flag(_set_flag(args, "--host", ip), "--port", str(port))
        command = [self.python if c in ("python3", "python") else c for c in container.command or []] + args
        probe = container.readiness_probe.http_get.to_dict() if container.readiness_probe and container.readiness_probe.http_get else None
        pod = Pod(meta.namespace, meta.name, meta.uid, ip, port, None, dict(meta.labels or {}),
                  self.workdir / "pods" / f"{meta.namespace}_{meta.name}.log", command, env, probe)
        self._spawn(pod)
        return pod

    def _spawn(self, pod: Pod) -> None:
        with open(pod.log, "ab") as log:
            pod.process = subprocess.Popen(pod.command, env={**os.environ, **pod.env, **self.extra_env}, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        pod.exited_at = None

    def _probe(self, pod: Pod) -> None:
        if pod.process is not None and pod.process.poll() is not None:  # the container exited
            pod.ready = False
            if pod.exited_at is None:
                pod.exited_at = time.monotonic()
            elif time.monotonic() - pod.exited_at > 5:  # restartPolicy Always, after a back-off
                pod.restarts += 1
                self._spawn(pod)
            return
        if pod.probe is None:
            pod.ready = True
            return
        port = pod.probe.get("port")
        port = pod.port if isinstance(port, str) else int(port or pod.port)
        try:
            with urllib.request.urlopen(f"http://{pod.ip}:{port}{pod.probe.get('path') or '/'}", timeout=1) as response:
                pod.ready = 200 <= response.status < 400
        except OSError:
            pod.ready = False

    def _report(self, pod: Pod) -> None:
        """Post the pod's status when it changed: Running on its podIP, Ready from the probe, the container's state."""
        running = pod.process is not None and pod.process.poll() is None
        key = (running, pod.ready, pod.restarts)
        if key == pod.reported:
            return
        now = _now()
        ready = "True" if pod.ready else "False"
        state = ({"running": {"startedAt": pod.started_at}} if running else
                 {"waiting": {"reason": "CrashLoopBackOff", "message": f"exited with {pod.process.returncode if pod.process else '?'}"}})
        status = {
            "phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": pod.ip, "podIPs": [{"ip": pod.ip}],
            "startTime": pod.started_at, "qosClass": "Burstable",
            "conditions": [{"type": t, "status": s, "lastTransitionTime": now} for t, s in
                           (("PodReadyToStartContainers", "True"), ("Initialized", "True"), ("ContainersReady", ready),
                            ("Ready", ready), ("PodScheduled", "True"))],
            "containerStatuses": [{"name": "vllm", "image": "local-process", "imageID": "", "ready": pod.ready, "started": running,
                                   "restartCount": pod.restarts, "state": state}],
        }
        self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})
        pod.reported = key

    def _terminate(self, pod: Pod, grace: float) -> None:
        self._kill(pod, grace)
        with self._lock:
            self.pods.pop(pod.uid, None)

    def _finalize(self, obj: Any) -> None:
        """The kubelet's last word on a terminating pod: delete it for good (grace 0, this pod's uid only)."""
        try:
            self.core.delete_namespaced_pod(obj.metadata.name, obj.metadata.namespace, grace_period_seconds=0,
                                            body=kubernetes.client.V1DeleteOptions(grace_period_seconds=0,
                                                                                    preconditions={"uid": obj.metadata.uid}))
        except kubernetes.client.ApiException as error:
            if error.status not in (404, 409):
                raise

    @staticmethod
    def _kill(pod: Pod, grace: float) -> None:
        process = pod.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)  # vLLM drains; its engine processes share the group
        try:
            process.wait(timeout=max(grace, 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out
