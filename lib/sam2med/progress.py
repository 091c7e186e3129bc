"""Progress bars only where someone watches them: on a terminal, never in a log file or a pipe."""

from __future__ import annotations

import sys


def on_terminal() -> bool:
    """True when stderr (where tqdm draws) is a terminal."""
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


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
