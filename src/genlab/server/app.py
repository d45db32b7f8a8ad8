"""The HTTP API (FastAPI, documented at /docs and /openapi.json) and the web page at /.

Inference never runs on the event loop: each request takes a slot of a bounded gate (`Limits.workers` running,
`Limits.queue` waiting, then 503) and its work runs in a worker thread. A streamed text holds its slot until the
stream ends or the client goes away, fetching each piece in a worker thread so that streams interleave.
"""

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.background import BackgroundTask

from genlab import __version__, api
from genlab.errors import CheckpointError, GenlabError
from genlab.server.schemas import ImageGenerate, Limits, TextGenerate, TextScore
from genlab.server.store import ModelStore, UnknownModelError

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("genlab.server")
_END = object()  # what `next` returns when a text stream is exhausted


class Gate:
    """At most `workers` inferences at once and `queue` more waiting; beyond that, 503 at once.

    The work runs on a fixed pool of `workers` threads that live as long as the server: a pool that comes and
    goes (anyio's) gives each new thread its own malloc arena, and the server's memory grows with every one."""

    def __init__(self, workers: int, queue: int):
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="genlab-inference")
        self.capacity = max(1, workers) + max(0, queue)
        self.active = 0  # requests holding a slot; only the event loop's thread changes it

    def enter(self) -> Callable[[], None]:
        """Take a slot; returns its release (safe to call twice), or raises 503 when the server is full."""
        if self.active >= self.capacity:
            raise HTTPException(503, f"the server is busy ({self.active} requests running or waiting); retry shortly",
                                headers={"Retry-After": "1"})
        self.active += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active -= 1

        return release

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


