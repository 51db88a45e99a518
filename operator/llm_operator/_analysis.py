"""Analysis maths: pure functions over numbers already read from Prometheus. No I/O.

Units: ratios are 0..1, SLO targets are percent 0..100, latencies are seconds, costs are in the currency of
the configured GPU-hour price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

Verdict = Literal["Pass", "Fail", "Inconclusive", "Error"]


def error_budget(availability_percent: float) -> float:
    """The error budget as a ratio: ``1 - availability/100`` (99.9 -> 0.001).

    Raises:
        ValueError: unless 0 < availability_percent < 100.
    """
    if not 0 < availability_percent < 100:
        raise ValueError(f"availability must be a percent strictly between 0 and 100, got {availability_percent}")
    return 1 - availability_percent / 100


def burn_rate(error_ratio: float, availability_percent: float) -> float:
    """How fast the error budget burns: ``error_ratio / (1 - availability/100)``.

    1.0 spends the budget exactly over the SLO period; 14.4 spends 2% of a 30-day budget in one hour
    (Google SRE Workbook, "Alerting on SLOs", table 5-8).

    >>> round(burn_rate(0.0144, 99.9), 6)
    14.4
    """
    return error_ratio / error_budget(availability_percent)


@dataclass(frozen=True)
class BurnWindows:
    """The two windows of a multi-window burn-rate rule, in seconds, and the factor both must exceed."""

    long_seconds: float
    short_seconds: float
    factor: float


def burn_windows(analysis_seconds: float, factor: float = 14.4, min_short_seconds: float = 30.0) -> BurnWindows:
    """Windows scaled to a rollout's time frame.

    The SRE Workbook's fast-burn rule for a 30-day SLO pages when the burn rate exceeds 14.4 over both 1 h and
    5 min (the short window is 1/12 of the long one, so the alert also resets quickly). A canary analysis
    lasts minutes, not an hour, so the long window is the analysis duration itself and the short window is
    1/12 of it, but at least ``min_short_seconds`` (a few scrape intervals) so it holds enough samples.

    >>> burn_windows(600)
    BurnWindows(long_seconds=600, short_seconds=50.0, factor=14.4)
    """
    return BurnWindows(analysis_seconds, max(analysis_seconds / 12, min_short_seconds), factor)


def fast_burn(long_burn: float | None, short_burn: float | None, factor: float) -> bool | None:
    """The multi-window rule: True when both windows burn faster than ``factor``; None without data."""
    if long_burn is None or short_burn is None:
        return None
    return long_burn > factor and short_burn > factor


@dataclass(frozen=True)
class ZTest:
    """A one-sided two-proportion z-test of "the canary's error ratio is higher than stable's"."""

    z: float
    p_value: float
    canary_ratio: float
    stable_ratio: float


def two_proportion_z_test(canary_errors: float, canary_total: float, stable_errors: float, stable_total: float) -> ZTest:
    """Compare error proportions with a pooled standard error.

    ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))`` with ``p = (x1 + x2) / (n1 + n2)``; the p-value is
    ``1 - Phi(z)`` (one-sided: only a canary worse than stable matters). When neither side has an error the
    proportions are equal and z is 0.

    >>> t = two_proportion_z_test(30, 1000, 10, 1000)
    >>> round(t.z, 2), round(t.p_value, 4)
    (3.19, 0.0007)

    Raises:
        ValueError: when a total is not positive or errors exceed the total.
    """
    for errors, total in ((canary_errors, canary_total), (stable_errors, stable_total)):
        if total <= 0 or errors < 0 or errors > total:
            raise ValueError(f"need 0 <= errors <= total and total > 0, got {errors}/{total}")
    p1, p2 = canary_errors / canary_total, stable_errors / stable_total
    pooled = (canary_errors + stable_errors) / (canary_total + stable_total)
    se = math.sqrt(pooled * (1 - pooled) * (1 / canary_total + 1 / stable_total))
    z = 0.0 if se == 0 else (p1 - p2) / se
    return ZTest(z=z, p_value=1 - NormalDist().cdf(z), canary_ratio=p1, stable_ratio=p2)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_greater(canary_errors: int, canary_total: int, stable_errors: int, stable_total: int) -> float:
    """One-sided p-value of Fisher's exact test of "the canary's error ratio is higher than stable's".

    Given both sides' totals and the errors among them, the canary's share of the errors is hypergeometric under
    the null hypothesis; the p-value is ``P(X >= canary_errors)``, each term ``C(n1, i) C(n2, K - i) / C(N, K)``
    in log space (Fisher 1935, "The logic of inductive inference", J. R. Stat. Soc. 98(1):39-82; Agresti,
    "Categorical Data Analysis", 3rd ed., section 3.5).

    >>> round(fisher_exact_greater(1, 100, 0, 400), 6)  # the one error fell on the side with a fifth of the requests
    0.2

    Raises:
        ValueError: when a total is not positive or errors exceed the total.
    """
    for errors, total in ((canary_errors, canary_total), (stable_errors, stable_total)):
        if total <= 0 or errors < 0 or errors > total:
            raise ValueError(f"need 0 <= errors <= total and total > 0, got {errors}/{total}")
    errors, total = canary_errors + stable_errors, canary_total + stable_total
    top = min(errors, canary_total)
    norm = _log_comb(total, errors)
    return min(1.0, sum(math.exp(_log_comb(canary_total, i) + _log_comb(stable_total, errors - i) - norm)
                        for i in range(canary_errors, top + 1)))


@dataclass(frozen=True)
class Comparison:
    """Whether the canary's error (or repetition) ratio is higher than stable's: a one-sided p-value and how."""

    p_value: float
    canary_ratio: float
    stable_ratio: float
    method: str  # "z=3.19" or "Fisher's exact test"


def compare_proportions(canary_errors: float, canary_total: float, stable_errors: float, stable_total: float) -> Comparison:
    """The two-proportion z-test (:func:`two_proportion_z_test`) when every expected cell of the 2x2 table is at
    least 5, else Fisher's exact test (:func:`fisher_exact_greater`) on the counts as whole numbers: the normal
    approximation does not hold for a handful of errors (Cochran's rule: Cochran 1954, "Some methods for
    strengthening the common chi-square tests", Biometrics 10(4):417-451). One error in 100 canary requests
    against none in 400 on stable is z = 2.00, p = 0.0226, but exactly p = 0.2: no evidence.

    >>> round(compare_proportions(1, 100, 0, 400).p_value, 6), round(compare_proportions(30, 1000, 10, 1000).p_value, 4)
    (0.2, 0.0007)
    """
    errors, total = canary_errors + stable_errors, canary_total + stable_total
    expected = [side * share for side in (canary_total, stable_total) for share in (errors / total, 1 - errors / total)]
    if min(expected) >= 5:
        t = two_proportion_z_test(canary_errors, canary_total, stable_errors, stable_total)
        return Comparison(t.p_value, t.canary_ratio, t.stable_ratio, f"z={t.z:.2f}")
    n1, n2 = whole(canary_total), whole(stable_total)
    x1, x2 = min(whole(canary_errors), n1), min(whole(stable_errors), n2)
    p_value = fisher_exact_greater(x1, n1, x2, n2) if n1 and n2 else 1.0  # under one whole request: nothing to compare
    return Comparison(p_value, canary_errors / canary_total, stable_errors / stable_total,
                      "Fisher's exact test")


def bucket_probabilities(cumulative: Sequence[tuple[float, float]]) -> list[float]:
    """Per-bucket probabilities from Prometheus' cumulative histogram buckets ``[(le, count), ...]`` sorted by
    ``le`` (``+Inf`` last). Empty when the histogram holds no observation."""
    counts = bucket_counts(cumulative)
    total = sum(counts)
    return [c / total for c in counts] if total > 0 else []


@dataclass(frozen=True)
class RankTest:
    """A one-sided Mann-Whitney U test on two binned samples: is the canary's distribution shifted above stable's?

    ``a`` is the Vargha-Delaney effect size ``U / (n_canary x n_stable)``: the probability that a random canary
    request is slower than a random stable one (ties count half; 0.5 is no difference), and ``p_value`` the
    one-sided p-value of ``U`` under no difference (normal approximation with the tie correction and a continuity
    correction)."""

    a: float
    p_value: float
    canary: int  # requests counted on each side
    stable: int


def rank_test_binned(canary: Sequence[float], stable: Sequence[float],
                     effective: tuple[float, float] | None = None) -> RankTest:
    """:class:`RankTest` of per-bucket counts (``canary[i]``, ``stable[i]``: observations in bucket i, buckets in
    the same increasing order; counts rounded by :func:`whole`). Binned values are ties within their bucket.

    ``effective``: the number of independent units behind each side's observations when they are fewer than the
    observations (vLLM observes inter-token latency once per decode step, so a request gives many correlated
    observations): ``A`` is still computed from every observation, but the p-value from ``U``'s null distribution
    for ``effective`` samples (``z = (A - 1/2) / sqrt((n1 + n2 + 1) / (12 n1 n2))`` over the effective sizes, with
    neither tie nor continuity correction): see :func:`kish_effective_size`.

    Source: Mann and Whitney (1947), "On a test of whether one of two random variables is stochastically larger
    than the other"; the tie-corrected variance ``n1 n2 / 12 x ((N + 1) - sum(t^3 - t) / (N (N - 1)))`` as in
    Lehmann (1975), *Nonparametrics*, and scipy.stats.mannwhitneyu; the effect size from Vargha and Delaney (2000),
    whose thresholds 0.56, 0.64 and 0.71 mark small, medium and large effects.

    >>> t = rank_test_binned([0, 10, 30, 60], [40, 40, 15, 5])  # the canary mostly in the slow buckets
    >>> round(t.a, 3), t.p_value < 1e-6
    (0.907, True)
    >>> t = rank_test_binned([25, 25, 25, 25], [50, 50, 50, 50])  # the same shape, half the requests
    >>> round(t.a, 3), round(t.p_value, 3)
    (0.5, 0.5)

    Raises:
        ValueError: the two lists differ in length, or a side has no request.
    """
    if len(canary) != len(stable):
        raise ValueError(f"need as many canary buckets as stable ones, got {len(canary)} and {len(stable)}")
    c, s = [max(0, whole(x)) for x in canary], [max(0, whole(x)) for x in stable]
    n1, n2 = sum(c), sum(s)
    if n1 == 0 or n2 == 0:
        raise ValueError("need requests on both sides")
    u, below = 0.0, 0
    for ci, si in zip(c, s, strict=True):
        u += ci * (below + si / 2)
        below += si
    if effective is not None:
        e1, e2 = (max(1.0, min(float(n1), effective[0])), max(1.0, min(float(n2), effective[1])))
        a = u / (n1 * n2)
        z = (a - 0.5) / math.sqrt((e1 + e2 + 1) / (12 * e1 * e2))
        return RankTest(a, 0.5 * math.erfc(z / math.sqrt(2)), n1, n2)
    n = n1 + n2
    ties = sum((ci + si) ** 3 - (ci + si) for ci, si in zip(c, s, strict=True))
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    mean = n1 * n2 / 2
    if variance <= 0:  # every request in one bucket: no evidence of a shift
        return RankTest(u / (n1 * n2), 0.5 if u == mean else 1.0, n1, n2)
    z = (u - mean - 0.5) / math.sqrt(variance)
    return RankTest(u / (n1 * n2), 0.5 * math.erfc(z / math.sqrt(2)), n1, n2)  # the upper tail, precise far out


def kish_effective_size(requests: float, lengths: Sequence[tuple[float, float]]) -> float:
    """The effective sample size of per-token observations that come in requests of different lengths, each
    request's observations fully correlated (the conservative bound): ``(sum m)^2 / sum m^2 = n / (1 + CV^2)`` over
    the requests' lengths ``m`` (Kish 1965, *Survey Sampling*, the design effect of unequal weights). ``lengths``:
    Prometheus's cumulative ``(le, count)`` buckets of tokens per request (``vllm:request_generation_tokens``), each
    bucket's requests taken at its upper bound (``+Inf`` at twice the last finite one); ``requests`` when they are
    empty.

    >>> kish_effective_size(100, [(10, 50), (20, 100), (float("inf"), 100)])  # lengths 10 and 20, half each: CV = 1/3
    90.0
    """
    counts = bucket_counts(lengths)
    finite = [le for le, _ in lengths if math.isfinite(le)]
    values = [le if math.isfinite(le) else 2 * (finite[-1] if finite else 1.0) for le, _ in lengths]
    total, squares = sum(c * m for c, m in zip(counts, values, strict=True)), sum(c * m * m for c, m in zip(counts, values, strict=True))
    if total <= 0 or squares <= 0:
        return float(requests)
    n = sum(counts)
    return round(requests * (total * total / squares) / n, 6)


def bucket_counts(cumulative: Sequence[tuple[float, float]]) -> list[float]:
    """Per-bucket counts from Prometheus's cumulative ``(le, count)`` pairs (sorted by ``le``; ``+Inf`` last).

    >>> bucket_counts([(0.1, 5), (0.5, 12), (float("inf"), 12)])
    [5.0, 7.0, 0.0]
    """
    out: list[float] = []
    before = 0.0
    for _, count in cumulative:
        out.append(max(0.0, float(count) - before))
        before = max(before, float(count))
    return out


def kl_divergence(p: Sequence[float], q: Sequence[float], epsilon: float = 1e-6) -> float:
    """``D_KL(P || Q) = sum p_i ln(p_i / q_i)`` in nats, with ``epsilon`` added to every bucket (then
    renormalised) so a bucket empty on one side does not make the divergence infinite.

    >>> kl_divergence([0.5, 0.5], [0.5, 0.5])
    0.0

    Raises:
        ValueError: when the distributions have different lengths or are empty.
    """
    if len(p) != len(q) or not p:
        raise ValueError(f"distributions must be non-empty and of equal length, got {len(p)} and {len(q)}")
    ps = [x + epsilon for x in p]
    qs = [x + epsilon for x in q]
    sp, sq = sum(ps), sum(qs)
    return max(0.0, sum((a / sp) * math.log((a / sp) / (b / sq)) for a, b in zip(ps, qs, strict=True)))


def cost_per_1k_tokens(gpu_hour_price: float, gpus: float, window_seconds: float, generated_tokens: float) -> float | None:
    """Serving cost per 1,000 generated tokens over a window: ``price x GPU-hours / (tokens / 1000)``.

    ``gpus`` is every GPU the revision held during the window (replicas x GPUs per replica). None when no
    token was generated (the cost is undefined, not zero).

    >>> cost_per_1k_tokens(2.5, 4, 3600, 1_000_000)
    0.01
    """
    if generated_tokens <= 0:
        return None
    return gpu_hour_price * gpus * (window_seconds / 3600) / (generated_tokens / 1000)


# ------------------------------------------------------------------------- evidence on counts (low traffic)
#
# The low-traffic rule. A canary at 5% of a quiet service sees a handful of requests per run, and an error ratio
# read off a handful says little: one error in 500 requests is 0.2%, twice a 99.9% target's 0.1% budget, yet a
# revision exactly at the budget shows at least one error in 500 requests 39% of the time. So the SLO checks on
# counts (errorRatio, burnRate) judge k errors in n requests against a threshold t (the budget 1 - availability/100,
# or the burn factor times it) with the exact one-sided binomial test each way at confidence c (alpha = 1 - c),
# which is comparing the one-sided Clopper-Pearson bounds with t (Clopper & Pearson 1934):
#
#   Fail          P(X >= k | n, t) < alpha    the lower bound is above t: evidence of a breach
#   Pass          P(X <= k | n, t) < alpha    the upper bound is below t: evidence of staying within it
#   Inconclusive  otherwise                   the rollout holds, and pauses after inconclusiveLimit such runs
#
# and say how many requests a verdict needs: with no errors, the smallest n with (1 - t)^n < alpha, about 3/t at
# 95% (the rule of three, Hanley & Lippman-Hand 1983): 2995 at a 99.9% target, 299 at 99%. The same test makes a
# single error among very few requests evidence of a breach: 1 error in 40 has probability 1 - 0.999^40 = 3.9% for
# a revision at a 0.1% budget, under 5% (so up to 51 requests at 95%, 10 at 99%); below minRequests (default 20)
# nothing is judged at all.


def whole(count: float) -> int:
    """A count read from Prometheus as a whole number: ``increase()`` extrapolates to the window's edges
    (1 error can read 1.1), so round to the nearest, never below 0."""
    return max(0, math.floor(count + 0.5))


def _log_pmf(i: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)


def _tail_from(k: int, n: int, p: float, step: int) -> float:
    """``sum pmf(i)`` for ``i = k, k + step, ...`` inside ``0..n`` (``step`` +1 or -1), starting on the side of the
    mode it moves away from, so every term is smaller than the one before: the sum stops once a term no longer
    changes it (a few standard deviations). Terms by the ratio of consecutive binomial probabilities."""
    term, total, odds, i = math.exp(_log_pmf(k, n, p)), 0.0, p / (1 - p), k
    while 0 <= i <= n:
        total += term
        if term <= total * 1e-17:
            break
        term *= (n - i) / (i + 1) * odds if step > 0 else i / (n - i + 1) / odds
        i += step
    return total


def binomial_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, exact: the sum of the binomial probabilities (the shorter side,
    the other as its complement), each in log space with ``math.lgamma``.

    >>> round(binomial_sf(1, 40, 0.001), 6)  # 1 - 0.999**40
    0.03923
    """
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    if k > n * p:
        return min(1.0, _tail_from(k, n, p, +1))
    return max(0.0, 1.0 - _tail_from(k - 1, n, p, -1))


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)`` (see :func:`binomial_sf`).

    >>> round(binomial_cdf(0, 2995, 0.001), 6)  # 0.999**2995
    0.049962
    """
    if k >= n or p <= 0:
        return 1.0
    if k < 0 or p >= 1:
        return 0.0
    if k < n * p:
        return min(1.0, _tail_from(k, n, p, -1))
    return max(0.0, 1.0 - _tail_from(k + 1, n, p, +1))


def _solve(f: Callable[[float], float], target: float, increasing: bool) -> float:
    """The ``p`` in 0..1 where the monotonic ``f(p)`` crosses ``target``, by bisection to 2**-64."""
    lo, hi = 0.0, 1.0
    for _ in range(64):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(errors: int, requests: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided exact (Clopper-Pearson) confidence bounds on an error ratio: ``(lower, upper)`` such that the
    true ratio is at least ``lower`` with probability ``confidence``, and at most ``upper`` likewise.

    ``lower`` is the ``p`` with ``P(X >= errors | requests, p) = 1 - confidence`` (0 with no errors), ``upper``
    the ``p`` with ``P(X <= errors | requests, p) = 1 - confidence`` (with no errors, the closed form
    ``1 - (1 - confidence)**(1/requests)``, about ``3/requests`` at 95%: the rule of three). Each is one end of the
    two-sided interval at ``2 confidence - 1`` (Clopper & Pearson 1934, "The use of confidence or fiducial limits
    illustrated in the case of the binomial", Biometrika 26(4):404-413).

    >>> low, high = clopper_pearson(30, 1000)
    >>> round(low, 5), round(high, 5)
    (0.02167, 0.04047)

    Raises:
        ValueError: unless 0 <= errors <= requests, requests > 0 and 0 < confidence < 1.
    """
    if requests <= 0 or not 0 <= errors <= requests or not 0 < confidence < 1:
        raise ValueError(f"need 0 <= errors <= requests, requests > 0, 0 < confidence < 1; got {errors}/{requests} at {confidence}")
    return _lower_bound(errors, requests, 1 - confidence), _upper_bound(errors, requests, 1 - confidence)


