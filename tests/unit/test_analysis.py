"""Analysis maths against worked examples, PromQL rendering, and one run's verdicts."""

import math

import pytest

from llm_operator import _analysis as a
from llm_operator import _promql as q
from llm_operator._api import Analysis, AnalysisMetric, Slo
from llm_operator._measure import Context, default_metrics, measure, queries
from llm_operator._metrics import MetricsError, Sample
from tests.unit.fakes import FakeMetrics


@pytest.mark.parametrize("ratio,slo,burn", [(0.001, 99.9, 1.0), (0.0144, 99.9, 14.4), (0.06, 99.0, 6.0), (0.0, 99.5, 0.0)])
def test_burn_rate(ratio, slo, burn):
    assert a.burn_rate(ratio, slo) == pytest.approx(burn)


def test_error_budget_rejects_impossible_targets():
    for bad in (0, 100, 100.5, -1):
        with pytest.raises(ValueError, match="strictly between 0 and 100"):
            a.error_budget(bad)


def test_burn_windows_scale_with_the_analysis():
    assert a.burn_windows(3600) == a.BurnWindows(3600, 300, 14.4)  # the SRE Workbook's 1 h / 5 min pair
    assert a.burn_windows(600) == a.BurnWindows(600, 50, 14.4)
    assert a.burn_windows(120).short_seconds == 30  # never below a few scrape intervals


@pytest.mark.parametrize("long,short,expected", [(20, 15, True), (20, 10, False), (5, 30, False), (None, 30, None)])
def test_fast_burn_needs_both_windows(long, short, expected):
    assert a.fast_burn(long, short, 14.4) is expected


def test_z_test_worked_example():
    # p1 = 0.03, p2 = 0.01, pooled 0.02: SE = sqrt(0.02 * 0.98 * 0.002) = 0.006261, z = 0.02 / 0.006261 = 3.194.
    t = a.two_proportion_z_test(30, 1000, 10, 1000)
    assert t.z == pytest.approx(3.194, abs=1e-3)
    assert t.p_value == pytest.approx(0.000701, abs=1e-5)
    assert (t.canary_ratio, t.stable_ratio) == (0.03, 0.01)


def test_z_test_edges():
    assert a.two_proportion_z_test(0, 500, 0, 500).p_value == 0.5  # no errors anywhere: nothing to see
    assert a.two_proportion_z_test(1, 1000, 20, 1000).p_value > 0.99  # a better canary never fails a one-sided test
    with pytest.raises(ValueError):
        a.two_proportion_z_test(5, 0, 0, 10)


def test_kl_divergence():
    same = [0.25, 0.5, 0.25]
    assert a.kl_divergence(same, same) == 0.0
    # D(P||Q) for P = (0.5, 0.5), Q = (0.9, 0.1): 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5108
    assert a.kl_divergence([0.5, 0.5], [0.9, 0.1], epsilon=0) == pytest.approx(0.5108, abs=1e-4)
    assert math.isfinite(a.kl_divergence([1.0, 0.0], [0.0, 1.0]))  # smoothed, not infinite
    with pytest.raises(ValueError):
        a.kl_divergence([1.0], [0.5, 0.5])


def test_bucket_probabilities_from_cumulative_buckets():
    assert a.bucket_probabilities([(16, 10), (64, 40), (256, 50), (math.inf, 50)]) == [0.2, 0.6, 0.2, 0.0]
    assert a.bucket_probabilities([(16, 0), (math.inf, 0)]) == []


def test_cost_per_1k_tokens():
    assert a.cost_per_1k_tokens(2.5, 4, 3600, 1_000_000) == pytest.approx(0.01)
    assert a.cost_per_1k_tokens(2.5, 4, 60, 0) is None


@pytest.mark.parametrize("value,lo,hi,verdict", [
    (0.5, None, 1, "Pass"), (1.5, None, 1, "Fail"), (0.01, 0.05, None, "Fail"), (None, 0, 1, "Inconclusive"),
    (float("nan"), 0, 1, "Inconclusive"), (1.0, 1.0, 1.0, "Pass")])
def test_judge(value, lo, hi, verdict):
    assert a.judge(value, lo, hi) == verdict


@pytest.mark.parametrize("verdicts,result", [
    (["Pass", "Pass"], "Pass"), (["Pass", "Fail", "Error"], "Fail"), (["Pass", "Error", "Inconclusive"], "Error"),
    (["Pass", "Inconclusive"], "Inconclusive"), ([], "Inconclusive")])
def test_overall(verdicts, result):
    assert a.overall(verdicts) == result


SCOPE = q.Scope("ns", "chat", "c0ffee")


def test_istio_error_source():
    assert q.errors(SCOPE, 60, "istio") == (
        'sum(increase(istio_requests_total{reporter="destination",destination_workload_namespace="ns",'
        'destination_canonical_service="chat",destination_canonical_revision="c0ffee",response_code=~"5.."}[60s]))')
    ctx = Context(canary=SCOPE, stable=q.Scope("ns", "chat", "old"), window_seconds=60, burn_long_seconds=600, error_source="istio")
    assert all("istio_requests_total" in v for k, v in queries(default_metrics(Slo()), ctx).items() if "requests" in k or "errors" in k)


