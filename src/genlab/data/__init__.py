"""Data sets and tokenizers."""
