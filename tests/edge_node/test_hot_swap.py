"""A new bundle swapped in under load over real HTTP: no failed request, no step back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from nats.js import JetStreamContext

from edge_node.config import EdgeSettings
from edge_node.model_store import ModelStore
from protocol.keys import load_private_key
from runtime.registry import ModelRegistry
from tests.edge_node.conftest import EdgeServer, Keys
from tests.edge_node.test_model_sync import promote_version, resign_bundle
from tests.servers import NatsServer, pick_free_port
from tests.support import eventually

REGION = "eu"
OLD_VERSION = 7  # the version the edge_bundle fixture is trained as
NEW_VERSION = 8
CLIENTS = 8
ANSWERS_BEFORE_THE_SWAP = 30  # per client
ANSWERS_AFTER_THE_SWAP = 30  # per client
EVENTUALLY_S = 120.0  # a guard against hanging, never a measure of speed
UNLIMITED = 1_000_000  # rate limits out of the way: this test is about the swap


class SyncedEdge:
    """An edge under uvicorn following the bus: its app runs a ModelSync when nats_url is set."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.server = EdgeServer(settings)
        assert self.server.app.state.edge.model_sync is not None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def models(self) -> ModelStore:
        models: ModelStore = self.server.app.state.edge.models
        return models


@dataclass
class Answer:
    received: float  # time.perf_counter() when the answer arrived
    status: int
    model_version: int | None


@dataclass
class LoadClient:
    session_id: str
    answers: list[Answer] = field(default_factory=list)

    def count(self, version: int) -> int:
        return sum(1 for answer in self.answers if answer.model_version == version)


@pytest.fixture
def edge(
    tmp_path: Path, edge_keys: Keys, edge_bundle: Path, nats_server: NatsServer
) -> Iterator[SyncedEdge]:
    settings = EdgeSettings.load(
        overrides={
            "region": REGION, "node": "hot-swap", "public_key": edge_keys.public,
            "bundle": edge_bundle, "port": pick_free_port(), "spool_dir": tmp_path / "spool",
            "nats_url": nats_server.url, "bundle_cache_dir": tmp_path / "bundle-cache",
            "session_rate": UNLIMITED, "session_burst": UNLIMITED,
            "ip_rate": UNLIMITED, "ip_burst": UNLIMITED,
        }
    )  # fmt: skip
    synced = SyncedEdge(settings)
    synced.server.start()
    yield synced
    synced.server.stop()


async def hammer(
    edge: SyncedEdge, client: LoadClient, stop: asyncio.Event, items: list[str]
) -> None:
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as http:
        events = [
            {"event_id": uuid.uuid4().hex, "session_id": client.session_id, "type": "view",
             "item_id": item, "ts": int(time.time() * 1000)}
            for item in items
        ]  # fmt: skip
        posted = await http.post(
            "/v1/events", content=json.dumps(events), headers={"content-type": "application/json"}
        )
        assert posted.status_code == 202, posted.text
        while not stop.is_set():
            response = await http.get(
                "/v1/recommendations", params={"session_id": client.session_id, "k": 10}
            )
            version = response.json().get("model_version") if response.status_code == 200 else None
            client.answers.append(Answer(time.perf_counter(), response.status_code, version))


async def test_a_promoted_bundle_replaces_the_served_one_under_load(
    edge: SyncedEdge, js: JetStreamContext, edge_keys: Keys, edge_bundle: Path
) -> None:
    signing_key = load_private_key(edge_keys.private.read_bytes())
    old_bundle = edge_bundle.read_bytes()
    new_bundle = resign_bundle(
        old_bundle, NEW_VERSION, read_with=signing_key.public_key(), sign_with=signing_key
    )
    registry = ModelRegistry(js)
    await registry.publish_bundle(old_bundle, OLD_VERSION)
    await promote_version(js, REGION, OLD_VERSION)
    await eventually(
        lambda: not edge.models.stale,
        "the edge has confirmed what it serves",
        timeout_s=EVENTUALLY_S,
    )
    model = edge.models.current
    assert model is not None and model.version == OLD_VERSION
    items = list(model.tables.item_ids[:3])

    clients = [LoadClient(f"hot-swap-{n}-{uuid.uuid4().hex[:8]}") for n in range(CLIENTS)]
    stop = asyncio.Event()
    load = [asyncio.create_task(hammer(edge, client, stop, items)) for client in clients]
    try:
        await eventually(
            lambda: (
                all(c.count(OLD_VERSION) >= ANSWERS_BEFORE_THE_SWAP for c in clients)
                or any(task.done() for task in load)
            ),
            "every client is answered",
            timeout_s=EVENTUALLY_S,
        )
        await registry.publish_bundle(new_bundle, NEW_VERSION)
        promoted_at, promoted_at_wall = time.perf_counter(), time.time()
        await promote_version(js, REGION, NEW_VERSION, step=1)
        await eventually(
            lambda: (
                all(c.count(NEW_VERSION) >= ANSWERS_AFTER_THE_SWAP for c in clients)
                or any(task.done() for task in load)
            ),
            "every client is answered by the new bundle",
            timeout_s=EVENTUALLY_S,
        )
    finally:
        stop.set()
        await asyncio.gather(*load)

    answers = [answer for client in clients for answer in client.answers]
    assert all(answer.status == 200 for answer in answers)
    assert {answer.model_version for answer in answers} == {OLD_VERSION, NEW_VERSION}
    for client in clients:
        versions = [answer.model_version for answer in client.answers]
        first_new = versions.index(NEW_VERSION)
        assert set(versions[:first_new]) == {OLD_VERSION}
        assert set(versions[first_new:]) == {NEW_VERSION}, "a client went back to the old bundle"

    first_new_answer = min(a.received for a in answers if a.model_version == NEW_VERSION)
    swapped_in = edge.models.loaded_at
    assert swapped_in is not None
    print(
        f"\nhot swap under load: {len(answers)} answers from {CLIENTS} clients, none failed; "
        f"rollout update -> swapped in {1000 * (swapped_in - promoted_at_wall):.0f} ms, "
        f"-> first answer from version {NEW_VERSION} "
        f"{1000 * (first_new_answer - promoted_at):.0f} ms"
    )
