"""Drawn slices kept as drawn, and what wins where labels meet (`engine.overlap`).

The slice assembly is checked on hand-made logits; the guarantees then run through the real tracker
(random-weight SAM2.1-tiny at 256 px on the real CT), where a test-only frame hook makes one label's
propagated mask cover another label's drawing with a known confidence.
"""

import numpy as np
import pytest
import torch

from sam2med.engine.overlap import DRAWN_LOGIT, assemble_slice, parse_overlap
from sam2med.errors import PromptError
from sam2med.geometry import Axis
from sam2med.prompts import SliceRange, locked_voxels, seeds_from_label

from tests.engine.test_propagator import ct, largest_slice  # noqa: F401  (ct: the real CT and its labels, a fixture)

VALUES = torch.tensor([1, 5])


def _logits(*masks: np.ndarray, level: float = 5.0) -> torch.Tensor:
    return torch.stack([torch.where(torch.from_numpy(m), level, -level) for m in masks]).float()


def test_parse_overlap():
    assert [parse_overlap(v) for v in (None, "", "Keep", "overwrite", " confidence ")] == ["keep", "keep", "keep", "overwrite", "confidence"]
    with pytest.raises(PromptError, match="--overlap must be one of keep, overwrite, confidence, got 'union'"):
        parse_overlap("union", "--overlap")


def test_assemble_slice_policies_on_known_logits():
    """Label 5 drawn on the left half; label 1 propagated over the middle columns at logit 20 (over a drawing's 10)."""
    drawn5 = np.zeros((4, 6), bool)
    drawn5[:, :3] = True
    spread1 = np.zeros((4, 6), bool)
    spread1[:, 2:5] = True
    own5 = np.zeros((4, 6), bool)
    own5[:, 4:] = True  # label 5's own propagated mask, unused on its drawn slice
    logits = torch.stack([_logits(spread1, level=20.0)[0], _logits(own5)[0]])
    drawn = {1: torch.from_numpy(drawn5)}
    keep = assemble_slice(logits, VALUES, drawn, None, "keep").numpy()
    np.testing.assert_array_equal(keep == 5, drawn5)  # the drawing, exactly; not its own mask at columns 4-5
    np.testing.assert_array_equal(keep == 1, spread1 & ~drawn5)
    overwrite = assemble_slice(logits, VALUES, drawn, None, "overwrite").numpy()
    np.testing.assert_array_equal(overwrite == 1, spread1)
    np.testing.assert_array_equal(overwrite == 5, drawn5 & ~spread1)
    confidence = assemble_slice(logits, VALUES, drawn, None, "confidence").numpy()
    np.testing.assert_array_equal(confidence, overwrite)  # logit 20 beats a drawing's 10
    weak = torch.stack([_logits(spread1, level=DRAWN_LOGIT - 1)[0], _logits(own5)[0]])
    np.testing.assert_array_equal(assemble_slice(weak, VALUES, drawn, None, "confidence").numpy(), keep)
    locked = torch.zeros((4, 6), dtype=torch.int64)
    locked[0, :] = 9
    for policy in ("keep", "overwrite", "confidence"):
        out = assemble_slice(logits, VALUES, drawn, locked, policy).numpy()
        assert (out[0] == 9).all() and not (out[1:] == 9).any(), policy


def test_assemble_slice_without_drawings_is_the_more_confident_object():
    a, b = np.zeros((3, 3), bool), np.zeros((3, 3), bool)
    a[:2], b[1:] = True, True
    logits = torch.stack([_logits(a, level=3.0)[0], _logits(b, level=4.0)[0]])
    expected = np.where(b, 5, np.where(a, 1, 0))
    for policy in ("keep", "overwrite", "confidence"):
        np.testing.assert_array_equal(assemble_slice(logits, VALUES, {}, None, policy).numpy(), expected)


def test_seed_with_fine_edges_comes_back_voxel_for_voxel(ct, propagator):
    """The liver drawn with one-voxel holes: a 256 px input gives a 64 px mask, which cannot hold them."""
    image, truth = ct
    mid = largest_slice(truth.array, Axis.AXIAL, 5)
    drawn = truth.array[..., mid] == 5
    drawn[::2, ::2] = False
    drawn[5, 5] = True  # a lone voxel far from the liver
    seed = np.zeros_like(truth.array)
    seed[..., mid][drawn] = 5
    rng = SliceRange(mid - 1, mid + 1)
    result = propagator.propagate(image, seeds_from_label(seed, truth.grid, image.grid, Axis.AXIAL, rng), rng)
    np.testing.assert_array_equal(result.label[..., mid] == 5, drawn)
    assert result.kept_slices == {5: [mid]} and result.to_json()["kept_slices"] == {"5": [mid]}
    seed_score = next(s for s in result.scores[5] if s.slice == mid)
    assert seed_score.seed and seed_score.area == int(drawn.sum())


