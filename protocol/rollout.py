"""The rollout record: which bundle each region serves, as kept in the ``proxima-rollout`` KV.

Key ``<region>``; value a JSON object ``{stable, canary, canary_percent, rules_version,
step, updated_at, shadow, by, rollback, key_id, signature}`` (the last five may be absent:
``shadow`` and ``rollback`` false, the others null). Edges watch their region's key, so a
change is pushed, not polled.
Sessions are assigned to the canary by a stable hash of their id, so a session never
flips between variants while the percentage holds.

``step`` grows by one with every record written for a region: it is the record's monotonic
counter. ``by`` names who wrote it (an operator, or the controller). A record may be
signed (:meth:`RolloutState.signed`) with an operator's or the controller's Ed25519 key:
``signature`` covers every other field, ``key_id`` included, and the region the record is
written for, so a record signed for one region's key does not verify under another's. An
edge that requires signed records refuses unsigned ones, ones older (lower ``step``) than
the last it accepted, and a stable version below its version floor unless ``rollback``
asks for it (see :func:`admit`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.errors import ProtocolError
from protocol.keys import TrustedKeys, is_key_id, key_id

Variant = Literal["stable", "canary"]


class RolloutError(ProtocolError):
    code = "bad_rollout"


MAX_BY_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class RolloutState:
    stable: int | None
    canary: int | None = None
    canary_percent: int = 0
    rules_version: str | None = None
    step: int = 0
    updated_at: str = ""
    shadow: bool = False  # score the canary on live requests without serving it
    by: str | None = None  # who wrote the record: an operator, or "controller"
    rollback: bool = False  # an explicit return to an older stable bundle
    key_id: str | None = None  # of the key that signed the record
    signature: str | None = None  # base64 Ed25519 signature of signed_bytes()

    def __post_init__(self) -> None:
        for name in ("stable", "canary"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise RolloutError(f"{name} must be a positive bundle version or null", field=name)
        if isinstance(self.canary_percent, bool) or not isinstance(self.canary_percent, int):
            raise RolloutError("canary_percent must be an integer", field="canary_percent")
        if not 0 <= self.canary_percent <= 100:
            raise RolloutError("canary_percent must be 0-100", field="canary_percent")
        if self.canary is None and self.canary_percent:
            raise RolloutError("canary_percent needs a canary version", field="canary_percent")
        if self.rules_version is not None and not isinstance(self.rules_version, str):
            raise RolloutError("rules_version must be a string or null", field="rules_version")
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 0:
            raise RolloutError("step must be a non-negative integer", field="step")
        if not isinstance(self.updated_at, str):
            raise RolloutError("updated_at must be a string", field="updated_at")
        if not isinstance(self.shadow, bool):
            raise RolloutError("shadow must be true or false", field="shadow")
        if self.shadow and self.canary is None:
            raise RolloutError("shadow needs a canary version", field="shadow")
        if self.by is not None and (not isinstance(self.by, str) or len(self.by) > MAX_BY_CHARS):
            raise RolloutError(f"by must be null or at most {MAX_BY_CHARS} characters", field="by")
        if not isinstance(self.rollback, bool):
            raise RolloutError("rollback must be true or false", field="rollback")
        if self.rollback and self.stable is None:
            raise RolloutError("rollback needs a stable version", field="rollback")
        if self.key_id is not None and not is_key_id(self.key_id):
            raise RolloutError("key_id must be 16 lowercase hex characters", field="key_id")
        if (self.signature is None) != (self.key_id is None):
            raise RolloutError("signature and key_id go together", field="signature")
        if self.signature is not None and not isinstance(self.signature, str):
            raise RolloutError("signature must be a base64 string", field="signature")

    def signed_bytes(self, region: str) -> bytes:
        """What the signature covers: the canonical record without its signature, and the
        region it is for."""
        return _signed_payload(asdict(self), region)

    def signed(self, private_key: Ed25519PrivateKey, *, region: str) -> RolloutState:
        fields = asdict(self) | {"key_id": key_id(private_key.public_key())}
        payload = _signed_payload(fields, region)
        signature = base64.b64encode(private_key.sign(payload)).decode("ascii")
        return RolloutState(**(fields | {"signature": signature}))

    def verify(self, keys: TrustedKeys, *, region: str) -> None:
        """Raises :class:`RolloutError` unless a trusted, unrevoked key signed this record."""
        if self.signature is None or self.key_id is None:
            raise RolloutError("the rollout record is not signed", code="unsigned_rollout")
        if self.key_id in keys.revoked:
            raise RolloutError(
                f"the rollout record is signed by revoked key {self.key_id}", code="key_revoked"
            )
        key = keys.get(self.key_id)
        if key is None:
            raise RolloutError(
                f"the rollout record is signed by key {self.key_id}; trusted: {keys.describe()}",
                code="unknown_rollout_key",
            )
        try:
            signature = base64.b64decode(self.signature, validate=True)
            key.verify(signature, self.signed_bytes(region))
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            raise RolloutError(
                "the rollout record's signature does not verify: it was altered, or "
                f"signed for another region than {region}",
                code="bad_rollout_signature",
            ) from exc

    def versions(self) -> set[int]:
        return {v for v in (self.stable, self.canary) if v is not None}

    def variant_of(self, session_id: str) -> Variant:
        if self.canary is None or self.canary_percent == 0:
            return "stable"
        return "canary" if session_bucket(session_id) < self.canary_percent else "stable"

    def version_for(self, session_id: str) -> int | None:
        return self.canary if self.variant_of(session_id) == "canary" else self.stable

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> RolloutState:
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise RolloutError("rollout record is not valid JSON") from exc
        if not isinstance(raw, dict):
            raise RolloutError("rollout record must be a JSON object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise RolloutError(f"rollout record has unknown keys: {sorted(unknown)}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise RolloutError(f"rollout record is incomplete: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Floor:
    """What an edge requiring signed records has accepted: the last counter and the lowest
    stable version it may go to without an explicit rollback."""

    step: int = -1
    version: int = 0


def _signed_payload(fields: dict[str, Any], region: str) -> bytes:
    signed = {name: value for name, value in fields.items() if name != "signature"}
    signed["region"] = region
    return json.dumps(signed, separators=(",", ":"), sort_keys=True).encode()


def admit(record: RolloutState, keys: TrustedKeys, floor: Floor, *, region: str) -> Floor:
    """Checks ``record`` as an edge that requires signed records; returns the new floor.

    Refused (:class:`RolloutError`): unsigned or not verifying (see :meth:`verify`), a
    counter below the last accepted (``stale_rollout``: a replayed old record), a stable
    version below the floor without ``rollback`` (``below_version_floor``).
    """
    record.verify(keys, region=region)
    if record.step < floor.step:
        raise RolloutError(
            f"rollout record step {record.step} is older than step {floor.step} already "
            "applied (a replayed record)",
            code="stale_rollout",
        )
    stable = record.stable
    if stable is None:
        return Floor(record.step, floor.version)
    if record.rollback:
        return Floor(record.step, stable)
    if stable < floor.version:
        raise RolloutError(
            f"rollout record names stable bundle {stable}, below this edge's floor "
            f"{floor.version}; only a signed rollback record may go back",
            code="below_version_floor",
        )
    return Floor(record.step, max(floor.version, stable))


def session_bucket(session_id: str) -> int:
    """0-99, stable for a session id across processes and restarts."""
    digest = hashlib.blake2b(session_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def promote(
    version: int, *, rules_version: str | None = None, previous: RolloutState | None = None
) -> RolloutState:
    """A record that serves ``version`` to everyone (no canary)."""
    step = (previous.step + 1) if previous is not None else 0
    return RolloutState(
        stable=version, rules_version=rules_version, step=step, updated_at=now_iso()
    )


def to_dict(state: RolloutState) -> dict[str, Any]:
    return asdict(state)
