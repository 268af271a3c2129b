"""The one backoff: delays doubling up to a cap, each with equal jitter, reset once stable."""

from __future__ import annotations

import asyncio
import random

import pytest

from runtime.backoff import Backoff, BackoffSettingsError
from tests.support import FakeClock


def test_each_delay_is_drawn_from_the_upper_half_of_a_doubling_ceiling_up_to_the_cap() -> None:
    backoff = Backoff(0.1, 1.0, rng=random.Random(7))
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling
    assert backoff.failures == len(ceilings)


def test_the_jitter_spreads_delays_over_the_whole_half() -> None:
    delays = [Backoff(1.0, 1.0, rng=random.Random(seed)).next_delay() for seed in range(200)]
    assert min(delays) < 0.6 and max(delays) > 0.9  # not all at one end: processes drift apart


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(0.1, 5.0)
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert 0.05 <= backoff.next_delay() <= 0.1


def test_a_connection_that_stayed_up_long_enough_resets_the_backoff() -> None:
    clock = FakeClock()
    backoff = Backoff(0.1, 5.0, stable_after_s=10.0, clock=clock)
    for _ in range(5):
        backoff.next_delay()
    backoff.succeeded()
    clock.advance(10.0)
    backoff.lost()
    assert backoff.failures == 0
    assert backoff.next_delay() <= 0.1


def test_a_connection_lost_soon_after_it_came_keeps_the_backoff_growing() -> None:
    clock = FakeClock()
    backoff = Backoff(0.1, 5.0, stable_after_s=10.0, clock=clock)
    for _ in range(5):
        backoff.next_delay()  # the ceiling is 3.2 s now
    backoff.succeeded()
    clock.advance(9.9)
    backoff.lost()
    assert backoff.failures == 5
    assert 1.6 <= backoff.next_delay() <= 3.2
    backoff.lost()  # without a success in between: nothing to judge, nothing reset
    assert backoff.failures == 6


def test_stable_after_defaults_to_the_cap() -> None:
    clock = FakeClock()
    backoff = Backoff(0.1, 2.0, clock=clock)
    backoff.next_delay()
    backoff.next_delay()
    backoff.succeeded()
    clock.advance(2.0)
    backoff.lost()
    assert backoff.failures == 0


@pytest.mark.parametrize(("initial_s", "max_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_settings_out_of_range_are_refused(initial_s: float, max_s: float) -> None:
    with pytest.raises(BackoffSettingsError) as refused:
        Backoff(initial_s, max_s)
    assert refused.value.code == "bad_backoff"


async def test_sleep_returns_false_at_once_when_stopped_and_true_after_the_delay() -> None:
    stop = asyncio.Event()
    assert await Backoff(0.001, 0.001).sleep(stop)
    assert await Backoff(0.001, 0.001).sleep()
    stop.set()
    stopped = Backoff(3600.0, 3600.0)  # would hang the test if it waited
    assert not await stopped.sleep(stop)
    assert stopped.failures == 1


async def test_sleep_ends_early_when_stopped_meanwhile() -> None:
    stop = asyncio.Event()
    sleeping = asyncio.create_task(Backoff(3600.0, 3600.0).sleep(stop))
    await asyncio.sleep(0)
    stop.set()
    assert not await asyncio.wait_for(sleeping, 30)
