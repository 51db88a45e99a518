"""The metrics-provider boundary (after Flagger's ``pkg/metrics/providers``): run an instant query, tell
*no data* apart from *an error*, and say whether the backend is reachable."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol


class MetricsError(Exception):
    """The metrics backend could not answer (unreachable, timed out, or refused the query)."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector."""

    labels: dict[str, str]
    value: float


class MetricsProvider(Protocol):
    """Instant PromQL queries. An empty list means *no data*; failures raise :class:`MetricsError`."""

    def query(self, promql: str) -> list[Sample]:
        ...


def scalar(samples: list[Sample]) -> float | None:
    """The single value of a one-series result; None for no data (or NaN, as ``histogram_quantile`` gives
    over an empty window)."""
    if not samples:
        return None
    value = samples[0].value
    return None if math.isnan(value) or math.isinf(value) else value


class PrometheusProvider:
    """:class:`MetricsProvider` over ``prometheus-api-client``; one per Prometheus address, built once."""

    def __init__(self, url: str, timeout_seconds: float = 10.0):
        from prometheus_api_client import PrometheusConnect

        self.url = url
        self._client = PrometheusConnect(url=url, disable_ssl=True)
        self._timeout = timeout_seconds

    def query(self, promql: str) -> list[Sample]:
        try:
            result: list[dict[str, Any]] = self._client.custom_query(promql, params={"timeout": f"{self._timeout}s"})
        except Exception as error:  # connection refused, timeouts, HTTP errors, bad queries
            raise MetricsError(f"{self.url}: {type(error).__name__}: {str(error)[:200]}") from error
        return [Sample(labels=item.get("metric", {}), value=float(item["value"][1])) for item in result]
