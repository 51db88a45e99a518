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


# ------------------------------------------------------------------- low traffic: evidence on counts (issue 16)

scipy_stats = pytest.importorskip("scipy.stats")  # a test dependency only: the operator does the sums itself


@pytest.mark.parametrize("k,n,p", [(0, 10, 0.1), (1, 40, 0.001), (1, 500, 0.001), (30, 1000, 0.001), (3, 10_000, 0.001),
                                   (50, 100, 0.5), (999, 1000, 0.99), (12, 1_000_000, 0.00001), (5000, 1_000_000, 0.005)])
def test_binomial_tails_match_scipy(k, n, p):
    assert a.binomial_sf(k, n, p) == pytest.approx(scipy_stats.binom.sf(k - 1, n, p), rel=1e-7, abs=1e-15)
    assert a.binomial_cdf(k, n, p) == pytest.approx(scipy_stats.binom.cdf(k, n, p), rel=1e-7, abs=1e-15)


@pytest.mark.parametrize("k,n", [(0, 1), (0, 3000), (1, 40), (1, 500), (2, 100), (30, 1000), (7, 7), (499, 1000)])
@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.99])
def test_clopper_pearson_bounds_match_the_beta_quantiles(k, n, confidence):
    # The one-sided bounds are the Beta quantiles: lower = B^-1(1 - c; k, n - k + 1), upper = B^-1(c; k + 1, n - k).
    lower, upper = a.clopper_pearson(k, n, confidence)
    assert lower == (pytest.approx(scipy_stats.beta.ppf(1 - confidence, k, n - k + 1), rel=1e-7) if k else 0.0)
    assert upper == (pytest.approx(scipy_stats.beta.ppf(confidence, k + 1, n - k), rel=1e-7) if k < n else 1.0)


REQUESTS_NEEDED = [
    # (availability %, confidence, errors, requests a pass needs): the smallest n with P(X <= errors | n, budget) < 1 - c
    (99.9, 0.95, 0, 2995),  # ln(0.05) / ln(0.999) = 2994.2; the rule of three says 3 / 0.001 = 3000
    (99.0, 0.95, 0, 299),  # ln(0.05) / ln(0.99) = 298.1; 3 / 0.01 = 300
    (99.9, 0.99, 0, 4603),  # ln(0.01) / ln(0.999) = 4602.9 (the "rule of 4.6" at 99%)
    (99.5, 0.95, 0, 598),
    (99.9, 0.95, 1, 4742),  # one error already seen: about 4.74 / budget
    (99.9, 0.95, 3, 7752),
    (99.5, 0.95, 1, 947),
    (99.0, 0.99, 0, 459),
    (99.0, 0.95, 1, 473),
]


@pytest.mark.parametrize("availability,confidence,errors,needed", REQUESTS_NEEDED)
def test_requests_a_verdict_needs(availability, confidence, errors, needed):
    budget = a.error_budget(availability)
    assert a.requests_needed(budget, confidence, errors) == needed
    # ... checked against scipy: the upper bound falls below the budget at `needed` requests, not one fewer.
    assert scipy_stats.binomtest(errors, needed, budget, alternative="less").pvalue < 1 - confidence
    assert scipy_stats.binomtest(errors, needed - 1, budget, alternative="less").pvalue >= 1 - confidence
    if errors == 0:
        assert needed == pytest.approx(-math.log(1 - confidence) / budget, rel=0.01)  # the rule of three: -ln(0.05) = 3.0


def test_requests_a_burn_rate_verdict_needs():
    # burnRate's threshold is the factor times the budget: 14.4 x 0.1% = 1.44% at 99.9% (docs/rollouts.md's table).
    assert [a.requests_needed(14.4 * a.error_budget(t)) for t in (99.9, 99.5, 99.0)] == [207, 41, 20]


