"""Logged answers from the lake, and what a candidate bundle would have shown instead.

:func:`read_logged` reads the edges' served records with their propensities and, per
shown item, its reward — an attributed click, or the value of an attributed purchase —
together with the events of those sessions. :func:`replay_slates` replays each session up
to the moment of each answer through the serving code (:class:`protocol.serving.
ServingModel`, the same featurize seam as the edge) and asks the candidate for its slate,
as of the answer's time. :mod:`central.outcomes.ope` then weighs the two.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb

from central.outcomes.attribution import AttributionSettings, prepare
from central.outcomes.errors import LoggedDataError, OutcomesError
from central.outcomes.ope import LoggedAnswer
from protocol.answers import decode_propensities
from protocol.errors import EventError
from protocol.events import Event
from protocol.serving import ServingModel
from protocol.window import SessionWindow

Reward = Literal["click", "purchase"]

_ANSWERS_SQL = """
SELECT s.request_id, s.session_id, s.ts, s.bundle, s.variant, s.items, s.propensities,
  list(DISTINCT c.item_id) FILTER (WHERE c.item_id IS NOT NULL) AS clicked
FROM served s LEFT JOIN ok_clicks c ON c.request_id = s.request_id
WHERE s.propensities IS NOT NULL
GROUP BY ALL ORDER BY s.session_id, s.ts LIMIT ?
"""

_PURCHASES_SQL = """
SELECT request_id, item_id, sum(price) FROM attributed_purchases
WHERE request_id IS NOT NULL GROUP BY ALL
"""

_SESSION_EVENTS_SQL = """
SELECT e.event_id, e.session_id, e.type::VARCHAR, e.ts, e.item_id, e.category, e.price,
       e.request_id, e.context
FROM ev e SEMI JOIN (SELECT DISTINCT session_id FROM chosen) c ON c.session_id = e.session_id
WHERE NOT (e.type = 'impression' AND json_extract_string(e.context, '$.source') = 'edge')
ORDER BY e.session_id, e.ts
"""


@dataclass(frozen=True, slots=True)
class LoggedServe:
    answer: LoggedAnswer
    session_id: str
    ts: int
    bundle: int
    variant: str


@dataclass(frozen=True, slots=True)
class LoggedLog:
    serves: tuple[LoggedServe, ...]
    session_events: dict[str, list[Event]]

    @property
    def answers(self) -> list[LoggedAnswer]:
        return [serve.answer for serve in self.serves]


def read_logged(
    files: Sequence[Path],
    *,
    reward: Reward = "click",
    max_answers: int = 200_000,
    settings: AttributionSettings | None = None,
) -> LoggedLog:
    """The served answers (at most ``max_answers``, whole sessions first) and their sessions."""
    if not files:
        raise OutcomesError("the lake holds no data files", field="logged")
    db = duckdb.connect()
    try:
        prepare(db, files, settings or AttributionSettings())
        rows = db.execute(_ANSWERS_SQL, [max_answers]).fetchall()
        purchases: dict[tuple[str, str], float] = {}
        if reward == "purchase":
            for request_id, item_id, value in db.execute(_PURCHASES_SQL).fetchall():
                purchases[(str(request_id), str(item_id))] = float(value or 0)
        db.execute("CREATE TEMP TABLE chosen (session_id VARCHAR)")
        db.executemany("INSERT INTO chosen VALUES (?)", [[row[1]] for row in rows])
        event_rows = db.execute(_SESSION_EVENTS_SQL).fetchall()
    except duckdb.Error as exc:
        raise OutcomesError(f"reading logged answers failed: {exc}") from exc
    serves = tuple(_serve(row, reward, purchases) for row in rows)
    sessions: dict[str, list[Event]] = {}
    for event_row in event_rows:
        sessions.setdefault(str(event_row[1]), []).append(_event(event_row))
    return LoggedLog(serves, sessions)


def _serve(
    row: tuple[Any, ...], reward: Reward, purchases: dict[tuple[str, str], float]
) -> LoggedServe:
    request_id, session_id, ts, bundle, variant, items, propensities, clicked = row
    shown = tuple(str(item) for item in items)
    try:
        weights = decode_propensities(str(propensities), len(shown))
    except EventError as exc:
        raise LoggedDataError(f"answer {request_id}: {exc.message}", field=exc.field) from exc
    if reward == "click":
        hits = set(clicked or ())
        rewards = tuple(1.0 if item in hits else 0.0 for item in shown)
    else:
        rewards = tuple(purchases.get((str(request_id), item), 0.0) for item in shown)
    return LoggedServe(
        LoggedAnswer(str(request_id), shown, weights, rewards),
        str(session_id),
        int(ts),
        int(bundle or 0),
        str(variant),
    )


def _event(row: tuple[Any, ...]) -> Event:
    event_id, session_id, kind, ts, item_id, category, price, request_id, context = row
    return Event(
        event_id=str(event_id),
        session_id=str(session_id),
        type=kind,
        ts=int(ts),
        item_id=item_id,
        category=category,
        price=price,
        request_id=request_id,
        context=json.loads(context) if context else None,
    )


def replay_slates(model: ServingModel, log: LoggedLog) -> dict[str, list[str]]:
    """Per answer, the slate ``model`` would have shown, of the answer's length."""
    slates: dict[str, list[str]] = {}
    by_session: dict[str, list[LoggedServe]] = {}
    for serve in log.serves:
        by_session.setdefault(serve.session_id, []).append(serve)
    item_ids = model.tables.item_ids
    for session_id, serves in by_session.items():
        events = log.session_events.get(session_id, [])
        window = SessionWindow(session_id, model.window_config)
        position = 0
        for serve in sorted(serves, key=lambda s: s.ts):
            while position < len(events) and events[position].ts < serve.ts:
                window.add(events[position])
                position += 1
            ranking = model.rank(window, len(serve.answer.shown), serve.ts)
            slates[serve.answer.request_id] = [item_ids[int(code)] for code in ranking.items]
    return slates
