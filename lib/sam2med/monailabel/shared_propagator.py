"""One `Propagator` per server process, loaded once (at start or on the first request) and shared by all tasks."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from sam2med.checkpoints import choose_model
from sam2med.engine import Propagator
from sam2med.engine.priority import EncoderPriority
from sam2med.monailabel.appconfig import AppConfig
from sam2med.monailabel.publishing import published_checkpoint, read_pointer
from sam2med.provenance import model_version

logger = logging.getLogger(__name__)


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
        self._checkpoint: str | None = None  # the checkpoint the propagator was loaded from
        # requests before warm-up slices, across propagators (a published model brings a new one): warmup.py
        self.priority = EncoderPriority()

    @property
    def loaded(self) -> bool:
        return self._propagator is not None

    def _wanted(self) -> str | None:
        """The checkpoint requests should use now: the one `sam2_finetune` published (or rolled back to), else the app's."""
        found = published_checkpoint(self.config.state_dir)
        return str(found[0]) if found else self.config.checkpoint

    def current_version(self) -> str | None:
        """The version the next request will use: the published pointer's, else the loaded model's."""
        pointer = read_pointer(self.config.state_dir)
        return (pointer or {}).get("version") or self.version

    def get(self, reason: str = "first request") -> Propagator:
        """The shared propagator, loading the model now if it is not loaded yet, or if another one was published."""
        wanted = self._wanted()
        if self._propagator is None or wanted != self._checkpoint:
            with self._lock:
                if self._propagator is None or wanted != self._checkpoint:
                    start = time.perf_counter()
                    why = reason if self._propagator is None else f"published: {Path(wanted).name if wanted else 'the app checkpoint'}"
                    logger.info("loading %s (%s) on %s ...", self.model_title, why, self.config.device)
                    # A new propagator brings a new feature cache: entries of the previous weights are never reused.
                    self._propagator = Propagator(
                        model=self.model_name,
                        checkpoint=wanted,
                        device=self.config.device,
                        image_size=self.image_size,
                        cache_bytes=int(self.config.cache_gb * 1e9) if self.config.cache_gb else None,
                        priority=self.priority,
                    )
                    self._checkpoint = wanted
                    self.version = model_version(self.model_name, self._propagator.checkpoint)
                    logger.info("%s (%s) ready on %s in %.1fs (input %d px, feature cache %.1f GB); shared by all requests",
                                self.model_title, self.version, self._propagator.device, time.perf_counter() - start,
                                self._propagator.image_size, self._propagator.cache.budget_bytes / 1e9)
        return self._propagator
