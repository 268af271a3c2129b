from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.rules import RulesError, RuleSet
from edge_node.rules.model import (
    BOUND_ITEM,
    MAX_DOCUMENT_BYTES,
    AllOf,
    Boost,
    ContextCondition,
    EventsCondition,
    Offer,
    Pin,
    TimeOfDayCondition,
)
from edge_node.rules.parse import document_from_data, parse_document
from edge_node.rules.source import Format
from tests.edge_node.rules import document, rule

REPO = Path(__file__).resolve().parents[3]
SEED = REPO / "examples" / "rules" / "seed.yaml"
DOCS = REPO / "docs" / "rules.md"

VIEWED_TWICE: dict[str, Any] = {
    "events": {"type": "view", "within": "10m", "at_least": 2, "per_item": True}
}


def parse_error(data: bytes | object, fmt: Format = "auto") -> RulesError:
    with pytest.raises(RulesError) as caught:
        if isinstance(data, bytes):
            parse_document(data, fmt)
        else:
            document_from_data(data)
    return caught.value


# -- documents that are fine ---------------------------------------------------------------


def test_seed_document_parses_into_the_model() -> None:
    doc = parse_document(SEED.read_bytes())
    assert doc.version == "seed-1"
    seed = doc.rules[0]
    assert seed.id == "second-look-discount"
    assert seed.priority == 100
    assert seed.when == EventsCondition(
        frozenset({"view"}), None, None, 10 * 60_000, 2, None, per_item=True
    )
    offer, pin = seed.then
    assert isinstance(offer, Offer) and offer.item == BOUND_ITEM
    assert offer.payload == {"kind": "discount", "percent": 10, "code": "SECONDLOOK"}
    assert pin == Pin(BOUND_ITEM, 1)
    assert len(doc.rules) >= 4


def test_the_seed_example_in_the_docs_parses_to_the_seed_rule() -> None:
    text = DOCS.read_text()
    block = re.search(r"```yaml\n(version: \"seed-1\".*?)```", text, re.DOTALL)
    assert block is not None
    from_docs = parse_document(block.group(1).encode())
    assert from_docs.rules[0] == parse_document(SEED.read_bytes()).rules[0]


def test_json_and_yaml_give_the_same_document() -> None:
    yaml_text = b"""
version: v1
rules:
  - id: evening
    priority: 5
    slots: [home]
    when:
      all:
        - context: {key: device, in: [mobile, tablet]}
        - time_of_day: {from: "18:00", to: "02:00", timezone: Europe/Berlin, days: [Fri, saturday]}
    then:
      - boost: {category: accessories, factor: 1.5}
"""
    as_json = json.dumps({
        "version": "v1",
        "rules": [{
            "id": "evening", "priority": 5, "slots": ["home"],
            "when": {"all": [
                {"context": {"key": "device", "in": ["mobile", "tablet"]}},
                {"time_of_day": {"from": "18:00", "to": "02:00", "timezone": "Europe/Berlin",
                                 "days": ["Fri", "saturday"]}},
            ]},
            "then": [{"boost": {"category": "accessories", "factor": 1.5}}],
        }],
    }).encode()
    from_yaml = parse_document(yaml_text, "yaml")
    assert from_yaml == parse_document(as_json, "json") == parse_document(as_json)
    evening = from_yaml.rules[0]
    assert isinstance(evening.when, AllOf)
    device = ContextCondition("device", None, ("mobile", "tablet"), None)
    assert evening.when.conditions[0] == device
    assert evening.when.conditions[1] == TimeOfDayCondition(
        18 * 60, 2 * 60, "Europe/Berlin", frozenset({4, 5})
    )
    boost = evening.then[0]
    assert isinstance(boost, Boost)
    assert (boost.selector.category, boost.factor) == ("accessories", 1.5)


def test_defaults_and_compound_durations() -> None:
    doc = parse_document(document(rule(when={"events": {"within": "1h30m", "at_most": 3}})))
    only = doc.rules[0]
    assert (only.priority, only.enabled, only.slots, only.description) == (0, True, None, None)
    assert only.when == EventsCondition(None, None, None, 90 * 60_000, None, 3, per_item=False)


def test_an_empty_rules_list_is_a_valid_document() -> None:
    assert RuleSet.parse(b'{"version": "off", "rules": []}').rule_ids() == []


