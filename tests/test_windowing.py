import numpy as np
import pytest

from sam2med.errors import PromptError
from sam2med.windowing import CT_PRESETS, Window, guess_modality


def test_auto_window_by_modality():
    assert Window.parse("auto", "CT") == Window(*CT_PRESETS["soft_tissue"])
    assert Window.parse(None, "MR").percentiles == (0.5, 99.5)


def test_level_width_maps_linearly():
    window = Window.parse("40,400", None)
    out = window.apply(np.array([-160.0, 40.0, 240.0, 1000.0]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 1.0])


def test_percentile_bounds_come_from_whole_volume():
    volume = np.linspace(0, 100, 1001)
    window = Window.parse("percentile:10,90", None)
    bounds = window.bounds(volume)
    np.testing.assert_allclose(bounds, (10.0, 90.0))
    np.testing.assert_allclose(window.apply(np.array([10.0, 50.0, 95.0]), bounds), [0.0, 0.5, 1.0])


@pytest.mark.parametrize("spec", ["mystery", "40", "40,-1", "percentile:90,10"])
def test_bad_window_specs(spec):
    with pytest.raises(PromptError):
        Window.parse(spec, "CT")


def test_window_keys_differ():
    assert Window.parse("lung", "CT").key != Window.parse("bone", "CT").key


def test_guess_modality():
    ct = np.full((4, 4, 4), -1000, np.int16)
    ct[1:3] = 40
    assert guess_modality(ct) == "CT"
    assert guess_modality(np.random.default_rng(0).random((4, 4, 4)) * 500) == "MR"
    assert guess_modality(ct, "mr") == "MR"


def test_medsam2_eight_bit_matches_its_clip_stretch_truncate_pipeline():
    """MedSAM2 (issue 15 facts, its 3D CT inference): clip to the window, stretch the clipped volume's own
    min..max to [0, 255], cast to uint8 (truncation), then / 255."""
    from sam2med.windowing import PREPROCESSING

    rng = np.random.default_rng(0)
    ct = rng.integers(-100, 400, size=(24, 20, 6)).astype(np.int16)  # above the window, never down to its low end -160
    window = Window.parse("soft_tissue", "CT").for_model(PREPROCESSING["medsam2"])
    assert window.eight_bit and window.key == "window:40,400:8bit" and Window.parse("soft_tissue", "CT").key == "window:40,400"
    clipped = np.clip(ct.astype(np.float64), -160, 240)
    reference = np.uint8((clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255.0) / 255.0
    bounds = window.bounds(ct)
    assert bounds == (float(ct.min()), 240.0)
    ours = window.apply(ct, bounds)
    assert np.abs(ours - reference).max() <= 1 / 255 + 1e-6 and np.mean(ours == reference.astype(np.float32)) > 0.999
    assert ours.min() == 0.0 and set(np.round(np.unique(ours) * 255, 4)) <= set(range(256))
    plain = Window.parse("soft_tissue", "CT").apply(ct)  # SAM2.1: the window itself, not stretched, not quantised
    np.testing.assert_allclose(plain, np.clip((ct + 160.0) / 400.0, 0, 1), atol=1e-6)


def test_medsam2_resize_matches_pil_bicubic_of_the_8_bit_slice():
    """MedSAM2 resizes each uint8 slice with PIL's Image.resize (bicubic); the bicubic model input does the same."""
    import torch
    from PIL import Image

    from sam2med.engine.features import IMAGE_MEAN, IMAGE_STD, to_model_input

    rng = np.random.default_rng(1)
    slices = np.floor(rng.random((2, 45, 70)) * 256).clip(0, 255) / 255.0  # 8-bit values, up and down in size
    for size in (32, 128):  # an RGB image (as MedSAM2 converts it) is resized band by band, each as this grey one
        model_input = to_model_input(slices.astype(np.float32), size, torch.device("cpu"), resize="bicubic").numpy()
        for i, s in enumerate(slices):
            pil = np.asarray(Image.fromarray(np.uint8(np.round(s * 255))).convert("RGB").resize((size, size))) / 255.0
            expected = (pil.transpose(2, 0, 1) - np.array(IMAGE_MEAN)[:, None, None]) / np.array(IMAGE_STD)[:, None, None]
            level_error = np.abs(model_input[i] - expected) * np.array(IMAGE_STD)[:, None, None] * 255
            assert level_error.max() < 0.01, size
        bilinear = to_model_input(slices.astype(np.float32), size, torch.device("cpu")).numpy()
        assert np.abs(bilinear - model_input).max() * IMAGE_STD[0] * 255 > 3  # the SAM2.1 input is another filter