@pytest.fixture(scope="module")
def two_labels(ct):
    """Spleen (1) drawn on slice 14, liver (5) on 16, kidney (2) on 16 as a locked, finished segment."""
    image, truth = ct
    t = truth.array
    seed = np.zeros_like(t)
    seed[..., 14][t[..., 14] == 1] = 1
    seed[..., 16][t[..., 16] == 5] = 5
    seed[..., 16][t[..., 16] == 2] = 2
    assert (seed == 2).sum() > 50 and (seed == 5).sum() > 500
    return image, truth, seed


def _spleen_everywhere_on_16(slice_index, label, out, mask):
    """The spleen's propagated mask covers all of slice 16 at logit 20: more confident than a drawing (10)."""
    return torch.full_like(mask, 20.0) if (label == 1 and slice_index == 16) else mask


@pytest.fixture()
def hooked(propagator):
    propagator.frame_hook = _spleen_everywhere_on_16
    yield propagator
    propagator.frame_hook = None


def test_keep_never_overwrites_a_drawing_or_a_locked_segment(two_labels, hooked):
    image, truth, seed = two_labels
    rng = SliceRange(13, 17)
    seeds = seeds_from_label(seed, truth.grid, image.grid, Axis.AXIAL, rng, locked=[2])
    locked = locked_voxels(seed, truth.grid, image.grid, [2])
    result = hooked.propagate(image, seeds, rng, overlap="keep", locked=locked)
    label = result.label
    np.testing.assert_array_equal(label[..., 16] == 5, seed[..., 16] == 5)
    np.testing.assert_array_equal(label[..., 14] == 1, seed[..., 14] == 1)
    np.testing.assert_array_equal(label == 2, seed == 2)
    free = (seed[..., 16] == 0)
    assert (label[..., 16][free] == 1).all(), "the spleen fills the voxels nobody drew"
    assert result.kept_slices == {1: [14], 5: [16]} and result.locked_voxels == {2: int((seed == 2).sum())}
    assert not label[..., :13].any() and not label[..., 18:].any()


def test_confidence_is_the_more_confident_object_as_before(two_labels, hooked):
    image, truth, seed = two_labels
    rng = SliceRange(13, 17)
    seeds = seeds_from_label(seed, truth.grid, image.grid, Axis.AXIAL, rng, locked=[2])
    locked = locked_voxels(seed, truth.grid, image.grid, [2])
    for policy in ("confidence", "overwrite"):
        result = hooked.propagate(image, seeds, rng, overlap=policy, locked=locked)
        on16 = result.label[..., 16]
        np.testing.assert_array_equal(on16, np.where(seed[..., 16] == 2, 2, 1))  # the liver's drawing is overwritten
        assert 16 not in result.kept_slices[5] and result.to_json()["overlap"] == policy
        np.testing.assert_array_equal(result.label == 2, seed == 2)  # a locked segment is never overwritten


def test_clip_to_box_keeps_the_pixels_whose_centres_lie_in_the_box():
    from sam2med.engine.overlap import clip_to_box

    logits = torch.full((6, 8), 5.0)
    clipped = clip_to_box(logits, (3.5, 6.0, 1.0, 2.4))  # corners in any order; edges inclusive; centres at integers
    inside = torch.zeros(6, 8, dtype=torch.bool)
    inside[1:4, 3:7] = True  # rows 1..3.5, columns 2.4..6
    assert torch.equal(clipped > 0, inside)
    assert torch.equal(logits, torch.full((6, 8), 5.0)), "the input was modified"
    label = assemble_slice(clipped[None], torch.tensor([3]), {}, None, "keep")
    assert torch.equal(label != 0, inside)


def test_honour_clicks_sets_the_pixel_under_each_click_and_nothing_else():
    from sam2med.engine.overlap import honour_clicks

    logits = torch.full((6, 8), -3.0)
    logits[2:5, 2:6] = 4.0  # the model's object
    # a negative click inside the object (2.6 -> row 3), a positive one outside it (5.4 -> column 5), one off the edge
    out = honour_clicks(logits, [(2.6, 3.4), (0.49, 5.4), (9.0, -2.0)], [0, 1, 0])
    expected = logits > 0
    expected[3, 3] = False
    expected[0, 5] = True
    expected[5, 0] = False  # the clamped pixel of the click off the edge (it was background already)
    assert torch.equal(out > 0, expected)
    assert torch.equal(logits[2:5, 2:6], torch.full((3, 4), 4.0)), "the input was modified"
    label = assemble_slice(torch.stack([out, logits]), torch.tensor([3, 4]), {}, None, "confidence")
    assert label[3, 3] == 4 and label[0, 5] == 3  # clicked away from 3, the other object keeps the pixel
