"""One analysis run: read the numbers a run needs from the metrics provider, then judge every metric.

:func:`collect` does the I/O (one query per number, each failure recorded rather than raised), and
:func:`evaluate` is pure: it turns those numbers into per-metric verdicts with the maths in ``_analysis``.
A run is never a pass on missing evidence: no data, or fewer canary requests than ``minRequests``, is
Inconclusive; a failed query is an Error. The SLO checks on counts (``errorRatio``, ``burnRate``) also need the
counts to show it: an exact binomial test at ``analysis.confidence`` (:func:`_analysis.ratio_evidence`) fails
only on evidence of a breach, passes only on evidence of staying within the bound, and otherwise is
Inconclusive, saying how many requests a verdict needs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from . import _analysis as a
from . import _promql as q
from ._api import Analysis, AnalysisMetric, FailFast, Slo, parse_duration
from ._metrics import MetricsError, MetricsProvider, scalar

_DEFAULT_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "burnRate": (None, 14.4),  # the SRE Workbook's fast-burn factor
    "errorRatioVsStable": (0.05, None),  # the test's p-value must stay above the significance level
    "repetitionRatioVsStable": (0.05, None),  # the same test on outputs vLLM cut off as repetitive
    "latencyVsStable": (None, 1.5),  # canary p99 at most 1.5x stable's
    "outputLengthDrift": (None, 0.1),  # KL divergence in nats
    "timeToFirstTokenVsStable": (None, 0.56),  # Vargha-Delaney A: a "small" effect, and only when significant
    "interTokenLatencyVsStable": (None, 0.56),
}

#: The canary-against-stable rank tests on latency histograms: builtin -> (vLLM histogram, what it measures,
#: whether vLLM observes it once per request; inter-token latency is observed per decode step).
_RANK_TESTS = {
    "timeToFirstTokenVsStable": ("vllm:time_to_first_token_seconds", "time to first token", True),
    "interTokenLatencyVsStable": ("vllm:inter_token_latency_seconds", "inter-token latency", False),
}
_RANK_ALPHA = 0.05  # the rank test's significance level: a large effect by chance is not a regression


@dataclass(frozen=True)
class Context:
    """What a run measures: the canary and stable revisions, the window, and cost inputs."""

    canary: q.Scope
    stable: q.Scope
    window_seconds: float  # the recent window each run looks at (the analysis interval, at least 30 s)
    burn_long_seconds: float  # the long burn-rate window (the analysis step's duration)

    @property
    def burn(self) -> a.BurnWindows:
        return a.burn_windows(self.burn_long_seconds, min_short_seconds=self.window_seconds)
    canary_gpus: float = 0.0  # GPUs the canary holds (replicas x GPUs per replica)
    gpu_hour_price: float | None = None
    error_source: str = "vllm"  # where requests and errors are counted: "vllm" or "istio"


@dataclass(frozen=True)
class MetricResult:
    """One metric's outcome; ``value`` in the metric's own unit (ratio, seconds, nats, currency)."""

    name: str
    value: float | None
    min: float | None
    max: float | None
    verdict: a.Verdict
    message: str

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "verdict": self.verdict, "message": self.message}
        for key in ("value", "min", "max"):
            if getattr(self, key) is not None:
                out[key] = round(float(getattr(self, key)), 6)
        return out


@dataclass(frozen=True)
class Run:
    """A whole run: its verdict (see :func:`_analysis.overall`) and every metric's result."""

    verdict: a.Verdict
    requests: float | None
    metrics: tuple[MetricResult, ...] = field(default_factory=tuple)


def default_metrics(slo: Slo) -> list[AnalysisMetric]:
    """The built-in checks used when an analysis lists no metrics: error ratio within the budget, no fast
    burn, no worse than stable on errors (z-test) and latency, and the latency SLOs that are set."""
    metrics = [
        AnalysisMetric(name="error-ratio", builtin="errorRatio", max=a.error_budget(slo.availability)),
        AnalysisMetric(name="burn-rate", builtin="burnRate"),
        AnalysisMetric(name="errors-vs-stable", builtin="errorRatioVsStable"),
        AnalysisMetric(name="latency-vs-stable", builtin="latencyVsStable"),
    ]
    if slo.latency_p99_seconds is not None:
        metrics.append(AnalysisMetric(name="latency-p99", builtin="latencyP99", max=slo.latency_p99_seconds))
    if slo.time_to_first_token_p95_seconds is not None:
        metrics.append(AnalysisMetric(name="ttft-p95", builtin="timeToFirstTokenP95", max=slo.time_to_first_token_p95_seconds))
    return metrics


