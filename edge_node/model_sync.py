"""Keeps the edge's bundle in step with its region's rollout: NATS → verified bundle → swap.

:class:`ModelSync` watches the ``proxima-rollout`` KV key of its region through the
:class:`~runtime.registry.ModelRegistry` (the watch delivers the current value first, then
every change as it happens). When the stable version differs from the served one, it
fetches ``bundle-<version>`` from the ``proxima-models`` object store, verifies, warms up
and swaps it in through :class:`~edge_node.model_store.ModelStore` in a worker thread, so
requests keep being answered meanwhile, and writes it to the
:class:`~edge_node.bundle_cache.BundleCache` for starts without NATS.

The edge must start, and keep serving, whatever NATS does. The connection is the process's
:class:`~runtime.supervisor.BusSupervisor`'s; this is one of its listeners. On each new
connection the rollout is watched afresh; ``models.stale`` is True from start until the
rollout has been read over a live connection, and again whenever the connection is lost.

A bundle that fails any check is refused (the store records why) and the current one stays;
the same version is not fetched again unless its object in the store changes. A canary
named by the record is fetched and verified the same way and handed to the store with its
share of sessions (or as a shadow); a promotion reuses the warm canary. Only stable
bundles go to the disk cache, so a restart without NATS never starts on a canary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import nats
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from edge_node.bundle_cache import BundleCache
from edge_node.model_store import Canary, ModelStore, Refusal
from protocol.bundle import MAX_BUNDLE_BYTES, inspect_bundle
from protocol.errors import ProtocolError
from protocol.keys import TrustedKeys
from protocol.rollout import Floor, RolloutError, RolloutState, admit
from protocol.serving import ServingModel
from protocol.subjects import bundle_object_name
from runtime.backoff import Backoff
from runtime.registry import (
    DEFAULT_BUCKETS,
    Buckets,
    BundleTooLargeError,
    ModelRegistry,
    RegistryError,
)
from runtime.service import Lifecycle
from runtime.supervisor import BusConnection, BusListener, BusSupervisor, describe_error

log = logging.getLogger("proxima.edge.model_sync")

_REMOVED = (KV_DEL, KV_PURGE)  # KV operations that leave the key without a value
_WATCHER_STOP_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class SyncTiming:
    bucket_retry_initial_s: float = 0.2  # polling for a rollout bucket that does not exist yet
    bucket_retry_max_s: float = 5.0  # (and watching again after a failed watch)
    fetch_retry_initial_s: float = 0.5
    fetch_retry_max_s: float = 30.0
    fetch_timeout_s: float = 120.0
    rewatch_when_idle_s: float = 60.0  # re-read the rollout after this long without news


@dataclass(frozen=True, slots=True)
class SyncStatus:
    connected: bool
    rollout: RolloutState | None  # the last valid record read for this region
    last_error: str | None
    refusals: int  # bundles from NATS refused by this edge
    refused_versions: tuple[int, ...]


class _RecordRefused(Exception):
    """A rollout record this edge will not follow (unsigned, replayed, below the floor)."""


class _Retry(Exception):
    """A fetch failed for a reason that may pass (no connection, object not there yet)."""


class ModelSync(BusListener):
    def __init__(
        self,
        models: ModelStore,
        bus: BusSupervisor,
        *,
        region: str,
        cache: BundleCache,
        timing: SyncTiming | None = None,
        on_swap: Callable[[ServingModel], None] | None = None,
        buckets: Buckets = DEFAULT_BUCKETS,
        rollout_keys: TrustedKeys | None = None,
    ) -> None:
        self.models = models
        self.bus = bus
        self.region = region
        self.cache = cache
        self.timing = timing or SyncTiming()
        self.on_swap = on_swap
        self.buckets = buckets
        self.rollout_keys = rollout_keys  # when set, only records signed with these are followed
        self._floor = Floor()
        self._lifecycle = Lifecycle("the model sync")
        self._connection: BusConnection | None = None
        self._registry: ModelRegistry | None = None
        self._watch: asyncio.Task[None] | None = None  # of the live connection
        self._follow: asyncio.Task[None] | None = None
        self._rollout: RolloutState | None = None
        self._rollout_changed = asyncio.Event()
        self._refused: dict[int, str] = {}  # version -> digest of the refused object
        self._canary_bytes: bytes | None = None  # cached once the canary is promoted
        self._refusals = 0
        self._last_error: str | None = None

    @property
    def status(self) -> SyncStatus:
        return SyncStatus(
            connected=self._connected,
            rollout=self._rollout,
            last_error=self._last_error or self.bus.status.last_error,
            refusals=self._refusals,
            refused_versions=tuple(sorted(self._refused)),
        )

    @property
    def _connected(self) -> bool:
        return self._connection is not None and self._connection.usable

    async def start(self) -> None:
        """Loads the cached bundle if nothing is served yet, then syncs in the background."""
        self._lifecycle.begin_start()
        if self.models.current is None:
            await self._load_from_cache()
        if self.models.current is not None:  # never go below what this edge already serves
            self._floor = Floor(self._floor.step, self.models.current.version)
        self.models.stale = True  # until the rollout is read over a live connection
        self._follow = asyncio.create_task(self._follow_rollout(), name="model-sync-apply")
        self.bus.attach(self)

    async def close(self, timeout_s: float = 10.0) -> None:
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        self.bus.detach(self)
        await self._stop_watching()
        if self._follow is not None:
            self._follow.cancel()
            await asyncio.gather(self._follow, return_exceptions=True)
        self._lifecycle.finish_close()

    async def _load_from_cache(self) -> None:
        for version in await asyncio.to_thread(self.cache.versions):
            path = self.cache.path_of(version)
            try:
                data = await asyncio.to_thread(path.read_bytes)
                await asyncio.to_thread(self.models.load_bytes, data, f"cache:{path}")
                return
            except OSError as exc:
                log.warning("cannot read cached bundle %s: %s", path, exc.strerror)
            except ProtocolError:
                pass  # logged and recorded by the store; try the one before
        log.info("no usable cached bundle in %s", self.cache.directory)

    # -- the bus and the watch --------------------------------------------------------------

    async def bus_connected(self, connection: BusConnection) -> None:
        if not self._lifecycle.running:
            return
        await self._stop_watching()
        self._connection = connection
        self._registry = ModelRegistry(connection.jetstream(), self.buckets)
        self._watch = asyncio.create_task(
            self._keep_watching(self._registry, connection), name="model-sync-watch"
        )

    async def bus_lost(self) -> None:
        await self._stop_watching()
        if self._lifecycle.running:
            self.models.stale = True
            log.warning("NATS connection lost; serving the current bundle as stale until back")

    def bus_error(self, error: Exception) -> None:
        self._last_error = f"NATS: {describe_error(error)}"  # the supervisor logs it

    async def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        self._connection = self._registry = None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _keep_watching(self, registry: ModelRegistry, connection: BusConnection) -> None:
        """Watches the rollout while ``connection`` lives; a failed watch is started again."""
        timing = self.timing
        backoff = Backoff(timing.bucket_retry_initial_s, timing.bucket_retry_max_s)
        while connection.usable:
            try:
                watcher = await registry.watch_rollout(self.region)
            except BucketNotFoundError:
                if backoff.failures == 0:
                    log.info("no %s bucket yet; serving what is loaded", self.buckets.rollout)
                self._offer(None)
            except Exception as exc:
                self._watch_failed(exc)
            else:
                backoff.reset()
                try:
                    await self._read_updates(watcher)
                    continue  # idle for a while: read it afresh
                except Exception as exc:
                    self._watch_failed(exc)
            await backoff.sleep(connection.lost)

    def _watch_failed(self, error: Exception) -> None:
        self._note_error(f"watching the rollout failed: {describe_error(error)}", loud=True)

    async def _read_updates(self, watcher: Any) -> None:
        """Offers each update until the watch has been idle for a while."""
        delivered = False
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=self.timing.rewatch_when_idle_s)
                except nats.errors.TimeoutError:
                    return  # read it afresh, in case the watch went quiet
                if entry is None:  # the current value, if any, has been delivered
                    if not delivered:
                        self._offer(None)
                    continue
                if not isinstance(entry, KeyValue.Entry):
                    return  # the watcher was stopped
                delivered = True
                if entry.operation in _REMOVED or entry.value is None:
                    log.warning(
                        "rollout key %s was removed; keeping the current bundle", self.region
                    )
                    self._offer(None)
                    continue
                try:
                    self._offer(self._admitted(RolloutState.decode(entry.value)))
                except _RecordRefused as exc:
                    self._note_error(
                        f"refused rollout record (revision {entry.revision}): {exc}; "
                        "keeping the current bundle",
                        loud=True,
                    )
                    self._rollout_changed.set()
                except ProtocolError as exc:
                    self._note_error(
                        f"malformed rollout record (revision {entry.revision}): {exc.message}; "
                        "keeping the current bundle",
                        loud=True,
                    )
                    self._rollout_changed.set()  # the bus was heard: re-confirm what is served
        finally:
            # Bounded: on a connection that just went silent, unsubscribing could wait.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watcher.stop(), _WATCHER_STOP_S)

    def _admitted(self, record: RolloutState) -> RolloutState:
        """``record``, when this edge requires no signature or the record passes
        :func:`protocol.rollout.admit`; else :class:`_RecordRefused` (recorded as a refusal)."""
        keys = self.rollout_keys
        if keys is None:
            return record
        try:
            self._floor = admit(record, keys, self._floor, region=self.region)
        except RolloutError as exc:
            self._record_refusal(f"nats:rollout/{self.region}", exc.code, exc.message)
            raise _RecordRefused(f"{exc.message} [{exc.code}]") from exc
        return record

    def _offer(self, rollout: RolloutState | None) -> None:
        self._rollout = rollout
        self._rollout_changed.set()

    # -- applying the rollout ---------------------------------------------------------------

    async def _follow_rollout(self) -> None:
        """Applies the newest record; a fetch that may succeed later is retried with backoff."""
        while True:
            await self._rollout_changed.wait()
            self._rollout_changed.clear()
            backoff = Backoff(self.timing.fetch_retry_initial_s, self.timing.fetch_retry_max_s)
            while True:
                try:
                    await self._apply(self._rollout)
                    break
                except _Retry as exc:
                    self._note_error(str(exc))
                if not await backoff.sleep(self._rollout_changed):
                    break  # a newer record (or a reconnect) came in: start over with it

    async def _apply(self, rollout: RolloutState | None) -> None:
        if rollout is not None:
            await self._apply_stable(rollout.stable)
            await self._apply_canary(rollout)
        self._confirm()

    async def _apply_stable(self, version: int | None) -> None:
        served = self.models.current
        if version is None or (served is not None and served.version == version):
            return
        canary = self.models.canary
        if canary is not None and canary.model.version == version and self._canary_bytes:
            # A promotion: the canary is verified and warm already.
            model, data = canary.model, self._canary_bytes
            self.models.serve_stable(model, f"canary:{bundle_object_name(version)}")
        else:
            fetched = await self._fetch_verified(version)
            if fetched is None:
                return
            model, data = fetched
            self.models.serve_stable(model, f"nats:{bundle_object_name(version)}")
        try:
            await asyncio.to_thread(self.cache.store, version, data)
        except OSError as exc:
            self._note_error(f"cannot cache bundle {version}: {exc}")
        if self.on_swap is not None:
            self.on_swap(model)

    async def _apply_canary(self, rollout: RolloutState) -> None:
        version = rollout.canary
        if version is None or (rollout.canary_percent == 0 and not rollout.shadow):
            self.models.set_canary(None)
            self._canary_bytes = None
            return
        held = self.models.canary
        stable = self.models.current
        if held is not None and held.model.version == version:
            model = held.model
        elif stable is not None and stable.version == version:
            model = stable
        else:
            fetched = await self._fetch_verified(version)
            if fetched is None:  # refused: every session stays on stable
                self.models.set_canary(None)
                self._canary_bytes = None
                return
            model, self._canary_bytes = fetched
        self.models.set_canary(Canary(model, rollout.canary_percent, rollout.shadow))

    async def _fetch_verified(self, version: int) -> tuple[ServingModel, bytes] | None:
        """The bundle of ``version``, verified and warmed up; None when this edge refuses it."""
        registry = self._registry
        if registry is None or not self._connected:
            raise _Retry(f"bundle {version} is wanted but NATS is not connected")
        name = bundle_object_name(version)
        try:
            refused = self._refused.get(version)
            if refused is not None and await registry.bundle_digest(version) == refused:
                return None  # refused before, unchanged since
            fetched = await registry.fetch(
                version, timeout_s=self.timing.fetch_timeout_s, max_bytes=MAX_BUNDLE_BYTES
            )
        except BundleTooLargeError as exc:  # refused before its bytes were read, for good
            self._record_refusal(f"nats:{name}", exc.code, exc.message)
            self.models.remember_refused(version)
            self._refused[version] = await self._digest_or_none(registry, version) or ""
            self._refusals += 1
            self._note_error(f"refused bundle {version}; keeping what is served: {exc.message}")
            return None
        except (RegistryError, nats.errors.Error, TimeoutError, OSError) as exc:
            raise _Retry(f"cannot fetch {name}: {describe_error(exc)}") from exc
        data = fetched.data
        source = f"nats:{name}"
        try:
            self._check_version(data, version, source)
            model = await asyncio.to_thread(self.models.verify, data, source)
        except Exception as exc:
            if not isinstance(exc, ProtocolError):  # the store records only its own checks
                log.exception("bundle %d could not be loaded", version)
                self._record_refusal(source, "load_failed", f"the bundle did not load: {exc!r}")
            self.models.remember_refused(version)
            self._refused[version] = fetched.digest
            self._refusals += 1
            self._note_error(f"refused bundle {version}; keeping what is served: {exc}")
            return None
        self._refused.pop(version, None)
        return model, data

    @staticmethod
    async def _digest_or_none(registry: ModelRegistry, version: int) -> str | None:
        with contextlib.suppress(RegistryError, nats.errors.Error, TimeoutError):
            return await registry.bundle_digest(version)
        return None

    def _check_version(self, data: bytes, version: int, source: str) -> None:
        """Refuses an object whose manifest names another version than its object name."""
        try:
            named = inspect_bundle(data).version
        except ProtocolError:
            return  # the full check in the store refuses it and records why
        if named != version:
            message = f"object names version {version} but its manifest says {named}"
            self._record_refusal(source, "version_mismatch", message)
            raise ProtocolError(message, code="version_mismatch")

    def _record_refusal(self, source: str, code: str, message: str) -> None:
        self.models.note_refusal(Refusal(source, code, message, time.time()))

    def _confirm(self) -> None:
        """The rollout was read and acted on: what is served is what the bus says, or the best
        this edge has."""
        if self._connected:
            self.models.stale = False

    def _note_error(self, message: str, *, loud: bool = False) -> None:
        self._last_error = message
        log.log(logging.WARNING if loud else logging.DEBUG, "%s", message)
