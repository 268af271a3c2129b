"""The bundle an edge serves: verified, warmed up, swapped in atomically.

Requests read :attr:`ModelStore.current` once and use that model to the end, so a swap
in the middle of a request never mixes two bundles. A bundle that fails any check is
refused with its reason recorded, and the current one stays.
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
from protocol.serving import RankCache, ServingModel
from protocol.window import SessionWindow

log = logging.getLogger("proxima.edge.models")


@dataclass(frozen=True, slots=True)
class Refusal:
    source: str
    code: str
    message: str
    at: float


class ModelStore:
    def __init__(self, public_key: Ed25519PublicKey, *, rank_cache_sessions: int = 0) -> None:
        self.public_key = public_key
        self.rank_cache_sessions = rank_cache_sessions
        self.current: ServingModel | None = None
        self.loaded_at: float | None = None
        self.stale = False  # serving a cached bundle while the bus is unreachable
        self.last_refusal: Refusal | None = None
        self.refusals = 0
        self.swaps = 0

    @property
    def ready(self) -> bool:
        return self.current is not None

    def load_bytes(self, data: bytes, source: str) -> ServingModel:
        """Verifies and warms up a bundle, then swaps it in. Raises ProtocolError if refused."""
        try:
            model = ServingModel.from_bundle(read_bundle(data, self.public_key))
            if self.rank_cache_sessions:
                model = dataclasses.replace(model, cache=RankCache(self.rank_cache_sessions))
            _warm_up(model)
        except ProtocolError as exc:
            self.refusals += 1
            self.last_refusal = Refusal(source, exc.code, exc.message, time.time())
            log.error("refused bundle from %s: %s [%s]", source, exc.message, exc.code)
            raise
        self.current = model
        self.loaded_at = time.time()
        self.swaps += 1
        log.info("serving bundle version %d (%s) from %s", model.version, model.precision, source)
        return model

    def load_file(self, path: Path) -> ServingModel:
        return self.load_bytes(path.read_bytes(), str(path))


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
        model.rank(window, 20)
