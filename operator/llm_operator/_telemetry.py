"""The operator's own metrics (``--metrics-port``), with prometheus_client.

Names carry the ``llmops_`` prefix and the labels the rest of the project uses (``namespace``,
``llmops_dev_deployment``). Values come from what each pass already decided; nothing here queries anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from . import _conditions as cond
from . import _contract as c
from ._vocabulary import TERMINAL, Phase

DEPLOYMENT = c.PROM_LABEL_DEPLOYMENT


class Telemetry:
    """Metrics of one operator process; ``observe_pass`` is called after every reconcile pass."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram("llmops_reconcile_duration_seconds", "Seconds a reconcile pass took, reads to writes",
                                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.reconcile_errors = Counter("llmops_reconcile_errors", "Reconcile passes that failed (any error)",
                                        ["namespace", DEPLOYMENT], registry=r)
        self.api_writes = Counter("llmops_api_writes", "API writes made by reconcile passes", ["namespace", DEPLOYMENT], registry=r)
        self.slo_target = Gauge("llmops_slo_availability_ratio", "SLO availability target of an LLMDeployment, ratio 0..1",
                                ["namespace", DEPLOYMENT], registry=r)
        self.slo_latency = Gauge("llmops_slo_latency_p99_seconds", "spec.slo.latencyP99Seconds of an LLMDeployment, seconds",
                                 ["namespace", DEPLOYMENT], registry=r)
        self.slo_ttft = Gauge("llmops_slo_time_to_first_token_p95_seconds",
                              "spec.slo.timeToFirstTokenP95Seconds of an LLMDeployment, seconds", ["namespace", DEPLOYMENT], registry=r)
        self.rollout_phase = Gauge("llmops_rollout_phase", "1 for the LLMRollout's current phase, 0 for the others",
                                   ["namespace", "rollout", DEPLOYMENT, "phase"], registry=r)
        self.canary_weight = Gauge("llmops_rollout_canary_weight_percent", "Percent 0..100 of traffic on the new revision",
                                   ["namespace", "rollout", DEPLOYMENT], registry=r)
        self.outcomes = Counter("llmops_rollouts_finished", "LLMRollouts that reached Succeeded, Aborted or Failed",
                                ["namespace", DEPLOYMENT, "phase", "reason"], registry=r)
        self.metric_value = Gauge("llmops_analysis_metric_value", "Last measured value of an analysis metric",
                                  ["namespace", "rollout", "metric"], registry=r)
        self.registry_sync = Gauge("llmops_registry_last_sync_timestamp_seconds",
                                   "Unix time of the last successful read of a registered model (sync age: time() minus this)",
                                   ["registered_model"], registry=r)
        self.registry_errors = Counter("llmops_registry_errors", "Failed model registry reads and writes",
                                       ["registered_model", "reason"], registry=r)
        self.verdicts = Counter("llmops_analysis_runs", "Analysis runs by verdict", ["namespace", "rollout", "verdict"], registry=r)
        # The work queue, as client-go's workqueue metrics name them (depth, queue duration, longest running).
        self.queue_wait = Histogram("llmops_workqueue_queue_duration_seconds", "Seconds an LLMDeployment's key waited "
                                    "in the work queue before a worker took it", registry=r,
                                    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.queue_depth = Gauge("llmops_workqueue_depth", "Keys waiting for a worker", registry=r)
        self.queue_delayed = Gauge("llmops_workqueue_delayed", "Keys waiting for their due time (requeues, retries)", registry=r)
        self.queue_longest = Gauge("llmops_workqueue_longest_running_processor_seconds",
                                   "Seconds the longest-running pass has run so far", registry=r)
        self.queue_in_flight = Gauge("llmops_workqueue_passes_in_flight", "Passes running now (at most --workers)", registry=r)
        # client-go's rest_client_requests_total, by the authoriser's verb and the kind: the operator's own client
        # (kopf's watches are apart: kube-apiserver's apiserver_request_total has them).
        self.api_requests = Counter("llmops_api_requests", "Kubernetes API requests of the reconcile passes",
                                    ["verb", "kind", "code"], registry=r)
        #: (namespace, LLMDeployment) -> {LLMRollout: the analysis metric names exported for it}: which gauge
        #: series to remove when a rollout or the deployment is deleted (kube-state-metrics drops a deleted object's
        #: series; a gauge left behind would report a deleted rollout as Progressing to the alerts forever).
        self._exported: dict[tuple[str, str], dict[str, set[str]]] = {}
        self.loop_errors = Counter("llmops_loop_errors", "Failed iterations of the operator's background loops (resync, registry)",
                                   ["loop"], registry=r)

    def watch_queue(self, queue: Any) -> None:
        """Read the work queue's gauges from ``queue`` (a :class:`~._workqueue.WorkQueue`) at each scrape."""
        self.queue_depth.set_function(lambda: len(queue))
        self.queue_delayed.set_function(queue.delayed)
        self.queue_longest.set_function(queue.oldest_processing)
        self.queue_in_flight.set_function(queue.in_flight)

    def count_request(self, verb: str, kind: str, code: int) -> None:
        """One API request of a pass (see :class:`~._kube.CountingKube`)."""
        self.api_requests.labels(verb, kind, str(code)).inc()

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)

    def observe_pass(self, body: Mapping[str, Any], availability: float | None, rollouts: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
                     seconds: float, writes: int, *, latency_p99_seconds: float | None = None,
                     ttft_p95_seconds: float | None = None) -> None:
        """Record one pass: the LLMDeployment ``body``, its SLO (availability in percent 0..100, the latency
        objectives in seconds; a latency objective the spec leaves out is not exported, so the alerts fall back to
        their default), and (rollout as read, its new status)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        self.reconcile_seconds.observe(seconds)
        if writes:
            self.api_writes.labels(ns, name).inc(writes)
        if availability is not None:
            self.slo_target.labels(ns, name).set(availability / 100)
        for gauge, value in ((self.slo_latency, latency_p99_seconds), (self.slo_ttft, ttft_p95_seconds)):
            if value is not None:
                gauge.labels(ns, name).set(value)
            else:
                with contextlib.suppress(KeyError):  # never set
                    gauge.remove(ns, name)
        exported = self._exported.setdefault((ns, name), {})
        listed = {before["metadata"]["name"] for before, _ in rollouts}
        for gone in set(exported) - listed:  # deleted (the history limit, a user) since the last pass
            self._drop_rollout(ns, name, gone, exported.pop(gone))
        for before, after in rollouts:
            rollout = before["metadata"]["name"]
            metrics = exported.setdefault(rollout, set())
            phase = after.get("phase") or Phase.PENDING
            for candidate in Phase:
                self.rollout_phase.labels(ns, rollout, name, candidate).set(1 if candidate == phase else 0)
            self.canary_weight.labels(ns, rollout, name).set(after.get("canaryWeight") or 0)
            old = before.get("status") or {}
            if phase in TERMINAL and old.get("phase") != phase:
                reason = next((x["reason"] for x in after.get("conditions", []) if x["type"] in (cond.DEGRADED, cond.COMPLETED)
                               and x["status"] == "True"), phase)
                self.outcomes.labels(ns, name, phase, reason).inc()
            analysis, previous = after.get("analysis") or {}, old.get("analysis") or {}
            if analysis.get("lastRunAt") and analysis.get("lastRunAt") != previous.get("lastRunAt"):
                self.verdicts.labels(ns, rollout, analysis.get("verdict") or "Unknown").inc()
                for metric in analysis.get("metrics", []):
                    if metric.get("value") is not None:
                        self.metric_value.labels(ns, rollout, metric["name"]).set(metric["value"])
                        metrics.add(metric["name"])

    def forget(self, namespace: str, name: str) -> None:
        """Remove the gauge series of the LLMDeployment ``namespace/name`` and of its rollouts (it was deleted).
        Counters stay, as client-go's and controller-runtime's do: a rate over them needs no series to vanish."""
        for gauge in (self.slo_target, self.slo_latency, self.slo_ttft):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for rollout, metrics in self._exported.pop((namespace, name), {}).items():
            self._drop_rollout(namespace, name, rollout, metrics)

    def _drop_rollout(self, namespace: str, deployment: str, rollout: str, metrics: set[str]) -> None:
        removals: list[tuple[Gauge, tuple[str, ...]]] = [(self.rollout_phase, (namespace, rollout, deployment, phase)) for phase in Phase]
        removals += [(self.canary_weight, (namespace, rollout, deployment))]
        removals += [(self.metric_value, (namespace, rollout, metric)) for metric in metrics]
        for gauge, labels in removals:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def observe_error(self, namespace: str, name: str) -> None:
        self.reconcile_errors.labels(namespace, name).inc()
