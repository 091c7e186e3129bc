"""Request parsing for the MONAI Label tasks: what clients send (JSON or options-table strings) and what is refused."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from sam2med.errors import InputError, PromptError
from sam2med.geometry import Axis, Grid
from sam2med.monailabel.appconfig import AppConfig
from sam2med.monailabel.params import (
    OutputFormat,
    check_model,
    click_seeds,
    parse_axis,
    parse_label_subset,
    parse_points,
    parse_propagate,
    parse_seed_tag,
    parse_policies,
    parse_slice_range,
)
from sam2med.monailabel.http import to_http
from sam2med.monailabel.safety import (
    AccessError,
    NotFoundError,
    check_image_reference,
    check_session_id,
    is_upload,
    registered_uploads,
    remove_uploads,
    request_uploads,
    scrub_paths,
    upload_suffix,
)
from sam2med.prompts import SliceRange

NAMES = {"spleen": 1, "liver": 5}
GRID = Grid(shape=(40, 30, 20), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


@pytest.mark.parametrize("value, expected", [
    ([3, 7], (3, 7)), (["3", "7"], (3, 7)), ("3,7", (3, 7)), ("3:7", (3, 7)), ("3-7", (3, 7)), ("[3, 7]", (3, 7)),
    ((5, 5), (5, 5)), (None, (0, 19)), ("", (0, 19)), ("all", (0, 19)), ([], (0, 19)),
    ([7, 3], (3, 7)), ("7,3", (3, 7)), ("7-3", (3, 7)), (["19", "0"], (0, 19)),  # Start/End set from the other end
])
def test_slice_range_forms(value, expected):
    assert parse_slice_range(value, 20) == SliceRange(*expected)


@pytest.mark.parametrize("value, message", [
    ([20, 0], "outside the volume"), ([0, 20], "outside the volume"), ([-1, 3], "outside the volume"), ([1, 2, 3], "two slice indices"),
    ("a,b", "two integers"), (5, "two slice indices"), ([1.5, 3], "integer"), ([True, 3], "integer"),
])
def test_slice_range_rejections_name_the_problem(value, message):
    with pytest.raises(PromptError, match=message):
        parse_slice_range(value, 20)


def test_axis_accepts_names_numbers_and_a_config_list():
    assert parse_axis(None) is Axis.AXIAL
    assert parse_axis("Coronal") is Axis.CORONAL
    assert parse_axis(0) is Axis.SAGITTAL
    assert parse_axis(["axial", "coronal", "sagittal"]) is Axis.AXIAL  # the config default echoed back
    with pytest.raises(PromptError, match="unknown axis"):
        parse_axis("oblique")


def test_label_subset_by_value_or_name():
    assert parse_label_subset(None, NAMES) is None
    assert parse_label_subset("", NAMES) is None
    assert parse_label_subset("5,1", NAMES) == [1, 5]
    assert parse_label_subset(["Liver", 1], NAMES) == [1, 5]
    assert parse_label_subset(7, NAMES) == [7]  # checked against the seed later
    with pytest.raises(PromptError, match="unknown label name 'kidney'.*liver=5"):
        parse_label_subset("kidney", NAMES)
    with pytest.raises(PromptError, match="positive"):
        parse_label_subset("0", NAMES)


def test_propagate_defaults_and_ohif_output_options():
    params = parse_propagate({}, NAMES)
    assert (params.axis, params.window, params.labels, params.seed_tag) == (Axis.AXIAL, "auto", None, "final")
    assert params.output == OutputFormat(".nii.gz", None, True)
    ohif = parse_propagate({"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False,
                            "window": ["auto", "liver"], "seed_tag": "seed"}, NAMES)
    assert ohif.output == OutputFormat(".nrrd", "uint8", False)
    assert (ohif.window, ohif.seed_tag) == ("auto", "seed")
    assert OutputFormat.parse({"result_extension": "nii", "result_compress": "false"}) == OutputFormat(".nii", None, False)


def test_overlap_locked_labels_and_the_request_s_label_names():
    assert (parse_propagate({}, NAMES).overlap, parse_propagate({}, NAMES).locked) == ("keep", ())
    assert parse_propagate({"overlap": ["keep", "overwrite", "confidence"]}, NAMES).overlap == "keep"  # config default echoed
    assert parse_propagate({"overlap": " Confidence "}, NAMES).overlap == "confidence"
    named = parse_propagate({"label_names": {"liver QA": 5, "7": "cyst"}, "locked_labels": ["liver QA", 1],
                             "labels": "cyst"}, NAMES)
    assert named.names == {1: "spleen", 5: "liver QA", 7: "cyst"} and named.locked == (1, 5) and named.labels == [7]
    as_text = parse_propagate({"label_names": '{"2": "kidney"}', "locked_labels": '[2, "spleen"]'}, NAMES)
    assert as_text.locked == (1, 2) and parse_propagate({"locked_labels": "2, 5"}, NAMES).locked == (2, 5)


@pytest.mark.parametrize("request_, message", [
    ({"result_extension": ".png"}, "result_extension"), ({"result_dtype": "float32"}, "result_dtype"),
    ({"result_compress": "maybe"}, "true or false"), ({"seed_tag": "../final"}, "not a label tag name"),
    ({"overlap": "union"}, "overlap must be one of keep, overwrite, confidence, got 'union'"),
    ({"locked_labels": "kidney"}, "locked_labels: unknown label name 'kidney'"),
    ({"locked_labels": "[1,"}, "locked_labels must be a list"), ({"locked_labels": [0]}, "locked_labels: .*positive"),
    ({"label_names": [1]}, "label_names must be an object"), ({"label_names": "{"}, "label_names must be a JSON object"),
    ({"label_names": {"liver": 0}}, "positive label value"), ({"label_names": {"5": ""}}, "is not a name"),
])
def test_propagate_rejections(request_, message):
    with pytest.raises(PromptError, match=message):
        parse_propagate(request_, NAMES)


def test_seed_tag_and_model_checks():
    assert parse_seed_tag(None) == "final"
    assert parse_seed_tag("original") == "original"
    with pytest.raises(PromptError):
        parse_seed_tag("a/b")
    check_model(None, "tiny")
    check_model("tiny", "tiny")
    with pytest.raises(PromptError, match="restart it with --model large"):
        check_model("large", "tiny")


def test_points_grouped_per_slice_with_ohif_voxel_order():
    params = parse_points({"foreground": [[10, 20, 5], [12, 22, 5], [3, 4, 9]], "background": [[1, 2, 5]],
                           "label_value": "liver"}, NAMES)
    seeds = click_seeds(params, GRID)
    assert seeds.labels == [5] and seeds.slices == [5, 9]
    on_5 = seeds.prompts[5][0]
    # axial slices are (row = y, column = x)
    assert on_5.points_rc == ((20.0, 10.0), (22.0, 12.0), (2.0, 1.0)) and on_5.point_labels == (1, 1, 0)
    assert on_5.box_rc is None


def test_roi_box_on_every_slice_it_spans_for_any_axis():
    monai = {"roi_order": "x0,y0,x1,y1,z0,z1"}
    axial = click_seeds(parse_points({"roi": [2, 3, 12, 13, 4, 6], **monai}, NAMES), GRID)
    assert axial.slices == [4, 5]  # end exclusive, as MONAI Label's SAM2 reads roi
    assert axial.prompts[1][0].box_rc == (3.0, 2.0, 13.0, 12.0)
    coronal = click_seeds(parse_points({"roi": [2, 3, 12, 5, 4, 6], "axis": "coronal", **monai}, NAMES), GRID)
    assert coronal.slices == [3, 4]  # y 3..5 along the coronal axis
    assert coronal.prompts[1][0].box_rc == (4.0, 2.0, 6.0, 12.0)  # rows = z, columns = x


@pytest.mark.parametrize("request_, message", [
    ({}, "at least one foreground point or an roi"), ({"foreground": [[1, 2]]}, r"not an \[x, y, z\]"),
    ({"foreground": "10,20,5"}, "list of"), ({"foreground": [[1, "a", 2]]}, "non-number"),
    ({"roi": [1, 2, 3, 4]}, r"roi must be six voxel numbers, \[x0, x1, y0, y1, z0, z1\] \(3D Slicer\) or \[x0, y0, x1, y1"),
    ({"roi": [1, 2, 3, 4, 5, 6], "roi_order": "xyz"}, "roi_order must be 'x0,x1,y0,y1,z0,z1' or 'x0,y0,x1,y1,z0,z1'"),
    ({"foreground": [[1, 2, 3]], "segment": "liver", "label_info": [{"name": "spleen", "idx": 1}]}, "not named in label_info"), ({"background": [[1, 2, 3]]}, "foreground point"),
])
def test_points_rejections(request_, message):
    with pytest.raises(PromptError, match=message):
        parse_points(request_, NAMES)


def test_points_outside_the_image_are_refused():
    with pytest.raises(PromptError, match="outside the image"):
        click_seeds(parse_points({"foreground": [[40, 1, 1]]}, NAMES), GRID)


def test_image_references_stay_in_the_datastore(tmp_path):
    known = {"ct"}
    check_image_reference("ct", known.__contains__)
    with pytest.raises(NotFoundError):
        check_image_reference("mr", known.__contains__)
    for bad in ("../ct", "/etc/passwd", "a/b", "..", ""):
        with pytest.raises(AccessError):
            check_image_reference(bad, known.__contains__)
    session = tmp_path / "sessions" / "s1" / "image.nii.gz"
    session.parent.mkdir(parents=True)
    session.write_bytes(b"x")
    check_image_reference(str(session), known.__contains__, [tmp_path / "sessions"])


def test_only_files_this_request_uploaded_count_as_uploads(tmp_path):
    """A temp-named file in the temp dir is no upload (issue 16.1): only what the route registered for this request."""
    with tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False) as victim:
        pass
    try:
        assert not is_upload(victim.name), "a temp-file name proves nothing"
        with pytest.raises(AccessError):
            check_image_reference(victim.name, lambda i: True)
        mine = tmp_path / "image.nii.gz"
        mine.write_bytes(b"x")
        with registered_uploads([str(mine)]) as uploads:
            assert is_upload(str(mine)) and request_uploads() == uploads
            assert not is_upload(victim.name) and not is_upload("/etc/hostname") and not is_upload(None)
            check_image_reference(str(mine), lambda i: False)
            remove_uploads(victim.name, str(mine))
        assert not mine.exists() and Path(victim.name).exists(), "only this request's upload is removed"
        assert request_uploads() == frozenset(), "the registration ends with the request"
        assert not is_upload(str(mine)), "a missing file is no upload"
    finally:
        Path(victim.name).unlink()


def test_error_details_name_what_the_client_knows_never_a_server_path():
    """Issue 16.2: details named server paths, other clients' uploads included."""
    upload = "/srv/tmp/sam2med_upload_x1/label.nii.gz"
    names = {upload: "the uploaded seed", "/data/studies/ct.nii.gz": "image 'ct'"}
    assert scrub_paths(f"{upload}: is truncated", names) == "the uploaded seed: is truncated"
    assert scrub_paths("/data/studies/ct.nii.gz: 2 voxels are NaN", names) == "image 'ct': 2 voxels are NaN"
    assert scrub_paths("cannot read '/var/lib/other/tmpab12cd.nii.gz' (ITK)") == "cannot read '<server path>' (ITK)"
    for kept in ("window 40,400", "image '../studies/ct' is not a datastore image id", "slices 0..19 along this axis"):
        assert scrub_paths(kept) == kept
    http = to_http(InputError("/data/studies/ct.nii.gz: cannot read it as an image"))
    assert http is not None and http.status_code == 400 and http.detail == "<server path>: cannot read it as an image"


