"""Ties clicks and purchases to the answers that led to them, from the event lake.

Run as one DuckDB query over the lake's Parquet files, out of core, so it survives any
restart by being recomputed from the log (Kafka → lake), never from a process's memory.
The rules, in the order they are applied:

* an answer is an edge's served record (:mod:`protocol.answers`); duplicates of an event
  (the pipeline is at-least-once) are dropped by ``event_id``, of an answer by
  ``request_id``;
* a **click** is attributed to the answer its ``request_id`` names when that answer was
  served to the same session and showed the item, and the click is not earlier than the
  answer by more than the skew tolerance; otherwise it is counted as ``unknown_request``,
  ``foreign_session``, ``item_not_shown`` or ``clock_skew`` and attributed to nothing;
* a **purchase** is attributed to the answer through which the item was last clicked in
  the session within ``purchase_window`` before the purchase (click-through), else to the
  last answer of the session that showed the item within the window (view-through);
  one without a value is counted (``purchase_without_value``) and earns no revenue, one
  in another currency than the shop's or an unknown one likewise (``other_currency``,
  ``unknown_currency``);
* a **session** belongs to the arm (region, bundle, variant) of its first answer; its
  figures are the shown items, attributed clicks, whether it bought anything after its
  first answer, and that revenue. Sessions, not impressions, are the independent units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb

from central.outcomes.errors import OutcomesError
from central.outcomes.moments import Moments

ANOMALIES: Final = (
    "unknown_request",
    "foreign_session",
    "item_not_shown",
    "clock_skew",
    "purchase_without_value",
    "other_currency",
    "unknown_currency",
    "mixed_arms",
)


@dataclass(frozen=True, slots=True)
class AttributionSettings:
    purchase_window_s: int = 3600
    skew_tolerance_s: int = 300
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if not 60 <= self.purchase_window_s <= 30 * 86400:
            raise OutcomesError(
                "purchase window must be 1 min to 30 days", field="purchase_window_s"
            )
        if not 0 <= self.skew_tolerance_s <= 86400:
            raise OutcomesError("skew tolerance must be 0 s to 1 day", field="skew_tolerance_s")
        if len(self.currency) != 3 or not self.currency.isascii() or not self.currency.isupper():
            raise OutcomesError("currency must be an ISO 4217 code such as EUR", field="currency")


@dataclass(frozen=True, slots=True)
class Arm:
    region: str
    bundle: int
    variant: str


@dataclass(frozen=True, slots=True)
class ArmFigures:
    arm: Arm
    ctr: Moments  # x = shown items, y = attributed clicks, per session
    conversion: Moments  # x = 1, y = bought after the first answer
    revenue: Moments  # x = 1, y = revenue after the first answer
    attributed_revenue: float


@dataclass(frozen=True, slots=True)
class Attribution:
    arms: tuple[ArmFigures, ...]
    anomalies: dict[str, int]
    answers: int
    events: int


_SESSIONS_SQL: Final = """
CREATE OR REPLACE TEMP VIEW ev AS
  SELECT * FROM raw QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ts) = 1;
CREATE OR REPLACE TEMP VIEW served AS
  SELECT request_id, session_id, ts, coalesce(region, '') AS region, items,
         CAST(json_extract_string(context, '$.bundle') AS BIGINT) AS bundle,
         json_extract_string(context, '$.variant') AS variant,
         json_extract_string(context, '$.propensities') AS propensities
  FROM ev
  WHERE type = 'impression' AND request_id IS NOT NULL
    AND json_extract_string(context, '$.source') = 'edge'
  QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY ts) = 1;
CREATE OR REPLACE TEMP VIEW shown AS
  SELECT request_id, session_id, ts, unnest(items) AS item_id FROM served;
