"""The lake's item events as coded tables on the engine, in the trainer's one row order.

:func:`prepare_events` makes, from the view ``lake_events``:

``sess``  one row a session: ``session_id``, ``s`` (its code), ``n`` (its events),
          ``first_ts``, ``last_ts``;
``items`` ``item_id`` → ``i``; ``cats`` ``category`` → ``c``;
``ev``    one row an item event: ``s``, ``k`` (its place in the log), ``i``, ``ts``, ``c``,
          ``price`` (float32), ``type``.

The order is the one the in-memory trainer reads (:func:`central.trainer.eventstore.trainer_log`):
events by time then ``event_id``, grouped by session in the order sessions first appear;
sessions are coded in the order they first appear, items and categories in the order they
first appear in time (then event id), as :meth:`EventLog.by_session` codes them, so
tables built here index items exactly as :func:`central.trainer.tables.build_tables` does.
Only item events (view, click, cart, purchase naming an item) are read, once per
``event_id`` within a session.
"""

from __future__ import annotations

from typing import Final

from central.training.engine import LAKE_VIEW, Engine, scalar
from protocol.events import ITEM_EVENT_TYPES

# A row's place in the log: session code in the high 32 bits, its position in the low.
POSITION_BITS: Final = 4294967296

_TYPES: Final = ", ".join(f"'{name}'" for name in sorted(ITEM_EVENT_TYPES))
_BY_SESSION: Final = "PARTITION BY session_id ORDER BY ts, event_id"


def prepare_events(engine: Engine) -> int:
    """Creates ``sess``, ``items``, ``cats`` and ``ev``; returns the number of events."""
    engine.create(
        "ev_raw",
        f"""
        SELECT session_id, item_id, ts, category, CAST(price AS FLOAT) AS price,
               CAST(type AS STRING) AS type, p, event_id,
               CASE WHEN p = 1 THEN event_id END AS first_id
        FROM (
            SELECT session_id, item_id, ts, category, price, type, event_id,
                   row_number() OVER ({_BY_SESSION}) AS p,
                   lag(event_id) OVER ({_BY_SESSION}) AS previous_id
            FROM {LAKE_VIEW}
            WHERE item_id IS NOT NULL AND CAST(type AS STRING) IN ({_TYPES})
        ) numbered
        WHERE previous_id IS NULL OR previous_id <> event_id
        """,
    )
    engine.create(
        "sess",
        """
        SELECT session_id, n, first_ts, last_ts,
               row_number() OVER (ORDER BY first_ts, first_id) - 1 AS s
        FROM (
            SELECT session_id, count(*) AS n, min(ts) AS first_ts, max(ts) AS last_ts,
                   max(first_id) AS first_id
            FROM ev_raw GROUP BY session_id
        ) sessions
        """,
    )
    engine.create("items", _first_seen("item_id", "i"))
    engine.create("cats", _first_seen("category", "c"))
    engine.create(
        "ev",
        f"""
        SELECT sess.s, sess.s * {POSITION_BITS} + e.p AS k, items.i, e.ts, cats.c, e.price,
               e.type
        FROM ev_raw e
        JOIN sess ON e.session_id = sess.session_id
        JOIN items ON e.item_id = items.item_id
        LEFT JOIN cats ON e.category = cats.category
        """,
    )
    engine.drop("ev_raw")
    return int(scalar(engine, "SELECT count(*) FROM ev") or 0)


def _first_seen(column: str, code: str) -> str:
    """Codes of ``column``'s values in the order they first appear in time (then event id)."""
    return f"""
        SELECT {column}, row_number() OVER (ORDER BY first_ts, first_id) - 1 AS {code}
        FROM (
            SELECT {column}, first_ts, min(event_id) AS first_id
            FROM (
                SELECT {column}, ts, event_id, min(ts) OVER (PARTITION BY {column}) AS first_ts
                FROM ev_raw WHERE {column} IS NOT NULL
            ) timed
            WHERE ts = first_ts GROUP BY {column}, first_ts
        ) firsts
        """
