from __future__ import annotations

import io
from collections.abc import Callable

import msgpack
import numpy as np
import numpy.typing as npt
import pytest

from protocol.errors import PartError
from protocol.tables import TABLES_PREFIX, CandidateTables


def hand_made() -> CandidateTables:
    """Four items, two sessions; d has no neighbours, c no category and no price."""
    return CandidateTables(
        item_ids=["a", "b", "c", "d"],
        categories=["shoes", "socks"],
        covis_indptr=np.array([0, 2, 3, 4, 4], dtype=np.int64),
        covis_indices=np.array([1, 2, 0, 0], dtype=np.int32),
        covis_weights=np.array([2.0, 1.0, 2.0, 1.0], dtype=np.float32),
        pop_all=np.array([5, 3, 2, 1], dtype=np.float32),
        pop_recent=np.array([1, 3, 2, 1], dtype=np.float32),
        category=np.array([0, 1, -1, 0], dtype=np.int32),
        price=np.array([20.0, 2.5, np.nan, 9.99], dtype=np.float32),
        sess_indptr=np.array([0, 2, 5], dtype=np.int64),
        sess_items=np.array([0, 1, 0, 2, 3], dtype=np.int32),
        item_sess_indptr=np.array([0, 2, 3, 4, 5], dtype=np.int64),
        item_sess=np.array([1, 0, 0, 1, 1], dtype=np.int32),
    )


@pytest.fixture
def tables() -> CandidateTables:
    return hand_made()


def test_derived_lookups(tables: CandidateTables) -> None:
    tables.check()
    assert tables.n_items == 4
    assert tables.n_sessions == 2
    assert tables.item_index == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert tables.category_index == {"shoes": 0, "socks": 1}
    assert tables.sess_len.tolist() == [2.0, 3.0]
    # By recent popularity; a and d tie on it and a is the more popular overall.
    assert tables.recent_order.tolist() == [1, 2, 0, 3]
    assert tables.recent_order.dtype == np.int32


def test_parts_round_trip(tables: CandidateTables) -> None:
    parts = tables.to_parts()
    assert set(parts) == {
        f"{TABLES_PREFIX}{name}"
        for name in ("items.msgpack", "categories.msgpack", "covis_indptr.npy",
                     "covis_indices.npy", "covis_weights.npy", "pop_all.npy", "pop_recent.npy",
                     "category.npy", "price.npy", "sess_indptr.npy", "sess_items.npy",
                     "item_sess_indptr.npy", "item_sess.npy")
    }
    back = CandidateTables.from_parts(parts)
    assert back.item_ids == tables.item_ids
    assert back.categories == tables.categories
    for name in ("covis_indptr", "covis_indices", "covis_weights", "pop_all", "pop_recent",
                 "category", "price", "sess_indptr", "sess_items", "item_sess_indptr",
                 "item_sess", "recent_order", "sess_len"):
        original, loaded = getattr(tables, name), getattr(back, name)
        assert loaded.dtype == original.dtype, name
        np.testing.assert_array_equal(loaded, original, err_msg=name)  # NaN equals NaN here
    assert back.to_parts() == parts


def test_parts_of_empty_neighbour_and_session_tables_round_trip() -> None:
    empty_ints = np.zeros(0, dtype=np.int32)
    tables = CandidateTables(
        item_ids=["only"], categories=[],
        covis_indptr=np.zeros(2, dtype=np.int64), covis_indices=empty_ints,
        covis_weights=np.zeros(0, dtype=np.float32),
        pop_all=np.ones(1, dtype=np.float32), pop_recent=np.zeros(1, dtype=np.float32),
        category=np.full(1, -1, dtype=np.int32), price=np.full(1, np.nan, dtype=np.float32),
        sess_indptr=np.zeros(1, dtype=np.int64), sess_items=empty_ints,
        item_sess_indptr=np.zeros(2, dtype=np.int64), item_sess=empty_ints,
    )
    back = CandidateTables.from_parts(tables.to_parts())
    assert back.n_items == 1
    assert back.n_sessions == 0


