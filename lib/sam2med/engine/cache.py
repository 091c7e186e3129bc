"""`FeatureCache`: image-encoder features of recent volumes, shared by all requests of a process.

Entries are keyed by what determines the features (volume content, axis, windowing, model, input size)
and evicted least-recently-used under a byte budget. An entry in use by a request is pinned and never
evicted under it; concurrent requests on one volume encode each slice once (the entry's lock).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from sam2med.engine.features import SliceFeatures

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheKey:
    volume: str  # content fingerprint of the volume
    axis: int
    window: str
    model: str  # model name, checkpoint identity and input size

    def short(self) -> str:
        return f"{self.volume[:8]}/axis{self.axis}/{self.window}"


def default_budget_bytes(device: torch.device) -> int:
    """Half of the free GPU memory on CUDA; on CPU a quarter of physical RAM, at most 8 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 8 << 30
    return int(min(ram // 4, 8 << 30))


class FeatureCache:
    """LRU cache of `SliceFeatures` per `CacheKey` under a byte budget."""

    def __init__(self, budget_bytes: int, storage_dtype: torch.dtype = torch.float32):
        self.budget_bytes = int(budget_bytes)
        self.storage_dtype = storage_dtype
        self._entries: "OrderedDict[CacheKey, SliceFeatures]" = OrderedDict()
        self._pins: dict[CacheKey, int] = {}
        self._lock = threading.Lock()
        self.hits = 0  # slices served from the cache
        self.misses = 0  # slices encoded
        self.evictions = 0

    @contextmanager
    def use(self, key: CacheKey) -> Iterator[SliceFeatures]:
        """The entry for `key` (created empty if absent), pinned against eviction while in use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = SliceFeatures(storage_dtype=self.storage_dtype)
            self._entries.move_to_end(key)
            self._pins[key] = self._pins.get(key, 0) + 1
        try:
            yield entry
        finally:
            with self._lock:
                self._pins[key] -= 1
                if not self._pins[key]:
                    del self._pins[key]
            self.evict()

    def record(self, hits: int, misses: int) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses

    def evict(self) -> None:
        """Drop least-recently-used unpinned entries until the cache fits its budget."""
        with self._lock:
            for key in list(self._entries):
                if self._bytes_locked() <= self.budget_bytes:
                    break
                if key in self._pins:
                    continue
                entry = self._entries.pop(key)
                self.evictions += 1
                logger.info("feature cache: evicted %s (%.1f MB)", key.short(), entry.nbytes / 1e6)

    def _bytes_locked(self) -> int:
        # entries keep a running byte count (`SliceFeatures.nbytes`), safe to read while another thread fills one
        return sum(entry.nbytes for entry in self._entries.values())

    def stats(self) -> dict[str, int | float]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes_locked(),
                "budget_bytes": self.budget_bytes,
                "hit_slices": self.hits,
                "miss_slices": self.misses,
                "evictions": self.evictions,
            }

    def clear(self) -> None:
        with self._lock:
            for key in [k for k in self._entries if k not in self._pins]:
                del self._entries[key]
