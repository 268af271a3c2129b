"""Model bundles: one signed ZIP file holding everything an edge needs.

Members: ``manifest.json`` (canonical JSON, see :class:`~protocol.manifest.Manifest`),
``manifest.sig`` (the raw 64-byte Ed25519 signature of the exact ``manifest.json`` bytes)
and ``parts/<name>`` for each part. Parts are opaque bytes here; the manifest holds each
one's sha256 and size.

:func:`build_bundle` makes the archive, :func:`read_bundle` checks and unpacks it, and
:func:`inspect_bundle` only looks. :func:`read_bundle` trusts nothing before the signature
verifies, and unpacks no part whose size in the archive differs from the signed size, so a
bundle cannot make an edge unpack more than the trainer signed for.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from protocol.errors import BundleError, ManifestError, PartError, SignatureError
from protocol.keys import TrustedKeys, key_id
from protocol.manifest import (
    FORMAT,
    MAX_MANIFEST_BYTES,
    MAX_PARTS,
    Manifest,
    PartInfo,
    format_timestamp,
    is_valid_key_id,
)

__all__ = [
    "MANIFEST_MEMBER",
    "MAX_BUNDLE_BYTES",
    "MAX_MEMBERS",
    "PART_PREFIX",
    "SIGNATURE_BYTES",
    "SIGNATURE_MEMBER",
    "Bundle",
    "Manifest",
    "build_bundle",
    "inspect_bundle",
    "read_bundle",
]


MANIFEST_MEMBER: Final = "manifest.json"
SIGNATURE_MEMBER: Final = "manifest.sig"
PART_PREFIX: Final = "parts/"
MAX_BUNDLE_BYTES: Final = 512 * 1024 * 1024
SIGNATURE_BYTES: Final = 64
MAX_MEMBERS: Final = MAX_PARTS + 2  # every part, the manifest and its signature
MAX_UNPACK_RATIO: Final = 8  # members may declare at most this times the archive's byte limit

# The ZIP end-of-central-directory record and its ZIP64 locator and record (APPNOTE 4.3.14-16).
_EOCD: Final = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE: Final = b"PK\x05\x06"
_ZIP64_LOCATOR: Final = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE: Final = b"PK\x06\x07"
_ZIP64_EOCD: Final = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE: Final = b"PK\x06\x06"
_MAX_DIRECTORY_ENTRY_BYTES: Final = 1024  # a header, a short name, no large extras

# Fixed metadata so the same inputs always give the same bytes.
_ZIP_TIMESTAMP: Final = (1980, 1, 1, 0, 0, 0)
_ZIP_UNIX_SYSTEM: Final = 3
_ZIP_FILE_MODE: Final = 0o644 << 16
_COMPRESS_LEVEL: Final = 6
_ENCRYPTED_FLAG: Final = 0x1
_ALLOWED_COMPRESSION: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
# What zipfile and zlib raise on a damaged archive or member.
_ZIP_ERRORS: Final = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
)


@dataclass(frozen=True)
class Bundle:
    """A bundle that passed every check of :func:`read_bundle`."""

    manifest: Manifest
    parts: Mapping[str, bytes]
    size: int

    def part(self, name: str) -> bytes:
        try:
            return self.parts[name]
        except KeyError:
            raise PartError(
                f"bundle version {self.manifest.version} has no part {name!r}",
                code="missing_part",
                field=f"parts.{name}",
            ) from None


def build_bundle(
    *,
    version: int,
    feature_schema_version: int,
    ranker: Mapping[str, Any],
    metrics: Mapping[str, Any],
    rules_version: str | None,
    config: Mapping[str, Any],
    training: Mapping[str, Any],
    parts: Mapping[str, bytes],
    private_key: Ed25519PrivateKey,
    created_at: datetime | None = None,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> bytes:
    """Builds the manifest for ``parts``, signs it and returns the bundle's bytes.

    Validates the manifest exactly as a reader would, and refuses a bundle larger than
    ``max_bytes``, so nothing is built that an edge would turn away.
    """
    manifest = Manifest.from_dict(
        {
            "format": FORMAT,
            "version": version,
            "created_at": format_timestamp(created_at or datetime.now(UTC)),
            "key_id": key_id(private_key.public_key()),
            "feature_schema_version": feature_schema_version,
            "parts": {
                name: {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
                for name, blob in parts.items()
            },
            "ranker": ranker,
            "metrics": metrics,
            "rules_version": rules_version,
            "config": config,
            "training": training,
        }
    )
    manifest_bytes = manifest.to_json_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _add_member(archive, MANIFEST_MEMBER, manifest_bytes)
        _add_member(archive, SIGNATURE_MEMBER, private_key.sign(manifest_bytes))
        for name in sorted(manifest.parts):
            _add_member(archive, PART_PREFIX + name, parts[name])
    data = buffer.getvalue()
    _check_size(data, max_bytes)
    return data


def read_bundle(
    data: bytes,
    public_key: Ed25519PublicKey | TrustedKeys,
    *,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> Bundle:
    """Checks a bundle against the trusted ``public_key`` (or the key of the trusted set that
    its manifest names; a revoked key id is refused as ``key_revoked``) and returns its parts.

    Checks, in order: size, archive structure, manifest and signature present, signature,
    manifest fields, no unexpected member, then each part's size and sha256.
    """
    _check_size(data, max_bytes)
    _check_directory(data)
    with _open_archive(data) as archive:
        members = _index_members(archive, max_bytes)
        if MANIFEST_MEMBER not in members:
            raise ManifestError("the bundle has no manifest.json", code="missing_manifest")
        if SIGNATURE_MEMBER not in members:
            raise SignatureError("the bundle has no manifest.sig", code="missing_signature")
        manifest_bytes = _read_manifest_bytes(archive, members[MANIFEST_MEMBER])
        signature = _read_signature(archive, members[SIGNATURE_MEMBER])
        if isinstance(public_key, TrustedKeys):
            public_key = _named_key(manifest_bytes, public_key)
        _verify_signature(manifest_bytes, signature, public_key)
        manifest = Manifest.from_json_bytes(manifest_bytes)
        trusted_id = key_id(public_key)
        if manifest.key_id != trusted_id:
            raise ManifestError(
                f"manifest names key {manifest.key_id} but was signed by key {trusted_id}",
                code="key_id_mismatch",
                field="key_id",
            )
        _reject_unexpected_members(members, manifest)
        parts = {
            name: _read_part(archive, members, name, info)
            for name, info in sorted(manifest.parts.items())
        }
    return Bundle(manifest=manifest, parts=MappingProxyType(parts), size=len(data))


def inspect_bundle(data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES) -> Manifest:
    """Reads the manifest without verifying anything: for looking, never for loading."""
    _check_size(data, max_bytes)
    _check_directory(data)
    with _open_archive(data) as archive:
        members = _index_members(archive, max_bytes)
        if MANIFEST_MEMBER not in members:
            raise ManifestError("the bundle has no manifest.json", code="missing_manifest")
        return Manifest.from_json_bytes(_read_manifest_bytes(archive, members[MANIFEST_MEMBER]))


def _add_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
    info.create_system = _ZIP_UNIX_SYSTEM
    info.external_attr = _ZIP_FILE_MODE
    archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=_COMPRESS_LEVEL)


def _check_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise BundleError(
            f"the bundle is {len(data)} bytes, over the limit of {max_bytes}",
            code="bundle_too_large",
        )


def _check_directory(data: bytes) -> None:
    """Refuses an archive whose central directory is too big to parse, from its end record
    alone (a few dozen bytes), before zipfile builds an object for every member."""
    start = data.rfind(_EOCD_SIGNATURE, max(0, len(data) - _EOCD.size - 0xFFFF))
    if start < 0 or start + _EOCD.size > len(data):
        return  # not a ZIP archive: opening it says so
    _, _, _, _, members, directory_bytes, _, _ = _EOCD.unpack_from(data, start)
    locator = start - _ZIP64_LOCATOR.size
    if (members == 0xFFFF or directory_bytes == 0xFFFFFFFF) and locator >= 0:
        signature, _, record, _ = _ZIP64_LOCATOR.unpack_from(data, locator)
        if signature == _ZIP64_LOCATOR_SIGNATURE and record + _ZIP64_EOCD.size <= len(data):
            fields = _ZIP64_EOCD.unpack_from(data, record)
            if fields[0] == _ZIP64_EOCD_SIGNATURE:
                members, directory_bytes = fields[7], fields[8]
    if members > MAX_MEMBERS:
        raise BundleError(
            f"the bundle has {members} members, over the limit of {MAX_MEMBERS}",
            code="too_many_members",
        )
    if directory_bytes > MAX_MEMBERS * _MAX_DIRECTORY_ENTRY_BYTES:
        raise BundleError(
            f"the bundle's directory is {directory_bytes} bytes, over the limit of "
            f"{MAX_MEMBERS * _MAX_DIRECTORY_ENTRY_BYTES}",
            code="directory_too_large",
        )


def _open_archive(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise BundleError(
            f"the bundle is not a readable ZIP archive: {exc}", code="bundle_unreadable"
        ) from exc


def _index_members(archive: zipfile.ZipFile, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:  # a directory whose end record understated it
        raise BundleError(
            f"the bundle has {len(infos)} members, over the limit of {MAX_MEMBERS}",
            code="too_many_members",
        )
    unpacked, limit = 0, max_bytes * MAX_UNPACK_RATIO
    for info in infos:
        name = info.filename
        if info.file_size > limit:
            raise BundleError(
                f"member {name[:120]!r} unpacks to {info.file_size} bytes, over {limit}",
                code="member_too_large",
            )
        unpacked += info.file_size
        if unpacked > limit:
            raise BundleError(
                f"the bundle's members unpack to more than {limit} bytes",
                code="bundle_unpacks_too_large",
            )
        if _is_unsafe_member_name(name):
            raise BundleError(f"member {name!r} has an unsafe path", code="unsafe_member_name")
        if name in members:
            raise BundleError(f"member {name!r} appears more than once", code="duplicate_member")
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise BundleError(f"member {name!r} is encrypted", code="encrypted_member")
        if info.compress_type not in _ALLOWED_COMPRESSION:
            raise BundleError(
                f"member {name!r} uses compression method {info.compress_type}; "
                "only stored and deflate are accepted",
                code="unsupported_compression",
            )
        members[name] = info
    return members


def _is_unsafe_member_name(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name or ":" in name:
        return True
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return True
    return ".." in name.split("/")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a member, so an overlong one shows without unpacking."""
    with archive.open(info) as stream:
        return stream.read(limit + 1)


