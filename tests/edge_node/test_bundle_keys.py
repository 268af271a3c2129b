"""Bundle keys at the edge: rotation, revocation, and signed rollout records with a floor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext

from central.keys import write_keypair
from edge_node.bundle_cache import BundleCache
from edge_node.config import EdgeSettings
from edge_node.errors import SettingsError
from edge_node.keyring import bundle_keys
from edge_node.model_store import ModelStore
from edge_node.model_sync import ModelSync
from protocol.errors import ProtocolError
from protocol.keys import TrustedKeys, key_id, load_private_key, load_public_key
from protocol.rollout import RolloutState
from runtime.backoff import Backoff
from runtime.nats import NatsSettings
from runtime.registry import ModelRegistry
from runtime.supervisor import BusSupervisor
from tests.edge_node.conftest import Keys
from tests.edge_node.test_model_sync import (
    FAST_RETRIES,
    REGION,
    TRAINED_VERSION,
    Bundles,
    put_rollout,
    served_version,
)
from tests.servers import NatsServer, NatsServerFactory
from tests.support import eventually


@pytest.fixture(scope="module")
def bundles(edge_keys: Keys, edge_bundle: Path) -> Bundles:
    return Bundles(edge_bundle.read_bytes(), load_private_key(edge_keys.private.read_bytes()))


@pytest.fixture(scope="module")
def new_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    private, public = write_keypair(tmp_path_factory.mktemp("new-keys"))
    return Keys(private, public)


def settings_of(edge_keys: Keys, **fields: object) -> EdgeSettings:
    values: dict[str, object] = {
        "region": REGION,
        "node": "n1",
        "public_key": edge_keys.public,
        "bundle": None,
        "nats_url": "nats://127.0.0.1:4222",
    }
    values.update(fields)
    return EdgeSettings.load(overrides=values)


def test_an_edge_trusting_old_and_new_keys_loads_bundles_of_both(
    edge_keys: Keys, new_keys: Keys, bundles: Bundles
) -> None:
    new_private = load_private_key(new_keys.private.read_bytes())
    keys = bundle_keys(settings_of(edge_keys, trusted_public_keys=(new_keys.public,)))
    store = ModelStore(keys)
    assert store.verify(bundles.version(8), "old key").version == 8
    assert store.verify(bundles.signed_by(new_private, 9), "new key").version == 9

    only_old = ModelStore(bundle_keys(settings_of(edge_keys)))
    with pytest.raises(ProtocolError) as refused:
        only_old.verify(bundles.signed_by(new_private, 9), "new key")
    assert refused.value.code == "key_mismatch"


def test_a_revoked_key_is_refused_with_its_code_and_the_reason_is_recorded(
    edge_keys: Keys, new_keys: Keys, bundles: Bundles
) -> None:
    old_id = key_id(load_public_key(edge_keys.public.read_bytes()))
    keys = bundle_keys(
        settings_of(edge_keys, trusted_public_keys=(new_keys.public,), revoked_key_ids=(old_id,))
    )
    store = ModelStore(keys)
    with pytest.raises(ProtocolError) as refused:
        store.verify(bundles.version(8), "nats:bundle-8")
    assert refused.value.code == "key_revoked"
    assert store.last_refusal is not None and store.last_refusal.code == "key_revoked"
    assert store.current is None  # nothing half-loaded


def test_bad_key_settings_are_refused_at_start(edge_keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as unreadable:
        bundle_keys(settings_of(edge_keys, trusted_public_keys=(tmp_path / "missing.pub",)))
    assert unreadable.value.field == "public_key"
    with pytest.raises(SettingsError) as malformed:
        bundle_keys(settings_of(edge_keys, revoked_key_ids=("xyz",)))
    assert malformed.value.field == "revoked_key_ids"


# -- signed rollout records over a real nats-server -------------------------------------------


@pytest.fixture
def nats_server(nats_server_factory: NatsServerFactory) -> NatsServer:
    return nats_server_factory()


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_server.url)
    yield client.jetstream()
    await client.close()


CONTROLLER = Ed25519PrivateKey.generate()


def signed(**fields: Any) -> bytes:
    return RolloutState(**fields).signed(CONTROLLER, region=REGION).encode()


@pytest.fixture
async def signed_sync(
    nats_server: NatsServer, edge_keys: Keys, bundles: Bundles, tmp_path: Path
) -> AsyncIterator[tuple[ModelStore, ModelSync]]:
    models = ModelStore(load_public_key(edge_keys.public.read_bytes()))
    models.load_bytes(bundles.trained, "test")
    bus = BusSupervisor(NatsSettings.from_url(nats_server.url), backoff=Backoff(0.05, 0.5))
    await bus.start()
    sync = ModelSync(
        models,
        bus,
        region=REGION,
        cache=BundleCache(tmp_path / "cache"),
        timing=FAST_RETRIES,
        rollout_keys=TrustedKeys.of([CONTROLLER.public_key()]),
    )
    await sync.start()
    yield models, sync
    await sync.close()
    await bus.close()


async def publish(js: JetStreamContext, bundles: Bundles, *versions: int) -> None:
    for version in versions:
        await ModelRegistry(js).publish_bundle(bundles.version(version), version)


async def test_unsigned_and_forged_records_are_refused_and_the_bundle_kept(
    signed_sync: tuple[ModelStore, ModelSync], js: JetStreamContext, bundles: Bundles
) -> None:
    models, sync = signed_sync
    await publish(js, bundles, 8)
    await put_rollout(js, REGION, RolloutState(stable=8, step=1).encode())
    await eventually(
        lambda: models.last_refusal is not None and models.last_refusal.code == "unsigned_rollout",
        "the unsigned record is refused",
    )
    forged = RolloutState(stable=8, step=2).signed(Ed25519PrivateKey.generate(), region=REGION)
    await put_rollout(js, REGION, forged.encode())
    await eventually(
        lambda: models.last_refusal is not None
        and models.last_refusal.code == "unknown_rollout_key",
        "a record signed by an unknown key is refused",
    )
    assert served_version(models) == TRAINED_VERSION
    assert sync.status.last_error is not None and "refused rollout record" in sync.status.last_error

    await put_rollout(js, REGION, signed(stable=8, step=3))
    await eventually(lambda: served_version(models) == 8, "the signed record is followed")


async def test_a_downgrade_needs_a_signed_rollback_record(
    signed_sync: tuple[ModelStore, ModelSync], js: JetStreamContext, bundles: Bundles
) -> None:
    models, _ = signed_sync
    await publish(js, bundles, 5, 9)
    await put_rollout(js, REGION, signed(stable=9, step=1))
    await eventually(lambda: served_version(models) == 9, "version 9 is served")

    # A signed record of an older bundle, without rollback: below the floor.
    await put_rollout(js, REGION, signed(stable=5, step=2))
    await eventually(
        lambda: models.last_refusal is not None
        and models.last_refusal.code == "below_version_floor",
        "the downgrade is refused",
    )
    # A replay of an older signed record: refused by its counter.
    await put_rollout(js, REGION, signed(stable=9, step=0))
    await eventually(
        lambda: models.last_refusal is not None and models.last_refusal.code == "stale_rollout",
        "the replay is refused",
    )
    assert served_version(models) == 9

    await put_rollout(js, REGION, signed(stable=5, step=3, rollback=True, by="alice"))
    await eventually(lambda: served_version(models) == 5, "the signed rollback is followed")
