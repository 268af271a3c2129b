"""The edge's model sync against a real nats-server: rollout KV → object store → verified swap."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from central.keys import write_keypair
from edge_node.bundle_cache import BundleCache
from edge_node.model_store import ModelStore
from edge_node.model_sync import ModelSync, SyncTiming
from protocol.bundle import PART_PREFIX, build_bundle, read_bundle
from protocol.keys import load_private_key, load_public_key
from protocol.rollout import RolloutState
from runtime.backoff import Backoff
from runtime.nats import NatsSettings
from runtime.registry import ModelRegistry
from runtime.supervisor import BusSupervisor
from tests.edge_node.conftest import Keys
from tests.servers import NatsServer, NatsServerFactory
from tests.support import eventually

REGION = "eu"
TRAINED_VERSION = 7  # the version the edge_bundle fixture is trained as
FAST_RETRIES = SyncTiming(
    bucket_retry_initial_s=0.05,
    bucket_retry_max_s=0.2,
    fetch_retry_initial_s=0.05,
    fetch_retry_max_s=0.5,
)
EVENTUALLY_S = 60.0  # after a server restart: a guard against hanging, never a measure of speed


# -- helpers shared with test_hot_swap -----------------------------------------------------------


def resign_bundle(
    data: bytes, version: int, *, read_with: Ed25519PublicKey, sign_with: Ed25519PrivateKey
) -> bytes:
    """The same parts and manifest fields under another version number, signed anew."""
    bundle = read_bundle(data, read_with)
    manifest = bundle.manifest
    return build_bundle(
        version=version,
        feature_schema_version=manifest.feature_schema_version,
        ranker=manifest.ranker,
        metrics=manifest.metrics,
        rules_version=manifest.rules_version,
        config=manifest.config,
        training=manifest.training,
        parts=dict(bundle.parts),
        private_key=sign_with,
    )


async def put_rollout(js: JetStreamContext, region: str, record: bytes) -> None:
    """Writes ``record`` as it is (malformed ones included) under the region's key."""
    bucket = await ModelRegistry(js).rollout_kv()
    await bucket.put(region, record)


async def promote_version(js: JetStreamContext, region: str, version: int, step: int = 0) -> None:
    record = RolloutState(stable=version, step=step, updated_at="2025-01-01T00:00:00Z")
    await put_rollout(js, region, record.encode())


def served_version(models: ModelStore) -> int | None:
    return models.current.version if models.current is not None else None


# -- fixtures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundles:
    trained: bytes  # version 7
    signing_key: Ed25519PrivateKey

    def version(self, version: int) -> bytes:
        return self.signed_by(self.signing_key, version)

    def signed_by(self, key: Ed25519PrivateKey, version: int) -> bytes:
        return resign_bundle(
            self.trained, version, read_with=self.signing_key.public_key(), sign_with=key
        )


@pytest.fixture(scope="module")
def bundles(edge_keys: Keys, edge_bundle: Path) -> Bundles:
    return Bundles(edge_bundle.read_bytes(), load_private_key(edge_keys.private.read_bytes()))


@pytest.fixture
def nats_server(nats_server_factory: NatsServerFactory) -> NatsServer:
    return nats_server_factory()


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client: NatsClient = await nats.connect(nats_server.url)
    yield client.jetstream()
    await client.close()


@pytest.fixture
def empty_models(edge_keys: Keys) -> ModelStore:
    return ModelStore(load_public_key(edge_keys.public.read_bytes()))


@pytest.fixture
def models(empty_models: ModelStore, bundles: Bundles) -> ModelStore:
    empty_models.load_bytes(bundles.trained, "test")
    return empty_models


@pytest.fixture
def cache(tmp_path: Path) -> BundleCache:
    return BundleCache(tmp_path / "bundle-cache")


SyncFactory = Callable[[ModelStore], Awaitable[ModelSync]]


@pytest.fixture
async def new_sync(nats_server: NatsServer, cache: BundleCache) -> AsyncIterator[SyncFactory]:
    """A model sync (not started) on a started supervisor of the test's server, as an edge
    starts them."""
    started: list[tuple[BusSupervisor, ModelSync]] = []

    async def make(models: ModelStore) -> ModelSync:
        bus = BusSupervisor(NatsSettings.from_url(nats_server.url), backoff=Backoff(0.05, 0.5))
        await bus.start()
        sync = ModelSync(models, bus, region=REGION, cache=cache, timing=FAST_RETRIES)
        started.append((bus, sync))
        return sync

    yield make
    for bus, sync in started:
        await sync.close()
        await bus.close()