# --------------------------------------------------------------------------------------- collect

Raw = dict[str, Any]  # query key -> list[Sample] or MetricsError


def queries(metrics: list[AnalysisMetric], ctx: Context) -> dict[str, str]:
    """Every query the metrics need, keyed by what it measures."""
    c, s, w, src = ctx.canary, ctx.stable, ctx.window_seconds, ctx.error_source
    windows = ctx.burn
    out = {"canary.requests": q.requests(c, w, src), "canary.errors": q.errors(c, w, src)}
    builtins = {m.builtin for m in metrics}
    if "burnRate" in builtins:
        for label, span in (("long", windows.long_seconds), ("short", windows.short_seconds)):
            out[f"canary.requests.{label}"] = q.requests(c, span, src)
            out[f"canary.errors.{label}"] = q.errors(c, span, src)
    if builtins & {"errorRatioVsStable", "repetitionRatioVsStable"}:
        out["stable.requests"] = q.requests(s, w, src)
    if "errorRatioVsStable" in builtins:
        out["stable.errors"] = q.errors(s, w, src)
    if "repetitionRatioVsStable" in builtins:  # vLLM's own label, over vLLM's finished requests (Istio has neither)
        out["canary.repetitions"], out["stable.repetitions"] = q.repetitions(c, w), q.repetitions(s, w)
        if src != "vllm":
            out["canary.finished"], out["stable.finished"] = q.requests(c, w), q.requests(s, w)
    if builtins & {"latencyP99", "latencyVsStable"}:
        out["canary.p99"] = q.latency_p99(c, w)
    if "latencyVsStable" in builtins:
        out["stable.p99"] = q.latency_p99(s, w)
    if "timeToFirstTokenP95" in builtins:
        out["canary.ttft"] = q.ttft_p95(c, w)
    if "interTokenLatencyP95" in builtins:
        out["canary.itl"] = q.itl_p95(c, w)
    if "outputLengthDrift" in builtins:
        out["canary.lengths"], out["stable.lengths"] = q.output_length_buckets(c, w), q.output_length_buckets(s, w)
    if "promptLengthDrift" in builtins:
        out["canary.prompts"], out["stable.prompts"] = q.prompt_length_buckets(c, w), q.prompt_length_buckets(s, w)
    for kind, (histogram, _, per_request) in _RANK_TESTS.items():
        if kind in builtins:
            out[f"canary.{kind}"], out[f"stable.{kind}"] = q.buckets(c, histogram, w), q.buckets(s, histogram, w)
            if not per_request:  # the requests behind the observations, and their lengths (the design effect)
                out[f"canary.{kind}.requests"], out[f"stable.{kind}.requests"] = q.requests(c, w), q.requests(s, w)
                out["canary.lengths"], out["stable.lengths"] = q.output_length_buckets(c, w), q.output_length_buckets(s, w)
    if "costPer1kTokens" in builtins:
        out["canary.tokens"] = q.generated_tokens(c, w)
    for metric in metrics:
        if metric.query is not None:
            out[f"query.{metric.name}"] = q.render_template(
                metric.query, revision=c.revision, stable_revision=s.revision, namespace=c.namespace, window=w)
    return out


def collect(provider: MetricsProvider, wanted: dict[str, str]) -> Raw:
    """Run each query once; a failure is recorded under its key instead of aborting the run. Once the
    backend proves unreachable, the remaining queries get the same error without being sent."""
    raw: Raw = {}
    down: MetricsError | None = None
    for key, promql in wanted.items():
        if down is not None:
            raw[key] = down
            continue
        try:
            raw[key] = provider.query(promql)
        except MetricsError as error:
            raw[key] = error
            down = error if error.unreachable else None
    return raw


# -------------------------------------------------------------------------------------- evaluate


def _num(raw: Raw, key: str) -> float | None:
    value = raw.get(key)
    if isinstance(value, MetricsError):
        raise value
    return scalar(value or [])


