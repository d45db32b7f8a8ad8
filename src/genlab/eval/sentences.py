"""A scored sentence as every language model reports it (neural and n-gram alike; no PyTorch here)."""

import math
from typing import Any


def sentence_score(text: str, logprob: float, tokens: int) -> dict[str, Any]:
    """One scored text: natural-log and log10 probability, tokens predicted, perplexity (the end included)."""
    return {"text": text, "logprob": logprob, "log10_prob": logprob / math.log(10), "tokens": tokens,
            "perplexity": math.exp(-logprob / tokens) if tokens and math.isfinite(logprob) else math.inf}
