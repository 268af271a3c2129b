"""Live rules: pushed with ``proxima rules``, hot-swapped at a real edge, rolled back; and
rules reading the catalog's item fields (stock, attributes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest
from click.testing import CliRunner
from nats.js.client import JetStreamContext

from central.catalog.store import CatalogStore
from central.cli import main
from edge_node.catalog import CatalogReplica, ItemFields
from edge_node.recommend import TableCatalog
from edge_node.rules import RuleRequest, RulesError, RuleSet
from edge_node.rules.live import ACTIVE_KEY, ActiveRules, doc_key
from protocol.catalog import Item
from protocol.subjects import RULES_BUCKET
from protocol.window import SessionWindow
from tests.edge_node.conftest import EdgeFactory, EdgeServer
from tests.servers import NatsServer
from tests.support import eventually

DOC = """version: "{version}"
rules:
  - id: hide-{version}
    then:
      - filter: {{items: ["{item}"]}}
"""


async def cli(*args: str) -> tuple[int, str]:
    """The command line, in a thread: it runs its own event loop."""
    result = await asyncio.to_thread(CliRunner().invoke, main, ["rules", *args])
    return result.exit_code, result.output


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def edge(edge_factory: EdgeFactory, nats_server: NatsServer, tmp_path: Path) -> EdgeServer:
    return edge_factory(nats_url=nats_server.url, bundle_cache_dir=tmp_path / "cache")


async def rules_version(http: httpx.AsyncClient, edge: EdgeServer) -> str | None:
    body = (await http.get(f"{edge.url}/v1/model")).json()
    version: str | None = body["rules_version"]
    return version


async def serves(http: httpx.AsyncClient, edge: EdgeServer, version: str) -> bool:
    return await rules_version(http, edge) == version


async def test_push_swaps_rules_in_and_rollback_goes_back(
    edge: EdgeServer, nats_server: NatsServer, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    item = edge.app.state.edge.models.current.tables.item_ids[0]
    first, second = tmp_path / "r1.yaml", tmp_path / "r2.yaml"
    first.write_text(DOC.format(version="r1", item=item))
    second.write_text(DOC.format(version="r2", item=item))
    code, out = await cli("push", "--nats", nats_server.url, str(first))
    assert code == 0, out

    await eventually(lambda: serves(http, edge, "r1"), "rules r1 at the edge")
    answer = (await http.get(f"{edge.url}/v1/recommendations", params={"session_id": "s"})).json()
    assert item not in [e["item_id"] for e in answer["items"]]
    assert (await cli("push", "--nats", nats_server.url, str(second)))[0] == 0
    await eventually(lambda: serves(http, edge, "r2"), "rules r2 at the edge")
    code, out = await cli("status", "--nats", nats_server.url)
    assert code == 0 and "active: r2" in out and "history: r1, r2" in out
    assert (await cli("rollback", "--nats", nats_server.url))[0] == 0
    await eventually(lambda: serves(http, edge, "r1"), "rules r1 again after the rollback")
    rolled = await cli("rollback", "--nats", nats_server.url, "--to", "r2", "--operator", "ana")
    assert rolled[0] == 0, rolled[1]
    await eventually(lambda: serves(http, edge, "r2"), "rules r2 again")
    code, out = await cli("status", "--nats", nats_server.url, "--json")
    pointer = json.loads(out)
    assert (pointer["by"], pointer["by_via"]) == ("ana", "flag")  # who rolled back, as claimed
    code, out = await cli("status", "--nats", nats_server.url)
    assert "by ana (flag)" in out


async def test_a_bad_document_is_refused_before_upload_and_kept_out_at_the_edge(
    edge: EdgeServer, nats_server: NatsServer, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(DOC.format(version="g1", item="x"))
    assert (await cli("push", "--nats", nats_server.url, str(good)))[0] == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text('version: "b1"\nrules:\n  - id: x\n    then: [{explode: {}}]\n')
    code, out = await cli("push", "--nats", nats_server.url, str(bad))
    assert code == 1 and "unknown_key" in out
    taken = tmp_path / "taken.yaml"
    taken.write_text(DOC.format(version="g1", item="other"))
    code, out = await cli("push", "--nats", nats_server.url, str(taken))
    assert code == 1 and "version_taken" in out

    await eventually(lambda: serves(http, edge, "g1"), "rules g1 at the edge")
    # a document that does not parse, written past the command line, is refused by the edge
    client = await nats.connect(nats_server.url)
    try:
        kv = await client.jetstream().key_value(RULES_BUCKET)
        await kv.put(doc_key("b2"), b"version: b2\nrules: 7\n")
        await kv.put(ACTIVE_KEY, ActiveRules("b2", ("g1", "b2"), 1).encode())
        good2 = tmp_path / "good2.yaml"
        good2.write_text(DOC.format(version="g2", item="x"))
        recommender = edge.app.state.edge.recommender
        await asyncio.sleep(0.5)  # time for the edge to see b2 and refuse it
        assert recommender.rules.version == "g1"
        assert (await cli("push", "--nats", nats_server.url, str(good2)))[0] == 0
        await eventually(lambda: serves(http, edge, "g2"), "rules g2 after b2")
    finally:
        await client.close()


def test_versions_that_cannot_be_keys_are_refused() -> None:
    for version in (".x", "x.", "a..b"):
        with pytest.raises(RulesError) as caught:
            doc_key(version)
        assert caught.value.code == "bad_version"


async def test_rules_read_stock_and_attributes_from_the_catalog(js: JetStreamContext) -> None:
    store = await CatalogStore.open(js)
    await store.put(
        [
            Item("low", stock=2, attributes={"colour": "red"}),
            Item("plenty", stock=50, attributes={"colour": "red"}),
            Item("blue", stock=1, attributes={"colour": "blue"}),
        ]
    )
    replica = CatalogReplica(None)
    for item_id in ("low", "plenty", "blue"):
        found = await store.get(item_id)
        assert found is not None
        replica.apply(found.item)
    rules = RuleSet.parse(
        b'{"version": "v", "rules": [{"id": "few-red-last", "then": '
        b'[{"bury": {"stock_below": 5, "attribute": {"colour": "red"}}}]}]}'
    )

    class NoTables:
        def category_of(self, item_id: str) -> str | None:
            return None

        def price_of(self, item_id: str) -> float | None:
            return None

    fields = ItemFields(replica, NoTables())
    outcome = rules.apply(
        ["low", "plenty", "blue"], [3.0, 2.0, 1.0], SessionWindow("s"),
        RuleRequest(None, {}, 0), fields, 3,
    )  # fmt: skip
    assert outcome.items == ["plenty", "blue", "low"]
    assert TableCatalog is not None  # the bundle-only catalog stays usable without stock
