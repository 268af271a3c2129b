"""Declarative rules on top of the ranker: conditions on the session and the request,
actions on the ranked answer (boost, bury, pin, filter, inject, attach an offer).

The language is described in ``docs/rules.md``. ``RuleSet.parse`` validates and compiles a
document once; ``RuleSet.apply`` runs on every request.
"""

from __future__ import annotations

from edge_node.rules.engine import RuleOutcome, RuleRequest, RuleSet
from edge_node.rules.errors import RulesError
from edge_node.rules.evaluation import Catalog

__all__ = ["Catalog", "RuleOutcome", "RuleRequest", "RuleSet", "RulesError"]
