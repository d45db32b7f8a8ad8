"""Progress bars that suit where standard error goes.

On a terminal: a tqdm bar. Anywhere else (CI logs, `nohup`, a pipe): the same bar as a plain line every
`LOG_EVERY` seconds, and nothing for work shorter than `QUIET_FOR` seconds, instead of a bar redrawn with carriage
returns thousands of times on one line of the log.
"""

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_EVERY = 30.0  # seconds between lines when standard error is not a terminal
QUIET_FOR = 2.0  # work shorter than this prints no line at all there


class _Lines:
    """A stream for tqdm that writes each redraw as one line (tqdm starts a redraw with a carriage return and
    clears a bar by overwriting it with blanks: both vanish here)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)` on standard error, as lines when it is not a terminal."""
    stream = kwargs.pop("file", None) or sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        kwargs |= {"file": _Lines(stream), "mininterval": LOG_EVERY, "maxinterval": LOG_EVERY, "delay": QUIET_FOR,
                   "dynamic_ncols": False, "ncols": 100, "ascii": True}
    else:
        kwargs["file"] = stream
    return tqdm(iterable, **kwargs)
