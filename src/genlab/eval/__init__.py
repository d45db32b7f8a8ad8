"""Evaluation: perplexity and bits per character; image metrics."""