def _cumulative(raw: Raw, key: str) -> list[tuple[float, float]]:
    value = raw.get(key)
    if isinstance(value, MetricsError):
        raise value
    return sorted(((float(s.labels.get("le", "inf")), s.value) for s in (value or [])), key=lambda p: p[0])


def _buckets(raw: Raw, key: str) -> list[float]:
    return a.bucket_probabilities(_cumulative(raw, key))


_RANK_MIN = 10  # observations a side needs before the normal approximation of U is used


def _rank(raw: Raw, kind: str) -> a.RankTest | None:
    """The rank test of a ``*VsStable`` latency builtin, or None: fewer than 10 observations on a side (the
    normal approximation of U needs about that many), or the two histograms' buckets differ."""
    canary, stable = _cumulative(raw, f"canary.{kind}"), _cumulative(raw, f"stable.{kind}")
    if not canary or [le for le, _ in canary] != [le for le, _ in stable]:
        return None
    # Whole observations per cumulative bucket first (increase() extrapolates), so the totals are what the test counts.
    counts = [[float(x) for x in a.bucket_counts([(le, a.whole(v)) for le, v in side])] for side in (canary, stable)]
    if min(sum(counts[0]), sum(counts[1])) < _RANK_MIN:
        return None
    effective = None
    if not _RANK_TESTS[kind][2]:
        requests = _num(raw, f"canary.{kind}.requests"), _num(raw, f"stable.{kind}.requests")
        if requests[0] is None or requests[1] is None or min(a.whole(requests[0]), a.whole(requests[1])) < _RANK_MIN:
            return None
        effective = (a.kish_effective_size(a.whole(requests[0]), _cumulative(raw, "canary.lengths")),
                     a.kish_effective_size(a.whole(requests[1]), _cumulative(raw, "stable.lengths")))
    return a.rank_test_binned(counts[0], counts[1], effective)


def _ratio(errors: float | None, total: float | None) -> float | None:
    if total is None or total <= 0:
        return None
    return (errors or 0.0) / total


def _on_counts(metric: AnalysisMetric, raw: Raw, slo: Slo, ctx: Context, high: float, confidence: float,
               strict: bool = False) -> tuple[a.Verdict, str] | None:
    """The verdict and its evidence for ``errorRatio`` and ``burnRate`` judged on their counts against ``high``
    (an error ratio, or a burn-rate factor times the budget), or None when the counts cannot decide it that way
    (another built-in, no requests in a window, or a bound of 0 or of 100% and more, which the plain comparison
    judges: a zero-tolerance bound, or one no ratio can exceed)."""
    if metric.builtin == "errorRatio":
        total = _num(raw, "canary.requests")
        if not 0 < high < 1 or total is None or a.whole(total) <= 0:
            return None
        evidence = a.ratio_evidence(_num(raw, "canary.errors") or 0.0, total, high, confidence, strict=strict)
        budget = math.isclose(high, a.error_budget(slo.availability))
        return evidence.verdict, evidence.describe(f"the {a.percent(high)} {'budget' if budget else 'bound'}")
    if metric.builtin != "burnRate":
        return None
    threshold = high * a.error_budget(slo.availability)
    windows = ctx.burn
    spans = (("long", windows.long_seconds), ("short", windows.short_seconds))
    totals = {label: _num(raw, f"canary.requests.{label}") for label, _ in spans}
    if not 0 < threshold < 1 or any(t is None or a.whole(t) <= 0 for t in totals.values()):
        return None
    found = {label: a.ratio_evidence(_num(raw, f"canary.errors.{label}") or 0.0, totals[label] or 0.0, threshold, confidence,
                                     strict=strict)
             for label, _ in spans}
    # The rule fires when both windows burn faster than the factor: a fail needs evidence of it in both, a pass
    # evidence against it in either.
    verdicts = [e.verdict for e in found.values()]
    verdict: a.Verdict = "Fail" if verdicts == ["Fail", "Fail"] else "Pass" if "Pass" in verdicts else "Inconclusive"
    return verdict, (f"against a {high:g}x burn ({a.percent(threshold)} errors) at {confidence * 100:g}%, "
                     + "; ".join(f"over {q.duration(span)} {found[label].counts()}: {found[label].finding()}" for label, span in spans))


