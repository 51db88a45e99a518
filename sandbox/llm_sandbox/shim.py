"""A traffic shim standing in for the Istio sidecars in front of one LLMDeployment: it reads the
VirtualService the operator writes, splits requests across the revisions' processes by its weights (and
mirrors the configured share to the canary, discarding the answers), and exports request metrics under
Istio's names (``istio_requests_total`` with ``response_code`` and the destination labels,
``istio_request_duration_milliseconds``), which Prometheus scrapes.

It also logs every routing decision with the weights in force when it was made (``decisions``), so a test can
check that a canary never received more than its step allowed.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from .metrics import free_port

LABEL_DEPLOYMENT = "llmops.dev/deployment"
LABEL_REVISION = "llmops.dev/revision"


class Shim:
    """Requests to ``url`` go to the revisions of LLMDeployment ``namespace/name`` by its VirtualService."""

    def __init__(self, api: Any, agent: Any, namespace: str, name: str, *, seed: int = 0):
        self.api, self.agent, self.namespace, self.name = api, agent, namespace, name
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.routes: tuple[dict[str, int], dict[str, str], int] = ({}, {}, 0)  # weights by subset, subset -> revision, mirror %
        self.served: collections.Counter[str] = collections.Counter()
        #: (time, revision chosen or None, weight by revision in force then), one per request, in routing order.
        self.decisions: list[tuple[float, str | None, dict[str, int]]] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        registry = CollectorRegistry()
        labels = ["reporter", "destination_workload_namespace", "destination_canonical_service", "destination_canonical_revision",
                  "response_code"]
        self.requests = Counter("istio_requests", "Requests (Istio's standard metric)", labels, registry=registry)
        self.duration = Histogram("istio_request_duration_milliseconds", "Request duration (Istio's standard metric)", labels,
                                  buckets=(5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000), registry=registry)
        self.registry = registry
        shim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload, revision = shim.forward(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-llmops-revision", revision or "")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True

    def start(self) -> Shim:
        start_http_server(self.metrics_port, addr="127.0.0.1", registry=self.registry)
        threading.Thread(target=self._server.serve_forever, name="shim", daemon=True).start()
        threading.Thread(target=self._watch, name="shim-routes", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            vs = self.api.get("networking.istio.io/v1", "VirtualService", self.namespace, self.name)
            dr = self.api.get("networking.istio.io/v1", "DestinationRule", self.namespace, self.name)
            if not vs or not dr:
                continue
            subsets = {s["name"]: s["labels"][LABEL_REVISION] for s in dr["spec"].get("subsets", [])}
            primary = next((h for h in vs["spec"]["http"] if h.get("name") == "primary"), vs["spec"]["http"][-1])
            weights = {r["destination"].get("subset", "stable"): int(r.get("weight", 100)) for r in primary["route"]}
            mirror = int(primary.get("mirrorPercentage", {}).get("value", 0)) if primary.get("mirror") else 0
            with self._lock:
                self.routes = (weights, subsets, mirror)

    def _pod(self, revision: str) -> Any:
        pods = [p for p in self.agent.ready_pods() if p.labels.get(LABEL_DEPLOYMENT) == self.name
                and p.labels.get(LABEL_REVISION) == revision]
        return self._random.choice(pods) if pods else None

    def forward(self, path: str, body: bytes) -> tuple[int, bytes, str | None]:
        with self._lock:
            weights, subsets, mirror = self.routes
            roll = self._random.uniform(0, 100)
            mirrored = self._random.uniform(0, 100) < mirror
            subset, acc = "stable", 0
            for name, weight in sorted(weights.items()):
                acc += weight
                if roll < acc:
                    subset = name
                    break
            revision = subsets.get(subset)
            by_revision = {subsets[name]: weight for name, weight in weights.items() if name in subsets}
            self.decisions.append((time.time(), revision, by_revision))
        if mirrored and subsets.get("canary"):
            threading.Thread(target=self._send, args=(subsets["canary"], path, body), daemon=True).start()
        status, payload = self._send(revision, path, body) if revision else (503, b'{"error": "no route yet"}')
        return status, payload, revision

    def _send(self, revision: str, path: str, body: bytes) -> tuple[int, bytes]:
        pod = self._pod(revision)
        started = time.monotonic()
        if pod is None:
            status, payload = 503, json.dumps({"error": f"no ready endpoint of revision {revision}"}).encode()
        else:
            request = urllib.request.Request(pod.url + path, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    status, payload = response.status, response.read()
            except urllib.error.HTTPError as error:
                status, payload = error.code, error.read()
            except OSError as error:
                status, payload = 503, json.dumps({"error": str(error)}).encode()
        labels = ("destination", self.namespace, self.name, revision, str(status))
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe((time.monotonic() - started) * 1000)
        with self._lock:
            self.served[revision] += 1
        return status, payload


class Load:
    """Chat completions through the shim at ``rate`` requests per second (one thread per request)."""

    def __init__(self, url: str, model: str, rate: float = 2.0, max_tokens: int = 16):
        self.url, self.model, self.rate, self.max_tokens = url, model, rate, max_tokens
        self.sent = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self._stop = threading.Event()

    def start(self) -> Load:
        threading.Thread(target=self._run, name="load", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(1 / self.rate):
            threading.Thread(target=self._one, daemon=True).start()

    def _one(self) -> None:
        body = json.dumps({"model": self.model, "max_tokens": self.max_tokens,
                           "messages": [{"role": "user", "content": "How does a canary release work?"}]}).encode()
        request = urllib.request.Request(self.url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
        self.sent += 1
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                self.statuses[response.status] += 1
        except urllib.error.HTTPError as error:
            self.statuses[error.code] += 1
        except OSError:
            self.statuses[0] += 1
