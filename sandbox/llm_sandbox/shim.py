"""A traffic shim standing in for the Istio sidecars (or a Gateway API gateway) in front of one LLMDeployment: it
reads the VirtualService the operator writes (``router="istio"``) or its HTTPRoute (``router="gatewayAPI"``: backends
that are Services or InferencePools, the ``RequestMirror`` filter's percent), and the endpoints of the Services or
pools it routes to (computed from their selectors and the pods' readiness as the EndpointSlice controller computes
them: see :meth:`Shim._endpoints`), as Envoy gets them from istiod, splits requests across the destinations by the
route's weights (and mirrors the configured share to the mirror destination, discarding the answers), sends each to a
ready endpoint of that destination (the pods' own addresses, which the node agent serves; a pool's endpoint picker
is not run: a random ready pod of the pool), and exports request metrics under Istio's names. It stands in for the
data plane only: it does not check an HTTPRoute's parents, hostnames or acceptance, nor honour the blue-green preview
route, so what a test through it proves is that the operator's weights, mirror and backends' selectors are what
traffic follows
(``istio_requests_total`` with ``response_code`` and the destination labels,
``istio_request_duration_milliseconds``), which Prometheus scrapes.

It also logs every routing decision with the weights in force when it was made (``decisions``), so a test can
check that a canary never received more than its step allowed.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import math
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
    """Requests to ``url`` go to LLMDeployment ``namespace/name``'s Services by its VirtualService's primary route."""

    def __init__(self, api: Any, namespace: str, name: str, *, seed: int = 0, router: str = "istio"):
        self.api, self.namespace, self.name, self.router = api, namespace, name, router
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        #: (weight by destination Service, that Service's revision, its ready endpoints "ip:port", mirror Service, mirror %)
        self.routes: tuple[dict[str, int], dict[str, str], dict[str, list[str]], str | None, float] = ({}, {}, {}, None, 0.0)
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
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                status, payload, revision = shim.forward(self.path, body, headers)
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
            try:
                self._refresh()
            except Exception as error:  # the API server restarting, say: keep the last routes
                print(f"shim: {type(error).__name__}: {error}", flush=True)

    def _refresh(self) -> None:
        routed = self._http_route() if self.router == "gatewayAPI" else self._virtual_service()
        if routed is None:
            return
        weights, kinds, mirror, mirror_percent = routed
        revisions, endpoints = {}, {}
        for backend in set(weights) | ({mirror} if mirror else set()):
            if kinds.get(backend) == "InferencePool":
                pool = self.api.get("inference.networking.k8s.io/v1", "InferencePool", self.namespace, backend) or {}
                selector = pool.get("spec", {}).get("selector", {}).get("matchLabels") or {}
                target: int | str = (pool.get("spec", {}).get("targetPorts") or [{"number": 0}])[0]["number"]
            else:
                svc = self.api.get("v1", "Service", self.namespace, backend) or {}
                selector = svc.get("spec", {}).get("selector") or {}
                port = (svc.get("spec", {}).get("ports") or [{}])[0]
                target = port.get("targetPort", port.get("port", 0))
            revisions[backend] = selector.get(LABEL_REVISION, "")
            endpoints[backend] = self._endpoints(selector, target) if selector else []
        with self._lock:
            self.routes = (weights, revisions, endpoints, mirror, mirror_percent)

    def _virtual_service(self) -> tuple[dict[str, int], dict[str, str], str | None, float] | None:
        """(weight by Service, kind by backend, mirror Service, mirror percent) of the VirtualService's primary route."""
        vs = self.api.get("networking.istio.io/v1", "VirtualService", self.namespace, self.name)
        if not vs:
            return None
        primary = next((h for h in vs["spec"]["http"] if h.get("name") == "primary"), vs["spec"]["http"][-1])
        weights = {_service(r["destination"]["host"]): int(r.get("weight", 100)) for r in primary["route"]}
        mirror = _service(primary["mirror"]["host"]) if primary.get("mirror") else None
        mirror_percent = float(primary.get("mirrorPercentage", {}).get("value", 0)) if mirror else 0.0
        return weights, {}, mirror, mirror_percent

    def _http_route(self) -> tuple[dict[str, int], dict[str, str], str | None, float] | None:
        """The same of the HTTPRoute's ``primary`` rule: its backendRefs' weights (Services or InferencePools, weight 1
        when not set, as the Gateway API defaults it) and its ``RequestMirror`` filter (percent 100 when not set)."""
        route = self.api.get("gateway.networking.k8s.io/v1", "HTTPRoute", self.namespace, self.name)
        if not route:
            return None
        primary = next((r for r in route["spec"].get("rules") or [] if not any(m.get("headers") for m in r.get("matches") or [])), None)
        if primary is None:
            return None
        refs = primary.get("backendRefs") or []
        weights = {ref["name"]: int(ref.get("weight", 1)) for ref in refs}
        total = sum(weights.values()) or 1
        weights = {name: round(100 * weight / total) for name, weight in weights.items()}  # percent, as a VirtualService's
        kinds = {ref["name"]: ref.get("kind", "Service") for ref in refs}
        mirror_filter = next((f["requestMirror"] for f in primary.get("filters") or [] if f.get("type") == "RequestMirror"), None)
        mirror = mirror_filter["backendRef"]["name"] if mirror_filter else None
        return weights, kinds, mirror, float(mirror_filter.get("percent", 100)) if mirror_filter else 0.0

    def _endpoints(self, labels: dict[str, str], target: int | str) -> list[str]:
        """The ready endpoints ("ip:port") of a Service or an InferencePool selecting ``labels``, computed as the
        EndpointSlice controller does: the pods the selector matches that are Ready and not terminating, on the port
        ``target`` (a container port's name or number). (kube-apiserver refuses loopback addresses in EndpointSlices,
        so for the node agent's 127.0.0.x pods the controller's slices stay empty: "FailedToUpdateEndpointSlices ...
        may not be in the loopback range".)"""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        out = []
        for pod in self.api.list("v1", "Pod", self.namespace, selector):
            status = pod.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            ip = status.get("podIP")
            if not ready or not ip or pod["metadata"].get("deletionTimestamp") or not _loopback(ip):
                continue
            ports = {p.get("name"): p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or []}
            port = ports.get(target) if isinstance(target, str) else target
            if port:
                out.append(f"{ip}:{port}")
        return out

    def forward(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes, str | None]:
        with self._lock:
            weights, revisions, endpoints, mirror, mirror_percent = self.routes
            roll = self._random.uniform(0, 100)
            mirrored = mirror is not None and self._random.uniform(0, 100) < mirror_percent
            service, acc = None, 0
            for name, weight in sorted(weights.items()):
                acc += weight
                if roll < acc:
                    service = name
                    break
            revision = revisions.get(service) if service else None
            by_revision: dict[str, int] = collections.Counter()
            for name, weight in weights.items():
                by_revision[revisions.get(name, "")] += weight
            self.decisions.append((time.time(), revision, dict(by_revision)))
            target = self._random.choice(endpoints[service]) if service and endpoints.get(service) else None
            shadow = self._random.choice(endpoints[mirror]) if mirrored and endpoints.get(mirror) else None
        if shadow:
            threading.Thread(target=self._send, args=(shadow, revisions.get(mirror), path, body, headers), daemon=True).start()
        if service is None:
            return 503, b'{"error": "no route yet"}', None
        status, payload = self._send(target, revision, path, body, headers)
        return status, payload, revision

    def _send(self, endpoint: str | None, revision: str | None, path: str, body: bytes,
              headers: dict[str, str] | None) -> tuple[int, bytes]:
        started = time.monotonic()
        if endpoint is None:
            status, payload = 503, json.dumps({"error": f"no ready endpoint of revision {revision}"}).encode()
        else:
            request = urllib.request.Request(f"http://{endpoint}{path}", data=body,
                                             headers={"Content-Type": "application/json", **(headers or {})})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    status, payload = response.status, response.read()
            except urllib.error.HTTPError as error:
                status, payload = error.code, error.read()
            except OSError as error:
                status, payload = 503, json.dumps({"error": str(error)}).encode()
        labels = ("destination", self.namespace, self.name, revision or "unknown", str(status))
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe((time.monotonic() - started) * 1000)
        with self._lock:
            self.served[revision or "unknown"] += 1
        return status, payload


