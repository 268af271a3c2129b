"""The demo, step by step: local servers, data, a bundle, edges, traffic, a summary.

Each step reads what earlier steps left in :class:`DemoRun` and adds its own; the
streaming backbone (NATS, Kafka, the continuous trainer) and rollout will be further steps.
Every process a step starts is registered for cleanup before it is started, so whatever
happens (a failed step, Ctrl-C, SIGTERM, the ``--duration`` deadline) the demo stops all of
them and removes its working directory (unless asked to keep it).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rich.console import Console

from central.demo import DEFAULT_SESSIONS
from central.demo.edges import EdgeInputs, EdgeProcess
from central.demo.errors import DemoError, DemoInterrupted, StopRequested
from central.demo.latency import edge_answer_percentiles
from central.demo.progress import StepPrinter, training_stage
from central.demo.replay import ReplayReport, replay_sessions
from central.demo.shop import DemoBundle, ShopLog, generate_shop, train_demo_bundle
from central.demo.signals import StopSignals
from central.demo.summary import DemoOutcome, print_summary
from central.localservers import (
    RedisServer,
    ServerBinaryNotFoundError,
    ServerProcess,
    ServerStartupError,
)
from edge_node.rules import RuleSet

EDGE_NODES = (("eu", "edge-1"), ("us", "edge-1"))
SEED_RULES = Path(__file__).resolve().parents[2] / "examples" / "rules" / "seed.yaml"
_WATCH_INTERVAL_S = 0.2

ServerT = TypeVar("ServerT", bound=ServerProcess)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    sessions: int = DEFAULT_SESSIONS
    duration_s: float | None = None  # stop this long after the start; None: at Ctrl-C
    keep: bool = False
    workdir_parent: Path | None = None  # where the working directory is made
    seed: int = 0


@dataclass(slots=True)
class DemoRun:
    """What the steps have built so far, and the cleanup of everything they started."""

    options: DemoOptions
    workdir: Path
    printer: StepPrinter
    cleanup: ExitStack
    servers: list[ServerProcess] = field(default_factory=list)
    redis: RedisServer | None = None
    rules: Path | None = None
    rules_version: str | None = None
    shop: ShopLog | None = None
    bundle: DemoBundle | None = None
    edges: list[EdgeProcess] = field(default_factory=list)
    replay: ReplayReport | None = None

    def start(self, server: ServerT) -> ServerT:
        self.servers.append(server)
        self.cleanup.callback(server.stop)
        return server.start()


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    action: Callable[[DemoRun], None]


def _start_redis(run: DemoRun) -> None:
    # In production every region runs its own Redis for its replicas; the demo's two
    # regions share one, which changes nothing for them: their sessions do not overlap.
    redis = run.start(RedisServer(run.workdir / "redis", own_session=True))
    run.redis = redis
    run.printer.note(f"redis-server at {redis.url} (pid {redis.pid})")


def _generate_shop(run: DemoRun) -> None:
    shop = generate_shop(run.workdir / "shop.csv", run.options.sessions, run.options.seed)
    run.shop = shop
    stats = shop.stats
    run.printer.note(
        f"{stats.events:,} events in {stats.sessions:,} sessions over {stats.items_used:,} "
        f"items; {shop.train_sessions:,} sessions to train on, the {shop.replay_sessions:,} "
        f"most recent ({shop.replay.n_events:,} events) held back"
    )


def _train_bundle(run: DemoRun) -> None:
    assert run.shop is not None, "steps run in order"
    if SEED_RULES.is_file():
        run.rules = SEED_RULES
        run.rules_version = RuleSet.parse(SEED_RULES.read_bytes()).version
    with run.printer.bar("training") as update:
        bundle = train_demo_bundle(
            run.shop.train,
            run.workdir,
            rules_version=run.rules_version,
            seed=run.options.seed,
            progress=lambda stage, done, total: update(training_stage(stage), done, total),
        )
    run.bundle = bundle
    run.printer.note(
        f"bundle version {bundle.version}: {bundle.size:,} bytes, serves {bundle.precision}"
    )
    for precision, figures in sorted(bundle.validation.items()):
        run.printer.note(
            f"validation {precision}: HR@20 {figures['hr_at_20']:.4f}  "
            f"MRR@20 {figures['mrr_at_20']:.4f}"
        )


def _start_edges(run: DemoRun) -> None:
    assert run.bundle is not None and run.redis is not None, "steps run in order"
    inputs = EdgeInputs(run.bundle.path, run.bundle.public_key, run.redis.url, run.rules)
    if run.rules is None:
        run.printer.note(f"no rules: {SEED_RULES} is not there")
    for region, node in EDGE_NODES:
        edge = run.start(EdgeProcess(region, node, inputs, run.workdir / f"edge-{region}-{node}"))
        run.edges.append(edge)
        run.printer.note(f"{edge.address.name} ready at {edge.base_url} (pid {edge.pid})")


def _replay(run: DemoRun) -> None:
    assert run.shop is not None, "steps run in order"
    with run.printer.bar("replaying events") as update:
        report = replay_sessions(
            run.shop.replay,
            [edge.address for edge in run.edges],
            progress=lambda done, total: update("replaying events", done, total),
        )
    run.replay = report
    run.printer.note(
        f"{report.total('events_sent'):,} events and {report.total('recommendations'):,} "
        f"recommendation requests over {report.total('sessions'):,} sessions"
    )


STEPS: tuple[Step, ...] = (
    Step("Start redis-server: the session store a region's edge replicas share", _start_redis),
    Step("Generate a synthetic shop log and hold back its most recent sessions", _generate_shop),
    Step("Make signing keys and train a signed bundle on the rest", _train_bundle),
    Step("Start edge nodes eu/edge-1 and us/edge-1 (proxima edge serve)", _start_edges),
    Step("Replay the held-back sessions through the edges over HTTP", _replay),
)


def run_demo(options: DemoOptions, console: Console) -> None:
    """Runs the steps, prints the summary and serves until stopped; cleans up in any case.

    Raises :class:`DemoError` when a step fails and :class:`DemoInterrupted` on a stop
    signal before the edges serve; a stop signal while they serve is the normal end.
    """
    deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
    printer = StepPrinter(console, [step.title for step in STEPS])
    signals = StopSignals()
    with signals:
        workdir = Path(tempfile.mkdtemp(prefix="proxima-demo-", dir=options.workdir_parent))
        run = DemoRun(options, workdir, printer, ExitStack())
        serving = False
        try:
            printer.banner(workdir, _closing(options))
            for number, step in enumerate(STEPS, 1):
                with printer.step(number), _one_line_server_errors(options.keep):
                    step.action(run)
            print_summary(console, _outcome(run))
            serving = True
            _serve_until(run, deadline, console)
        except StopRequested as stop:
            if not serving:
                raise DemoInterrupted(f"stopped by {stop.signal_name} before the end") from None
            console.print(f"{stop.signal_name}: stopping.")
        finally:
            signals.hold()
            _clean_up(run, console)


def _closing(options: DemoOptions) -> str:
    until = "Ctrl-C"
    if options.duration_s is not None:
        until = f"{options.duration_s:g} s after the start (--duration) or Ctrl-C"
    kept = "kept (--keep)" if options.keep else "removed"
    return f"serve until {until}, stop every process, working directory {kept}"


@contextmanager
def _one_line_server_errors(keep: bool) -> Iterator[None]:
    """Server start-up failures as one-line :class:`DemoError` messages."""
    try:
        yield
    except ServerBinaryNotFoundError as exc:
        raise DemoError(str(exc)) from exc
    except ServerStartupError as exc:
        lines = [line.strip() for line in exc.log_tail.splitlines() if line.strip()]
        where = f"its log: {exc.log_path}" if keep else "--keep keeps its log"
        last_words = f": {lines[-1]}" if lines else ""
        raise DemoError(f"{exc.summary} ({where}){last_words}") from exc


def _outcome(run: DemoRun) -> DemoOutcome:
    assert run.shop and run.bundle and run.replay and run.redis, "every step has run"
    return DemoOutcome(
        shop=run.shop,
        bundle=run.bundle,
        replay=run.replay,
        server_latency={
            edge.address.name: edge_answer_percentiles(edge.base_url) for edge in run.edges
        },
        redis_url=run.redis.url,
        rules_version=run.rules_version,
    )


def _serve_until(run: DemoRun, deadline: float | None, console: Console) -> None:
    if deadline is None:
        console.print("\nEdges are serving. Press Ctrl-C to stop.")
    elif (left := deadline - time.monotonic()) >= 1.0:
        console.print(f"\nEdges are serving for {left:.0f} s more (--duration), or until Ctrl-C.")
    while deadline is None or time.monotonic() < deadline:
        for server in run.servers:
            if not server.is_running:
                log = f"its log: {server.log_path}" if run.options.keep else "--keep keeps its log"
                raise DemoError(f"{_describe(server)} exited while serving ({log})")
        pause = _WATCH_INTERVAL_S if deadline is None else deadline - time.monotonic()
        time.sleep(max(0.0, min(_WATCH_INTERVAL_S, pause)))
    console.print("Duration reached: stopping.")


def _describe(server: ServerProcess) -> str:
    if isinstance(server, EdgeProcess):
        return f"edge {server.address.name}"
    return server.display_name


def _clean_up(run: DemoRun, console: Console) -> None:
    running = sum(server.is_running for server in run.servers)
    try:
        run.cleanup.close()  # stops the servers, the last started first
    finally:
        stopped = f"Stopped {running} process{'' if running == 1 else 'es'}"
        if run.options.keep:
            console.print(f"{stopped}; kept {run.workdir}.")
        else:
            try:
                shutil.rmtree(run.workdir)
            except OSError as exc:
                console.print(f"{stopped}; could not remove {run.workdir}: {exc}")
            else:
                console.print(f"{stopped}; removed {run.workdir}.")
