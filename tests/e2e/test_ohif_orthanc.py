"""OHIF + Orthanc + sam2med in a real browser: what a person sees, end to end.

Orthanc (Debian's package, DICOMweb plugin, loopback, private data folder) holds the example CT series,
uploaded by the repo's script with generated UIDs. `main.py serve --dicomweb` serves the app over it;
headless Debian Chromium, driven by Playwright, opens the bundled OHIF at /ohif/. A seed label is saved
for the series (DICOM-SEG on Orthanc), the model is run from the MONAI Label panel, and the propagated
segmentation must appear: in the viewer and as voxels on slices inside the range; the Run stores nothing. Screenshots go to
test-artifacts/e2e/. Random SAM2 weights: plumbing is checked, not segmentation quality.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from e2e.ohif_browser import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, _get_json, open_viewer, scroll_to_z

SEED_SLICE, RANGE = 10, (8, 12)

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def saved_seed(server, orthanc, shared_data, tmp_path_factory) -> Path:
    """The liver on slice SEED_SLICE of the series, saved as the series' `final` label (DICOM-SEG on Orthanc)."""
    import requests

    from sam2med.io import load_label, load_volume, save_label
    from sam2med.prompts import seed_on_image_grid

    ct = load_volume(shared_data / "totalsegmentator/example_ct_dicom")
    organs = load_label(shared_data / "totalsegmentator/example_seg_dicom.nii.gz")
    organs_on_ct = seed_on_image_grid(organs.array, organs.grid, ct.grid)
    seed = np.zeros(ct.grid.shape, dtype=np.uint8)
    seed[:, :, SEED_SLICE] = organs_on_ct[:, :, SEED_SLICE] == 5  # liver -> the app's label 1
    path = save_label(seed, ct.grid, tmp_path_factory.mktemp("seed") / "seed.nii.gz")
    with open(path, "rb") as handle:
        response = requests.put(f"{server}/datastore/label", params={"image": orthanc["series"], "tag": "final"},
                                files={"label": ("seed.nii.gz", handle)},
                                data={"params": json.dumps({"label_info": [{"name": "structure", "idx": 1}]})}, timeout=120)
    assert response.status_code == 200, response.text
    assert "sam2med label" in _seg_descriptions(orthanc["url"])
    return path


def _seg_descriptions(url: str) -> list[str]:
    return sorted(s["0008103E"]["Value"][0] for s in _get_json(f"{url}/series?Modality=SEG&includefield=0008103E"))


def test_seed_segmentation_stored_by_another_tool_is_used(server, orthanc, shared_data, tmp_path):
    """A DICOM-SEG put on Orthanc by any DICOM tool (no label saved through the server) is the seed."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    from sam2med.dicom.seg import write_seg
    from sam2med.dicom.series import repaired_copy
    from sam2med.io import load_label, load_volume
    from sam2med.prompts import seed_on_image_grid

    repaired_copy(shared_data / "totalsegmentator/example_ct_dicom", tmp_path / "series")  # the same UIDs as uploaded
    ct = load_volume(tmp_path / "series")
    organs = load_label(shared_data / "totalsegmentator/example_seg_dicom.nii.gz")
    seed = np.zeros(ct.grid.shape, dtype=np.uint8)
    seed[:, :, SEED_SLICE] = seed_on_image_grid(organs.array, organs.grid, ct.grid)[:, :, SEED_SLICE] == 5
    seg = write_seg(seed, ct.grid, tmp_path / "series", {1: "liver"}, series_description="drawn elsewhere")
    DICOMwebClient(url=orthanc["url"]).store_instances([seg])

    response = requests.post(f"{server}/infer/sam2_propagate", params={"image": orthanc["series"], "output": "json"},
                             data={"params": json.dumps({"slice_range": [9, 11], "save_label": True})}, timeout=600)
    assert response.status_code == 200, response.text[:500]
    report = response.json()
    assert report["seed"] == "datastore:final" and report["seed_slices"] == [SEED_SLICE]
    assert [s["slice"] for s in report["labels"]["1"]["slices"]] == [9, 10, 11]
    assert all(s["area"] > 0 for s in report["labels"]["1"]["slices"])
    # stored back as DICOM-SEG because this request asked for it (save_label); a Run alone stores nothing
    stored = [s for s in _get_json(f"{orthanc['url']}/series?Modality=SEG&includefield=0008103E")
              if s["0008103E"]["Value"][0].startswith("sam2med result") and " 9-11 " in s["0008103E"]["Value"][0]]
    assert len(stored) == 1
    result_seg = DICOMwebClient(url=orthanc["url"]).retrieve_series(orthanc["study"], stored[0]["0020000E"]["Value"][0])[0]
    algorithm = result_seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert result_seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert algorithm.AlgorithmVersion == report["model_version"]  # the model and its checkpoint's sha256


PAINTED_BY_Z = """() => {
  const volume = window.services.segmentationService.getLabelmapVolume('1');
  const data = volume.voxelManager.getCompleteScalarDataArray();
  const [nx, ny, nz] = volume.dimensions, plane = nx * ny, out = [];
  for (let k = 0; k < nz; k++) {
    const on = [];
    for (let i = 0; i < plane; i++) if (data[k * plane + i]) on.push(i);
    if (on.length) out.push([Math.round(volume.imageData.indexToWorld([0, 0, k])[2] * 1000) / 1000, on]);
  }
  return out;
}"""


PROBE_POINTS = """() => window.sam2med.libs.cornerstoneTools.annotation.state.getAllAnnotations()
  .filter(a => a.metadata.toolName === 'ProbeMONAILabel').length"""


def _changed_pixels(before: bytes, after: bytes) -> float:
    """The share of a viewport's pixels that changed visibly between two screenshots (an overlay appeared)."""
    from PIL import Image

    a, b = (np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int) for png in (before, after))
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a - b).max(axis=2) > 30).mean())


