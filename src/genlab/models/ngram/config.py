"""Options of the n-gram language model."""

from dataclasses import dataclass

from genlab.config import Choice, Range, option
from genlab.errors import ConfigError

SMOOTHINGS = ("mle", "add-k", "laplace", "witten-bell", "kn", "mkn", "stupid-backoff")


@dataclass
class NgramConfig:
    order: int = option(3, "n-gram order N (1 = unigram); contexts are the N-1 previous words",
                        Range(2, 6, integer=True))
    smoothing: str = option("mkn", "mle, add-k, laplace, witten-bell, kn, mkn (KenLM lmplz), stupid-backoff",
                            Choice(("witten-bell", "kn", "mkn")))
    k: float = option(0.5, "pseudo-count added to every n-gram for add-k (Lidstone); laplace is k=1")
    alpha: float = option(0.4, "stupid backoff: score multiplier per back-off step (Brants et al. 2007)")
    chunk_tokens: int = option(4_000_000, "count the corpus in chunks of about this many tokens, then merge")

    def validate(self) -> None:
        if not isinstance(self.order, int) or self.order < 1:
            raise ConfigError(f"n-gram order must be an integer >= 1, got {self.order!r}")
        if self.smoothing not in SMOOTHINGS:
            raise ConfigError(f"unknown smoothing {self.smoothing!r}; choose one of {', '.join(SMOOTHINGS)}")
        if self.smoothing == "add-k" and not self.k > 0:
            raise ConfigError(f"add-k smoothing needs k > 0, got {self.k!r} (use smoothing=mle for k=0)")
        if self.smoothing == "stupid-backoff" and not 0 < self.alpha <= 1:
            raise ConfigError(f"stupid backoff needs 0 < alpha <= 1, got {self.alpha!r}")
        if self.chunk_tokens < 1:
            raise ConfigError(f"chunk_tokens must be >= 1, got {self.chunk_tokens!r}")
