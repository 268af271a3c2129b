"""NATS over TLS and with credentials kept in files, against real nats-servers.

Each server runs a config with a ``tls`` block whose certificates :func:`tests.tls.make_pki`
made: a client that checks the server against the CA connects; one that trusts another CA,
or only the system's, is refused; a server that asks for client certificates refuses a
client without one and, with ``verify_and_map``, takes the certificate as the user.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import nats
import pytest
from click.testing import CliRunner
from nats.aio.client import Client as NatsClient

from central.cli import main as proxima
from runtime.backoff import Backoff
from runtime.nats import BusSettingsError, NatsClientSettings, NatsSettings
from runtime.settings import SettingsError, load_settings
from runtime.supervisor import BusSupervisor
from tests.deploy.nats_topology import ConfiguredNatsServer
from tests.servers import LOCALHOST
from tests.tls import CLIENT_NAME, Pki, make_pki

PASSWORD = "s3cretPW-in-a-file"
TOKEN = "t0ken-in-a-file"


class ServerFactory(Protocol):
    def __call__(self, extra: str, *, verify: str = "") -> ConfiguredNatsServer: ...


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start_server(tmp_path: Path, pki: Pki) -> Iterator[ServerFactory]:
    """``start_server(extra)``: a nats-server with TLS and ``extra`` config lines."""
    servers: list[ConfiguredNatsServer] = []

    def start(extra: str, *, verify: str = "") -> ConfiguredNatsServer:
        def render(server: ConfiguredNatsServer) -> str:
            return "\n".join(
                [
                    f'listen: "{LOCALHOST}:{server.client_port}"',
                    f'http: "{LOCALHOST}:{server.monitor_port}"',
                    "tls {",
                    f'  cert_file: "{pki.server.cert}"',
                    f'  key_file: "{pki.server.key}"',
                    f'  ca_file: "{pki.ca}"',
                    "  timeout: 5",
                    f"  {verify}",
                    "}",
                    extra,
                ]
            )

        server = ConfiguredNatsServer(tmp_path / f"nats-{len(servers)}", render=render, env={})
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


def tls_url(server: ConfiguredNatsServer) -> str:
    return f"tls://{LOCALHOST}:{server.client_port}"


async def connect(settings: NatsSettings) -> NatsClient:
    options: dict[str, Any] = settings.connect_options()
    options.update(allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=5)
    return await nats.connect(**options)


async def round_trip(client: NatsClient) -> bytes:
    subscription = await client.subscribe("tls.check")
    await client.publish("tls.check", b"over tls")
    message = await subscription.next_msg(timeout=5)
    return message.data


def secret_file(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text + "\n", encoding="utf-8")  # a trailing newline, as editors leave
    return path


async def test_a_client_that_checks_the_server_against_the_ca_connects(
    start_server: ServerFactory, pki: Pki
) -> None:
    server = start_server("")
    client = await connect(NatsSettings.from_url(tls_url(server), tls_ca=pki.ca))
    try:
        assert await round_trip(client) == b"over tls"
        assert client.connected_url is not None and client.connected_url.scheme == "tls"
    finally:
        await client.close()


async def test_a_server_signed_by_another_ca_is_refused(
    start_server: ServerFactory, pki: Pki
) -> None:
    server = start_server("")
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(NatsSettings.from_url(tls_url(server), tls_ca=pki.other_ca))


async def test_without_the_ca_the_systems_cas_do_not_trust_the_server(
    start_server: ServerFactory,
) -> None:
    server = start_server("")
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(NatsSettings.from_url(tls_url(server)))


async def test_a_server_that_wants_client_certificates_refuses_a_client_without_one(
    start_server: ServerFactory, pki: Pki
) -> None:
    server = start_server("", verify="verify: true")
    with pytest.raises((ssl.SSLError, OSError, nats.errors.Error)):
        client = await connect(NatsSettings.from_url(tls_url(server), tls_ca=pki.ca))
        try:
            await round_trip(client)  # TLS 1.3 reports the missing certificate on first use
        finally:
            await client.close()

    with_cert = NatsSettings.from_url(
        tls_url(server), tls_ca=pki.ca, tls_cert=pki.client.cert, tls_key=pki.client.key
    )
    client = await connect(with_cert)
    try:
        assert await round_trip(client) == b"over tls"
    finally:
        await client.close()


async def test_the_client_certificate_is_the_user_with_verify_and_map(
    start_server: ServerFactory, pki: Pki
) -> None:
    server = start_server(
        "authorization {\n"
        f'  users = [{{user: "CN={CLIENT_NAME}", permissions: {{publish: "tls.>", '
        'subscribe: ["tls.>", "_INBOX.>"]}}]\n'
        "}",
        verify="verify_and_map: true",
    )
    settings = NatsClientSettings(
        nats_tls_ca=pki.ca, nats_tls_cert=pki.client.cert, nats_tls_key=pki.client.key
    )
    client = await connect(settings.nats_connection(tls_url(server), name="mapped"))
    try:
        assert await round_trip(client) == b"over tls"
        connz = server.monitor("connz?auth=true") or {}
        users = {c.get("authorized_user") for c in connz.get("connections", [])}
        assert f"CN={CLIENT_NAME}" in users
    finally:
        await client.close()


async def test_password_and_token_are_read_from_their_files(
    start_server: ServerFactory, pki: Pki, tmp_path: Path
) -> None:
    password_server = start_server(
        f'authorization {{\n  user: "edge-eu"\n  password: "{PASSWORD}"\n}}'
    )
    token_server = start_server(f'authorization {{\n  token: "{TOKEN}"\n}}')
    by_password = NatsClientSettings(
        nats_user="edge-eu",
        nats_password_file=secret_file(tmp_path, "password", PASSWORD),
        nats_tls_ca=pki.ca,
    )
    by_token = NatsClientSettings(
        nats_token_file=secret_file(tmp_path, "token", TOKEN), nats_tls_ca=pki.ca
    )
    for server, credentials in ((password_server, by_password), (token_server, by_token)):
        client = await connect(credentials.nats_connection(tls_url(server), name="files"))
        try:
            assert await round_trip(client) == b"over tls"
        finally:
            await client.close()

    wrong = NatsClientSettings(
        nats_user="edge-eu",
        nats_password_file=secret_file(tmp_path, "wrong", "not-it"),
        nats_tls_ca=pki.ca,
    )
    with pytest.raises(nats.errors.Error, match=r"[Aa]uthorization"):
        await connect(wrong.nats_connection(tls_url(password_server), name="wrong"))


async def test_the_supervisor_connects_over_tls_from_settings_loaded_like_a_command(
    start_server: ServerFactory, pki: Pki, tmp_path: Path
) -> None:
    server = start_server(f'authorization {{\n  user: "bridge"\n  password: "{PASSWORD}"\n}}')
    env = {
        "PROXIMA_NATS_USER": "bridge",
        "PROXIMA_NATS_PASSWORD_FILE": str(secret_file(tmp_path, "pw", PASSWORD)),
        "PROXIMA_NATS_TLS_CA": str(pki.ca),
    }
    credentials = load_settings(NatsClientSettings, table="bridge", env=env)
    supervisor = BusSupervisor(
        credentials.nats_connection(tls_url(server), name="tls-test"), backoff=Backoff(0.05, 0.5)
    )
    await supervisor.start()
    try:
        connection = await supervisor.wait_connected(10.0)
        assert await round_trip(connection.client) == b"over tls"
        assert supervisor.status.server == f"{LOCALHOST}:{server.client_port}"
    finally:
        await supervisor.close(5.0)


def test_credentials_that_do_not_go_together_are_refused(tmp_path: Path) -> None:
    file = secret_file(tmp_path, "pw", PASSWORD)
    with pytest.raises(SettingsError, match="not both"):
        NatsClientSettings(
            nats_user="u", nats_password="p", nats_password_file=file
        ).nats_connection("nats://127.0.0.1:4222", name="x")
    with pytest.raises(SettingsError, match="one of"):
        NatsClientSettings(
            nats_user="u", nats_password_file=file, nats_token_file=file
        ).nats_connection("nats://127.0.0.1:4222", name="x")
    with pytest.raises(SettingsError, match="go together"):
        NatsClientSettings(nats_password_file=file).nats_connection(
            "nats://127.0.0.1:4222", name="x"
        )


def test_an_unreadable_or_empty_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = NatsSettings.from_url(
        "nats://127.0.0.1:4222", user="u", password_file=tmp_path / "absent"
    )
    with pytest.raises(BusSettingsError, match="cannot read the password_file"):
        missing.connect_options()
    empty = NatsSettings.from_url(
        "nats://127.0.0.1:4222", token_file=secret_file(tmp_path, "empty", "")
    )
    with pytest.raises(BusSettingsError, match="is empty"):
        empty.connect_options()


def test_secrets_stay_out_of_the_settings_repr(tmp_path: Path) -> None:
    settings = NatsClientSettings(nats_user="u", nats_password="hunter2-secret")
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in repr(settings.nats_connection("nats://h:1", name="x"))


def test_a_central_command_reaches_a_tls_server_with_its_credential_flags(
    start_server: ServerFactory, pki: Pki, tmp_path: Path
) -> None:
    server = start_server(
        f'authorization {{\n  user: "operator"\n  password: "{PASSWORD}"\n}}\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}'
    )
    flags = [
        "rollout", "status", "--nats", tls_url(server), "--nats-user", "operator",
        "--nats-password-file", str(secret_file(tmp_path, "pw", PASSWORD)),
    ]  # fmt: skip
    runner = CliRunner()
    reached = runner.invoke(proxima, [*flags, "--nats-tls-ca", str(pki.ca)], env={})
    assert reached.exit_code == 0, reached.output
    untrusted = runner.invoke(proxima, [*flags, "--nats-tls-ca", str(pki.other_ca)], env={})
    assert untrusted.exit_code == 1
    assert "cannot reach NATS at tls://127.0.0.1" in untrusted.output
    assert PASSWORD not in reached.output + untrusted.output