def _loopback(address: str) -> bool:
    """Only the node agent's pods (127.0.0.x) are ever sent traffic; kwok's simulated pod IPs never are."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _service(host: str) -> str:
    """The Service name of a mesh host (``name.namespace.svc.cluster.local`` or a short name)."""
    return host.split(".", 1)[0]


class Load:
    """Chat completions through the shim at ``rate`` requests per second (one thread per request), each
    generating exactly ``max_tokens`` tokens, with ``headers`` (an ``Authorization: Bearer`` key, say).

    ``latencies`` holds one ``(sent_at, revision, seconds, status)`` per finished request: ``sent_at`` on
    :func:`time.monotonic`, ``revision`` from the shim's ``x-llmops-revision`` header (``""`` when none), ``seconds``
    from sending to the whole response read."""

    def __init__(self, url: str, model: str, rate: float = 2.0, max_tokens: int = 16, headers: dict[str, str] | None = None):
        self.url, self.model, self.rate, self.max_tokens = url, model, rate, max_tokens
        self.headers = dict(headers or {})
        self.sent = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.latencies: list[tuple[float, str, float, int]] = []
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
        # ignore_eos (a vLLM sampling parameter): exactly max_tokens each, whatever the tiny random models draw
        body = json.dumps({"model": self.model, "max_tokens": self.max_tokens, "ignore_eos": True,
                           "messages": [{"role": "user", "content": "How does a canary release work?"}]}).encode()
        request = urllib.request.Request(self.url + "/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json", **self.headers})
        self.sent += 1
        sent_at = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()
                status, revision = response.status, response.headers.get("x-llmops-revision") or ""
        except urllib.error.HTTPError as error:
            status, revision = error.code, error.headers.get("x-llmops-revision") or ""
        except OSError:
            status, revision = 0, ""
        self.statuses[status] += 1
        self.latencies.append((sent_at, revision, time.monotonic() - sent_at, status))

    def summary(self, since: float = 0.0) -> dict[str, dict[str, float]]:
        """Per revision, the successful requests sent at or after ``since`` (monotonic seconds): ``n`` and the
        ``p50``/``p99``/``max`` latency in seconds (nearest-rank quantiles)."""
        by: dict[str, list[float]] = collections.defaultdict(list)
        for sent_at, revision, seconds, status in list(self.latencies):
            if sent_at >= since and status == 200:
                by[revision].append(seconds)
        return {revision: {"n": len(values), "p50": round(nearest_rank(values, 0.5), 3),
                           "p99": round(nearest_rank(values, 0.99), 3), "max": round(max(values), 3)}
                for revision, values in by.items()}


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-quantile (``q`` a ratio 0..1) of a non-empty list: the smallest value with at least
    ``q`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
