"""How an answer is chosen besides the model: the holdout share and tail exploration.

* **Holdout.** A configurable share of sessions (by a hash of the session id, salted so
  it is independent of the canary's share) is answered without personalisation: the
  bundle's recent-popularity list, with rules and the catalog still applied. Lift is
  measured against it (:mod:`central.outcomes.report`). Its answers carry
  ``variant: "holdout"`` and request ids that edge telemetry does not count, so the
  canary guardrail compares canary and stable only.
* **Exploration.** :func:`protocol.exploration.explore` on the final list: the head is
  the model's, some tail positions show items from just below it, and every shown item
  carries the exact probability it had of being shown (logged for off-policy evaluation).
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from typing import Final

from protocol.exploration import ExplorationPolicy, ExploredAnswer, explore

_HOLDOUT_SALT: Final = b"proxima-holdout:"
_BUCKETS: Final = 10_000


def holdout_bucket(session_id: str) -> int:
    """0-9999, stable for a session across processes, independent of the canary bucket."""
    digest = hashlib.blake2b(
        _HOLDOUT_SALT + session_id.encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % _BUCKETS


def holdout_request_id() -> str:
    """An answer id telemetry will not verify (holdout feedback is counted centrally)."""
    return "h1." + os.urandom(9).hex()


@dataclass(slots=True)
class AnswerPolicy:
    holdout_percent: float = 0.0
    exploration: ExplorationPolicy = field(default_factory=ExplorationPolicy)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def name(self) -> str:
        if not self.exploration.enabled:
            return "none"
        policy = self.exploration
        return f"tail-r{policy.rate:g}-s{policy.slots}-p{policy.pool}"

    def in_holdout(self, session_id: str) -> bool:
        return (
            self.holdout_percent > 0
            and holdout_bucket(session_id) < self.holdout_percent * _BUCKETS / 100
        )

    def depth(self, k: int) -> int:
        """How many ranked items the answer needs to choose ``k`` from."""
        return k + self.exploration.pool if self.exploration.enabled else k

    def choose(self, ranked: list[str], k: int) -> ExploredAnswer:
        return explore(ranked, k, self.exploration, self.rng)