LOW_TRAFFIC = [
    # (errors, requests, verdict) against a 99.9% target's 0.1% budget at 95%, with the exact test's p-values
    (1, 500, "Inconclusive"),  # the example: 0.2% observed, but P(X >= 1 | 500, 0.1%) = 39%
    (1, 999, "Inconclusive"),  # P(X >= 1) = 63%: a single error among fewer than 1,000 is no evidence ...
    (1, 52, "Inconclusive"),  # ... down to 52 requests (P = 5.07%) ...
    (1, 51, "Fail"),  # ... but at 51 or fewer, one error is itself improbable at the budget: P = 4.97% < 5%
    (1, 40, "Fail"),  # P(X >= 1 | 40, 0.1%) = 1 - 0.999^40 = 3.9%
    (2, 100, "Fail"),  # P(X >= 2 | 100, 0.1%) = 0.46%
    (30, 1000, "Fail"),  # a clear breach: 3% observed, the lower bound 2.17%
    (0, 100, "Inconclusive"),  # no errors, but far too few requests to show 99.9%
    (0, 2994, "Inconclusive"),  # P(X = 0 | 2994, 0.1%) = 5.001%
    (0, 2995, "Pass"),  # 4.996%: the requests-needed figure
    (0, 5000, "Pass"),  # the upper bound 0.0599%
    (3, 10_000, "Pass"),  # 0.03% observed, P(X <= 3 | 10000, 0.1%) = 1.0%
    (8, 5000, "Inconclusive"),  # 0.16% observed on 5000: P(X >= 8) = 13%, P(X <= 8) = 93%
]


@pytest.mark.parametrize("errors,requests,verdict", LOW_TRAFFIC)
def test_the_low_traffic_rule_worked_examples(errors, requests, verdict):
    """The strict rule (requireEvidenceToPass): a verdict either way needs evidence at 95%."""
    evidence = a.ratio_evidence(errors, requests, a.error_budget(99.9), 0.95, strict=True)
    assert evidence.verdict == verdict
    # The default: the same fails, but a ratio within the budget passes without that evidence.
    default = a.ratio_evidence(errors, requests, a.error_budget(99.9), 0.95).verdict
    assert default == (verdict if verdict != "Inconclusive" or errors > 0.001 * requests else "Pass")
    # The same verdicts from scipy's exact binomial test, one-sided each way.
    breach = scipy_stats.binomtest(errors, requests, 0.001, alternative="greater").pvalue < 0.05
    within = scipy_stats.binomtest(errors, requests, 0.001, alternative="less").pvalue < 0.05
    assert verdict == ("Fail" if breach else "Pass" if within else "Inconclusive")
    assert (evidence.lower > 0.001) == breach and (evidence.upper < 0.001) == within


def test_the_evidence_sentence():
    budget = "the 0.1% budget"
    assert a.ratio_evidence(1, 500, 0.001).describe(budget) == (
        "1 error in 500 requests: not evidence of a breach of the 0.1% budget at 95%, nor of staying within it "
        "(a verdict needs >= 2995 requests with no errors, >= 4742 with 1)")
    assert a.ratio_evidence(0, 100, 0.001, strict=True).describe(budget) == (
        "0 errors in 100 requests: not evidence of a breach of the 0.1% budget at 95%, nor of staying within it "
        "(a verdict needs >= 2995 requests with no errors)")
    assert a.ratio_evidence(0, 100, 0.001).describe(budget) == (
        "0 errors in 100 requests: within the 0.1% budget, no evidence of a breach at 95% (0% observed; evidence of "
        "staying within would need >= 2995 requests with no errors)")
    assert a.ratio_evidence(30, 1000, 0.001).describe(budget) == (
        "30 errors in 1000 requests: evidence of a breach of the 0.1% budget at 95% (the error ratio is at least 2.17%)")
    assert a.ratio_evidence(0, 5000, 0.001).describe(budget) == (
        "0 errors in 5000 requests: within the 0.1% budget at 95% (the error ratio is at most 0.0599%)")
    assert a.ratio_evidence(1, 500, 0.001, confidence=0.99).describe(budget).endswith(
        "at 99%, nor of staying within it (a verdict needs >= 4603 requests with no errors, >= 6636 with 1)")


