"""Candidate tables as queries on the engine, equal to :func:`central.trainer.tables.build_tables`.

Each table is the in-memory builder's, restated in SQL that DuckDB and Spark both run
over ``ev`` (:mod:`central.training.events`), limited to the sessions a ``scope``
condition on ``plan`` admits. Only the results come into Python, as Arrow: the
neighbour lists, the counts and attributes per item, the session index.

* co-visitation: a repeated item (view then click) is one step; each pair up to
  ``covis_distance`` positions apart adds ``float32(1/distance)`` to both directions,
  summed in float64 and kept as float32; an item's neighbours are its best
  ``covis_neighbours``, ties to the lower item code;
* popularity: events per item, overall and since ``recent_days`` before the last event;
* attributes: each item's latest known category and price (by time, then log order);
* session index: the ``max_sessions`` sessions that ended last (ties to the later
  session), their distinct items, and per item its ``sessions_per_item`` latest sessions.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from central.errors import TrainingError
from central.trainer.tables import DAY_MS, TableConfig
from central.training.engine import Engine, scalar
from protocol.tables import CandidateTables

_SCOPED: Final = ("sub", "sub_items", "subj", "kept", "ahead", "pairs", "sub_sess", "sess_pairs")


def build_tables(engine: Engine, config: TableConfig, scope: str | None = None) -> CandidateTables:
    """Tables over the events of the sessions ``scope`` admits (a condition on ``plan``'s
    columns; every session when None)."""
    if scope is None:
        engine.create("sub", "SELECT s, k, i, ts, c, price FROM ev")
    else:
        engine.create(
            "sub",
            "SELECT ev.s, ev.k, ev.i, ev.ts, ev.c, ev.price FROM ev "
            f"JOIN plan ON ev.s = plan.s WHERE {scope}",
        )
    try:
        return _build(engine, config)
    finally:
        for name in _SCOPED:
            engine.drop(name)


def _build(engine: Engine, config: TableConfig) -> CandidateTables:
    newest = scalar(engine, "SELECT max(ts) FROM sub")
    if newest is None:
        raise TrainingError("cannot build candidate tables from an empty log")
    engine.create(
        "sub_items",
        "SELECT i, row_number() OVER (ORDER BY i) - 1 AS j FROM (SELECT DISTINCT i FROM sub) d",
    )
    engine.create(
        "subj",
        "SELECT sub.s, sub.k, sub_items.j, sub.ts, sub.c, sub.price "
        "FROM sub JOIN sub_items ON sub.i = sub_items.i",
    )
    engine.drop("sub")
    item_ids = _strings(
        engine.arrow(
            "SELECT items.item_id FROM sub_items JOIN items ON sub_items.i = items.i ORDER BY j"
        )
    )
    n_items = len(item_ids)
    recent_from = int(newest) - int(config.recent_days * DAY_MS)
    counts = engine.arrow(
        f"SELECT j, count(*) AS n, sum(CASE WHEN ts >= {recent_from} THEN 1 ELSE 0 END) AS r "
        "FROM subj GROUP BY j ORDER BY j"
    )
    pop_all = np.zeros(n_items, dtype=np.float32)
    pop_recent = np.zeros(n_items, dtype=np.float32)
    rows = _ints(counts, "j")
    pop_all[rows] = _ints(counts, "n")
    pop_recent[rows] = _ints(counts, "r")
    category, categories = _categories(engine, n_items)
    covis = _covisitation(engine, n_items, config)
    sessions = _session_index(engine, n_items, config)
    return CandidateTables(
        item_ids=item_ids,
        categories=categories,
        covis_indptr=covis[0],
        covis_indices=covis[1],
        covis_weights=covis[2],
        pop_all=pop_all,
        pop_recent=pop_recent,
        category=category,
        price=_latest_price(engine, n_items),
        sess_indptr=sessions[0],
        sess_items=sessions[1],
        item_sess_indptr=sessions[2],
        item_sess=sessions[3],
    )


def _latest(column: str) -> str:
    return (
        f"SELECT j, {column} FROM (SELECT j, {column}, row_number() OVER "
        f"(PARTITION BY j ORDER BY ts DESC, k DESC) AS rn FROM subj "
        f"WHERE {column} IS NOT NULL) latest WHERE rn = 1"
    )


def _categories(engine: Engine, n_items: int) -> tuple[npt.NDArray[np.int32], list[str]]:
    latest = engine.arrow(_latest("c"))
    raw = np.full(n_items, -1, dtype=np.int64)
    raw[_ints(latest, "j")] = _ints(latest, "c")
    used = np.unique(raw[raw >= 0])
    codes = np.full(n_items, -1, dtype=np.int32)
    has = raw >= 0
    codes[has] = np.searchsorted(used, raw[has]).astype(np.int32)
    if used.shape[0] == 0:
        return codes, []
    listed = ", ".join(str(int(c)) for c in used)
    names = engine.arrow(f"SELECT category FROM cats WHERE c IN ({listed}) ORDER BY c")
    return codes, _strings(names)


def _latest_price(engine: Engine, n_items: int) -> npt.NDArray[np.float32]:
    latest = engine.arrow(_latest("price"))
    out = np.full(n_items, np.nan, dtype=np.float32)
    out[_ints(latest, "j")] = latest.column("price").to_numpy().astype(np.float32)
    return out


def _covisitation(
    engine: Engine, n_items: int, config: TableConfig
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    distances = range(1, config.covis_distance + 1)
    engine.create(
        "kept",
        "SELECT s, k, j FROM (SELECT s, k, j, lag(j) OVER (PARTITION BY s ORDER BY k) AS "
        "previous FROM subj) steps WHERE previous IS NULL OR previous <> j",
    )
    leads = ", ".join(f"lead(j, {d}) OVER (PARTITION BY s ORDER BY k) AS b{d}" for d in distances)
    steps = " UNION ALL ".join(
        f"SELECT least(j, b{d}) AS x, greatest(j, b{d}) AS y, "
        f"CAST({float(np.float32(1.0 / d))!r} AS DOUBLE) AS w "
        f"FROM ahead WHERE b{d} IS NOT NULL AND b{d} <> j"
        for d in distances
    )
    engine.create("ahead", f"SELECT j, {leads} FROM kept")
    engine.drop("kept")
    engine.create("pairs", f"SELECT x, y, sum(w) AS t FROM ({steps}) steps GROUP BY x, y")
    engine.drop("ahead")
    found = engine.arrow(
        "SELECT source, target, weight FROM ("
        "SELECT source, target, weight, row_number() OVER "
        "(PARTITION BY source ORDER BY weight DESC, target) AS rank FROM ("
        "SELECT x AS source, y AS target, CAST(t AS FLOAT) AS weight FROM pairs UNION ALL "
        "SELECT y AS source, x AS target, CAST(t AS FLOAT) AS weight FROM pairs) both_ways"
        f") ranked WHERE rank <= {config.covis_neighbours} ORDER BY source, rank"
    )
    source = _ints(found, "source")
    indptr = _indptr(source, n_items)
    return (
        indptr,
        _ints(found, "target").astype(np.int32),
        found.column("weight").to_numpy().astype(np.float32),
    )


def _session_index(
    engine: Engine, n_items: int, config: TableConfig
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int32]
]:
    total = int(scalar(engine, "SELECT count(DISTINCT s) FROM subj") or 0)
    kept = min(total, config.max_sessions)
    engine.create(
        "sub_sess",
        f"SELECT s, {kept} - back AS rank FROM (SELECT s, row_number() OVER "
        "(ORDER BY ended DESC, s DESC) AS back FROM (SELECT s, max(ts) AS ended FROM subj "
        f"GROUP BY s) ends) numbered WHERE back <= {kept}",
    )
    engine.create(
        "sess_pairs",
        "SELECT DISTINCT sub_sess.rank, subj.j FROM subj JOIN sub_sess ON subj.s = sub_sess.s",
    )
    pairs = engine.arrow("SELECT rank, j FROM sess_pairs ORDER BY rank, j")
    sess_indptr = _indptr(_ints(pairs, "rank"), kept)
    sess_items = _ints(pairs, "j").astype(np.int32)
    del pairs
    by_item = engine.arrow(
        "SELECT j, rank FROM (SELECT j, rank, row_number() OVER (PARTITION BY j ORDER BY "
        f"rank DESC) AS r FROM sess_pairs) latest WHERE r <= {config.sessions_per_item} "
        "ORDER BY j, r"
    )
    item_indptr = _indptr(_ints(by_item, "j"), n_items)
    return sess_indptr, sess_items, item_indptr, _ints(by_item, "rank").astype(np.int32)


def _indptr(rows: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    return np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=n)))).astype(np.int64)


def _ints(table: pa.Table, column: str) -> npt.NDArray[np.int64]:
    return np.asarray(table.column(column).to_numpy(), dtype=np.int64)


def _strings(table: pa.Table) -> list[str]:
    return [str(value) for value in table.column(0).to_pylist()]
