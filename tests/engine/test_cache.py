"""`FeatureCache`: LRU eviction under a byte budget, pinned entries, one encoding under concurrency, stats."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from sam2med.engine.cache import CacheKey, FeatureCache
from sam2med.engine.features import SliceFeatures

SLICE_BYTES = 4 * 1000  # one fake level of 1000 float32 values
POS_BYTES = 4 * 10


def key(name: str) -> CacheKey:
    return CacheKey(volume=name, axis=2, window="window:40,400", model="tiny")


def fill(entry: SliceFeatures, slices: range) -> None:
    for s in slices:
        entry.add(s, [torch.full((1, 1000), float(s))], [torch.zeros(1, 10)])


def test_entry_bytes_are_counted_as_slices_are_added():
    entry = SliceFeatures(storage_dtype=torch.float32)
    fill(entry, range(3))
    assert entry.nbytes == 3 * SLICE_BYTES + POS_BYTES
    fill(entry, range(2))  # re-adding a slice replaces it, it does not count twice
    assert entry.nbytes == 3 * SLICE_BYTES + POS_BYTES
    half = SliceFeatures(storage_dtype=torch.bfloat16)
    fill(half, range(3))
    assert half.nbytes == (3 * SLICE_BYTES + POS_BYTES) // 2


def test_least_recently_used_entry_goes_first_under_the_budget():
    cache = FeatureCache(budget_bytes=2 * (2 * SLICE_BYTES + POS_BYTES))  # room for two 2-slice volumes
    for name in ("a", "b"):
        with cache.use(key(name)) as entry:
            fill(entry, range(2))
    with cache.use(key("a")):  # a is now more recent than b
        pass
    with cache.use(key("c")) as entry:
        fill(entry, range(2))
    stats = cache.stats()
    assert stats["entries"] == 2 and stats["evictions"] == 1
    assert stats["bytes"] <= cache.budget_bytes
    with cache.use(key("a")) as entry:
        assert entry.missing([0, 1]) == []  # kept
    with cache.use(key("b")) as entry:
        assert entry.missing([0, 1]) == [0, 1]  # evicted: comes back empty


def test_pinned_entries_are_never_evicted():
    cache = FeatureCache(budget_bytes=SLICE_BYTES)  # smaller than any filled entry
    with cache.use(key("big")) as pinned:
        fill(pinned, range(4))
        with cache.use(key("other")) as other:
            fill(other, range(4))
        # "other" was released over budget and went; "big" is in use and stays, tensors intact
        cache.evict()
        assert cache.stats()["entries"] == 1
        assert all(float(pinned.levels[s][0][0, 0]) == s for s in range(4))
    # released: now it goes as well
    assert cache.stats()["entries"] == 0
    assert cache.stats()["evictions"] == 2


def test_entry_in_use_by_two_requests_stays_until_both_release():
    cache = FeatureCache(budget_bytes=0)
    first = cache.use(key("v"))
    entry = first.__enter__()
    fill(entry, range(2))
    with cache.use(key("v")) as again:
        assert again is entry
    assert cache.stats()["entries"] == 1  # still pinned by the first user
    first.__exit__(None, None, None)
    assert cache.stats()["entries"] == 0


def test_stats_and_clear():
    cache = FeatureCache(budget_bytes=1 << 20)
    with cache.use(key("v")) as entry:
        fill(entry, range(3))
    cache.record(hits=5, misses=3)
    stats = cache.stats()
    assert stats == {"entries": 1, "bytes": 3 * SLICE_BYTES + POS_BYTES, "budget_bytes": 1 << 20,
                     "hit_slices": 5, "miss_slices": 3, "evictions": 0}
    cache.clear()
    assert cache.stats()["entries"] == 0 and cache.stats()["bytes"] == 0


def test_concurrent_entry_use_and_stats_do_not_race():
    """Stats read entry sizes while other threads fill entries (a dict changing size under iteration)."""
    cache = FeatureCache(budget_bytes=50 * SLICE_BYTES)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for _ in range(20):
                with cache.use(key(name)) as entry:
                    fill(entry, range(10))
                    cache.stats()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(f"v{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.stats()["bytes"] <= cache.budget_bytes


def test_concurrent_requests_on_one_volume_encode_each_slice_once(monkeypatch):
    from sam2med.engine import propagator as propagator_module
    from sam2med.geometry import Axis, Grid
    from sam2med.io import Volume
    from sam2med.windowing import PREPROCESSING, Window

    encoded: list[float] = []  # mean value of each slice the fake encoder saw
    lock = threading.Lock()

    def fake_encode(tracker, stack, indices, batch_size, compute_dtype=None, resize="bilinear"):
        """Stands in for the SAM2 image encoder: records each slice it encodes, a little slowly."""
        for i in indices:
            time.sleep(0.01)
            with lock:
                encoded.append(float(stack[i].mean()))
            yield i, [torch.full((1, 4), float(stack[i].mean()))], [torch.zeros(1, 4)]

    monkeypatch.setattr(propagator_module, "encode_slices", fake_encode)
    prop = object.__new__(propagator_module.Propagator)  # no model: only the cache path is exercised
    prop.cache = FeatureCache(budget_bytes=1 << 20)
    prop.tracker = None
    prop.batch_size = 1
    prop.compute_dtype = torch.float32
    prop.preprocessing = PREPROCESSING["sam2"]
    prop._model_key = "fake"

    array = np.stack([np.full((4, 5), 100.0 * z, dtype=np.float32) for z in range(8)], axis=-1)  # (x, y, z)
    volume = Volume(array, Grid((4, 5, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    window = Window(level=350.0, width=700.0)
    key_ = prop._cache_key(volume, Axis.AXIAL, window)
    results: list[tuple[int, int]] = []

    def request(indices: list[int]) -> None:
        with prop.cache.use(key_) as features:
            results.append(prop._fill(features, volume, Axis.AXIAL, window, indices, None))

    ranges = [list(range(8)), list(range(8)), list(range(2, 6)), list(range(8))]
    threads = [threading.Thread(target=request, args=(r,)) for r in ranges]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(encoded) == 8  # every slice encoded exactly once across the four requests
    assert len(set(encoded)) == 8
    assert sum(m for _, m in results) == 8
    stats = prop.cache.stats()
    assert stats["miss_slices"] == 8 and stats["hit_slices"] == sum(len(r) for r in ranges) - 8
    with prop.cache.use(key_) as features:
        assert features.missing(list(range(8))) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backbone_out_comes_back_as_float32(dtype):
    entry = SliceFeatures(storage_dtype=dtype)
    entry.add(0, [torch.ones(1, 2, 3, 3)], [torch.zeros(1, 2, 3, 3)])
    out = entry.backbone_out(0, torch.device("cpu"))
    assert all(t.dtype == torch.float32 for t in out["backbone_fpn"] + out["vision_pos_enc"])