def _read_manifest_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"manifest.json unpacks to {info.file_size} bytes, over {MAX_MANIFEST_BYTES}",
            code="manifest_too_large",
        )
    try:
        return _read_member(archive, info, MAX_MANIFEST_BYTES)
    except _ZIP_ERRORS as exc:
        raise BundleError(
            f"manifest.json could not be unpacked: {exc}", code="bundle_unreadable"
        ) from exc


def _read_signature(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size != SIGNATURE_BYTES:
        raise SignatureError(
            f"manifest.sig is {info.file_size} bytes; an Ed25519 signature is {SIGNATURE_BYTES}",
            code="malformed_signature",
        )
    try:
        signature = _read_member(archive, info, SIGNATURE_BYTES)
    except _ZIP_ERRORS as exc:
        raise BundleError(
            f"manifest.sig could not be unpacked: {exc}", code="bundle_unreadable"
        ) from exc
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(
            f"manifest.sig holds {len(signature)} bytes; an Ed25519 signature is {SIGNATURE_BYTES}",
            code="malformed_signature",
        )
    return signature


def _verify_signature(
    manifest_bytes: bytes, signature: bytes, public_key: Ed25519PublicKey
) -> None:
    try:
        public_key.verify(signature, manifest_bytes)
        return
    except InvalidSignature:
        pass
    trusted_id = key_id(public_key)
    claimed_id = _claimed_key_id(manifest_bytes)
    if claimed_id is not None and claimed_id != trusted_id:
        raise SignatureError(
            f"bundle signed by key {claimed_id}, this edge trusts key {trusted_id}",
            code="key_mismatch",
            field="key_id",
        )
    raise SignatureError(
        f"the manifest signature does not verify against key {trusted_id}: "
        "the manifest or its signature was altered",
    )


def _named_key(manifest_bytes: bytes, trusted: TrustedKeys) -> Ed25519PublicKey:
    """The trusted key the (still unverified) manifest names; refusing is always safe."""
    claimed = _claimed_key_id(manifest_bytes)
    if claimed is not None and claimed in trusted.revoked:
        raise SignatureError(
            f"bundle signed by key {claimed}, which is revoked", code="key_revoked", field="key_id"
        )
    key = trusted.get(claimed) if claimed is not None else None
    if key is None:
        raise SignatureError(
            f"bundle signed by key {claimed}, this edge trusts keys {trusted.describe()}",
            code="key_mismatch",
            field="key_id",
        )
    return key


def _claimed_key_id(manifest_bytes: bytes) -> str | None:
    """The key id an unverified manifest claims, used only to word an error."""
    try:
        claimed = json.loads(manifest_bytes.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    value = claimed.get("key_id") if isinstance(claimed, dict) else None
    return value if isinstance(value, str) and is_valid_key_id(value) else None


def _reject_unexpected_members(members: Mapping[str, zipfile.ZipInfo], manifest: Manifest) -> None:
    expected = {MANIFEST_MEMBER, SIGNATURE_MEMBER} | {PART_PREFIX + n for n in manifest.parts}
    unexpected = sorted(set(members) - expected)
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise BundleError(
            f"member {unexpected[0]!r} is not listed in the manifest{more}",
            code="unexpected_member",
        )


def _read_part(
    archive: zipfile.ZipFile,
    members: Mapping[str, zipfile.ZipInfo],
    name: str,
    declared: PartInfo,
) -> bytes:
    field = f"parts.{name}"
    info = members.get(PART_PREFIX + name)
    if info is None:
        raise PartError(
            f"part {name!r} is listed in the manifest but missing from the bundle",
            code="missing_part",
            field=field,
        )
    if info.file_size != declared.size:
        raise PartError(
            f"part {name!r} unpacks to {info.file_size} bytes but the manifest declares "
            f"{declared.size}; it was not unpacked",
            code="part_size_mismatch",
            field=field,
        )
    try:
        blob = _read_member(archive, info, declared.size)
    except _ZIP_ERRORS as exc:
        raise PartError(
            f"part {name!r} could not be unpacked: {exc}", code="part_unreadable", field=field
        ) from exc
    if len(blob) != declared.size:
        raise PartError(
            f"part {name!r} holds {len(blob)} bytes but the manifest declares {declared.size}",
            code="part_size_mismatch",
            field=field,
        )
    digest = hashlib.sha256(blob).hexdigest()
    if digest != declared.sha256:
        raise PartError(
            f"part {name!r} has sha256 {digest}, the manifest declares {declared.sha256}",
            code="part_hash_mismatch",
            field=field,
        )
    return blob
