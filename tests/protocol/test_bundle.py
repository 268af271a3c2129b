from __future__ import annotations

import hashlib
import json
import math
import struct
import time
import warnings
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bundle import Bundle, build_bundle, inspect_bundle, read_bundle
from protocol.errors import BundleError, ManifestError, PartError, SignatureError
from protocol.keys import key_id
from protocol.manifest import FORMAT, Manifest, PartInfo, format_timestamp, is_valid_part_name

SIGNING_KEY = Ed25519PrivateKey.generate()
TRUSTED_KEY = SIGNING_KEY.public_key()
OTHER_KEY = Ed25519PrivateKey.generate()
CREATED_AT = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)

PARTS = {
    "ranker.fp32.onnx": b"\x08\x07fp32-model" * 50,
    "ranker.int8.onnx": b"\x08\x07int8-model" * 30,
    "tables/popularity.npy": bytes(range(256)) * 40,
    "tables/items.msgpack": b"\x93\xa1a\xa1b\xa1c",
}
RANKER = {
    "serve": "ranker.int8.onnx",
    "fp32": "ranker.fp32.onnx",
    "int8": "ranker.int8.onnx",
    "precision": "int8",
    "quantized_operators": ["MatMul"],
    "quantization_note": "dynamic int8 weights",
}


def build(**overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "version": 7,
        "feature_schema_version": 1,
        "ranker": RANKER,
        "metrics": {"ndcg@20": 0.31, "recall@20": 0.52, "auc": 0.7},
        "rules_version": "rules-3",
        "config": {"candidates": {"covisit_window": 5}, "features": ["a", "b"]},
        "training": {"sessions": 1200, "events": 48000, "from": "2025-02-01"},
        "parts": PARTS,
        "private_key": SIGNING_KEY,
        "created_at": CREATED_AT,
    }
    arguments.update(overrides)
    return build_bundle(**arguments)


BUNDLE = build()


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def make_zip(members: list[tuple[str, bytes]] | dict[str, bytes]) -> bytes:
    items = list(members.items()) if isinstance(members, dict) else members
    buffer = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns on duplicate names
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in items:
                info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    return buffer.getvalue()


def canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def resigned(
    edit: Callable[[dict[str, Any]], None], *, key: Ed25519PrivateKey = SIGNING_KEY
) -> bytes:
    """BUNDLE with its manifest edited and signed again, as a rogue trainer could."""
    members = members_of(BUNDLE)
    manifest = json.loads(members["manifest.json"])
    edit(manifest)
    members["manifest.json"] = canonical(manifest)
    members["manifest.sig"] = key.sign(members["manifest.json"])
    return make_zip(members)


def patch_central_entry(data: bytes, member: str, offset: int, fmt: str, value: int) -> bytes:
    """Overwrites one field of ``member``'s central-directory record."""
    position = 0
    while True:
        position = data.index(b"PK\x01\x02", position)
        (name_length,) = struct.unpack_from("<H", data, position + 28)
        if data[position + 46 : position + 46 + name_length] == member.encode():
            break
        position += 4
    patched = bytearray(data)
    struct.pack_into(fmt, patched, position + offset, value)
    return bytes(patched)


def error_of(data: bytes, **kwargs: Any) -> BundleError:
    with pytest.raises(BundleError) as caught:
        read_bundle(data, TRUSTED_KEY, **kwargs)
    return caught.value


# Round trip and determinism


def test_round_trip() -> None:
    bundle = read_bundle(BUNDLE, TRUSTED_KEY)
    assert isinstance(bundle, Bundle)
    assert bundle.size == len(BUNDLE)
    assert dict(bundle.parts) == PARTS
    assert bundle.part("tables/popularity.npy") == PARTS["tables/popularity.npy"]
    manifest = bundle.manifest
    assert manifest.format == FORMAT == "proxima-bundle/1"
    assert manifest.version == 7
    assert manifest.created_at == "2025-03-01T12:30:00Z"
    assert manifest.key_id == key_id(TRUSTED_KEY)
    assert manifest.feature_schema_version == 1
    assert manifest.ranker == RANKER
    assert manifest.metrics["ndcg@20"] == 0.31
    assert manifest.rules_version == "rules-3"
    assert manifest.config == {"candidates": {"covisit_window": 5}, "features": ["a", "b"]}
    assert manifest.training["sessions"] == 1200
    assert set(manifest.parts) == set(PARTS)


