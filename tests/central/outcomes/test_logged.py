"""Logged answers read back from a lake and replayed through a real trained bundle."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from central.datasets import read_log
from central.keys import write_keypair
from central.outcomes.errors import LoggedDataError, OutcomesError
from central.outcomes.logged import read_logged, replay_slates
from central.outcomes.ope import estimate
from central.trainer.pipeline import TrainerConfig, train_bundle
from devtools.loggen import GeneratorConfig, generate_file
from protocol.answers import ServedAnswer, served_event
from protocol.bundle import read_bundle
from protocol.events import Event
from protocol.exploration import ExplorationPolicy, explore
from protocol.keys import load_public_key
from protocol.serving import ServingModel
from protocol.window import SessionWindow
from tests.central.outcomes.lakes import write_lake

K = 10


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    root = tmp_path_factory.mktemp("logged")
    log_path = root / "shop.csv"
    generate_file(log_path, GeneratorConfig(sessions=500, items=300, categories=6, seed=5, days=6))
    log, _ = read_log(log_path, "csv")
    private, public = write_keypair(root)
    trained = train_bundle(
        log,
        TrainerConfig(folds=3, max_positions=1_500, max_validation_positions=200),
        version=3,
        private_key_pem=private.read_bytes(),
    )
    bundle = read_bundle(trained.bundle, load_public_key(public.read_bytes()))
    return ServingModel.from_bundle(bundle)


def _served_log(
    model: ServingModel, sessions: int, seed: int
) -> tuple[list[Event], dict[str, tuple[str, ...]]]:
    """Sessions that view a few items, each view answered by ``model`` with exploration."""
    rng = random.Random(seed)
    items = list(model.tables.item_ids)
    policy = ExplorationPolicy(rate=0.25, slots=3, pool=10)
    events: list[Event] = []
    heads: dict[str, tuple[str, ...]] = {}
    serial = 0
    for index in range(sessions):
        session = f"s{index}"
        window = SessionWindow(session, model.window_config)
        ts = 1_760_000_000_000 + index * 600_000
        for step in range(3):
            serial += 1
            view = Event(f"evt{serial:08d}", session, "view", ts, item_id=rng.choice(items))
            window.add(view)
            events.append(view)
            ts += 5_000
            ranking = model.rank(window, K + policy.pool, ts)
            ranked = [model.tables.item_ids[int(code)] for code in ranking.items]
            shown = explore(ranked, K, policy, rng)
            request = f"r{index}x{step}"
            heads[request] = tuple(ranked[:K])
            serial += 1
            record = served_event(
                ServedAnswer(
                    request,
                    session,
                    ts,
                    shown.items,
                    shown.propensities,
                    "stable",
                    model.version,
                    "tail",
                ),
                f"evt{serial:08d}",
            )
            events.append(dataclasses.replace(record, region="eu"))
            if rng.random() < 0.3:
                serial += 1
                click = Event(f"evt{serial:08d}", session, "click", ts + 1_000,
                              item_id=shown.items[0], request_id=request)  # fmt: skip
                window.add(click)
                events.append(click)
            ts += 20_000
    return events, heads


def test_replay_through_the_lake_reproduces_what_the_model_ranked(
    model: ServingModel, tmp_path: Path
) -> None:
    events, heads = _served_log(model, 60, seed=2)
    layout = write_lake(tmp_path / "lake", events)
    logged = read_logged(layout.data_files())
    assert len(logged.serves) == len(heads)
    clicks = sum(sum(answer.rewards) for answer in logged.answers)
    assert clicks == sum(1 for event in events if event.type == "click")
    slates = replay_slates(model, logged)
    assert slates == {request: list(head) for request, head in heads.items()}
    value = estimate(logged.answers, slates, "snips")
    assert value.estimate > 0


def test_a_lake_without_files_or_with_bad_propensities_is_refused(
    model: ServingModel, tmp_path: Path
) -> None:
    with pytest.raises(OutcomesError, match="no data files"):
        read_logged([])
    events, _ = _served_log(model, 1, seed=1)
    broken = [
        dataclasses.replace(e, context={**e.context, "propensities": "2,1"})
        if e.context and "propensities" in e.context else e
        for e in events
    ]  # fmt: skip
    layout = write_lake(tmp_path / "bad", broken)
    with pytest.raises(LoggedDataError, match="propensities"):
        read_logged(layout.data_files())