def test_prometheus_counts_are_rounded_to_whole_requests():
    # increase() extrapolates to the window's edges: one error over a 10 s window scraped every second reads ~1.1.
    assert a.whole(1.11) == 1 and a.whole(0.4) == 0 and a.whole(2.5) == 3 and a.whole(-0.0) == 0
    assert a.ratio_evidence(1.11, 111.1, 0.001) == a.ratio_evidence(1, 111, 0.001)


def test_evidence_rejects_what_it_cannot_judge():
    for bad in ({"threshold": 0.0}, {"threshold": 1.0}, {"requests": 0.2}, {"confidence": 0.4}, {"confidence": 1.0}):
        args = {"errors": 0, "requests": 100, "threshold": 0.001, "confidence": 0.95, **bad}
        with pytest.raises(ValueError):
            a.ratio_evidence(**args)


@pytest.mark.parametrize("x1,n1,x2,n2", [(1, 100, 0, 400), (2, 1000, 3, 1000), (3, 50, 0, 2000), (0, 10, 5, 10), (4, 4, 0, 9)])
def test_fisher_exact_test_matches_scipy(x1, n1, x2, n2):
    expected = scipy_stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]], alternative="greater").pvalue
    assert a.fisher_exact_greater(x1, n1, x2, n2) == pytest.approx(expected, rel=1e-9)


def test_a_handful_of_errors_is_compared_exactly_not_by_the_normal_approximation():
    # One error in 100 canary requests, none in 400 on stable: the z-test says z = 2.00, p = 0.0226 (a "significant"
    # regression), but with 0.2 errors expected on the canary side the normal approximation does not hold; exactly,
    # the one error landed on the side holding a fifth of the requests: p = 0.2.
    assert a.two_proportion_z_test(1, 100, 0, 400).p_value == pytest.approx(0.0226, abs=1e-4)
    exact = a.compare_proportions(1, 100, 0, 400)
    assert exact.p_value == pytest.approx(0.2) and exact.method == "Fisher's exact test"
    large = a.compare_proportions(30, 1000, 10, 1000)  # every expected cell >= 5: the z-test, as before
    assert large.method == "z=3.19" and large.p_value == pytest.approx(0.000701, abs=1e-5)


SLO_999 = Slo(availability=99.9)


def _quiet(canary_errors, canary_total, confidence=0.95, metrics=None, strict=False):
    analysis = Analysis(metrics=metrics or [], min_requests=20, confidence=confidence, require_evidence_to_pass=strict)
    run = measure(cluster(canary_errors=canary_errors, canary_total=canary_total, stable_total=4000), analysis, SLO_999, CTX)
    return run, {m.name: m for m in run.metrics}


def test_one_error_on_a_quiet_canary_holds_instead_of_aborting():
    # 1 error in 500 canary requests at a 99.9% target: the observed 0.2% is twice the budget (a plain threshold
    # aborts), but it is no evidence of a breach; nor is 500 requests enough to show the target is met.
    run, by_name = _quiet(1, 500)
    assert run.verdict == "Inconclusive"
    ratio = by_name["error-ratio"]
    assert (ratio.verdict, ratio.value, ratio.max) == ("Inconclusive", 0.002, pytest.approx(0.001))
    assert ratio.message == ("0.002 (want <= 0.001): 1 error in 500 requests: not evidence of a breach of the 0.1% budget "
                             "at 95%, nor of staying within it (a verdict needs >= 2995 requests with no errors, >= 4742 with 1)")
    burn = by_name["burn-rate"]  # 0.2% burns at 2x: confidently under 14.4x (1.44%) on 500 requests
    assert burn.verdict == "Pass" and "against a 14.4x burn (1.44% errors) at 95%, over 600s 1 error in 500 requests: within it" in burn.message
    assert by_name["errors-vs-stable"].verdict == "Pass" and "Fisher's exact test" in by_name["errors-vs-stable"].message


