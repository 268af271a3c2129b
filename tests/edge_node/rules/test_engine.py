from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge_node.rules import RuleOutcome, RuleRequest, RuleSet
from edge_node.rules.model import MAX_OFFERS_PER_RESPONSE
from protocol.events import EventType
from protocol.window import SessionWindow
from tests.edge_node.rules import (
    MINUTE,
    NOW,
    FakeCatalog,
    document,
    event,
    request,
    rule,
    window_of,
)

SEED = Path(__file__).resolve().parents[3] / "examples" / "rules" / "seed.yaml"
POOL = [f"i{n}" for n in range(20)]
SCORES = [round(1.0 - n / 20, 2) for n in range(20)]
CATALOG = FakeCatalog(
    {item: ("shoes" if n % 2 else "socks") for n, item in enumerate(POOL)},
    {item: float(10 * n) for n, item in enumerate(POOL) if n != 3},
)
VIEWED_TWICE = {"events": {"type": "view", "within": "10m", "at_least": 2, "per_item": True}}


def apply(
    rules: RuleSet | bytes,
    window: SessionWindow | None = None,
    req: RuleRequest | None = None,
    *,
    k: int = 5,
    items: list[str] | None = None,
    scores: list[float] | None = None,
) -> RuleOutcome:
    ruleset = rules if isinstance(rules, RuleSet) else RuleSet.parse(rules)
    return ruleset.apply(
        POOL if items is None else items, SCORES if scores is None else scores,
        window or window_of(), req or request(), CATALOG, k,
    )


def acting(*actions: dict[str, Any], when: dict[str, Any] | None = None) -> bytes:
    keys: dict[str, Any] = {} if when is None else {"when": when}
    return document(rule("act", then=list(actions), **keys))


# -- the seed rule -------------------------------------------------------------------------


def seed_outcome(*events: tuple[int, EventType, str]) -> RuleOutcome:
    window = window_of(*(event(NOW - ago * MINUTE, kind, item) for ago, kind, item in events))
    return apply(RuleSet.parse(SEED.read_bytes()), window, k=5)


def test_seed_rule_fires_after_two_views_within_ten_minutes() -> None:
    outcome = seed_outcome((9, "view", "i7"), (0, "view", "i7"))
    assert outcome.fired[0] == "second-look-discount"
    assert outcome.offers == [{
        "kind": "discount", "percent": 10, "code": "SECONDLOOK",
        "rule": "second-look-discount", "item": "i7",
    }]
    assert outcome.items == ["i7", "i0", "i1", "i2", "i3"]
    assert outcome.scores[0] == SCORES[7]


def test_seed_rule_does_not_fire_for_views_eleven_minutes_apart() -> None:
    outcome = seed_outcome((11, "view", "i7"), (0, "view", "i7"))
    assert "second-look-discount" not in outcome.fired
    assert outcome.offers == []
    assert outcome.items[0] == "i0"


def test_seed_rule_does_not_fire_after_one_view() -> None:
    outcome = seed_outcome((2, "click", "i7"), (0, "view", "i7"))
    assert "second-look-discount" not in outcome.fired
    assert outcome.offers == []


# -- actions -------------------------------------------------------------------------------


def test_boost_multiplies_scores_and_reranks() -> None:
    outcome = apply(acting({"boost": {"items": ["i4", "i9"], "factor": 2}}))
    assert outcome.items == ["i4", "i9", "i0", "i1", "i2"]
    assert outcome.scores[:2] == [SCORES[4] * 2, SCORES[9] * 2]
    demoted = apply(acting({"boost": {"category": "socks", "factor": 0.5}}))
    assert demoted.items == ["i1", "i3", "i5", "i7", "i9"]


def test_boosts_of_several_rules_multiply() -> None:
    doc = document(
        rule("a", then=[{"boost": {"item": "i10", "factor": 1.5}}]),
        rule("b", then=[{"boost": {"items": ["i10", "i11"], "factor": 1.5}}]),
    )
    outcome = apply(doc, k=2)
    assert outcome.items == ["i10", "i0"]
    assert outcome.scores == [pytest.approx(SCORES[10] * 2.25), SCORES[0]]


def test_bury_moves_matches_to_the_end_in_their_order() -> None:
    outcome = apply(acting({"bury": {"items": ["i1", "i0"]}}), k=20)
    assert outcome.items[-2:] == ["i0", "i1"]
    assert outcome.items[:3] == ["i2", "i3", "i4"]


