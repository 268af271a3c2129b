"""The compiled rule set the edge applies to every ranked answer.

A :class:`RuleSet` is built once per rules document: conditions become closures, actions
become steps, and the rules are grouped per slot in application order (priority, highest
first, then document order). Applying it to a request costs one check per rule; only
when a rule fires is there any work per candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edge_node.rules.actions import Plan, Step, compile_action
from edge_node.rules.conditions import compile_condition
from edge_node.rules.evaluation import Catalog, Check, Evaluation
from edge_node.rules.model import Rule, RulesDocument
from edge_node.rules.parse import parse_document
from protocol.window import SessionWindow


@dataclass(frozen=True, slots=True)
class RuleRequest:
    slot: str | None
    context: Mapping[str, str | int | float | bool | None]
    now_ms: int


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    items: list[str]
    scores: list[float]
    fired: list[str]  # ids of the rules whose condition held, in application order
    offers: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    id: str
    check: Check
    steps: tuple[Step, ...]


def _compile(rule: Rule) -> _CompiledRule:
    return _CompiledRule(
        rule.id,
        compile_condition(rule.when, need_items=rule.uses_bound_item),
        tuple(compile_action(action, rule.id) for action in rule.then),
    )


class RuleSet:
    """A compiled rules document; immutable and safe to share between requests."""

    __slots__ = ("_for_slot", "_without_slot", "document", "version")

    def __init__(self, document: RulesDocument) -> None:
        self.document = document
        self.version = document.version
        ranked = sorted(
            (rule for rule in document.rules if rule.enabled),
            key=lambda rule: -rule.priority,  # sorted() is stable: ties keep document order
        )
        compiled = [(rule.slots, _compile(rule)) for rule in ranked]
        self._without_slot = tuple(c for slots, c in compiled if slots is None)
        named = {slot for rule in ranked for slot in rule.slots or ()}
        self._for_slot = {
            slot: tuple(c for slots, c in compiled if slots is None or slot in slots)
            for slot in named
        }

    @classmethod
    def parse(cls, data: bytes, *, fmt: Literal["json", "yaml", "auto"] = "auto") -> RuleSet:
        """Parses and compiles a document; raises :class:`RulesError` naming any mistake.

        ``auto`` reads a document whose first character is ``{`` or ``[`` as JSON, any
        other as YAML.
        """
        return cls(parse_document(data, fmt))

    def rule_ids(self, slot: str | None = None) -> list[str]:
        """The enabled rules that apply to ``slot``, in application order."""
        return [rule.id for rule in self._rules_for(slot)]

    def _rules_for(self, slot: str | None) -> tuple[_CompiledRule, ...]:
        if slot is None:
            return self._without_slot
        return self._for_slot.get(slot, self._without_slot)

    def apply(
        self,
        items: Sequence[str],
        scores: Sequence[float],
        window: SessionWindow,
        request: RuleRequest,
        catalog: Catalog,
        k: int,
    ) -> RuleOutcome:
        """The top ``k`` of the ranked pool ``items`` (best first) after the fired rules."""
        if len(items) != len(scores):
            raise ValueError(f"{len(items)} items but {len(scores)} scores")
        if k < 0:
            raise ValueError(f"k must be >= 0, not {k}")
        fired: list[str] = []
        plan: Plan | None = None
        rules = self._rules_for(request.slot)
        if rules:
            ev = Evaluation(window, request.context, request.now_ms, catalog)
            for rule in rules:
                bound = rule.check(ev)
                if bound is None:
                    continue
                fired.append(rule.id)
                if plan is None:
                    plan = Plan(ev)
                for step in rule.steps:
                    step(plan, bound)
        if plan is None:
            head = list(items[:k])
            if len(set(head)) == len(head):
                return RuleOutcome(head, list(scores[:k]), fired, [])
            plan = Plan(Evaluation(window, request.context, request.now_ms, catalog))
        final, final_scores = plan.finish(items, scores, k)
        return RuleOutcome(final, final_scores, fired, plan.offers)
