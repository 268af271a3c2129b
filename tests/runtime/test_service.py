"""The service lifecycle and the stack that starts services in order and closes them in reverse."""

from __future__ import annotations

import asyncio

import pytest

from runtime.service import Lifecycle, Service, ServiceStack, ServiceStateError


class Recorded:
    """A service that writes down what happens to it, and how long it was given to close."""

    def __init__(
        self,
        name: str,
        log: list[str],
        *,
        fail_start: bool = False,
        close_takes_s: float = 0.0,
    ) -> None:
        self.name = name
        self.log = log
        self.fail_start = fail_start
        self.close_takes_s = close_takes_s
        self.given_s: float | None = None

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def close(self, timeout_s: float = 10.0) -> None:
        self.given_s = timeout_s
        self.log.append(f"close {self.name}")
        await asyncio.sleep(min(self.close_takes_s, timeout_s))


def test_a_recorded_service_is_a_service() -> None:
    assert isinstance(Recorded("a", []), Service)


async def test_services_are_closed_in_the_reverse_order_of_their_start() -> None:
    log: list[str] = []
    services = [Recorded(name, log) for name in ("uplink", "sessions", "bus", "publisher")]
    async with ServiceStack(10.0) as stack:
        for service in services:
            assert await stack.start(service) is service
        log.append("serving")
    assert log == [
        "start uplink", "start sessions", "start bus", "start publisher",
        "serving",
        "close publisher", "close bus", "close sessions", "close uplink",
    ]  # fmt: skip


async def test_things_pushed_to_close_are_released_in_the_same_order() -> None:
    log: list[str] = []

    async def release_client() -> None:
        log.append("close client")

    async with ServiceStack(10.0) as stack:
        stack.push_close(release_client)
        await stack.start(Recorded("sessions", log))
    assert log == ["start sessions", "close sessions", "close client"]


async def test_the_services_share_one_shutdown_timeout() -> None:
    log: list[str] = []
    slow = Recorded("publisher", log, close_takes_s=3600.0)  # uses all it is given
    later = Recorded("uplink", log)
    async with ServiceStack(0.3) as stack:
        await stack.start(later)
        await stack.start(slow)
    assert slow.given_s is not None and slow.given_s <= 0.3
    # what the slow one used up is not given again: the next gets only the minimum
    assert later.given_s == 0.05


async def test_a_share_gives_a_service_part_of_the_time_left() -> None:
    log: list[str] = []
    publisher = Recorded("publisher", log)
    uplink = Recorded("uplink", log)
    async with ServiceStack(10.0) as stack:
        await stack.start(uplink)
        await stack.start(publisher, share=0.5)
    assert publisher.given_s is not None and uplink.given_s is not None
    assert publisher.given_s <= 5.0
    assert uplink.given_s > publisher.given_s  # the rest is left for the uplink


async def test_a_failed_later_start_closes_what_had_started() -> None:
    log: list[str] = []
    with pytest.raises(RuntimeError, match="bus cannot start"):
        async with ServiceStack(10.0) as stack:
            await stack.start(Recorded("uplink", log))
            await stack.start(Recorded("sessions", log))
            await stack.start(Recorded("bus", log, fail_start=True))
            log.append("never served")
    assert log == ["start uplink", "start sessions", "close sessions", "close uplink"]


async def test_an_error_while_serving_still_closes_everything() -> None:
    log: list[str] = []
    with pytest.raises(ValueError, match="request handling"):
        async with ServiceStack(10.0) as stack:
            await stack.start(Recorded("uplink", log))
            raise ValueError("request handling broke")
    assert log == ["start uplink", "close uplink"]


async def test_a_lifecycle_runs_new_running_closing_closed_once() -> None:
    lifecycle = Lifecycle("the thing")
    assert lifecycle.state == "new" and not lifecycle.running
    with pytest.raises(ServiceStateError, match="not running"):
        lifecycle.require_running()
    lifecycle.begin_start()
    assert lifecycle.running
    lifecycle.require_running()
    with pytest.raises(ServiceStateError, match="starts once"):
        lifecycle.begin_start()
    assert lifecycle.begin_close()  # the caller closes
    assert lifecycle.state == "closing" and lifecycle.closing.is_set()
    assert not lifecycle.closed.is_set()
    assert not lifecycle.begin_close()  # under way: a second caller waits for `closed`
    lifecycle.finish_close()
    assert lifecycle.state == "closed" and lifecycle.closed.is_set()
    assert not lifecycle.begin_close()
    with pytest.raises(ServiceStateError):
        lifecycle.begin_start()


async def test_a_lifecycle_closed_before_it_started_has_nothing_to_close() -> None:
    lifecycle = Lifecycle("the thing")
    assert not lifecycle.begin_close()
    assert lifecycle.state == "closed" and lifecycle.closing.is_set() and lifecycle.closed.is_set()


async def test_a_failed_start_leaves_a_closed_lifecycle() -> None:
    lifecycle = Lifecycle("the thing")
    lifecycle.begin_start()
    lifecycle.start_failed()
    assert lifecycle.state == "closed" and lifecycle.closed.is_set()
    assert not lifecycle.begin_close()