def _lower_bound(errors: int, requests: int, alpha: float) -> float:
    if errors == 0:
        return 0.0
    if errors == requests:
        return alpha ** (1 / requests)
    return _solve(lambda p: binomial_sf(errors, requests, p), alpha, increasing=True)


def _upper_bound(errors: int, requests: int, alpha: float) -> float:
    if errors == requests:
        return 1.0
    if errors == 0:
        return -math.expm1(math.log(alpha) / requests)
    return _solve(lambda p: binomial_cdf(errors, requests, p), alpha, increasing=False)


def requests_needed(threshold: float, confidence: float = 0.95, errors: int = 0) -> int:
    """The fewest requests with ``errors`` errors whose upper bound (:func:`clopper_pearson`) falls below
    ``threshold``: how much traffic a pass needs.

    With no errors it is the smallest ``n`` with ``(1 - threshold)**n < 1 - confidence``, that is
    ``floor(ln(1 - confidence) / ln(1 - threshold)) + 1``, close to ``3 / threshold`` at 95% (the "rule of
    three": Hanley & Lippman-Hand 1983, "If nothing goes wrong, is everything all right? Interpreting zero
    numerators", JAMA 249(13):1743-1745).

    >>> requests_needed(0.001), requests_needed(0.01), requests_needed(0.001, errors=1)
    (2995, 299, 4742)

    Raises:
        ValueError: unless 0 < threshold < 1, 0 < confidence < 1 and errors >= 0.
    """
    if not 0 < threshold < 1 or not 0 < confidence < 1 or errors < 0:
        raise ValueError(f"need 0 < threshold < 1, 0 < confidence < 1, errors >= 0; got {threshold}, {confidence}, {errors}")
    alpha = 1 - confidence
    if errors == 0:
        n = math.floor(math.log(alpha) / math.log1p(-threshold)) + 1
        while n > 1 and binomial_cdf(0, n - 1, threshold) < alpha:  # guard the floating-point floor both ways
            n -= 1
        while binomial_cdf(0, n, threshold) >= alpha:
            n += 1
        return n
    lo, hi = errors, max(2 * errors, 2)  # cdf(errors, n) falls as n grows: double, then halve the gap
    while binomial_cdf(errors, hi, threshold) >= alpha:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if binomial_cdf(errors, mid, threshold) >= alpha else (lo, mid)
    return hi


