"""The web page, opened in a real headless Chromium (Debian's, driven by Playwright) against a live server.

Screenshots go to test-artifacts/ (or $GENLAB_TEST_ARTIFACTS). Without Chromium or Playwright these tests skip,
unless GENLAB_REQUIRE_BROWSER=1 (as CI sets, having installed both), where they fail instead.
"""

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from genlab.server.app import create_app
from genlab.server.schemas import Limits
from tests.conftest import REPO
from tests.helpers import live_server

ARTIFACTS = Path(os.environ.get("GENLAB_TEST_ARTIFACTS", REPO / "test-artifacts"))
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


@pytest.fixture(scope="module")
def url(served_runs: Path) -> Iterator[str]:
    with live_server(create_app(served_runs, limits=Limits(max_images=16, max_steps=10))) as base:
        yield base


def test_text_streams_into_the_page_and_equals_the_api(page: object, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".model-item")
    names = page.locator(".model-item").evaluate_all("items => items.map(i => i.dataset.name)")
    assert names == ["images/diffusion", "images/t2i", "lm/chars-3gram", "lm/gpt"]
    page.click(".model-item[data-name='lm/gpt']")
    assert page.inner_text("#card-name") == "lm/gpt"
    assert "transformer" in page.inner_text("#card-facts")
    page.fill("#text-prompt", "em")
    page.fill("#max-new-tokens", "40")
    page.fill("#text-seed", "5")
    page.click("#text-generate")
    page.wait_for_selector("#text-download:not([hidden])")
    shown = page.inner_text("#text-output")
    api = httpx.post(url + "/v1/text/generate", json={"model": "lm/gpt", "prompt": "em", "max_new_tokens": 40,
                                                      "seed": 5, "temperature": 1.0}).json()
    assert shown == "em" + api["text"]
    assert "first piece after" in page.inner_text("#text-info")
    with page.expect_download() as download:
        page.click("#text-download")
    assert Path(download.value.path()).read_text() == shown

    page.fill("#score-text", "anna\nemma")
    page.click("#score-button")
    page.wait_for_selector("#score-table tbody tr")
    cells = page.locator("#score-table tbody tr td:first-child").all_inner_texts()
    assert cells == ["anna", "emma", "all"]
    assert page.console_errors == []


def test_images_appear_for_a_prompt_and_a_label(page: object, url: str) -> None:
    from PIL import Image

    page.goto(url + "/#images%2Ft2i")  # a link to a model opens its card
    page.wait_for_selector("#image-form:not([hidden])")
    chips = page.locator("#example-prompts button").all_inner_texts()
    assert chips and all(c.startswith(("shape", "a picture of shape")) for c in chips)
    page.locator("#example-prompts button").first.click()
    assert page.input_value("#image-prompt") == chips[0]
    page.fill("#num-images", "4")
    page.fill("#steps", "2")
    page.fill("#image-seed", "0")
    page.click("#image-generate")
    page.wait_for_selector("#image-result:not([hidden])")
    assert page.eval_on_selector("#image-output", "img => img.complete && img.naturalWidth") == 2 * 18 + 2  # 2 × 2
    with page.expect_download() as download:
        page.click("#image-download")
    grid = np.asarray(Image.open(download.value.path()))
    assert grid.shape == (2 * 18 + 2, 2 * 18 + 2) and grid.std() > 0

    page.click(".model-item[data-name='images/diffusion']")
    assert page.is_hidden("#prompt-row") and page.is_visible("#label-row")
    page.select_option("#image-label", "square")
    page.click("#image-generate")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('generated')")
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))).save(buf, "PNG")
    page.set_input_files("#edit-image", files=[{"name": "in.png", "mimeType": "image/png", "buffer": buf.getvalue()}])
    page.click("#edit-button")
    page.wait_for_selector("#edit-result:not([hidden])")
    assert page.eval_on_selector("#edit-output", "img => img.naturalWidth") > 16
    assert page.console_errors == []


def test_errors_are_shown_not_thrown(page: object, url: str) -> None:
    page.goto(url + "/#lm%2Fchars-3gram")
    page.wait_for_selector("#text-form:not([hidden])")
    assert page.is_hidden(".neural-only")  # n-gram models have no top-p
    page.fill("#max-new-tokens", "100000")
    page.click("#text-generate")
    page.wait_for_selector("#status.error")
    assert "over this server's limit" in page.inner_text("#status")


def test_a_token_protected_server_asks_for_the_token(browser: object, served_runs: Path) -> None:
    token = "page-test-token-0123456789"
    with live_server(create_app(served_runs, token=token)) as base:
        page = browser.new_page()
        page.goto(base)
        page.wait_for_selector("#status.error")
        assert "401" in page.inner_text("#status") and page.locator("#token-box").get_attribute("open") is not None
        page.fill("#token", token)
        page.dispatch_event("#token", "change")
        page.wait_for_selector(".model-item")
        assert page.locator(".model-item").count() == 4
        page.close()
