"""The story's own arithmetic: the latency bound it derives from version 1's baseline, and the load's summary."""

import pytest

from llm_sandbox.shim import Load, nearest_rank
from llm_sandbox.story import latency_bound


@pytest.mark.parametrize(("baseline_p99", "bound"), [
    (0.25, 10.0),  # an idle machine: the spec's 10 s stands
    (0.72, 10.0),  # the local run whose v2 canary stalled once (p99 4.9 s under a fixed 3 s)
    (1.26, 10.5),  # 10.08 s rounds up to half a second
    (3.0, 24.0),   # a machine ten times slower
])
def test_the_latency_bound_is_eight_times_the_baseline_never_under_the_floor(baseline_p99, bound):
    assert latency_bound(baseline_p99, 10.0) == bound


def test_nearest_rank_quantiles():
    values = [float(v) for v in range(1, 101)]
    assert (nearest_rank(values, 0.5), nearest_rank(values, 0.99), nearest_rank(values, 1.0)) == (50.0, 99.0, 100.0)
    assert nearest_rank([3.0], 0.99) == 3.0
    assert nearest_rank([1.0, 9.0], 0.5) == 1.0


def test_the_load_summarises_successful_requests_per_revision_since_a_time():
    load = Load("http://127.0.0.1:1", "m")
    load.latencies = [(1.0, "a", 0.2, 200), (2.0, "a", 0.4, 200), (2.5, "a", 9.0, 503), (3.0, "b", 5.0, 200), (0.5, "b", 50.0, 200)]
    assert load.summary(since=1.0) == {"a": {"n": 2, "p50": 0.2, "p99": 0.4, "max": 0.4},
                                       "b": {"n": 1, "p50": 5.0, "p99": 5.0, "max": 5.0}}