def percent(ratio: float) -> str:
    return f"{ratio * 100:.3g}%"


@dataclass(frozen=True)
class Evidence:
    """What ``errors`` in ``requests`` show about an error ratio against ``threshold`` at ``confidence``.

    ``Fail`` when a one-sided exact binomial test shows a breach: ``P(X >= errors | requests, threshold) <
    1 - confidence`` (the lower bound is above the threshold). Otherwise, by default, ``Pass`` when the observed
    ratio is within the threshold and ``Inconclusive`` when it is above it without evidence (noise on few
    requests holds, never aborts). With ``strict``, ``Pass`` needs evidence too: ``P(X <= errors | requests,
    threshold) < 1 - confidence`` (the upper bound below the threshold; with no errors, the rule of three's
    ``needed`` requests), which at a 99.9% target takes about 3,000 requests a run. ``proven`` says whether a
    pass had that evidence. With ``confidence >= 0.5`` a fail and an evidenced pass cannot both hold.
    """

    errors: int
    requests: int
    threshold: float
    confidence: float
    verdict: Verdict
    needed: int  # requests a pass needs with no error
    needed_with_errors: int  # ... and with this many errors (worked out when inconclusive, else ``needed``)
    proven: bool = True  # a Pass with evidence of staying within (always so when strict)

    def counts(self) -> str:
        return f"{self.errors} error{'' if self.errors == 1 else 's'} in {self.requests} requests"

    @property
    def lower(self) -> float:
        """The one-sided lower confidence bound on the error ratio (:func:`clopper_pearson`)."""
        return _lower_bound(self.errors, self.requests, 1 - self.confidence)

    @property
    def upper(self) -> float:
        """The one-sided upper confidence bound on the error ratio (:func:`clopper_pearson`)."""
        return _upper_bound(self.errors, self.requests, 1 - self.confidence)

    def _detail(self) -> str:
        if self.verdict == "Fail":
            return f"the error ratio is at least {percent(self.lower)}"
        if self.verdict == "Pass" and self.proven:
            return f"the error ratio is at most {percent(self.upper)}"
        if self.verdict == "Pass":
            return (f"{percent(self.errors / self.requests)} observed; evidence of staying within would need >= "
                    f"{self.needed} requests with no errors")
        more = f", >= {self.needed_with_errors} with {self.errors}" if self.errors else ""
        return f"a verdict needs >= {self.needed} requests with no errors{more}"

    def finding(self) -> str:
        """What the counts show, in a few words."""
        head = {"Fail": "evidence of a breach", "Pass": "within it" if self.proven else "no evidence of a breach"}.get(
            self.verdict, "not evidence either way")
        return f"{head} ({self._detail()})"

    def describe(self, bound: str) -> str:
        """One sentence for the metric's status; ``bound`` names the threshold ("the 0.1% budget").

        >>> print(ratio_evidence(1, 500, 0.001).describe("the 0.1% budget"))  # doctest: +NORMALIZE_WHITESPACE
        1 error in 500 requests: not evidence of a breach of the 0.1% budget at 95%, nor of staying within it
        (a verdict needs >= 2995 requests with no errors, >= 4742 with 1)
        """
        at = f"at {self.confidence * 100:g}%"
        passed = f"within {bound} {at}" if self.proven else f"within {bound}, no evidence of a breach {at}"
        head = {"Fail": f"evidence of a breach of {bound} {at}", "Pass": passed}.get(
            self.verdict, f"not evidence of a breach of {bound} {at}, nor of staying within it")
        return f"{self.counts()}: {head} ({self._detail()})"