def npy(array: npt.NDArray[np.generic]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def replaced(
    parts: dict[str, bytes], name: str, array: npt.NDArray[np.generic]
) -> dict[str, bytes]:
    return {**parts, f"{TABLES_PREFIX}{name}.npy": npy(array)}


Corruption = Callable[[CandidateTables, dict[str, bytes]], dict[str, bytes]]


def _covis_index_out_of_range(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    indices = t.covis_indices.copy()
    indices[0] = t.n_items
    return replaced(parts, "covis_indices", indices)


def _negative_session_index(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    sessions = t.item_sess.copy()
    sessions[-1] = -1
    return replaced(parts, "item_sess", sessions)


def _session_item_out_of_range(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    items = t.sess_items.copy()
    items[0] = t.n_items + 5
    return replaced(parts, "sess_items", items)


def _indptr_not_monotonic(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    indptr = t.covis_indptr.copy()
    indptr[1], indptr[2] = indptr[2] + 1, indptr[1]
    assert np.any(np.diff(indptr) < 0)
    return replaced(parts, "covis_indptr", indptr)


def _indptr_wrong_length(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return replaced(parts, "item_sess_indptr", t.item_sess_indptr[:-1])


def _indptr_past_its_indices(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    indptr = t.sess_indptr.copy()
    indptr[-1] += 1
    return replaced(parts, "sess_indptr", indptr)


def _weights_wrong_dtype(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return replaced(parts, "covis_weights", t.covis_weights.astype(np.float64))


def _indices_wrong_dtype(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return replaced(parts, "covis_indices", t.covis_indices.astype(np.int64))


def _two_dimensional(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return replaced(parts, "pop_all", t.pop_all.reshape(1, -1))


def _missing_array(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in parts.items() if name != f"{TABLES_PREFIX}pop_all.npy"}


def _missing_items(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in parts.items() if name != f"{TABLES_PREFIX}items.msgpack"}


def _nan_weight(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    weights = t.covis_weights.copy()
    weights[0] = np.nan
    return replaced(parts, "covis_weights", weights)


def _infinite_weight(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    weights = t.covis_weights.copy()
    weights[-1] = np.inf
    return replaced(parts, "covis_weights", weights)


def _negative_popularity(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    popularity = t.pop_recent.copy()
    popularity[0] = -1.0
    return replaced(parts, "pop_recent", popularity)


def _popularity_per_item_missing(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return replaced(parts, "pop_all", t.pop_all[:-1])


def _weights_not_matching_indices(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return replaced(parts, "covis_weights", t.covis_weights[:-1])


def _category_outside_vocabulary(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    category = t.category.copy()
    category[0] = len(t.categories)
    return replaced(parts, "category", category)


def _duplicate_item_ids(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    ids = [t.item_ids[0], *t.item_ids[:-1]]
    return {**parts, f"{TABLES_PREFIX}items.msgpack": msgpack.packb(ids)}


def _not_a_numpy_file(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return {**parts, f"{TABLES_PREFIX}price.npy": b"not numpy"}


def _pickled_object_array(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}] * t.n_items, dtype=object), allow_pickle=True)
    return {**parts, f"{TABLES_PREFIX}price.npy": buffer.getvalue()}


def _items_not_msgpack(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return {**parts, f"{TABLES_PREFIX}items.msgpack": b"\xc1"}


def _categories_not_strings(t: CandidateTables, parts: dict[str, bytes]) -> dict[str, bytes]:
    return {**parts, f"{TABLES_PREFIX}categories.msgpack": msgpack.packb([1, 2])}


CORRUPTIONS: dict[str, Corruption] = {
    "covis index out of range": _covis_index_out_of_range,
    "negative session index": _negative_session_index,
    "session item out of range": _session_item_out_of_range,
    "indptr not monotonic": _indptr_not_monotonic,
    "indptr of the wrong length": _indptr_wrong_length,
    "indptr not ending at its indices": _indptr_past_its_indices,
    "weights of the wrong dtype": _weights_wrong_dtype,
    "indices of the wrong dtype": _indices_wrong_dtype,
    "a 2-d array": _two_dimensional,
    "missing array": _missing_array,
    "missing item ids": _missing_items,
    "NaN weight": _nan_weight,
    "infinite weight": _infinite_weight,
    "negative popularity": _negative_popularity,
    "popularity not one per item": _popularity_per_item_missing,
    "weights not matching indices": _weights_not_matching_indices,
    "category outside the vocabulary": _category_outside_vocabulary,
    "duplicate item ids": _duplicate_item_ids,
    "item ids not msgpack": _items_not_msgpack,
    "categories not strings": _categories_not_strings,
    "not a numpy file": _not_a_numpy_file,
    "pickled object array": _pickled_object_array,
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_from_parts_refuses_inconsistent_tables(tables: CandidateTables, corruption: str) -> None:
    parts = CORRUPTIONS[corruption](tables, tables.to_parts())
    with pytest.raises(PartError):
        CandidateTables.from_parts(parts)
