"""A synthetic shop event log in the generic CSV format, for load and scale work.

The log is built to have the structure a session recommender learns from, so that
benchmarks on it mean something:

* item popularity is Zipf-like and drifts slowly over the span (a few items trend up);
* items belong to latent themes (clusters of related products), each theme to one category,
  and categories set the price range;
* a session browses mostly one or two themes, and the next item is often a neighbour of the
  current one within its theme, or a repeat view of an item already seen;
* session lengths are heavy-tailed; views lead to clicks, carts, the odd removal and, in a
  fraction of sessions, purchases of what is left in the cart;
* users return (one user id over several sessions, leaning towards a home theme), some
  sessions are anonymous; start times follow a daily cycle.

Sessions are simulated in batches with numpy: every batch advances all of its sessions one
step at a time, so the Python work grows with the longest session, not with the event count.
Rows are streamed batch by batch, each session's rows together and in time order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

import numpy as np
import numpy.typing as npt

from protocol.events import MAX_TS_MS

HEADER: Final = "session_id,user_id,item_id,timestamp,event_type,category,price\n"

DAY_MS: Final = 86_400_000
DEFAULT_START_MS: Final = 1_767_225_600_000  # 2026-01-01T00:00:00Z

# Written event types, in the order used to break timestamp ties.
EVENT_TYPE_NAMES: Final = ("view", "click", "add_to_cart", "remove_from_cart", "purchase")
_VIEW, _CLICK, _ADD, _REMOVE, _PURCHASE = range(5)

_BATCH_SESSIONS: Final = 8192
_MAX_SESSION_VIEWS: Final = 200
_MAX_POPULARITY_CELLS: Final = 4_000_000  # epochs x items in the drifting popularity table

# Popularity: Zipf weights by a random rank, drifting log-linearly over the span.
_ZIPF_EXPONENT: Final = 0.9
_DRIFT_SIGMA: Final = 0.4
_TRENDING_SHARE: Final = 0.02
_TRENDING_RISE: Final = (2.5, 4.5)

# Session shape: views per session is 1 + floor(lognormal).
_VIEWS_LOG_MEAN: Final = 1.0
_VIEWS_LOG_SIGMA: Final = 1.0
_SECONDARY_THEME_SHARE: Final = 0.3
_SECONDARY_THEME_PICK: Final = 0.35
_HOME_THEME_SHARE: Final = 0.5

# How each view after the first picks its item.
_STEP_REPEAT: Final = 0
_STEP_NEIGHBOUR: Final = 1
_STEP_THEME: Final = 2
_STEP_ANYWHERE: Final = 3
_STEP_PROBABILITIES: Final = (0.15, 0.40, 0.33, 0.12)
_NEIGHBOUR_DISTANCES: Final = (1, 2, 3)
_NEIGHBOUR_DISTANCE_PROBABILITIES: Final = (0.6, 0.25, 0.15)

# Funnel.
_CLICK_RATE: Final = 0.25
_CART_RATE: Final = 0.03
_CART_RATE_REPEAT_VIEW: Final = 0.12
_REMOVE_RATE: Final = 0.12
_PURCHASE_RATE: Final = 0.45

# Timing within a session (milliseconds).
_GAP_MEDIAN_MS: Final = 25_000.0
_GAP_LOG_SIGMA: Final = 0.9
_GAP_RANGE_MS: Final = (3_000, 1_200_000)
_PAUSE_RATE: Final = 0.03
_PAUSE_RANGE_MS: Final = (180_000, 900_000)
_CHECKOUT_RANGE_MS: Final = (30_000, 240_000)
_CLICK_AT, _ADD_AT, _REMOVE_AT = 0.2, 0.5, 0.8  # fractions of the gap after the view

# Relative traffic by hour of day (UTC), evening-heavy as in most consumer shops.
_HOURLY_TRAFFIC: Final = (
    1.5, 1.0, 0.7, 0.5, 0.5, 0.7, 1.2, 2.0, 3.0, 3.5, 3.8, 4.0,
    4.2, 4.0, 3.8, 3.8, 4.0, 4.5, 5.2, 6.0, 6.3, 5.5, 4.0, 2.5,
)

# Category names with a typical price; more categories than this reuse them with a suffix.
_CATEGORY_PRICES: Final = (
    ("books", 14.0), ("music", 12.0), ("movies", 15.0), ("video-games", 45.0),
    ("software", 60.0), ("phones", 450.0), ("laptops", 900.0), ("tablets", 350.0),
    ("cameras", 520.0), ("headphones", 90.0), ("audio", 160.0), ("tv", 650.0),
    ("smart-home", 70.0), ("computer-accessories", 25.0), ("printers", 180.0),
    ("appliances", 380.0), ("kitchen", 35.0), ("cookware", 55.0), ("furniture", 260.0),
    ("lighting", 45.0), ("bedding", 60.0), ("bath", 22.0), ("garden", 40.0), ("tools", 55.0),
    ("automotive", 35.0), ("toys", 25.0), ("baby", 30.0), ("pet-supplies", 20.0),
    ("grocery", 6.0), ("beverages", 9.0), ("beauty", 18.0), ("fragrance", 65.0),
    ("personal-care", 12.0), ("health", 16.0), ("vitamins", 20.0), ("fitness", 45.0),
    ("sports", 55.0), ("cycling", 120.0), ("camping", 75.0), ("womens-clothing", 40.0),
    ("mens-clothing", 40.0), ("kids-clothing", 20.0), ("shoes", 70.0), ("bags", 60.0),
    ("jewelry", 110.0), ("watches", 180.0), ("office", 15.0), ("stationery", 8.0),
    ("crafts", 12.0), ("party", 10.0),
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What to generate. ``users=None`` means one user per four sessions."""

    sessions: int
    items: int = 20_000
    categories: int = 50
    themes_per_category: int = 8
    users: int | None = None
    anonymous_share: float = 0.3
    seed: int = 0
    start_ms: int = DEFAULT_START_MS
    days: float = 30.0

    def __post_init__(self) -> None:
        if self.sessions < 0:
            raise ValueError(f"sessions must be >= 0, got {self.sessions}")
        if self.categories < 1:
            raise ValueError(f"categories must be >= 1, got {self.categories}")
        if self.items < self.categories:
            raise ValueError(
                f"items ({self.items}) must be at least categories ({self.categories})"
            )
        if self.themes_per_category < 1:
            raise ValueError(
                f"themes_per_category must be >= 1, got {self.themes_per_category}"
            )
        if self.users is not None and self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        if not 0.0 <= self.anonymous_share <= 1.0:
            raise ValueError(f"anonymous_share must be in [0, 1], got {self.anonymous_share}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.start_ms < 0:
            raise ValueError(f"start_ms must be >= 0, got {self.start_ms}")
        if not (math.isfinite(self.days) and self.days > 0):
            raise ValueError(f"days must be a positive number, got {self.days}")
        if self.start_ms + self.span_ms >= MAX_TS_MS:
            raise ValueError("start_ms plus days reaches past the largest timestamp events allow")

    @property
    def span_ms(self) -> int:
        return max(1, int(self.days * DAY_MS))

    @property
    def user_count(self) -> int:
        return self.users if self.users is not None else max(1, self.sessions // 4)


@dataclass(frozen=True, slots=True)
class GenerateStats:
    sessions: int
    events: int
    events_by_type: Mapping[str, int]
    items_used: int
    users: int  # distinct user ids that appear
    anonymous_sessions: int
    purchasing_sessions: int
    first_ts_ms: int | None
    last_ts_ms: int | None


def generate(out: TextIO, config: GeneratorConfig) -> GenerateStats:
    """Writes the header and ``config.sessions`` sessions to ``out``; the same config (seed
    included) always gives the same bytes."""
    rng = np.random.default_rng(config.seed)
    catalog = _build_catalog(config, rng)
    population = _build_population(config, catalog, rng)
    tally = _Tally(config.items, population.count)
    out.write(HEADER)
    for first in range(0, config.sessions, _BATCH_SESSIONS):
        count = min(_BATCH_SESSIONS, config.sessions - first)
        batch = _simulate_batch(first, count, config, catalog, population, rng)
        out.write(_format_rows(batch, catalog, config.sessions, population.count))
        tally.add(batch)
    return tally.freeze(config.sessions)


def generate_file(path: str | Path, config: GeneratorConfig) -> GenerateStats:
    with open(path, "w", encoding="utf-8", newline="") as out:
        return generate(out, config)


# ---------------------------------------------------------------------------------------------
# Catalog: items laid out theme by theme, so a theme is a contiguous index range.


@dataclass(frozen=True, slots=True)
class _Catalog:
    item_count: int
    theme_start: IntArray
    theme_size: IntArray
    theme_of_item: IntArray
    typical_price_ratio: FloatArray  # category typical price / item price
    item_ids: list[str]
    item_tails: list[str]  # ",category,price" per item
    # Per epoch, the running share of popularity over items with a leading 0, each row
    # offset by 2 * epoch so the flattened table is increasing and one search serves all.
    popularity: FloatArray
    epochs: int

    def draw(
        self, epoch: IntArray, theme: IntArray, uniform: FloatArray
    ) -> IntArray:
        """Popularity draws at ``epoch`` within ``theme`` (-1: the whole catalog)."""
        whole = theme < 0
        safe_theme = np.where(whole, 0, theme)
        first = np.where(whole, 0, self.theme_start[safe_theme])
        count = np.where(whole, self.item_count, self.theme_size[safe_theme])
        row = epoch * (self.item_count + 1)
        low = self.popularity[row + first]
        high = self.popularity[row + first + count]
        found = np.searchsorted(self.popularity, low + uniform * (high - low), side="right")
        drawn: IntArray = np.clip(found - 1 - row, first, first + count - 1).astype(np.int64)
        return drawn

    def neighbour(self, item: IntArray, step: IntArray) -> IntArray:
        theme = self.theme_of_item[item]
        start = self.theme_start[theme]
        return start + (item - start + step) % self.theme_size[theme]


def _build_catalog(config: GeneratorConfig, rng: np.random.Generator) -> _Catalog:
    items = config.items
    themes = min(config.categories * config.themes_per_category, items)
    sizes = 1 + rng.multinomial(items - themes, _normalised(rng.lognormal(0.0, 0.6, themes)))
    theme_size = sizes.astype(np.int64)
    theme_start = np.concatenate(([0], np.cumsum(theme_size)[:-1])).astype(np.int64)
    theme_of_item = np.repeat(np.arange(themes, dtype=np.int64), theme_size)
    category_of_item = theme_of_item % config.categories

    names, typical = _category_names_and_prices(config.categories, rng)
    theme_price_factor = rng.lognormal(0.0, 0.3, themes)
    price = typical[category_of_item] * theme_price_factor[theme_of_item]
    price = np.maximum(0.5, price * rng.lognormal(0.0, 0.45, items))
    charm = (rng.random(items) < 0.6) & (price > 2.0)
    price = np.where(charm, np.floor(price) + 0.99, np.round(price, 2))

    # Item ids are a random permutation, so neither id order nor layout reveals a theme.
    width = len(str(items - 1))
    id_numbers = rng.permutation(items)
    item_ids = [f"i{n:0{width}d}" for n in id_numbers.tolist()]
    item_tails = [
        f",{names[category]},{amount:.2f}"
        for category, amount in zip(category_of_item.tolist(), price.tolist(), strict=True)
    ]

    epochs = max(1, min(math.ceil(config.days), 64, _MAX_POPULARITY_CELLS // items))
    return _Catalog(
        item_count=items,
        theme_start=theme_start,
        theme_size=theme_size,
        theme_of_item=theme_of_item,
        typical_price_ratio=typical[category_of_item] / price,
        item_ids=item_ids,
        item_tails=item_tails,
        popularity=_popularity_table(items, epochs, rng),
        epochs=epochs,
    )


def _category_names_and_prices(
    categories: int, rng: np.random.Generator
) -> tuple[list[str], FloatArray]:
    names: list[str] = []
    prices: list[float] = []
    for index in range(categories):
        name, price = _CATEGORY_PRICES[index % len(_CATEGORY_PRICES)]
        round_ = index // len(_CATEGORY_PRICES)
        if round_:
            name = f"{name}-{round_ + 1}"
            price *= float(rng.lognormal(0.0, 0.3))
        names.append(name)
        prices.append(price)
    return names, np.asarray(prices, dtype=np.float64)


def _popularity_table(items: int, epochs: int, rng: np.random.Generator) -> FloatArray:
    rank = rng.permutation(items) + 1
    base = -_ZIPF_EXPONENT * np.log(rank.astype(np.float64))
    trend = rng.normal(0.0, _DRIFT_SIGMA, items)
    trending = rng.random(items) < _TRENDING_SHARE
    trend[trending] = rng.uniform(*_TRENDING_RISE, int(trending.sum()))
    position = (np.arange(epochs, dtype=np.float64) + 0.5) / epochs - 0.5
    log_weight = base[None, :] + trend[None, :] * position[:, None]
    weight = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
    share = np.cumsum(weight, axis=1)
    share /= share[:, -1:]
    table = np.concatenate((np.zeros((epochs, 1)), share), axis=1)
    table += 2.0 * np.arange(epochs, dtype=np.float64)[:, None]
    return table.ravel()


def _normalised(weights: FloatArray) -> FloatArray:
    normalised: FloatArray = weights / weights.sum()
    return normalised


# ---------------------------------------------------------------------------------------------
# Users: activity is skewed (a few users come back often), each leans towards a home theme.


@dataclass(frozen=True, slots=True)
class _Population:
    count: int
    activity: FloatArray  # running share, for drawing the user of a session
    home_theme: IntArray


def _build_population(
    config: GeneratorConfig, catalog: _Catalog, rng: np.random.Generator
) -> _Population:
    count = config.user_count
    weight = rng.permutation(count).astype(np.float64) + 1.0
    activity = np.cumsum(weight**-0.5)
    activity /= activity[-1]
    favourite = catalog.draw(
        rng.integers(0, catalog.epochs, count), np.full(count, -1), rng.random(count)
    )
    return _Population(count, activity, catalog.theme_of_item[favourite])


# ---------------------------------------------------------------------------------------------
# One batch of sessions.


@dataclass(frozen=True, slots=True)
class _Batch:
    first_session: int
    session_count: int
    user: IntArray  # per session, -1 for anonymous
    # Per row, sorted by session then time.
    session: IntArray
    item: IntArray
    ts: IntArray
    event_type: IntArray


def _simulate_batch(
    first: int,
    count: int,
    config: GeneratorConfig,
    catalog: _Catalog,
    population: _Population,
    rng: np.random.Generator,
) -> _Batch:
    span = config.span_ms
    start = _session_starts(count, span, rng)
    epoch = np.minimum(start * catalog.epochs // span, catalog.epochs - 1)

    anonymous = rng.random(count) < config.anonymous_share
    user = np.searchsorted(population.activity, rng.random(count), side="right")
    user = np.where(anonymous, -1, np.minimum(user, population.count - 1)).astype(np.int64)

    everywhere = np.full(count, -1, dtype=np.int64)
    popular_theme = catalog.theme_of_item[catalog.draw(epoch, everywhere, rng.random(count))]
    at_home = (user >= 0) & (rng.random(count) < _HOME_THEME_SHARE)
    primary = np.where(at_home, population.home_theme[np.maximum(user, 0)], popular_theme)
    secondary_theme = catalog.theme_of_item[catalog.draw(epoch, everywhere, rng.random(count))]
    secondary = np.where(rng.random(count) < _SECONDARY_THEME_SHARE, secondary_theme, -1)

    views = 1 + np.floor(rng.lognormal(_VIEWS_LOG_MEAN, _VIEWS_LOG_SIGMA, count))
    views = np.minimum(views, _MAX_SESSION_VIEWS).astype(np.int64)
    browse_item, browse_repeat = _browse(views, epoch, primary, secondary, catalog, rng)

    rows = _funnel(views, browse_item, browse_repeat, catalog, rng)
    rel_ts = rows.rel_ts
    duration = np.zeros(count, dtype=np.int64)
    np.maximum.at(duration, rows.session, rel_ts)
    # Only a span shorter than a session squeezes it; otherwise a late start moves earlier.
    squeeze = np.minimum(1.0, (span - 1) / np.maximum(duration, 1))
    rel_ts = np.floor(rel_ts * squeeze[rows.session]).astype(np.int64)
    duration = np.floor(duration * squeeze).astype(np.int64)
    start = np.minimum(start, span - 1 - duration)
    ts = config.start_ms + start[rows.session] + rel_ts

    order = np.lexsort((rows.event_type, ts, rows.session))
    return _Batch(
        first_session=first,
        session_count=count,
        user=user,
        session=rows.session[order],
        item=rows.item[order],
        ts=ts[order],
        event_type=rows.event_type[order],
    )


def _session_starts(count: int, span: int, rng: np.random.Generator) -> IntArray:
    hourly = _normalised(np.asarray(_HOURLY_TRAFFIC, dtype=np.float64))
    hour = rng.choice(24, size=count, p=hourly)
    time_of_day = hour * 3_600_000 + rng.integers(0, 3_600_000, count)
    day = rng.integers(0, max(1, math.ceil(span / DAY_MS)), count)
    return ((day * DAY_MS + time_of_day) % span).astype(np.int64)


def _browse(
    views: IntArray,
    epoch: IntArray,
    primary: IntArray,
    secondary: IntArray,
    catalog: _Catalog,
    rng: np.random.Generator,
) -> tuple[IntArray, BoolArray]:
    """The viewed items of each session, flattened session by session, and which of them
    repeat an item seen earlier in the session by choice (a revisit)."""
    count = int(views.shape[0])
    longest = int(views.max())
    # Longest first, so the sessions still going at a step are a prefix of the rows.
    by_length = np.argsort(-views, kind="stable")
    lengths = views[by_length]
    cells = np.arange(longest)[None, :] < lengths[:, None]
    cell_row, cell_step = np.nonzero(cells)
    cell_count = int(cell_row.shape[0])

    kind = _categorical(_STEP_PROBABILITIES, cell_count, rng).astype(np.int8)
    kind[cell_step == 0] = _STEP_THEME
    step_kind = np.zeros((count, longest), dtype=np.int8)
    step_kind[cells] = kind
    # Fresh draws do not depend on the walk, so all of them are made up front.
    session_secondary = secondary[by_length][cell_row]
    use_secondary = (session_secondary >= 0) & (rng.random(cell_count) < _SECONDARY_THEME_PICK)
    theme = np.where(use_secondary, session_secondary, primary[by_length][cell_row])
    theme = np.where(kind == _STEP_ANYWHERE, -1, theme)
    walk = np.zeros((count, longest), dtype=np.int64)
    walk[cells] = catalog.draw(epoch[by_length][cell_row], theme, rng.random(cell_count))

    still_going = np.searchsorted(-lengths, -np.arange(longest), side="left")
    distances = np.asarray(_NEIGHBOUR_DISTANCES, dtype=np.int64)
    for step in range(1, longest):
        kinds = step_kind[: int(still_going[step]), step]
        rows = np.flatnonzero(kinds == _STEP_NEIGHBOUR)
        distance = distances[_categorical(_NEIGHBOUR_DISTANCE_PROBABILITIES, rows.shape[0], rng)]
        direction = np.where(rng.random(rows.shape[0]) < 0.5, -1, 1)
        walk[rows, step] = catalog.neighbour(walk[rows, step - 1], distance * direction)
        rows = np.flatnonzero(kinds == _STEP_REPEAT)
        earlier = (rng.random(rows.shape[0]) * step).astype(np.int64)
        walk[rows, step] = walk[rows, earlier]

    sorted_row = np.empty_like(by_length)
    sorted_row[by_length] = np.arange(count)
    session = np.repeat(np.arange(count), views)
    step_of_view = np.arange(session.shape[0]) - np.repeat(np.cumsum(views) - views, views)
    row = sorted_row[session]
    return walk[row, step_of_view], step_kind[row, step_of_view] == _STEP_REPEAT


def _categorical(
    probabilities: tuple[float, ...], size: int, rng: np.random.Generator
) -> IntArray:
    bounds = np.cumsum(probabilities)[:-1]
    picked: IntArray = np.searchsorted(bounds, rng.random(size), side="right").astype(np.int64)
    return picked


@dataclass(frozen=True, slots=True)
class _Rows:
    session: IntArray
    item: IntArray
    rel_ts: IntArray  # milliseconds since the session's start
    event_type: IntArray


def _funnel(
    views: IntArray,
    item: IntArray,
    revisit: BoolArray,
    catalog: _Catalog,
    rng: np.random.Generator,
) -> _Rows:
    """Views with their clicks, cart changes and purchases, timed within each session."""
    total = int(item.shape[0])
    count = int(views.shape[0])
    session = np.repeat(np.arange(count, dtype=np.int64), views)
    session_first = np.concatenate(([0], np.cumsum(views)[:-1])).astype(np.int64)
    step = np.arange(total, dtype=np.int64) - session_first[session]

    gap = rng.lognormal(math.log(_GAP_MEDIAN_MS), _GAP_LOG_SIGMA, total)
    gap = np.clip(gap, *_GAP_RANGE_MS)
    paused = rng.random(total) < _PAUSE_RATE
    gap[paused] += rng.uniform(*_PAUSE_RANGE_MS, int(paused.sum()))
    gap = np.floor(gap).astype(np.int64)
    elapsed = np.cumsum(gap)
    at = elapsed - gap - (elapsed - gap)[session_first][session]

    clicked = rng.random(total) < _CLICK_RATE

    cart_rate = np.where(revisit, _CART_RATE_REPEAT_VIEW, _CART_RATE)
    cart_rate = cart_rate * np.clip(np.sqrt(catalog.typical_price_ratio[item]), 0.5, 2.0)
    wants = np.flatnonzero(rng.random(total) < cart_rate)
    # An item goes into the cart once per session: keep the first view that adds it.
    pair = session[wants] * catalog.item_count + item[wants]
    _, first_of_pair = np.unique(pair, return_index=True)
    added = np.sort(wants[first_of_pair])

    removed_mask = rng.random(added.shape[0]) < _REMOVE_RATE
    removed = added[removed_mask]
    views_left = views[session[removed]] - step[removed]
    removed_at_view = removed + (rng.random(removed.shape[0]) * views_left).astype(np.int64)

    kept = added[~removed_mask]
    kept_session = session[kept]
    buyers = np.flatnonzero(rng.random(count) < _PURCHASE_RATE)
    bought = kept[np.isin(kept_session, buyers)]
    bought_session = session[bought]
    last_view = session_first + views - 1
    checkout = at[last_view] + gap[last_view]
    checkout += rng.integers(*_CHECKOUT_RANGE_MS, count)
    line = np.arange(bought.shape[0]) - np.searchsorted(bought_session, bought_session)

    return _Rows(
        session=np.concatenate(
            (session, session[clicked], session[added], session[removed], bought_session)
        ),
        item=np.concatenate((item, item[clicked], item[added], item[removed], item[bought])),
        rel_ts=np.concatenate(
            (
                at,
                at[clicked] + (gap[clicked] * _CLICK_AT).astype(np.int64),
                at[added] + (gap[added] * _ADD_AT).astype(np.int64),
                at[removed_at_view] + (gap[removed_at_view] * _REMOVE_AT).astype(np.int64),
                checkout[bought_session] + 1_000 * line,
            )
        ),
        event_type=np.concatenate(
            (
                np.full(total, _VIEW),
                np.full(int(clicked.sum()), _CLICK),
                np.full(added.shape[0], _ADD),
                np.full(removed.shape[0], _REMOVE),
                np.full(bought.shape[0], _PURCHASE),
            )
        ).astype(np.int64),
    )


# ---------------------------------------------------------------------------------------------
# Output.


def _format_rows(batch: _Batch, catalog: _Catalog, sessions: int, users: int) -> str:
    session_width = max(8, len(str(sessions - 1)))
    user_width = max(7, len(str(users - 1)))
    prefixes = [
        f"s{batch.first_session + index:0{session_width}d},"
        + (f"u{user:0{user_width}d}," if user >= 0 else ",")
        for index, user in enumerate(batch.user.tolist())
    ]
    item_ids = catalog.item_ids
    item_tails = catalog.item_tails
    return "".join(
        [
            f"{prefixes[s]}{item_ids[i]},{t},{EVENT_TYPE_NAMES[k]}{item_tails[i]}\n"
            for s, i, t, k in zip(
                batch.session.tolist(),
                batch.item.tolist(),
                batch.ts.tolist(),
                batch.event_type.tolist(),
                strict=True,
            )
        ]
    )


class _Tally:
    def __init__(self, items: int, users: int) -> None:
        self._items_seen = np.zeros(items, dtype=np.bool_)
        self._users_seen = np.zeros(users, dtype=np.bool_)
        self._by_type = np.zeros(len(EVENT_TYPE_NAMES), dtype=np.int64)
        self._anonymous = 0
        self._purchasing = 0
        self._first_ts: int | None = None
        self._last_ts: int | None = None

    def add(self, batch: _Batch) -> None:
        self._items_seen[batch.item] = True
        known = batch.user[batch.user >= 0]
        self._users_seen[known] = True
        self._anonymous += batch.session_count - known.shape[0]
        self._by_type += np.bincount(batch.event_type, minlength=len(EVENT_TYPE_NAMES))
        purchases = batch.session[batch.event_type == _PURCHASE]
        self._purchasing += int(np.unique(purchases).shape[0])
        if batch.ts.shape[0]:
            low, high = int(batch.ts.min()), int(batch.ts.max())
            self._first_ts = low if self._first_ts is None else min(self._first_ts, low)
            self._last_ts = high if self._last_ts is None else max(self._last_ts, high)

    def freeze(self, sessions: int) -> GenerateStats:
        return GenerateStats(
            sessions=sessions,
            events=int(self._by_type.sum()),
            events_by_type=dict(zip(EVENT_TYPE_NAMES, self._by_type.tolist(), strict=True)),
            items_used=int(self._items_seen.sum()),
            users=int(self._users_seen.sum()),
            anonymous_sessions=self._anonymous,
            purchasing_sessions=self._purchasing,
            first_ts_ms=self._first_ts,
            last_ts_ms=self._last_ts,
        )