def test_ohif_runs_sam2_propagate_on_orthanc_series(server, orthanc, saved_seed):
    """The bundled MONAI Label panel: Run on the saved seed; what it paints is checked by patient position."""
    from playwright.sync_api import expect, sync_playwright

    from sam2med.io import load_label

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1600, "height": 1000})
        try:
            context.add_cookies([{"name": "MONAILABEL_SERVER_URL", "value": f"{server}/", "url": server}])
            page = context.new_page()
            page.set_default_timeout(60_000)

            # The study list shows the Orthanc study (the CT and the saved seed segmentation).
            page.goto(f"{server}/ohif/")
            row = page.get_by_text("Dec-08-2022").first
            expect(row).to_be_visible(timeout=90_000)
            expect(page.get_by_text("CT\\SEG").first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "01-study-list.png")

            # Open it in the MONAI Label mode: the CT renders, the seed shows as a SEG series of the study.
            row.click()
            page.get_by_role("button", name="MONAI Label").first.click()
            expect(page.get_by_text("CT Body 3.0").first).to_be_visible(timeout=90_000)
            expect(page.get_by_text("sam2med label").first).to_be_visible(timeout=90_000)
            hide = page.get_by_text("Confirm and Hide")
            if hide.is_visible():
                hide.click()
            viewport = page.locator(".cornerstone-viewport-element").first
            expect(viewport).to_be_visible(timeout=90_000)
            time.sleep(5)  # let the volume finish loading before the "before" picture
            before = viewport.screenshot()
            page.screenshot(path=ARTIFACTS / "02-viewer.png")

            # Connect the panel: it lists sam2_propagate under Auto-Segmentation.
            page.locator("#monailabelServerURL").locator("xpath=../..").locator("button").click()
            page.get_by_text("Auto-Segmentation").click()
            models = page.locator(".modelSelector select.selectBox").first
            expect(models.locator("option", has_text="sam2_propagate")).to_have_count(1)
            models.select_option("sam2_propagate")

            # A short slice range through the panel's options dialog.
            page.get_by_text("Options / Configurations").click()
            page.locator("tr", has_text="slice_range").locator("input").first.fill(f"{RANGE[0]},{RANGE[1]}")
            page.screenshot(path=ARTIFACTS / "03-options.png")
            page.get_by_role("button", name="Confirm").click()

            # Run the model from the panel; the result arrives and is painted into the viewer, and nothing is stored.
            stored_before = _seg_descriptions(orthanc["url"])
            with page.expect_response(lambda r: "/infer/sam2_propagate" in r.url, timeout=300_000) as answer:
                page.locator(".modelSelector button.actionButton").first.click()
            response = answer.value
            assert response.status == 200, response.text()[:500]
            expect(page.get_by_text("Running Segmentation - Successful")).to_be_visible(timeout=60_000)
            time.sleep(3)
            after = viewport.screenshot()
            page.screenshot(path=ARTIFACTS / "04-segmentation.png")
            result_bytes = response.body()
            # What the bundled panel painted, slice by slice, with each slice's patient z (the labelmap's own geometry).
            painted = page.evaluate(PAINTED_BY_Z)
        finally:
            context.close()

    with tempfile.NamedTemporaryFile(suffix=".nrrd") as nrrd:
        nrrd.write(result_bytes)
        nrrd.flush()
        result = sitk.GetArrayFromImage(sitk.ReadImage(nrrd.name))  # (z, y, x)
    per_slice = (result > 0).reshape(result.shape[0], -1).sum(axis=1)
    inside = [z for z in range(result.shape[0]) if RANGE[0] <= z <= RANGE[1]]
    assert all(per_slice[z] > 0 for z in inside), per_slice.tolist()
    assert per_slice.sum() == per_slice[inside].sum(), f"voxels outside the range: {per_slice.tolist()}"
    # Positions, not indices: the seed slice (server slice SEED_SLICE, z of the series' grid) comes back at the same z
    # in OHIF's labelmap, and nothing is painted outside the range's z span.
    seed = load_label(saved_seed)
    z_of = lambda k: round(seed.grid.origin[2] + k * seed.grid.spacing[2] * seed.grid.direction[8], 3)  # noqa: E731
    span = sorted((z_of(RANGE[0]), z_of(RANGE[1])))
    assert all(span[0] <= z <= span[1] for z, _ in painted), f"painted outside the range {span}: {painted}"
    seed_pixels = set(np.flatnonzero(seed.array[:, :, SEED_SLICE].T))  # (y, x) row-major, as OHIF stores a slice
    back = set(dict((z, p) for z, p in painted)[z_of(SEED_SLICE)])
    assert 2 * len(seed_pixels & back) / (len(seed_pixels) + len(back)) >= 0.9, "the seed slice is painted elsewhere"
    changed = _changed_pixels(before, after)
    assert changed > 0.01, f"no segmentation overlay appeared in the viewer ({changed:.2%} of its pixels changed)"

    # A Run stores nothing on Orthanc (Save does, or a request that asks with save_label).
    assert _seg_descriptions(orthanc["url"]) == stored_before


