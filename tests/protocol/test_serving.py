from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

from central.datasets import read_log
from central.eventlog import EventLog
from central.trainer.pipeline import TrainerConfig, train_bundle
from devtools.loggen import GeneratorConfig, generate_file
from model_export.pack import pack_bundle
from protocol import candidates as candidate_generation
from protocol import features
from protocol.bundle import Bundle, read_bundle
from protocol.errors import ManifestError
from protocol.events import Event
from protocol.featurize import event_time
from protocol.keys import generate_keypair, load_public_key
from protocol.serving import ServingModel
from protocol.window import SessionWindow


@dataclass(frozen=True)
class Trained:
    log: EventLog
    bundle: Bundle
    private_pem: bytes
    public_pem: bytes


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    path = tmp_path_factory.mktemp("serving") / "log.csv"
    generate_file(path, GeneratorConfig(sessions=300, items=400, categories=10, seed=3))
    log, _ = read_log(path, "csv")
    private_pem, public_pem = generate_keypair()
    result = train_bundle(log, TrainerConfig(max_positions=1_500), version=5,
                          private_key_pem=private_pem)
    bundle = read_bundle(result.bundle, load_public_key(public_pem))
    return Trained(log, bundle, private_pem, public_pem)


def window_of_session(log: EventLog, run: int, events: int | None = None) -> SessionWindow:
    bounds = log.session_bounds()
    start, stop = int(bounds[run]), int(bounds[run + 1])
    if events is not None:
        stop = min(stop, start + events)
    window = SessionWindow(log.session_ids[int(log.session[start])])
    for row in range(start, stop):
        window.add(log.event(row))
    return window


def longest_runs(log: EventLog, count: int) -> list[int]:
    lengths = np.diff(log.session_bounds())
    return [int(run) for run in np.argsort(-lengths, kind="stable")[:count]]


def test_from_bundle_serves_the_precision_the_manifest_names(trained: Trained) -> None:
    model = ServingModel.from_bundle(trained.bundle)
    assert model.version == 5
    assert model.precision == trained.bundle.manifest.ranker["precision"]
    assert model.manifest is trained.bundle.manifest
    assert model.tables.n_items > 0
    for precision in ("fp32", "int8"):
        assert ServingModel.from_bundle(trained.bundle, precision).precision == precision


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_rank_orders_at_most_k_known_items_by_score(trained: Trained, precision: Any) -> None:
    model = ServingModel.from_bundle(trained.bundle, precision)
    for run in longest_runs(trained.log, 5):
        window = window_of_session(trained.log, run)
        ranking = model.rank(window, 20, event_time(window))
        assert not ranking.cold
        assert 0 < ranking.items.shape[0] <= 20
        assert ranking.items.shape == ranking.scores.shape
        assert np.unique(ranking.items).shape == ranking.items.shape
        assert ranking.items.min() >= 0
        assert ranking.items.max() < model.tables.n_items
        assert np.all(np.diff(ranking.scores) <= 0)
        assert np.all((ranking.scores >= 0) & (ranking.scores <= 1))
        assert min(ranking.candidates_s, ranking.features_s, ranking.inference_s) >= 0


def test_rank_gives_the_best_scored_candidates(trained: Trained) -> None:
    model = ServingModel.from_bundle(trained.bundle, "fp32")
    window = window_of_session(trained.log, longest_runs(trained.log, 1)[0])
    ranking = model.rank(window, 10, event_time(window))

    found = candidate_generation.generate(window, model.tables, model.candidate_config)
    scores = model.ranker.score(
        features.compute(window, found, model.tables, event_time(window))
    )
    assert ranking.scores[0] == pytest.approx(float(scores.max()))
    assert sorted(ranking.scores.tolist(), reverse=True) == pytest.approx(
        sorted(scores.tolist(), reverse=True)[:10]
    )
    chosen = set(ranking.items.tolist())
    assert chosen <= set(found.items.tolist())


def test_k_above_the_pool_size_returns_every_candidate(trained: Trained) -> None:
    model = ServingModel.from_bundle(trained.bundle, "fp32")
    window = window_of_session(trained.log, longest_runs(trained.log, 1)[0])
    pool = candidate_generation.generate(window, model.tables, model.candidate_config)
    ranking = model.rank(window, len(pool) + 50, event_time(window))
    assert sorted(ranking.items.tolist()) == sorted(pool.items.tolist())
    assert np.all(np.diff(ranking.scores) <= 0)


def test_k_of_one_gives_the_single_best(trained: Trained) -> None:
    model = ServingModel.from_bundle(trained.bundle, "fp32")
    window = window_of_session(trained.log, longest_runs(trained.log, 1)[0])
    best = model.rank(window, 1, event_time(window))
    assert best.items.shape == (1,)
    assert best.items[0] == model.rank(window, 20, event_time(window)).items[0]


def test_bought_items_are_not_recommended(trained: Trained) -> None:
    model = ServingModel.from_bundle(trained.bundle, "fp32")
    window = window_of_session(trained.log, longest_runs(trained.log, 1)[0])
    top = model.tables.item_ids[int(model.rank(window, 5, event_time(window)).items[0])]
    last_ts = window.last_ts or 0
    window.add(Event("bought-0001", window.session_id, "purchase", last_ts + 1_000, item_id=top))
    ranking = model.rank(window, 50, event_time(window))
    assert top not in {model.tables.item_ids[int(i)] for i in ranking.items}


