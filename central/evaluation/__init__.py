"""Offline evaluation: the split, the next-item replay and the baselines of EVALUATION.md."""

from __future__ import annotations

from central.evaluation.baselines import ItemKNN, Popularity, SessionKNN
from central.evaluation.replay import ReplayResult, SessionRecommender, evaluate
from central.evaluation.split import Split, prepare, validation_split

__all__ = [
    "ItemKNN",
    "Popularity",
    "ReplayResult",
    "SessionKNN",
    "SessionRecommender",
    "Split",
    "evaluate",
    "prepare",
    "validation_split",
]