# -- following the rollout -----------------------------------------------------------------------


async def test_a_promoted_bundle_is_fetched_swapped_in_and_cached(
    models: ModelStore,
    cache: BundleCache,
    bundles: Bundles,
    js: JetStreamContext,
    new_sync: SyncFactory,
) -> None:
    sync = await new_sync(models)
    await sync.start()
    assert models.stale  # nothing heard from the bus yet

    await ModelRegistry(js).publish_bundle(bundles.version(8), 8)
    await promote_version(js, REGION, 8)
    await eventually(lambda: served_version(models) == 8, "version 8 is served")
    await eventually(lambda: cache.versions() == [8], "version 8 is cached")
    assert not models.stale
    assert sync.status.connected
    assert sync.status.rollout is not None and sync.status.rollout.stable == 8

    await ModelRegistry(js).publish_bundle(bundles.version(9), 9)
    await promote_version(js, REGION, 9, step=1)
    await eventually(lambda: served_version(models) == 9, "version 9 is served")
    await ModelRegistry(js).publish_bundle(bundles.version(10), 10)
    await promote_version(js, REGION, 10, step=2)
    await eventually(lambda: served_version(models) == 10, "version 10 is served")

    await eventually(lambda: cache.versions() == [10, 9], "the newest two are cached")
    latest = cache.latest()
    assert latest is not None and latest[0] == 10
    assert read_bundle(latest[1], models.public_key).manifest.version == 10
    assert models.refusals == 0
    assert sync.status.refusals == 0


async def test_the_current_value_is_read_at_start(
    models: ModelStore, bundles: Bundles, js: JetStreamContext, new_sync: SyncFactory
) -> None:
    await ModelRegistry(js).publish_bundle(bundles.version(8), 8)
    await promote_version(js, REGION, 8)

    sync = await new_sync(models)
    await sync.start()

    await eventually(lambda: served_version(models) == 8, "version 8 is served")


async def test_bundles_failing_a_check_are_refused_and_the_served_one_stays(
    models: ModelStore,
    cache: BundleCache,
    bundles: Bundles,
    js: JetStreamContext,
    new_sync: SyncFactory,
    tmp_path: Path,
) -> None:
    other_private, _ = write_keypair(tmp_path / "other-keys")
    wrongly_signed = bundles.signed_by(load_private_key(other_private.read_bytes()), 8)
    sync = await new_sync(models)
    await sync.start()

    await ModelRegistry(js).publish_bundle(wrongly_signed, 8)
    await promote_version(js, REGION, 8)
    await eventually(lambda: models.refusals == 1, "the wrongly signed bundle is refused")
    assert served_version(models) == TRAINED_VERSION
    assert models.last_refusal is not None
    assert models.last_refusal.code == "key_mismatch"
    assert models.last_refusal.source == "nats:bundle-8"

    await ModelRegistry(js).publish_bundle(corrupt_a_part(bundles.version(9)), 9)
    await promote_version(js, REGION, 9, step=1)
    await eventually(lambda: models.refusals == 2, "the corrupted bundle is refused")
    assert models.last_refusal is not None
    assert models.last_refusal.code == "part_hash_mismatch"
    assert served_version(models) == TRAINED_VERSION
    assert sync.status.refusals == 2
    assert sync.status.refused_versions == (8, 9)
    assert sync.status.last_error is not None and "9" in sync.status.last_error

    # The same refused object named again is not fetched and checked again ...
    await promote_version(js, REGION, 9, step=2)
    await ModelRegistry(js).publish_bundle(bundles.version(10), 10)
    await promote_version(js, REGION, 10, step=3)
    await eventually(lambda: served_version(models) == 10, "version 10 is served")
    assert models.refusals == 2
    assert not models.stale

    # ... but a repaired object under the refused name is.
    await ModelRegistry(js).publish_bundle(bundles.version(9), 9)
    await promote_version(js, REGION, 9, step=4)
    await eventually(lambda: served_version(models) == 9, "the repaired version 9 is served")
    assert models.refusals == 2
    assert set(sync.status.refused_versions) == {8}
    # Most recently stored first; refused ones never.
    await eventually(lambda: cache.versions() == [9, 10], "the repaired version is cached")