def test_part_hashes_are_sha256_of_contents() -> None:
    manifest = inspect_bundle(BUNDLE)
    for name, blob in PARTS.items():
        assert manifest.parts[name] == PartInfo(hashlib.sha256(blob).hexdigest(), len(blob))


def test_layout_is_manifest_signature_then_sorted_parts() -> None:
    with zipfile.ZipFile(BytesIO(BUNDLE)) as archive:
        infos = archive.infolist()
    assert [info.filename for info in infos] == [
        "manifest.json",
        "manifest.sig",
        "parts/ranker.fp32.onnx",
        "parts/ranker.int8.onnx",
        "parts/tables/items.msgpack",
        "parts/tables/popularity.npy",
    ]
    assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in infos)
    assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in infos)
    assert len(members_of(BUNDLE)["manifest.sig"]) == 64


def test_same_inputs_give_same_bytes() -> None:
    assert build() == BUNDLE
    assert build(parts=dict(reversed(list(PARTS.items())))) == BUNDLE
    assert build(created_at=CREATED_AT + timedelta(seconds=1)) != BUNDLE


def test_manifest_json_is_canonical() -> None:
    manifest_bytes = members_of(BUNDLE)["manifest.json"]
    assert manifest_bytes == canonical(json.loads(manifest_bytes))
    manifest = Manifest.from_json_bytes(manifest_bytes)
    assert manifest.to_json_bytes() == manifest_bytes
    assert Manifest.from_json_bytes(manifest.to_json_bytes()) == manifest


def test_non_ascii_text_is_kept_as_utf8() -> None:
    data = build(training={"note": "données d'été"})
    assert "données d'été".encode() in members_of(data)["manifest.json"]
    assert read_bundle(data, TRUSTED_KEY).manifest.training == {"note": "données d'été"}


def test_default_created_at_is_now_in_utc() -> None:
    manifest = read_bundle(build(created_at=None), TRUSTED_KEY).manifest
    created = datetime.fromisoformat(manifest.created_at)
    assert manifest.created_at.endswith("Z")
    assert abs(created.timestamp() - time.time()) < 60


def test_created_at_is_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    assert format_timestamp(datetime(2025, 3, 1, 13, 30, tzinfo=paris)) == "2025-03-01T12:30:00Z"
    with pytest.raises(ManifestError) as caught:
        build(created_at=datetime(2025, 3, 1))
    assert caught.value.field == "created_at"


def test_ranker_may_be_fp32_only() -> None:
    ranker: dict[str, Any] = {
        "serve": "ranker.fp32.onnx",
        "fp32": "ranker.fp32.onnx",
        "int8": None,
        "precision": "fp32",
        "quantized_operators": [],
    }
    assert read_bundle(build(ranker=ranker), TRUSTED_KEY).manifest.ranker == ranker


def test_missing_part_lookup_is_a_part_error() -> None:
    bundle = read_bundle(BUNDLE, TRUSTED_KEY)
    with pytest.raises(PartError) as caught:
        bundle.part("ranker.onnx")
    assert caught.value.code == "missing_part"


# Tampering


def test_flipped_byte_in_part_is_a_hash_mismatch() -> None:
    members = members_of(BUNDLE)
    damaged = bytearray(members["parts/tables/popularity.npy"])
    damaged[100] ^= 0x01
    members["parts/tables/popularity.npy"] = bytes(damaged)
    error = error_of(make_zip(members))
    assert isinstance(error, PartError)
    assert error.code == "part_hash_mismatch"
    assert error.field == "parts.tables/popularity.npy"
    assert "tables/popularity.npy" in error.message


def test_flipped_byte_in_manifest_fails_the_signature() -> None:
    members = members_of(BUNDLE)
    members["manifest.json"] = members["manifest.json"].replace(b'"version":7', b'"version":8')
    error = error_of(make_zip(members))
    assert isinstance(error, SignatureError)
    assert error.code == "bad_signature"
    assert "does not verify" in error.message


def test_flipped_byte_in_signature_fails_the_signature() -> None:
    members = members_of(BUNDLE)
    signature = bytearray(members["manifest.sig"])
    signature[10] ^= 0x80
    members["manifest.sig"] = bytes(signature)
    error = error_of(make_zip(members))
    assert isinstance(error, SignatureError)
    assert error.code == "bad_signature"


