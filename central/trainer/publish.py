"""Bundles into the NATS Object Store, and regions onto them through the rollout KV.

``proxima-models`` holds ``bundle-<version>`` objects; ``proxima-rollout`` holds one
:class:`~protocol.rollout.RolloutState` per region, which edges watch. Both buckets are
created when absent. Rollout records are changed by compare-and-set on the key's revision,
so a promotion never overwrites a change another writer (the rollout controller) made in
between: it reads again and re-applies. Old bundles are kept for rollbacks, the newest
``keep`` of them plus every version a rollout record still names.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from nats.js.client import KV_PRE_TEMPLATE, KV_STREAM_TEMPLATE, JetStreamContext
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
    ObjectNotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import OBJ_META_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE, ObjectStore

from central.errors import CentralError
from protocol.errors import NameError_
from protocol.rollout import RolloutError, RolloutState, promote
from protocol.subjects import MODELS_BUCKET, ROLLOUT_BUCKET, bundle_object_name, check_token

ROLLOUT_HISTORY: Final = 5
KEEP_BUNDLES: Final = 10
_CAS_ATTEMPTS: Final = 10
_BUNDLE_NAME: Final = re.compile(r"bundle-([1-9][0-9]*)")

log = logging.getLogger(__name__)


class PublishError(CentralError):
    """A bundle or rollout record could not be read or written on the bus."""

    code = "publish_failed"


@dataclass(frozen=True, slots=True)
class Buckets:
    models: str = MODELS_BUCKET
    rollout: str = ROLLOUT_BUCKET


DEFAULT_BUCKETS: Final = Buckets()


async def models_store(js: JetStreamContext, buckets: Buckets = DEFAULT_BUCKETS) -> ObjectStore:
    try:
        return await js.object_store(buckets.models)
    except BucketNotFoundError:
        return await js.create_object_store(buckets.models)


async def rollout_kv(js: JetStreamContext, buckets: Buckets = DEFAULT_BUCKETS) -> KeyValue:
    try:
        return await js.key_value(buckets.rollout)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=buckets.rollout, history=ROLLOUT_HISTORY)


async def publish_bundle(
    js: JetStreamContext,
    data: bytes,
    version: int,
    *,
    buckets: Buckets = DEFAULT_BUCKETS,
    keep: int = KEEP_BUNDLES,
) -> None:
    """Stores ``data`` as ``bundle-<version>``, then prunes the oldest beyond ``keep``."""
    store = await models_store(js, buckets)
    await store.put(bundle_object_name(version), data)
    try:
        await prune_bundles(js, keep, buckets=buckets)
    except PublishError as exc:  # the bundle is out; old ones stay until the next prune
        log.warning("old bundles were not pruned: %s", exc)


async def fetch_bundle(
    js: JetStreamContext, version: int, *, buckets: Buckets = DEFAULT_BUCKETS
) -> bytes:
    """The bytes of ``bundle-<version>`` (unverified: check them with ``read_bundle``)."""
    name = bundle_object_name(version)
    try:
        store = await js.object_store(buckets.models)
        result = await store.get(name)
    except (BucketNotFoundError, ObjectNotFoundError) as exc:
        raise PublishError(f"{buckets.models} holds no {name}") from exc
    return bytes(result.data or b"")


async def bundle_versions(js: JetStreamContext, *, buckets: Buckets = DEFAULT_BUCKETS) -> list[int]:
    """The versions of the bundles in the object store, ascending."""
    prefix = OBJ_META_PRE_TEMPLATE.format(bucket=buckets.models, obj="")
    stream = OBJ_STREAM_TEMPLATE.format(bucket=buckets.models)
    versions = []
    for encoded in await _subjects(js, stream, prefix):
        name = base64.urlsafe_b64decode(encoded).decode("utf-8", "replace")
        match = _BUNDLE_NAME.fullmatch(name)
        if match is None:
            continue
        try:
            store = await js.object_store(buckets.models)
            await store.get_info(name)
        except ObjectNotFoundError:  # deleted: only its metadata is left
            continue
        versions.append(int(match.group(1)))
    return sorted(versions)


async def prune_bundles(
    js: JetStreamContext, keep: int, *, buckets: Buckets = DEFAULT_BUCKETS
) -> list[int]:
    """Deletes all but the newest ``keep`` bundles, sparing any a rollout record names."""
    versions = await bundle_versions(js, buckets=buckets)
    if len(versions) <= keep:
        return []
    named = {
        v
        for state in (await rollout_states(js, buckets=buckets)).values()
        for v in state.versions()
    }
    doomed = [v for v in versions[: len(versions) - keep] if v not in named]
    store = await models_store(js, buckets)
    for version in doomed:
        await store.delete(bundle_object_name(version))
    if doomed:
        log.info("deleted old bundles %s from %s", doomed, buckets.models)
    return doomed


async def current_rollout(
    js: JetStreamContext, region: str, *, buckets: Buckets = DEFAULT_BUCKETS
) -> RolloutState | None:
    """The rollout record of ``region``, or None when it has none (or no bucket exists)."""
    try:
        kv = await js.key_value(buckets.rollout)
        entry = await kv.get(check_token(region, "region"))
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    return _decoded(region, entry.value)


async def rollout_states(
    js: JetStreamContext, *, buckets: Buckets = DEFAULT_BUCKETS
) -> dict[str, RolloutState]:
    """Every region's rollout record."""
    prefix = KV_PRE_TEMPLATE.format(bucket=buckets.rollout)
    stream = KV_STREAM_TEMPLATE.format(bucket=buckets.rollout)
    states = {}
    for region in await _subjects(js, stream, prefix):
        try:
            check_token(region, "region")
        except NameError_:
            continue  # not a region's record
        state = await current_rollout(js, region, buckets=buckets)
        if state is not None:
            states[region] = state
    return states