CREATE OR REPLACE TEMP VIEW clicks AS
  SELECT c.session_id, c.item_id, c.ts, c.request_id,
    CASE WHEN s.request_id IS NULL THEN 'unknown_request'
         WHEN s.session_id <> c.session_id THEN 'foreign_session'
         WHEN NOT list_contains(s.items, c.item_id) THEN 'item_not_shown'
         WHEN c.ts < s.ts - (SELECT skew_ms FROM params) THEN 'clock_skew'
         ELSE 'ok' END AS verdict
  FROM ev c LEFT JOIN served s ON s.request_id = c.request_id
  WHERE c.type = 'click' AND c.request_id IS NOT NULL;
CREATE OR REPLACE TEMP VIEW purchases AS
  SELECT event_id, session_id, item_id, ts, price,
    coalesce(json_extract_string(context, '$.currency'), (SELECT currency FROM params)) AS currency
  FROM ev WHERE type = 'purchase';
CREATE OR REPLACE TEMP VIEW purchase_verdicts AS
  SELECT *, CASE WHEN price IS NULL THEN 'purchase_without_value'
                 WHEN NOT regexp_full_match(currency, '[A-Z]{3}') THEN 'unknown_currency'
                 WHEN currency <> (SELECT currency FROM params) THEN 'other_currency'
                 ELSE 'ok' END AS verdict
  FROM purchases;
CREATE OR REPLACE TEMP VIEW ok_clicks AS
  SELECT session_id, item_id, ts, request_id FROM clicks WHERE verdict = 'ok';
CREATE OR REPLACE TEMP VIEW attributed_purchases AS
  SELECT p.event_id, p.item_id, p.price,
    CASE WHEN c.ts IS NOT NULL AND p.ts - c.ts <= (SELECT window_ms FROM params)
         THEN c.request_id
         WHEN s.ts IS NOT NULL AND p.ts - s.ts <= (SELECT window_ms FROM params)
         THEN s.request_id END AS request_id
  FROM (SELECT * FROM purchase_verdicts WHERE verdict = 'ok') p
  ASOF LEFT JOIN ok_clicks c
    ON c.session_id = p.session_id AND c.item_id = p.item_id AND p.ts >= c.ts
  ASOF LEFT JOIN shown s
    ON s.session_id = p.session_id AND s.item_id = p.item_id AND p.ts >= s.ts;
CREATE OR REPLACE TEMP VIEW first_answer AS
  SELECT session_id, arg_min(region, ts) AS region, arg_min(bundle, ts) AS bundle,
         arg_min(variant, ts) AS variant, min(ts) AS first_ts,
         count(DISTINCT (region, bundle, variant)) > 1 AS mixed,
         sum(len(items)) AS shown
  FROM served GROUP BY session_id;
CREATE OR REPLACE TEMP VIEW session_clicks AS
  SELECT session_id, count(*) AS clicks FROM ok_clicks GROUP BY session_id;
CREATE OR REPLACE TEMP VIEW session_purchases AS
  SELECT f.session_id, count(*) AS purchases,
         sum(CASE WHEN p.verdict = 'ok' THEN p.price ELSE 0 END) AS revenue
  FROM first_answer f JOIN purchase_verdicts p
    ON p.session_id = f.session_id AND p.ts >= f.first_ts
  GROUP BY f.session_id;
CREATE OR REPLACE TEMP VIEW session_figures AS
  SELECT f.region, f.bundle, f.variant, f.mixed, f.shown::DOUBLE AS shown,
    coalesce(c.clicks, 0)::DOUBLE AS clicks,
    (coalesce(p.purchases, 0) > 0)::DOUBLE AS converted,
    coalesce(p.revenue, 0)::DOUBLE AS revenue
  FROM first_answer f
  LEFT JOIN session_clicks c ON c.session_id = f.session_id
  LEFT JOIN session_purchases p ON p.session_id = f.session_id;
"""

_ARMS_SQL: Final = """
SELECT region, bundle, variant, count(*) AS n,
  sum(shown), sum(clicks), sum(shown * shown), sum(clicks * clicks), sum(shown * clicks),
  sum(converted), sum(converted * converted),
  sum(revenue), sum(revenue * revenue)
