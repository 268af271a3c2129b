"""Candidate tables: the item statistics a bundle carries for candidates and features.

* co-visitation neighbours: for each item, its top neighbours in training sessions with
  weights (CSR: ``covis_indptr``, ``covis_indices``, ``covis_weights``; best first);
* popularity: event counts overall and over the most recent days of the log;
* item attributes: category code and price (NaN when unknown);
* neighbour sessions for session-kNN: each indexed session's distinct items (CSR
  ``sess_indptr``/``sess_items``) and, per item, the most recent sessions holding it
  (CSR ``item_sess_indptr``/``item_sess``).

The tables travel as parts of a bundle: numpy ``.npy`` arrays (loaded without pickle)
and msgpack string vocabularies. :meth:`CandidateTables.from_parts` checks every shape,
dtype and index range so a malformed bundle is refused at load, never at request time.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgpack
import numpy as np
import numpy.typing as npt

from protocol.errors import PartError

TABLES_PREFIX: Final = "tables/"
_ARRAYS: Final[dict[str, str]] = {
    "covis_indptr": "int64",
    "covis_indices": "int32",
    "covis_weights": "float32",
    "pop_all": "float32",
    "pop_recent": "float32",
    "category": "int32",
    "price": "float32",
    "sess_indptr": "int64",
    "sess_items": "int32",
    "item_sess_indptr": "int64",
    "item_sess": "int32",
}
_PER_ITEM: Final = ("pop_all", "pop_recent", "category", "price")

Ints = npt.NDArray[np.int32]
Offsets = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class CandidateTables:
    item_ids: list[str]
    categories: list[str]
    covis_indptr: Offsets
    covis_indices: Ints
    covis_weights: Floats
    pop_all: Floats
    pop_recent: Floats
    category: Ints
    price: Floats
    sess_indptr: Offsets
    sess_items: Ints
    item_sess_indptr: Offsets
    item_sess: Ints
    item_index: dict[str, int] = field(init=False, repr=False)
    category_index: dict[str, int] = field(init=False, repr=False)
    sess_len: Floats = field(init=False, repr=False)
    recent_order: Ints = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "item_index", {item: i for i, item in enumerate(self.item_ids)})
        set_(self, "category_index", {c: i for i, c in enumerate(self.categories)})
        set_(self, "sess_len", np.diff(self.sess_indptr).astype(np.float32))
        # Ties in recent popularity are broken by overall popularity.
        set_(self, "recent_order", np.lexsort((-self.pop_all, -self.pop_recent)).astype(np.int32))

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_sessions(self) -> int:
        return int(self.sess_indptr.shape[0] - 1)

    def to_parts(self) -> dict[str, bytes]:
        parts = {
            f"{TABLES_PREFIX}items.msgpack": msgpack.packb(self.item_ids),
            f"{TABLES_PREFIX}categories.msgpack": msgpack.packb(self.categories),
        }
        for name, dtype in _ARRAYS.items():
            buffer = io.BytesIO()
            np.save(
                buffer, np.ascontiguousarray(getattr(self, name), dtype=dtype), allow_pickle=False
            )
            parts[f"{TABLES_PREFIX}{name}.npy"] = buffer.getvalue()
        return parts

    @classmethod
    def from_parts(cls, parts: Mapping[str, bytes]) -> CandidateTables:
        item_ids = _strings(parts, "items.msgpack")
        categories = _strings(parts, "categories.msgpack")
        arrays = {name: _array(parts, name, dtype) for name, dtype in _ARRAYS.items()}
        # Checked before construction, which orders items by popularity.
        _check_per_item(arrays, len(item_ids))
        tables = cls(item_ids=item_ids, categories=categories, **arrays)  # type: ignore[arg-type]
        tables.check()
        return tables

    def check(self) -> None:
        """Raises :class:`PartError` unless every table is consistent with the others."""
        n_items, n_sessions = self.n_items, self.n_sessions
        if len(set(self.item_ids)) != n_items:
            _fail("items.msgpack", "item ids are not unique")
        _check_per_item({name: getattr(self, name) for name in _PER_ITEM}, n_items)
        _check_csr(self.covis_indptr, self.covis_indices, n_items, n_items, "covis")
        if self.covis_weights.shape != self.covis_indices.shape:
            _fail("covis_weights.npy", "must match covis_indices")
        if n_sessions < 0:
            _fail("sess_indptr.npy", "is empty")
        _check_csr(self.sess_indptr, self.sess_items, n_sessions, n_items, "sess")
        _check_csr(self.item_sess_indptr, self.item_sess, n_items, n_sessions, "item_sess")
        if self.category.size and (
            self.category.min() < -1 or self.category.max() >= len(self.categories)
        ):
            _fail("category.npy", "holds a category code outside the vocabulary")
        for name in ("covis_weights", "pop_all", "pop_recent"):
            values = getattr(self, name)
            if values.size and not (np.isfinite(values).all() and values.min() >= 0):
                _fail(f"{name}.npy", "must be finite and non-negative")


def _check_per_item(arrays: Mapping[str, npt.NDArray[np.generic]], n_items: int) -> None:
    for name in _PER_ITEM:
        if arrays[name].shape != (n_items,):
            _fail(f"{name}.npy", f"must hold one value per item ({n_items})")


def _check_csr(indptr: Offsets, indices: Ints, rows: int, columns: int, name: str) -> None:
    if indptr.shape != (rows + 1,) or indptr[0] != 0 or indptr[-1] != indices.shape[0]:
        _fail(f"{name}_indptr.npy", "does not delimit its index array")
    if rows and np.any(np.diff(indptr) < 0):
        _fail(f"{name}_indptr.npy", "is not monotonic")
    if indices.size and (indices.min() < 0 or indices.max() >= columns):
        _fail(f"{name} indices", f"point outside 0..{columns - 1}")


def _fail(part: str, message: str) -> None:
    raise PartError(f"{TABLES_PREFIX}{part} {message}", code="bad_tables", field=part)


def _strings(parts: Mapping[str, bytes], name: str) -> list[str]:
    data = _part(parts, name)
    try:
        values = msgpack.unpackb(data, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise PartError(f"{TABLES_PREFIX}{name} is not valid msgpack", code="bad_tables") from exc
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        _fail(name, "must be a list of strings")
    return values  # type: ignore[no-any-return]


def _array(parts: Mapping[str, bytes], name: str, dtype: str) -> npt.NDArray[np.generic]:
    data = _part(parts, f"{name}.npy")
    try:
        array: npt.NDArray[np.generic] = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PartError(
            f"{TABLES_PREFIX}{name}.npy is not a numpy array", code="bad_tables"
        ) from exc
    if array.dtype != np.dtype(dtype) or array.ndim != 1:
        _fail(f"{name}.npy", f"must be a 1-d {dtype} array, not {array.ndim}-d {array.dtype}")
    return array


def _part(parts: Mapping[str, bytes], name: str) -> bytes:
    try:
        return parts[f"{TABLES_PREFIX}{name}"]
    except KeyError:
        raise PartError(f"bundle has no part {TABLES_PREFIX}{name}", code="missing_part") from None
