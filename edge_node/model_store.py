"""The bundles an edge serves: verified, warmed up, swapped in atomically.

``current`` is the stable bundle. During a rollout a second, ``canary`` bundle is held
beside it with the share of sessions it answers (by a stable hash of the session id, so a
session never flips while the share holds), or in shadow mode, scored on live requests but
never served. Requests pick their model once, with :meth:`ModelStore.choose`, and use it to
the end, so a swap in the middle of a request never mixes two bundles. A bundle that fails
any check is refused with its reason recorded, and what is served stays.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol.bundle import read_bundle
from protocol.errors import ProtocolError
from protocol.events import Event
from protocol.keys import TrustedKeys
from protocol.rollout import Variant, session_bucket
from protocol.serving import RankCache, ServingModel
from protocol.window import SessionWindow

log = logging.getLogger("proxima.edge.models")


_REFUSALS_KEPT = 16


@dataclass(frozen=True, slots=True)
class Refusal:
    source: str
    code: str
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class Canary:
    model: ServingModel
    percent: int  # share of sessions answered by the canary, 0-100
    shadow: bool  # scored beside stable on live requests, never served


class ModelStore:
    def __init__(
        self, public_key: Ed25519PublicKey | TrustedKeys, *, rank_cache_sessions: int = 0
    ) -> None:
        self.public_key = public_key
        self.rank_cache_sessions = rank_cache_sessions
        self.current: ServingModel | None = None
        self.canary: Canary | None = None
        self.loaded_at: float | None = None
        self.stale = False  # serving a cached bundle while the bus is unreachable
        self.last_refusal: Refusal | None = None
        self.refused_versions: dict[int, Refusal] = {}  # the latest few, for telemetry
        self.refusals = 0
        self.swaps = 0

    @property
    def ready(self) -> bool:
        return self.current is not None

    def choose(self, session_id: str) -> tuple[ServingModel | None, Variant]:
        """The model that answers this session, and which variant it is."""
        canary = self.canary
        if (
            canary is not None
            and not canary.shadow
            and canary.percent > 0
            and session_bucket(session_id) < canary.percent
        ):
            return canary.model, "canary"
        return self.current, "stable"

    def verify(self, data: bytes, source: str) -> ServingModel:
        """Verifies and warms up a bundle without serving it. Raises ProtocolError if refused."""
        try:
            model = ServingModel.from_bundle(read_bundle(data, self.public_key))
            if self.rank_cache_sessions:
                model = dataclasses.replace(model, cache=RankCache(self.rank_cache_sessions))
            _warm_up(model)
        except ProtocolError as exc:
            self.note_refusal(Refusal(source, exc.code, exc.message, time.time()))
            raise
        return model

    def load_bytes(self, data: bytes, source: str) -> ServingModel:
        """Verifies and warms up a bundle, then serves it as stable."""
        model = self.verify(data, source)
        self.serve_stable(model, source)
        return model

    def load_file(self, path: Path) -> ServingModel:
        return self.load_bytes(path.read_bytes(), str(path))

    def serve_stable(self, model: ServingModel, source: str) -> None:
        self.current = model
        self.loaded_at = time.time()
        self.swaps += 1
        self.refused_versions.pop(model.version, None)
        log.info("serving bundle version %d (%s) from %s", model.version, model.precision, source)

    def set_canary(self, canary: Canary | None) -> None:
        previous, self.canary = self.canary, canary
        if canary is not None and (
            previous is None
            or (previous.model, previous.percent, previous.shadow)
            != (canary.model, canary.percent, canary.shadow)
        ):
            mode = "shadow" if canary.shadow else f"{canary.percent}% of sessions"
            log.info("canary bundle version %d: %s", canary.model.version, mode)
        elif canary is None and previous is not None:
            log.info("canary bundle version %d withdrawn", previous.model.version)

    def note_refusal(self, refusal: Refusal) -> None:
        self.refusals += 1
        self.last_refusal = refusal
        log.error("refused bundle from %s: %s [%s]", refusal.source, refusal.message, refusal.code)

    def remember_refused(self, version: int) -> None:
        """Ties the last refusal to the bundle version it was about (telemetry reports it)."""
        if self.last_refusal is None:
            return
        self.refused_versions.pop(version, None)
        self.refused_versions[version] = self.last_refusal
        while len(self.refused_versions) > _REFUSALS_KEPT:
            del self.refused_versions[next(iter(self.refused_versions))]


def _warm_up(model: ServingModel) -> None:
    """Runs a few rankings so the first real request does not pay ONNX Runtime's set-up."""
    items = model.tables.item_ids[:3]
    window = SessionWindow("warm-up", model.window_config)
    for n, item in enumerate(items):
        window.add(
            Event(
                event_id=f"warm-up-{n:04d}",
                session_id="warm-up",
                type="view",
                item_id=item,
                ts=n + 1,
            )
        )
    for _ in range(3):
        model.rank(window, 20, int(time.time() * 1000))
