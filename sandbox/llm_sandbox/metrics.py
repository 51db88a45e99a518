"""A real Prometheus server and stand-in vLLM metric endpoints, for the rollout tests and benchmarks.

:class:`FakeVllm` serves ``/metrics`` with vLLM's metric names and labels (``vllm:request_success_total``
by ``finished_reason``, ``vllm:e2e_request_latency_seconds``, ``vllm:time_to_first_token_seconds``,
``vllm:request_generation_tokens``, ``vllm:generation_tokens_total``, ``vllm:num_requests_waiting``,
``vllm:num_requests_running``) from simulated traffic whose rate, error ratio and latency the caller sets and changes
at any time, or from an engine that hangs (:meth:`FakeVllm.stall`). The real
Prometheus (Debian's ``prometheus``) discovers the endpoints through a file-SD file that carries each
revision's labels, as pod relabelling does in a cluster.
"""

from __future__ import annotations

import json
import pathlib
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeVllm:
    """One revision's metrics: ``rate`` requests per second, ``error_ratio`` (0..1) of them finished with an
    error, latency around ``latency`` seconds (TTFT a tenth of it), about ``tokens`` generated tokens each, and
    ``rate x latency`` requests running at a time (Little's law). :meth:`stall` turns it into a hung engine."""

    def __init__(self, rate: float = 20.0, error_ratio: float = 0.0, latency: float = 0.5, tokens: int = 64, seed: int = 0):
        self.rate, self.error_ratio, self.latency, self.tokens = rate, error_ratio, latency, tokens
        self._random = random.Random(seed)
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.success = Counter("vllm:request_success", "Finished requests", labels + ["finished_reason"], registry=self.registry)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end latency", labels, registry=self.registry,
                             buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80))
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", labels, registry=self.registry,
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.lengths = Histogram("vllm:request_generation_tokens", "Generated tokens per request", labels, registry=self.registry,
                                 buckets=(16, 32, 64, 128, 256, 512, 1024))
        self.generated = Counter("vllm:generation_tokens", "Generated tokens", labels, registry=self.registry)
        self.waiting = Gauge("vllm:num_requests_waiting", "Waiting requests", labels, registry=self.registry)
        self.running = Gauge("vllm:num_requests_running", "Running requests", labels, registry=self.registry)
        self.stalled = False
        self.port = free_port()
        self._server = make_server("127.0.0.1", self.port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True),
                         threading.Thread(target=self._traffic, daemon=True)]

    def _app(self, environ: dict, start_response: Any) -> list[bytes]:
        # Always the classic text format: prometheus_client's OpenMetrics output renames "vllm:x" to "vllm_x",
        # and Prometheus 2.42 asks for OpenMetrics first.
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(self.registry)]

    def start(self) -> FakeVllm:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()

    def stall(self, stalled: bool = True) -> None:
        """Hang the engine (``stalled=False``: it answers again), as a stuck NCCL collective or a deadlock in vLLM's
        engine core does: /health stays 200, no request finishes, no token is generated, and the running gauge keeps
        the last scheduler stats' count (at least 1: the requests it hung on)."""
        self.stalled = stalled

    def _traffic(self) -> None:
        labels = {"model_name": "model", "engine": "0"}
        running = self.running.labels(**labels)
        tick, carry, last = 0.1, 0.0, time.monotonic()
        while not self._stop.wait(tick):
            now = time.monotonic()
            if self.stalled:  # the engine answers nothing; its last stats stay
                running.set(max(1, round(self.rate * self.latency)))
                carry, last = 0.0, now
                continue
            carry += self.rate * (now - last)  # by the clock: a thread starved on a busy machine still keeps the rate
            last = now
            running.set(round(self.rate * self.latency))
            count, carry = int(carry), carry - int(carry)
            for _ in range(count):
                error = self._random.random() < self.error_ratio
                self.success.labels(**labels, finished_reason="error" if error else "stop").inc()
                latency = self.latency * self._random.uniform(0.7, 1.3)
                self.e2e.labels(**labels).observe(latency)
                self.ttft.labels(**labels).observe(latency / 10)
                tokens = max(1, int(self._random.gauss(self.tokens, self.tokens / 4)))
                self.lengths.labels(**labels).observe(tokens)
                self.generated.labels(**labels).inc(tokens)
            self.waiting.labels(**labels).set(0)


def wait_until_serving(process: subprocess.Popen[bytes], url: str, timeout: float, what: str, log: pathlib.Path) -> None:
    """Poll ``url`` until it answers 200; RuntimeError naming ``log`` if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} not ready within {timeout:.0f}s; see {log}")


class Prometheus:
    """Debian's Prometheus on loopback, scraping file-SD targets every ``interval`` seconds."""

    def __init__(self, workdir: pathlib.Path, interval: float = 1.0, scrape_configs: list[dict[str, Any]] | None = None):
        self.workdir = workdir
        self.binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets_file = workdir / "targets.json"
        self.targets: dict[str, dict[str, Any]] = {}
        self.interval = interval
        self.process: subprocess.Popen[bytes] | None = None
        self._write_targets()
        (workdir / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": f"{int(interval * 1000)}ms", "evaluation_interval": f"{int(interval * 1000)}ms"},
            "scrape_configs": [{
                "job_name": "vllm",
                "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                # Prometheus 2.42 asks for OpenMetrics, in which prometheus_client (vLLM's exporter) writes
                # vllm:x as vllm_x; put the colon back (the PodMonitor asks for the text format instead).
                "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": "vllm_(.+)",
                                            "target_label": "__name__", "replacement": "vllm:$1"}],
            }, *(scrape_configs or [])],
        }))

    def _write_targets(self) -> None:
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [t], "labels": labels} for t, labels in self.targets.items()]))
        tmp.replace(self.targets_file)  # atomic: Prometheus never reads half a file

    def add_target(self, port: int, **labels: str) -> None:
        self.targets[f"127.0.0.1:{port}"] = labels
        self._write_targets()

    def set_targets(self, targets: dict[str, dict[str, str]]) -> None:
        """Replace every target (``host:port`` -> labels)."""
        self.targets = dict(targets)
        self._write_targets()

    def start(self) -> Prometheus:
        if not pathlib.Path(self.binary).exists():
            raise RuntimeError("Prometheus is not installed: `apt-get install -y prometheus` (make test does it)")
        with open(self.workdir / "prometheus.log", "ab") as log:  # the child has its own copy of the descriptor
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={self.workdir / 'prometheus.yml'}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_until_serving(self.process, f"{self.url}/-/ready", 60, "Prometheus", self.workdir / "prometheus.log")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.process = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]["result"]


