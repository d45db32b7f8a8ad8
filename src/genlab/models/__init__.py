"""Every model family; importing this package registers them all (see genlab.registry)."""

from genlab.models.lm import rnn, transformer  # noqa: F401
