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
