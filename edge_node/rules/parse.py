"""Rules documents (JSON or YAML) into :mod:`edge_node.rules.model` objects.

Documents and rules are checked here, conditions in :mod:`~edge_node.rules.parse_conditions`
and actions in :mod:`~edge_node.rules.parse_actions`. Every check names the path of the
offending value (``rules[3].when.all[1].events.within``) and says what is allowed; unknown
keys are errors, so a misspelt key cannot silently turn a condition off.
"""

from __future__ import annotations

import edge_node.rules.fields as f
from edge_node.rules.errors import RulesError
from edge_node.rules.model import (
    BOUND_ITEM,
    MAX_ACTIONS,
    MAX_DESCRIPTION_CHARS,
    MAX_PRIORITY,
    MAX_RULES,
    MAX_SLOTS,
    Always,
    Condition,
    Rule,
    RulesDocument,
    action_uses_bound_item,
    always_binds,
)
from edge_node.rules.parse_actions import parse_action
from edge_node.rules.parse_conditions import parse_condition
from edge_node.rules.source import Format, load_document


def parse_document(data: bytes, fmt: Format = "auto") -> RulesDocument:
    return document_from_data(load_document(data, fmt))


def document_from_data(raw: object) -> RulesDocument:
    """Validates already-loaded plain data (dicts, lists, scalars) as a rules document."""
    body = f.mapping(raw, "", "a rules document", ("version", "description", "rules"),
                     required=("version", "rules"))
    version = f.token(body["version"], "version", "version")
    description = _description(body, "")
    raw_rules = body["rules"]
    if raw_rules == []:
        return RulesDocument(version, description, ())
    entries = f.sequence(raw_rules, "rules", "rules", MAX_RULES)
    rules: list[Rule] = []
    first_use: dict[str, int] = {}
    for position, entry in enumerate(entries):
        path = f.index("rules", position)
        rule = _rule(entry, path)
        if rule.id in first_use:
            raise RulesError(
                f"rule id {rule.id!r} is already used by rules[{first_use[rule.id]}]",
                code="duplicate_id", path=f.join(path, "id"),
            )
        first_use[rule.id] = position
        rules.append(rule)
    return RulesDocument(version, description, tuple(rules))


def _description(body: dict[str, object], path: str) -> str | None:
    if "description" not in body:
        return None
    return f.text(body["description"], f.join(path, "description"), "a description",
                  MAX_DESCRIPTION_CHARS)


def _rule(raw: object, path: str) -> Rule:
    body = f.mapping(raw, path, "a rule",
                     ("id", "description", "priority", "enabled", "slots", "when", "then"),
                     required=("id", "then"))
    rule_id = f.token(body["id"], f.join(path, "id"), "a rule id")
    priority = 0
    if "priority" in body:
        priority = f.integer(body["priority"], f.join(path, "priority"), "priority",
                             -MAX_PRIORITY, MAX_PRIORITY)
    enabled = f.optional(body, path, "enabled", lambda v, at: f.flag(v, at, "enabled"))
    slots = None
    if "slots" in body:
        slots_path = f.join(path, "slots")
        entries = f.sequence(body["slots"], slots_path, "slots", MAX_SLOTS)
        names = [f.token(v, f.index(slots_path, i), "a slot name") for i, v in enumerate(entries)]
        f.unique(names, slots_path)
        slots = frozenset(names)
    when: Condition = Always()
    if "when" in body:
        when = parse_condition(body["when"], f.join(path, "when"))
    then_path = f.join(path, "then")
    raw_actions = f.sequence(body["then"], then_path, "then (the rule's actions)", MAX_ACTIONS)
    actions = tuple(parse_action(v, f.index(then_path, i)) for i, v in enumerate(raw_actions))
    if not always_binds(when):
        for position, action in enumerate(actions):
            if action_uses_bound_item(action):
                raise RulesError(
                    f"{BOUND_ITEM} is used but the rule's condition does not always bind an "
                    "item; bind it with an events condition with per_item: true (inside any, "
                    "every alternative must bind)",
                    code="unbound_item", path=f.index(then_path, position),
                )
    return Rule(
        rule_id, _description(body, path), priority, enabled is not False, slots, when, actions
    )
