"""Request bodies of the HTTP API. Field names are the CLI's option names; unknown fields are refused (422),
so a misspelt option never silently falls back to its default."""

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**63 - 1


@dataclass
class Limits:
    """What one request may ask for, and how much the server does at once."""

    max_new_tokens: int = 1024
    max_prompt_chars: int = 10_000
    max_score_chars: int = 100_000
    max_images: int = 64
    max_steps: int = 250  # diffusion sampling steps per image
    max_upload_bytes: int = 4 * 2**20
    request_seconds: float = 120.0  # text generation stops here (finish_reason "time")
    workers: int = 2  # inferences running at once, each in its own thread
    queue: int = 64  # requests waiting beyond those; more are answered 503


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="run directory, relative to the served folder (see GET /v1/models)",
                       min_length=1, max_length=1024)


class TextGenerate(Request):
    prompt: str = Field("", description="text to continue")
    max_new_tokens: int = Field(200, ge=0, description="tokens to generate (capped by the server)")
    temperature: float = Field(1.0, ge=0, le=1000, description="softmax temperature; 0 is greedy")
    top_k: int | None = Field(None, ge=1, le=10**9, description="sample among the k most probable tokens")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling (neural LMs)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="random seed, for reproducible text")
    stream: bool = Field(False, description="send the text piece by piece as server-sent events")


class TextScore(Request):
    text: str = Field(description="text to score; each non-empty line is one sentence")


class ImageGenerate(Request):
    prompt: str = Field("", description="text-to-image runs: what to draw (\"\" samples unconditionally)")
    label: str | int | None = Field(None, description="class-conditional runs: class name or index "
                                                      "(none: every class in turn)")
    num_images: int = Field(8, ge=1, description="images in the grid (capped by the server)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="random seed, for reproducible images")
    sampler: str | None = Field(None, description="diffusion: ddpm, ddim or dpm-solver++")
    steps: int | None = Field(None, ge=1, description="diffusion: sampling steps (capped by the server)")
    guidance: float | None = Field(None, ge=0, le=100, description="diffusion, conditional: guidance scale")
    eta: float | None = Field(None, ge=0, le=1, description="diffusion, ddim: noise η")
