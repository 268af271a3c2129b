"""A small shop of themed items, two bundles of known quality, and answers logged in a lake.

Visitors have a theme; a shown item is clicked with 0.3 when it is of the visitor's theme
and 0.01 when not, so the bundle trained on the shop's sessions is truly better than the one
trained on scrambled item ids.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from central.datasets import read_log
from central.keys import write_keypair
from central.trainer.pipeline import TrainerConfig, train_bundle
from model_export.pack import write_bundle_file
from protocol.answers import ServedAnswer, served_event
from protocol.bundle import read_bundle
from protocol.events import Event
from protocol.exploration import ExplorationPolicy, explore
from protocol.keys import load_public_key
from protocol.serving import ServingModel
from protocol.window import SessionWindow
from tests.central.outcomes.lakes import write_lake

THEMES, PER_THEME, K = 8, 15, 8
ITEMS = [f"it{n:03d}" for n in range(THEMES * PER_THEME)]


def theme_of(item: str) -> int:
    return int(item[2:]) // PER_THEME


def training_log(path: Path, rng: random.Random, scramble: bool) -> None:
    mapping = dict(zip(ITEMS, rng.sample(ITEMS, len(ITEMS)), strict=True))
    with path.open("w") as out:
        out.write("session_id,item_id,timestamp\n")
        for n in range(1200):
            theme = rng.randrange(THEMES)
            ts = 1_767_225_600 + n * 60
            for _ in range(rng.randint(3, 6)):
                item = ITEMS[theme * PER_THEME + rng.randrange(PER_THEME)]
                out.write(f"t{n},{mapping[item] if scramble else item},{ts}\n")
                ts += 20


@dataclasses.dataclass(frozen=True)
class Trained:
    paths: dict[str, Path]
    models: dict[str, ServingModel]
    public_key: Path


def train_pair(root: Path) -> Trained:
    """A bundle trained on the shop's sessions (``good``, version 1) and one on the same
    sessions with the item ids scrambled (``bad``, version 2)."""
    root.mkdir(parents=True, exist_ok=True)
    private, public = write_keypair(root)
    rng = random.Random(3)
    paths, models = {}, {}
    for name, version, scramble in (("good", 1, False), ("bad", 2, True)):
        log_path = root / f"{name}.csv"
        training_log(log_path, rng, scramble)
        log, _ = read_log(log_path, "csv")
        result = train_bundle(
            log, TrainerConfig(folds=3, max_positions=1_500, max_validation_positions=200),
            version=version, private_key_pem=private.read_bytes(),
        )  # fmt: skip
        paths[name] = root / f"{name}.bundle"
        write_bundle_file(paths[name], result.bundle)
        models[name] = ServingModel.from_bundle(
            read_bundle(result.bundle, load_public_key(public.read_bytes()))
        )
    return Trained(paths, models, public)


def logged_lake(root: Path, model: ServingModel, sessions: int) -> Path:
    """Visitors of one theme each, answered by ``model`` with exploration; a shown item is
    clicked with 0.3 when it is of the visitor's theme, 0.01 when not."""
    rng = random.Random(11)
    policy = ExplorationPolicy(rate=0.4, slots=4, pool=20)
    events: list[Event] = []
    serial = 0
    for n in range(sessions):
        theme, session = rng.randrange(THEMES), f"v{n}"
        window = SessionWindow(session, model.window_config)
        ts = 1_780_000_000_000 + n * 100_000
        for step in range(3):
            serial += 1
            item = ITEMS[theme * PER_THEME + rng.randrange(PER_THEME)]
            view = Event(f"evt{serial:08d}", session, "view", ts, item_id=item)
            window.add(view)
            events.append(view)
            ts += 1_000
            ranked = [model.tables.item_ids[int(i)] for i in model.rank(window, K + 20, ts).items]
            shown = explore(ranked, K, policy, rng)
            request = f"r{n}x{step}"
            serial += 1
            events.append(served_event(
                ServedAnswer(request, session, ts, shown.items, shown.propensities, "stable",
                             model.version, "tail"), f"evt{serial:08d}"))  # fmt: skip
            for shown_item in shown.items:
                if rng.random() < (0.3 if theme_of(shown_item) == theme else 0.01):
                    serial += 1
                    click = Event(f"evt{serial:08d}", session, "click", ts + 500,
                                  item_id=shown_item, request_id=request)  # fmt: skip
                    window.add(click)
                    events.append(click)
            ts += 5_000
    write_lake(root, events)
    return root