def test_pin_places_an_item_inserting_it_when_needed() -> None:
    moved = apply(acting({"pin": {"item": "i12", "position": 2}}))
    assert moved.items == ["i0", "i12", "i1", "i2", "i3"]
    inserted = apply(acting({"pin": {"item": "new-1"}}))
    assert inserted.items == ["new-1", "i0", "i1", "i2", "i3"]
    assert inserted.scores[0] == 0.0
    beyond = apply(acting({"pin": {"item": "i12", "position": 9}}))
    assert beyond.items == POOL[:5]
    short_pool = apply(acting({"pin": {"item": "x", "position": 9}}), items=["a", "b"],
                       scores=[0.5, 0.4], k=10**9)
    assert short_pool.items == ["a", "b", "x"]


def test_filter_by_each_criterion() -> None:
    window = window_of(
        event(NOW - 2 * MINUTE, "purchase", "i0", price=1.0),
        event(NOW - 1 * MINUTE, "add_to_cart", "i1", price=1.0),
    )

    def kept(selector: dict[str, Any]) -> list[str]:
        return apply(acting({"filter": selector}), window, k=20).items

    assert kept({"items": ["i2", "i5"]}) == [i for i in POOL if i not in ("i2", "i5")]
    assert kept({"category": "socks"}) == POOL[1::2]
    assert kept({"price_above": 150}) == POOL[:16]
    # i3 has no price: price filters leave it alone
    assert kept({"price_below": 50}) == ["i3", *POOL[5:]]
    assert kept({"bought": True}) == POOL[1:]
    assert kept({"in_cart": True}) == [POOL[0], *POOL[2:]]
    assert kept({"category": "shoes", "price_below": 40}) == [i for i in POOL if i not in ("i1",)]


def test_inject_adds_only_items_that_are_not_candidates() -> None:
    outcome = apply(acting({"inject": {"items": ["new-1", "i0", "new-2"], "position": 2}}))
    assert outcome.items == ["i0", "new-1", "new-2", "i1", "i2"]


def test_offers_with_and_without_an_item() -> None:
    outcome = apply(acting(
        {"offer": {"payload": {"kind": "free_shipping", "tiers": [{"over": 150}]}}},
        {"offer": {"item": "i3", "payload": {"kind": "bundle"}}},
    ))
    assert outcome.offers == [
        {"kind": "free_shipping", "tiers": [{"over": 150}], "rule": "act", "item": None},
        {"kind": "bundle", "rule": "act", "item": "i3"},
    ]


def test_offers_are_fresh_for_every_request() -> None:
    ruleset = RuleSet.parse(acting({"offer": {"payload": {"tiers": [1, 2]}}}))
    first = apply(ruleset)
    first.offers[0]["tiers"].append(3)
    first.offers[0]["kind"] = "changed"
    assert apply(ruleset).offers == [{"tiers": [1, 2], "rule": "act", "item": None}]


def test_bound_items_each_get_the_action_and_offers_are_capped() -> None:
    views = [event(NOW - MINUTE, "view", item) for item in POOL[:12] for _ in range(2)]
    doc = acting(
        {"offer": {"item": "$item", "payload": {"kind": "discount"}}},
        {"pin": {"item": "$item", "position": 1}},
        when=VIEWED_TWICE,
    )
    outcome = apply(doc, window_of(*views), k=3)
    assert len(outcome.offers) == MAX_OFFERS_PER_RESPONSE
    assert [o["item"] for o in outcome.offers] == POOL[11:1:-1]  # most recent first
    assert outcome.items == ["i11", "i10", "i9"]


# -- ordering, slots, and how actions combine ----------------------------------------------


def test_rules_apply_by_priority_then_document_order() -> None:
    doc = document(
        rule("low", priority=1, then=[{"pin": {"item": "i9", "position": 1}}]),
        rule("high", priority=10, then=[{"pin": {"item": "i8", "position": 1}}]),
        rule("tie-first", priority=5, then=[{"pin": {"item": "i7", "position": 1}}]),
        rule("tie-second", priority=5, then=[{"pin": {"item": "i6", "position": 1}}]),
        rule("off", priority=99, enabled=False, then=[{"pin": {"item": "i5"}}]),
    )
    outcome = apply(doc)
    assert outcome.fired == ["high", "tie-first", "tie-second", "low"]
    # a contested position goes to the higher priority; the others take the next free ones
    assert outcome.items == ["i8", "i7", "i6", "i9", "i0"]


def test_filter_is_final_whatever_pins_or_injects_say() -> None:
    doc = document(
        rule("promote", priority=10, then=[{"pin": {"item": "i4"}},
                                           {"inject": {"items": ["gift"], "position": 1}}]),
        rule("hide", priority=1, then=[{"filter": {"items": ["i4", "gift"]}}]),
    )
    assert apply(doc).items == ["i0", "i1", "i2", "i3", "i5"]