def test_no_errors_on_too_few_requests_passes_only_by_default():
    """By default no error on minRequests or more passes (the canary steps stay usable on a quiet service); with
    requireEvidenceToPass it holds until the counts show the target is met."""
    assert _quiet(0, 100)[0].verdict == "Pass"
    run, by_name = _quiet(0, 100, strict=True)
    assert run.verdict == "Inconclusive" and by_name["error-ratio"].verdict == by_name["burn-rate"].verdict == "Inconclusive"
    assert "a verdict needs >= 2995 requests with no errors" in by_name["error-ratio"].message
    assert "a verdict needs >= 207 requests with no errors" in by_name["burn-rate"].message  # 14.4 x 0.1%: ln(0.05)/ln(0.9856)
    assert _quiet(0, 5000, strict=True)[0].verdict == "Pass"


def test_a_clear_breach_still_fails_on_few_requests():
    run, by_name = _quiet(30, 1000)
    assert run.verdict == "Fail" and by_name["error-ratio"].verdict == by_name["burn-rate"].verdict == "Fail"
    assert "30 errors in 1000 requests: evidence of a breach of the 0.1% budget at 95% (the error ratio is at least 2.17%)" in (
        by_name["error-ratio"].message)


def test_confidence_is_a_field_of_the_analysis():
    assert Analysis().confidence == 0.95
    _, by_name = _quiet(1, 40, confidence=0.99)  # evidence at 95% (P = 3.9%), not at 99%
    assert by_name["error-ratio"].verdict == "Inconclusive" and "at 99%" in by_name["error-ratio"].message
    assert _quiet(1, 40)[1]["error-ratio"].verdict == "Fail"
    for bad in (0.4, 1.0, 95):
        with pytest.raises(ValueError):
            Analysis(confidence=bad)


def test_a_written_bound_is_judged_on_counts_too_and_a_zero_bound_plainly():
    # A user's max on errorRatio is a bound like the budget, named as a bound.
    _, by_name = _quiet(0, 100, metrics=[AnalysisMetric(name="errors", builtin="errorRatio", max=0.05)])
    assert by_name["errors"].verdict == "Pass" and "within the 5% bound at 95%" in by_name["errors"].message
    # max: 0 means "no error at all": no statistics can show a ratio below 0, so it is the plain comparison.
    _, by_name = _quiet(0, 100, metrics=[AnalysisMetric(name="errors", builtin="errorRatio", max=0)])
    assert by_name["errors"].verdict == "Pass" and by_name["errors"].message == "0 (want <= 0): errors / finished requests"


# --------------------------------------------------- latency histograms canary against stable, prompt drift (issue 16)

@pytest.mark.parametrize("canary,stable", [
    ([0, 10, 30, 60], [40, 40, 15, 5]),
    ([3, 5, 9, 6], [10, 12, 8, 4]),
    ([25, 25, 25, 25], [50, 50, 50, 50]),
    ([1, 0, 0, 0], [0, 0, 0, 1]),
    ([0, 0, 7, 0], [0, 3, 4, 0]),
])
def test_the_binned_rank_test_matches_scipys_mann_whitney(canary, stable):
    x = [i for i, n in enumerate(canary) for _ in range(n)]
    y = [i for i, n in enumerate(stable) for _ in range(n)]
    expected = scipy_stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic", use_continuity=True)
    got = a.rank_test_binned(canary, stable)
    assert got.a == pytest.approx(expected.statistic / (len(x) * len(y)))
    assert got.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def _latency_buckets(counts):
    """Cumulative Prometheus buckets of a TTFT histogram holding ``counts`` per bucket."""
    les, out, total = ("0.05", "0.1", "0.25", "0.5", "+Inf"), [], 0.0
    for le, n in zip(les, counts, strict=True):
        total += n
        out.append(Sample({"le": le}, total))
    return out