def test_point_prompts_reach_the_server_at_the_clicked_position(server, orthanc):
    """The bundled Point Prompts panel: a click on the slice at patient z arrives as the server slice at that z."""
    from playwright.sync_api import sync_playwright

    clicked_z = -784.5
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.add_cookies([{"name": "MONAILABEL_SERVER_URL", "value": f"{server}/", "url": server}])
            page = context.new_page()
            page.set_default_timeout(60_000)
            viewport = open_viewer(page, server, orthanc["study"], mode="monai-label", settle_s=5)
            page.locator("#monailabelServerURL").locator("xpath=../..").locator("button").click()
            page.get_by_text("Point Prompts").click()
            page.locator(".modelSelector select.selectBox").nth(1).select_option("sam2_points")
            page.locator("tr.clickable-row").nth(1).click()  # the first label (row 0 is background)
            time.sleep(1)
            scroll_to_z(page, viewport, clicked_z)
            box = viewport.bounding_box()
            for _ in range(5):  # the probe tool becomes active a moment after the label is chosen
                page.mouse.click(box["x"] + 0.36 * box["width"], box["y"] + 0.55 * box["height"])
                time.sleep(1)
                if page.evaluate(PROBE_POINTS) > 0:
                    break
            assert page.evaluate(PROBE_POINTS) > 0, "the click did not add a point"
            with page.expect_response(lambda r: "/infer/sam2_points" in r.url, timeout=300_000) as answer:
                page.locator(".modelSelector button.actionButton").nth(1).click()
            assert answer.value.status == 200, answer.value.text()[:300]
            sent = answer.value.request.post_data
            page.screenshot(path=ARTIFACTS / "05-point-prompts.png")
        finally:
            browser.close()
    params = json.loads(sent.split('name="params"\r\n\r\n', 1)[1].split("\r\n--", 1)[0])
    grid = _get_json(f"{server}/sam2med/grid?image={orthanc['series']}")
    z_of = lambda k: round(grid["origin"][2] + k * grid["spacing"][2] * grid["direction"][8], 3)  # noqa: E731
    assert params["foreground"] and all(z_of(k) == clicked_z for _, _, k in params["foreground"]), params
