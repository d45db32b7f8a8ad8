"""Shared fixtures: seeds, tiny corpora, the optional ../shared data folder, and a headless browser."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ARTIFACTS = Path(os.environ.get("GENLAB_TEST_ARTIFACTS", REPO / "test-artifacts"))


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


# --- a real headless Chromium (Debian's, driven by Playwright), for pages and reports ---

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]  # a closed network: no calls out


def _missing(reason: str) -> None:
    if os.environ.get("GENLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and GENLAB_REQUIRE_BROWSER=1")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (it comes with the dev extra)")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _missing("no chromium on PATH (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh page that records console errors; screenshot saved after the test, pass or fail."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
