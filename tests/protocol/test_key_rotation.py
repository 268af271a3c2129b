"""Several trusted keys, revocation, and signed rollout records with a version floor."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.bundle import build_bundle, read_bundle
from protocol.errors import KeyFileError, SignatureError
from protocol.keys import TrustedKeys, key_id
from protocol.rollout import Floor, RolloutError, RolloutState, admit

OLD = Ed25519PrivateKey.generate()
NEW = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def bundle(private_key: Ed25519PrivateKey, version: int = 3) -> bytes:
    return build_bundle(
        version=version,
        feature_schema_version=1,
        ranker={"fp32": "r.onnx", "precision": "fp32"},
        metrics={},
        rules_version=None,
        config={},
        training={},
        parts={"r.onnx": b"model"},
        private_key=private_key,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_an_edge_trusting_both_keys_takes_bundles_of_either_during_a_rotation() -> None:
    both = TrustedKeys.of([OLD.public_key(), NEW.public_key()])
    for private_key in (OLD, NEW):
        manifest = read_bundle(bundle(private_key), both).manifest
        assert manifest.key_id == key_id(private_key.public_key())
    with pytest.raises(SignatureError) as refused:
        read_bundle(bundle(STRANGER), both)
    assert refused.value.code == "key_mismatch"
    assert key_id(OLD.public_key()) in refused.value.message  # names what it trusts


def test_a_revoked_key_is_refused_with_its_own_code_even_while_listed() -> None:
    revoked = key_id(OLD.public_key())
    keys = TrustedKeys.of([OLD.public_key(), NEW.public_key()], revoked=[revoked])
    with pytest.raises(SignatureError) as refused:
        read_bundle(bundle(OLD), keys)
    assert refused.value.code == "key_revoked"
    assert read_bundle(bundle(NEW), keys).manifest.version == 3
    with pytest.raises(KeyFileError):
        TrustedKeys.of([NEW.public_key()], revoked=["not-a-key-id"])


def test_a_single_key_still_reads_as_before() -> None:
    assert read_bundle(bundle(NEW), NEW.public_key()).manifest.version == 3
    with pytest.raises(SignatureError) as refused:
        read_bundle(bundle(OLD), NEW.public_key())
    assert refused.value.code == "key_mismatch"


CONTROLLER_KEYS = TrustedKeys.of([NEW.public_key()])


def record(**fields: object) -> RolloutState:
    values: dict[str, object] = {"stable": 5, "step": 3, "by": "alice"}
    values.update(fields)
    return RolloutState(**values).signed(NEW, region="eu")  # type: ignore[arg-type]


def test_a_signed_record_verifies_and_round_trips() -> None:
    signed = record()
    decoded = RolloutState.decode(signed.encode())
    assert decoded == signed
    decoded.verify(CONTROLLER_KEYS, region="eu")
    with pytest.raises(RolloutError) as elsewhere:  # copied into another region's key
        decoded.verify(CONTROLLER_KEYS, region="us")
    assert elsewhere.value.code == "bad_rollout_signature"
    assert decoded.key_id == key_id(NEW.public_key())


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda r: replace(r, stable=4), "bad_rollout_signature"),
        (lambda r: replace(r, by="mallory"), "bad_rollout_signature"),
        (lambda r: replace(r, rollback=True), "bad_rollout_signature"),
        (lambda r: replace(r, signature=None, key_id=None), "unsigned_rollout"),
        (lambda r: replace(r, signature="!!!"), "bad_rollout_signature"),
        (lambda r: RolloutState(stable=5).signed(STRANGER, region="eu"), "unknown_rollout_key"),
    ],
)
def test_altered_or_unsigned_records_are_refused(tamper: object, code: str) -> None:
    altered = tamper(record())  # type: ignore[operator]
    with pytest.raises(RolloutError) as refused:
        admit(altered, CONTROLLER_KEYS, Floor(), region="eu")
    assert refused.value.code == code


def test_a_record_signed_by_a_revoked_key_is_refused() -> None:
    keys = TrustedKeys.of([NEW.public_key()], revoked=[key_id(NEW.public_key())])
    with pytest.raises(RolloutError) as refused:
        admit(record(), keys, Floor(), region="eu")
    assert refused.value.code == "key_revoked"


def test_the_floor_refuses_downgrades_and_replays_unless_a_signed_rollback_asks() -> None:
    floor = admit(record(stable=8, step=10), CONTROLLER_KEYS, Floor(version=7), region="eu")
    assert floor == Floor(10, 8)
    with pytest.raises(RolloutError) as refused:
        admit(record(stable=6, step=11), CONTROLLER_KEYS, floor, region="eu")
    assert refused.value.code == "below_version_floor"
    with pytest.raises(RolloutError) as replayed:
        admit(record(stable=9, step=9), CONTROLLER_KEYS, floor, region="eu")
    assert replayed.value.code == "stale_rollout"
    back = admit(record(stable=6, step=11, rollback=True), CONTROLLER_KEYS, floor, region="eu")
    assert back == Floor(11, 6)
    canary = record(stable=6, step=12, canary=9, canary_percent=5)
    assert admit(canary, CONTROLLER_KEYS, back, region="eu") == Floor(12, 6)
    # The rollback flag is signed: an old record cannot be made into one.
    forged = replace(record(stable=6, step=13), rollback=True)
    with pytest.raises(RolloutError):
        admit(forged, CONTROLLER_KEYS, floor, region="eu")


def test_records_without_the_new_fields_still_decode() -> None:
    old = json.dumps({"stable": 3, "canary": None, "canary_percent": 0, "rules_version": None,
                      "step": 1, "updated_at": ""}).encode()  # fmt: skip
    state = RolloutState.decode(old)
    assert (state.by, state.rollback, state.signature) == (None, False, None)
    with pytest.raises(RolloutError):
        RolloutState(stable=3, key_id="0" * 16)  # a key id without a signature
    assert base64.b64decode(record().signature or "")