@pytest.mark.parametrize("canary,stable,verdict", [
    ([200, 500, 250, 50, 0], [200, 500, 250, 50, 0], "Pass"),   # the same: A = 0.5
    ([50, 300, 450, 200, 0], [200, 500, 250, 50, 0], "Fail"),   # shifted a bucket slower: A = 0.72, p ~ 0
    ([195, 495, 255, 55, 0], [200, 500, 250, 50, 0], "Pass"),   # a whisker slower: significant at n = 1,000? A = 0.51
    ([0, 1, 2, 0, 0], [3, 0, 0, 0, 0], "Inconclusive"),        # A = 1 on 3 against 3: too few for the approximation
])
def test_time_to_first_token_against_stable_is_a_rank_test_on_the_histograms(canary, stable, verdict):
    provider = cluster()
    base = provider.answer
    provider.answer = lambda p: (_latency_buckets(canary if 'revision="new"' in p else stable)
                                 if "time_to_first_token_seconds_bucket" in p else base(p))
    run = _run(provider, metrics=[AnalysisMetric(name="ttft-vs-stable", builtin="timeToFirstTokenVsStable")])
    (ttft,) = run.metrics
    assert ttft.verdict == verdict, ttft
    assert "Mann-Whitney" in ttft.message or verdict == "Inconclusive"


def test_a_large_effect_on_a_few_requests_is_not_yet_a_regression():
    """A = 0.75 on 20 against 20 requests passes the effect-size bound but not the test at 0.05: Inconclusive."""
    provider = cluster()
    base = provider.answer
    provider.answer = lambda p: (_latency_buckets([4, 4, 6, 6, 0] if 'revision="new"' in p else [6, 6, 4, 4, 0])
                                 if "inter_token_latency_seconds_bucket" in p else base(p))
    run = _run(provider, metrics=[AnalysisMetric(name="itl-vs-stable", builtin="interTokenLatencyVsStable")], min_requests=10)
    (itl,) = run.metrics
    assert itl.value > 0.56 and itl.verdict == "Inconclusive" and "not significant at 0.05" in itl.message, itl


def test_prompt_length_drift_tells_a_change_of_traffic_from_a_change_of_model():
    """The same output-length drift with and without a prompt-length drift: the first is the traffic mix (the canary
    gets longer prompts), the second the model."""
    def buckets(shift):
        return [Sample({"le": le}, v) for le, v in (("16", 100 - shift), ("64", 400 - shift), ("256", 500), ("+Inf", 500))]
    metrics = [AnalysisMetric(name="outputs", builtin="outputLengthDrift"), AnalysisMetric(name="prompts", builtin="promptLengthDrift")]
    for prompts_shift, expected in ((90, True), (0, False)):
        provider = cluster()
        base = provider.answer

        def answer(p, prompts_shift=prompts_shift, base=base):
            if "generation_tokens_bucket" in p:
                return buckets(0) if "old" in p else buckets(90)
            if "prompt_tokens_bucket" in p:
                return buckets(0) if "old" in p else buckets(prompts_shift)
            return base(p)
        provider.answer = answer
        outputs, prompts = _run(provider, metrics=metrics).metrics
        assert outputs.value > 0.1 and outputs.verdict == "Fail"
        assert (prompts.value > 0.1) is expected and prompts.verdict == "Pass"  # reported; judged only with a bound


def test_an_unbounded_metric_with_no_data_never_holds_the_run():
    """Review: promptLengthDrift is reported, not judged; its no data (vLLM sizes the token buckets by
    max-model-len, so two revisions can differ) made every run Inconclusive and paused the rollout."""
    run = _run(cluster(), metrics=[AnalysisMetric(name="errors", builtin="errorRatio", max=0.01),
                                   AnalysisMetric(name="prompts", builtin="promptLengthDrift")])
    errors, prompts = run.metrics
    assert prompts.verdict == "Inconclusive" and errors.verdict == "Pass" and run.verdict == "Pass"