@pytest.mark.parametrize("filename, suffix", [
    ("CT_2024.01.05.nii.gz", ".nii.gz"), ("seed.v2.nii.gz", ".nii.gz"), ("SEED.NRRD", ".nrrd"), ("labels.bin", ".bin"),
    ("scan.my-format", ""), ("scan.abcdefghijk", ".abcdefghijk"), ("noext", ""), (None, ""), ("../../etc/x.mha", ".mha"),
])
def test_upload_suffix_keeps_the_format_whatever_the_name(filename, suffix):
    assert upload_suffix(filename) == suffix


def test_session_ids_name_existing_sessions():
    known = {"4b9c1f0e-8a7d-11ef-b864-0242ac120002"}
    check_session_id("4b9c1f0e-8a7d-11ef-b864-0242ac120002", known.__contains__)
    for bad in ("bogus", "../../etc", "", "a" * 65):
        with pytest.raises(NotFoundError, match="does not exist"):
            check_session_id(bad, known.__contains__)


def test_app_config_from_conf(tmp_path):
    defaults = {"tasks": ["sam2_propagate", "sam2_points"], "strategies": ["ordered", "first", "random"]}
    config = AppConfig.from_conf({"image_size": "256", "preload": "false", "labels": '{"liver": 5}', "tasks": "sam2_propagate"},
                                 str(tmp_path), defaults)
    assert (config.image_size, config.preload, config.labels, config.tasks) == (256, False, {"liver": 5}, ["sam2_propagate"])
    assert config.strategies == defaults["strategies"] and config.warmup == "auto"
    (tmp_path / "samples.json").write_text('{"labels": {"brain": 1, "white_matter": 2}}')
    assert AppConfig.from_conf({}, str(tmp_path), defaults).labels == {"brain": 1, "white_matter": 2}
    assert AppConfig.from_conf({"cache_gb": "1.5"}, str(tmp_path), defaults).cache_gb == 1.5
    assert AppConfig.from_conf({}, str(tmp_path), defaults).cache_gb is None
    for conf, message in (({"model": "huge"}, "choose one of"), ({"tasks": "sam3"}, "unknown"),
                          ({"cache_gb": "lots"}, "must be numbers"), ({"cache_gb": "0"}, "positive"),
                          ({"labels": '{"x": 0}'}, "positive"), ({"preload": "perhaps"}, "true or false")):
        with pytest.raises(InputError, match=message):
            AppConfig.from_conf(conf, str(tmp_path), defaults)


