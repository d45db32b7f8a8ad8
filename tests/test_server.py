"""The HTTP API, started for real on loopback: generation, scoring, images, limits, faults, path safety."""

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

import genlab  # noqa: E402
from genlab.server.app import Gate, create_app  # noqa: E402
from genlab.server.schemas import Limits  # noqa: E402
from tests.helpers import live_server  # noqa: E402
from tests.test_vae import SHAPES  # noqa: E402

LIMITS = Limits(max_new_tokens=100_000, max_images=8, max_steps=10, max_upload_bytes=64 * 1024, workers=1, queue=1)
RUN_NAMES = ["images/diffusion", "images/t2i", "lm/chars-3gram", "lm/gpt"]


@pytest.fixture(scope="module")
def runs(served_runs: Path) -> Path:
    return served_runs


@pytest.fixture(scope="module")
def url(runs: Path) -> Iterator[str]:
    with live_server(create_app(runs, limits=LIMITS, max_models=3)) as base:
        yield base


def post(url: str, path: str, **body: object) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60)


def sse(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event, data) of every server-sent event of a whole response."""
    events = []
    for block in response.text.split("\n\n"):
        if block.strip():
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def wait_until(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# --- listing ---

def test_health_and_model_cards(url: str) -> None:
    health = httpx.get(url + "/v1/health").json()
    assert health["status"] == "ok" and health["capacity"] == 2
    cards = {m["name"]: m for m in httpx.get(url + "/v1/models").json()["models"]}
    assert sorted(cards) == RUN_NAMES
    assert cards["lm/gpt"]["family"] == "transformer" and cards["lm/gpt"]["capabilities"] == ["text.generate",
                                                                                            "text.score"]
    assert cards["images/diffusion"]["conditioning"] == "class"
    assert cards["images/diffusion"]["class_names"] == list(SHAPES)
    assert cards["images/t2i"]["conditioning"] == "text" and cards["images/t2i"]["example_prompts"]
    assert "images.edit" in cards["images/t2i"]["capabilities"]
    assert httpx.get(url + "/v1/models/lm/gpt").json()["options"]["n_head"] == 2
    schema = httpx.get(url + "/openapi.json").json()
    assert {"/v1/text/generate", "/v1/text/score", "/v1/images/generate", "/v1/images/edit"} <= set(schema["paths"])
    docs = httpx.get(url + "/docs").text
    assert "swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()  # works offline


def test_card_shows_the_last_evaluation(runs: Path, url: str) -> None:
    genlab.evaluate(runs / "lm" / "chars-3gram", data=str(runs.parent / "names.txt"))
    metrics = httpx.get(url + "/v1/models/lm/chars-3gram").json()["metrics"]
    assert metrics["perplexity"] == json.loads((runs / "lm" / "chars-3gram" / "eval.json").read_text())["perplexity"]


# --- text ---

@pytest.mark.parametrize("model", ["lm/gpt", "lm/chars-3gram"])
def test_streamed_text_is_the_whole_text_and_seeded(url: str, model: str) -> None:
    body = {"model": model, "prompt": "e", "max_new_tokens": 30, "seed": 3, "temperature": 0.8}
    whole = post(url, "/v1/text/generate", **body).json()
    again = post(url, "/v1/text/generate", **body).json()
    other = post(url, "/v1/text/generate", **(body | {"seed": 4})).json()
    assert whole["text"] == again["text"] and whole["text"] != other["text"]
    streamed = post(url, "/v1/text/generate", **body, stream=True)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse(streamed)
    assert events[-1][0] == "done" and events[-1][1]["pieces"] == len(events) - 1
    assert "".join(data["text"] for kind, data in events if kind == "message") == whole["text"]


def test_text_equals_the_python_api(runs: Path, url: str) -> None:
    model = genlab.load(runs / "lm" / "gpt")
    local = "".join(genlab.api.text_stream(model, "em", max_new_tokens=25, seed=7))
    served = post(url, "/v1/text/generate", model="lm/gpt", prompt="em", max_new_tokens=25, seed=7).json()
    assert served["text"] == local and served["finish_reason"] == "end"


def test_scores_are_log_probabilities(runs: Path, url: str) -> None:
    ngram = post(url, "/v1/text/score", model="lm/chars-3gram", text="anna\n\nemma\nzzqx").json()
    assert [s["text"] for s in ngram["sentences"]] == ["anna", "emma", "zzqx"]
    lm = genlab.load(runs / "lm" / "chars-3gram")
    expected = lm.score_sentences([list("anna"), list("emma"), list("zzqx")])
    assert np.allclose([s["log10_prob"] for s in ngram["sentences"]], expected)
    assert ngram["sentences"][0]["tokens"] == 5  # four letters and the sentence end
    assert ngram["sentences"][2]["logprob"] < ngram["sentences"][0]["logprob"]  # unseen letters score lower
    neural = post(url, "/v1/text/score", model="lm/gpt", text="anna").json()
    s = neural["sentences"][0]
    assert s["tokens"] == 5 and np.isclose(s["perplexity"], np.exp(-s["logprob"] / 5))
    assert np.isclose(neural["total"]["logprob"], s["logprob"])


# --- images ---

def test_image_grid_by_label_prompt_and_seed(url: str) -> None:
    one = post(url, "/v1/images/generate", model="images/diffusion", label="square", num_images=4, seed=1)
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    grid = png(one.content)
    assert grid.shape == (2 * 18 + 2, 2 * 18 + 2)  # 2 × 2 images of 16 × 16 pixels, 2-pixel frames
    same = png(post(url, "/v1/images/generate", model="images/diffusion", label="square", num_images=4, seed=1).content)
    other = png(post(url, "/v1/images/generate", model="images/diffusion", label="diagonal", num_images=4,
                     seed=1).content)
    assert (grid == same).all() and not (grid == other).all()
    t2i = post(url, "/v1/images/generate", model="images/t2i", prompt="shape 2", num_images=2, seed=0, steps=2,
               guidance=1.5)
    assert t2i.status_code == 200 and png(t2i.content).shape[1] == 2 * 18 + 2


def test_edit_an_uploaded_image(url: str) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(buf, "PNG")
    r = httpx.post(url + "/v1/images/edit", data={"model": "images/diffusion", "num_images": "2", "strength": "0.5",
                                                  "label": "vertical"},
                   files={"image": ("in.png", buf.getvalue(), "image/png")}, timeout=60)
    assert r.status_code == 200, r.text
    assert png(r.content).shape == (20, 3 * 18 + 2)  # the input and two edits
    big = httpx.post(url + "/v1/images/edit", data={"model": "images/diffusion"},
                     files={"image": ("big.png", b"\0" * (LIMITS.max_upload_bytes + 1), "image/png")})
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    huge = httpx.post(url + "/v1/images/edit", data={"model": "images/diffusion"},
                      files={"image": ("huge.png", b"\0" * (3 * LIMITS.max_upload_bytes + 2**20), "image/png")})
    assert huge.status_code == 413
    junk = httpx.post(url + "/v1/images/edit", data={"model": "images/diffusion"},
                      files={"image": ("junk.png", b"not an image", "image/png")})
    assert junk.status_code == 400
    gpt = httpx.post(url + "/v1/images/edit", data={"model": "lm/gpt"},
                     files={"image": ("in.png", buf.getvalue(), "image/png")})
    assert gpt.status_code == 400 and "text" in gpt.json()["detail"]


# --- bad requests: 4xx with a message, never 500 ---

@pytest.mark.parametrize("name", ["../runs/lm/gpt", "/etc/passwd", "lm/../../x", "lm/gpt/../../..", "..", "",
                                  "lm\\gpt", "lm/gpt\x00", "nonexistent", "lm", "%2e%2e/etc"])
def test_no_path_outside_the_folder_can_be_named(url: str, name: str) -> None:
    from urllib.parse import quote

    for r in (post(url, "/v1/text/generate", model=name), httpx.get(url + "/v1/models/" + quote(name, safe="/%")),
              httpx.get(url + "/v1/samples/" + quote(name, safe="/%"))):
        assert r.status_code in (404, 422), (name, r.status_code, r.text)


def test_a_link_out_of_the_folder_is_not_a_model(runs: Path, url: str, tmp_path: Path) -> None:
    outside = tmp_path / "secret-run"
    shutil.copytree(runs / "lm" / "chars-3gram", outside)
    (runs / "escape").symlink_to(outside)
    try:
        assert "escape" not in [m["name"] for m in httpx.get(url + "/v1/models").json()["models"]]
        assert post(url, "/v1/text/generate", model="escape").status_code == 404
        assert httpx.get(url + "/v1/samples/escape").status_code == 404
    finally:
        (runs / "escape").unlink()


@pytest.mark.parametrize("body, status", [
    ({"model": "lm/gpt", "max_new_tokens": "many"}, 422),
    ({"model": "lm/gpt", "temperature": -1}, 422),
    ({"model": "lm/gpt", "top_p": 1.5}, 422),
    ({"model": "lm/gpt", "seed": 2**70}, 422),
    ({"model": "lm/gpt", "max_new_tokens": 10**30}, 400),
    ({"model": "lm/gpt", "tempreature": 0.5}, 422),
    ({"model": "lm/gpt", "prompt": "x" * 20_000}, 400),
    ({"model": "lm/chars-3gram", "top_p": 0.5}, 400),
    ({"model": "images/diffusion"}, 400),
    ({"prompt": "no model"}, 422),
])
def test_bad_text_requests(url: str, body: dict, status: int) -> None:
    r = httpx.post(url + "/v1/text/generate", json=body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


@pytest.mark.parametrize("body, status", [
    ({"model": "images/diffusion", "num_images": 9}, 400),
    ({"model": "images/diffusion", "steps": 11}, 400),
    ({"model": "images/diffusion", "label": "triangle"}, 400),
    ({"model": "images/diffusion", "sampler": "euler"}, 400),
    ({"model": "images/diffusion", "prompt": "a square"}, 400),
    ({"model": "images/t2i", "label": "square"}, 400),
    ({"model": "images/diffusion", "num_images": 0}, 422),
    ({"model": "lm/gpt"}, 400),
])
def test_bad_image_requests(url: str, body: dict, status: int) -> None:
    r = httpx.post(url + "/v1/images/generate", json=body, timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_malformed_bodies(url: str) -> None:
    for content in (b'{"model": "lm/gpt",', b"[1, 2]", b"\xff\xfe", b""):
        r = httpx.post(url + "/v1/text/generate", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 422, content
    assert post(url, "/v1/text/score", model="lm/gpt", text="\n \n").status_code == 400


# --- load, faults ---

def test_a_full_server_answers_503_and_a_dropped_stream_frees_its_slot(url: str) -> None:
    health = lambda: httpx.get(url + "/v1/health").json()["busy"]  # noqa: E731
    assert wait_until(lambda: health() == 0)
    body = {"model": "lm/gpt", "max_new_tokens": 100_000, "stream": True}
    with httpx.Client(timeout=30) as a, httpx.Client(timeout=30) as b:
        with a.stream("POST", url + "/v1/text/generate", json=body) as first, \
                b.stream("POST", url + "/v1/text/generate", json=body) as second:
            lines = first.iter_lines(), second.iter_lines()  # kept: a dropped iterator closes its stream
            assert all(next(it).startswith("data: ") for it in lines)  # both streaming: workers 1 + queue 1 = full
            third = post(url, "/v1/text/generate", model="lm/gpt", max_new_tokens=1)
            assert third.status_code == 503 and third.headers["retry-after"] == "1"
            assert "busy" in third.json()["detail"]
        # both clients went away mid-stream: their slots come back
        assert wait_until(lambda: health() == 0), "a disconnected stream kept its slot"
    assert post(url, "/v1/text/generate", model="lm/gpt", max_new_tokens=3).status_code == 200


def test_gate_counts_and_releases_once() -> None:
    gate = Gate(workers=1, queue=1)
    first, second = gate.enter(), gate.enter()
    with pytest.raises(Exception, match="busy"):
        gate.enter()
    first(), first()
    assert gate.active == 1
    second()
    assert gate.active == 0


def test_a_deleted_model_gives_a_clear_error_and_the_cache_is_bounded(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(runs, root, symlinks=True)
    with live_server(create_app(root, limits=LIMITS, max_models=2)) as base:
        for name in ("lm/gpt", "lm/chars-3gram", "images/diffusion"):
            assert post(base, "/v1/text/score", model=name, text="anna").status_code in (200, 400)
        loaded = httpx.get(base + "/v1/health").json()["loaded"]
        assert loaded == ["lm/chars-3gram", "images/diffusion"]  # the least recently used went
        shutil.rmtree(root / "lm" / "chars-3gram")
        r = post(base, "/v1/text/generate", model="lm/chars-3gram")
        assert r.status_code == 404 and "no model 'lm/chars-3gram'" in r.json()["detail"]
        assert httpx.get(base + "/v1/health").json()["loaded"] == ["images/diffusion"]
        (root / "lm" / "gpt" / "config.json").write_text("{not json")
        broken = post(base, "/v1/text/generate", model="lm/gpt")
        assert broken.status_code == 409 and "config.json" in broken.json()["detail"]
        listed = {m["name"]: m for m in httpx.get(base + "/v1/models").json()["models"]}
        assert "error" in listed["lm/gpt"] and "family" in listed["images/t2i"]


def test_bearer_token(runs: Path) -> None:
    token = "s3cret-token-of-some-length"
    with live_server(create_app(runs, token=token, limits=LIMITS)) as base:
        assert httpx.get(base + "/v1/health").status_code == 200  # liveness needs no token
        assert httpx.get(base + "/").status_code == 200  # nor the page (it asks for the token)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            r = httpx.get(base + "/v1/models", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        ok = httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200


def test_genlab_serve_command(runs: Path, tmp_path: Path) -> None:
    """The CLI starts a server on loopback that answers, and refuses a bad token file with one line."""
    import socket

    bad = subprocess.run([sys.executable, "-m", "genlab", "serve", str(runs), "--token-file", str(tmp_path / "no")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("genlab: error: cannot read the token file")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "genlab", "serve", str(runs), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200
            except httpx.TransportError:
                return False
        assert wait_until(up, 60), "genlab serve did not come up"
        r = post(f"http://127.0.0.1:{port}", "/v1/text/generate", model="lm/chars-3gram", seed=0)
        assert r.status_code == 200 and r.json()["text"]
    finally:
        proc.terminate()
        proc.wait(20)


def test_openapi_fuzz_finds_no_server_error(runs: Path, tmp_path: Path) -> None:
    """schemathesis generates requests for every operation from the OpenAPI schema (valid and invalid ones):
    none may get a 5xx."""
    cli = Path(sys.executable).with_name("schemathesis")
    if not cli.is_file():
        pytest.skip("schemathesis is not installed (it comes with the dev extra)")
    tight = Limits(max_new_tokens=20, max_images=2, max_steps=2, max_upload_bytes=16 * 1024, request_seconds=5)
    with live_server(create_app(runs, limits=tight)) as base:
        result = subprocess.run([str(cli), "run", base + "/openapi.json", "--checks", "not_a_server_error",
                                 "--max-examples", "30", "--generation-deterministic", "--request-timeout", "60",
                                 "--no-color"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize("model", ["lm/gpt", "lm/chars-3gram"])
def test_a_vanishing_temperature_is_greedy(url: str, model: str) -> None:
    """Found by the fuzzer: temperature 1e-300 made logits / T infinite and the probabilities nan (a 500)."""
    tiny = post(url, "/v1/text/generate", model=model, prompt="e", max_new_tokens=20, temperature=1e-300, seed=1)
    greedy = post(url, "/v1/text/generate", model=model, prompt="e", max_new_tokens=20, temperature=0, seed=2)
    assert tiny.status_code == 200 and tiny.json()["text"] == greedy.json()["text"]
