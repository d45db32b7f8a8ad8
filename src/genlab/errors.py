"""One exception type per kind of user-facing problem.

The CLI turns any `GenlabError` into a one-line message and a non-zero exit; anything else is a bug
and keeps its traceback.
"""


class GenlabError(Exception):
    """Base class: a problem the user can act on, reported without a traceback."""

    exit_code = 1


class DataError(GenlabError):
    """Missing, empty, unreadable or too-small input data."""


class ConfigError(GenlabError):
    """Unknown model, unknown option, or an option value out of range."""


class CheckpointError(GenlabError):
    """A run directory that is missing, corrupt, truncated, or of another model."""


class RunExistsError(GenlabError):
    """Refusing to overwrite an existing run without --overwrite."""


class TrainingError(GenlabError):
    """Training diverged (NaN/Inf loss, or a model-specific failure such as a GAN's collapse)."""
