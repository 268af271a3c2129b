"""The rollout record: which bundle each region serves, as kept in the ``proxima-rollout`` KV.

Key ``<region>``; value a JSON object ``{stable, canary, canary_percent, rules_version,
step, updated_at, shadow}`` (``shadow`` may be absent: false). Edges watch their region's
key, so a change is pushed, not polled.
Sessions are assigned to the canary by a stable hash of their id, so a session never
flips between variants while the percentage holds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from protocol.errors import ProtocolError

Variant = Literal["stable", "canary"]


class RolloutError(ProtocolError):
    code = "bad_rollout"


@dataclass(frozen=True, slots=True)
class RolloutState:
    stable: int | None
    canary: int | None = None
    canary_percent: int = 0
    rules_version: str | None = None
    step: int = 0
    updated_at: str = ""
    shadow: bool = False  # score the canary on live requests without serving it

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