async def test_a_version_named_before_its_object_is_uploaded_is_fetched_once_it_is(
    models: ModelStore, bundles: Bundles, js: JetStreamContext, new_sync: SyncFactory
) -> None:
    sync = await new_sync(models)
    await sync.start()
    await promote_version(js, REGION, 8)
    await eventually(
        lambda: "bundle-8" in (sync.status.last_error or ""), "the missing object is reported"
    )
    assert served_version(models) == TRAINED_VERSION

    await ModelRegistry(js).publish_bundle(bundles.version(8), 8)

    await eventually(lambda: served_version(models) == 8, "version 8 is served")
    assert models.refusals == 0


async def test_an_object_whose_manifest_names_another_version_is_refused(
    models: ModelStore, bundles: Bundles, js: JetStreamContext, new_sync: SyncFactory
) -> None:
    sync = await new_sync(models)
    await sync.start()

    await ModelRegistry(js).publish_bundle(bundles.version(12), 11)
    await promote_version(js, REGION, 11)

    await eventually(lambda: models.refusals == 1, "the mislabelled bundle is refused")
    assert models.last_refusal is not None
    assert models.last_refusal.code == "version_mismatch"
    assert served_version(models) == TRAINED_VERSION


async def test_a_malformed_rollout_record_keeps_the_current_bundle(
    models: ModelStore, bundles: Bundles, js: JetStreamContext, new_sync: SyncFactory
) -> None:
    sync = await new_sync(models)
    await sync.start()
    await ModelRegistry(js).publish_bundle(bundles.version(8), 8)
    await promote_version(js, REGION, 8)
    await eventually(lambda: served_version(models) == 8, "version 8 is served")

    await put_rollout(js, REGION, b'{"stable": "eight"}')
    await eventually(
        lambda: "malformed" in (sync.status.last_error or ""), "the bad record is reported"
    )
    assert served_version(models) == 8
    assert sync.status.rollout is not None and sync.status.rollout.stable == 8

    await ModelRegistry(js).publish_bundle(bundles.version(9), 9)
    await promote_version(js, REGION, 9, step=1)
    await eventually(lambda: served_version(models) == 9, "version 9 is served")


async def test_an_edge_without_a_bundle_waits_for_the_rollout_bucket_to_appear(
    empty_models: ModelStore, bundles: Bundles, js: JetStreamContext, new_sync: SyncFactory
) -> None:
    sync = await new_sync(empty_models)
    await sync.start()
    assert not empty_models.ready
    await eventually(lambda: sync.status.connected, "connected")
    await eventually(lambda: not empty_models.stale, "the missing rollout is confirmed")

    await ModelRegistry(js).publish_bundle(bundles.version(8), 8)
    await promote_version(js, REGION, 8)

    await eventually(lambda: served_version(empty_models) == 8, "version 8 is served")
    assert sync.status.rollout is not None and sync.status.rollout.stable == 8


# -- NATS down and back --------------------------------------------------------------------------


@pytest.mark.parametrize("named_version", [TRAINED_VERSION, 8], ids=["same", "newer"])
async def test_an_edge_started_with_nats_down_serves_its_cached_bundle_as_stale(
    named_version: int,
    empty_models: ModelStore,
    cache: BundleCache,
    bundles: Bundles,
    nats_server: NatsServer,
    new_sync: SyncFactory,
) -> None:
    cache.store(TRAINED_VERSION, bundles.trained)
    await asyncio.to_thread(nats_server.stop)

    sync = await new_sync(empty_models)
    await sync.start()

    assert served_version(empty_models) == TRAINED_VERSION
    assert empty_models.ready and empty_models.stale
    assert not sync.status.connected
    await eventually(lambda: sync.status.last_error is not None, "a connection attempt failed")
    assert empty_models.stale and served_version(empty_models) == TRAINED_VERSION

    await asyncio.to_thread(nats_server.start)
    client = await nats.connect(nats_server.url)
    try:
        js = client.jetstream()
        await ModelRegistry(js).publish_bundle(bundles.version(named_version), named_version)
        await promote_version(js, REGION, named_version)
        await eventually(
            lambda: served_version(empty_models) == named_version and not empty_models.stale,
            f"version {named_version} is served and confirmed",
            timeout_s=EVENTUALLY_S,
        )
    finally:
        await client.close()
    assert sync.status.connected


