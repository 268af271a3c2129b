"""Bundles published centrally reach the edges of both regions; bad ones are never served.

The central side is :class:`runtime.registry.ModelRegistry` (``publish_bundle`` into the
object store, ``promote_regions`` in the rollout KV), as the trainer runs it; the edges are real
uvicorn servers following the bus. While bad bundles are rolled out, a watcher keeps
asking both edges for recommendations and readiness and records every answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from central.keys import write_keypair
from edge_node.bundle_cache import BundleCache
from protocol.keys import load_private_key
from runtime.registry import ModelRegistry
from tests.edge_node.conftest import EdgeServer, Keys
from tests.edge_node.test_model_sync import corrupt_a_part, resign_bundle
from tests.integration.conftest import EVENTUALLY_S, EdgeStarter, model_info
from tests.servers import NatsServer

pytestmark = pytest.mark.integration

REGIONS = ("eu", "us")
TRAINED_VERSION = 7  # the version the edge_bundle fixture is trained as


@dataclass
class Bundles:
    """The trained bundle under other versions: signed right, signed wrong, or corrupted."""

    trained: bytes
    keys: Keys
    other_private_key: Path

    def signed(self, version: int) -> bytes:
        key = load_private_key(self.keys.private.read_bytes())
        return resign_bundle(self.trained, version, read_with=key.public_key(), sign_with=key)

    def signed_with_another_key(self, version: int) -> bytes:
        right = load_private_key(self.keys.private.read_bytes())
        wrong = load_private_key(self.other_private_key.read_bytes())
        return resign_bundle(self.trained, version, read_with=right.public_key(), sign_with=wrong)

    def with_a_corrupted_part(self, version: int) -> bytes:
        return corrupt_a_part(self.signed(version))


@pytest.fixture
def bundles(edge_bundle: Path, edge_keys: Keys, tmp_path: Path) -> Bundles:
    other_private, _ = write_keypair(tmp_path / "not-the-trainers-keys")
    return Bundles(edge_bundle.read_bytes(), edge_keys, other_private)


@pytest.fixture
def edges(start_edge: EdgeStarter, nats_server: NatsServer, edge_bundle: Path) -> list[EdgeServer]:
    return [start_edge(region, nats_server.url, bundle=edge_bundle) for region in REGIONS]


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + EVENTUALLY_S
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"gave up waiting until {what}")
        await asyncio.sleep(0.02)


async def served_everywhere(http: httpx.AsyncClient, edges: list[EdgeServer], version: int) -> bool:
    infos = [await model_info(http, edge) for edge in edges]
    return all(info["bundle"]["version"] == version and not info["stale"] for info in infos)


async def refused_everywhere(
    http: httpx.AsyncClient, edges: list[EdgeServer], version: int
) -> list[dict[str, Any]]:
    """Each edge's last refusal once every edge has refused ``version``; else an empty list."""
    infos = [await model_info(http, edge) for edge in edges]
    refusals = [info["last_refusal"] for info in infos]
    source = f"nats:bundle-{version}"
    if all(refusal is not None and refusal["source"] == source for refusal in refusals):
        return refusals
    return []


@dataclass
class Watcher:
    """Asks every edge for recommendations and readiness until stopped; keeps the answers."""

    http: httpx.AsyncClient
    edges: list[EdgeServer]
    versions: Counter[int | None] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stopping.is_set():
            for edge in self.edges:
                session_id = f"watch-{uuid.uuid4().hex[:12]}"
                answer = await self.http.get(
                    f"{edge.url}/v1/recommendations", params={"session_id": session_id, "k": 5}
                )
                self.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    self.versions[answer.json()["model_version"]] += 1
                ready = await self.http.get(f"{edge.url}/readyz")
                self.statuses[ready.status_code] += 1
                if ready.status_code == 200:
                    self.versions[ready.json()["version"]] += 1
            await asyncio.sleep(0.01)


async def test_published_bundles_reach_both_regions_and_bad_ones_are_never_served(
    edges: list[EdgeServer], js: JetStreamContext, bundles: Bundles
) -> None:
    registry = ModelRegistry(js)
    async with httpx.AsyncClient(timeout=10.0) as http:
        await until(lambda: served_everywhere(http, edges, TRAINED_VERSION), "both edges start")

        await registry.publish_bundle(bundles.signed(8), 8)
        promoted = await registry.promote_regions(8, REGIONS)
        assert {region: state.stable for region, state in promoted.items()} == {
            "eu": 8, "us": 8,
        }  # fmt: skip
        await until(lambda: served_everywhere(http, edges, 8), "both regions serve version 8")

        watcher = Watcher(http, edges)
        watching = asyncio.create_task(watcher.run())
        try:
            await registry.publish_bundle(bundles.signed_with_another_key(9), 9)
            await registry.promote_regions(9, REGIONS)
            wrong_key = await _refusals(http, edges, 9)
            await registry.publish_bundle(bundles.with_a_corrupted_part(10), 10)
            await registry.promote_regions(10, REGIONS)
            corrupted = await _refusals(http, edges, 10)
        finally:
            watcher.stopping.set()
            await watching

        assert {refusal["code"] for refusal in wrong_key} == {"key_mismatch"}
        assert {refusal["code"] for refusal in corrupted} == {"part_hash_mismatch"}
        assert all(refusal["message"] for refusal in wrong_key + corrupted)
        assert set(watcher.statuses) == {200}, watcher.statuses
        assert set(watcher.versions) == {8}, watcher.versions
        for edge in edges:
            info = await model_info(http, edge)
            assert info["bundle"]["version"] == 8
            assert info["rollout"]["state"]["stable"] == 10  # what the bus asks for
            cache = BundleCache(edge.settings.bundle_cache_dir)
            assert set(cache.versions()) == {8}  # refused bundles are never cached

        # After the refusals the edges still follow the bus.
        await registry.publish_bundle(bundles.signed(11), 11)
        await registry.promote_regions(11, REGIONS)
        await until(lambda: served_everywhere(http, edges, 11), "both regions serve version 11")
        for edge in edges:
            assert (await model_info(http, edge))["last_refusal"]["source"] == "nats:bundle-10"
    print(
        f"\nrollout: versions 8 and 11 served in both regions; 9 (wrong key) and 10 (corrupted "
        f"part) refused; {sum(watcher.statuses.values())} answers meanwhile, all from version 8"
    )


async def _refusals(
    http: httpx.AsyncClient, edges: list[EdgeServer], version: int
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def refused() -> bool:
        found[:] = await refused_everywhere(http, edges, version)
        return bool(found)

    await until(refused, f"both regions refuse version {version}")
    return found
