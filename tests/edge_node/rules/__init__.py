"""Helpers shared by the rules tests: documents, windows, a catalog."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any, Final

from edge_node.rules import RuleRequest
from protocol.events import Event, EventType
from protocol.window import SessionWindow

MINUTE: Final = 60_000
NOW: Final = 1_700_000_000_000  # Tuesday 2023-11-14 22:13:20 UTC

_event_ids = itertools.count(1)


class FakeCatalog:
    def __init__(
        self,
        categories: Mapping[str, str] | None = None,
        prices: Mapping[str, float] | None = None,
    ) -> None:
        self.categories = dict(categories or {})
        self.prices = dict(prices or {})

    def category_of(self, item_id: str) -> str | None:
        return self.categories.get(item_id)

    def price_of(self, item_id: str) -> float | None:
        return self.prices.get(item_id)


def event(
    ts: int,
    type_: EventType,
    item: str | None = None,
    *,
    category: str | None = None,
    price: float | None = None,
) -> Event:
    return Event(
        event_id=f"evt-{next(_event_ids):08d}",
        session_id="sess-1",
        type=type_,
        ts=ts,
        item_id=item,
        query="shoes" if type_ == "search" else None,
        category=category,
        price=price,
    )


def window_of(*events: Event) -> SessionWindow:
    window = SessionWindow("sess-1")
    for one in events:
        window.add(one)
    return window


def rule(rule_id: str = "r", *, then: list[Any] | None = None, **keys: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": rule_id, **keys}
    body["then"] = then if then is not None else [{"offer": {"payload": {"kind": "note"}}}]
    return body


def document(*rules: dict[str, Any], version: str = "test-1") -> bytes:
    return json.dumps({"version": version, "rules": list(rules)}).encode()


def request(
    *, slot: str | None = None, now_ms: int = NOW, **context: str | int | float | bool | None
) -> RuleRequest:
    return RuleRequest(slot=slot, context=context, now_ms=now_ms)
