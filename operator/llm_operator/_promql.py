"""PromQL for the built-in SLIs, per revision. Pure string building.

Series carry the revision through pod relabelling (``llmops.dev/revision`` -> ``llmops_dev_revision``) and
the namespace as ``namespace``; see ``_contract``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _contract as c


def duration(seconds: float) -> str:
    """A PromQL duration for whole seconds (``90`` -> ``"90s"``)."""
    return f"{max(1, int(round(seconds)))}s"


@dataclass(frozen=True)
class Scope:
    """Which series a query covers: one revision of one LLMDeployment."""

    namespace: str
    deployment: str
    revision: str

    def selector(self, extra: str = "") -> str:
        parts = [f'namespace="{self.namespace}"', f'{c.PROM_LABEL_DEPLOYMENT}="{self.deployment}"',
                 f'{c.PROM_LABEL_REVISION}="{self.revision}"']
        return "{" + ",".join(parts + ([extra] if extra else [])) + "}"


def _istio(scope: Scope, extra: str = "") -> str:
    # Istio's standard metrics name the revision by the pod's service.istio.io/canonical-revision label.
    parts = ['reporter="destination"', f'destination_workload_namespace="{scope.namespace}"',
             f'destination_canonical_service="{scope.deployment}"', f'destination_canonical_revision="{scope.revision}"']
    return "{" + ",".join(parts + ([extra] if extra else [])) + "}"


def requests(scope: Scope, window: float, source: str = "vllm") -> str:
    """Requests in the window: vLLM's finished requests (every ``finished_reason``), or Istio's."""
    if source == "istio":
        return f"sum(increase(istio_requests_total{_istio(scope)}[{duration(window)}]))"
    return f"sum(increase(vllm:request_success_total{scope.selector()}[{duration(window)}]))"


def finished(scope: Scope, window: float, reason: str) -> str:
    """vLLM's requests in the window that finished for ``reason`` (a ``finished_reason`` value)."""
    selector = scope.selector(f'finished_reason="{reason}"')
    return f"sum(increase(vllm:request_success_total{selector}[{duration(window)}]))"


def errors(scope: Scope, window: float, source: str = "vllm") -> str:
    """Failed requests in the window: vLLM's server errors (``finished_reason="error"``, always a 500; a client
    that went away, ``abort``, is not one), or Istio's 5xx responses."""
    if source == "istio":
        return f"sum(increase(istio_requests_total{_istio(scope, 'response_code=~' + chr(34) + '5..' + chr(34))}[{duration(window)}]))"
    return finished(scope, window, c.FINISHED_REASON_ERROR)


def repetitions(scope: Scope, window: float) -> str:
    """vLLM's requests in the window whose output was cut off as a repetitive token pattern."""
    return finished(scope, window, c.FINISHED_REASON_REPETITION)


def quantile(scope: Scope, histogram: str, q: float, window: float) -> str:
    """The ``q`` quantile of a vLLM histogram (``vllm:e2e_request_latency_seconds``...) over the window."""
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{scope.selector()}[{duration(window)}])))"


def latency_p99(scope: Scope, window: float) -> str:
    return quantile(scope, "vllm:e2e_request_latency_seconds", 0.99, window)


def ttft_p95(scope: Scope, window: float) -> str:
    return quantile(scope, "vllm:time_to_first_token_seconds", 0.95, window)


def itl_p95(scope: Scope, window: float) -> str:
    return quantile(scope, "vllm:inter_token_latency_seconds", 0.95, window)


def buckets(scope: Scope, histogram: str, window: float) -> str:
    """Cumulative buckets (one series per ``le``) of a vLLM histogram over the window."""
    return f"sum by (le) (increase({histogram}_bucket{scope.selector()}[{duration(window)}]))"


def output_length_buckets(scope: Scope, window: float) -> str:
    """Cumulative buckets (one series per ``le``) of generated tokens per request over the window."""
    return buckets(scope, "vllm:request_generation_tokens", window)


def prompt_length_buckets(scope: Scope, window: float) -> str:
    """Cumulative buckets of prompt tokens per request (``vllm:request_prompt_tokens``) over the window."""
    return buckets(scope, "vllm:request_prompt_tokens", window)


def generated_tokens(scope: Scope, window: float) -> str:
    return f"sum(increase(vllm:generation_tokens_total{scope.selector()}[{duration(window)}]))"


def stalled_engines(scope: Scope, window: float) -> str:
    """The revision's engines (one series per pod and engine) that held running requests for the whole window and
    generated no token in it, each with the least ``vllm:num_requests_running`` scraped in the window: matched per
    series, so one hung engine shows beside healthy ones. Only series that already existed when the window began
    (the ``offset`` term: a pod that started within the window has held nothing for all of it)."""
    span, selector = duration(window), scope.selector()
    running = f"vllm:num_requests_running{selector}"
    return (f"(min_over_time({running}[{span}]) >= 1) and (increase(vllm:generation_tokens_total{selector}[{span}]) == 0)"
            f" and ({running} offset {span})")


def render_template(query: str, *, revision: str, stable_revision: str, namespace: str, window: float) -> str:
    """A user query with ``{{revision}}``, ``{{stable_revision}}``, ``{{namespace}}`` and ``{{interval}}`` filled in."""
    values = {"revision": revision, "stable_revision": stable_revision, "namespace": namespace, "interval": duration(window)}
    for key, value in values.items():
        query = query.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
    return query