def test_unnamed_labels_are_label_n_everywhere(tmp_path):
    from sam2med.evaluation.runner import _target_name
    from sam2med.monailabel.params import describe_labels

    config = AppConfig.from_conf({}, str(tmp_path), {"tasks": [], "strategies": []})
    assert config.labels == {"label 1": 1}
    assert describe_labels([1, 2, 5], {"liver": 5}) == {"label 1": 1, "label 2": 2, "liver": 5}
    assert parse_label_subset("label 1", config.labels) == [1]
    assert _target_name(7, {5: "liver"}) == "label 7" and _target_name(5, {5: "liver"}) == "liver"


def test_policies_default_off_and_auto_options():
    from sam2med.engine.policies import AutoRange, SelectiveMemory

    assert parse_policies({}, False) == {"auto": None, "memory": None}
    assert parse_policies({"memory": ["recent", "selective"]}, False) == {"auto": None, "memory": None}  # a config echo
    got = parse_policies({"absent_slices": "4", "min_object_score": 0.3, "max_slices": 10, "memory": "selective"}, True)
    assert got == {"auto": AutoRange(4, 0.3, 10), "memory": SelectiveMemory()}
    assert parse_policies({}, True)["auto"] == AutoRange()
    for request, message in (({"absent_slices": 2}, 'applies to slice_range "auto" only'), ({"memory": 3}, "memory must be"),
                             ({"memory": "oldest"}, "recent, selective")):
        with pytest.raises(PromptError, match=message):
            parse_policies(request, False)
    for request, message in (({"absent_slices": "2.5"}, "whole number"), ({"min_object_score": "high"}, "must be a number"),
                             ({"max_slices": 0}, "at least 1"), ({"absent_slices": True}, "whole number")):
        with pytest.raises(PromptError, match=message):
            parse_policies(request, True)


