"""dagd.core.backoff: step retry delays and client reconnect backoff with full jitter."""

from __future__ import annotations

import random

import pytest

from dagd.core.backoff import ReconnectBackoff, retry_delay
from dagd.core.model import StepSpec


def step(**kwargs) -> StepSpec:
    return StepSpec(id="s", command="true", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "delays"),
    [
        ({"retry_delay": 10.0}, [10, 20, 40, 80]),
        ({"retry_delay": 10.0, "retry_backoff": 3.0}, [10, 30, 90, 270]),
        ({"retry_delay": 10.0, "retry_backoff": 1.0}, [10, 10, 10, 10]),
        ({"retry_delay": 10.0, "max_retry_delay": 35.0}, [10, 20, 35, 35]),
        ({"retry_delay": 10.0, "max_retry_delay": 5.0}, [5, 5, 5, 5]),
        ({"retry_delay": 0.25, "retry_backoff": 1.5}, [0.25, 0.375, 0.5625, 0.84375]),
        ({}, [0, 0, 0, 0]),
    ],
)
def test_retry_delay(kwargs, delays):
    spec = step(**kwargs)
    assert [retry_delay(spec, n) for n in range(1, len(delays) + 1)] == pytest.approx(delays)


def test_retry_delay_before_any_attempt_is_the_base_delay():
    assert retry_delay(step(retry_delay=7.0), 0) == 7.0


def test_retry_delay_survives_huge_exponents():
    assert retry_delay(step(retry_delay=1.0, max_retry_delay=3600.0), 5000) == 3600.0
    assert retry_delay(step(retry_delay=1.0), 5000) == float("inf")
    # No delay stays no delay, however many attempts failed.
    assert retry_delay(step(retry_delay=0.0), 5000) == 0.0


def test_reconnect_ceilings_double_up_to_the_cap_of_30_seconds():
    backoff = ReconnectBackoff(rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        ceilings.append(backoff.ceiling())
        backoff.next_delay()
    assert ceilings == [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    assert backoff.failures == 10


def test_reconnect_ceiling_after_very_many_failures_stays_at_the_cap():
    backoff = ReconnectBackoff(rng=random.Random(1))
    backoff.failures = 10_000
    assert backoff.ceiling() == 30
    assert 0 <= backoff.next_delay() <= 30


@pytest.mark.parametrize("seed", [0, 1, 2, 42, 1234])
def test_reconnect_delays_are_full_jitter_within_the_ceiling(seed):
    backoff = ReconnectBackoff(rng=random.Random(seed))
    reference = random.Random(seed)
    for _ in range(20):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling <= 30
        # uniform(0, ceiling), drawn from the given generator: reproducible with a seed.
        assert delay == reference.uniform(0, ceiling)


def test_reconnect_jitter_spreads_clients_out():
    delays = []
    for seed in range(500):
        backoff = ReconnectBackoff(rng=random.Random(seed))
        backoff.failures = 8  # at the cap
        delays.append(backoff.next_delay())
    assert min(delays) < 3 and max(delays) > 27
    assert len(set(delays)) == len(delays)


def test_reconnect_reset():
    backoff = ReconnectBackoff(rng=random.Random(3))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.ceiling() == 30
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.ceiling() == 1
    assert 0 <= backoff.next_delay() <= 1
    assert backoff.ceiling() == 2


def test_reconnect_custom_base_and_cap():
    backoff = ReconnectBackoff(base=0.5, cap=3.0, rng=random.Random(0))
    ceilings = []
    for _ in range(5):
        ceilings.append(backoff.ceiling())
        backoff.next_delay()
    assert ceilings == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_reconnect_default_generator_works():
    backoff = ReconnectBackoff()
    assert 0 <= backoff.next_delay() <= 1