def _builtin_value(metric: AnalysisMetric, raw: Raw, slo: Slo, ctx: Context) -> tuple[float | None, str]:
    """The metric's value and a note (the numbers behind it) for one built-in."""
    kind = metric.builtin
    if kind == "errorRatio":
        ratio = _ratio(_num(raw, "canary.errors"), _num(raw, "canary.requests"))
        return ratio, "errors / finished requests"
    if kind == "burnRate":
        windows = ctx.burn
        long_ratio = _ratio(_num(raw, "canary.errors.long"), _num(raw, "canary.requests.long"))
        short_ratio = _ratio(_num(raw, "canary.errors.short"), _num(raw, "canary.requests.short"))
        if long_ratio is None or short_ratio is None:
            return None, "no requests in a burn-rate window"
        long_burn, short_burn = a.burn_rate(long_ratio, slo.availability), a.burn_rate(short_ratio, slo.availability)
        # Both windows must exceed the factor, so the smaller burn is what the rule compares.
        return min(long_burn, short_burn), (
            f"burn {long_burn:.2f} over {q.duration(windows.long_seconds)}, {short_burn:.2f} over {q.duration(windows.short_seconds)}")
    if kind in ("errorRatioVsStable", "repetitionRatioVsStable"):
        counted = "errors" if kind == "errorRatioVsStable" else "repetitions"
        totals = "finished" if counted == "repetitions" and ctx.error_source != "vllm" else "requests"
        canary_total, stable_total = _num(raw, f"canary.{totals}"), _num(raw, f"stable.{totals}")
        if not canary_total or not stable_total:
            return None, "no requests on one side"
        canary_count, stable_count = _num(raw, f"canary.{counted}") or 0.0, _num(raw, f"stable.{counted}") or 0.0
        test = a.compare_proportions(min(canary_count, canary_total), canary_total, min(stable_count, stable_total), stable_total)
        return test.p_value, f"{counted}: canary {test.canary_ratio:.4f} vs stable {test.stable_ratio:.4f}, {test.method}"
    if kind == "latencyP99":
        return _num(raw, "canary.p99"), "p99 end-to-end latency, seconds"
    if kind == "latencyVsStable":
        canary, stable = _num(raw, "canary.p99"), _num(raw, "stable.p99")
        if canary is None or not stable:
            return None, "no latency on one side"
        return canary / stable, f"canary p99 {canary:.3f}s vs stable {stable:.3f}s"
    if kind == "timeToFirstTokenP95":
        return _num(raw, "canary.ttft"), "p95 time to first token, seconds"
    if kind == "interTokenLatencyP95":
        return _num(raw, "canary.itl"), "p95 inter-token latency, seconds"
    if kind == "outputLengthDrift":
        canary_lengths, stable_lengths = _buckets(raw, "canary.lengths"), _buckets(raw, "stable.lengths")
        if not canary_lengths or not stable_lengths or len(canary_lengths) != len(stable_lengths):
            return None, "no output-length histogram on one side"
        return a.kl_divergence(canary_lengths, stable_lengths), "KL(canary || stable) of generated tokens per request, nats"
    if kind == "promptLengthDrift":
        canary_prompts, stable_prompts = _buckets(raw, "canary.prompts"), _buckets(raw, "stable.prompts")
        if not canary_prompts or not stable_prompts or len(canary_prompts) != len(stable_prompts):
            return None, "no prompt-length histogram on one side"
        return a.kl_divergence(canary_prompts, stable_prompts), "KL(canary || stable) of prompt tokens per request, nats"
    if kind in _RANK_TESTS:
        ranked = _rank(raw, kind)
        _, what, per_request = _RANK_TESTS[kind]
        if ranked is None:
            return None, f"fewer than {_RANK_MIN} {what} observations or requests on one side, or other buckets"
        unit = "requests" if per_request else "decode steps (the test on the requests' effective number)"
        return ranked.a, (f"P(the canary's {what} is longer than stable's) over {ranked.canary} and {ranked.stable} {unit}; "
                          f"one-sided Mann-Whitney p = {ranked.p_value:.3g}")
    if kind == "costPer1kTokens":
        if ctx.gpu_hour_price is None:
            return None, "no gpuHourPrice configured"
        tokens = _num(raw, "canary.tokens")
        cost = a.cost_per_1k_tokens(ctx.gpu_hour_price, ctx.canary_gpus, ctx.window_seconds, tokens or 0.0)
        return cost, f"{ctx.canary_gpus:g} GPUs at {ctx.gpu_hour_price:g}/GPU-hour"
    raise ValueError(f"unknown builtin {kind!r}")


