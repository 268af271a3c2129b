"""What a demo run holds: its options, what the steps have built so far, the processes it
started (each registered for cleanup before it starts), and waiting on the real systems."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from devtools.demo import DEFAULT_SESSIONS
from devtools.demo.bus import BusWatch, StreamCounts, TopicCounts
from devtools.demo.central_service import CentralProcess
from devtools.demo.edges import EdgeProcess
from devtools.demo.errors import DemoError
from devtools.demo.history import HistoryReport
from devtools.demo.latency import Percentiles
from devtools.demo.progress import StepPrinter
from devtools.demo.replay import ReplayReport
from devtools.demo.shop import ShopLog, SigningKeys
from devtools.demo.signals import StopSignals
from devtools.localservers import (
    KafkaBroker,
    NatsServer,
    RedisServer,
    ServerProcess,
    start_all,
    stop_all,
)
from protocol.bundle import Bundle

_POLL_INTERVAL_S = 0.25
_LOG_LINES_SHOWN = 3

Check = Callable[[], str | None]  # None when done, else what is still awaited


@dataclass(frozen=True, slots=True)
class DemoOptions:
    sessions: int = DEFAULT_SESSIONS
    duration_s: float | None = None  # stop this long after the start; None: at Ctrl-C
    keep: bool = False
    workdir_parent: Path | None = None  # where the working directory is made
    seed: int = 0


@dataclass(frozen=True, slots=True)
class PipelineCounts:
    """Events at each stage, read from the systems themselves."""

    stream: StreamCounts
    topic: TopicCounts
    settled: bool  # every accepted event had reached Kafka when these were read


@dataclass(slots=True)
class DemoRun:
    options: DemoOptions
    workdir: Path
    printer: StepPrinter
    cleanup: ExitStack
    signals: StopSignals
    started_at: float = field(default_factory=time.monotonic)
    servers: list[ServerProcess] = field(default_factory=list)
    nats: NatsServer | None = None
    kafka: KafkaBroker | None = None
    redis: RedisServer | None = None
    shop: ShopLog | None = None
    keys: SigningKeys | None = None
    rules: Path | None = None
    rules_version: str | None = None
    central: CentralProcess | None = None
    edges: list[EdgeProcess] = field(default_factory=list)
    bus: BusWatch | None = None
    history: HistoryReport | None = None
    history_counts: PipelineCounts | None = None
    bundle: Bundle | None = None
    bundle_ready_s: float | None = None  # seconds from the start until both edges served it
    retrain_report: str | None = None
    replay: ReplayReport | None = None
    monitor_latency: dict[str, Percentiles | None] = field(default_factory=dict)  # by region
    final_counts: PipelineCounts | None = None

    def start(self, servers: Sequence[ServerProcess]) -> None:
        """Starts servers side by side. At cleanup they are stopped side by side too, after
        those started later: the edges and central before the servers they use."""
        for server in servers:
            server.spawn_guard = self.signals.deferred
        self.servers.extend(servers)
        self.cleanup.callback(stop_all, list(servers))
        start_all(servers)

    def watch_bus(self, bus: BusWatch) -> BusWatch:
        self.bus = bus
        self.cleanup.callback(bus.close)
        return bus

    def check_processes(self) -> None:
        for server in self.servers:
            if not server.is_running:
                raise DemoError(f"{describe(server)} exited; {self._log_hint(server)}")

    def wait_until(self, description: str, check: Check, timeout_s: float) -> None:
        """Polls ``check`` (with a progress line showing what it still awaits) until it
        returns None; raises :class:`DemoError` after ``timeout_s`` or when a process died."""
        deadline = time.monotonic() + timeout_s
        with self.printer.bar(description) as update:
            while (awaited := check()) is not None:
                self.check_processes()
                if time.monotonic() > deadline:
                    raise DemoError(f"gave up after {timeout_s:.0f} s waiting for {awaited}")
                update(f"{description}: {awaited}", 0, 0)
                time.sleep(_POLL_INTERVAL_S)

    def _log_hint(self, server: ServerProcess) -> str:
        lines = [line for line in server.log_tail(_LOG_LINES_SHOWN).splitlines() if line.strip()]
        where = f"its log: {server.log_path}" if self.options.keep else "--keep keeps its log"
        last = " | ".join(line.strip() for line in lines[-_LOG_LINES_SHOWN:])
        return f"{where}; it ends with: {last}" if last else where


def describe(server: ServerProcess) -> str:
    if isinstance(server, EdgeProcess):
        return f"edge {server.address.name}"
    return server.display_name
