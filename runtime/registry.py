"""The model registry: bundles in the Object Store, each region's rollout in the KV.

``proxima-models`` holds ``bundle-<version>`` objects; ``proxima-rollout`` holds one
:class:`~protocol.rollout.RolloutState` per region, which edges watch. The trainer publishes
and promotes through it, the rollout controller reads and writes rollout records through it,
edges fetch bundles and watch their region's record through it, and so do the benches.

Both buckets are created when absent (on the write side). Rollout records are changed by
compare-and-set on the key's revision, so a promotion never overwrites a change another
writer (the rollout controller) made in between: it reads again and re-applies. Old
bundles are kept for rollbacks, the newest ``keep`` of them plus every version a rollout
record still names.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
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

from protocol.errors import NameError_, ProximaError
from protocol.rollout import RolloutError, RolloutState, promote
from protocol.subjects import MODELS_BUCKET, ROLLOUT_BUCKET, bundle_object_name, check_token

ROLLOUT_HISTORY: Final = 5
KEEP_BUNDLES: Final = 10
_CAS_ATTEMPTS: Final = 10
_BUNDLE_NAME: Final = re.compile(r"bundle-([1-9][0-9]*)")

log = logging.getLogger("proxima.registry")


class RegistryError(ProximaError):
    """A bundle or rollout record could not be read or written on the bus."""

    code = "registry_failed"
    status = 503


class BundleNotFoundError(RegistryError):
    code = "bundle_not_found"


class BundleTooLargeError(RegistryError):
    """The object is bigger than the caller takes: refused before (or while) downloading."""

    code = "bundle_too_large"
    status = 413
    status = 404


@dataclass(frozen=True, slots=True)
class Buckets:
    models: str = MODELS_BUCKET
    rollout: str = ROLLOUT_BUCKET


DEFAULT_BUCKETS: Final = Buckets()


@dataclass(frozen=True, slots=True)
class FetchedBundle:
    data: bytes
    digest: str  # the object store's digest of the object, to recognise it unchanged


class ModelRegistry:
    """The registry as one JetStream context sees it; cheap to make per connection."""

    def __init__(self, js: JetStreamContext, buckets: Buckets = DEFAULT_BUCKETS) -> None:
        self.js = js
        self.buckets = buckets

    # -- buckets --------------------------------------------------------------------------

    async def models_store(self) -> ObjectStore:
        try:
            return await self.js.object_store(self.buckets.models)
        except BucketNotFoundError:
            return await self.js.create_object_store(self.buckets.models)

    async def rollout_kv(self, *, create: bool = True) -> KeyValue:
        try:
            return await self.js.key_value(self.buckets.rollout)
        except BucketNotFoundError:
            if not create:
                raise
            return await self.js.create_key_value(
                bucket=self.buckets.rollout, history=ROLLOUT_HISTORY
            )

    # -- bundles --------------------------------------------------------------------------

    async def publish_bundle(self, data: bytes, version: int, *, keep: int = KEEP_BUNDLES) -> None:
        """Stores ``data`` as ``bundle-<version>``, then prunes the oldest beyond ``keep``."""
        store = await self.models_store()
        await store.put(bundle_object_name(version), data)
        try:
            await self.prune_bundles(keep)
        except RegistryError as exc:  # the bundle is out; old ones stay until the next prune
            log.warning("old bundles were not pruned: %s", exc)

    async def fetch_bundle(self, version: int, *, timeout_s: float | None = None) -> bytes:
        """The bytes of ``bundle-<version>`` (unverified: check them with ``read_bundle``)."""
        return (await self.fetch(version, timeout_s=timeout_s)).data

    async def fetch(
        self, version: int, *, timeout_s: float | None = None, max_bytes: int | None = None
    ) -> FetchedBundle:
        """``bundle-<version>``; with ``max_bytes``, an object whose recorded size is larger
        is refused before a chunk is read, and the download stops once more bytes came."""
        name = bundle_object_name(version)
        buffer = _CappedBuffer(name, max_bytes)
        try:
            store = await self.js.object_store(self.buckets.models)
            if max_bytes is not None:
                info = await asyncio.wait_for(store.get_info(name), timeout_s)
                if info.size is not None and info.size > max_bytes:
                    raise BundleTooLargeError(
                        f"{name} is {info.size} bytes, over the limit of {max_bytes}"
                    )
            result = await asyncio.wait_for(store.get(name, writeinto=buffer), timeout_s)
        except (BucketNotFoundError, ObjectNotFoundError) as exc:
            raise BundleNotFoundError(f"{self.buckets.models} holds no {name}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise RegistryError(f"cannot fetch {name} from {self.buckets.models}: {exc!r}") from exc
        return FetchedBundle(buffer.getvalue(), result.info.digest or "")

    async def bundle_digest(self, version: int) -> str | None:
        """The digest of ``bundle-<version>``, or None when it is not there."""
        name = bundle_object_name(version)
        try:
            store = await self.js.object_store(self.buckets.models)
            info = await store.get_info(name)
        except (BucketNotFoundError, ObjectNotFoundError):
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise RegistryError(f"cannot read {name} in {self.buckets.models}: {exc!r}") from exc
        return info.digest or ""

    async def bundle_versions(self) -> list[int]:
        """The versions of the bundles in the object store, ascending."""
        prefix = OBJ_META_PRE_TEMPLATE.format(bucket=self.buckets.models, obj="")
        stream = OBJ_STREAM_TEMPLATE.format(bucket=self.buckets.models)
        versions = []
        for encoded in await self._subjects(stream, prefix):
            name = base64.urlsafe_b64decode(encoded).decode("utf-8", "replace")
            match = _BUNDLE_NAME.fullmatch(name)
            if match is None:
                continue
            try:
                store = await self.js.object_store(self.buckets.models)
                await store.get_info(name)
            except ObjectNotFoundError:  # deleted: only its metadata is left
                continue
            versions.append(int(match.group(1)))
        return sorted(versions)

    async def prune_bundles(self, keep: int) -> list[int]:
        """Deletes all but the newest ``keep`` bundles, sparing any a rollout record names."""
        versions = await self.bundle_versions()
        if len(versions) <= keep:
            return []
        named = {v for state in (await self.rollout_states()).values() for v in state.versions()}
        doomed = [v for v in versions[: len(versions) - keep] if v not in named]
        store = await self.models_store()
        for version in doomed:
            await store.delete(bundle_object_name(version))
        if doomed:
            log.info("deleted old bundles %s from %s", doomed, self.buckets.models)
        return doomed

    # -- rollout records ------------------------------------------------------------------

    async def current_rollout(self, region: str) -> RolloutState | None:
        """The rollout record of ``region``, or None when it has none (or no bucket exists)."""
        try:
            kv = await self.js.key_value(self.buckets.rollout)
            entry = await kv.get(check_token(region, "region"))
        except (BucketNotFoundError, KeyNotFoundError):
            return None
        return decode_rollout(region, entry.value)

    async def rollout_states(self) -> dict[str, RolloutState]:
        """Every region's rollout record."""
        prefix = KV_PRE_TEMPLATE.format(bucket=self.buckets.rollout)
        stream = KV_STREAM_TEMPLATE.format(bucket=self.buckets.rollout)
        states = {}
        for region in await self._subjects(stream, prefix):
            try:
                check_token(region, "region")
            except NameError_:
                continue  # not a region's record
            state = await self.current_rollout(region)
            if state is not None:
                states[region] = state
        return states

    async def promote_regions(
        self,
        version: int,
        regions: Iterable[str],
        *,
        signer: Ed25519PrivateKey | None = None,
        by: str | None = None,
    ) -> dict[str, RolloutState]:
        """Makes ``version`` every region's stable bundle (no canary); returns the new records.

        A region keeps its ``rules_version``; ``step`` counts on from the previous record.
        ``by`` names the writer in the record; ``signer`` signs it (see
        :meth:`protocol.rollout.RolloutState.signed`).
        """
        kv = await self.rollout_kv()
        promoted = {}
        for region in regions:
            check_token(region, "region")
            promoted[region] = await self._promote_one(kv, region, version, signer, by)
        return promoted

    async def watch_rollout(self, region: str) -> Any:
        """A KV watcher of ``region``'s record (BucketNotFoundError while no bucket exists)."""
        kv = await self.rollout_kv(create=False)
        return await kv.watch(check_token(region, "region"))

    async def _promote_one(
        self,
        kv: KeyValue,
        region: str,
        version: int,
        signer: Ed25519PrivateKey | None,
        by: str | None,
    ) -> RolloutState:
        for _ in range(_CAS_ATTEMPTS):
            try:
                entry = await kv.get(region)
            except KeyNotFoundError:
                state = _finish(promote(version), region, signer, by)
                try:
                    await kv.create(region, state.encode())
                except KeyWrongLastSequenceError:
                    continue  # another writer created it first: read theirs
                return state
            previous = decode_rollout(region, entry.value)
            state = _finish(
                promote(version, rules_version=previous.rules_version, previous=previous),
                region,
                signer,
                by,
            )
            try:
                await kv.update(region, state.encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            return state
        raise RegistryError(
            f"could not promote bundle {version} in region {region}: the rollout record kept "
            f"changing under {_CAS_ATTEMPTS} attempts"
        )

    async def _subjects(self, stream: str, prefix: str) -> list[str]:
        """The subjects under ``prefix`` that hold messages in ``stream``, prefix removed.

        Asked of the stream's state rather than listed with a watcher, whose first-batch
        marker can arrive before the entries do and make a full bucket look empty.
        """
        try:
            info = await self.js.stream_info(stream, subjects_filter=f"{prefix}>")
        except NotFoundError:
            return []
        return sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))


def _finish(
    state: RolloutState, region: str, signer: Ed25519PrivateKey | None, by: str | None
) -> RolloutState:
    state = dataclasses.replace(state, by=by) if by is not None else state
    return state.signed(signer, region=region) if signer is not None else state


class _CappedBuffer(io.BytesIO):
    """Where a download is written: refuses the chunk that would take it past ``limit``."""

    def __init__(self, name: str, limit: int | None) -> None:
        super().__init__()
        self._name, self._limit = name, limit

    def write(self, chunk: Any) -> int:
        if self._limit is not None and self.tell() + len(chunk) > self._limit:
            raise BundleTooLargeError(
                f"{self._name} sent more than {self._limit} bytes, more than its size said"
            )
        return super().write(chunk)


def decode_rollout(region: str, value: bytes | None) -> RolloutState:
    try:
        return RolloutState.decode(value or b"")
    except RolloutError as exc:
        raise RegistryError(f"the rollout record of region {region} is unreadable: {exc}") from exc
