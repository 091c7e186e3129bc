import numpy as np
import pytest

from sam2med.errors import PromptError
from sam2med.geometry import Axis, Grid
from sam2med.prompts import ClickPrompt, ClickSeeds, SliceRange, parse_labels, seeds_from_label

GRID = Grid((8, 6, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_slice_range_parse_forms():
    assert SliceRange.parse(None, 10) == SliceRange(0, 9)
    assert SliceRange.parse([2, 5], 10) == SliceRange(2, 5)
    assert SliceRange.parse("2,5", 10) == SliceRange(2, 5)
    assert len(SliceRange(2, 5)) == 4 and 5 in SliceRange(2, 5) and 6 not in SliceRange(2, 5)


@pytest.mark.parametrize("value,message", [([5, 2], "reversed"), ([0, 10], "outside the volume"), ([-1, 3], "outside the volume"),
                                           ([1], "two slice indices"), ("a,b", "two integers")])
def test_slice_range_errors(value, message):
    with pytest.raises(PromptError, match=message):
        SliceRange.parse(value, 10)


def _seed():
    seed = np.zeros(GRID.shape, np.uint8)
    seed[2:5, 1:4, 4] = 3
    seed[5:7, 2:4, 6] = 8
    return seed


def test_seeds_per_label_and_slice():
    seeds = seeds_from_label(_seed(), GRID, GRID, Axis.AXIAL, SliceRange(0, 9))
    assert seeds.labels == [3, 8]
    assert list(seeds.masks[3]) == [4] and list(seeds.masks[8]) == [6]
    mask = seeds.masks[3][4]
    assert mask.shape == (6, 8) and mask.sum() == 9  # (H, W) = (y, x)
    assert mask[1:4, 2:5].all()


def test_seed_label_subset():
    seeds = seeds_from_label(_seed(), GRID, GRID, Axis.AXIAL, SliceRange(0, 9), labels=[8])
    assert seeds.labels == [8]


def test_either_order_and_locked_labels_and_named_errors():
    from sam2med.prompts import locked_voxels, parse_label_ranges

    assert SliceRange.parse([7, 2], 10, either_order=True) == SliceRange(2, 7)
    assert parse_label_ranges("8:6-1", 10, either_order=True) == {8: SliceRange(1, 6)}
    seeds = seeds_from_label(_seed(), GRID, GRID, Axis.AXIAL, SliceRange(0, 9), locked=[3])
    assert seeds.labels == [8], "a locked label is not propagated"
    locked = locked_voxels(_seed(), GRID, GRID, [3])
    assert np.array_equal(locked, np.where(_seed() == 3, 3, 0)) and locked_voxels(_seed(), GRID, GRID, []) is None
    names = {3: "liver QA"}
    with pytest.raises(PromptError, match=r"label\(s\) \['liver QA' \(value 3\)\] are locked"):
        seeds_from_label(_seed(), GRID, GRID, Axis.AXIAL, SliceRange(0, 9), labels=[3], locked=[3], names=names)
    with pytest.raises(PromptError, match="every label of the seed is locked"):
        seeds_from_label(_seed(), GRID, GRID, Axis.AXIAL, SliceRange(0, 9), locked=[3, 8])
    with pytest.raises(PromptError, match=r"label 'liver QA' \(value 3\) is drawn on slice\(s\) \[4\], outside the slice range 5..9"):
        seeds_from_label(_seed(), GRID, GRID, Axis.AXIAL, SliceRange(5, 9), names=names)


def test_seed_errors():
    with pytest.raises(PromptError, match="empty"):
        seeds_from_label(np.zeros(GRID.shape, np.uint8), GRID, GRID, Axis.AXIAL, SliceRange(0, 9))
    other = Grid((8, 6, 9), GRID.spacing, GRID.origin, GRID.direction)
    with pytest.raises(PromptError, match="not on the image grid.*shape"):
        seeds_from_label(np.zeros(other.shape, np.uint8), other, GRID, Axis.AXIAL, SliceRange(0, 8))
    moved = Grid(GRID.shape, GRID.spacing, (0.0, 0.0, 5.0), GRID.direction)
    with pytest.raises(PromptError, match="origin"):
        seeds_from_label(_seed(), moved, GRID, Axis.AXIAL, SliceRange(0, 9))
    with pytest.raises(PromptError, match=r"label value\(s\) \[4\] not in the seed"):
        seeds_from_label(_seed(), GRID, GRID, Axis.AXIAL, SliceRange(0, 9), labels=[4])
    with pytest.raises(PromptError, match="label 8 is drawn on slice.*6.*outside the slice range 0..5"):
        seeds_from_label(_seed(), GRID, GRID, Axis.AXIAL, SliceRange(0, 5))


def test_parse_labels():
    assert parse_labels(None) is None
    assert parse_labels("5, 2") == [2, 5]
    assert parse_labels([3]) == [3]
    with pytest.raises(PromptError):
        parse_labels("liver")
    with pytest.raises(PromptError):
        parse_labels([0])


def test_click_prompt_checks():
    ok = ClickSeeds(Axis.AXIAL, {1: [ClickPrompt(4, ((2.0, 3.0),), (1,))]})
    ok.check(GRID, SliceRange(0, 9))
    bad_cases = [
        (ClickSeeds(Axis.AXIAL, {1: [ClickPrompt(4, ((7.0, 3.0),), (1,))]}), "outside the 6x8 slice"),
        (ClickSeeds(Axis.AXIAL, {1: [ClickPrompt(4, ((2.0, 3.0),), (0,))]}), "foreground"),
        (ClickSeeds(Axis.AXIAL, {1: [ClickPrompt(4)]}), "at least one point or a box"),
        (ClickSeeds(Axis.AXIAL, {1: [ClickPrompt(4, box_rc=(3, 3, 2, 5))]}), "empty or outside"),
        (ClickSeeds(Axis.AXIAL, {1: [ClickPrompt(9, ((2.0, 3.0),), (1,))]}), "outside the slice range"),
        (ClickSeeds(Axis.AXIAL, {}), "no click"),
    ]
    for seeds, message in bad_cases:
        with pytest.raises(PromptError, match=message):
            seeds.check(GRID, SliceRange(0, 8))


def test_per_label_ranges_forms_and_errors():
    from sam2med.prompts import is_label_range_spec, parse_label_ranges, resolve_label_ranges

    names = {"liver": 5, "spleen": 1}
    expected = {5: SliceRange(10, 40), 1: SliceRange(12, 30)}
    for spec in (["5:10-40", "spleen:12-30"], "5:10-40; 1:12-30", "liver:10-40 1:12-30", {"5": [10, 40], "spleen": "12-30"},
                 '{"liver": [10, 40], "1": [12, 30]}'):
        assert is_label_range_spec(spec), spec
        assert parse_label_ranges(spec, 50, names) == expected, spec
    for plain in ("20:60", "20-60", [20, 60], "", None):
        assert not is_label_range_spec(plain), plain
    assert resolve_label_ranges(expected, SliceRange(0, 49), [1, 5]) == (SliceRange(10, 40), {1: SliceRange(12, 30)})
    # the plain range bounds every label without its own: label 1 is tracked through 20..45 only, not the covering 10..45
    assert resolve_label_ranges({5: SliceRange(10, 40)}, SliceRange(20, 45), [1, 5]) == (
        SliceRange(10, 45), {1: SliceRange(20, 45), 5: SliceRange(10, 40)})
    assert resolve_label_ranges({}, SliceRange(20, 45), [1, 5]) == (SliceRange(20, 45), {})
    for spec, message in (("kidney:1-3", "kidney"), ("5:10-60", "outside the volume"), ("5:30-10", "reversed"),
                          (["5:1-3", "5:2-4"], "two ranges"), ("{oops", "not valid JSON")):
        with pytest.raises(PromptError, match=message):
            parse_label_ranges(spec, 50, names)
    with pytest.raises(PromptError, match=r"label\(s\) \[7\], which are not propagated"):
        resolve_label_ranges({7: SliceRange(1, 2)}, SliceRange(0, 49), [1, 5])


def test_range_request_takes_start_end_in_one_token_and_mixed_texts():
    from sam2med.prompts import RangeRequest

    assert RangeRequest.from_groups([["10-20"]]) == RangeRequest([10, 20])
    assert RangeRequest.from_groups([["10-20"], ["liver:3-9"]]) == RangeRequest([10, 20], ["liver:3-9"])
    assert RangeRequest.from_text("16-26; liver:14-29 2:2-14") == RangeRequest([16, 26], ["liver:14-29", "2:2-14"])
    assert RangeRequest.from_text("auto 2:3-9") == RangeRequest(None, ["2:3-9"], True)
    with pytest.raises(PromptError, match="given twice"):
        RangeRequest.from_groups([["10-20"], ["11", "12"]])


@pytest.mark.parametrize("drawn_on,asked", [(Axis.AXIAL, Axis.CORONAL), (Axis.AXIAL, Axis.SAGITTAL), (Axis.CORONAL, Axis.AXIAL),
                                            (Axis.SAGITTAL, Axis.CORONAL)])
def test_a_seed_on_one_slice_of_another_axis_gets_an_axis_hint(drawn_on, asked):
    from sam2med.prompts import RangeRequest, seed_prompt

    seed = np.zeros(GRID.shape, np.uint8)
    index = [slice(1, 5), slice(1, 5), slice(2, 7)]
    index[int(drawn_on)] = 3
    seed[tuple(index)] = 5
    hint = seed_prompt(seed, GRID, GRID, asked, RangeRequest()).hint
    assert hint is not None and hint.startswith(f"the seed lies on 1 {drawn_on.name.lower()} slice (3) but on ")
    assert hint.endswith(f"did you mean axis {drawn_on.name.lower()}?")
    assert seed_prompt(seed, GRID, GRID, drawn_on, RangeRequest()).hint is None  # drawn and asked along the same axis
    two_slices = seed.copy()
    two_slices[tuple(i if n != int(drawn_on) else 4 for n, i in enumerate(index))] = 5  # a second slice of the drawn axis
    assert seed_prompt(two_slices, GRID, GRID, asked, RangeRequest()).hint is None
