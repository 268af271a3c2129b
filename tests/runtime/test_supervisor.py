"""The process's one NATS connection against real nats-servers: who is told what, and when."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from runtime.backoff import Backoff
from runtime.nats import NatsSettings
from runtime.supervisor import (
    BusConnection,
    BusListener,
    BusSupervisor,
    describe_error,
    redact,
)
from tests.servers import NatsServer, NatsServerFactory, pick_free_port
from tests.support import eventually

PASSWORD = "s3cretPW"

SupervisorFactory = Callable[..., BusSupervisor]


class Recorder(BusListener):
    """Writes down what it is told; its first ``fail_times`` connects raise."""

    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times
        self.attempts = 0
        self.told: list[str] = []
        self.connections: list[BusConnection] = []
        self.errors: list[Exception] = []

    async def bus_connected(self, connection: BusConnection) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_times:
            raise RuntimeError(f"not ready yet (attempt {self.attempts})")
        self.connections.append(connection)
        self.told.append(f"connected {connection.generation}")

    async def bus_lost(self) -> None:
        self.told.append("lost")

    def bus_error(self, error: Exception) -> None:
        self.errors.append(error)


class Echo(Recorder):
    """Subscribes to a subject on every connection, as a component with a watch does."""

    def __init__(self, subject: str) -> None:
        super().__init__()
        self.subject = subject
        self.received: list[bytes] = []

    async def bus_connected(self, connection: BusConnection) -> None:
        async def on_message(msg: Msg) -> None:
            self.received.append(msg.data)

        await connection.client.subscribe(self.subject, cb=on_message)
        await connection.client.flush()
        await super().bus_connected(connection)


@pytest.fixture
async def new_supervisor() -> AsyncIterator[SupervisorFactory]:
    made: list[BusSupervisor] = []

    def make(url: str, **settings: object) -> BusSupervisor:
        supervisor = BusSupervisor(
            NatsSettings.from_url(url, name="supervisor-test", connect_timeout_s=1.0, **settings),
            backoff=Backoff(0.05, 0.5),
        )
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        await supervisor.close(5.0)


async def publish_from_elsewhere(url: str, subject: str, data: bytes) -> None:
    client = await nats.connect(url)
    try:
        await client.publish(subject, data)
        await client.flush()
    finally:
        await client.close()


async def test_listeners_are_told_of_the_connection_and_of_its_end_at_close(
    nats_server: NatsServer, new_supervisor: SupervisorFactory
) -> None:
    supervisor = new_supervisor(nats_server.url)
    first, second = Recorder(), Recorder()
    supervisor.attach(first)
    supervisor.attach(second)
    assert not supervisor.status.connected
    await supervisor.start()
    connection = await supervisor.wait_connected(30)
    await eventually(lambda: first.told and second.told, "both listeners are told")
    assert first.told == second.told == ["connected 1"]
    assert first.connections == second.connections == [connection]
    status = supervisor.status
    assert status.connected and status.connections == 1
    assert status.server == f"127.0.0.1:{nats_server.port}"

    late = Recorder()
    supervisor.attach(late)  # attached while connected: told of the live connection
    await eventually(lambda: late.told == ["connected 1"], "the late listener is told")

    await supervisor.close(5.0)
    assert first.told == second.told == late.told == ["connected 1", "lost"]
    assert connection.lost.is_set() and not connection.usable
    assert not supervisor.status.connected
    await supervisor.close(5.0)  # a second close is a no-op


async def test_a_restarted_server_is_connected_again_and_listeners_subscribe_afresh(
    nats_server_factory: NatsServerFactory, new_supervisor: SupervisorFactory
) -> None:
    server = nats_server_factory()
    supervisor = new_supervisor(server.url)
    echo = Echo("supervisor.echo")
    supervisor.attach(echo)
    await supervisor.start()
    await eventually(lambda: echo.told == ["connected 1"], "the first connection")
    await publish_from_elsewhere(server.url, "supervisor.echo", b"before")
    await eventually(lambda: echo.received == [b"before"], "the first message")

    await asyncio.to_thread(server.kill)
    await eventually(lambda: echo.told == ["connected 1", "lost"], "the loss is told")
    assert not supervisor.status.connected
    await asyncio.to_thread(server.start)
    await eventually(lambda: len(echo.told) == 3, "a new connection is told")
    assert echo.told == ["connected 1", "lost", "connected 2"]
    assert supervisor.status.connections == 2

    await publish_from_elsewhere(server.url, "supervisor.echo", b"after")
    await eventually(lambda: echo.received == [b"before", b"after"], "the message after")


async def test_a_listener_that_fails_to_connect_is_asked_again_and_the_others_keep_it(
    nats_server: NatsServer, new_supervisor: SupervisorFactory
) -> None:
    supervisor = new_supervisor(nats_server.url)
    failing, steady = Recorder(fail_times=3), Recorder()
    supervisor.attach(failing)
    supervisor.attach(steady)
    await supervisor.start()
    await eventually(lambda: failing.told == ["connected 1"], "the failing one gets through")
    assert failing.attempts == 4
    assert steady.told == ["connected 1"]
    assert steady.connections == failing.connections  # the very same connection
    assert supervisor.status.connections == 1
    last_error = supervisor.status.last_error
    assert last_error is not None and "Recorder could not use the connection" in last_error


async def test_a_listener_that_finds_the_connection_silent_has_it_replaced(
    nats_server: NatsServer, new_supervisor: SupervisorFactory
) -> None:
    supervisor = new_supervisor(nats_server.url)
    judge, bystander = Recorder(), Recorder()
    supervisor.attach(judge)
    supervisor.attach(bystander)
    await supervisor.start()
    await eventually(lambda: judge.told == ["connected 1"], "connected")
    first = judge.connections[0]

    first.lost.set()  # what the edge publisher does when acknowledgements do not come

    await eventually(lambda: len(bystander.told) == 3, "a new connection is told")
    assert bystander.told == judge.told == ["connected 1", "lost", "connected 2"]
    assert first.client.is_closed  # dropped, with what nats-py held on it
    second = await supervisor.wait_connected(30)
    assert second is judge.connections[1] and second.client is not first.client


async def test_nats_down_is_reported_and_retried_until_it_comes_up(
    tmp_path: Path, new_supervisor: SupervisorFactory
) -> None:
    server = NatsServer(tmp_path / "late-nats")  # its URL is known before it runs
    try:
        supervisor = new_supervisor(server.url)
        listener = Recorder()
        supervisor.attach(listener)
        await supervisor.start()
        await eventually(lambda: supervisor.status.last_error is not None, "a failed attempt")
        assert "Connect call failed" in (supervisor.status.last_error or "")
        assert supervisor.status.connections == 0
        assert listener.errors, "nats-py's error reached the listener"
        assert listener.told == [] and supervisor.connection is None
        with pytest.raises(TimeoutError):
            await supervisor.wait_connected(0.1)

        await asyncio.to_thread(server.start)
        assert server.url == supervisor.settings.servers[0], "the port was taken meanwhile"
        await eventually(lambda: listener.told == ["connected 1"], "connected once it is up")
    finally:
        server.close()


async def test_status_and_logs_never_show_credentials(
    nats_server: NatsServer,
    new_supervisor: SupervisorFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="proxima.bus")
    with_password = nats_server.url.replace("nats://", f"nats://edge:{PASSWORD}@")
    supervisor = new_supervisor(with_password)
    await supervisor.start()
    await supervisor.wait_connected(30)
    assert supervisor.status.server == f"127.0.0.1:{nats_server.port}"
    await supervisor.close(5.0)

    dead = f"nats://edge:{PASSWORD}@127.0.0.1:{pick_free_port()}"
    failing = new_supervisor(dead)
    await failing.start()
    await eventually(lambda: failing.status.last_error is not None, "a failed attempt")
    await failing.close(5.0)

    assert "connected to NATS at 127.0.0.1" in caplog.text
    for text in (repr(supervisor.status), repr(failing.status), caplog.text):
        assert PASSWORD not in text


def test_errors_are_described_without_the_credentials_of_any_url() -> None:
    error = OSError(f"cannot reach nats://edge:{PASSWORD}@leaf.eu:4222, tls://u:p@x:1")
    described = describe_error(error)
    assert described == "OSError: cannot reach nats://***@leaf.eu:4222, tls://***@x:1"
    assert redact("nats://leaf.eu:4222") == "nats://leaf.eu:4222"
    assert describe_error(TimeoutError()) == "TimeoutError"


async def test_a_supervisor_closed_before_it_started_closes_at_once() -> None:
    supervisor = BusSupervisor(NatsSettings.from_url("nats://127.0.0.1:1"))
    await supervisor.close(1.0)
    assert not supervisor.status.connected
