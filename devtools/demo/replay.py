"""Replays held-back sessions through the edges over HTTP, as pages would send them.

Events go out in time order across all sessions (so many sessions are live at once), each
session to one region, sessions alternating between regions; the regions are replayed side
by side. After every event the page asks for recommendations, and the next viewed item is
checked against that answer.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from central.eventlog import EventLog
from devtools.demo.edges import EdgeAddress
from devtools.demo.errors import DemoError
from devtools.demo.side_by_side import RegionTask, run_side_by_side

REPLAY_ID_PREFIX = "live-"
RECOMMENDATIONS_K = 20
# Every so many events one is sent twice, as a page retrying after a lost response would;
# the edge must count it as a duplicate, not as a second event.
RETRY_EVERY = 25
HTTP_TIMEOUT_S = 10.0

ReplayProgress = Callable[[int, int], None]  # events done, events in all


@dataclass(slots=True)
class RegionTraffic:
    edge: EdgeAddress
    sessions: int = 0
    events_sent: int = 0
    retries_sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    recommendations: int = 0
    cold_answers: int = 0
    failed_requests: int = 0  # answers other than 2xx
    answers_with_offers: int = 0
    offers: int = 0
    rules_fired: Counter[str] = field(default_factory=Counter)
    next_item_checks: int = 0
    next_item_hits: int = 0
    recommendation_latency_s: list[float] = field(default_factory=list)
    example_session: str | None = None


@dataclass(frozen=True, slots=True)
class ReplayReport:
    regions: tuple[RegionTraffic, ...]

    def total(self, counter: str) -> int:
        return sum(int(getattr(region, counter)) for region in self.regions)

    @property
    def rules_fired(self) -> Counter[str]:
        fired: Counter[str] = Counter()
        for region in self.regions:
            fired.update(region.rules_fired)
        return fired

    @property
    def hit_rate(self) -> float | None:
        checks = self.total("next_item_checks")
        return self.total("next_item_hits") / checks if checks else None


@dataclass(frozen=True, slots=True)
class Routing:
    """Which edge each session goes to: sessions alternate between the edges in the order
    they start, and all of a session's events go to one edge, as a CDN keeps it sticky."""

    edge_of_row: npt.NDArray[np.int64]
    in_time_order: list[int]  # rows, by timestamp across all sessions
    rows_of_edge: list[list[int]]  # each edge's rows, by timestamp
    first_session_of_edge: list[str | None]
    sessions_of_edge: list[int]


def route_sessions(log: EventLog, edges: int) -> Routing:
    if edges < 1:
        raise DemoError("no edge to send events to")
    bounds = log.session_bounds()
    runs = bounds.shape[0] - 1
    by_start = np.argsort(log.ts[bounds[:-1]], kind="stable")
    edge_of_run = np.empty(runs, dtype=np.int64)
    edge_of_run[by_start] = np.arange(runs) % edges
    first: list[str | None] = [None] * edges
    for run in by_start[:edges].tolist():
        first[int(edge_of_run[run])] = log.session_ids[int(log.session[bounds[run]])]
    edge_of_row = np.repeat(edge_of_run, np.diff(bounds))
    in_time_order: list[int] = np.lexsort((np.arange(log.n_events), log.ts)).tolist()
    rows_of_edge: list[list[int]] = [[] for _ in range(edges)]
    for row in in_time_order:
        rows_of_edge[int(edge_of_row[row])].append(row)
    return Routing(
        edge_of_row=edge_of_row,
        in_time_order=in_time_order,
        rows_of_edge=rows_of_edge,
        first_session_of_edge=first,
        sessions_of_edge=np.bincount(edge_of_run, minlength=edges).tolist(),
    )


def replay_sessions(
    log: EventLog, edges: Sequence[EdgeAddress], progress: ReplayProgress | None = None
) -> ReplayReport:
    """Each region's shoppers on a thread of their own: the regions do not wait on each
    other, as they would not in production."""
    routing = route_sessions(log, len(edges))
    traffic = tuple(RegionTraffic(edge) for edge in edges)
    for region, sessions, first in zip(
        traffic, routing.sessions_of_edge, routing.first_session_of_edge, strict=True
    ):
        region.sessions = sessions
        region.example_session = first
    done = [0] * len(edges)

    def shoppers(which: int) -> RegionTask:
        def task(stopping: threading.Event) -> None:
            region, rows = traffic[which], routing.rows_of_edge[which]
            last_answer: dict[str, frozenset[str]] = {}
            with httpx.Client(base_url=region.edge.base_url, timeout=HTTP_TIMEOUT_S) as client:
                for sent, row in enumerate(rows, 1):
                    if stopping.is_set():
                        return
                    _shop(client, region, log, row, sent, last_answer)
                    done[which] = sent

        return task

    total = len(routing.in_time_order)
    run_side_by_side(
        [shoppers(which) for which in range(len(edges))],
        on_tick=lambda: progress(sum(done), total) if progress is not None else None,
    )
    return ReplayReport(traffic)


def _shop(
    client: httpx.Client,
    region: RegionTraffic,
    log: EventLog,
    row: int,
    sent: int,
    last_answer: dict[str, frozenset[str]],
) -> None:
    """One event of a live session, then the page asks what to show next."""
    event = dataclasses.replace(
        log.event(row), event_id=f"{REPLAY_ID_PREFIX}{row:08d}", ts=int(time.time() * 1000)
    )
    previous = last_answer.get(event.session_id)
    if event.type == "view" and event.item_id is not None and previous is not None:
        region.next_item_checks += 1
        region.next_item_hits += event.item_id in previous
    body = event.to_dict()
    region.events_sent += 1
    _post_event(client, region, body)
    if sent % RETRY_EVERY == 0:
        region.retries_sent += 1
        _post_event(client, region, body)
    last_answer[event.session_id] = _recommend(client, region, event.session_id)


def _post_event(client: httpx.Client, region: RegionTraffic, body: dict[str, Any]) -> None:
    response = _request(client, region, "POST", "/v1/events", json=body)
    if response.status_code != 202:
        region.failed_requests += 1
        region.rejected += 1
        return
    counts = response.json()
    region.accepted += int(counts.get("accepted", 0))
    region.duplicates += int(counts.get("duplicate", 0))
    region.rejected += int(counts.get("rejected", 0))


def _recommend(client: httpx.Client, region: RegionTraffic, session_id: str) -> frozenset[str]:
    started = time.perf_counter()
    response = _request(
        client,
        region,
        "GET",
        "/v1/recommendations",
        params={"session_id": session_id, "k": RECOMMENDATIONS_K},
    )
    region.recommendation_latency_s.append(time.perf_counter() - started)
    if response.status_code != 200:
        region.failed_requests += 1
        return frozenset()
    answer = response.json()
    region.recommendations += 1
    region.cold_answers += bool(answer.get("cold"))
    region.rules_fired.update(answer.get("rules") or ())
    offers = len(answer.get("offers") or ())
    region.offers += offers
    region.answers_with_offers += offers > 0
    return frozenset(item["item_id"] for item in answer.get("items") or ())


def _request(
    client: httpx.Client, region: RegionTraffic, method: str, path: str, **options: Any
) -> httpx.Response:
    try:
        return client.request(method, path, **options)
    except httpx.HTTPError as exc:
        raise DemoError(
            f"edge {region.edge.name} at {region.edge.base_url} did not answer "
            f"{method} {path}: {exc}"
        ) from exc
