"""Progress bars that suit where standard error goes.

On a terminal: a tqdm bar. Anywhere else (CI logs, `nohup`, a pipe): the same bar as a plain line every
`LOG_EVERY` seconds, and nothing for work shorter than `QUIET_FOR` seconds, instead of a bar redrawn with carriage
returns thousands of times on one line of the log.

`with quiet():` turns all of it off inside the block (`genlab --quiet` runs its command in one): every
`progress_bar` there is a disabled tqdm that still iterates and counts but prints nothing. The switch is a
`contextvars.ContextVar`, so it is scoped to the block, to this thread and to this asyncio task, and undone on
exit; a thread started inside the block begins outside it (pass `contextvars.copy_context()` to carry it over).
Results and errors are not progress and print as before.
"""

import contextlib
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TextIO

from tqdm import tqdm

LOG_EVERY = 30.0  # seconds between lines when standard error is not a terminal
QUIET_FOR = 2.0  # work shorter than this prints no line at all there

_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_quiet: ContextVar[bool] = ContextVar("genlab_progress_quiet", default=False)


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """No progress bars or progress lines inside the block (`enabled=False`: a no-op, for a flag passed through)."""
    token = _quiet.set(enabled or _quiet.get())
    try:
        yield
    finally:
        _quiet.reset(token)


def is_quiet() -> bool:
    """Whether progress is off here: for code that prints its own progress lines rather than a `progress_bar`."""
    return _quiet.get()


class _Lines:
    """A stream for tqdm that writes each redraw as one line (tqdm starts a redraw with a carriage return and
    clears a bar by overwriting it with blanks: both vanish here)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        # nested bars (a batch's denoising steps inside the images' bar) move the cursor up: not in a log
        line = _CURSOR_MOVES.sub("", text.replace("\r", "")).strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)` on standard error, as lines when it is not a terminal; disabled under `quiet()`."""
    if _quiet.get():
        kwargs["disable"] = True
    stream = kwargs.pop("file", None) or sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        kwargs |= {"file": _Lines(stream), "mininterval": LOG_EVERY, "maxinterval": LOG_EVERY, "delay": QUIET_FOR,
                   "dynamic_ncols": False, "ncols": 100, "ascii": True}
    else:
        kwargs["file"] = stream
    return tqdm(iterable, **kwargs)
