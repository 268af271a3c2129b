from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.errors import KeyFileError
from protocol.keys import (
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
)


def test_generated_pair_signs_and_verifies() -> None:
    private_pem, public_pem = generate_keypair()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    private_key = load_private_key(private_pem)
    public_key = load_public_key(public_pem)
    public_key.verify(private_key.sign(b"message"), b"message")
    assert key_id(private_key.public_key()) == key_id(public_key)


def test_key_id_is_sha256_prefix_of_raw_public_key() -> None:
    public_key = Ed25519PrivateKey.generate().public_key()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert key_id(public_key) == hashlib.sha256(raw).hexdigest()[:16]


def test_key_ids_differ_between_keys() -> None:
    first = Ed25519PrivateKey.generate().public_key()
    second = Ed25519PrivateKey.generate().public_key()
    assert key_id(first) != key_id(second)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "not_pem"),
        (b"hello, not a key", "not_pem"),
        (b"\x30\x2e\x02\x01\x00", "not_pem"),
        (b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI", "key_truncated"),
        (b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", "key_unreadable"),
    ],
)
def test_malformed_private_key_is_refused(data: bytes, code: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        load_private_key(data)
    assert caught.value.code == code


def test_truncated_base64_is_refused() -> None:
    private_pem, public_pem = generate_keypair()
    lines = private_pem.splitlines()
    damaged = b"\n".join([lines[0], lines[1][:20], lines[-1]]) + b"\n"
    with pytest.raises(KeyFileError) as caught:
        load_private_key(damaged)
    assert caught.value.code == "key_unreadable"
    public_lines = public_pem.splitlines()
    with pytest.raises(KeyFileError):
        load_public_key(b"\n".join([public_lines[0], public_lines[1][:10], public_lines[-1]]))


def test_malformed_public_key_is_refused() -> None:
    with pytest.raises(KeyFileError) as caught:
        load_public_key(b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host")
    assert caught.value.code == "not_pem"
    assert "not PEM" in caught.value.message


def test_rsa_keys_are_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFileError) as caught:
        load_private_key(private_pem)
    assert caught.value.code == "not_ed25519"
    assert "RSA" in caught.value.message
    with pytest.raises(KeyFileError) as caught:
        load_public_key(public_pem)
    assert caught.value.code == "not_ed25519"


def test_ec_public_key_is_refused() -> None:
    public_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError) as caught:
        load_public_key(public_pem)
    assert caught.value.code == "not_ed25519"


def test_encrypted_private_key_is_refused() -> None:
    encrypted = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    with pytest.raises(KeyFileError) as caught:
        load_private_key(encrypted)
    assert caught.value.code == "key_encrypted"


def test_swapped_key_files_are_named_as_such() -> None:
    private_pem, public_pem = generate_keypair()
    with pytest.raises(KeyFileError) as caught:
        load_private_key(public_pem)
    assert caught.value.code == "wrong_key_kind"
    with pytest.raises(KeyFileError) as caught:
        load_public_key(private_pem)
    assert caught.value.code == "wrong_key_kind"