def evaluate(metrics: list[AnalysisMetric], raw: Raw, slo: Slo, ctx: Context, min_requests: int, confidence: float = 0.95,
             strict: bool = False) -> Run:
    """Judge every metric from ``raw`` (pure). Metrics with neither bound are reported, not judged (they do not
    make the run's verdict); ``errorRatio``
    and ``burnRate`` with only a ``max`` are judged on their counts at ``confidence`` (:func:`_on_counts`). A
    comparison with stable that one error fewer would not have failed is Inconclusive (:data:`_ONE_REQUEST`)."""
    try:
        requests = _num(raw, "canary.requests")
    except MetricsError:
        requests = None
    enough = requests is not None and requests >= max(min_requests, 1)
    results = []
    for metric in metrics:
        result = _judge(metric, raw, slo, ctx, requests, enough, min_requests, confidence, strict)
        if result.verdict == "Fail" and metric.builtin in _ONE_REQUEST:
            fewer = _judge(metric, _one_error_fewer(raw), slo, ctx, requests, enough, min_requests, confidence, strict)
            if fewer.verdict != "Fail":
                result = dataclasses.replace(result, verdict="Inconclusive", message=(
                    f"{result.message}; with one error fewer it would not fail: a single error never fails a comparison with stable"))
        results.append(result)
    # A metric with neither bound (costPer1kTokens and promptLengthDrift by default, a query written without one) is
    # reported, not judged: its no data never holds the run (a run of such metrics only is Inconclusive).
    judged = [r.verdict for r in results if r.min is not None or r.max is not None]
    return Run(verdict=a.overall(judged), requests=requests, metrics=tuple(results))


#: The comparisons with stable judged on counted errors (or repetitions), whose failure must not rest on one request:
#: with a single error in all, Fisher's exact p-value is the canary's share of the requests, so on a canary holding
#: under 5% of them (the default first step is 5%) one error is "significant" at 0.05, and with a run every interval a
#: healthy canary meets that by chance within a few steps. A failure stands only if it would with one error fewer;
#: otherwise Inconclusive holds the step. The SLO checks (errorRatio, burnRate) are not under this rule: their exact
#: test against the budget is evidence on its own (1 error in 40 requests is P = 3.9% at a 99.9% budget), and on a
#: quiet canary they are what still aborts a real regression (docs/rollouts.md, "Low traffic").
_ONE_REQUEST = frozenset({"errorRatioVsStable", "repetitionRatioVsStable"})
_COUNTED = ("canary.errors", "canary.repetitions")


def _one_error_fewer(raw: Raw) -> Raw:
    """``raw`` with one error (one repetition) fewer in each of the canary's counts (never below 0)."""
    out = dict(raw)
    for key in _COUNTED:
        samples = raw.get(key)
        if isinstance(samples, list) and samples:
            out[key] = [dataclasses.replace(samples[0], value=max(0.0, samples[0].value - 1.0)), *samples[1:]]
    return out


def _judge(metric: AnalysisMetric, raw: Raw, slo: Slo, ctx: Context, requests: float | None, enough: bool, min_requests: int,
           confidence: float, strict: bool) -> MetricResult:
    """One metric's :class:`MetricResult` (see :func:`evaluate`)."""
    low, high = metric.min, metric.max
    if metric.builtin is not None and low is None and high is None:
        low, high = _DEFAULT_BOUNDS.get(metric.builtin, (None, None))
    counted: tuple[a.Verdict, str] | None = None
    try:
        if metric.query is not None:
            value, note = _num(raw, f"query.{metric.name}"), "query"
        else:
            value, note = _builtin_value(metric, raw, slo, ctx)
            if enough and low is None and high is not None:
                counted = _on_counts(metric, raw, slo, ctx, high, confidence, strict)
    except MetricsError as error:
        return MetricResult(metric.name, None, low, high, "Error", str(error))
    if metric.builtin is not None and metric.builtin != "costPer1kTokens" and not enough:
        verdict: a.Verdict = "Inconclusive"
        note = f"{int(requests or 0)} canary requests, fewer than minRequests {min_requests}"
    elif counted is not None:
        verdict, evidence = counted
        note = evidence if metric.builtin == "errorRatio" else f"{note}; {evidence}"
    elif low is None and high is None:
        verdict = "Pass" if value is not None else "Inconclusive"
    else:
        verdict = a.judge(value, low, high)
        if verdict == "Fail" and metric.builtin in _RANK_TESTS:
            test = _rank(raw, metric.builtin)
            if test is not None and test.p_value >= _RANK_ALPHA:  # an effect this size by chance: not yet evidence
                verdict, note = "Inconclusive", f"{note}, not significant at {_RANK_ALPHA:g}"
    shown = "no data" if value is None else f"{value:.6g}"
    bounds = " ".join(p for p in (f">= {low:g}" if low is not None else "", f"<= {high:g}" if high is not None else "") if p)
    return MetricResult(metric.name, value, low, high, verdict, f"{shown} (want {bounds or 'any'}): {note}")


