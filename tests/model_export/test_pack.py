from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from model_export.pack import pack_bundle, write_bundle_file
from protocol.bundle import read_bundle
from protocol.errors import KeyFileError
from protocol.keys import generate_keypair, key_id, load_public_key

PRIVATE_PEM, PUBLIC_PEM = generate_keypair()
PARTS = {"ranker.fp32.onnx": b"onnx-bytes" * 20, "tables/popularity.npy": b"\x93NUMPY" * 10}


def pack(**overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "version": 3,
        "ranker": {"serve": "ranker.fp32.onnx", "fp32": "ranker.fp32.onnx", "int8": None,
                   "precision": "fp32", "quantized_operators": []},
        "metrics": {"ndcg@20": 0.25},
        "config": {"candidates": 200},
        "training": {"sessions": 10},
        "rules_version": None,
        "feature_schema_version": 1,
        "private_key_pem": PRIVATE_PEM,
        "created_at": datetime(2025, 1, 1, tzinfo=UTC),
    }
    arguments.update(overrides)
    return pack_bundle(PARTS, **arguments)


def test_packed_bundle_reads_back_with_the_public_key() -> None:
    public_key = load_public_key(PUBLIC_PEM)
    bundle = read_bundle(pack(), public_key)
    assert dict(bundle.parts) == PARTS
    assert bundle.manifest.version == 3
    assert bundle.manifest.key_id == key_id(public_key)
    assert bundle.manifest.rules_version is None


def test_packing_is_deterministic() -> None:
    assert pack() == pack()


def test_bad_private_key_is_a_key_file_error() -> None:
    with pytest.raises(KeyFileError):
        pack(private_key_pem=PUBLIC_PEM)
    with pytest.raises(KeyFileError):
        pack(private_key_pem=b"not a key")


def test_write_bundle_file_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "bundle-3.zip"
    write_bundle_file(target, b"old bundle")
    write_bundle_file(target, pack())
    assert read_bundle(target.read_bytes(), load_public_key(PUBLIC_PEM)).manifest.version == 3
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["bundle-3.zip"]


def test_failed_write_leaves_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "bundle.zip"
    write_bundle_file(target, b"old bundle")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_bundle_file(target, b"new bundle")
    assert target.read_bytes() == b"old bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.zip"]