def test_bundle_signed_by_another_key_names_both_keys() -> None:
    error = error_of(build(private_key=OTHER_KEY))
    assert isinstance(error, SignatureError)
    assert error.code == "key_mismatch"
    assert error.message == (
        f"bundle signed by key {key_id(OTHER_KEY.public_key())}, "
        f"this edge trusts key {key_id(TRUSTED_KEY)}"
    )


def test_manifest_naming_another_key_is_refused_even_when_signature_verifies() -> None:
    def claim_other_key(manifest: dict[str, Any]) -> None:
        manifest["key_id"] = key_id(OTHER_KEY.public_key())

    error = error_of(resigned(claim_other_key))
    assert isinstance(error, ManifestError)
    assert error.code == "key_id_mismatch"


def test_extra_member_is_refused() -> None:
    members = members_of(BUNDLE)
    members["parts/backdoor.py"] = b"import os"
    error = error_of(make_zip(members))
    assert error.code == "unexpected_member"
    assert "parts/backdoor.py" in error.message


def test_missing_part_is_refused() -> None:
    members = members_of(BUNDLE)
    del members["parts/ranker.fp32.onnx"]
    error = error_of(make_zip(members))
    assert isinstance(error, PartError)
    assert error.code == "missing_part"
    assert "ranker.fp32.onnx" in error.message