def measure(provider: MetricsProvider, analysis: Analysis, slo: Slo, ctx: Context) -> Run:
    """Collect and evaluate one run of ``analysis`` (its metrics, or :func:`default_metrics`)."""
    metrics = list(analysis.metrics) or default_metrics(slo)
    return evaluate(metrics, collect(provider, queries(metrics, ctx)), slo, ctx, analysis.min_requests, analysis.confidence,
                    analysis.require_evidence_to_pass)


# -------------------------------------------------------------------------------------- fail fast


@dataclass(frozen=True)
class Guard:
    """One fail-fast check (:func:`guard`): ``breach`` says what it found (None: nothing hard enough to act on,
    including no data or too few requests), over ``requests`` and ``errors`` counted in the window (None when a
    query failed or had no data). A breach is an error ratio far above the budget (:func:`judge_guard`) or an
    engine that stopped answering (:func:`judge_stall`)."""

    breach: str | None
    requests: float | None = None
    errors: float | None = None


def hard_breach_bound(fail_fast: FailFast, slo: Slo) -> float:
    """The error ratio a hard breach starts at: ``errorBudgetFactor x (1 - availability/100)``, capped at 0.5.

    >>> hard_breach_bound(FailFast(), Slo(availability=99.9)), hard_breach_bound(FailFast(), Slo(availability=90))
    (0.01, 0.5)
    """
    return round(min(0.5, fail_fast.error_budget_factor * a.error_budget(slo.availability)), 12)


def judge_guard(errors: float | None, requests: float | None, fail_fast: FailFast, slo: Slo, window: str) -> Guard:
    """A hard breach (pure): at least ``fail_fast.min_requests`` requests in the window and an exact one-sided
    binomial test showing the error ratio above :func:`hard_breach_bound` at ``fail_fast.confidence``
    (``P(X >= errors | requests, bound) < 1 - confidence``, :func:`_analysis.ratio_evidence`). Anything less is
    no breach: soft evidence is the analysis's to judge.

    >>> print(judge_guard(6, 20, FailFast(), Slo(availability=99.9), "30s").breach)  # doctest: +NORMALIZE_WHITESPACE
    fail fast: 6 errors in 20 requests over 30s: evidence of a breach of the 1% hard-breach bound (10x the error
    budget) at 99.9% (the error ratio is at least 6.16%)
    >>> judge_guard(1, 20, FailFast(), Slo(availability=99.9), "30s").breach is None  # 1 error: the analysis's
    True
    """
    if requests is None or a.whole(requests) < fail_fast.min_requests:
        return Guard(None, requests, errors)
    bound = hard_breach_bound(fail_fast, slo)
    evidence = a.ratio_evidence(errors or 0.0, requests, bound, fail_fast.confidence)
    if evidence.verdict != "Fail":
        return Guard(None, requests, errors)
    head = f"the {a.percent(bound)} hard-breach bound ({fail_fast.error_budget_factor:g}x the error budget)"
    return Guard(f"fail fast: {evidence.counts()} over {window}: {evidence.describe(head).split(': ', 1)[1]}", requests, errors)


def _span(seconds: float) -> str:
    """A window for a message: whole minutes as minutes (``120`` -> ``"2m"``), anything else in seconds."""
    whole = max(1, int(round(seconds)))
    return f"{whole // 60}m" if whole % 60 == 0 else f"{whole}s"


