"""Sends the shop's history through the edges over HTTP, as a shop's server-side logger
would: JSON batches of up to 500 events, in time order, each session to one region.

The start of every batch is sent again (a logger retrying after a lost answer): the edges
must count those events as duplicates, so that what they accept, what JetStream holds and
the distinct events in Kafka can all be compared with what was sent.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from central.eventlog import EventLog
from devtools.demo.edges import EdgeAddress
from devtools.demo.errors import DemoError
from devtools.demo.replay import route_sessions
from devtools.demo.side_by_side import RegionTask, run_side_by_side

HISTORY_ID_PREFIX = "past-"
BATCH_EVENTS = 500  # the edge's limit per request
RETRY_EVENTS = 10  # at the start of each batch, sent again
HTTP_TIMEOUT_S = 30.0
BUSY_RETRIES = 50  # 429/503 answers to wait out per batch, Retry-After apart
_BUSY_PAUSE_CAP_S = 1.0

HistoryProgress = Callable[[int, int], None]  # events sent, events in all


@dataclass(slots=True)
class RegionIngest:
    edge: EdgeAddress
    sessions: int = 0
    events_sent: int = 0
    retries_sent: int = 0  # events sent a second time, same event_id
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


@dataclass(frozen=True, slots=True)
class HistoryReport:
    regions: tuple[RegionIngest, ...]

    def total(self, counter: str) -> int:
        return sum(int(getattr(region, counter)) for region in self.regions)


def send_history(
    log: EventLog, edges: Sequence[EdgeAddress], progress: HistoryProgress | None = None
) -> HistoryReport:
    routing = route_sessions(log, len(edges))
    ingest = tuple(
        RegionIngest(edge, sessions=sessions)
        for edge, sessions in zip(edges, routing.sessions_of_edge, strict=True)
    )
    done = [0] * len(edges)

    def logger(which: int) -> RegionTask:
        def task(stopping: threading.Event) -> None:
            region, rows = ingest[which], routing.rows_of_edge[which]
            with httpx.Client(base_url=region.edge.base_url, timeout=HTTP_TIMEOUT_S) as client:
                for start in range(0, len(rows), BATCH_EVENTS):
                    if stopping.is_set():
                        return
                    batch = [_event(log, row) for row in rows[start : start + BATCH_EVENTS]]
                    done[which] += _send(client, region, batch)

        return task

    run_side_by_side(
        [logger(which) for which in range(len(edges))],
        on_tick=lambda: progress(sum(done), log.n_events) if progress is not None else None,
    )
    return HistoryReport(ingest)


def _event(log: EventLog, row: int) -> dict[str, Any]:
    event = dataclasses.replace(log.event(row), event_id=f"{HISTORY_ID_PREFIX}{row:08d}")
    return event.to_dict()


def _send(client: httpx.Client, region: RegionIngest, batch: list[dict[str, Any]]) -> int:
    _post(client, region, batch)
    region.events_sent += len(batch)
    again = batch[:RETRY_EVENTS]
    _post(client, region, again)
    region.retries_sent += len(again)
    return len(batch)


def _post(client: httpx.Client, region: RegionIngest, batch: list[dict[str, Any]]) -> None:
    for _ in range(BUSY_RETRIES):
        try:
            response = client.post("/v1/events", json=batch)
        except httpx.HTTPError as exc:
            raise DemoError(
                f"edge {region.edge.name} at {region.edge.base_url} did not answer "
                f"POST /v1/events: {exc}"
            ) from exc
        if response.status_code == 202:
            counts = response.json()
            region.accepted += int(counts.get("accepted", 0))
            region.duplicates += int(counts.get("duplicate", 0))
            region.rejected += int(counts.get("rejected", 0))
            return
        if response.status_code not in (429, 503):
            raise DemoError(
                f"edge {region.edge.name} answered {response.status_code} to a batch of "
                f"{len(batch)} events: {response.text[:300]}"
            )
        time.sleep(_pause(response.headers.get("retry-after")))
    raise DemoError(f"edge {region.edge.name} stayed busy through {BUSY_RETRIES} attempts")


def _pause(retry_after: str | None) -> float:
    try:
        seconds = float(retry_after) if retry_after is not None else 0.1
    except ValueError:
        seconds = 0.1
    return max(0.0, min(_BUSY_PAUSE_CAP_S, seconds))
