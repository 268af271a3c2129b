"""The catalog's live state: one ``proxima-catalog`` KV entry per item, written by CAS.

Central creates the bucket; edges only bind to it and watch. Every write reads the key,
decides with :meth:`protocol.catalog.Item.supersedes` whether the change is newer, and
writes with ``update(key, value, last=revision)`` (``create`` for a new key), so two writers
racing on one item cannot lose the newer change: the loser reads again and decides again.

* ``put``: a whole item. With a ``version`` it is ordered by it; with only an
  ``updated_at`` it must be later than the stored one; with neither, it follows the stored
  version. Writing the same content again changes nothing (``unchanged``).
* ``patch``: some fields of a stored item (404 when there is none), next version.
* ``delete``: a tombstone (``deleted: true``) so that a late, older ``put`` cannot bring the
  item back.

A batch is validated whole before anything is written, and missing items of a ``patch``
batch are found before anything is written; what can still stop a batch half-way is the bus
itself going away, which the caller sees as a 503 and can retry (every change is idempotent).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal

import nats.errors
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from central.catalog.errors import (
    CatalogConflictError,
    CatalogUnavailableError,
    ItemNotFoundError,
)
from protocol.catalog import (
    MAX_ITEM_BYTES,
    MAX_VERSION,
    Item,
    apply_patch,
    check_item_id,
    decode_item,
    encode_item,
)
from protocol.subjects import CATALOG_BUCKET

CATALOG_HISTORY: Final = 1
_CAS_ATTEMPTS: Final = 20

Status = Literal["created", "updated", "unchanged", "stale", "deleted"]
Clock = Callable[[], int]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    id: str
    status: Status
    version: int
    revision: int  # the KV revision holding the item's state after this change

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Stored:
    item: Item
    revision: int


async def catalog_kv(js: JetStreamContext, bucket: str = CATALOG_BUCKET) -> KeyValue:
    """The catalog bucket, created when absent (central's side only)."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(
            bucket=bucket, history=CATALOG_HISTORY, max_value_size=MAX_ITEM_BYTES * 2
        )


class CatalogStore:
    def __init__(self, kv: KeyValue, *, clock: Clock = now_ms) -> None:
        self.kv = kv
        self.clock = clock

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = CATALOG_BUCKET) -> CatalogStore:
        try:
            return cls(await catalog_kv(js, bucket))
        except (nats.errors.Error, TimeoutError) as exc:
            raise CatalogUnavailableError(
                f"cannot open the catalog bucket: {exc!r}", retry_after_s=1
            ) from exc

    async def get(self, item_id: str) -> Stored | None:
        check_item_id(item_id)
        try:
            entry = await self.kv.get(item_id)
        except KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise CatalogUnavailableError(
                f"cannot read the catalog: {exc!r}", retry_after_s=1
            ) from exc
        if entry.value is None or entry.revision is None:
            return None
        return Stored(decode_item(entry.value), entry.revision)

    async def put(self, items: Sequence[Item]) -> list[Outcome]:
        return [await self._write(item.id, partial(self._put_one, new=item)) for item in items]

    async def patch(self, patches: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        for patch in patches:
            if await self.get(patch["id"]) is None:
                raise ItemNotFoundError(f"no item {patch['id']!r} to change", field="id")
        return [await self._write(p["id"], partial(self._patch_one, patch=p)) for p in patches]

    async def delete(self, item_ids: Sequence[str]) -> list[Outcome]:
        for item_id in item_ids:
            check_item_id(item_id)
        return [await self._write(i, partial(self._delete_one, item_id=i)) for i in item_ids]

    # -- deciding one change ----------------------------------------------------------------

    def _put_one(self, old: Item | None, new: Item) -> tuple[Item | None, Status]:
        now = self.clock()
        if old is None:
            version = new.version or 1
            stamped = dataclasses.replace(
                new,
                version=version,
                created_at=new.created_at or now,
                updated_at=new.updated_at or now,
            )
            return stamped, "created"
        if new.version is None:
            if new.updated_at is not None and new.updated_at <= (old.updated_at or 0):
                return None, "stale"
            version = _next(old)
        else:
            version = new.version
            if version == old.version and (new.updated_at or 0) <= (old.updated_at or 0):
                # a tie is broken only by a later updated_at the feed itself sent
                same = new.same_content(old) and not old.deleted
                return None, "unchanged" if same else "stale"
        candidate = dataclasses.replace(
            new,
            version=version,
            created_at=old.created_at,
            updated_at=new.updated_at or max(now, (old.updated_at or 0) + 1),
        )
        if candidate.same_content(old) and not old.deleted:
            return None, "unchanged"
        if not candidate.supersedes(old):
            return None, "stale"
        return candidate, "updated"

    def _patch_one(self, old: Item | None, patch: Mapping[str, Any]) -> tuple[Item | None, Status]:
        if old is None:
            raise ItemNotFoundError(f"no item {patch['id']!r} to change", field="id")
        version = patch.get("version") or _next(old)
        updated = apply_patch(old, {**patch, "version": version})
        stamp = patch.get("updated_at") or max(self.clock(), (old.updated_at or 0) + 1)
        updated = dataclasses.replace(updated, updated_at=stamp)
        if updated.same_content(old):
            return None, "unchanged"
        if not updated.supersedes(old):
            return None, "stale"
        return updated, "updated"

    def _delete_one(self, old: Item | None, item_id: str) -> tuple[Item | None, Status]:
        now = self.clock()
        if old is None:
            return Item(item_id, deleted=True, version=1, created_at=now, updated_at=now), "deleted"
        if old.deleted:
            return None, "unchanged"
        stamp = max(now, (old.updated_at or 0) + 1)
        return dataclasses.replace(
            old, deleted=True, version=_next(old), updated_at=stamp
        ), "deleted"

    # -- writing by compare-and-set ---------------------------------------------------------

    async def _write(
        self, item_id: str, decide: Callable[[Item | None], tuple[Item | None, Status]]
    ) -> Outcome:
        try:
            for _ in range(_CAS_ATTEMPTS):
                stored = await self.get(item_id)
                item, status = decide(stored.item if stored else None)
                if item is None:
                    assert stored is not None
                    return Outcome(item_id, status, stored.item.version or 0, stored.revision)
                value = encode_item(item)
                try:
                    if stored is None:
                        revision = await self.kv.create(item_id, value)
                    else:
                        revision = await self.kv.update(item_id, value, last=stored.revision)
                except KeyWrongLastSequenceError:
                    continue  # another writer was first: decide again on what it wrote
                return Outcome(item_id, status, item.version or 0, revision)
        except (nats.errors.Error, TimeoutError) as exc:
            raise CatalogUnavailableError(
                f"cannot write the catalog: {exc!r}", retry_after_s=1
            ) from exc
        raise CatalogConflictError(
            f"item {item_id!r} kept changing under {_CAS_ATTEMPTS} attempts", field="id"
        )


def _next(item: Item) -> int:
    return min((item.version or 0) + 1, MAX_VERSION)