FROM session_figures GROUP BY region, bundle, variant ORDER BY region, bundle, variant
"""

_ATTRIBUTED_SQL: Final = """
SELECT s.region, s.bundle, s.variant, sum(a.price)
FROM attributed_purchases a JOIN served s ON s.request_id = a.request_id
GROUP BY s.region, s.bundle, s.variant
"""

_ANOMALIES_SQL: Final = """
SELECT verdict, count(*) FROM clicks WHERE verdict <> 'ok' GROUP BY verdict
UNION ALL
SELECT verdict, count(*) FROM purchase_verdicts WHERE verdict <> 'ok' GROUP BY verdict
UNION ALL
SELECT 'mixed_arms', count(*) FROM first_answer WHERE mixed
"""


def attribute(
    files: Sequence[Path],
    settings: AttributionSettings | None = None,
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> Attribution:
    """The figures of every arm found in ``files`` (Parquet files of the event lake)."""
    chosen = settings or AttributionSettings()
    if not files:
        return Attribution((), dict.fromkeys(ANOMALIES, 0), 0, 0)
    db = connection or duckdb.connect()
    try:
        prepare(db, files, chosen)
        rows = db.execute(_ARMS_SQL).fetchall()
        attributed = {
            (str(region), int(bundle or 0), str(variant)): float(total or 0)
            for region, bundle, variant, total in db.execute(_ATTRIBUTED_SQL).fetchall()
        }
        anomaly_rows = db.execute(_ANOMALIES_SQL).fetchall()
        answers = db.execute("SELECT count(*) FROM served").fetchone()
        events = db.execute("SELECT count(*) FROM ev").fetchone()
    except duckdb.Error as exc:
        raise OutcomesError(f"attribution query failed: {exc}") from exc
    anomalies = dict.fromkeys(ANOMALIES, 0)
    for verdict, count in anomaly_rows:
        anomalies[str(verdict)] += int(count)
    return Attribution(
        tuple(_arm(row, attributed) for row in rows),
        anomalies,
        int(answers[0]) if answers else 0,
        int(events[0]) if events else 0,
    )


def prepare(
    db: duckdb.DuckDBPyConnection, files: Sequence[Path], settings: AttributionSettings
) -> None:
    """Creates the attribution's views over ``files`` on ``db`` (``served``, ``shown``,
    ``clicks``, ``ok_clicks``, ``purchase_verdicts``, ``attributed_purchases`` ...)."""
    db.read_parquet([str(path) for path in files], hive_partitioning=False).create_view(
        "raw", replace=True
    )
    db.execute(
        "CREATE OR REPLACE TEMP TABLE params (skew_ms BIGINT, window_ms BIGINT, currency VARCHAR)"
    )
    db.execute(
        "INSERT INTO params VALUES (?, ?, ?)",
        [settings.skew_tolerance_s * 1000, settings.purchase_window_s * 1000, settings.currency],
    )
    for statement in _statements(_SESSIONS_SQL):
        db.execute(statement)


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _arm(row: tuple[Any, ...], attributed: dict[tuple[str, int, str], float]) -> ArmFigures:
    region, bundle, variant, n, sx, sy, sxx, syy, sxy, sc, scc, sr, srr = row
    arm = Arm(str(region), int(bundle or 0), str(variant))
    count = int(n)
    f = [float(value or 0) for value in (sx, sy, sxx, syy, sxy, sc, scc, sr, srr)]
    return ArmFigures(
        arm=arm,
        ctr=Moments(count, f[0], f[1], f[2], f[3], f[4]),
        conversion=Moments(count, float(count), f[5], float(count), f[6], f[5]),
        revenue=Moments(count, float(count), f[7], float(count), f[8], f[7]),
        attributed_revenue=attributed.get((arm.region, arm.bundle, arm.variant), 0.0),
    )
