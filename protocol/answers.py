"""The served-answer record: what an edge showed, to whom, under which model and policy.

Outcomes can only be tied to the answer that led to them if the answer itself is on the
log. The edge writes one record per answer into the event stream, as an ``impression``
event of the session (DESIGN §2) marked ``context.source = "edge"`` — a page's own
impression events say what was actually rendered and carry no such mark. The context
keys (all scalars, as the event contract requires):

* ``variant`` — ``stable``, ``canary`` or ``holdout`` (the non-personalised share);
* ``bundle`` — the bundle version that ranked it (0 for the holdout's popularity list);
* ``policy`` — the exploration policy's name, ``none`` without exploration;
* ``propensities`` — for each shown item, in order, the probability the policy had of
  showing it in this answer, as comma-separated decimals (``1`` for a fixed position).

The item's position is its index in ``items``. :func:`served_event` builds the record,
:func:`read_served` reads one back and refuses a malformed one by field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from protocol.errors import EventError
from protocol.events import MAX_IMPRESSION_ITEMS, Event

ServedVariant = Literal["stable", "canary", "holdout"]
SERVED_VARIANTS: Final[tuple[ServedVariant, ...]] = get_args(ServedVariant)
SOURCE: Final = "edge"
_DIGITS: Final = 6


@dataclass(frozen=True, slots=True)
class ServedAnswer:
    request_id: str
    session_id: str
    ts: int
    items: tuple[str, ...]
    propensities: tuple[float, ...]
    variant: ServedVariant
    bundle: int
    policy: str
    region: str | None = None


def encode_propensities(propensities: Sequence[float]) -> str:
    return ",".join(_decimal(value) for value in propensities)


def _decimal(value: float) -> str:
    if value >= 1:
        return "1"
    text = f"{value:.{_DIGITS}f}".rstrip("0")
    return text if not text.endswith(".") else text + "0"


def decode_propensities(text: str, count: int) -> tuple[float, ...]:
    parts = text.split(",") if text else []
    if len(parts) != count:
        raise EventError(
            f"propensities has {len(parts)} values for {count} items",
            code="bad_propensities",
            field="context.propensities",
        )
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= 1):
            raise EventError(
                f"propensity {part[:16]!r} is not a number in (0, 1]",
                code="bad_propensities",
                field="context.propensities",
            )
        values.append(value)
    return tuple(values)


def served_event(answer: ServedAnswer, event_id: str) -> Event:
    """The record of ``answer`` as an event of its session."""
    if len(answer.items) != len(answer.propensities):
        raise EventError("one propensity per shown item", code="bad_propensities")
    shown = answer.items[:MAX_IMPRESSION_ITEMS]
    return Event(
        event_id=event_id,
        session_id=answer.session_id,
        type="impression",
        ts=answer.ts,
        items=shown,
        request_id=answer.request_id,
        context={
            "source": SOURCE,
            "variant": answer.variant,
            "bundle": answer.bundle,
            "policy": answer.policy,
            "propensities": encode_propensities(answer.propensities[: len(shown)]),
        },
    )


def is_served(event: Event) -> bool:
    return (
        event.type == "impression"
        and event.context is not None
        and event.context.get("source") == SOURCE
    )


def read_served(event: Event) -> ServedAnswer:
    """The served answer an edge's record describes; :class:`EventError` if malformed."""
    if not is_served(event) or event.context is None:
        raise EventError("not a served-answer record", code="not_served", field="context.source")
    context = event.context
    variant = context.get("variant")
    if variant not in SERVED_VARIANTS:
        raise EventError(
            f"variant must be one of {', '.join(SERVED_VARIANTS)}",
            code="bad_variant",
            field="context.variant",
        )
    bundle = context.get("bundle")
    if isinstance(bundle, bool) or not isinstance(bundle, int) or bundle < 0:
        raise EventError(
            "bundle must be a version number", code="bad_bundle", field="context.bundle"
        )
    policy = context.get("policy")
    propensities = context.get("propensities")
    if not isinstance(policy, str) or not isinstance(propensities, str):
        raise EventError(
            "policy and propensities must be strings", code="bad_propensities", field="context"
        )
    if event.request_id is None or not event.items:
        raise EventError("a served record names its request and items", code="missing_field")
    return ServedAnswer(
        request_id=event.request_id,
        session_id=event.session_id,
        ts=event.ts,
        items=event.items,
        propensities=decode_propensities(propensities, len(event.items)),
        variant=variant,
        bundle=bundle,
        policy=policy,
        region=event.region,
    )
