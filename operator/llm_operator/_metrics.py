"""The metrics-provider boundary (after Flagger's ``pkg/metrics/providers``): run an instant query, tell
*no data* apart from *an error*, and say whether the backend is reachable."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol


class MetricsError(Exception):
    """The metrics backend could not answer: ``unreachable`` when it could not be reached at all (connection
    refused, timed out), rather than refusing one query."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


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
        from urllib3.util.retry import Retry

        self.url = url
        # No client-side retries: the analysis's consecutiveErrorLimit is the retry policy, and a retrying client
        # would hold a pass for tens of seconds when Prometheus is down.
        self._client = PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0), timeout=int(timeout_seconds))
        self._timeout = timeout_seconds

    def query(self, promql: str) -> list[Sample]:
        import requests

        try:
            result: list[dict[str, Any]] = self._client.custom_query(promql, params={"timeout": f"{int(self._timeout)}s"})
        except (requests.ConnectionError, requests.Timeout) as error:
            raise MetricsError(f"{self.url} unreachable: {type(error).__name__}", unreachable=True) from error
        except Exception as error:  # HTTP errors, bad queries
            raise MetricsError(f"{self.url}: {type(error).__name__}: {str(error)[:200]}") from error
        return [Sample(labels=item.get("metric", {}), value=float(item["value"][1])) for item in result]
