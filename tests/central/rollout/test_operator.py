"""Operators in the audit: who started, steered and rolled back, from the NATS credential."""

from __future__ import annotations

import asyncio
import base64
import getpass
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext

from central.cli import main as cli
from central.keys import write_keypair
from central.rollout.operations import bundle_release
from central.rollout.operator import Operator, OperatorError, operator_of
from central.rollout.store import audit_entries, read_edge_record, read_plan
from protocol.keys import TrustedKeys, load_public_key
from runtime.nats import NatsSettings
from runtime.registry import ModelRegistry
from tests.deploy.nats_topology import ConfiguredNatsServer
from tests.servers import LOCALHOST, NatsServer


def creds_file(directory: Path, claims: dict[str, object]) -> Path:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    token = ".".join([part(b'{"typ":"JWT","alg":"ed25519-nkey"}'),
                      part(json.dumps(claims).encode()), part(b"sig")])  # fmt: skip
    path = directory / "op.creds"
    path.write_text(
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\nSUAFAKE\n------END USER NKEY SEED------\n"
    )
    return path


def test_the_operator_comes_from_the_credential_first(tmp_path: Path) -> None:
    url = "nats://127.0.0.1:4222"
    assert operator_of(NatsSettings.from_url("nats://alice:pw@127.0.0.1:4222")) == Operator(
        "alice", "nats-user"
    )
    with_user = NatsSettings.from_url(url, user="carol", password="pw")
    assert operator_of(with_user, claimed="mallory") == Operator("carol", "nats-user")
    creds = creds_file(tmp_path, {"name": "dave", "sub": "UABC"})
    assert operator_of(NatsSettings.from_url(url, credentials=creds)) == Operator(
        "dave", "nats-creds"
    )
    assert operator_of(NatsSettings.from_url(url), claimed="bob") == Operator("bob", "flag")
    fallback = operator_of(NatsSettings.from_url(url))
    assert fallback == Operator(getpass.getuser(), "os-user")
    assert not fallback.verified and "unverified" in fallback.label()
    broken = tmp_path / "broken.creds"
    broken.write_text("not a creds file")
    with pytest.raises(OperatorError):
        operator_of(NatsSettings.from_url(url, credentials=broken))


@pytest.fixture
def secured_server(tmp_path: Path) -> Iterator[ConfiguredNatsServer]:
    def render(server: ConfiguredNatsServer) -> str:
        return "\n".join(
            [
                f'listen: "{LOCALHOST}:{server.client_port}"',
                f'http: "{LOCALHOST}:{server.monitor_port}"',
                f'jetstream {{ store_dir: "{server.workdir / "js"}" }}',
                "authorization { users = [ {user: alice, password: alicepw},"
                " {user: tokenless, password: pw2} ] }",
            ]
        )

    server = ConfiguredNatsServer(tmp_path / "nats", render=render, env={}).start()
    yield server
    server.close()


@pytest.fixture
async def js(secured_server: ConfiguredNatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(secured_server.url("tokenless", "pw2"))
    js = client.jetstream()
    registry = ModelRegistry(js)
    for version in (7, 8):
        await registry.publish_bundle(f"bundle {version}".encode(), version)
    await registry.promote_regions(7, ("eu",))
    yield js
    await client.close()


async def proxima(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, cli, list(args))
    return result.exit_code, result.output


async def test_each_decision_and_audit_entry_names_its_operator(
    js: JetStreamContext, secured_server: ConfiguredNatsServer, tmp_path: Path
) -> None:
    as_alice = secured_server.url("alice", "alicepw")
    private, public = write_keypair(tmp_path / "rollout-keys")
    code, out = await proxima("rollout", "start", "8", "--regions", "eu", "--steps", "100",
                              "--nats", as_alice, "--operator", "mallory",
                              "--rollout-signing-key", str(private))  # fmt: skip
    assert code == 0, out
    record, _ = await read_edge_record(js, "eu")
    assert record is not None and record.by == "alice"  # the credential wins over the claim
    record.verify(TrustedKeys.of([load_public_key(public.read_bytes())]), region="eu")

    code, out = await proxima("rollout", "pause", "--nats", as_alice)
    assert code == 0, out
    # A token or no credential names nobody: the claim is kept, marked unverified.
    no_user = f"nats://tokenless:pw2@{LOCALHOST}:{secured_server.client_port}"
    assert (await proxima("rollout", "resume", "--nats", no_user))[0] == 0
    code, out = await proxima("rollback", "--region", "eu", "--nats", as_alice)
    assert code == 0, out

    entries = await audit_entries(js, "eu")
    assert [(e["action"], e["operator"], e["operator_via"]) for e in entries] == [
        ("start", "alice", "nats-user"),
        ("pause", "alice", "nats-user"),
        ("resume", "tokenless", "nats-user"),
        ("rollback", "alice", "nats-user"),
    ]
    found = await read_plan(js, "eu")
    assert found is not None
    assert [d.operator for d in found[0].decisions] == ["alice", "alice", "tokenless", "alice"]
    record, _ = await read_edge_record(js, "eu")
    assert record is not None and record.by == "alice" and record.signature is None

    code, out = await proxima("rollout", "status", "--audit", "10", "--nats", as_alice)
    assert code == 0, out
    assert "rollback of bundle 8 by alice" in out
    assert "start of bundle 8 by alice" in out


@pytest.fixture
async def plain_js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_server.url)
    yield client.jetstream()
    await client.close()


async def test_the_trainers_releases_are_signed_and_say_so(plain_js: JetStreamContext) -> None:
    signer = Ed25519PrivateKey.generate()
    registry = ModelRegistry(plain_js)
    await registry.publish_bundle(b"bundle 3", 3)
    release = bundle_release(("eu", "us"), None, signer)
    assert await release(registry, 3) == ("eu", "us")
    trusted = TrustedKeys.of([signer.public_key()])
    for region in ("eu", "us"):
        record, _ = await read_edge_record(plain_js, region)
        assert record is not None and (record.stable, record.by) == (3, "trainer")
        record.verify(trusted, region=region)
    unsigned = await registry.promote_regions(3, ("ap",))
    assert unsigned["ap"].signature is None and unsigned["ap"].by is None