def test_bury_then_pin_and_boost_then_bury() -> None:
    doc = acting(
        {"bury": {"category": "socks"}},
        {"boost": {"item": "i2", "factor": 10}},
        {"pin": {"item": "i0", "position": 2}},
    )
    assert apply(doc, k=4).items == ["i1", "i0", "i3", "i5"]


def test_slots_limit_where_a_rule_applies() -> None:
    doc = document(
        rule("everywhere", then=[{"pin": {"item": "a"}}]),
        rule("checkout-only", slots=["checkout"], then=[{"pin": {"item": "b"}}]),
    )
    ruleset = RuleSet.parse(doc)
    assert apply(ruleset, req=request(slot="checkout")).fired == ["everywhere", "checkout-only"]
    assert apply(ruleset, req=request(slot="home")).fired == ["everywhere"]
    assert apply(ruleset, req=request()).fired == ["everywhere"]
    assert ruleset.rule_ids("checkout") == ["everywhere", "checkout-only"]


def test_without_firing_rules_the_ranking_is_cut_to_k() -> None:
    doc = acting({"pin": {"item": "x"}}, when={"cart_items": {"at_least": 1}})
    outcome = apply(doc, k=3)
    assert outcome == RuleOutcome(POOL[:3], SCORES[:3], [], [])
    assert apply(doc, k=0).items == []
    assert apply(doc, k=50).items == POOL


def test_duplicates_in_the_pool_are_dropped() -> None:
    items = ["a", "b", "a", "c", "b", "d"]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    quiet = apply(acting({"pin": {"item": "x"}}, when={"cart_items": {"at_least": 1}}),
                  items=items, scores=scores, k=4)
    assert (quiet.items, quiet.scores) == (["a", "b", "c", "d"], [0.9, 0.8, 0.6, 0.4])
    pinned = apply(acting({"pin": {"item": "d"}}), items=items, scores=scores, k=3)
    assert pinned.items == ["d", "a", "b"]


def test_apply_refuses_mismatched_inputs() -> None:
    ruleset = RuleSet.parse(document())
    with pytest.raises(ValueError, match="2 items but 1 scores"):
        ruleset.apply(["a", "b"], [1.0], window_of(), request(), CATALOG, 2)
    with pytest.raises(ValueError, match="k must be"):
        ruleset.apply([], [], window_of(), request(), CATALOG, -1)


def test_apply_leaves_its_inputs_alone() -> None:
    items, scores = list(POOL), list(SCORES)
    apply(RuleSet.parse(SEED.read_bytes()), items=items, scores=scores)
    apply(acting({"boost": {"category": "shoes", "factor": 3}}, {"bury": {"item": "i0"}}),
          items=items, scores=scores)
    assert (items, scores) == (POOL, SCORES)


# -- properties ----------------------------------------------------------------------------

ITEMS = [f"i{n}" for n in range(14)] + ["gift", "new-1"]
TYPES: list[EventType] = ["view", "click", "add_to_cart", "remove_from_cart", "purchase", "search"]
item_id = st.sampled_from(ITEMS)
some_items = st.lists(item_id, min_size=1, max_size=4, unique=True)

