"""A stand-in for the Deployment controller and kubelets: no pods run here, so after a simulated model load
this marks each Deployment's replicas ready in its status. Only the demo uses it; the tests set readiness
themselves, and the later sandbox runs real vLLM processes instead."""

from __future__ import annotations

import threading
import time
from typing import Any


class FakeKubelet:
    """Every ``interval`` seconds, report Deployments older than ``load_seconds`` as fully ready."""

    def __init__(self, client: Any, load_seconds: float = 3.0, interval: float = 0.5, namespace: str | None = None):
        self.namespace = namespace
        self.deployments = client.resources.get(api_version="apps/v1", kind="Deployment")
        self.load_seconds = load_seconds
        self.interval = interval
        self.born: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-kubelet", daemon=True)

    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for dep in self.deployments.get(namespace=self.namespace).to_dict()["items"]:
                meta, spec, status = dep["metadata"], dep["spec"], dep.get("status") or {}
                self.born.setdefault(meta["uid"], time.monotonic())
                if time.monotonic() - self.born[meta["uid"]] < self.load_seconds:
                    continue
                want = {"observedGeneration": meta.get("generation", 1), "replicas": spec.get("replicas", 1),
                        "readyReplicas": spec.get("replicas", 1), "availableReplicas": spec.get("replicas", 1),
                        "updatedReplicas": spec.get("replicas", 1)}
                if any(status.get(k) != v for k, v in want.items()):
                    self.deployments.status.patch(body={"status": want}, name=meta["name"], namespace=meta["namespace"],
                                                  content_type="application/merge-patch+json")