def create_app(runs_dir: str | Path, *, token: str | None = None, limits: Limits | None = None,
               max_models: int = 4, device: str = "auto") -> FastAPI:
    """The server's ASGI app over the run directories under `runs_dir`."""
    limits = limits or Limits()
    store = ModelStore(runs_dir, max_models, device)
    gate = Gate(limits.workers, limits.queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        gate.pool.shutdown(wait=False, cancel_futures=True)

    # FastAPIOffline: /docs served from local files, so the API docs open without internet access.
    app = FastAPIOffline(title="genlab", version=__version__, lifespan=lifespan,
                  description="Generate and score text, generate and edit images, with the models under "
                              f"{store.root.name}/. A model is named by its run directory, relative to that folder.")
    app.state.store, app.state.gate, app.state.limits = store, gate, limits

    def check_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is not None and not secrets.compare_digest(authorization or "", f"Bearer {token}"):
            raise HTTPException(401, "this server needs a token: send the header 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_token)])

    def cap(value: int | None, limit: int, name: str) -> None:
        if value is not None and value > limit:
            raise HTTPException(400, f"{name} is {value}, over this server's limit of {limit}")

    async def infer(fn: Callable[[], Any]) -> Any:
        release = gate.enter()
        try:
            return await gate.run(fn)
        finally:
            release()

    @app.get("/v1/health", tags=["server"])
    def health() -> dict[str, Any]:
        """Liveness, the models in memory and how busy the server is (no token needed)."""
        return {"status": "ok", "version": __version__, "loaded": store.loaded(), "busy": gate.active,
                "capacity": gate.capacity}

    @v1.get("/models", tags=["models"])
    def models() -> dict[str, Any]:
        """Every model: its name, family, what it can do, options, data and the metrics of its last `genlab eval`."""
        cards = []
        for name in store.names():
            try:
                cards.append(store.card(name))
            except GenlabError as e:  # a run being written or broken: listed with its problem, not hidden
                cards.append({"name": name, "error": str(e)})
        return {"models": cards}

    @v1.get("/models/{name:path}", tags=["models"])
    def model_card(name: str) -> dict[str, Any]:
        """One model's card."""
        return store.card(name)

    @v1.get("/samples/{name:path}", tags=["models"], response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}})
    def sample_grid(name: str) -> FileResponse:
        """The model's latest sample grid (from `genlab sample` or `genlab generate`), as PNG."""
        path = store.resolve(name)
        grid = api.describe(path)["sample_grid"]
        if grid is None:
            raise HTTPException(404, f"model {name!r} has no sample grid yet; `genlab sample` writes one")
        return FileResponse(path / grid, media_type="image/png")

    @v1.post("/text/generate", tags=["text"], responses={200: {"content": {"text/event-stream": {}}}})
    async def text_generate(req: TextGenerate) -> Any:
        """Continue `prompt` with a language model (neural or n-gram): the whole text as JSON, or with
        `stream` true as server-sent events, `data: {"text": piece}` per piece, then `event: done`."""
        cap(req.max_new_tokens, limits.max_new_tokens, "max_new_tokens")
        cap(len(req.prompt), limits.max_prompt_chars, "the prompt's length in characters")
        options = req.model_dump(exclude={"model", "prompt", "stream"})
        release = gate.enter()
        try:
            pieces = await gate.run(lambda: api.text_stream(store.get(req.model), req.prompt, **options))
        except BaseException:
            release()
            raise
        deadline = time.monotonic() + limits.request_seconds
        if not req.stream:
            try:
                text, count, reason = await gate.run(collect, pieces, deadline)
            finally:
                release()
            return {"model": req.model, "prompt": req.prompt, "text": text, "pieces": count, "finish_reason": reason}
        return StreamingResponse(events(pieces, deadline, release), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"}, background=BackgroundTask(release))

    async def events(pieces: Iterator[str], deadline: float, release: Callable[[], None]) -> AsyncIterator[str]:
        count, reason, start = 0, "end", time.monotonic()
        try:
            while True:
                if time.monotonic() > deadline:
                    reason = "time"
                    break
                piece = await gate.run(next, pieces, _END)
                if piece is _END:
                    break
                count += 1
                yield f"data: {json.dumps({'text': piece})}\n\n"
            done = {"pieces": count, "finish_reason": reason, "seconds": round(time.monotonic() - start, 3)}
            yield f"event: done\ndata: {json.dumps(done)}\n\n"
        except GenlabError as e:
            yield f"event: error\ndata: {json.dumps({'detail': str(e)})}\n\n"
        finally:
            release()  # also when the client went away mid-stream (the response task is cancelled)

    @v1.post("/text/score", tags=["text"])
    async def text_score(req: TextScore) -> dict[str, Any]:
        """Log-probability (natural log and log10), tokens and perplexity of each non-empty line of `text`, each
        scored as one sentence with its end, and of all lines together."""
        cap(len(req.text), limits.max_score_chars, "the text's length in characters")
        lines = [line for line in req.text.splitlines() if line.strip()]
        if not lines:
            raise HTTPException(400, "text has no non-empty line to score")
        return {"model": req.model, **await infer(lambda: api.score_text(store.get(req.model), lines))}

    @v1.post("/images/generate", tags=["images"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def images_generate(req: ImageGenerate) -> Response:
        """A PNG grid of `num_images` images: of `prompt` (text-to-image runs), of `label` (class-conditional
        runs; every class in turn without one), or unconditional."""
        cap(req.num_images, limits.max_images, "num_images")
        cap(req.steps, limits.max_steps, "steps")
        cap(len(req.prompt), limits.max_prompt_chars, "the prompt's length in characters")
        options = req.model_dump(exclude={"model", "prompt", "label", "num_images", "seed"})
        png = await infer(lambda: api.image_png(store.get(req.model), prompt=req.prompt, label=req.label,
                                                num_images=req.num_images, seed=req.seed, **options))
        return Response(png, media_type="image/png")

    @v1.post("/images/edit", tags=["images"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def images_edit(
        model: Annotated[str, Form(description="a diffusion run")],
        image: Annotated[UploadFile, File(description="the image to edit (PNG, JPEG, ...)")],
        mask: Annotated[UploadFile | None, File(description="inpainting: white = repaint, black = keep")] = None,
        strength: Annotated[float | None, Form(gt=0, le=1, description="noise level (SDEdit 0.6, inpaint 1)")] = None,
        label: Annotated[str | None, Form(description="class-conditional runs: class name or index")] = None,
        num_images: Annotated[int, Form(ge=1, description="edits, one seed each")] = 4,
        seed: Annotated[int, Form(ge=0, le=2**63 - 1)] = 0,
        sampler: Annotated[str | None, Form()] = None,
        steps: Annotated[int | None, Form(ge=1)] = None,
        guidance: Annotated[float | None, Form(ge=0, le=100)] = None,
    ) -> Response:
        """SDEdit (no mask) or inpainting (with a mask) of an uploaded image: a PNG row of the input, the masked
        input, then the edits."""
        cap(num_images, limits.max_images, "num_images")
        cap(steps, limits.max_steps, "steps")
        image_bytes = await read_upload(image)
        mask_bytes = await read_upload(mask) if mask is not None else None
        png = await infer(lambda: api.edit_png(store.get(model), image_bytes, mask_bytes, strength=strength,
                                               label=label, num_samples=num_images, seed=seed, sampler=sampler,
                                               steps=steps, guidance=guidance))
        return Response(png, media_type="image/png")

    async def read_upload(upload: UploadFile) -> bytes:
        data = await upload.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, f"{upload.filename or 'the upload'} is over this server's limit of "
                                     f"{limits.max_upload_bytes:,} bytes")
        return data

    app.include_router(v1)
    schema_of_routes = app.openapi

    def openapi_with_model_names() -> dict[str, Any]:
        """The OpenAPI schema with today's model names as examples of every `model` field (for /docs's
        "Try it out", and for schema-driven clients and fuzzers)."""
        schema = schema_of_routes()
        names = store.names()[:20]
        for component in schema.get("components", {}).get("schemas", {}).values():
            if "model" in component.get("properties", {}):
                component["properties"]["model"]["examples"] = names
        return schema

    app.openapi = openapi_with_model_names  # type: ignore[method-assign]

    @app.exception_handler(UnknownModelError)
    async def unknown_model(request: Request, exc: UnknownModelError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(CheckpointError)
    async def broken_run(request: Request, exc: CheckpointError) -> JSONResponse:
        return JSONResponse({"detail": f"the model's run directory cannot be used: {exc}"}, status_code=409)

    @app.exception_handler(GenlabError)
    async def bad_request(request: Request, exc: GenlabError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=2 * limits.max_upload_bytes + 2**20)
    return app


def collect(pieces: Iterator[str], deadline: float) -> tuple[str, int, str]:
    """The whole text of a stream, its piece count, and why it ended ("end", or "time" at the deadline)."""
    text, count = [], 0
    for piece in pieces:
        text.append(piece)
        count += 1
        if time.monotonic() > deadline:
            return "".join(text), count, "time"
    return "".join(text), count, "end"


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, by Content-Length before reading anything, and by
    counting for bodies sent without one."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = JSONResponse({"detail": f"the request body is over this server's limit of "
                                               f"{self.max_bytes:,} bytes"}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return {"type": "http.disconnect"}  # the handler sees the client gone and stops reading
            return message

        return await self.app(scope, counted, send)