def test_item_is_allowed_where_every_alternative_binds() -> None:
    both_bind = {"any": [VIEWED_TWICE, {"events": {"type": "add_to_cart", "at_least": 1,
                                                     "per_item": True}}]}
    narrowed = {"all": [{"context": {"key": "device", "exists": True}}, VIEWED_TWICE]}
    for when in (both_bind, narrowed):
        parse_document(document(rule(when=when, then=[{"pin": {"item": "$item"}}])))


# -- mistakes, each with its code and path ------------------------------------------------


def with_rule(**keys: Any) -> dict[str, Any]:
    return {"version": "v1", "rules": [rule(**keys)]}


def with_when(when: Any) -> dict[str, Any]:
    return with_rule(when=when)


def with_action(action: Any) -> dict[str, Any]:
    return with_rule(then=[action])


MISTAKES: list[tuple[str, Any, str, str]] = [
    ("not a mapping", ["version"], "bad_type", ""),
    ("no version", {"rules": []}, "missing_key", ""),
    ("version charset", {"version": "v 1", "rules": []}, "bad_value", "version"),
    ("version number", {"version": 1.0, "rules": []}, "bad_type", "version"),
    ("unknown top key", {"version": "v", "rules": [], "rulez": []}, "unknown_key", "rulez"),
    ("rules not a list", {"version": "v", "rules": {}}, "bad_type", "rules"),
    ("too many rules", {"version": "v", "rules": [rule(f"r{i}") for i in range(501)]},
     "too_many", "rules"),
    ("duplicate id", {"version": "v", "rules": [rule("a"), rule("b"), rule("a")]},
     "duplicate_id", "rules[2].id"),
    ("misspelt key", {"version": "v", "rules": [{"id": "a", "wehn": {}, "then": []}]},
     "unknown_key", "rules[0].wehn"),
    ("no then", {"version": "v", "rules": [{"id": "a"}]}, "missing_key", "rules[0]"),
    ("empty then", with_rule(then=[]), "bad_value", "rules[0].then"),
    ("id charset", {"version": "v", "rules": [rule("a/b")]}, "bad_value", "rules[0].id"),
    ("float priority", with_rule(priority=1.5), "bad_type", "rules[0].priority"),
    ("bool priority", with_rule(priority=True), "bad_type", "rules[0].priority"),
    ("huge priority", with_rule(priority=10**9), "bad_value", "rules[0].priority"),
    ("enabled text", with_rule(enabled="yes"), "bad_type", "rules[0].enabled"),
    ("repeated slot", with_rule(slots=["home", "home"]), "bad_value", "rules[0].slots[1]"),
    ("two kinds in a condition",
     with_when({"events": {"at_least": 1}, "context": {"key": "a", "exists": True}}),
     "conflicting_keys", "rules[0].when"),
    ("unknown condition", with_when({"evnts": {}}), "unknown_key", "rules[0].when.evnts"),
    ("empty condition", with_when({}), "missing_key", "rules[0].when"),
    ("bad within deep down",
     with_when({"all": [{"cart_items": {"at_least": 1}},
                        {"events": {"within": "10 min", "at_least": 1}}]}),
     "bad_duration", "rules[0].when.all[1].events.within"),
    ("unitless within", with_when({"events": {"within": 600, "at_least": 1}}),
     "bad_duration", "rules[0].when.events.within"),
    ("zero within", with_when({"events": {"within": "0s", "at_least": 1}}),
     "bad_duration", "rules[0].when.events.within"),
    ("unknown type", with_when({"events": {"type": "hover", "at_least": 1}}),
     "bad_value", "rules[0].when.events.type"),
    ("unknown type in list", with_when({"events": {"type": ["view", "hover"], "at_least": 1}}),
     "bad_value", "rules[0].when.events.type[1]"),
    ("impression", with_when({"events": {"type": "impression", "at_least": 1}}),
     "bad_value", "rules[0].when.events.type"),
    ("no bounds", with_when({"events": {"type": "view"}}), "missing_key", "rules[0].when.events"),
    ("negative count", with_when({"events": {"at_least": -1}}),
     "bad_value", "rules[0].when.events.at_least"),
    ("crossed bounds", with_when({"events": {"at_least": 3, "at_most": 2}}),
     "bad_value", "rules[0].when.events.at_most"),
    ("item and category", with_when({"events": {"item": "a", "category": "b", "at_least": 1}}),
     "conflicting_keys", "rules[0].when.events"),
    ("$item in a condition", with_when({"events": {"item": "$item", "at_least": 1}}),
     "bad_value", "rules[0].when.events.item"),
    ("unknown variable", with_action({"pin": {"item": "$thing"}}),
     "bad_value", "rules[0].then[0].pin.item"),
    ("search per item", with_when({"events": {"type": "search", "at_least": 1, "per_item": True}}),
     "bad_value", "rules[0].when.events"),
    ("per_item text", with_when({"events": {"at_least": 1, "per_item": "yes"}}),
     "bad_type", "rules[0].when.events.per_item"),
    ("unknown zone", with_when({"time_of_day": {"days": ["mon"], "timezone": "Mars/Olympus"}}),
     "unknown_timezone", "rules[0].when.time_of_day.timezone"),
    ("path-like zone", with_when({"time_of_day": {"days": ["mon"], "timezone": "../etc/passwd"}}),
     "unknown_timezone", "rules[0].when.time_of_day.timezone"),
    ("from without to", with_when({"time_of_day": {"from": "18:00"}}),
     "missing_key", "rules[0].when.time_of_day"),
    ("neither range nor days", with_when({"time_of_day": {"timezone": "UTC"}}),
     "missing_key", "rules[0].when.time_of_day"),
    ("hour 25", with_when({"time_of_day": {"from": "25:00", "to": "02:00"}}),
     "bad_time", "rules[0].when.time_of_day.from"),
    ("from 24:00", with_when({"time_of_day": {"from": "24:00", "to": "02:00"}}),
     "bad_time", "rules[0].when.time_of_day.from"),
    ("empty range", with_when({"time_of_day": {"from": "10:00", "to": "10:00"}}),
     "bad_value", "rules[0].when.time_of_day.to"),
    ("unknown day", with_when({"time_of_day": {"days": ["mon", "funday"]}}),
     "bad_value", "rules[0].when.time_of_day.days[1]"),
    ("repeated day", with_when({"time_of_day": {"days": ["mon", "monday"]}}),
     "bad_value", "rules[0].when.time_of_day.days[1]"),
    ("context without key", with_when({"context": {"equals": "x"}}),
     "missing_key", "rules[0].when.context"),
    ("context two tests", with_when({"context": {"key": "a", "equals": "x", "exists": True}}),
     "conflicting_keys", "rules[0].when.context"),
    ("context equals null", with_when({"context": {"key": "a", "equals": None}}),
     "bad_value", "rules[0].when.context.equals"),
    ("context in a mapping", with_when({"context": {"key": "a", "in": ["x", {}]}}),
     "bad_type", "rules[0].when.context.in[1]"),
    ("last_item both", with_when({"last_item": {"in": ["a"], "category": "b"}}),
     "conflicting_keys", "rules[0].when.last_item"),
    ("cart_value text", with_when({"cart_value": {"at_least": "100"}}),
     "bad_type", "rules[0].when.cart_value.at_least"),
    ("cart_items fraction", with_when({"cart_items": {"at_least": 1.5}}),
     "bad_type", "rules[0].when.cart_items.at_least"),
    ("empty all", with_when({"all": []}), "bad_value", "rules[0].when.all"),
    ("too deep", with_when({"not": {"not": {"not": {"not": {"not": {"not": {"not": {"not": {
        "not": {"cart_items": {"at_least": 1}}}}}}}}}}}),
     "too_deep", "rules[0].when" + ".not" * 9),
    ("two kinds in an action",
     with_action({"pin": {"item": "a"}, "bury": {"item": "b"}}),
     "conflicting_keys", "rules[0].then[0]"),
    ("unknown action", with_action({"promote": {}}), "unknown_key", "rules[0].then[0].promote"),
    ("zero factor", with_action({"boost": {"category": "c", "factor": 0}}),
     "bad_value", "rules[0].then[0].boost.factor"),
    ("no factor", with_action({"boost": {"category": "c"}}),
     "missing_key", "rules[0].then[0].boost"),
    ("no selector", with_action({"bury": {}}), "missing_key", "rules[0].then[0].bury"),
    ("item and items", with_action({"filter": {"item": "a", "items": ["b"]}}),
     "conflicting_keys", "rules[0].then[0].filter"),
    ("bought false", with_action({"filter": {"bought": False}}),
     "bad_value", "rules[0].then[0].filter.bought"),
    ("empty price range", with_action({"filter": {"price_above": 50, "price_below": 20}}),
     "bad_value", "rules[0].then[0].filter.price_below"),
    ("negative price", with_action({"filter": {"price_below": -1}}),
     "bad_value", "rules[0].then[0].filter.price_below"),
    ("position 0", with_action({"pin": {"item": "a", "position": 0}}),
     "bad_value", "rules[0].then[0].pin.position"),
    ("pin without item", with_action({"pin": {"position": 2}}),
     "missing_key", "rules[0].then[0].pin"),
    ("empty inject", with_action({"inject": {"items": []}}),
     "bad_value", "rules[0].then[0].inject.items"),
    ("repeated inject", with_action({"inject": {"items": ["a", "b", "a"]}}),
     "bad_value", "rules[0].then[0].inject.items[2]"),
    ("numeric item id", with_action({"inject": {"items": ["a", 123]}}),
     "bad_type", "rules[0].then[0].inject.items[1]"),
    ("too many items", with_action({"bury": {"items": [f"i{n}" for n in range(201)]}}),
     "too_many", "rules[0].then[0].bury.items"),
    ("control character", with_action({"bury": {"category": "a\nb"}}),
     "bad_value", "rules[0].then[0].bury.category"),
    ("reserved payload key", with_action({"offer": {"payload": {"rule": "x"}}}),
     "bad_value", "rules[0].then[0].offer.payload.rule"),
    ("payload not a mapping", with_action({"offer": {"payload": [1]}}),
     "bad_type", "rules[0].then[0].offer.payload"),
    ("payload too large", with_action({"offer": {"payload": {"text": "x" * 2100}}}),
     "too_large", "rules[0].then[0].offer.payload"),
    ("unbound $item", with_rule(when={"cart_items": {"at_least": 1}},
                                then=[{"boost": {"items": ["a"], "factor": 2}},
                                      {"pin": {"item": "$item"}}]),
     "unbound_item", "rules[0].then[1]"),
    ("$item under not", with_rule(when={"not": VIEWED_TWICE},
                                  then=[{"offer": {"item": "$item", "payload": {}}}]),
     "unbound_item", "rules[0].then[0]"),
    ("$item where an alternative binds nothing",
     with_rule(when={"any": [VIEWED_TWICE, {"cart_items": {"at_least": 1}}]},
               then=[{"inject": {"items": ["$item"]}}]),
     "unbound_item", "rules[0].then[0]"),
    ("$item without a condition", with_rule(then=[{"filter": {"item": "$item"}}]),
     "unbound_item", "rules[0].then[0]"),
]


