"""The web page, opened in a real headless Chromium (Debian's, driven by Playwright) against a live server.

Screenshots go to test-artifacts/ (or $GENLAB_TEST_ARTIFACTS). Without Chromium or Playwright these tests skip,
unless GENLAB_REQUIRE_BROWSER=1 (as CI sets, having installed both), where they fail instead.
"""

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from genlab.server.app import create_app
from genlab.server.schemas import Limits
from tests.helpers import live_server


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