async def promote_regions(
    js: JetStreamContext,
    version: int,
    regions: Iterable[str],
    *,
    buckets: Buckets = DEFAULT_BUCKETS,
) -> dict[str, RolloutState]:
    """Makes ``version`` every region's stable bundle (no canary); returns the new records.

    A region keeps its ``rules_version``; ``step`` counts on from the previous record.
    """
    kv = await rollout_kv(js, buckets)
    promoted = {}
    for region in regions:
        check_token(region, "region")
        promoted[region] = await _promote_one(kv, region, version)
    return promoted


async def _promote_one(kv: KeyValue, region: str, version: int) -> RolloutState:
    for _ in range(_CAS_ATTEMPTS):
        try:
            entry = await kv.get(region)
        except KeyNotFoundError:
            state = promote(version)
            try:
                await kv.create(region, state.encode())
            except KeyWrongLastSequenceError:
                continue  # another writer created it first: read theirs
            return state
        previous = _decoded(region, entry.value)
        state = promote(version, rules_version=previous.rules_version, previous=previous)
        try:
            await kv.update(region, state.encode(), last=entry.revision)
        except KeyWrongLastSequenceError:
            continue
        return state
    raise PublishError(
        f"could not promote bundle {version} in region {region}: the rollout record kept "
        f"changing under {_CAS_ATTEMPTS} attempts"
    )


async def _subjects(js: JetStreamContext, stream: str, prefix: str) -> list[str]:
    """The subjects under ``prefix`` that hold messages in ``stream``, prefix removed.

    Asked of the stream's state rather than listed with a watcher, whose first-batch
    marker can arrive before the entries do and make a full bucket look empty.
    """
    try:
        info = await js.stream_info(stream, subjects_filter=f"{prefix}>")
    except NotFoundError:
        return []
    return sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))


def _decoded(region: str, value: bytes | None) -> RolloutState:
    try:
        return RolloutState.decode(value or b"")
    except RolloutError as exc:
        raise PublishError(f"the rollout record of region {region} is unreadable: {exc}") from exc
