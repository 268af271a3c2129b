"""The demo's steps, in order; each reads what earlier steps left in :class:`DemoRun`.

The path of an event: edge (HTTP, disk spool) → NATS JetStream ``EVENTS`` → bridge →
Kafka ``proxima.events`` → trainer → bundle in the ``proxima-models`` object store →
``proxima-rollout`` KV → each edge fetches, verifies and swaps it in. Every count the demo
reports is read from the system that holds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devtools.demo.bus import BusWatch
from devtools.demo.central_service import CentralInputs, CentralProcess
from devtools.demo.edges import EdgeInputs, EdgeProcess, served_version
from devtools.demo.errors import DemoError
from devtools.demo.history import send_history
from devtools.demo.latency import Percentiles, fetch_metrics, monitor_percentiles
from devtools.demo.replay import replay_sessions
from devtools.demo.run_state import DemoRun, PipelineCounts
from devtools.demo.shop import generate_shop, make_keys
from devtools.localservers import KafkaBroker, NatsServer, RedisServer
from edge_node.rules import RuleSet
from protocol.telemetry import TELEMETRY_INTERVAL_S

EDGE_NODES = (("eu", "edge-1"), ("us", "edge-1"))
REGIONS = tuple(region for region, _ in EDGE_NODES)
SEED_RULES = Path(__file__).resolve().parents[2] / "examples" / "rules" / "seed.yaml"
PIPELINE_TIMEOUT_S = 120.0
BUNDLE_TIMEOUT_S = 600.0  # a guard against a stuck trainer, far beyond a normal training
SETTLE_TIMEOUT_S = 30.0
MONITOR_TIMEOUT_S = 3 * TELEMETRY_INTERVAL_S


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    action: Callable[[DemoRun], None]


def start_servers(run: DemoRun) -> None:
    nats = NatsServer(run.workdir / "nats", own_session=True)
    kafka = KafkaBroker(run.workdir / "kafka", own_session=True)
    # In production every region runs its own Redis for its replicas; the demo's two
    # regions share one, which changes nothing for them: their sessions do not overlap.
    redis = RedisServer(run.workdir / "redis", own_session=True)
    run.start([nats, kafka, redis])
    run.nats, run.kafka, run.redis = nats, kafka, redis
    note = run.printer.note
    note(f"nats-server (JetStream) at {nats.url} (pid {nats.pid})")
    note(f"Tansu Kafka-protocol broker at {kafka.bootstrap} (pid {kafka.pid})")
    note(f"redis-server at {redis.url} (pid {redis.pid})")


def generate_data(run: DemoRun) -> None:
    shop = generate_shop(run.workdir / "shop.csv", run.options.sessions, run.options.seed)
    run.shop = shop
    run.keys = make_keys(run.workdir / "keys")
    if SEED_RULES.is_file():
        run.rules = SEED_RULES
        run.rules_version = RuleSet.parse(SEED_RULES.read_bytes()).version
    stats = shop.stats
    run.printer.note(
        f"{stats.events:,} events in {stats.sessions:,} sessions over {stats.items_used:,} "
        f"items; history: {shop.history_sessions:,} sessions ({shop.history.n_events:,} "
        f"events); held back: the {shop.replay_sessions:,} most recent "
        f"({shop.replay.n_events:,} events)"
    )
    keys = run.keys.public.parent
    run.printer.note(f"signing key for the trainer, public key for the edges: {keys}")


def start_services(run: DemoRun) -> None:
    assert run.nats and run.kafka and run.redis and run.shop and run.keys, "steps run in order"
    bus = run.watch_bus(BusWatch(run.nats.url, run.kafka.bootstrap))
    bus.connect()  # the model and rollout buckets exist before anyone watches them
    history_events = run.shop.history.n_events
    central = CentralProcess(
        CentralInputs(
            nats_url=run.nats.url,
            kafka_bootstrap=run.kafka.bootstrap,
            signing_key=run.keys.private,
            regions=REGIONS,
            min_events=history_events,  # the first training waits for the whole history
            retrain_events=history_events,
        ),
        run.workdir / "central",
        is_forwarding=bus.topic_exists,
    )
    edge_inputs = EdgeInputs(run.keys.public, run.nats.url, run.redis.url, run.rules)
    edges = [
        EdgeProcess(region, node, edge_inputs, run.workdir / f"edge-{region}-{node}")
        for region, node in EDGE_NODES
    ]
    run.start([central, *edges])
    run.central, run.edges = central, edges
    bus.follow_topic()  # the bridge has made the topic by now
    run.printer.note(
        f"proxima central run: bridge, trainer, latency monitor at {central.metrics_url} "
        f"(pid {central.pid})"
    )
    for edge in edges:
        run.printer.note(f"{edge.address.name} at {edge.base_url} (pid {edge.pid}), no bundle yet")
    if run.rules is None:
        run.printer.note(f"no rules: {SEED_RULES} is not there")


def send_history_traffic(run: DemoRun) -> None:
    assert run.shop is not None, "steps run in order"
    with run.printer.bar("sending events") as update:
        report = send_history(
            run.shop.history,
            [edge.address for edge in run.edges],
            progress=lambda done, total: update("sending events", done, total),
        )
    run.history = report
    sent, accepted = report.total("events_sent"), report.total("accepted")
    run.printer.note(
        f"{sent:,} events sent in batches: {accepted:,} accepted, "
        f"{report.total('retries_sent'):,} re-sent (same event_id) and "
        f"{report.total('duplicates'):,} counted as duplicates, "
        f"{report.total('rejected'):,} rejected"
    )
    if accepted != run.shop.history.n_events:
        raise DemoError(
            f"the edges accepted {accepted:,} of the {run.shop.history.n_events:,} events of "
            "the history; the trainer waits for all of them"
        )


def follow_events(run: DemoRun) -> None:
    assert run.history is not None, "steps run in order"
    run.history_counts = _wait_for_pipeline(run, run.history.total("accepted"), PIPELINE_TIMEOUT_S)
    counts = run.history_counts
    run.printer.note(
        f"JetStream EVENTS holds {counts.stream.messages:,} events; Kafka {counts.topic.records:,} "
        f"records, {counts.topic.distinct:,} distinct events"
    )


def first_bundle(run: DemoRun) -> None:
    assert run.bus and run.central and run.keys, "steps run in order"
    bus, edges = run.bus, run.edges
    published: list[int] = []

    def awaited() -> str | None:
        if not published:
            stables = set(bus.stable_versions(REGIONS).values())
            if None in stables or len(stables) != 1:
                return "the trainer's first bundle"
            published.extend(v for v in stables if v is not None)
        version = published[0]
        lagging = [e.address.name for e in edges if served_version(e.base_url) != version]
        return f"{' and '.join(lagging)} to load bundle {version}" if lagging else None

    run.wait_until("training", awaited, BUNDLE_TIMEOUT_S)
    run.bundle_ready_s = time.monotonic() - run.started_at
    run.bundle = bus.published_bundle(published[0], run.keys.public)
    run.retrain_report = run.central.last_retrain()
    manifest = run.bundle.manifest
    if run.retrain_report:
        run.printer.note(f"trainer: {run.retrain_report}")
    run.printer.note(
        f"bundle {manifest.version} ({run.bundle.size:,} bytes, {manifest.ranker.get('precision')}"
        f") verified and served by {', '.join(e.address.name for e in edges)}, "
        f"{run.bundle_ready_s:.0f} s after the start"
    )


def replay_held_back(run: DemoRun) -> None:
    assert run.shop and run.history, "steps run in order"
    with run.printer.bar("replaying sessions") as update:
        report = replay_sessions(
            run.shop.replay,
            [edge.address for edge in run.edges],
            progress=lambda done, total: update("replaying sessions", done, total),
        )
    run.replay = report
    run.printer.note(
        f"{report.total('events_sent'):,} events and {report.total('recommendations'):,} "
        f"recommendation requests over {report.total('sessions'):,} sessions"
    )
    _wait_for_monitor(run)
    expected = run.history.total("accepted") + report.total("accepted")
    try:
        run.final_counts = _wait_for_pipeline(run, expected, SETTLE_TIMEOUT_S)
    except DemoError as exc:  # reported as it stands: the summary says it had not settled
        run.printer.note(f"not every event reached Kafka yet: {exc}")
        assert run.bus is not None
        run.final_counts = PipelineCounts(run.bus.stream(), run.bus.topic(), settled=False)


def _wait_for_monitor(run: DemoRun) -> None:
    """Until the central monitor reports every region's latency (the edges send telemetry
    every few seconds); it is reported as missing if it does not in time."""
    assert run.central is not None, "steps run in order"
    url = run.central.metrics_url
    figures: dict[str, Percentiles | None] = {}

    def awaited() -> str | None:
        text = fetch_metrics(url) or ""
        figures.update({region: monitor_percentiles(text, region) for region in REGIONS})
        missing = [region for region, found in figures.items() if found is None]
        return f"telemetry of {', '.join(missing)}" if missing else None

    try:
        run.wait_until("central latency monitor", awaited, MONITOR_TIMEOUT_S)
    except DemoError as exc:
        run.printer.note(f"the central monitor has no latency figures for a region: {exc}")
    run.monitor_latency = figures


def _wait_for_pipeline(run: DemoRun, accepted: int, timeout_s: float) -> PipelineCounts:
    assert run.bus is not None, "steps run in order"
    bus = run.bus
    counts: list[PipelineCounts] = []

    def awaited() -> str | None:
        stream, topic = bus.stream(), bus.topic()
        counts[:] = [PipelineCounts(stream, topic, settled=True)]
        if stream.messages < accepted:
            return f"JetStream {stream.messages:,} of {accepted:,}"
        if topic.distinct < accepted:
            return f"Kafka {topic.distinct:,} of {accepted:,}"
        return None

    run.wait_until("events", awaited, timeout_s)
    return counts[0]


STEPS: tuple[Step, ...] = (
    Step("Start nats-server (JetStream), the Tansu Kafka broker and redis-server", start_servers),
    Step("Generate a shop log and signing keys; hold back the most recent sessions", generate_data),
    Step(
        "Start the central service (proxima central run) and edges eu/edge-1, us/edge-1",
        start_services,
    ),
    Step("Send the shop's history through the edges over HTTP", send_history_traffic),
    Step("Follow the events: edges → JetStream → bridge → Kafka", follow_events),
    Step("Trainer: first bundle, published and promoted; edges load it", first_bundle),
    Step("Replay the held-back sessions, asking for recommendations", replay_held_back),
)