def test_promql_rendering():
    assert q.requests(SCOPE, 60) == (
        'sum(increase(vllm:request_success_total{namespace="ns",llmops_dev_deployment="chat",llmops_dev_revision="c0ffee"}[60s]))')
    assert q.errors(SCOPE, 90.4) == (
        'sum(increase(vllm:request_success_total{namespace="ns",llmops_dev_deployment="chat",llmops_dev_revision="c0ffee",'
        'finished_reason="error"}[90s]))')
    assert q.latency_p99(SCOPE, 60).startswith("histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{")
    assert "vllm:time_to_first_token_seconds_bucket" in q.ttft_p95(SCOPE, 60)
    assert q.render_template('sum(rate(x{rev="{{revision}}",ns="{{ namespace }}"}[{{interval}}])) / on() y{r="{{stable_revision}}"}',
                             revision="new", stable_revision="old", namespace="team", window=300) == (
        'sum(rate(x{rev="new",ns="team"}[300s])) / on() y{r="old"}')


# ------------------------------------------------------------------------------------ one run

CTX = Context(canary=q.Scope("ns", "chat", "new"), stable=q.Scope("ns", "chat", "old"),
              window_seconds=60, burn_long_seconds=600, canary_gpus=2, gpu_hour_price=3.0)
SLO = Slo(availability=99.0, latency_p99_seconds=2.0, time_to_first_token_p95_seconds=0.5)


def cluster(canary_errors=0.0, canary_total=1000.0, stable_errors=0.0, stable_total=1000.0,
            canary_p99=1.0, stable_p99=1.0, ttft=0.2, fail=None):
    """Answers as Prometheus would for a canary ('new') and a stable ('old') revision."""
    def answer(promql):
        if fail and fail in promql:
            return MetricsError("connection refused")
        rev = "new" if 'llmops_dev_revision="new"' in promql else "old"
        if "request_success_total" in promql:
            if 'finished_reason="error"' in promql:
                return canary_errors if rev == "new" else stable_errors
            return canary_total if rev == "new" else stable_total
        if "e2e_request_latency" in promql:
            return canary_p99 if rev == "new" else stable_p99
        if "time_to_first_token" in promql:
            return ttft
        if "generation_tokens_total" in promql:
            return 120_000
        return None
    return FakeMetrics(answer)


def _run(provider, metrics=None, min_requests=20):
    analysis = Analysis(metrics=metrics or [], min_requests=min_requests)
    return measure(provider, analysis, SLO, CTX)


def test_healthy_canary_passes_every_default_metric():
    run = _run(cluster(canary_errors=2, stable_errors=3))
    assert run.verdict == "Pass"
    assert {m.name: m.verdict for m in run.metrics} == {
        "error-ratio": "Pass", "burn-rate": "Pass", "errors-vs-stable": "Pass", "latency-vs-stable": "Pass",
        "latency-p99": "Pass", "ttft-p95": "Pass"}
    error_ratio = next(m for m in run.metrics if m.name == "error-ratio")
    assert (error_ratio.value, error_ratio.max) == (0.002, pytest.approx(0.01))


def test_errors_fail_the_ratio_the_burn_and_the_comparison():
    run = _run(cluster(canary_errors=200, stable_errors=2))
    verdicts = {m.name: m.verdict for m in run.metrics}
    assert run.verdict == "Fail"
    assert verdicts["error-ratio"] == verdicts["burn-rate"] == verdicts["errors-vs-stable"] == "Fail"
    burn = next(m for m in run.metrics if m.name == "burn-rate")
    assert burn.value == pytest.approx(20.0)  # 0.2 / 0.01 in both windows (the fake answers alike)
    assert "burn 20.00 over 600s, 20.00 over 60s" in burn.message  # short: 600/12, floored at the 60 s run window
    # 8% errors burn at 8x: outside the SLO ratio, but not a fast burn.
    run = _run(cluster(canary_errors=80, stable_errors=2))
    verdicts = {m.name: m.verdict for m in run.metrics}
    assert verdicts["error-ratio"] == "Fail" and verdicts["burn-rate"] == "Pass"


def test_worse_than_stable_fails_inside_the_absolute_slo():
    # 0.6% errors is inside a 99% SLO, but 10x stable's 0.06% on 5000 requests each is significant.
    run = _run(cluster(canary_errors=30, canary_total=5000, stable_errors=3, stable_total=5000))
    verdicts = {m.name: m.verdict for m in run.metrics}
    assert verdicts["error-ratio"] == "Pass" and verdicts["errors-vs-stable"] == "Fail"


def test_latency_regression_fails_absolute_and_relative_checks():
    run = _run(cluster(canary_p99=5.0, stable_p99=1.0))
    verdicts = {m.name: m.verdict for m in run.metrics}
    assert verdicts["latency-p99"] == "Fail" and verdicts["latency-vs-stable"] == "Fail"
    assert next(m for m in run.metrics if m.name == "latency-vs-stable").value == 5.0