def ratio_evidence(errors: float, requests: float, threshold: float, confidence: float = 0.95, *, strict: bool = False) -> Evidence:
    """Judge an error ratio on its counts (rounded by :func:`whole`) against ``threshold`` (see :class:`Evidence`).

    >>> ratio_evidence(1, 500, 0.001).verdict, ratio_evidence(30, 1000, 0.001).verdict, ratio_evidence(0, 5000, 0.001).verdict
    ('Inconclusive', 'Fail', 'Pass')
    >>> ratio_evidence(0, 100, 0.001).verdict, ratio_evidence(0, 100, 0.001, strict=True).verdict
    ('Pass', 'Inconclusive')

    Raises:
        ValueError: unless requests > 0, 0 < threshold < 1 and 0.5 <= confidence < 1.
    """
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    n = whole(requests)
    if n <= 0 or not 0 < threshold < 1:
        raise ValueError(f"need requests > 0 and 0 < threshold < 1, got {requests} and {threshold}")
    k = min(whole(errors), n)
    alpha = 1 - confidence
    proven = binomial_cdf(k, n, threshold) < alpha
    verdict: Verdict = ("Fail" if binomial_sf(k, n, threshold) < alpha
                        else "Pass" if proven or (not strict and k <= threshold * n) else "Inconclusive")
    needed = requests_needed(threshold, confidence)
    with_errors = needed if k == 0 or verdict != "Inconclusive" else requests_needed(threshold, confidence, k)  # shown when inconclusive
    return Evidence(k, n, threshold, confidence, verdict, needed, with_errors, proven)


def judge(value: float | None, minimum: float | None, maximum: float | None) -> Verdict:
    """Pass when ``minimum <= value <= maximum`` (either bound optional); Inconclusive without a value."""
    if value is None or math.isnan(value):
        return "Inconclusive"
    if minimum is not None and value < minimum:
        return "Fail"
    if maximum is not None and value > maximum:
        return "Fail"
    return "Pass"


def overall(verdicts: Sequence[Verdict]) -> Verdict:
    """One run's verdict: any Fail fails it; else any Error makes it an Error; else any Inconclusive makes it
    Inconclusive; an empty run is Inconclusive (never a pass on no evidence)."""
    for verdict in ("Fail", "Error", "Inconclusive"):
        if verdict in verdicts:
            return verdict
    return "Pass" if verdicts else "Inconclusive"
