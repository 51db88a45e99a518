"""Per-object retry delays: exponential, capped, jittered, with Retry-After as a floor."""

import pytest

from llm_operator._backoff import Backoff


@pytest.mark.parametrize("rand, first, fifth", [(0.0, 0.8, 12.8), (0.5, 1.0, 16.0), (1.0, 1.2, 19.2)])
def test_jitter_is_plus_or_minus_twenty_percent(rand, first, fifth):
    b = Backoff(base=1.0, cap=300.0, jitter=0.2, rand=lambda: rand)
    delays = [b.failure("x") for _ in range(5)]
    assert delays[0] == pytest.approx(first) and delays[4] == pytest.approx(fifth)


def test_the_cap_holds_after_many_failures():
    b = Backoff(base=1.0, cap=300.0, jitter=0.0)
    assert [b.failure("x") for _ in range(200)][-1] == 300.0


def test_keys_are_independent_and_success_resets():
    b = Backoff(base=2.0, cap=60.0, jitter=0.0)
    assert [b.failure("a"), b.failure("a"), b.failure("b")] == [2.0, 4.0, 2.0]
    b.success("a")
    assert (b.failures("a"), b.failure("a"), b.failures("b")) == (0, 2.0, 1)


def test_retry_after_is_a_floor():
    b = Backoff(base=1.0, cap=300.0, jitter=0.0)
    assert b.failure("x", retry_after=7.0) == 7.0 and b.failure("x", retry_after=1.0) == 2.0


@pytest.mark.parametrize("base, cap, jitter", [(0, 1, 0), (2, 1, 0), (1, 2, 1.0), (1, 2, -0.1)])
def test_nonsense_settings_are_refused(base, cap, jitter):
    with pytest.raises(ValueError):
        Backoff(base=base, cap=cap, jitter=jitter)