def test_part_larger_than_declared_is_not_unpacked(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = bytes(20 * 1024 * 1024)

    def declare_tiny(manifest: dict[str, Any]) -> None:
        manifest["parts"]["tables/popularity.npy"]["size"] = 10

    members = members_of(resigned(declare_tiny))
    members["parts/tables/popularity.npy"] = bomb
    data = make_zip(members)
    assert len(data) < 100_000

    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def recording_open(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    error = error_of(data)
    assert isinstance(error, PartError)
    assert error.code == "part_size_mismatch"
    assert "parts/tables/popularity.npy" not in opened


def test_archive_lying_about_a_part_size_reads_no_more_than_declared() -> None:
    real = b"0123456789" + bytes(1_000_000)

    def declare_prefix(manifest: dict[str, Any]) -> None:
        manifest["parts"]["tables/popularity.npy"] = {
            "sha256": hashlib.sha256(real[:10]).hexdigest(),
            "size": 10,
        }

    members = members_of(resigned(declare_prefix))
    members["parts/tables/popularity.npy"] = real
    data = patch_central_entry(make_zip(members), "parts/tables/popularity.npy", 24, "<I", 10)
    error = error_of(data)
    assert isinstance(error, PartError)
    assert error.code == "part_unreadable"


def test_truncated_file_is_unreadable() -> None:
    for cut in (len(BUNDLE) // 2, len(BUNDLE) - 1, 30, 1):
        error = error_of(BUNDLE[:cut])
        assert error.code == "bundle_unreadable", cut


def test_not_a_zip_is_unreadable() -> None:
    for data in (b"", b"not a zip at all", b"PK\x03\x04" + bytes(100), b"\x1f\x8b" + bytes(50)):
        error = error_of(data)
        assert error.code == "bundle_unreadable"
        assert "ZIP" in error.message


@pytest.mark.parametrize("name", ["../evil.sh", "parts/../../etc/passwd", "/etc/cron.d/x",
                                  "parts\\..\\x", "C:/windows/x", "parts/a\x01"])
def test_unsafe_member_names_are_refused(name: str) -> None:
    members = members_of(BUNDLE)
    members[name] = b"payload"
    error = error_of(make_zip(members))
    assert error.code == "unsafe_member_name"
    with pytest.raises(BundleError) as caught:
        inspect_bundle(make_zip(members))
    assert caught.value.code == "unsafe_member_name"


def test_duplicate_member_is_refused() -> None:
    members = list(members_of(BUNDLE).items())
    members.append(("parts/ranker.int8.onnx", b"replacement model"))
    assert error_of(make_zip(members)).code == "duplicate_member"


def test_encrypted_member_is_refused() -> None:
    data = patch_central_entry(BUNDLE, "parts/ranker.int8.onnx", 8, "<H", 0x1)
    assert error_of(data).code == "encrypted_member"


def test_unsupported_compression_is_refused() -> None:
    bzip2 = 12
    data = patch_central_entry(BUNDLE, "parts/ranker.int8.onnx", 10, "<H", bzip2)
    assert error_of(data).code == "unsupported_compression"


def test_missing_manifest_or_signature() -> None:
    members = members_of(BUNDLE)
    without_signature = {k: v for k, v in members.items() if k != "manifest.sig"}
    error = error_of(make_zip(without_signature))
    assert isinstance(error, SignatureError)
    assert error.code == "missing_signature"
    without_manifest = {k: v for k, v in members.items() if k != "manifest.json"}
    error = error_of(make_zip(without_manifest))
    assert isinstance(error, ManifestError)
    assert error.code == "missing_manifest"


def test_signature_of_wrong_length_is_malformed() -> None:
    members = members_of(BUNDLE)
    members["manifest.sig"] = members["manifest.sig"] + b"\x00"
    assert error_of(make_zip(members)).code == "malformed_signature"


def test_size_limit() -> None:
    assert error_of(BUNDLE, max_bytes=len(BUNDLE) - 1).code == "bundle_too_large"
    assert read_bundle(BUNDLE, TRUSTED_KEY, max_bytes=len(BUNDLE)).size == len(BUNDLE)
    with pytest.raises(BundleError) as caught:
        build(max_bytes=100)
    assert caught.value.code == "bundle_too_large"
    with pytest.raises(BundleError) as caught:
        inspect_bundle(BUNDLE, max_bytes=100)
    assert caught.value.code == "bundle_too_large"


# Manifest validation


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        *parents, last = path.split("|")
        target = manifest
        for key in parents:
            target = target[key]
        target[last] = value

    return edit


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("version", "7", "version"),
        ("version", 7.0, "version"),
        ("version", True, "version"),
        ("version", 0, "version"),
        ("version", 2**63, "version"),
        ("feature_schema_version", None, "feature_schema_version"),
        ("created_at", "yesterday", "created_at"),
        ("created_at", "2025-03-01T12:30:00", "created_at"),
        ("created_at", "2025-03-01T12:30:00+02:00", "created_at"),
        ("created_at", 1740832200, "created_at"),
        ("key_id", "ABCDEF", "key_id"),
        ("parts", [], "parts"),
        ("parts|tables/items.msgpack|size", -1, "parts.tables/items.msgpack.size"),
        ("parts|tables/items.msgpack|size", "6", "parts.tables/items.msgpack.size"),
        ("parts|tables/items.msgpack|sha256", "00", "parts.tables/items.msgpack.sha256"),
        ("parts|../escape", {"sha256": "0" * 64, "size": 1}, "parts"),
        ("ranker", "ranker.int8.onnx", "ranker"),
        ("ranker|serve", "ranker.onnx", "ranker.serve"),
        ("ranker|precision", "int4", "ranker.precision"),
        ("ranker|quantized_operators", "MatMul", "ranker.quantized_operators"),
        ("metrics", [0.3], "metrics"),
        ("rules_version", 3, "rules_version"),
        ("rules_version", "", "rules_version"),
        ("config", None, "config"),
        ("training", "big", "training"),
    ],
)
def test_manifest_field_errors_name_the_field(path: str, value: Any, field: str) -> None:
    error = error_of(resigned(_set(path, value)))
    assert isinstance(error, ManifestError)
    assert error.field == field
    assert field.split(".")[0] in error.message


def test_unknown_field_is_refused() -> None:
    error = error_of(resigned(_set("signed_by", "me")))
    assert isinstance(error, ManifestError)
    assert (error.code, error.field) == ("unknown_field", "signed_by")


def test_missing_field_is_refused() -> None:
    error = error_of(resigned(lambda manifest: manifest.pop("metrics")))
    assert isinstance(error, ManifestError)
    assert (error.code, error.field) == ("missing_field", "metrics")


def test_other_format_is_refused_before_other_checks() -> None:
    def future(manifest: dict[str, Any]) -> None:
        manifest["format"] = "proxima-bundle/2"
        manifest["new_field"] = 1

    error = error_of(resigned(future))
    assert isinstance(error, ManifestError)
    assert error.code == "unsupported_format"


@pytest.mark.parametrize(
    "manifest_bytes",
    [
        b"\xff\xfe{}",
        b"{not json",
        b"[]",
        b'{"format":"proxima-bundle/1","format":"proxima-bundle/1"}',
        b'{"metrics":{"auc":NaN}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_manifest_json(manifest_bytes: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_json_bytes(manifest_bytes)


def test_deep_nesting_is_refused() -> None:
    nested: Any = 1
    for _ in range(40):
        nested = {"x": nested}
    with pytest.raises(ManifestError) as caught:
        build(config=nested)
    assert caught.value.field is not None
    assert caught.value.field.startswith("config.x.x")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"metrics": {"auc": math.nan}}, "metrics.auc"),
        ({"metrics": {"auc": math.inf}}, "metrics.auc"),
        ({"training": {"started": datetime(2025, 1, 1)}}, "training.started"),
        ({"config": {"weights": {1: 0.5}}}, "config.weights"),
        ({"version": 0}, "version"),
        ({"parts": {"ranker/../x": b""}}, "parts"),
        ({"parts": {"/abs": b""}}, "parts"),
        ({"ranker": {"serve": "missing.onnx"}}, "ranker.serve"),
    ],
)
def test_build_refuses_what_readers_would_refuse(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ManifestError) as caught:
        build(**overrides)
    assert caught.value.field == field


