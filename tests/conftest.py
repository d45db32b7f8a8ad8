"""Shared fixtures: seeds, tiny corpora, and the optional ../shared data folder."""

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when it is absent (a clone without ../shared)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny runs of every kind a server offers (tests.helpers.make_served_runs), made once per session."""
    from tests.helpers import make_served_runs

    return make_served_runs(tmp_path_factory.mktemp("served") / "runs")