leaf_conditions = st.one_of(
    st.fixed_dictionaries({"events": st.fixed_dictionaries(
        {"at_least": st.integers(0, 3)},
        optional={"type": st.sampled_from(TYPES), "within": st.sampled_from(["30s", "5m", "2h"]),
                  "at_most": st.integers(3, 6), "category": st.sampled_from(["shoes", "socks"]),
                  "per_item": st.booleans()},
    )}).filter(lambda c: not (c["events"].get("type") == "search"
                              and c["events"].get("per_item"))),
    st.fixed_dictionaries({"cart_value": st.fixed_dictionaries({"at_least": st.integers(0, 100)})}),
    st.fixed_dictionaries({"cart_items": st.fixed_dictionaries({"at_most": st.integers(0, 3)})}),
    st.fixed_dictionaries({"last_item": st.one_of(
        st.fixed_dictionaries({"in": some_items}),
        st.fixed_dictionaries({"category": st.sampled_from(["shoes", "socks"])}),
    )}),
    st.fixed_dictionaries({"context": st.fixed_dictionaries({
        "key": st.just("device"), "in": st.lists(st.sampled_from(["mobile", "tv", 1]),
                                                  min_size=1, max_size=2, unique=True)})}),
    st.fixed_dictionaries({"time_of_day": st.fixed_dictionaries({
        "from": st.sampled_from(["01:00", "18:00", "22:30"]),
        "to": st.sampled_from(["06:00", "23:59", "24:00"]),
        "timezone": st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"])})}),
)
conditions = st.recursive(
    leaf_conditions,
    lambda inner: st.one_of(
        st.fixed_dictionaries({"all": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"not": inner}),
    ),
    max_leaves=6,
)
selector_keys = {
    "items": st.lists(st.sampled_from([*ITEMS, "$item"]), min_size=1, max_size=4, unique=True),
    "category": st.sampled_from(["shoes", "socks"]),
    "price_below": st.integers(50, 200),
    "bought": st.just(True),
    "in_cart": st.just(True),
}
selectors = st.builds(
    lambda first, more: {**more, **first},
    st.one_of([st.fixed_dictionaries({key: value}) for key, value in selector_keys.items()]),
    st.fixed_dictionaries({}, optional=selector_keys),
)
bound_or_item = st.sampled_from([*ITEMS, "$item"])
actions = st.one_of(
    st.builds(lambda s, f: {"boost": {**s, "factor": f}}, selectors,
              st.floats(0.01, 100, allow_nan=False)),
    st.builds(lambda s: {"bury": s}, selectors),
    st.builds(lambda s: {"filter": s}, selectors),
    st.builds(lambda i, p: {"pin": {"item": i, "position": p}}, bound_or_item, st.integers(1, 12)),
    st.builds(lambda i, p: {"inject": {"items": i, "position": p}},
              st.lists(bound_or_item, min_size=1, max_size=3, unique=True), st.integers(1, 12)),
    st.builds(lambda i: {"offer": {"item": i, "payload": {"kind": "x"}}}, bound_or_item),
)


def _depth(condition: Any) -> int:
    if isinstance(condition, dict):
        return max((_depth(v) + (k in ("all", "any", "not")) for k, v in condition.items()),
                   default=0)
    if isinstance(condition, list):
        return max((_depth(v) for v in condition), default=0)
    return 0


def _uses_bound_item(action: dict[str, Any]) -> bool:
    return "$item" in json.dumps(action)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    rules = []
    for n in range(draw(st.integers(0, 6))):
        then = draw(st.lists(actions, min_size=1, max_size=4))
        when = draw(st.none() | conditions)
        assume(_depth(when) <= 6)
        if any(_uses_bound_item(a) for a in then):
            # $item needs a condition that always binds: narrow it by a per_item count
            binder = {"events": {"type": "view", "at_least": draw(st.integers(1, 2)),
                                 "per_item": True}}
            when = {"all": [binder] if when is None else [when, binder]}
        keys: dict[str, Any] = {"priority": draw(st.integers(-3, 3))}
        if when is not None:
            keys["when"] = when
        if draw(st.booleans()):
            keys["slots"] = draw(st.lists(st.sampled_from(["home", "cart"]), min_size=1,
                                          max_size=2, unique=True))
        rules.append(rule(f"r{n}", then=then, **keys))
    return document(*rules)


windows = st.lists(
    st.tuples(st.integers(0, 40), st.sampled_from(TYPES), item_id,
              st.none() | st.sampled_from(["shoes", "socks"]), st.none() | st.integers(0, 90)),
    max_size=25,
)


def _window(raw: list[tuple[int, EventType, str, str | None, int | None]]) -> SessionWindow:
    return window_of(*(
        event(NOW - minutes * MINUTE, kind, None if kind == "search" else item,
              category=category, price=None if price is None else float(price))
        for minutes, kind, item, category, price in sorted(raw, key=lambda r: -r[0])
    ))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    documents(),
    windows,
    st.lists(item_id, max_size=16),
    st.integers(0, 12),
    st.sampled_from([None, "home", "cart"]),
    st.sampled_from([{}, {"device": "mobile"}, {"device": 1}]),
    st.integers(NOW - 10**10, NOW + 10**10),
)
def test_valid_documents_never_raise_and_answers_are_well_formed(
    doc: bytes,
    raw_window: list[tuple[int, EventType, str, str | None, int | None]],
    pool: list[str],
    k: int,
    slot: str | None,
    context: dict[str, Any],
    now_ms: int,
) -> None:
    ruleset = RuleSet.parse(doc)
    scores = [1.0 - n / 32 for n in range(len(pool))]
    outcome = ruleset.apply(pool, scores, _window(raw_window), RuleRequest(slot, context, now_ms),
                            CATALOG, k)
    assert len(outcome.items) <= k
    assert len(set(outcome.items)) == len(outcome.items)
    assert len(outcome.scores) == len(outcome.items)
    assert set(outcome.fired) <= set(ruleset.rule_ids(slot))
    assert len(set(outcome.fired)) == len(outcome.fired)
    assert len(outcome.offers) <= MAX_OFFERS_PER_RESPONSE
    assert all(offer["rule"] in outcome.fired for offer in outcome.offers)
    if not outcome.fired:
        assert outcome.items == list(dict.fromkeys(pool))[:k]
