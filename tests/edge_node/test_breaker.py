"""CircuitBreaker: closed, open after N failures in a row, one probe after the cool-down."""

from __future__ import annotations

from edge_node.breaker import BreakerState, CircuitBreaker
from tests.support import FakeClock


def state(b: CircuitBreaker) -> BreakerState:
    return b.state  # read afresh: a property that moves with the clock and the calls


def breaker(clock: FakeClock, failures: int = 3, cooldown_s: float = 2.0) -> CircuitBreaker:
    return CircuitBreaker(failures, cooldown_s, clock=clock)


def test_it_opens_after_the_failures_in_a_row_only() -> None:
    clock = FakeClock()
    b = breaker(clock)
    b.failed()
    b.failed()
    b.succeeded()  # a success in between starts the count again
    b.failed()
    b.failed()
    assert state(b) is BreakerState.CLOSED and b.allow()
    b.failed()
    assert state(b) is BreakerState.OPEN
    assert not b.allow()
    assert b.opened == 1


def test_after_the_cool_down_one_probe_goes_out_and_its_success_closes_it() -> None:
    clock = FakeClock()
    b = breaker(clock, failures=1)
    b.failed()
    clock.advance(1.9)
    assert not b.allow()
    clock.advance(0.1)
    assert state(b) is BreakerState.HALF_OPEN
    assert b.allow()  # the probe
    assert not b.allow()  # nobody else while it is out
    b.succeeded()
    assert state(b) is BreakerState.CLOSED
    assert all(b.allow() for _ in range(5))


def test_a_failed_probe_opens_it_for_another_cool_down() -> None:
    clock = FakeClock()
    b = breaker(clock, failures=2)
    b.failed()
    b.failed()
    clock.advance(2.0)
    assert b.allow()
    b.failed()  # one failure is enough while half-open
    assert state(b) is BreakerState.OPEN
    assert not b.allow()
    clock.advance(2.0)
    assert b.allow()
    assert b.opened == 1  # still the same outage


def test_a_probe_that_never_reports_does_not_block_the_next_one_forever() -> None:
    clock = FakeClock()
    b = breaker(clock, failures=1)
    b.failed()
    clock.advance(2.0)
    assert b.allow()  # this probe's task is cancelled: no success, no failure
    clock.advance(1.0)
    assert not b.allow()
    clock.advance(1.0)
    assert b.allow()
