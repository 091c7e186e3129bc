"""What the annotator saves is exactly what they saw, for every slice order and orientation (issue 23).

One Orthanc, one sam2med server and one headless Chromium serve five series of one study: the example CT as
stored; its InstanceNumbers reversed; its column direction flipped (the slice normal reversed, every voxel at
the same patient position) (these two copies keep the central 256 x 256 voxels, at their positions); an MR series; a sagittal acquisition. On each, with real mouse events: two
segments drawn on different images, Start/End typed in OHIF image numbers in the reverse order, Run; the drawn
images come back exactly as drawn and nothing is painted outside the range; a segment locked in the panel stays
exactly as it was through the next Run; Run stores nothing; Save; the SEG read back from Orthanc equals the page
voxel for voxel by patient position; the saved SEG re-opened in OHIF (OHIF's own SEG reader) equals it again.
Random SAM2 weights: geometry and plumbing are checked, never segmentation quality.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from e2e.ohif_browser import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, _get_json, open_viewer, run_panel, stroke
from e2e.series_variants import Variant, crop_xy, relattice, write_series

pytestmark = pytest.mark.e2e

CT_DICOM = "example_ct_dicom"
CROP = (128, 384, 96, 352)  # the copies keep the CT's central 256 x 256 voxels: smaller pages, the same positions
VARIANTS = [
    Variant("as-stored", CT_DICOM),
    Variant("numbers-reversed", CT_DICOM, numbers_along=True, crop=CROP),  # the stored CT numbers against the normal
    Variant("normal-reversed", CT_DICOM, flips=(False, True, False), numbers_along=False, crop=CROP),
    Variant("mr", "example_mr_sm.nii.gz", modality="MR"),
    Variant("sagittal", "example_ct_sm.nii.gz", perm=(1, 2, 0), flips=(False, True, False)),
]

RUNS = """(images) => images.map(im => { const runs = []; const p = im.pixels; let i = 0;  // run-length: [start, length, value]...
  while (i < p.length) { if (!p[i]) { i++; continue; } const v = p[i]; const start = i; while (i < p.length && p[i] === v) i++;
    runs.push(start, i - start, v); }
  return { position: im.plane.position, row: im.plane.row, col: im.plane.col, dx: im.plane.dx, dy: im.plane.dy,
           rows: im.plane.rows, columns: im.plane.columns, runs }; })"""
TWO_RUNS = ("as-stored", "mr")  # Run, then lock segment 1 and Run again; elsewhere segment 1 is locked before one Run
AUTO_RANGE = "numbers-reversed"  # and a third Run with auto range
SNAPSHOT = f"""() => {{ const c = window.sam2med; const seg = c.segmentation(c.activeViewport().viewportId);
  return ({RUNS})(c.labelmapImages(seg)); }}"""
SHOWN_INDEX = "() => window.sam2med.activeViewport().viewport.getCurrentImageIdIndex()"
REOPEN = f"""async (segUid) => {{ const {{ displaySetService, segmentationService }} = window.sam2med.services;
  const ds = displaySetService.getActiveDisplaySets().find(d => d.Modality === 'SEG' && d.SeriesInstanceUID === segUid);
  if (!ds) return 'no SEG display set ' + segUid;
  await ds.load({{ headers: {{}} }});
  const seg = segmentationService.getSegmentation(ds.displaySetInstanceUID);
  if (!seg) return 'OHIF made no segmentation of the SEG';
  const names = Object.fromEntries(Object.values(seg.segments).filter(Boolean).map(s => [s.segmentIndex, s.label]));
  return {{ names, images: ({RUNS})(window.sam2med.labelmapImages(seg)) }}; }}"""


def _pixels(image: dict) -> tuple[np.ndarray, np.ndarray]:
    """(pixel indices, values) of an image's non-zero pixels, from its runs."""
    runs = np.asarray(image["runs"], dtype=np.int64).reshape(-1, 3)
    if not len(runs):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lengths = runs[:, 1]
    starts = np.repeat(runs[:, 0], lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts + offsets, np.repeat(runs[:, 2], lengths)


@pytest.fixture(scope="module")
def matrix_series(orthanc, shared_data, tmp_path_factory) -> dict[str, tuple[str, Path]]:
    """Each variant's SeriesInstanceUID on Orthanc and its local folder (the as-stored CT is the uploaded one)."""
    import pydicom

    from sam2med.dicom.series import repaired_copy
    from sam2med.dicom.upload import upload_series
    from sam2med.io import load_volume

    root = tmp_path_factory.mktemp("matrix")
    stored = root / "as-stored"
    repaired_copy(shared_data / "totalsegmentator" / CT_DICOM, stored)  # the UIDs upload_example.sh gave
    template = pydicom.dcmread(next(stored.iterdir()), stop_before_pixels=True)
    out = {"as-stored": (orthanc["series"], stored)}
    for number, variant in enumerate(VARIANTS[1:], 20):
        source = stored if variant.volume == CT_DICOM else shared_data / "totalsegmentator" / variant.volume
        volume = load_volume(source)
        array, grid = volume.array, volume.grid
        if variant.crop:
            array, grid = crop_xy(array, grid, variant.crop)
        array, grid = relattice(array, grid, variant.perm, variant.flips)
        folder = root / variant.name
        uid = write_series(array, grid, template, folder, f"matrix {variant.name}", number, variant.modality,
                           variant.numbers_along, same_frame=variant.volume == CT_DICOM)
        upload_series(str(folder), orthanc["url"])
        out[variant.name] = (uid, folder)
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def _scroll_to_index(page, viewport, index: int) -> None:
    """Mouse-wheel to OHIF's image `index` (0-based); the wheel's direction is learnt."""
    box = viewport.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    delta = 100
    for _ in range(200):
        before = page.evaluate(SHOWN_INDEX)
        if before == index:
            return
        page.mouse.wheel(0, delta if abs(before - index) > 0 else 0)
        time.sleep(0.15)
        after = page.evaluate(SHOWN_INDEX)
        if abs(after - index) > abs(before - index):
            delta = -delta
    pytest.fail(f"could not scroll to image {index + 1}")


def _add_segment(page) -> None:
    """A second segment, with the segmentation panel's "Add Segment" button; it becomes the active one."""
    page.get_by_role("button", name="Add Segment").first.click()
    time.sleep(0.5)


def _draw(page, viewport, index: int, strokes: list[list[tuple[float, float]]]) -> None:
    _scroll_to_index(page, viewport, index)
    page.locator('[data-cy="Brush"]').first.click()
    for points in strokes:
        stroke(page, viewport, points)


def _on_grid(images: list[dict], grid) -> np.ndarray:
    """The labelmap images of the page (or of OHIF's reading of a SEG) on the series' grid, by patient position."""
    direction = np.asarray(grid.direction, float).reshape(3, 3)
    to_index = np.linalg.inv(direction * np.asarray(grid.spacing)[None, :])
    out = np.zeros(grid.shape, dtype=np.uint16)
    for image in images:
        index, values = _pixels(image)
        if not len(index):
            continue
        j, i = np.divmod(index, image["columns"])
        points = (np.asarray(image["position"])[None, :] + i[:, None] * image["dx"] * np.asarray(image["row"])[None, :]
                  + j[:, None] * image["dy"] * np.asarray(image["col"])[None, :])
        ijk = (points - np.asarray(grid.origin)[None, :]) @ to_index.T
        assert np.abs(ijk - np.round(ijk)).max() < 0.02, "a page image is off the series' lattice"
        ijk = np.round(ijk).astype(int)
        out[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = values
    return out


def _per_image(images: list[dict]) -> list[dict[int, set[int]]]:
    result = []
    for image in images:
        index, values = _pixels(image)
        result.append({int(v): set(index[values == v].tolist()) for v in np.unique(values)})
    return result


def _seg_series(url: str) -> set[str]:
    return {s["0020000E"]["Value"][0] for s in _get_json(f"{url}/series?Modality=SEG")}


@pytest.mark.parametrize("variant", [v.name for v in VARIANTS])
def test_saved_segmentation_is_what_the_page_shows(variant, browser, server, orthanc, matrix_series):
    from playwright.sync_api import expect

    from sam2med.dicom.seg import read_seg, segment_names
    from sam2med.io import load_volume

    series_uid, folder = matrix_series[variant]
    grid = load_volume(folder).grid
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    context.add_cookies([{"name": "MONAILABEL_SERVER_URL", "value": f"{server}/", "url": server}])
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        viewport = open_viewer(page, server, orthanc["study"], series_uid)
        page.locator('[data-cy="sam2med-btn"]').click()
        expect(page.locator('[data-testid="sam2med-current"]')).to_contain_text("current: image", timeout=60_000)
        count = page.evaluate("() => window.sam2med.activeViewport().viewport.getImageIds().length")
        a, b = count // 2 - 1, count // 2 + 1  # 0-based OHIF indices of the two drawn images

        page.locator('[data-cy="panelSegmentationWithTools-btn"]').click()
        page.get_by_text("Add segmentation").first.click()
        time.sleep(1)
        _draw(page, viewport, a, [[(0.40, fy), (0.50, fy), (0.58, fy)] for fy in (0.47, 0.50, 0.53)])
        _add_segment(page)
        _draw(page, viewport, b, [[(0.46, fy), (0.54, fy), (0.62, fy)] for fy in (0.49, 0.52)])
        drawn = _per_image(page.evaluate(SNAPSHOT))
        assert set(drawn[a]) == {1} and set(drawn[b]) == {2}, "the two segments were not drawn on their images"
        assert sum(bool(d) for d in drawn) == 2

        page.locator('[data-cy="sam2med-btn"]').click()
        start, end = b + 3, a - 1  # OHIF image numbers (1-based), typed in the reverse order
        page.locator('[data-testid="sam2med-start"]').fill(str(start))
        page.locator('[data-testid="sam2med-end"]').fill(str(end))
        stored_before = _seg_series(orthanc["url"])
        if variant not in TWO_RUNS:  # segment 1 locked from the start: one Run checks it all
            page.locator('[data-testid="sam2med-lock-1"]').check()
        run_panel(page)
        after = _per_image(page.evaluate(SNAPSHOT))
        if variant not in TWO_RUNS:
            assert [d.get(1, set()) for d in after] == [d.get(1, set()) for d in drawn], "a locked segment changed"
        assert after[a].get(1) == drawn[a][1], "segment 1 is not kept as drawn on its image"
        assert after[b].get(2) == drawn[b][2], "segment 2 is not kept as drawn on its image"
        painted = [i + 1 for i, d in enumerate(after) if d]
        assert painted and min(painted) >= end and max(painted) <= start, f"painted outside images {end}..{start}: {painted}"
        expect(page.locator('[data-testid="sam2med-report"]')).to_contain_text(f"kept as drawn on image {b + 1}")

        if variant in TWO_RUNS:  # lock segment 1 now: the next Run leaves it exactly as it is everywhere
            page.locator('[data-testid="sam2med-lock-1"]').check()
            locked_before = [d.get(1, set()) for d in after]
            run_panel(page)
            after = _per_image(page.evaluate(SNAPSHOT))
            assert [d.get(1, set()) for d in after] == locked_before, "a locked segment changed"
        if variant == AUTO_RANGE:  # auto range: each direction stops where the server says, and the page paints just that
            page.locator('[data-testid="sam2med-auto"]').check()
            report = run_panel(page)
            stops = report["labels"]["2"]["auto_range"]
            assert set(stops) == {"forward", "backward"} and all(s["reason"] for s in stops.values()), stops
            numbers = page.evaluate("async (ks) => { const n = await window.sam2med.numbering(); return ks.map(k => n.slices.indexOf(k) + 1); }",
                                    [stops[d]["last_present"] for d in ("backward", "forward")])
            painted = [i + 1 for i, d in enumerate(_per_image(page.evaluate(SNAPSHOT))) if d.get(2)]
            assert [min(painted), max(painted)] == sorted(numbers), (painted, stops, numbers)
            expect(page.locator('[data-testid="sam2med-report"]')).to_contain_text("auto range forward")
        final = page.evaluate(SNAPSHOT)
        assert _seg_series(orthanc["url"]) == stored_before, "Run stored a series on the DICOM server"

        # Save: the server writes the SEG; it must equal the page by patient position, voxel for voxel.
        page.locator('[data-testid="sam2med-save-name"]').fill(f"matrix {variant}")
        page.locator('[data-testid="sam2med-save"]').click()
        expect(page.locator('[data-testid="sam2med-status"]')).to_contain_text("saved", timeout=120_000)
        saved = page.evaluate("() => window.sam2med.lastSave")
        page.screenshot(path=ARTIFACTS / f"matrix-{variant}.png")
    finally:
        context.close()

    expected = _on_grid(final, grid)
    assert expected.any() and set(np.unique(expected)) == {0, 1, 2}
    from dicomweb_client.api import DICOMwebClient

    instances = DICOMwebClient(url=orthanc["url"]).retrieve_series(orthanc["study"], saved["series_uid"])
    assert len(instances) == 1
    array, _ = read_seg(instances[0], grid)
    assert np.array_equal(array, expected), f"the stored SEG differs from the page in {(array != expected).sum()} voxels"
    assert instances[0].SeriesDescription == f"matrix {variant}"
    assert segment_names(instances[0]) == {1: "Segment 1", 2: "Segment 2"}
    assert {str(s.SegmentAlgorithmType) for s in instances[0].SegmentSequence} == {"SEMIAUTOMATIC"}
    versions = {str(s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion) for s in instances[0].SegmentSequence}
    assert versions == {saved["algorithm"]["version"]} and versions.pop().startswith("tiny:"), versions  # model:checkpoint sha256

    # Re-opened in OHIF (its own SEG reader), the saved segmentation sits on the same voxels.
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    context.add_cookies([{"name": "MONAILABEL_SERVER_URL", "value": f"{server}/", "url": server}])
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        open_viewer(page, server, orthanc["study"], f"{series_uid},{saved['series_uid']}")
        reopened = page.evaluate(REOPEN, saved["series_uid"])
    finally:
        context.close()
    assert isinstance(reopened, dict), reopened
    assert reopened["names"] == {"1": "Segment 1", "2": "Segment 2"}, reopened["names"]
    again = _on_grid(reopened["images"], grid)
    assert np.array_equal(again, expected), f"re-opened in OHIF, the SEG differs in {(again != expected).sum()} voxels"


def _post_save(server: str, series: str, array: np.ndarray, grid, params: dict, tmp_path: Path):
    import json

    import requests

    from sam2med.io import save_label

    path = save_label(array, grid, tmp_path / "labelmap.nrrd")
    with open(path, "rb") as handle:
        return requests.post(f"{server}/sam2med/save", params={"image": series}, files={"label": ("labelmap.nrrd", handle)},
                             data={"params": json.dumps(params)}, timeout=120)


def test_save_refuses_bad_input_and_stores_nothing(server, orthanc, matrix_series, tmp_path):
    from sam2med.geometry import Grid
    from sam2med.io import load_volume

    series_uid, folder = matrix_series["as-stored"]
    grid = load_volume(folder).grid
    label = np.zeros(grid.shape, dtype=np.uint8)
    label[200:260, 220:300, 9] = 1
    one = {"segments": [{"value": 1, "name": "liver QA", "color": [200, 20, 20]}]}
    before = _seg_series(orthanc["url"])
    cases = [
        (label, grid, {**one, "format": "pdf"}, 400, "format 'pdf' is not one of seg, rtstruct"),
        (np.zeros_like(label), grid, one, 400, "nothing to save: the segmentation is empty"),
        (label * 3, grid, one, 400, "holds value(s) [3] that no segment describes"),
        (label, Grid(grid.shape, grid.spacing, (0.0, 0.0, 0.0), grid.direction), one, 400, "is not on the voxel grid of series"),
        (label, grid, {**one, "description": "x" * 65}, 400, "description must be 1 to 64 printable characters"),
        (label, grid, {**one, "model_version": "tiny; rm -rf"}, 400, "model_version must be"),
    ]
    for array, on, params, status, detail in cases:
        response = _post_save(server, series_uid, array, on, params, tmp_path)
        assert response.status_code == status and detail in response.json()["detail"], (params, response.text)
    assert _seg_series(orthanc["url"]) == before, "a refused Save stored something"


RT_CONTOURS = """async (rtUid) => { const { displaySetService } = window.sam2med.services;
  const ds = displaySetService.getActiveDisplaySets().find(d => d.Modality === 'RTSTRUCT' && d.SeriesInstanceUID === rtUid);
  if (!ds) return 'no RTSTRUCT display set ' + rtUid;
  await ds.load({ headers: {} });
  return ds.structureSet.ROIContours.map(r => ({ name: r.ROIName, number: r.ROINumber,
    z: [...new Set(r.contourPoints.map(c => Math.round(c.points[0].z * 1000) / 1000))].sort((a, b) => a - b),
    x: [Math.min(...r.contourPoints.flatMap(c => c.points.map(p => p.x))), Math.max(...r.contourPoints.flatMap(c => c.points.map(p => p.x)))],
    y: [Math.min(...r.contourPoints.flatMap(c => c.points.map(p => p.y))), Math.max(...r.contourPoints.flatMap(c => c.points.map(p => p.y)))] })); }"""


def test_rtstruct_saved_through_the_server_opens_in_ohif_on_the_right_slices(browser, server, orthanc, matrix_series,
                                                                            shared_data, tmp_path):
    """Save as RTSTRUCT (two organs of the shared CT labels): OHIF (its Basic Viewer) lists it and reads each ROI's
    contours on exactly the slices, and within the extent in mm, where the label lies."""
    from sam2med.io import load_label, load_volume
    from sam2med.prompts import seed_on_image_grid

    series_uid, folder = matrix_series["as-stored"]
    grid = load_volume(folder).grid
    organs = load_label(shared_data / "totalsegmentator/example_seg_dicom.nii.gz")
    on_ct = seed_on_image_grid(organs.array, organs.grid, grid)
    label = np.zeros(grid.shape, dtype=np.uint8)
    label[:, :, 6:14][on_ct[:, :, 6:14] == 5] = 1  # liver
    label[:, :, 8:12][on_ct[:, :, 8:12] == 1] = 2  # spleen
    segments = [{"value": 1, "name": "liver", "color": [220, 90, 60]}, {"value": 2, "name": "spleen", "color": [80, 160, 60]}]
    response = _post_save(server, series_uid, label, grid, {"format": "rtstruct", "description": "e2e rtstruct",
                                                            "segments": segments}, tmp_path)
    assert response.status_code == 200, response.text
    saved = response.json()
    assert saved["format"] == "rtstruct" and [s["name"] for s in saved["segments"]] == ["liver", "spleen"]
    listed = _get_json(f"{orthanc['url']}/series?Modality=RTSTRUCT&includefield=0008103E")
    assert [s["0008103E"]["Value"][0] for s in listed if s["0020000E"]["Value"][0] == saved["series_uid"]] == ["e2e rtstruct"]

    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        # OHIF's Basic Viewer reads RTSTRUCT (the Segmentation mode, and so this app's mode, reads SEG only)
        open_viewer(page, server, orthanc["study"], f"{series_uid},{saved['series_uid']}", mode="viewer")
        rois = page.evaluate(RT_CONTOURS, saved["series_uid"])
    finally:
        context.close()
    assert isinstance(rois, list), rois
    direction = np.asarray(grid.direction, float).reshape(3, 3) * np.asarray(grid.spacing)[None, :]
    for value, name in ((1, "liver"), (2, "spleen")):
        roi = next(r for r in rois if r["name"] == name)
        ijk = np.argwhere(label == value)
        mm = np.asarray(grid.origin)[None, :] + ijk @ direction.T
        assert roi["z"] == sorted({round(float(z), 3) for z in mm[:, 2]}), (name, roi["z"])
        for axis, key in ((0, "x"), (1, "y")):  # contours run around voxel centres, within half a voxel of them
            low, high = mm[:, axis].min(), mm[:, axis].max()
            assert low - grid.spacing[axis] <= roi[key][0] <= low + grid.spacing[axis], (name, key, roi[key], low)
            assert high - grid.spacing[axis] <= roi[key][1] <= high + grid.spacing[axis], (name, key, roi[key], high)