def test_too_few_requests_is_inconclusive_never_a_pass():
    run = _run(cluster(canary_total=5), min_requests=20)
    assert run.verdict == "Inconclusive"
    assert all(m.verdict == "Inconclusive" for m in run.metrics)
    assert "5 canary requests, fewer than minRequests 20" in run.metrics[0].message


def test_no_data_at_all_is_inconclusive():
    assert _run(FakeMetrics(lambda promql: None)).verdict == "Inconclusive"


def test_unreachable_prometheus_is_an_error_and_is_asked_once():
    provider = cluster()
    provider.answer = lambda promql: MetricsError("http://prometheus unreachable: ConnectionError", unreachable=True)
    run = _run(provider)
    assert run.verdict == "Error" and all(m.verdict == "Error" for m in run.metrics)
    assert "unreachable" in run.metrics[0].message
    assert len(provider.queries) == 1  # no point sending the other queries to a server that is down


def test_a_refused_query_does_not_stop_the_others():
    run = _run(cluster(fail="time_to_first_token"))
    verdicts = {m.name: m.verdict for m in run.metrics}
    assert verdicts["ttft-p95"] == "Error" and verdicts["error-ratio"] == "Pass"
    assert run.verdict == "Error"


def test_user_query_and_cost_report():
    metrics = [AnalysisMetric(name="gpu-util", query='avg(DCGM_FI_DEV_GPU_UTIL{rev="{{revision}}"})', min=0.2),
               AnalysisMetric(name="cost", builtin="costPer1kTokens")]
    provider = cluster()
    base = provider.answer
    provider.answer = lambda promql: 0.65 if "DCGM" in promql else base(promql)
    run = _run(provider, metrics=metrics)
    assert run.verdict == "Pass"
    assert 'avg(DCGM_FI_DEV_GPU_UTIL{rev="new"})' in provider.queries
    cost = next(m for m in run.metrics if m.name == "cost")
    # 3.0 per GPU-hour x 2 GPUs x 60 s = 0.1; per 1,000 of 120,000 tokens: 0.1 / 120
    assert cost.value == pytest.approx(0.1 / 120)


def test_output_length_drift():
    def buckets(shift):
        return [Sample({"le": le}, v) for le, v in (("16", 100 - shift), ("64", 400 - shift), ("256", 500), ("+Inf", 500))]
    provider = cluster()
    base = provider.answer
    provider.answer = lambda p: (buckets(0) if "old" in p else buckets(90)) if "generation_tokens_bucket" in p else base(p)
    run = _run(provider, metrics=[AnalysisMetric(name="drift", builtin="outputLengthDrift", max=0.05)])
    (drift,) = run.metrics
    assert drift.verdict == "Fail" and drift.value > 0.05


def test_queries_are_only_those_the_metrics_need():
    keys = set(queries(default_metrics(Slo()), CTX))
    assert "canary.ttft" not in keys and "canary.p99" in keys and "stable.errors" in keys


REPETITIONS = [
    # (canary repetitions, stable repetitions, of 2000 requests each, verdict): vLLM's finished_reason="repetition"
    (0, 0, "Pass"),  # no request asked for repetition_detection: nothing to tell the revisions apart
    (12, 10, "Pass"),  # 0.6% vs 0.5%: no evidence the canary repeats itself more
    (60, 10, "Fail"),  # 3% vs 0.5%: it does (z = 6.0)
]


@pytest.mark.parametrize("canary_repetitions,stable_repetitions,verdict", REPETITIONS)
def test_repetition_against_stable_is_a_quality_signal(canary_repetitions, stable_repetitions, verdict):
    provider = cluster(canary_total=2000, stable_total=2000)
    base = provider.answer
    provider.answer = lambda p: ((canary_repetitions if 'llmops_dev_revision="new"' in p else stable_repetitions)
                                 if 'finished_reason="repetition"' in p else base(p))
    run = _run(provider, metrics=[AnalysisMetric(name="repetition", builtin="repetitionRatioVsStable")])
    (metric,) = run.metrics
    assert (metric.verdict, metric.min, metric.max) == (verdict, 0.05, None)  # the z-test's p-value, as for errors
    assert f"canary {canary_repetitions / 2000:.4f} vs stable {stable_repetitions / 2000:.4f}" in metric.message
    repetition_queries = [p for p in provider.queries if 'finished_reason="repetition"' in p]
    assert len(repetition_queries) == 2 and not any('finished_reason="error"' in p for p in repetition_queries)


def test_repetitions_are_not_queried_unless_asked_for():
    assert not any("repetition" in promql for promql in queries(default_metrics(Slo()), CTX).values())


def test_repetitions_are_counted_against_vllms_finished_requests_with_istio_as_the_error_source():
    ctx = Context(canary=SCOPE, stable=q.Scope("ns", "chat", "old"), window_seconds=60, burn_long_seconds=600, error_source="istio")
    wanted = queries([AnalysisMetric(name="repetition", builtin="repetitionRatioVsStable")], ctx)
    assert wanted["canary.repetitions"] == q.repetitions(SCOPE, 60) and wanted["canary.finished"] == q.requests(SCOPE, 60)
    assert "istio_requests_total" in wanted["canary.requests"]  # minRequests still counts what the router saw