@pytest.mark.parametrize("item", [None, "never-seen-item"])
def test_a_cold_session_gets_recent_popularity(trained: Trained, item: str | None) -> None:
    model = ServingModel.from_bundle(trained.bundle)
    window = SessionWindow("cold")
    if item is not None:
        window.add(Event("cold-0001", "cold", "view", 1_000, item_id=item))
    ranking = model.rank(window, 15, event_time(window))
    assert ranking.cold
    np.testing.assert_array_equal(ranking.items, model.tables.recent_order[:15])
    np.testing.assert_array_equal(ranking.scores, model.tables.pop_recent[ranking.items])
    assert np.all(np.diff(ranking.scores) <= 0)


def test_ranking_is_deterministic(trained: Trained) -> None:
    model = ServingModel.from_bundle(trained.bundle)
    run = longest_runs(trained.log, 1)[0]
    first_window = window_of_session(trained.log, run, events=4)
    second_window = window_of_session(trained.log, run, events=4)
    first = model.rank(first_window, 20, event_time(first_window))
    second = model.rank(second_window, 20, event_time(second_window))
    np.testing.assert_array_equal(first.items, second.items)
    np.testing.assert_array_equal(first.scores, second.scores)


def resigned(trained: Trained, **changes: Any) -> Bundle:
    """The trained bundle with manifest fields changed, signed again with the same key."""
    manifest = trained.bundle.manifest
    fields: dict[str, Any] = {
        "version": manifest.version + 1,
        "ranker": manifest.ranker,
        "metrics": manifest.metrics,
        "config": manifest.config,
        "training": manifest.training,
        "rules_version": manifest.rules_version,
        "feature_schema_version": manifest.feature_schema_version,
    }
    fields.update(changes)
    data = pack_bundle(dict(trained.bundle.parts), private_key_pem=trained.private_pem, **fields)
    return read_bundle(data, load_public_key(trained.public_pem))


def test_the_resigned_bundle_itself_loads(trained: Trained) -> None:
    assert ServingModel.from_bundle(resigned(trained)).version == 6


def test_another_feature_schema_version_is_refused(trained: Trained) -> None:
    bundle = resigned(trained, feature_schema_version=features.FEATURE_SCHEMA_VERSION + 1)
    with pytest.raises(ManifestError) as raised:
        ServingModel.from_bundle(bundle)
    assert raised.value.code == "feature_schema_mismatch"
    assert raised.value.field == "feature_schema_version"


@pytest.mark.parametrize(
    "names",
    [
        list(reversed(features.FEATURE_NAMES)),
        [*features.FEATURE_NAMES[:-1], "something_else"],
        list(features.FEATURE_NAMES[:-1]),
        None,
    ],
    ids=["reordered", "renamed", "one-missing", "absent"],
)
def test_other_feature_names_are_refused(trained: Trained, names: list[str] | None) -> None:
    config = {k: v for k, v in trained.bundle.manifest.config.items() if k != "feature_names"}
    if names is not None:
        config["feature_names"] = names
    with pytest.raises(ManifestError) as raised:
        ServingModel.from_bundle(resigned(trained, config=config))
    assert raised.value.code == "feature_schema_mismatch"


def test_a_bundle_without_an_int8_ranker_cannot_serve_int8(trained: Trained) -> None:
    ranker = {**trained.bundle.manifest.ranker, "int8": None, "precision": "fp32",
              "serve": trained.bundle.manifest.ranker["fp32"]}
    bundle = resigned(trained, ranker=ranker)
    assert ServingModel.from_bundle(bundle).precision == "fp32"
    with pytest.raises(ManifestError) as raised:
        ServingModel.from_bundle(bundle, "int8")
    assert raised.value.code == "missing_ranker"


def test_unknown_config_settings_are_refused(trained: Trained) -> None:
    manifest = trained.bundle.manifest
    config = {**manifest.config, "window": {**manifest.config["window"], "unknown": 1}}
    with pytest.raises(ManifestError):
        ServingModel.from_bundle(resigned(trained, config=config))


def test_the_bundle_config_sets_window_and_candidates(trained: Trained) -> None:
    manifest = trained.bundle.manifest
    config = {**manifest.config, "window": {"span_ms": 60_000, "max_events": 7},
              "candidates": {**manifest.config["candidates"], "min_candidates": 3}}
    model = ServingModel.from_bundle(resigned(trained, config=config))
    assert model.window_config.span_ms == 60_000
    assert model.window_config.max_events == 7
    assert model.candidate_config.min_candidates == 3
    assert replace(model.candidate_config, min_candidates=100) == ServingModel.from_bundle(
        trained.bundle
    ).candidate_config


def test_bundle_tables_are_the_whole_log(trained: Trained) -> None:
    model = ServingModel.from_bundle(trained.bundle)
    assert model.tables.n_items == len(set(trained.log.item.tolist()))
    assert float(model.tables.pop_all.sum()) == trained.log.n_events
