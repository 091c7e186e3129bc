"""MedSAM2 through the real loading path: RANDOM weights of its architecture saved under its file name.

MedSAM2 is SAM2.1-tiny at 512 px with the memory attention's RoPE grid at 32x32 (its sam2.1_hiera_t512.yaml).
Nothing here speaks of quality; the weight-independent check is that the seed slice comes back.
"""

import shutil

import numpy as np
import pytest
import torch

from sam2med.errors import CheckpointError
from sam2med.geometry import Axis, Grid, to_slices
from sam2med.io import Volume
from sam2med.prompts import SeedMasks, SliceRange

pytestmark = pytest.mark.integration


def _rope_cells(tracker) -> set[int]:
    layers = tracker.memory_attention.layers
    return {int(a.freqs_cis.shape[0]) for layer in layers for a in (layer.self_attn, layer.cross_attn_image)}


def test_medsam2_is_built_at_512_with_a_32x32_rope_grid_and_loaded_strictly(medsam2_checkpoint):
    from sam2.build_sam import build_sam2_video_predictor

    from sam2med.checkpoints import MODELS
    from sam2med.engine import Propagator

    propagator = Propagator(checkpoint=medsam2_checkpoint, device="cpu")  # no other flag: the file name says medsam2
    assert (propagator.model_name, propagator.image_size, propagator.preprocessing.name) == ("medsam2", 512, "medsam2")
    tracker = propagator.tracker
    assert tracker.image_size == 512 and _rope_cells(tracker) == {32 * 32}  # before any forward pass
    saved = torch.load(medsam2_checkpoint, map_location="cpu", weights_only=True)["model"]
    loaded = tracker.state_dict()
    assert set(saved) == set(loaded) and all(torch.equal(saved[k], loaded[k]) for k in saved)
    # What the plain image-size override gives: the 1024 px RoPE grid until sam2 recomputes it on the first call.
    plain = build_sam2_video_predictor(MODELS["tiny"].config, None, "cpu", hydra_overrides_extra=["++model.image_size=512"])
    assert _rope_cells(plain) == {64 * 64}

    # A few slices at 512 px: the conditioning slice comes back as drawn; the input was MedSAM2's 8-bit one.
    rng = np.random.default_rng(0)
    array = rng.normal(40, 30, size=(48, 40, 3)).astype(np.float32)
    yy, xx = np.mgrid[:48, :40]
    disc = (yy - 22) ** 2 + (xx - 18) ** 2 < 81
    array[disc] += 300
    volume = Volume(array, Grid(array.shape, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), modality="CT")
    seed = disc.T  # the slice as the engine sees it, (y, x)
    assert to_slices(array, Axis.AXIAL)[1].shape == seed.shape
    result = propagator.propagate(volume, SeedMasks(Axis.AXIAL, {3: {1: seed}}), SliceRange(0, 2), window="soft_tissue")
    assert result.window == "window:40,400:8bit"
    assert np.array_equal(result.label[..., 1] == 3, disc) and result.label.shape == array.shape
    assert set(np.unique(result.label)) <= {0, 3}


def test_checkpoint_under_another_model_name_fails_in_one_line(medsam2_checkpoint, random_checkpoint, tmp_path):
    from sam2med.engine import Propagator

    with pytest.raises(CheckpointError) as caught:  # tiny's weights fit medsam2's architecture: the name tells them apart
        Propagator(model="medsam2", checkpoint=random_checkpoint, device="cpu")
    assert str(caught.value) == ("checkpoint sam2.1_hiera_tiny.pt is a 'tiny' model (its file name is that of 'tiny'), "
                                 "not 'medsam2': drop --model or give the matching name")
    renamed = shutil.copy(medsam2_checkpoint, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights.pt: does not fit the SAM2.1 'small' architecture \(") as caught:
        Propagator(model="small", checkpoint=renamed, device="cpu", image_size=256)
    assert "\n" not in str(caught.value)