def judge_stall(held: list[float], revision: str, window: str) -> Guard:
    """Engines that stopped answering (pure): ``held`` has, per engine of the revision that held running requests for
    the whole window and generated no token in it, the least ``vllm:num_requests_running`` scraped in the window
    (:func:`_promql.stalled_engines`); any such engine is a breach, even beside healthy ones.

    Why this is a hard breach: vLLM's /health reports only an engine that has errored (``EngineDeadError``); an
    engine core that hangs (a stuck NCCL collective under tensor parallelism, a deadlock) keeps /health at 200 and
    its pods Ready while it answers nothing, and the requests it holds never finish, so the analysis counts no error
    on them. Its last scheduler stats keep the running gauge at the requests it held, and its token counter stops.
    An idle engine is no stall (its last stats, after the last request finished, show 0 running), nor is a busy one
    in a long prefill once the window is longer than a prefill (``failFast.stallWindow``, default 2m).

    >>> print(judge_stall([3.0], "ae484c107d", "2m").breach)
    fail fast: 1 engine of ae484c107d held 3 running requests and generated no token in 2m: it stopped answering
    >>> judge_stall([], "ae484c107d", "2m").breach is None  # none: busy, idle, or no data
    True
    """
    if not held:
        return Guard(None)
    engines, requests = len(held), sum(a.whole(h) for h in held)
    return Guard(f"fail fast: {engines} engine{'' if engines == 1 else 's'} of {revision} held {requests} running "
                 f"request{'' if requests == 1 else 's'} and generated no token in {window}: "
                 f"{'it' if engines == 1 else 'they'} stopped answering")


#: ``failFast.stallWindow`` when not written: long, as a long prompt's prefill generates no token for a while.
DEFAULT_STALL_WINDOW = "2m"


def stall_window(fail_fast: FailFast) -> float:
    """Seconds of ``fail_fast.stallWindow`` (:data:`DEFAULT_STALL_WINDOW` when not written), at least two guard
    intervals (two scrapes)."""
    return max(parse_duration(fail_fast.stall_window or DEFAULT_STALL_WINDOW), 2 * parse_duration(fail_fast.interval))


def stall(provider: MetricsProvider, fail_fast: FailFast, ctx: Context, since_seconds: float | None = None) -> Guard:
    """Read, with one query, the canary's engines that held running requests throughout the stall window
    (:func:`stall_window`) and generated no token in it, and judge them (:func:`judge_stall`). Not before this
    attempt of the rollout has lasted the whole window (``since_seconds``): a shorter window would take a long
    prompt's prefill for a hang. A failed query is no breach."""
    window = stall_window(fail_fast)
    if since_seconds is not None and since_seconds < window:
        return Guard(None)
    found = collect(provider, {"stalled": q.stalled_engines(ctx.canary, window)})["stalled"]
    if isinstance(found, MetricsError):
        return Guard(None)
    return judge_stall([sample.value for sample in found], ctx.canary.revision, _span(window))


def guard(provider: MetricsProvider, fail_fast: FailFast, slo: Slo, ctx: Context, since_seconds: float | None = None) -> Guard:
    """Read the canary's requests and errors over ``fail_fast.window``, or over the ``since_seconds`` since this
    attempt of the rollout started when that is shorter (a retried rollout is not judged on the errors that ended
    the last attempt, whose pods carry the same revision), with two queries, and judge them (:func:`judge_guard`);
    then, unless that found a breach, whether an engine of it stopped answering (:func:`stall`, one more query):
    three queries a pass. A failed query, or a window under one second, is no breach: the analysis counts metrics
    errors."""
    window = parse_duration(fail_fast.window)
    if since_seconds is not None:
        window = min(window, math.floor(since_seconds))
    if window < 1:
        return Guard(None)
    raw = collect(provider, {"requests": q.requests(ctx.canary, window, ctx.error_source),
                             "errors": q.errors(ctx.canary, window, ctx.error_source)})
    try:
        requests, errors = _num(raw, "requests"), _num(raw, "errors")
    except MetricsError:
        return Guard(None)
    found = judge_guard(errors, requests, fail_fast, slo, q.duration(window))
    if found.breach is not None:
        return found
    return dataclasses.replace(found, breach=stall(provider, fail_fast, ctx, since_seconds).breach)
