"""The warm-up worker encodes a series in the background so that the first propagation on it is cached."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from conftest import TEST_IMAGE_SIZE
from sam2med.engine.priority import BACKGROUND_START
from sam2med.errors import InputError
from sam2med.geometry import Axis
from sam2med.io import load_volume
from sam2med.monailabel.appconfig import AppConfig
from sam2med.monailabel.shared_propagator import SharedEngine
from sam2med.monailabel.warmup import WarmUp, parse_warmup
from sam2med.prompts import ClickPrompt, ClickSeeds, SliceRange


def test_parse_warmup_checks_every_field():
    assert parse_warmup({"image": "ct", "axis": "Sagittal", "center": 7.0}) == ("ct", Axis.SAGITTAL, 7, "auto")
    assert parse_warmup({"image": "ct"}) == ("ct", Axis.AXIAL, None, "auto")
    for body, words in [([], "JSON object"), ({"image": "ct", "axis": "oblique"}, "axis must be one of"),
                        ({"image": ""}, "image"), ({"image": "ct", "center": 2.5}, "center"),
                        ({"image": "ct", "center": True}, "center"), ({"image": "ct", "slice": 3}, "unknown key 'slice'")]:
        with pytest.raises(InputError, match=words):
            parse_warmup(body)


@pytest.mark.integration
def test_warm_up_fills_the_shared_cache_nearest_first_and_the_first_run_encodes_nothing_more(shared_data, random_checkpoint,
                                                                                             tmp_path):
    image = sitk.ReadImage(str(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz"))[:48, :48, 10:15]
    path = tmp_path / "small.nii.gz"
    sitk.WriteImage(image, str(path))
    engine = SharedEngine(AppConfig(checkpoint=str(random_checkpoint), device="cpu", image_size=TEST_IMAGE_SIZE))
    warmup = WarmUp(engine)
    try:
        assert not engine.loaded
        job = warmup.schedule(str(path), "axial", center=3)
        assert "error" not in job.result(timeout=300) and job.state == "done"
        propagator = engine.get()
        cache = propagator.cache
        assert engine.loaded and (cache.stats()["miss_slices"], cache.stats()["hit_slices"]) == (5, 0)
        encoded = [detail[1] for _, event, detail in engine.priority.events if event == BACKGROUND_START]
        assert encoded == [3, 2, 4, 1, 0], "nearest the center first"
        assert job.to_json()["encoded"] == 5
        # the first run after the warm-up encodes nothing: every slice of its range is a hit
        volume = load_volume(path)
        seeds = ClickSeeds(Axis.AXIAL, {1: [ClickPrompt(3, ((20.0, 20.0),), (1,))]})
        result = propagator.propagate(volume, seeds, SliceRange(0, 4), window="auto")
        assert (result.cache["request_miss_slices"], result.cache["request_hit_slices"]) == (0, 5)
        again = warmup.schedule(str(path))
        assert "error" not in again.result(timeout=300)
        assert (again.encoded, again.cached) == (0, 5), "second warm-up not served from cache"
        failed = warmup.schedule(str(tmp_path / "missing.nii.gz"))
        assert "error" in failed.result(timeout=60) and failed.state == "failed"
        assert cache.stats()["miss_slices"] == 5
    finally:
        warmup.shutdown()