def test_build_copies_tuples_as_lists() -> None:
    data = build(config={"weights": (1, 2.5)}, ranker={**RANKER, "quantized_operators": ("A",)})
    manifest = read_bundle(data, TRUSTED_KEY).manifest
    assert manifest.config == {"weights": [1, 2.5]}
    assert manifest.ranker["quantized_operators"] == ["A"]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("ranker.onnx", True),
        ("tables/popularity.npy", True),
        ("a/b/c-d_e.f", True),
        ("x" * 100, True),
        ("x" * 101, False),
        ("", False),
        ("/abs", False),
        ("dir/", False),
        ("a//b", False),
        ("./a", False),
        ("a/../b", False),
        ("a..b", False),
        ("sp ace", False),
        ("ünï", False),
        ("a\\b", False),
    ],
)
def test_part_names(name: str, valid: bool) -> None:
    assert is_valid_part_name(name) is valid


# Inspect


def test_inspect_reads_manifest_without_a_key() -> None:
    assert inspect_bundle(BUNDLE) == read_bundle(BUNDLE, TRUSTED_KEY).manifest
    assert inspect_bundle(build(private_key=OTHER_KEY)).key_id == key_id(OTHER_KEY.public_key())


def test_inspect_still_checks_zip_and_manifest_shape() -> None:
    with pytest.raises(BundleError) as caught:
        inspect_bundle(b"garbage")
    assert caught.value.code == "bundle_unreadable"
    with pytest.raises(ManifestError) as caught:
        inspect_bundle(resigned(_set("version", "seven")))
    assert caught.value.field == "version"
    members = members_of(BUNDLE)
    del members["manifest.json"]
    with pytest.raises(ManifestError) as caught:
        inspect_bundle(make_zip(members))
    assert caught.value.code == "missing_manifest"


# Properties

_SEGMENT = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=1,
    max_size=24,
)
_PART_NAMES = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join).filter(is_valid_part_name)


@settings(max_examples=60, deadline=None)
@given(parts=st.dictionaries(_PART_NAMES, st.binary(max_size=2048), max_size=8))
def test_round_trip_property(parts: dict[str, bytes]) -> None:
    data = build(parts=parts, ranker={})
    bundle = read_bundle(data, TRUSTED_KEY)
    assert dict(bundle.parts) == parts
    assert set(bundle.manifest.parts) == set(parts)
    assert build(parts=parts, ranker={}) == data


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(BUNDLE) - 1),
       mask=st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_refused_or_harmless(position: int, mask: int) -> None:
    damaged = bytearray(BUNDLE)
    damaged[position] ^= mask
    try:
        bundle = read_bundle(bytes(damaged), TRUSTED_KEY)
    except BundleError:
        return
    assert dict(bundle.parts) == PARTS
    assert bundle.manifest == inspect_bundle(BUNDLE)


@settings(max_examples=100, deadline=None)
@given(length=st.integers(min_value=0, max_value=len(BUNDLE) - 1))
def test_any_truncation_is_refused(length: int) -> None:
    with pytest.raises(BundleError):
        read_bundle(BUNDLE[:length], TRUSTED_KEY)
