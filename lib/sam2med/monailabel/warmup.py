"""Warm-up hook: encode the slices of the image an annotator is about to seed, in the background."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from sam2med.geometry import Axis
from sam2med.io import load_volume
from sam2med.monailabel.shared_propagator import SharedEngine

logger = logging.getLogger(__name__)


class WarmUp:
    """One background worker; an image already queued is not queued twice. Failures are logged, never raised."""

    def __init__(self, engine: SharedEngine, axis: Axis = Axis.AXIAL, window: str = "auto"):
        self.engine = engine
        self.axis = axis
        self.window = window
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam2med-warmup")
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()

    def schedule(self, image_path: str) -> Future:
        with self._lock:
            future = self._pending.get(image_path)
            if future is None or future.done():
                future = self._pending[image_path] = self._pool.submit(self._run, image_path)
            return future

    def _run(self, image_path: str) -> dict:
        try:
            volume = load_volume(image_path)
            stats = self.engine.get("warm-up").warm_up(volume, self.axis, self.window)
            logger.info("warm-up of %s (%s, %d slices) done in %.1fs", image_path, self.axis.name.lower(),
                        volume.grid.num_slices(self.axis), stats["seconds"])
            return stats
        except Exception as err:  # a warm-up only saves time later; it must never take the server down
            logger.warning("warm-up of %s failed: %s", image_path, err)
            return {"error": str(err)}
        finally:
            with self._lock:
                self._pending.pop(image_path, None)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