def test_inter_token_latency_counts_each_request_once():
    """vLLM observes inter-token latency once per decode step: 2,000 observations from 20 requests a side are
    20 independent samples, not 2,000. The same shift is significant with 1,000 requests, not with 20."""
    shifted, base_counts = [200, 400, 600, 800, 0], [400, 600, 600, 400, 0]
    for requests, verdict in ((20.0, "Inconclusive"), (1000.0, "Fail")):
        provider = cluster(canary_total=requests, stable_total=requests)
        base = provider.answer

        def answer(p, base=base):
            if "inter_token_latency_seconds_bucket" in p:
                return _latency_buckets(shifted if 'revision="new"' in p else base_counts)
            return base(p)
        provider.answer = answer
        run = _run(provider, metrics=[AnalysisMetric(name="itl", builtin="interTokenLatencyVsStable")], min_requests=10)
        (itl,) = run.metrics
        assert itl.value > 0.56 and itl.verdict == verdict, (requests, itl)
        assert "decode steps (the test on the requests' effective number)" in itl.message


def test_the_guard_looks_back_no_further_than_this_attempt():
    """Review: a retry within the window of the abort that ended the last attempt was judged on that attempt's
    errors (the same revision label) and aborted at once."""
    from llm_operator._api import FailFast
    from llm_operator._measure import guard

    provider = cluster(canary_errors=20, canary_total=40)
    found = guard(provider, FailFast(), SLO, CTX, since_seconds=12.4)
    assert all("[12s]" in promql for promql in provider.queries) and found.breach and "over 12s" in found.breach
    provider = cluster(canary_errors=20, canary_total=40)
    assert guard(provider, FailFast(), SLO, CTX, since_seconds=0.3).breach is None and not provider.queries


def test_a_single_error_never_fails_a_comparison_with_stable():
    """Issue 16, low traffic: with one error in all, Fisher's exact p-value is the canary's share of the requests, so
    one error on a canary holding 4.75% of them (the default first step is 5%) against an error-free stable is
    p = 0.0475: alone, it would abort a healthy canary by chance within a few analysis runs. The comparison holds
    (Inconclusive) and says why; a second error fails it (one fewer is still evidence). The SLO check on the same
    counts is not under this rule: 1 error in 40 requests is evidence of a breach of a 99.9% budget at 95% (P = 3.9%),
    and on a quiet canary it is what aborts a real regression."""
    vs_stable = [AnalysisMetric(name="errors-vs-stable", builtin="errorRatioVsStable")]
    for errors, verdict in ((1, "Inconclusive"), (2, "Fail")):
        run = measure(cluster(canary_errors=errors, canary_total=95, stable_total=1905), Analysis(metrics=vs_stable), SLO_999, CTX)
        (compared,) = run.metrics
        assert (run.verdict, compared.verdict) == (verdict, verdict), (errors, compared.message)
        if verdict == "Inconclusive":
            assert compared.message.endswith("a single error never fails a comparison with stable"), compared.message
    # Fisher's p for the one error is the canary's share (0.0475); the rule, not the test, holds it.
    assert a.compare_proportions(1, 95, 0, 1905).p_value == pytest.approx(95 / 2000)
    assert _quiet(1, 40)[1]["error-ratio"].verdict == "Fail"  # the SLO check: not under the rule

def _engines(held, requests=0.0, fail=None):
    """Prometheus as the guard sees a canary ('new'): ``requests`` finished (none failing), and ``held`` the answer
    of the stall query: per engine that held running requests throughout the window with no token generated, the
    least running count (an empty list: none)."""
    from llm_operator._metrics import Sample

    def answer(promql):
        if fail and fail in promql:
            return MetricsError("connection refused")
        if "request_success_total" in promql:
            return 0.0 if 'finished_reason="error"' in promql else requests
        if "num_requests_running" in promql:
            return [Sample({"pod": f"new-{i}"}, float(h)) for i, h in enumerate(held)]
        return None
    return FakeMetrics(answer)