async def test_a_cached_bundle_that_fails_its_checks_gives_way_to_the_one_before(
    empty_models: ModelStore,
    cache: BundleCache,
    bundles: Bundles,
    nats_server: NatsServer,
    new_sync: SyncFactory,
) -> None:
    cache.store(TRAINED_VERSION, bundles.trained)
    cache.store(8, corrupt_a_part(bundles.version(8)))
    await asyncio.to_thread(nats_server.stop)

    sync = await new_sync(empty_models)
    await sync.start()

    assert served_version(empty_models) == TRAINED_VERSION
    assert empty_models.stale
    assert empty_models.refusals == 1
    assert empty_models.last_refusal is not None
    assert empty_models.last_refusal.code == "part_hash_mismatch"


async def test_a_lost_connection_makes_the_edge_stale_until_it_reads_the_rollout_again(
    models: ModelStore,
    bundles: Bundles,
    nats_server: NatsServer,
    js: JetStreamContext,
    new_sync: SyncFactory,
) -> None:
    sync = await new_sync(models)
    await sync.start()
    await ModelRegistry(js).publish_bundle(bundles.version(8), 8)
    await promote_version(js, REGION, 8)
    await eventually(lambda: served_version(models) == 8 and not models.stale, "8 is confirmed")

    await asyncio.to_thread(nats_server.stop)
    await eventually(lambda: models.stale, "the edge is stale")
    assert not sync.status.connected
    assert served_version(models) == 8

    await asyncio.to_thread(nats_server.start)
    await eventually(
        lambda: not models.stale, "the edge has read the rollout again", timeout_s=EVENTUALLY_S
    )
    client = await nats.connect(nats_server.url)
    try:
        publisher = client.jetstream()
        await ModelRegistry(publisher).publish_bundle(bundles.version(9), 9)
        await promote_version(publisher, REGION, 9, step=1)
        await eventually(lambda: served_version(models) == 9, "version 9 is served")
    finally:
        await client.close()


# -- the bundle cache ----------------------------------------------------------------------------


def test_the_cache_keeps_the_two_most_recently_stored_bundles(tmp_path: Path) -> None:
    cache = BundleCache(tmp_path / "cache")
    assert cache.latest() is None
    for version in (3, 4, 5):
        cache.store(version, f"bundle {version}".encode())
    assert cache.versions() == [5, 4]
    assert cache.latest() == (5, b"bundle 5")

    cache.store(2, b"bundle 2")  # a rollback: the older version is now the latest
    assert cache.versions() == [2, 5]
    assert cache.latest() == (2, b"bundle 2")
    assert sorted(p.name for p in cache.directory.iterdir()) == [
        "bundle-2.bundle",
        "bundle-5.bundle",
    ]


def test_the_cache_ignores_files_that_are_not_its_bundles(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / ".incoming-9-1-abcd").write_bytes(b"half a bundle")
    (directory / "bundle-x.bundle").write_bytes(b"?")
    (directory / "notes.txt").write_text("hello")
    cache = BundleCache(directory)
    assert cache.latest() is None
    cache.store(1, b"one")
    assert cache.versions() == [1]
    assert (directory / "notes.txt").exists()


# -- building bad bundles ------------------------------------------------------------------------


def corrupt_a_part(data: bytes) -> bytes:
    """The same signed manifest with one byte of one part flipped: the part hash fails."""
    out = io.BytesIO()
    flipped = False
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            blob = source.read(info)
            if info.filename.startswith(PART_PREFIX) and blob and not flipped:
                middle = len(blob) // 2
                blob = blob[:middle] + bytes([blob[middle] ^ 0x01]) + blob[middle + 1 :]
                flipped = True
            target.writestr(info, blob, compress_type=zipfile.ZIP_DEFLATED)
    assert flipped
    return out.getvalue()
