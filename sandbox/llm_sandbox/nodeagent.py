"""A node agent standing in for the Deployment controller and kubelets: for each Deployment the operator
creates, it runs that many local processes of the pod's main container (the runtime entrypoint, which
fetches the model and execs vLLM's CPU build) on loopback ports, with the pod's environment.

It reports each Deployment's status (replicas, readyReplicas from vLLM's ``/health``, observedGeneration),
stops processes when a Deployment is scaled down or deleted, and writes every process's address with the pod
labels (the revision!) to Prometheus's file-based service discovery. What differs from a kubelet: no
container, no image (the container's ``python3`` is the vLLM environment's Python), the cache directory is a
local one, and the listen address is rewritten to a free loopback port.
"""

from __future__ import annotations

import base64
import os
import pathlib
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from .metrics import free_port

CACHE_IN_POD = "/var/cache/llmops"


@dataclass
class Pod:
    """One process of one Deployment."""

    namespace: str
    deployment: str
    index: int
    generation: int
    port: int
    process: subprocess.Popen[bytes]
    labels: dict[str, str]
    log: pathlib.Path
    ready: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return f"{self.deployment}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class NodeAgent:
    """Run the operator's Deployments as local processes. ``on_targets(pods)`` is called when the set of ready
    pods changes (the Prometheus file-SD writer and the traffic shim subscribe)."""

    def __init__(self, api: Any, workdir: pathlib.Path, python: str, *, interval: float = 0.5, extra_env: dict[str, str] | None = None):
        self.api = api
        self.workdir = workdir
        self.python = python
        self.interval = interval
        self.extra_env = extra_env or {}
        self.pods: dict[tuple[str, str, int], Pod] = {}
        self.listeners: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-agent", daemon=True)
        (workdir / "pods").mkdir(parents=True, exist_ok=True)

    def start(self) -> NodeAgent:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            for pod in list(self.pods.values()):
                self._kill(pod)
            self.pods.clear()

    def ready_pods(self) -> list[Pod]:
        with self._lock:
            return [p for p in self.pods.values() if p.ready]

    # ------------------------------------------------------------------------------------------ loop

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sync()
            except Exception as error:  # the demo goes on; the next round retries
                print(f"node agent: {type(error).__name__}: {error}", flush=True)

    def _sync(self) -> None:
        deployments = self.api.list("apps/v1", "Deployment", None, "app.kubernetes.io/managed-by=llm-operator")
        live = set()
        changed = False
        for dep in deployments:
            meta, spec = dep["metadata"], dep["spec"]
            want = int(spec.get("replicas", 1))
            for index in range(want):
                key = (meta["namespace"], meta["name"], index)
                live.add(key)
                with self._lock:
                    pod = self.pods.get(key)
                if pod is not None and pod.generation != meta.get("generation") and _template_changed(pod, dep):
                    self._kill(pod)
                    pod = None
                if pod is None:
                    with self._lock:
                        self.pods[key] = self._start(dep, index)
                    changed = True
            changed |= self._probe(meta["namespace"], meta["name"])
            self._report(dep)
        with self._lock:
            gone = [k for k in self.pods if k not in live]
            for key in gone:
                self._kill(self.pods.pop(key))
        if gone or changed:
            for listener in self.listeners:
                listener(self.ready_pods())

    def _probe(self, namespace: str, name: str) -> bool:
        changed = False
        with self._lock:
            pods = [p for (ns, n, _), p in self.pods.items() if (ns, n) == (namespace, name)]
        for pod in pods:
            ready = pod.process.poll() is None and _healthy(pod.url)
            if ready != pod.ready:
                pod.ready, changed = ready, True
        return changed

    def _report(self, dep: dict[str, Any]) -> None:
        meta = dep["metadata"]
        with self._lock:
            pods = [p for (ns, n, _), p in self.pods.items() if (ns, n) == (meta["namespace"], meta["name"])]
        replicas = int(dep["spec"].get("replicas", 1))
        ready = sum(1 for p in pods if p.ready)
        want = {"observedGeneration": meta.get("generation", 1), "replicas": replicas, "readyReplicas": ready,
                "availableReplicas": ready, "updatedReplicas": replicas}
        status = dep.get("status") or {}
        if any(status.get(k) != v for k, v in want.items()):
            self.api.patch("apps/v1", "Deployment", meta["namespace"], meta["name"], {"status": want}, status=True)

    # ------------------------------------------------------------------------------------------ processes

    def _env(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "secretKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["secretKeyRef"]
                secret = self.api.get("v1", "Secret", namespace, ref["name"]) or {}
                if ref["key"] in (secret.get("data") or {}):
                    env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    def _start(self, dep: dict[str, Any], index: int) -> Pod:
        meta = dep["metadata"]
        template = dep["spec"]["template"]
        container = template["spec"]["containers"][0]
        port = free_port()
        cache = self.workdir / "cache" / meta["namespace"]
        env = {k: v.replace(CACHE_IN_POD, str(cache)) for k, v in self._env(meta["namespace"], container).items()}
        env.pop("HOME", None)
        args = [a.replace(CACHE_IN_POD, str(cache)) for a in container.get("args", [])]
        args = _set_flag(_set_flag(args, "--host", "127.0.0.1"), "--port", str(port))
        command = [self.python if c in ("python3", "python") else c for c in container.get("command", [])]
        log = self.workdir / "pods" / f"{meta['namespace']}_{meta['name']}-{index}.log"
        process = subprocess.Popen(command + args, env={**os.environ, **env, **self.extra_env}, stdout=open(log, "ab"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        labels = dict(template["metadata"].get("labels", {}))
        return Pod(meta["namespace"], meta["name"], index, meta.get("generation", 1), port, process, labels, log)

    @staticmethod
    def _kill(pod: Pod) -> None:
        if pod.process.poll() is None:
            os.killpg(pod.process.pid, signal.SIGTERM)  # vLLM drains; its engine processes share the group
            try:
                pod.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(pod.process.pid, signal.SIGKILL)
                pod.process.wait()


def _template_changed(pod: Pod, dep: dict[str, Any]) -> bool:
    """A new generation that only changed replicas keeps the pods; one that changed the template replaces them."""
    return dict(dep["spec"]["template"]["metadata"].get("labels", {})) != pod.labels


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
