"""Fixtures shared by the central tests."""

from __future__ import annotations

import pytest

from tests.central.outcomes.world import Trained, train_pair


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Two bundles of known quality on a themed shop (trained once per test session)."""
    return train_pair(tmp_path_factory.mktemp("offpolicy"))
