"""Rules pushed through the ``proxima-rules`` KV, watched and swapped in without a restart.

The bucket holds each pushed document under ``doc.<version>`` (the bytes as pushed, never
changed once written) and one pointer, ``active``: ``{"version", "history", "updated_at"}``,
the version every edge should apply and the versions pushed, oldest first (what ``proxima
rules rollback`` steps back through). ``proxima rules push`` checks a document with this
edge's own parser before it writes anything.

:class:`RulesSync` is a :class:`~runtime.supervisor.BusListener`: on every connection it
watches ``active``; each new pointer's document is fetched and parsed, and only a document
that parses replaces the rules served (``on_rules``). A bad or missing one is refused,
counted and reported, and the last good rules stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import nats.errors
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from edge_node.rules.engine import RuleSet
from edge_node.rules.errors import RulesError
from protocol.subjects import RULES_BUCKET
from runtime.backoff import Backoff
from runtime.service import Lifecycle
from runtime.supervisor import BusConnection, BusListener, BusSupervisor, describe_error

log = logging.getLogger("proxima.edge.rules")

ACTIVE_KEY: Final = "active"
DOC_PREFIX: Final = "doc."
MAX_HISTORY: Final = 50
RULES_HISTORY: Final = 5
_VERSION: Final = re.compile(r"[A-Za-z0-9_-]([A-Za-z0-9._-]{0,62}[A-Za-z0-9_-])?")
_WATCHER_STOP_S: Final = 1.0


def doc_key(version: str) -> str:
    """The KV key of a rules document; versions usable as keys only (no leading/trailing dot,
    no ``..``)."""
    if not _VERSION.fullmatch(version) or ".." in version:
        raise RulesError(
            f"rules version {version[:64]!r} cannot be pushed: use 1-64 letters, digits, '.', "
            "'_' or '-', neither starting nor ending with '.', without '..'",
            code="bad_version",
            path="version",
        )
    return DOC_PREFIX + version


@dataclass(frozen=True, slots=True)
class ActiveRules:
    version: str
    history: tuple[str, ...] = field(default=())
    updated_at: int = 0
    by: str | None = None  # the operator who pushed or rolled back, as the credential says
    by_via: str | None = None  # how that name was known (nats-user, nats-creds, flag, os-user)

    def encode(self) -> bytes:
        body: dict[str, object] = {
            "version": self.version,
            "history": list(self.history),
            "updated_at": self.updated_at,
        }
        if self.by is not None:
            body["by"] = self.by
            body["by_via"] = self.by_via
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ActiveRules:
        try:
            raw = json.loads(data)
            version, history = raw["version"], raw.get("history", [])
            if not isinstance(version, str) or not all(isinstance(v, str) for v in history):
                raise TypeError("versions must be strings")
            by, by_via = raw.get("by"), raw.get("by_via")
            if not all(v is None or isinstance(v, str) for v in (by, by_via)):
                raise TypeError("by and by_via must be strings")
            return cls(version, tuple(history), int(raw.get("updated_at", 0)), by, by_via)
        except (ValueError, KeyError, TypeError) as exc:
            raise RulesError(
                f"the active rules pointer is malformed: {exc}", code="bad_pointer"
            ) from exc


@dataclass(frozen=True, slots=True)
class RulesSyncStatus:
    version: str | None  # of the rules served from the bus, None while none came
    wanted: str | None  # the version the pointer names
    refused: tuple[str, ...]
    last_error: str | None


class RulesSync(BusListener):
    def __init__(
        self,
        bus: BusSupervisor,
        on_rules: Callable[[RuleSet], None],
        *,
        bucket: str = RULES_BUCKET,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.on_rules = on_rules
        self.bucket = bucket
        self._retry = (retry_initial_s, retry_max_s)
        self._lifecycle = Lifecycle("the rules sync")
        self._watch: asyncio.Task[None] | None = None
        self._version: str | None = None
        self._wanted: str | None = None
        self._refused: dict[str, str] = {}
        self._last_error: str | None = None

    @property
    def status(self) -> RulesSyncStatus:
        return RulesSyncStatus(
            self._version, self._wanted, tuple(sorted(self._refused)), self._last_error
        )

    async def start(self) -> None:
        self._lifecycle.begin_start()
        self.bus.attach(self)

    async def close(self, timeout_s: float = 5.0) -> None:
        if not self._lifecycle.begin_close():
            await self._lifecycle.closed.wait()
            return
        self.bus.detach(self)
        await self._stop_watching()
        self._lifecycle.finish_close()

    async def bus_connected(self, connection: BusConnection) -> None:
        if not self._lifecycle.running:
            return
        await self._stop_watching()
        self._watch = asyncio.create_task(self._keep_watching(connection), name="rules-watch")

    async def bus_lost(self) -> None:
        await self._stop_watching()

    async def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _keep_watching(self, connection: BusConnection) -> None:
        backoff = Backoff(*self._retry)
        while connection.usable:
            try:
                kv = await connection.jetstream().key_value(self.bucket)
                watcher: Any = await kv.watch(ACTIVE_KEY)
            except BucketNotFoundError:
                pass  # no rules pushed yet: the rules the edge started with stay
            except Exception as exc:
                self._note(f"watching the rules failed: {describe_error(exc)}")
            else:
                backoff.reset()
                try:
                    await self._follow(kv, watcher)
                    continue
                except Exception as exc:
                    self._note(f"the rules watch failed: {describe_error(exc)}")
            await backoff.sleep(connection.lost)

    async def _follow(self, kv: KeyValue, watcher: Any) -> None:
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=60.0)
                except nats.errors.TimeoutError:
                    continue
                if entry is None:
                    continue
                if not isinstance(entry, KeyValue.Entry):
                    return
                if entry.operation in (KV_DEL, KV_PURGE) or entry.value is None:
                    continue  # the pointer went: keep serving what is served
                await self._apply(kv, entry.value)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watcher.stop(), _WATCHER_STOP_S)

    async def _apply(self, kv: KeyValue, pointer: bytes) -> None:
        try:
            active = ActiveRules.decode(pointer)
        except RulesError as exc:
            self._note(f"{exc}; keeping rules {self._version}")
            return
        self._wanted = active.version
        if active.version == self._version:
            return
        try:
            entry = await kv.get(doc_key(active.version))
            if entry.value is None:
                raise KeyNotFoundError
            rules = RuleSet.parse(entry.value)
            if rules.version != active.version:
                raise RulesError(
                    f"the document under {active.version} says version {rules.version}",
                    code="version_mismatch",
                )
        except KeyNotFoundError:
            self._refuse(active.version, "its document is not in the bucket")
            return
        except RulesError as exc:
            self._refuse(active.version, str(exc))
            return
        self.on_rules(rules)
        self._version = active.version
        self._refused.pop(active.version, None)
        log.info("rules %s swapped in", active.version)

    def _refuse(self, version: str, why: str) -> None:
        self._refused[version] = why
        self._note(f"refused rules {version}: {why}; keeping rules {self._version}")

    def _note(self, message: str) -> None:
        self._last_error = message
        log.warning("%s", message)
