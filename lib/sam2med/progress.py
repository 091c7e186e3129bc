"""Progress bars only where someone watches them: on a terminal, never in a log file or a pipe."""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Iterator


def on_terminal() -> bool:
    """True when stderr (where tqdm draws) is a terminal."""
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


class _WithoutRedraws(io.TextIOBase):
    """stderr for a pipe or a log: drops progress-bar redraws (writes starting with a carriage return) and the newline
    that ends a bar; everything else passes through."""

    def __init__(self, stream):
        self.stream = stream
        self.in_bar = False

    def write(self, text: str) -> int:
        redraw = text.startswith("\r")
        if redraw or (self.in_bar and text == "\n"):
            self.in_bar = redraw
            return len(text)
        self.in_bar = False
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def no_bars_off_terminal() -> Iterator[None]:
    """Other libraries' progress bars (sam2's video predictor draws its own) only on a terminal."""
    if on_terminal():
        yield
        return
    with contextlib.redirect_stderr(_WithoutRedraws(sys.stderr)):
        yield


class StageBars:
    """One tqdm bar per stage of a propagation ("encode", "track"), drawn only on a terminal; a `ProgressFn`."""

    def __init__(self, unit: str):
        self.unit = unit
        self.bars: dict = {}

    def __call__(self, done: int, total: int, stage: str) -> None:
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=self.unit, leave=False, disable=not on_terminal())
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
