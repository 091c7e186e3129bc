"""One-prompt segmentation of unordered 2D images through the real tracker (random weights, 256 px).

Random weights cannot show quality. What is tested: the prompt image gets its seed back, every image's
mask is on its own grid (also when resampled for tracking), and the memory each image attends to is the
selective rule's (`select_memory`), never just the images tracked last, with SAM2's scores set by the
test-only `Propagator.frame_hook`.
"""

import numpy as np
import pytest
import torch

from sam2med.engine.oneprompt import Frame, check_seed, resize_labels, resize_pixels, segment_unordered
from sam2med.engine.policies import SelectiveMemory
from sam2med.errors import PromptError
from tests.engine.test_policies import _logit
from tests.test_images2d import ct_slices


def test_resampling_keeps_label_values_and_sizes():
    labels = np.array([[0, 5], [1, 7]], dtype=np.uint8)
    np.testing.assert_array_equal(resize_labels(labels, (4, 6)), np.repeat(np.repeat(labels, 2, axis=0), 3, axis=1))
    np.testing.assert_array_equal(resize_labels(resize_labels(labels, (4, 6)), (2, 2)), labels)
    assert resize_labels(labels, (2, 2)) is labels
    ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (4, 1))
    assert resize_pixels(ramp, (3, 5)).shape == (3, 5) and 0 <= resize_pixels(ramp, (3, 5)).min() < 0.2


def test_seed_must_fit_the_prompt_and_hold_something():
    with pytest.raises(PromptError, match="seed is 4x3 pixels but the prompt image is 5x3"):
        check_seed(np.zeros((3, 5)), np.ones((3, 4), np.uint8))
    with pytest.raises(PromptError, match="empty"):
        check_seed(np.zeros((3, 5)), np.zeros((3, 5), np.uint8))
    assert check_seed(np.zeros((3, 5)), np.array([[0, 7, 7, 2, 0]] * 3, np.uint8)) == [2, 7]


@pytest.fixture
def hooked(propagator):
    yield propagator
    propagator.frame_hook = None


@pytest.mark.integration
def test_prompt_keeps_its_seed_masks_on_own_grids_and_memory_is_selective(shared_data, hooked):
    hu, labels = ct_slices(shared_data)
    window = lambda a: np.clip((a.astype(np.float32) + 160.0) / 400.0, 0, 1)  # noqa: E731
    prompt = Frame("p.png", window(hu[24]))
    seed = np.where(np.isin(labels[24], [1, 5]), labels[24], 0).astype(np.uint8)
    picks = [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]
    others = [Frame(f"img{s:02d}", window(hu[s])) for s in picks]
    others[3] = Frame("img11_big", np.repeat(np.repeat(window(hu[11]), 2, axis=0), 2, axis=1))  # another size
    # predicted IoU per image (object score 0.9 everywhere); img20 is under min_iou and never remembered
    ious = dict(zip([f.name for f in others], [0.9, 0.95, 0.5, 0.85, 0.8, 0.7, 0.2, 0.6, 0.65, 0.75]))
    names = {i + 1: f.name for i, f in enumerate(others)}

    def hook(frame, label, out, mask):
        out["object_score_logits"] = torch.full_like(out["object_score_logits"], _logit(0.9))
        out["iou"] = ious[names[frame]]
        return torch.full_like(mask, 10.0 if label == 5 else -1024.0)  # liver over the whole image, no spleen

    hooked.frame_hook = hook
    rule = SelectiveMemory(min_object_score=0.5, min_iou=0.3, dissimilarity=0.0)
    result = segment_unordered(hooked, prompt, seed, others, memory=rule)

    assert [f.name for f in result.frames] == ["p.png"] + [f.name for f in others]
    first = result.frames[0]
    assert first.prompt and first.tracked_size is None
    np.testing.assert_array_equal(first.mask, seed)  # values 1 and 5 kept
    assert first.scores[5].iou is None and first.scores[5].memory is None and first.scores[5].area == int((seed == 5).sum())

    big = result.frames[4]
    assert big.name == "img11_big" and big.mask.shape == (202, 244) and big.tracked_size == (101, 122)
    for frame, source in zip(result.frames[1:], others):
        assert frame.mask.shape == source.pixels.shape and (frame.mask == 5).all(), frame.name
        assert frame.scores[5].area == frame.mask.size and frame.scores[1].area == 0

    eligible = [f.name for f in others if ious[f.name] >= 0.3]
    for position, frame in enumerate(result.frames[1:]):
        seen = [n for n in (f.name for f in others[:position]) if n in eligible]
        expected = sorted(seen, key=lambda n: (ious[n], seen.index(n)), reverse=True)[:6]
        assert sorted(frame.scores[5].memory) == sorted(expected), frame.name
    last = result.frames[-1].scores[5].memory
    recent = [f.name for f in others[-7:-1]]
    assert set(last) == {"img02", "img05", "img11_big", "img14", "img17", "img26"} and set(last) != set(recent)
    assert result.memory == rule.to_json()
