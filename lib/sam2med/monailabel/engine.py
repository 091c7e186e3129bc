"""One `Propagator` per server process, loaded once (at start or on the first request) and shared by all tasks."""

from __future__ import annotations

import logging
import threading
import time

from sam2med.checkpoints import choose_model
from sam2med.engine import Propagator
from sam2med.monailabel.appconfig import AppConfig
from sam2med.provenance import file_sha256

logger = logging.getLogger(__name__)


def model_version(model_name: str, checkpoint) -> str:
    """The version of a model's weights as responses and scores carry it: its name and the checkpoint's sha256 prefix."""
    return f"{model_name}:{file_sha256(checkpoint)[:12]}"


class SharedEngine:
    """Lazily built, thread-safe holder of the process's `Propagator` (model weights + feature cache).

    The propagator keeps no per-request state: each request brings its own volume and prompts, and the
    feature cache is keyed by volume content, so concurrent requests never see each other's inputs.
    """

    def __init__(self, config: AppConfig):
        self.config = config
        choice = choose_model(config.model, config.checkpoint, config.image_size)
        self.model_name = choice.model
        self.model_title = choice.spec.title
        self.image_size = choice.image_size  # known before the model loads: /info/ names it from the start
        self._propagator: Propagator | None = None
        self._lock = threading.Lock()
        self.version: str | None = None  # "MODEL:sha256[:12]" of the loaded checkpoint, set when it loads

    @property
    def loaded(self) -> bool:
        return self._propagator is not None

    def get(self, reason: str = "first request") -> Propagator:
        """The shared propagator, loading the model now if it is not loaded yet."""
        if self._propagator is None:
            with self._lock:
                if self._propagator is None:
                    start = time.perf_counter()
                    logger.info("loading %s (%s) on %s ...", self.model_title, reason, self.config.device)
                    self._propagator = Propagator(
                        model=self.model_name,
                        checkpoint=self.config.checkpoint,
                        device=self.config.device,
                        image_size=self.image_size,
                        cache_bytes=int(self.config.cache_gb * 1e9) if self.config.cache_gb else None,
                    )
                    self.version = model_version(self.model_name, self._propagator.checkpoint)
                    logger.info("%s ready on %s in %.1fs (input %d px, feature cache %.1f GB); shared by all requests",
                                self.model_title, self._propagator.device, time.perf_counter() - start, self._propagator.image_size,
                                self._propagator.cache.budget_bytes / 1e9)
        return self._propagator
