"""What an edge runs beside its routes, in start order, and the share of the shutdown each gets.

Every entry is a :class:`runtime.service.Service`; the app's lifespan starts them in this order
on a :class:`runtime.service.ServiceStack` and closes them in reverse within
``shutdown_timeout_s``: the telemetry publisher, the event publisher (draining the spool
into JetStream within its share), the model sync, the one NATS connection, the session
store, and last the uplink, which fsyncs and closes the spool the publisher read.

With ``--nats`` the edge holds exactly one NATS connection, the
:class:`~runtime.supervisor.BusSupervisor`'s; the publisher, the model sync and the
telemetry publisher are its listeners.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from edge_node.answer_log import AnswerLog, AnswerLogCollector
from edge_node.answer_policy import AnswerPolicy
from edge_node.bundle_cache import BundleCache
from edge_node.catalog import CatalogCollector, CatalogReplica, overlay, overlay_all
from edge_node.config import EdgeSettings
from edge_node.keyring import rollout_keys
from edge_node.model_sync import ModelSync
from edge_node.rules.live import RulesSync
from edge_node.state import EdgeState, node_status
from edge_node.telemetry import TelemetryPublisher
from edge_node.uplink.publisher import EventPublisher
from edge_node.users import ErasureFollower, UserHistory
from protocol.catalog import Item
from protocol.exploration import ExplorationPolicy
from protocol.serving import ServingModel
from runtime.service import Service
from runtime.supervisor import BusSupervisor

PING_INTERVAL_S: Final = 10  # how soon a silently dead connection is noticed
# Of what is left of the shutdown when its turn comes, the publisher drains for this share;
# the rest is for the model sync, the connection, and the spool's last fsync.
PUBLISHER_SHARE: Final = 0.5


@dataclass(frozen=True, slots=True)
class Entry:
    service: Service
    share: float = 1.0  # of the shutdown time left at its turn to close


def _answer_services(settings: EdgeSettings, state: EdgeState) -> list[Entry]:
    """The holdout and exploration policy, and the log of served answers."""
    recommender = state.recommender
    recommender.policy = AnswerPolicy(
        settings.holdout_percent,
        ExplorationPolicy(settings.explore_rate, settings.explore_slots, settings.explore_pool),
    )
    if not settings.log_answers:
        return []
    answers = recommender.answer_log = AnswerLog(
        state.uplink,
        region=settings.region,
        node=settings.node,
        max_pending=settings.answer_log_max_pending,
    )
    state.metrics.registry.register(AnswerLogCollector(answers))
    return [Entry(answers)]


def edge_services(
    settings: EdgeSettings, state: EdgeState, *, on_swap: Callable[[ServingModel], None]
) -> list[Entry]:
    """The edge's services in start order; with NATS settings, also sets the bus parts of
    ``state`` (``bus``, ``model_sync``, ``publisher``, ``telemetry_publisher``)."""
    services = [Entry(state.uplink), Entry(state.sessions)]
    services.extend(_answer_services(settings, state))
    users = state.users = state.recommender.users = UserHistory(
        state.sessions,
        state.sessions.redis,
        max_items=settings.user_history_items,
        ttl_s=settings.user_history_ttl_s,
        node_id=f"{settings.region}/{settings.node}",
    )
    nats = settings.nats_settings()
    if nats is None:
        return services
    bus = state.bus = users.bus = BusSupervisor(nats, ping_interval_s=PING_INTERVAL_S)
    catalog = state.catalog = _catalog_replica(settings, state, bus)
    rules_sync = RulesSync(bus, lambda rules: setattr(state.recommender, "rules", rules))
    erasures = ErasureFollower(users, bus)  # users erased in any region are erased here

    def swapped(model: ServingModel) -> None:
        overlay_all(model.tables, catalog)  # the catalog's prices reach the new bundle's features
        on_swap(model)

    state.model_sync = ModelSync(
        state.models,
        bus,
        region=settings.region,
        cache=BundleCache(settings.bundle_cache_dir),
        on_swap=swapped,
        rollout_keys=rollout_keys(settings),
    )
    state.publisher = EventPublisher(
        state.uplink,
        bus,
        region=settings.region,
        node=settings.node,
        batch=settings.publish_batch,
    )
    state.telemetry_publisher = TelemetryPublisher(
        state.recommender.telemetry,
        bus,
        region=settings.region,
        node=settings.node,
        status=lambda: node_status(state),
        interval_s=settings.telemetry_interval_s,
    )
    return [
        *services,
        Entry(bus),
        Entry(catalog),
        Entry(rules_sync),
        Entry(erasures),
        Entry(state.model_sync),
        Entry(state.publisher, PUBLISHER_SHARE),
        Entry(state.telemetry_publisher),
    ]


def _catalog_replica(
    settings: EdgeSettings, state: EdgeState, bus: BusSupervisor
) -> CatalogReplica:
    """The catalog replica, wired into the answers: the filter, rule fields, exploration, and
    the price and category features of the served bundles."""
    replica = CatalogReplica(bus, max_items=settings.catalog_max_items)

    def changed(item: Item) -> None:
        canary = state.models.canary
        for model in (state.models.current, canary.model if canary is not None else None):
            if model is not None:
                overlay(model.tables, item)

    replica.on_change(changed)
    state.metrics.registry.register(CatalogCollector(replica))
    state.recommender.catalog = replica
    state.recommender.explore_every = settings.explore_every
    return replica
