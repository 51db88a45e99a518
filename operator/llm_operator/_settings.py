"""Operator settings, read once at start-up from the environment (``LLMOPS_*``) and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """What the operator process is configured with.

    Attributes:
        resync_seconds: how often every LLMDeployment is reconciled even when nothing was observed to
            change (level-based safety net; a pass that finds nothing to do writes nothing).
        prometheus_url: the Prometheus base URL rollout analysis queries when neither the LLMRollout nor its
            LLMDeployment's template names one (``LLMOPS_PROMETHEUS_URL``).
        metrics_port: where the operator serves its own Prometheus metrics (``LLMOPS_METRICS_PORT``); off when None.
        mlflow_tracking_uri: the MLflow tracking server for LLMDeployments whose ``spec.model.mlflow`` names no
            ``secretRef`` (``MLFLOW_TRACKING_URI``; its token, if any, in ``MLFLOW_TRACKING_TOKEN``, which MLflow
            reads itself and the operator never logs).
        namespaces: the namespaces watched (``--namespace``, ``LLMOPS_NAMESPACES``, comma-separated); all when empty.
            A namespaced install lists and watches only these, so it needs no cluster-wide read of its resources.
        registry_poll_seconds: how often each registered model that an LLMDeployment follows is read
            (``LLMOPS_REGISTRY_POLL_SECONDS``): one read per model per interval, however many follow it.
        workers: how many reconcile passes run at once (``--workers``, ``LLMOPS_WORKERS``), each over a different
            LLMDeployment; at least 1. Passes wait on the API server mostly, so more workers than cores pay.
        kubeconfig: a kubeconfig path given with ``--kubeconfig`` (``LLMOPS_KUBECONFIG``); without it the
            operator uses in-cluster credentials, or ``KUBECONFIG``/``~/.kube/config`` through the official
            client (exec plugins and all).
    """

    resync_seconds: float = 60.0
    kubeconfig: str | None = None
    prometheus_url: str | None = None
    metrics_port: int | None = None
    namespaces: tuple[str, ...] = ()
    mlflow_tracking_uri: str | None = None
    registry_poll_seconds: float = 30.0
    workers: int = 8

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"LLMOPS_WORKERS (--workers) must be at least 1, not {self.workers}")

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            resync_seconds=float(os.environ.get("LLMOPS_RESYNC_SECONDS", cls.resync_seconds)),
            kubeconfig=os.environ.get("LLMOPS_KUBECONFIG") or None,
            prometheus_url=os.environ.get("LLMOPS_PROMETHEUS_URL") or None,
            metrics_port=int(os.environ["LLMOPS_METRICS_PORT"]) if os.environ.get("LLMOPS_METRICS_PORT") else None,
            namespaces=tuple(n for n in os.environ.get("LLMOPS_NAMESPACES", "").split(",") if n),
            mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
            registry_poll_seconds=float(os.environ.get("LLMOPS_REGISTRY_POLL_SECONDS", cls.registry_poll_seconds)),
            workers=int(os.environ.get("LLMOPS_WORKERS", cls.workers)),
        )