def test_roi_in_3d_slicers_order_spans_its_corner_slices():
    """The plugin's getROIPointsXYZ: [x0, x1, y0, y1, z0, z1], corners possibly swapped by the IJK direction."""
    request = {"roi": [30, 6, 4, 25, 12, 9], "roi_order": "x0, x1, y0, y1, z0, z1"}
    seeds = click_seeds(parse_points(request, NAMES), GRID)
    assert seeds.slices == [9, 10, 11, 12]  # both corner slices included
    assert {p.box_rc for p in seeds.prompts[1]} == {(4.0, 6.0, 25.0, 30.0)}  # rows y 4..25, columns x 6..30
    edge = click_seeds(parse_points({"roi": [0, 40, 0, 30, 18, 20], "roi_order": "x0,x1,y0,y1,z0,z1"}, NAMES), GRID)
    assert edge.slices == [18, 19]  # a far corner on the image's edge rounds to its size: the last slice


def test_roi_without_order_is_read_in_the_one_order_that_fits_else_refused():
    # x0=30 x1=6 y0=4 y1=25 read as MONAI's [x0, y0, x1, y1]: y 6..25 ok, x 30..4 ok, z ok -> fits both: ambiguous
    with pytest.raises(PromptError, match=r"fits the image read as \[x0, x1, y0, y1, z0, z1\] \(3D Slicer\) or .*roi_order"):
        click_seeds(parse_points({"roi": [30, 6, 4, 25, 12, 9]}, NAMES), GRID)
    # x1 = 35 is outside y (30 voxels) when read as MONAI's y0: only 3D Slicer's order fits
    only_slicer = click_seeds(parse_points({"roi": [2, 35, 4, 25, 12, 14]}, NAMES), GRID)
    assert only_slicer.slices == [12, 13, 14] and only_slicer.prompts[1][0].box_rc == (4.0, 2.0, 25.0, 35.0)
    with pytest.raises(PromptError, match=r"outside the image \(40x30x20 voxels\) read as \[x0, x1"):
        click_seeds(parse_points({"roi": [2, 35, 4, 45, 12, 14]}, NAMES), GRID)
    with pytest.raises(PromptError, match=r"roi y range 35\.\.25 is outside .* reading roi as \[x0, y0, x1, y1, z0, z1\]"):
        click_seeds(parse_points({"roi": [2, 35, 4, 25, 12, 14], "roi_order": "x0,y0,x1,y1,z0,z1"}, NAMES), GRID)


