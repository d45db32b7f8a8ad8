"""Statistical n-gram language models: counting, smoothing (MLE to modified Kneser-Ney as KenLM), ARPA I/O.

    from genlab.models.ngram import NgramConfig, NgramLM
    model = NgramLM.fit(sentences, NgramConfig(order=3, smoothing="mkn"))
    model.perplexity(test_sentences)["perplexity"]
"""

from genlab.models.ngram.config import SMOOTHINGS, NgramConfig
from genlab.models.ngram.model import NgramLM

__all__ = ["SMOOTHINGS", "NgramConfig", "NgramLM"]