def _snake(key: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in key)


class PodDiscovery:
    """Prometheus's Kubernetes pod discovery, served as HTTP service discovery: Debian's Prometheus is built without
    ``kubernetes_sd_configs`` (its client-go dependency is not packaged), so this lists pods through the API server
    with the ``prometheus`` ServiceAccount's token, exactly as that plugin's ``role: pod`` would, and answers
    ``http_sd_configs`` with one target per declared container port carrying the same ``__meta_kubernetes_*``
    labels. Prometheus then applies the PodMonitor's relabelling itself. Discovery only: no relabelling here.
    ``node`` limits it to the pods bound to one node (as a ``spec.nodeName`` field selector would)."""

    def __init__(self, kubeconfig: str, node: str | None = None):
        import kubernetes

        self.core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(config_file=kubeconfig))
        self.node = node
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/targets"
        self._server = make_server("127.0.0.1", self.port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler)

    def start(self) -> PodDiscovery:
        threading.Thread(target=self._server.serve_forever, name="pod-discovery", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def targets(self) -> list[dict[str, Any]]:
        selector = f"spec.nodeName={self.node}" if self.node else None
        out = []
        for pod in self.core.list_pod_for_all_namespaces(field_selector=selector).items:
            if not pod.status.pod_ip:
                continue
            ready = next((c.status for c in pod.status.conditions or [] if c.type == "Ready"), "False")
            meta = {"__meta_kubernetes_namespace": pod.metadata.namespace, "__meta_kubernetes_pod_name": pod.metadata.name,
                    "__meta_kubernetes_pod_ip": pod.status.pod_ip, "__meta_kubernetes_pod_node_name": pod.spec.node_name or "",
                    "__meta_kubernetes_pod_phase": pod.status.phase or "", "__meta_kubernetes_pod_ready": ready.lower(),
                    "__meta_kubernetes_pod_uid": pod.metadata.uid}
            for key, value in (pod.metadata.labels or {}).items():
                name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in key)
                meta[f"__meta_kubernetes_pod_label_{name}"] = value
                meta[f"__meta_kubernetes_pod_labelpresent_{name}"] = "true"
            for container in pod.spec.containers:
                for port in container.ports or []:
                    out.append({"targets": [f"{pod.status.pod_ip}:{port.container_port}"],
                                "labels": {**meta, "__meta_kubernetes_pod_container_name": container.name,
                                           "__meta_kubernetes_pod_container_port_name": port.name or "",
                                           "__meta_kubernetes_pod_container_port_number": str(port.container_port)}})
        return out

    def _app(self, environ: dict, start_response: Any) -> list[bytes]:
        try:
            body = json.dumps(self.targets()).encode()
        except Exception as error:  # Prometheus keeps its last targets on an error
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [str(error).encode()]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


def pod_monitor_scrape_config(pod_monitor: dict[str, Any], *, discovery_url: str, interval: float = 1.0) -> dict[str, Any]:
    """The Prometheus scrape configuration a PodMonitor stands for, as Prometheus Operator generates it: pods kept by
    the PodMonitor's label selector and port name, then its own relabelings, over targets from the pod discovery at
    ``discovery_url`` (:class:`PodDiscovery`). Prometheus 2.42 has no ``scrape_protocols``; the OpenMetrics name
    rewrite (``vllm_x`` back to ``vllm:x``) stands in for the PodMonitor's text format."""
    spec = pod_monitor["spec"]
    (endpoint,) = spec["podMetricsEndpoints"]
    relabel: list[dict[str, Any]] = []
    for key, value in spec["selector"].get("matchLabels", {}).items():
        name = "".join(ch if ch.isalnum() else "_" for ch in key)
        relabel.append({"source_labels": [f"__meta_kubernetes_pod_label_{name}", f"__meta_kubernetes_pod_labelpresent_{name}"],
                        "regex": f"({value});true", "action": "keep"})
    relabel.append({"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"], "action": "keep"})
    relabel.append({"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)", "action": "drop"})
    for rule in endpoint.get("relabelings", []):
        relabel.append({_snake(k): v for k, v in rule.items()})
    meta = pod_monitor["metadata"]
    return {
        "job_name": f"podMonitor/{meta.get('namespace', 'default')}/{meta['name']}/0",
        "scrape_interval": f"{int(interval * 1000)}ms",
        "metrics_path": endpoint.get("path", "/metrics"),
        "http_sd_configs": [{"url": discovery_url, "refresh_interval": "1s"}],
        "relabel_configs": relabel,
        "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": "vllm_(.+)", "target_label": "__name__",
                                    "replacement": "vllm:$1"}],
    }
