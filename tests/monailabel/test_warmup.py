"""The warm-up hook encodes a volume in the background so that the first propagation on it is cached."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from conftest import TEST_IMAGE_SIZE
from sam2med.monailabel.appconfig import AppConfig
from sam2med.monailabel.shared_propagator import SharedEngine
from sam2med.monailabel.warmup import WarmUp

pytestmark = pytest.mark.integration


def test_warm_up_fills_the_shared_cache(shared_data, random_checkpoint, tmp_path):
    image = sitk.ReadImage(str(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz"))[:48, :48, 10:13]
    path = tmp_path / "small.nii.gz"
    sitk.WriteImage(image, str(path))
    engine = SharedEngine(AppConfig(checkpoint=str(random_checkpoint), device="cpu", image_size=TEST_IMAGE_SIZE))
    warmup = WarmUp(engine)
    try:
        assert not engine.loaded
        assert "error" not in warmup.schedule(str(path)).result(timeout=300)
        cache = engine.get().cache
        assert engine.loaded and (cache.stats()["miss_slices"], cache.stats()["hit_slices"]) == (3, 0)
        assert "error" not in warmup.schedule(str(path)).result(timeout=300)
        assert (cache.stats()["miss_slices"], cache.stats()["hit_slices"]) == (3, 3), "second warm-up not served from cache"
        assert "error" in warmup.schedule(str(tmp_path / "missing.nii.gz")).result(timeout=60)
    finally:
        warmup.shutdown()
