"""``proxima keys rotate|list|id``: a new signing pair, the old one kept and named by id."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from central.cli import main
from central.keys import rotate_keypair, write_keypair
from model_export.pack import pack_bundle
from protocol.bundle import read_bundle
from protocol.errors import KeyFileError, SignatureError
from protocol.keys import (
    PRIVATE_KEY_FILENAME,
    PUBLIC_KEY_FILENAME,
    TrustedKeys,
    key_id,
    load_private_key,
    load_public_key,
)


def signed_with(private: Path) -> bytes:
    return pack_bundle(
        {"r.onnx": b"model"},
        version=4,
        ranker={"fp32": "r.onnx", "precision": "fp32"},
        metrics={},
        config={},
        training={},
        rules_version=None,
        feature_schema_version=1,
        private_key_pem=private.read_bytes(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_rotation_signs_with_the_new_key_and_edges_trusting_both_accept_either(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    generated = runner.invoke(main, ["keys", "generate", "--out", str(tmp_path)])
    assert generated.exit_code == 0, generated.output
    old_public = load_public_key((tmp_path / PUBLIC_KEY_FILENAME).read_bytes())
    old_id = key_id(old_public)
    assert f"key id:      {old_id}" in generated.output
    old_bundle = signed_with(tmp_path / PRIVATE_KEY_FILENAME)

    rotated = runner.invoke(main, ["keys", "rotate", "--dir", str(tmp_path)])
    assert rotated.exit_code == 0, rotated.output
    new_public = load_public_key((tmp_path / PUBLIC_KEY_FILENAME).read_bytes())
    new_id = key_id(new_public)
    assert new_id != old_id and f"new key {new_id}" in rotated.output
    retired = tmp_path / f"signing-{old_id}.key"
    assert stat.S_IMODE(retired.stat().st_mode) == 0o600
    assert key_id(load_private_key(retired.read_bytes()).public_key()) == old_id
    assert stat.S_IMODE((tmp_path / PRIVATE_KEY_FILENAME).stat().st_mode) == 0o600

    new_bundle = signed_with(tmp_path / PRIVATE_KEY_FILENAME)
    assert read_bundle(new_bundle, new_public).manifest.key_id == new_id
    both = TrustedKeys.of([new_public, old_public])
    assert read_bundle(old_bundle, both).manifest.key_id == old_id
    assert read_bundle(new_bundle, both).manifest.key_id == new_id
    revoked = TrustedKeys.of([new_public, old_public], revoked=[old_id])
    try:
        read_bundle(old_bundle, revoked)
    except SignatureError as exc:
        assert exc.code == "key_revoked"
    else:
        raise AssertionError("a bundle of a revoked key was read")

    listed = runner.invoke(main, ["keys", "list", "--dir", str(tmp_path)])
    assert listed.exit_code == 0
    assert old_id in listed.output and new_id in listed.output
    named = runner.invoke(main, ["keys", "id", str(retired)])
    assert named.output.startswith(old_id)


def test_rotation_without_a_pair_or_twice_keeps_every_key(tmp_path: Path) -> None:
    try:
        rotate_keypair(tmp_path)
    except KeyFileError as exc:
        assert exc.code == "key_missing"
    else:
        raise AssertionError("rotated nothing")
    result = CliRunner().invoke(main, ["keys", "rotate", "--dir", str(tmp_path / "none")])
    assert result.exit_code != 0 and "Traceback" not in result.output

    write_keypair(tmp_path)
    first = rotate_keypair(tmp_path)
    second = rotate_keypair(tmp_path)
    assert second.old_id == first.new_id
    assert {p.name for p in tmp_path.glob("signing-*.key")} == {
        f"signing-{first.old_id}.key",
        f"signing-{second.old_id}.key",
    }