def test_points_label_is_the_clicked_segment_by_name():
    """3D Slicer sends the segment's name as `label` (kept as `segment` by the routes) and the table's label_value 1:
    the server's label of that name inside, value 1 in the answer; with label_info, that segment's value."""
    plugin = parse_points({"foreground": [[1, 2, 3]], "segment": "liver", "label_value": 1}, NAMES)
    assert plugin.label == 5 and plugin.labels.to_client() == {5: 1}
    listed = parse_points({"foreground": [[1, 2, 3]], "segment": "Liver",
                           "label_info": [{"name": "spleen", "idx": 1}, {"name": "Liver", "idx": 2}]}, NAMES)
    assert listed.label == 5 and listed.labels.to_client() == {1: 1, 5: 2}
    unknown = parse_points({"foreground": [[1, 2, 3]], "segment": "tumour"}, NAMES)
    assert unknown.label not in NAMES.values() and unknown.labels.to_client() == {unknown.label: 1}
    assert parse_points({"foreground": [[1, 2, 3]], "label_value": "liver"}, NAMES).labels is None


def test_label_info_is_matched_to_the_servers_labels_by_name():
    from sam2med.labelnames import LabelMapping, parse_label_info, relabel

    plugin = [{"name": "liver", "idx": 1}, {"name": "spleen", "idx": 2}, {"name": "Segment_1", "idx": 3}]
    mapping = LabelMapping.match(parse_label_info(plugin), NAMES)
    assert mapping.to_server() == {1: 5, 2: 1, 3: 3} and mapping.to_client() == {5: 1, 1: 2, 3: 3}
    assert LabelMapping.match({"Segment_1": 5}, NAMES).to_server() == {5: 6}  # 5 is liver's: the next free value
    assert parse_label_info({"liver": 1}) == parse_label_info('{"liver": 1}') == {"liver": 1}
    array = np.array([0, 1, 2, 3, 2], dtype=np.uint8)
    np.testing.assert_array_equal(relabel(array, mapping.to_server(), "the seed"), [0, 5, 1, 3, 1])
    with pytest.raises(PromptError, match=r"the seed holds label value\(s\) 4 that label_info does not name"):
        relabel(np.array([0, 4]), mapping.to_server(), "the seed")
    for bad, message in (([{"name": "liver"}], "value of 'liver' must be a label value"),
                         ([{"name": "a", "idx": 1}, {"name": "A", "idx": 2}], "names 'A' twice"),
                         ({"a": 1, "b": 1}, "gives value 1 to two names"), ("nope", "label_info must be a list"),
                         ([{"idx": 1}], "has no name"), ({"a": True}, "must be a label value")):
        with pytest.raises(PromptError, match=message):
            parse_label_info(bad)


def test_no_seed_option():
    assert parse_propagate({}, NAMES).no_seed == "error"
    assert parse_propagate({"no_seed": ["skip", "error"]}, NAMES).no_seed == "skip"
    with pytest.raises(PromptError, match="no_seed must be skip or error"):
        parse_propagate({"no_seed": "ignore"}, NAMES)
