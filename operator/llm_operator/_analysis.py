"""Analysis maths: pure functions over numbers already read from Prometheus. No I/O.

Units: ratios are 0..1, SLO targets are percent 0..100, latencies are seconds, costs are in the currency of
the configured GPU-hour price.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def bucket_probabilities(cumulative: Sequence[tuple[float, float]]) -> list[float]:
    """Per-bucket probabilities from Prometheus' cumulative histogram buckets ``[(le, count), ...]`` sorted by
    ``le`` (``+Inf`` last). Empty when the histogram holds no observation."""
    counts = []
    previous = 0.0
    for _, count in cumulative:
        counts.append(max(count - previous, 0.0))
        previous = max(previous, count)
    total = sum(counts)
    return [c / total for c in counts] if total > 0 else []


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