@pytest.mark.parametrize("held,breach", [
    ([3], "fail fast: 1 engine of new held 3 running requests and generated no token in 2m: it stopped answering"),
    ([1.0], "fail fast: 1 engine of new held 1 running request and generated no token in 2m: it stopped answering"),
    ([2, 4], "fail fast: 2 engines of new held 6 running requests and generated no token in 2m: they stopped answering"),
    ([], None),  # no engine stalled: busy (tokens flow), idle (nothing held throughout), or no data
])
def test_the_guard_aborts_an_engine_that_holds_requests_and_generates_no_token(held, breach):
    """vLLM's /health reports only an engine that errored: a hung engine core keeps its pods Ready while it answers
    nothing. Its running gauge (the last scheduler stats) stays at 1 or more and its token counter stops: over
    failFast.stallWindow (2m by default) that is a hard breach, matched per engine (one series per pod and engine),
    so a hung pod shows beside healthy ones that finish requests (40 in the window here)."""
    from llm_operator._api import FailFast
    from llm_operator._measure import guard

    provider = _engines(held, requests=40)
    assert guard(provider, FailFast(), SLO, CTX).breach == breach
    (stall_query,) = [p for p in provider.queries if "request_success_total" not in p]
    selector = '{namespace="ns",llmops_dev_deployment="chat",llmops_dev_revision="new"}'
    assert stall_query == (f"(min_over_time(vllm:num_requests_running{selector}[120s]) >= 1) and "
                           f"(increase(vllm:generation_tokens_total{selector}[120s]) == 0) and "
                           f"(vllm:num_requests_running{selector} offset 120s)")
    assert len(provider.queries) == 3  # requests, errors, the stall


def test_the_stall_is_judged_only_once_the_attempt_lasted_the_window():
    """A window shortened to the attempt's age would take a long prompt's prefill for a hang: until the attempt has
    lasted the stall window, nothing is asked."""
    from llm_operator._api import FailFast
    from llm_operator._measure import guard

    provider = _engines([2])
    assert guard(provider, FailFast(), SLO, CTX, since_seconds=119.0).breach is None
    assert not [p for p in provider.queries if "num_requests_running" in p]
    provider = _engines([2])
    assert guard(provider, FailFast(), SLO, CTX, since_seconds=120.0).breach is not None


def test_a_failed_stall_query_is_no_breach():
    from llm_operator._api import FailFast
    from llm_operator._measure import guard

    provider = _engines([3], fail="num_requests_running")
    assert guard(provider, FailFast(), SLO, CTX).breach is None and any("num_requests_running" in p for p in provider.queries)


def test_the_error_breach_is_reported_before_the_stall():
    """A breach in the errors ends the check: the stall is not asked."""
    import dataclasses

    from llm_operator._api import FailFast
    from llm_operator._measure import guard

    provider = _engines([3])
    provider.answer = lambda p, base=provider.answer: (20.0 if "5.." in p else 40.0) if "istio_requests_total" in p else base(p)
    found = guard(provider, FailFast(), SLO, dataclasses.replace(CTX, error_source="istio"))
    assert found.breach and found.breach.startswith("fail fast: 20 errors in 40 requests") and len(provider.queries) == 2


def test_the_stall_window_spans_two_guard_intervals():
    from pydantic import ValidationError

    from llm_operator._api import FailFast
    from llm_operator._measure import stall_window

    assert FailFast().stall_window is None
    assert FailFast.model_validate({"interval": "1s", "window": "2s", "stallWindow": "2s"}).stall_window == "2s"
    with pytest.raises(ValidationError, match="failFast.stallWindow 9s must be at least two intervals"):
        FailFast.model_validate({"interval": "5s", "stallWindow": "9s"})
    # Not written, the default stands below two long intervals as two intervals: a failFast written before
    # stallWindow existed stays valid.
    long = FailFast.model_validate({"interval": "90s", "window": "3m"})
    assert stall_window(long) == 180 and stall_window(FailFast()) == 120
    # ... through the re-validation of its wire form too (a rollout's target is validated from the deployment's
    # spec as written out): a default that was written out there broke every pass of such a deployment.
    assert FailFast.model_validate(long.to_wire()).stall_window is None
