"""Progress bars only where someone watches them: on a terminal, never in a log file or a pipe."""

from __future__ import annotations

import sys


def on_terminal() -> bool:
    """True when stderr (where tqdm draws) is a terminal."""
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
