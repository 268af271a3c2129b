"""The catalog contract: what an item may hold, how it is ordered, and its KV codec."""

from __future__ import annotations

import pytest

from protocol.catalog import (
    CatalogError,
    Item,
    apply_patch,
    decode_item,
    encode_item,
    validate_item,
    validate_patch,
)


def test_a_full_item_round_trips_through_the_codec() -> None:
    item = validate_item(
        {
            "id": "sku-1",
            "title": "Red shoe",
            "category": "shoes",
            "price": 49.5,
            "stock": 3,
            "available": True,
            "attributes": {"size": 42, "colour": "red", "sale": False, "weight": 0.4},
            "created_at": 1_700_000_000_000,
            "updated_at": 1_700_000_000_500,
            "version": 4,
        }
    )
    assert decode_item(encode_item(item)) == item
    assert encode_item(item) == encode_item(decode_item(encode_item(item)))


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        ({"id": "a", "colour": "red"}, "unknown_field", "colour"),
        ({"id": "a", "price": -1}, "negative_price", "price"),
        ({"id": "a", "price": "9.99"}, "wrong_type", "price"),
        ({"id": "a", "price": float("nan")}, "bad_price", "price"),
        ({"id": "a", "stock": 1.5}, "wrong_type", "stock"),
        ({"id": "a", "stock": -2}, "out_of_range", "stock"),
        ({"id": "a", "available": "yes"}, "wrong_type", "available"),
        ({"id": "a b"}, "bad_item_id", "id"),
        ({"id": "x" * 129}, "bad_item_id", "id"),
        ({"id": 7}, "wrong_type", "id"),
        ({"title": "no id"}, "missing_field", "id"),
        ({"id": "a", "version": 0}, "out_of_range", "version"),
        ({"id": "a", "attributes": {"k": [1]}}, "wrong_type", "attributes.k"),
        ({"id": "a", "attributes": {f"k{i}": i for i in range(33)}}, "too_many_attributes",
         "attributes"),
        ({"id": "a", "attributes": {"bad key": 1}}, "bad_attribute", "attributes"),
        ({"id": "a", "title": "bell\x07"}, "bad_chars", "title"),
    ],
)  # fmt: skip
def test_bad_items_are_refused_naming_the_field(raw: object, code: str, field: str) -> None:
    with pytest.raises(CatalogError) as caught:
        validate_item(raw)
    assert (caught.value.code, caught.value.field, caught.value.status) == (code, field, 400)


def test_a_higher_version_supersedes_and_ties_go_to_the_later_update() -> None:
    old = Item("a", version=2, updated_at=100)
    assert Item("a", version=3, updated_at=50).supersedes(old)
    assert not Item("a", version=1, updated_at=500).supersedes(old)
    assert Item("a", version=2, updated_at=101).supersedes(old)
    assert not Item("a", version=2, updated_at=100).supersedes(old)


def test_servable_means_available_not_deleted_and_in_stock() -> None:
    assert Item("a").servable
    assert Item("a", stock=1).servable
    assert not Item("a", stock=0).servable
    assert not Item("a", available=False).servable
    assert not Item("a", deleted=True).servable


def test_a_patch_changes_only_its_fields_and_cannot_name_created_at() -> None:
    item = Item("a", title="t", price=3.0, version=1)
    patched = apply_patch(item, validate_patch({"id": "a", "price": 4}))
    assert (patched.title, patched.price) == ("t", 4.0)
    with pytest.raises(CatalogError) as caught:
        validate_patch({"id": "a", "created_at": 5})
    assert caught.value.code == "unknown_field"


def test_same_content_ignores_version_and_timestamps() -> None:
    a = Item("a", title="t", version=1, updated_at=1)
    assert a.same_content(Item("a", title="t", version=9, updated_at=9))
    assert not a.same_content(Item("a", title="u", version=1, updated_at=1))