@pytest.mark.parametrize(
    ("data", "code", "path"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_each_mistake_is_reported_with_its_code_and_path(data: Any, code: str, path: str) -> None:
    error = parse_error(data)
    assert (error.code, error.path) == (code, path), error
    # JSON text of the same document fails the same way
    again = parse_error(json.dumps(data).encode())
    assert (again.code, again.path) == (code, path)


def test_messages_say_what_is_allowed() -> None:
    misspelt = parse_error({"version": "v", "rules": [{"id": "a", "wehn": {}, "then": []}]})
    assert "did you mean 'when'?" in misspelt.message
    assert "allowed keys: id, description, priority" in misspelt.message
    assert str(misspelt).startswith("rules[0].wehn: unknown key 'wehn'")
    duration = parse_error(with_when({"events": {"within": "10 min", "at_least": 1}}))
    assert "30s, 10m, 2h" in duration.message
    types = parse_error(with_when({"events": {"type": "hover", "at_least": 1}}))
    assert "view, click, add_to_cart, remove_from_cart, purchase, search" in types.message
    assert parse_error({"version": 1.0, "rules": []}).message.endswith("quote it")
    assert parse_error(with_when({"events": {"within": 600, "at_least": 1}})).message.endswith(
        "give a unit, e.g. 10m"
    )
    assert parse_error(with_action({"pin": {"item": "$thing"}})).to_dict() == {
        "code": "bad_value",
        "message": "unknown variable '$thing'; the only variable is $item",
        "path": "rules[0].then[0].pin.item",
    }


# -- YAML and the document as a whole ------------------------------------------------------


def yaml_rule(when: str) -> bytes:
    lines = ["version: v1", "rules:", "  - id: a", f"    when: {when}",
             "    then: [{bury: {item: x}}]"]
    return ("\n".join(lines) + "\n").encode()


def test_unquoted_yaml_times_get_a_hint() -> None:
    error = parse_error(yaml_rule("{time_of_day: {from: 18:00, to: 23:00}}"))
    assert (error.code, error.path) == ("bad_time", "rules[0].when.time_of_day.from")
    assert "base-60" in error.message


def test_unquoted_numeric_ids_get_a_hint() -> None:
    error = parse_error(yaml_rule("{last_item: {in: [0123]}}"))
    assert (error.code, error.path) == ("bad_type", "rules[0].when.last_item.in[0]")
    assert "quote it" in error.message


def test_yaml_dates_are_not_payload_values() -> None:
    error = parse_error(
        b"version: v1\nrules:\n  - id: a\n    then:\n"
        b"      - offer: {payload: {valid_until: 2024-12-31}}\n"
    )
    assert (error.code, error.path) == ("bad_type", "rules[0].then[0].offer.payload.valid_until")


def test_yaml_aliases_are_refused() -> None:
    bomb = b'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n' + b"".join(
        f"{chr(98 + n)}: &{chr(98 + n)} [*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}]\n".encode()
        for n in range(8)
    )
    error = parse_error(bomb)
    assert error.code == "yaml_alias"
    assert "line 2" in error.message


@pytest.mark.parametrize(
    ("data", "fmt", "code", "fragment"),
    [
        (b"version: v1\nversion: v2\nrules: []\n", "auto", "duplicate_key", "line 2"),
        (b'{"version": "v1", "version": "v2", "rules": []}', "auto", "duplicate_key", "version"),
        (b"version: v1\nrules: [\n", "auto", "bad_syntax", "line"),
        (b'{"version": "v1",, "rules": []}', "auto", "bad_syntax", "line 1 column 18"),
        (b'{"version": "v1", "rules": [], "x": NaN}', "json", "bad_syntax", "NaN"),
        (b"version: v1\n? [a, b]\n: c\n", "yaml", "bad_type", "mapping keys"),
        (b"!!python/object/apply:os.system [echo]\n", "yaml", "bad_syntax", "not valid YAML"),
        (b"version: v1\nrules: []\n---\nversion: v2\n", "yaml", "bad_syntax", "not valid YAML"),
        (b"x: 2024-13-45\n", "yaml", "bad_syntax", "cannot be read"),
        (b"[" * 100 + b"]" * 100, "yaml", "too_deep", "64"),
        (b"[" * 100_000 + b"]" * 100_000, "json", "too_deep", "nests"),
        (b"\xff\xfe version", "auto", "bad_encoding", "UTF-8"),
        (b"", "auto", "bad_type", "a rules document must be a mapping"),
        (b"# nothing\n", "yaml", "bad_type", "found null"),
    ],
)
def test_document_level_problems(data: bytes, fmt: Format, code: str, fragment: str) -> None:
    error = parse_error(data, fmt)
    assert error.code == code, error
    assert fragment in error.message


def test_documents_over_the_size_limit_are_refused_unread() -> None:
    padding = b"# " + b"x" * MAX_DOCUMENT_BYTES + b"\n"
    error = parse_error(padding + b"version: v1\nrules: []\n")
    assert error.code == "too_large"


# -- fuzzing -------------------------------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_bytes_raise_only_rules_errors(data: bytes) -> None:
    for fmt in ("auto", "json", "yaml"):
        with contextlib.suppress(RulesError):
            parse_document(data, fmt)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}[]:,-&*!?|>'\"#\n abc01.$", max_size=200))
def test_garbage_yaml_text_raises_only_rules_errors(text: str) -> None:
    with contextlib.suppress(RulesError):
        parse_document(text.encode(), "yaml")


def _leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for key, inner in value.items() for p in _leaf_paths(inner, (*prefix, key))]
    if isinstance(value, list):
        return [p for i, inner in enumerate(value) for p in _leaf_paths(inner, (*prefix, i))]
    return [prefix]


@settings(max_examples=400, deadline=None)
@given(st.data(), json_like)
def test_mutated_seed_documents_raise_only_rules_errors(data: st.DataObject, junk: Any) -> None:
    raw = yaml.safe_load(SEED.read_bytes())
    paths = _leaf_paths(raw)
    path = data.draw(st.sampled_from(paths))
    target = raw
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = junk
    with contextlib.suppress(RulesError):
        document_from_data(raw)
    as_json = json.dumps(raw).encode()
    with contextlib.suppress(RulesError):
        parse_document(as_json)


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_random_structures_raise_only_rules_errors(value: Any) -> None:
    for candidate in (value, {"version": "v1", "rules": [value]},
                      {"version": "v1", "rules": [{"id": "a", "when": value, "then": [value]}]}):
        with contextlib.suppress(RulesError):
            document_from_data(candidate)
