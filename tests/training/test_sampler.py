"""Clip sampling rules on synthetic label maps: first frame in the object, clip inside its extent, prompts from truth."""

from __future__ import annotations

import numpy as np
import pytest

from sam2med.geometry import Axis, Grid
from sam2med.io import Volume
from sam2med.training.sampler import ClipSampler, TrainingVolume, clip_starts, prompt_points

IMAGE_SIZE = 64


def _volume() -> TrainingVolume:
    """20 slices of 32 x 48: label 3 on slices 4..12 except 8 (a gap), label 7 on slices 15..16, label 9 on slice 2 only."""
    labels = np.zeros((20, 32, 48), dtype=np.uint8)
    for s in range(4, 13):
        if s != 8:
            labels[s, 10:20, 5 + s : 15 + s] = 3
    labels[15:17, 2:6, 30:40] = 7
    labels[2, 0:4, 0:4] = 9
    image = np.linspace(-200, 300, labels.size, dtype=np.float32).reshape(labels.shape)
    to_xyz = lambda a: np.ascontiguousarray(np.transpose(a, (2, 1, 0)))  # noqa: E731 (slices are (z, y, x) for axial)
    grid = Grid(shape=(48, 32, 20), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    return TrainingVolume.from_arrays("synthetic", Volume(to_xyz(image), grid, modality="CT"), to_xyz(labels), Axis.AXIAL, None)


def test_objects_need_two_slices_and_keep_gaps():
    volume = _volume()
    assert sorted(volume.objects) == [3, 7]  # label 9 lies on one slice only
    assert volume.objects[3].tolist() == [4, 5, 6, 7, 9, 10, 11, 12]
    assert volume.slices.shape == (20, 32, 48) and 0.0 <= volume.slices.min() and volume.slices.max() <= 1.0


def test_clip_starts_stay_inside_the_extent():
    present = np.array([4, 5, 6, 7, 9, 10, 11, 12])
    starts = clip_starts(present, 4)
    assert (4, 1) in starts and (12, -1) in starts and (7, -1) in starts and (9, 1) in starts
    assert (10, 1) not in starts and (6, -1) not in starts and (8, 1) not in starts  # would leave 4..12, or start off the object


@pytest.mark.parametrize("kinds", [("mask",), ("box",), ("clicks",)])
def test_clips_start_in_the_object_inside_its_extent_both_ways(kinds):
    volume = _volume()
    sampler = ClipSampler([volume], clip_slices=4, image_size=IMAGE_SIZE, seed=3, prompt_kinds=kinds)
    clips = [sampler.sample() for _ in range(200)]
    assert {c.label for c in clips} == {3, 7}  # several objects of the volume
    steps = set()
    for clip in clips:
        present = volume.objects[clip.label]
        assert clip.slices[0] in present.tolist()
        assert all(present[0] <= s <= present[-1] for s in clip.slices)
        assert len(clip.slices) == (4 if clip.label == 3 else 2)  # object 7 spans two slices only
        step = clip.slices[1] - clip.slices[0]
        assert step in (1, -1) and list(clip.slices) == [clip.slices[0] + step * i for i in range(len(clip.slices))]
        steps.add(step)
        assert clip.prompt == kinds[0]
    assert steps == {1, -1}


def test_same_seed_same_clips():
    a = ClipSampler([_volume()], 4, IMAGE_SIZE, seed=5, prompt_kinds=("mask", "box", "clicks"))
    b = ClipSampler([_volume()], 4, IMAGE_SIZE, seed=5, prompt_kinds=("mask", "box", "clicks"))
    assert [a.sample() for _ in range(20)] == [b.sample() for _ in range(20)]
    other = ClipSampler([_volume()], 4, IMAGE_SIZE, seed=6, prompt_kinds=("mask", "box", "clicks"))
    assert [a.sample() for _ in range(20)] != [other.sample() for _ in range(20)]


def test_box_and_clicks_come_from_the_truth_in_model_pixels():
    mask = np.zeros((32, 48), dtype=bool)
    mask[10:20, 5:15] = True
    rng = np.random.default_rng(0)
    box, box_labels = prompt_points(mask, "box", IMAGE_SIZE, rng)
    scale_x, scale_y = IMAGE_SIZE / 48, IMAGE_SIZE / 32
    assert box_labels == (2, 3)
    assert [v for corner in box for v in corner] == pytest.approx([5 * scale_x, 10 * scale_y, 15 * scale_x, 20 * scale_y])
    points, point_labels = prompt_points(mask, "clicks", IMAGE_SIZE, rng, clicks=3)
    assert point_labels == (1, 1, 1) and len(points) == 3
    for x, y in points:
        assert mask[int(y / scale_y), int(x / scale_x)]


def test_nothing_to_sample_is_refused():
    volume = _volume()
    volume.objects = {}
    with pytest.raises(ValueError, match="2 or more slices"):
        ClipSampler([volume], 4, IMAGE_SIZE)
