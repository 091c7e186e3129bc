"""The sam2med mode in a real OHIF: paint a seed with the Brush, set Start/End from the viewer, Run,
correct with the Eraser, Run again, Save as DICOM-SEG (written by the server, tests/e2e/test_ohif_save_matrix.py
checks it voxel for voxel on five series). Headless Chromium, real mouse events, Orthanc and
the sam2med server (random weights: geometry and plumbing are checked, never segmentation quality).

Slices are compared by patient position (z in mm), never by list index: the example series lists its
images by InstanceNumber against the slice normal. Other slice orders and orientations, two segments, locks,
auto range and the saved SEG voxel for voxel: tests/e2e/test_ohif_save_matrix.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from e2e.ohif_browser import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, _get_json, open_viewer, run_panel, scroll_to_z, stroke

pytestmark = pytest.mark.e2e

SEED_Z, START_Z, END_Z, ERASE_Z = -784.5, -788.5, -780.5, -782.5  # mm: the seed slice, the range, a corrected slice

LABELMAP_SUMMARY = """() => window.sam2med.labelmapImages(window.sam2med.segmentation(window.sam2med.activeViewport().viewportId))
  .map(im => { let n = 0; for (const v of im.pixels) if (v) n++; return [im.plane.position[2], n]; }).filter(x => x[1] > 0)"""
SEED_NUMBER = """(z) => { const v = window.sam2med.activeViewport().viewport;
  return v.getImageIds().findIndex(id => Math.abs(window.cornerstone.metaData.get('imagePlaneModule', id).imagePositionPatient[2] - z) < 0.01) + 1; }"""
SLICE_PIXELS = """(z) => { const c = window.sam2med; const im = c.labelmapImages(c.segmentation(c.activeViewport().viewportId))
  .find(i => Math.abs(i.plane.position[2] - z) < 0.01); return Array.from(im.pixels).flatMap((v, i) => v ? [i] : []); }"""


@pytest.fixture(scope="module")
def series_folder(shared_data, tmp_path_factory) -> Path:
    from sam2med.dicom.series import repaired_copy

    folder = tmp_path_factory.mktemp("series") / "ct"
    repaired_copy(shared_data / "totalsegmentator/example_ct_dicom", folder)  # the UIDs upload_example.sh gives
    return folder


def _paint_seed(page, viewport) -> list[int]:
    page.locator('[data-cy="panelSegmentationWithTools-btn"]').click()
    page.get_by_text("Add segmentation").first.click()
    time.sleep(1)
    scroll_to_z(page, viewport, SEED_Z)
    page.locator('[data-cy="Brush"]').first.click()
    for fy in (0.50, 0.54, 0.58):
        stroke(page, viewport, [(0.30, fy), (0.36, fy), (0.42, fy)])
    painted = page.evaluate(LABELMAP_SUMMARY)
    assert [z for z, _ in painted] == [SEED_Z], f"the brush painted elsewhere than the shown slice: {painted}"
    page.locator('[data-cy="sam2med-btn"]').click()
    return page.evaluate(SLICE_PIXELS, SEED_Z)


def _set_range_from_viewer(page, viewport) -> None:
    for which, z in (("start", START_Z), ("end", END_Z)):
        scroll_to_z(page, viewport, z)
        page.locator(f'[data-testid="sam2med-set-{which}"]').click()
        time.sleep(0.5)


def _grid_z(server: str, series: str) -> tuple[float, float]:
    grid = _get_json(f"{server}/sam2med/grid?image={series}")
    assert grid["direction"][8] in (1.0, -1.0), grid
    return grid["origin"][2], grid["spacing"][2] * grid["direction"][8]


def _dice(a: list[int], b: list[int]) -> float:
    a, b = set(a), set(b)
    return 2 * len(a & b) / max(1, len(a) + len(b))


def _check_geometry(page, server: str, series: str, report: dict, seed_pixels: list[int]) -> list:
    z0, dz = _grid_z(server, series)
    z_of = lambda k: round(z0 + k * dz, 3)  # noqa: E731
    start, end = report["slice_range"]
    assert sorted((z_of(start), z_of(end))) == [START_Z, END_Z], ("range set from the viewer", report["slice_range"])
    assert [z_of(k) for k in report["seed_slices"]] == [SEED_Z], ("conditioning slice position", report["seed_slices"])
    painted = page.evaluate(LABELMAP_SUMMARY)
    assert painted and all(START_Z <= z <= END_Z for z, _ in painted), f"voxels outside the range: {painted}"
    back = page.evaluate(SLICE_PIXELS, SEED_Z)
    assert _dice(seed_pixels, back) >= 0.9, "the painted seed did not come back on its own slice"
    return painted


def test_draw_run_correct_rerun_and_save(server, orthanc, series_folder):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            viewport = open_viewer(page, server, orthanc["study"], orthanc["series"])

            # Nothing painted yet: a readable error in the panel, no request lost.
            page.locator('[data-cy="sam2med-btn"]').click()
            page.locator('[data-testid="sam2med-run"]').click()
            expect(page.locator('[data-testid="sam2med-error"]')).to_contain_text("nothing painted")

            seed_pixels = _paint_seed(page, viewport)
            page.screenshot(path=ARTIFACTS / "sam2med-01-seed.png")

            # A range that misses the seed: said in OHIF's image numbers before anything is sent, the drawing untouched.
            page.locator('[data-testid="sam2med-start"]').fill("2")
            page.locator('[data-testid="sam2med-end"]').fill("1")
            page.locator('[data-testid="sam2med-run"]').click()
            seed_number = page.evaluate(SEED_NUMBER, SEED_Z)
            expect(page.locator('[data-testid="sam2med-error"]')).to_contain_text(
                f"'Segment 1' is drawn on image {seed_number}, outside Start..End (image 2 (z ", timeout=120_000)
            assert [z for z, _ in page.evaluate(LABELMAP_SUMMARY)] == [SEED_Z]
            assert page.evaluate(SLICE_PIXELS, SEED_Z) == seed_pixels
            _set_range_from_viewer(page, viewport)
            expect(page.locator('[data-testid="sam2med-current"]')).to_contain_text(f"z {END_Z:.1f} mm")
            page.screenshot(path=ARTIFACTS / "sam2med-02-range.png")

            first = run_panel(page)
            painted = _check_geometry(page, server, orthanc["series"], first, seed_pixels)
            page.screenshot(path=ARTIFACTS / "sam2med-03-result.png")

            # Erase part of a propagated slice and run again: that slice conditions too, features come from the cache.
            scroll_to_z(page, viewport, ERASE_Z)
            page.locator('[data-cy="panelSegmentationWithTools-btn"]').click()
            page.locator('[data-cy="Eraser"]').first.click()
            stroke(page, viewport, [(0.2, 0.45), (0.5, 0.45), (0.8, 0.45)])
            corrected = page.evaluate(SLICE_PIXELS, ERASE_Z)
            assert len(corrected) < dict(painted)[ERASE_Z], "the eraser stroke removed nothing"
            page.locator('[data-cy="sam2med-btn"]').click()
            range_z = [START_Z + 2 * i for i in range(5)]
            before = {z: page.evaluate(SLICE_PIXELS, z) for z in range_z}
            second = run_panel(page)
            z0, dz = _grid_z(server, orthanc["series"])
            assert sorted(round(z0 + k * dz, 3) for k in second["seed_slices"]) == sorted([SEED_Z, ERASE_Z])
            # refine (on by default): the seed is kept, so the correction re-runs from it to the range's end beyond
            # the corrected slice; the other images stay exactly as they were
            band = [round(z0 + k * dz, 3) for k in second["refine"]["bands"]["1"]]
            assert sorted(band) == [SEED_Z, END_Z] and second["refine"]["unchanged_labels"] == [], second["refine"]
            assert second["cache"]["request_hit_slices"] == 3 and second["cache"]["request_miss_slices"] == 0, second["cache"]
            for z in range_z:
                if not SEED_Z <= z <= END_Z:
                    assert page.evaluate(SLICE_PIXELS, z) == before[z], f"image at z {z} outside the refined band changed"
            assert _dice(corrected, page.evaluate(SLICE_PIXELS, ERASE_Z)) >= 0.9, "the corrected slice was not kept"
            expect(page.locator('[data-testid="sam2med-report"]')).to_contain_text("3 slices reused")
            expect(page.locator('[data-testid="sam2med-report"]')).to_contain_text("refined: 'Segment 1' from image")
            page.screenshot(path=ARTIFACTS / "sam2med-04-rerun.png")
            shown = dict(page.evaluate(LABELMAP_SUMMARY))

            # Save, under the name typed in the panel: the server writes the SEG and stores it on Orthanc.
            page.locator('[data-testid="sam2med-save-name"]').fill("sam2med e2e liver")
            page.locator('[data-testid="sam2med-save"]').click()
            expect(page.locator('[data-testid="sam2med-status"]')).to_contain_text(
                'saved "sam2med e2e liver" as DICOM-SEG of this series', timeout=120_000)
            expect(page.get_by_text("are not part of the current study")).to_have_count(0)  # no false toast
            page.screenshot(path=ARTIFACTS / "sam2med-05-saved.png")
        finally:
            browser.close()

    saved = _stored_seg(orthanc["url"], orthanc["study"], "sam2med e2e liver")
    from sam2med.dicom.seg import read_seg
    from sam2med.io import load_volume

    grid = load_volume(series_folder).grid
    array, _ = read_seg(saved, grid)
    per_z = {round(grid.origin[2] + k * grid.spacing[2], 3): int((array[:, :, k] > 0).sum()) for k in range(grid.shape[2])}
    assert {z: n for z, n in per_z.items() if n} == shown, "the stored SEG differs from what the page shows"


def _stored_seg(url: str, study: str, description: str) -> Path:
    """Download the SEG series with `description` into a temp folder."""
    import tempfile

    from dicomweb_client.api import DICOMwebClient

    for _ in range(30):
        found = [s for s in _get_json(f"{url}/series?Modality=SEG&includefield=0008103E")
                 if s.get("0008103E", {}).get("Value", [""])[0] == description]
        if found:
            break
        time.sleep(1)
    assert found, f"no SEG named {description!r} on Orthanc"
    folder = Path(tempfile.mkdtemp(prefix="seg-"))
    client = DICOMwebClient(url=url)
    for i, instance in enumerate(client.retrieve_series(study, found[0]["0020000E"]["Value"][0])):
        instance.save_as(folder / f"{i}.dcm")
    return folder
