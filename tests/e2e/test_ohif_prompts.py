"""The sam2med panel's prompt tools in a real OHIF (issue 26): each gesture is made with real mouse events on
the viewport after its keyboard shortcut, lands at the patient position it was drawn at (checked against the
server's voxel grid), is shown on its slice only, is sent with Run as a `prompts` entry, and conditions the run
as drawn (a box bounds its label on its slice, a lasso alone comes back exactly as filled); undo/redo of a Run
restores the page's labelmap voxel for voxel; live mode runs on stroke end and paints slices before the answer.

One browser page and one server serve every case, in order (each case builds on the page the previous left).
Positions are chosen by patient coordinates (the liver of the example CT, from its organ labels) and turned
into screen positions with cornerstone's worldToCanvas; every assertion is about where labels are, never how
good they are (random SAM2 weights).
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
from e2e.ohif_browser import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, _get_json, open_viewer, run_panel, scroll_to_z
from e2e.test_ohif_save_matrix import RUNS, _on_grid

pytestmark = pytest.mark.e2e

START_Z, END_Z = -788.5, -780.5  # mm: Start/End (5 images)
CLICK_Z, BOX_Z, LASSO_Z = -784.5, -782.5, -786.5
LIVER = 5

SNAPSHOT = f"""() => {{ const c = window.sam2med; const seg = c.segmentation(c.activeViewport().viewportId);
  return ({RUNS})(c.labelmapImages(seg)); }}"""
TO_CANVAS = "(w) => Array.from(window.sam2med.activeViewport().viewport.worldToCanvas(w))"
IMAGE_NUMBER = """(z) => { const v = window.sam2med.activeViewport().viewport;
  return v.getImageIds().findIndex(id => Math.abs(window.cornerstone.metaData.get('imagePlaneModule', id).imagePositionPatient[2] - z) < 0.01) + 1; }"""
SHOWN_PROMPTS = "() => Array.from(document.querySelectorAll('[data-testid=sam2med-overlay] [data-prompt]')).map(e => e.dataset.prompt)"


def _type_range(page, start_z: float, end_z: float) -> None:
    """Type Start/End as the OHIF image numbers of the images at these patient z (mm)."""
    for which, z in (("start", start_z), ("end", end_z)):
        page.locator(f'[data-testid="sam2med-{which}"]').fill(str(page.evaluate(IMAGE_NUMBER, z)))


class Page:
    """The shared page with the series' grid (patient position <-> voxel index) and gesture helpers."""

    def __init__(self, page, viewport, grid: dict, liver: np.ndarray):
        self.page, self.viewport, self.liver = page, viewport, liver
        self.shape = tuple(grid["shape"])
        self.origin = np.asarray(grid["origin"], float)
        self.steps = np.asarray(grid["direction"], float).reshape(3, 3) * np.asarray(grid["spacing"], float)[None, :]
        from sam2med.geometry import Grid

        self.grid = Grid(tuple(grid["shape"]), tuple(grid["spacing"]), tuple(grid["origin"]), tuple(grid["direction"]))

    def world(self, index) -> list[float]:
        return [float(v) for v in self.origin + self.steps @ np.asarray(index, float)]

    def slice_of(self, z: float) -> int:
        return int(round((z - self.origin[2]) / self.steps[2, 2]))

    def z_of(self, k: int) -> float:
        return round(float(self.origin[2] + k * self.steps[2, 2]), 3)

    def screen(self, index) -> tuple[float, float]:
        x, y = self.page.evaluate(TO_CANVAS, self.world(index))
        box = self.viewport.bounding_box()
        return box["x"] + x, box["y"] + y

    def tool(self, key: str, tool: str) -> None:
        if self.page.evaluate("() => window.sam2med.tool") != tool:
            self.page.evaluate("() => document.activeElement && document.activeElement.blur()")  # keys typed in a field stay there
            self.page.keyboard.press(key)
        assert self.page.evaluate("() => window.sam2med.tool") == tool, f"key {key} did not select {tool}"

    def gesture(self, key: str, tool: str, indices: list) -> None:
        """Select the tool with its key, then press at the first voxel, drag through the others, release."""
        self.tool(key, tool)
        points = [self.screen(i) for i in indices]
        self.page.mouse.move(*points[0])
        self.page.mouse.down()
        for x, y in points[1:]:
            self.page.mouse.move(x, y, steps=5)
        self.page.mouse.up()
        time.sleep(0.3)

    @property
    def px(self) -> float:
        """One screen pixel in voxels (mouse events land on whole pixels, the viewport's box need not): how close
        a gesture lands to the patient position it was aimed at (the coarsest of the view's two in-plane axes)."""
        origin = np.asarray(self.screen((100, 100, 5)))
        lengths = [np.hypot(*(np.asarray(self.screen(np.add((100, 100, 5), np.eye(3)[a] * 10))) - origin)) for a in range(3)]
        steps = [10 / d for d in lengths if d > 1e-6]
        return max(steps) + 0.01

    def labels(self) -> np.ndarray:
        return _on_grid(self.page.evaluate(SNAPSHOT), self.grid)

    def run(self) -> tuple[dict, dict]:
        """Run; returns (the params the panel sent, the report)."""
        with self.page.expect_request(lambda r: "/infer/sam2_propagate" in r.url) as request:
            report = run_panel(self.page)
        body = request.value.post_data_buffer
        params = json.loads(body.split(b'name="params"\r\n\r\n', 1)[1].split(b"\r\n--", 1)[0])
        params["label file sent"] = b'name="label"' in body
        return params, report

    def liver_point(self, k: int, quantile: float = 0.5) -> tuple[float, float, int]:
        """A voxel of the liver on slice k (by the organ labels), near its centre."""
        xs, ys = np.nonzero(self.liver[:, :, k])
        order = np.lexsort((ys, xs))
        at = order[int(quantile * (len(order) - 1))]
        return float(xs[at]), float(ys[at]), k


@pytest.fixture(scope="module")
def shared(server, orthanc, shared_data):
    from playwright.sync_api import expect, sync_playwright

    from sam2med.io import load_label
    from sam2med.prompts import seed_on_image_grid

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    grid = _get_json(f"{server}/sam2med/grid?image={orthanc['series']}")
    assert grid["direction"][8] in (1.0, -1.0) and grid["direction"][0] in (1.0, -1.0), grid
    organs = load_label(shared_data / "totalsegmentator/example_seg_dicom.nii.gz")
    from sam2med.geometry import Grid

    on_grid = Grid(tuple(grid["shape"]), tuple(grid["spacing"]), tuple(grid["origin"]), tuple(grid["direction"]))
    liver = seed_on_image_grid(organs.array, organs.grid, on_grid) == LIVER
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            page.set_default_timeout(60_000)
            warmups = []
            page.on("request", lambda r: warmups.append(json.loads(r.post_data)) if r.url.endswith("/sam2med/warmup") else None)
            viewport = open_viewer(page, server, orthanc["study"], orthanc["series"])
            page.locator('[data-cy="panelSegmentationWithTools-btn"]').click()
            page.get_by_text("Add segmentation").first.click()
            time.sleep(1)
            page.locator('[data-cy="sam2med-btn"]').click()
            expect(page.locator('[data-testid="sam2med-current"]')).to_contain_text("current: image", timeout=60_000)
            _type_range(page, START_Z, END_Z)
            # the series was shown: the panel asked the server to warm it up (a 404 before that route exists is ignored)
            assert warmups and warmups[0]["image"] == orthanc["series"] and warmups[0]["axis"] == "axial", warmups
            yield Page(page, viewport, grid, liver)
        finally:
            browser.close()


def _inside_range(shared: Page, labels: np.ndarray) -> None:
    ks = sorted({int(k) for k in np.nonzero(labels)[2]})
    assert ks and all(START_Z <= shared.z_of(k) <= END_Z for k in ks), [shared.z_of(k) for k in ks]


def _sent_fill(shared: Page, sent: dict, axis: int = 2) -> tuple[int, np.ndarray]:
    """(slice, bool of the slice's other two axes in index order, e.g. (x, y) for axial, (y, z) for sagittal) of a
    lasso as sent: the pixels the server fills (sam2med.gestures.polygon_fill)."""
    from sam2med.geometry import Axis
    from sam2med.gestures import Gesture, gesture_slice, polygon_fill, slice_shape

    k, points_rc = gesture_slice(Gesture(sent["label"], "lasso", sent["positive"], tuple(map(tuple, sent["points"]))), Axis(axis), shared.shape)
    return k, polygon_fill(points_rc, slice_shape(shared.shape, Axis(axis))).T


def _clicked_voxel(sent: dict) -> tuple[int, int]:
    """(x, y) of the voxel under a click as sent: the nearest voxel centre (as the server rounds it)."""
    x, y = np.floor(np.asarray(sent["points"][0][:2], float) + 0.5).astype(int)
    return int(x), int(y)


def test_positive_click_lands_where_clicked_and_adds_the_object_on_its_slice(shared):
    k = shared.slice_of(CLICK_Z)
    scroll_to_z(shared.page, shared.viewport, CLICK_Z)
    point = shared.liver_point(k)
    shared.gesture("c", "click-pos", [point])
    assert shared.page.evaluate(SHOWN_PROMPTS) == ["click-pos"], "the click is not drawn on its slice"
    params, report = shared.run()
    assert len(params["prompts"]) == 1 and not params["label file sent"], params  # nothing painted: the prompt alone
    sent = params["prompts"][0]
    assert (sent["label"], sent["kind"], sent["positive"]) == (1, "click", True), sent
    assert np.allclose(sent["points"][0][:2], point[:2], atol=shared.px) and sent["points"][0][2] == k, (sent, point)
    assert [shared.z_of(s) for s in report["seed_slices"]] == [CLICK_Z], report["seed_slices"]
    labels = shared.labels()
    _inside_range(shared, labels)
    x, y = _clicked_voxel(sent)
    assert labels[x, y, k] == 1, "the clicked voxel is not labelled"  # engine.overlap.honour_clicks
    shared.page.screenshot(path=ARTIFACTS / "prompts-01-click.png")


def test_negative_click_removes_the_voxel_under_it_and_conditions_with_the_positive_one(shared):
    k = shared.slice_of(CLICK_Z)
    before = shared.labels()
    # a labelled voxel whose neighbours are labelled too (a click lands within a screen pixel of its aim),
    # away from the positive click
    inner = (before[:, :, k] == 1)
    inner = inner & np.roll(inner, 1, 0) & np.roll(inner, -1, 0) & np.roll(inner, 1, 1) & np.roll(inner, -1, 1)
    candidates = np.argwhere(inner)
    candidates = candidates[(candidates >= 2).all(axis=1) & (candidates < np.asarray(shared.shape[:2]) - 2).all(axis=1)]
    candidates = candidates[np.hypot(*(candidates - np.asarray(shared.liver_point(k)[:2])).T) > 3]  # the positive click's aim
    assert len(candidates), "the positive click's run labelled no voxel with labelled neighbours on its slice"
    at = candidates[np.argmin(np.hypot(*(candidates - np.asarray(shared.liver_point(k, 0.3)[:2])).T))]
    point = (float(at[0]), float(at[1]), k)
    shared.gesture("Shift+C", "click-neg", [point])
    assert sorted(shared.page.evaluate(SHOWN_PROMPTS)) == ["click-neg", "click-pos"]
    params, report = shared.run()
    assert [(p["kind"], p["positive"]) for p in params["prompts"]] == [("click", True), ("click", False)], params["prompts"]
    assert np.allclose(params["prompts"][1]["points"][0], point, atol=shared.px), (params["prompts"][1], point)
    assert [shared.z_of(s) for s in report["seed_slices"]] == [CLICK_Z], report["seed_slices"]
    labels = shared.labels()
    x, y = _clicked_voxel(params["prompts"][1])
    assert before[x, y, k] == 1 and labels[x, y, k] == 0, "the voxel clicked away is still labelled"
    x, y = _clicked_voxel(params["prompts"][0])
    assert labels[x, y, k] == 1, "the positive click's voxel lost its label"
    _inside_range(shared, labels)
    shared.page.screenshot(path=ARTIFACTS / "prompts-02-negative-click.png")


def test_box_labels_only_inside_the_box_on_its_slice_and_inside_the_range(shared):
    shared.page.locator('[data-testid="sam2med-clear"]').click()
    assert shared.page.evaluate(SHOWN_PROMPTS) == []
    k = shared.slice_of(BOX_Z)
    scroll_to_z(shared.page, shared.viewport, BOX_Z)
    x, y, _ = shared.liver_point(k)
    corners = [(x - 25, y - 20, k), (x + 25, y + 20, k)]
    shared.gesture("b", "box", corners)
    assert shared.page.evaluate(SHOWN_PROMPTS) == ["box-pos"]
    params, report = shared.run()
    [sent] = params["prompts"]
    assert sent["kind"] == "box" and np.allclose(sent["points"], corners, atol=shared.px), sent
    assert [shared.z_of(s) for s in report["seed_slices"]] == [BOX_Z], report["seed_slices"]
    labels = shared.labels()
    _inside_range(shared, labels)
    xs, ys = np.nonzero(labels[:, :, k])
    assert len(xs), "nothing labelled on the box's slice"
    (x0, y0, _), (x1, y1, _) = np.sort(np.asarray(sent["points"]), axis=0)
    assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1, \
        f"labelled outside the box {sent['points']} on its slice: x {xs.min()}..{xs.max()}, y {ys.min()}..{ys.max()}"
    others = [j for j in range(shared.shape[2]) if j != k and labels[:, :, j].any()]
    assert others, "the box was not propagated to the other slices of the range"
    shared.page.screenshot(path=ARTIFACTS / "prompts-03-box.png")


def test_a_correction_click_after_the_box_reruns_only_its_band(shared):
    """The box's Run left on the page; a click on another image, Run (refine, the panel's default): the box's
    image is the kept seed, so only the images from it to the range's end beyond the click run again; the
    images on the box's other side stay exactly as they were."""
    k_box, k_click = shared.slice_of(BOX_Z), shared.slice_of(CLICK_Z)
    scroll_to_z(shared.page, shared.viewport, CLICK_Z)
    before = shared.labels()
    shared.gesture("c", "click-pos", [shared.liver_point(k_click)])
    params, report = shared.run()
    assert params["refine"] is True and params["parent_state"], params
    assert report["correction"]["changed_slices"] == {"1": [k_click]} and report["correction"]["kept_seed_slices"] == {"1": [k_box]}
    ends = [j for j in range(shared.shape[2]) if shared.z_of(j) in (START_Z, END_Z)]
    beyond_click = min(ends, key=lambda j: abs(j - k_click))  # the range's end on the click's side
    band = sorted((k_box, beyond_click))
    assert report["refine"]["bands"] == {"1": band} and report["slice_range"] == band, report["refine"]
    after = shared.labels()
    others = [j for j in range(shared.shape[2]) if not band[0] <= j <= band[1]]
    assert any(before[..., j].any() for j in others), "nothing outside the band to keep: the case cannot fail"
    np.testing.assert_array_equal(after[..., others], before[..., others])
    expect_report = shared.page.locator('[data-testid="sam2med-report"]')
    assert "refined: 'Segment 1' from image" in expect_report.inner_text()




def test_box_with_z_range_is_one_gesture_that_sets_its_segments_range(shared):
    """Shift-B: the box on the middle slice takes Start..End as they are when it is drawn (the object's
    z-extent), its segment's own range, whatever Start..End say at Run."""
    shared.page.locator('[data-testid="sam2med-clear"]').click()
    k = shared.slice_of(BOX_Z)
    scroll_to_z(shared.page, shared.viewport, BOX_Z)
    narrow = (BOX_Z - 2, BOX_Z)  # two images of the five of Start..End
    _type_range(shared.page, *narrow)
    x, y, _ = shared.liver_point(k)
    corners = [(x - 20, y - 15, k), (x + 20, y + 15, k)]
    shared.gesture("Shift+B", "box-range", corners)
    _type_range(shared.page, START_Z, END_Z)
    before = shared.labels()
    params, report = shared.run()
    [sent] = params["prompts"]
    want = sorted(shared.slice_of(z) for z in narrow)
    assert sent["kind"] == "box" and sent["slices"] == want and np.allclose(sent["points"], corners, atol=shared.px), sent
    assert report["slice_range"] == want, report["slice_range"]
    labels = shared.labels()
    outside = [j for j in range(shared.shape[2]) if not want[0] <= j <= want[1]]
    assert np.array_equal(labels[..., outside], before[..., outside]), "a slice outside the box's z-range was changed"
    xs, ys = np.nonzero(labels[:, :, k])
    (x0, y0, _), (x1, y1, _) = np.sort(np.asarray(sent["points"]), axis=0)
    assert len(xs) and xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1, sent
    shared.page.screenshot(path=ARTIFACTS / "prompts-03b-box-z-range.png")
    shared.page.keyboard.press("Control+z")  # undo the Run: the page as the next cases expect it
    assert np.array_equal(shared.labels(), before)


def test_two_segments_keep_their_own_ranges_on_the_page(shared):
    """Segment 1's box with a narrow z-range, segment 2's plain box over Start..End, one Run: on the images
    only segment 2 runs through, segment 1 is never cleared (only painted over where segment 2 now lies)."""
    from playwright.sync_api import expect

    page = shared.page
    page.locator('[data-testid="sam2med-clear"]').click()
    k = shared.slice_of(BOX_Z)
    scroll_to_z(page, shared.viewport, BOX_Z)
    narrow = (BOX_Z - 2, BOX_Z)
    _type_range(shared.page, *narrow)
    x, y, _ = shared.liver_point(k)
    shared.gesture("Shift+B", "box-range", [(x - 20, y - 15, k), (x + 20, y + 15, k)])
    page.locator('[data-cy="panelSegmentationWithTools-btn"]').click()
    page.get_by_role("button", name="Add Segment").first.click()  # segment 2, now the active one
    expect(page.get_by_text("Segment 2").first).to_be_visible()
    page.locator('[data-cy="sam2med-btn"]').click()
    _type_range(shared.page, START_Z, END_Z)
    shared.gesture("b", "box", [(x - 60, y + 20, k), (x - 25, y + 45, k)])
    before = shared.labels()
    wide_only = [j for j in range(shared.shape[2]) if START_Z <= shared.z_of(j) <= END_Z and not min(narrow) <= shared.z_of(j) <= max(narrow)]
    assert (before[..., wide_only] == 1).any(), "no segment 1 outside its narrow range to keep: the case cannot fail"
    params, report = shared.run()
    assert sorted((p["label"], "slices" in p) for p in params["prompts"]) == [(1, True), (2, False)], params["prompts"]
    assert report["labels"]["1"]["slice_range"] == sorted(shared.slice_of(z) for z in narrow), report["labels"]["1"]
    assert [shared.z_of(j) for j in report["labels"]["2"]["slice_range"]] in ([START_Z, END_Z], [END_Z, START_Z])
    after = shared.labels()
    lost = (before[..., wide_only] == 1) & (after[..., wide_only] != 1)
    assert not (lost & (after[..., wide_only] != 2)).any(), "segment 1 was cleared outside its own range"
    assert (after == 2).any()
    page.keyboard.press("Control+z")  # the page as the next cases expect it: segment 1 active, no segment 2 voxels
    assert np.array_equal(shared.labels(), before)
    page.evaluate("""() => { const c = window.sam2med; const seg = c.segmentation(c.activeViewport().viewportId);
      c.services.segmentationService.setActiveSegment(seg.segmentationId, 1); }""")


def test_scribble_is_sent_along_the_stroke_and_shown_on_its_slice_only(shared):
    shared.page.locator('[data-testid="sam2med-clear"]').click()
    k = shared.slice_of(BOX_Z)
    scroll_to_z(shared.page, shared.viewport, BOX_Z)
    x, y, _ = shared.liver_point(k)
    path = [(x - 20, y - 5, k), (x, y + 5, k), (x + 20, y - 5, k)]
    shared.gesture("s", "scribble-pos", path)
    shared.gesture("Shift+S", "scribble-neg", [(x - 10, y + 15, k), (x + 10, y + 15, k)])
    assert sorted(shared.page.evaluate(SHOWN_PROMPTS)) == ["scribble-neg", "scribble-pos"]
    scroll_to_z(shared.page, shared.viewport, CLICK_Z)
    assert shared.page.evaluate(SHOWN_PROMPTS) == [], "prompts shown on another slice than theirs"
    params, report = shared.run()
    positive, negative = params["prompts"]
    assert (positive["kind"], positive["positive"], negative["kind"], negative["positive"]) == ("scribble", True, "scribble", False)
    points = np.asarray(positive["points"])
    assert len(points) >= 10 and (points[:, 2] == k).all()
    assert np.allclose(points[0], path[0], atol=shared.px) and np.allclose(points[-1], path[-1], atol=shared.px)
    segments = [(np.asarray(a[:2]), np.asarray(b[:2])) for a, b in zip(path, path[1:])]

    def distance(p):  # to the drawn polyline, in voxels
        return min(np.linalg.norm(p - (a + np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1) * (b - a))) for a, b in segments)

    assert max(distance(p[:2]) for p in points) <= shared.px, "the scribble was not sent along the stroke"
    assert [shared.z_of(s) for s in report["seed_slices"]] == [BOX_Z], report["seed_slices"]
    _inside_range(shared, shared.labels())


def test_lasso_conditions_as_drawn_and_undo_restores_the_labelmap(shared):
    shared.page.locator('[data-testid="sam2med-clear"]').click()
    k = shared.slice_of(LASSO_Z)
    scroll_to_z(shared.page, shared.viewport, LASSO_Z)
    x, y, _ = shared.liver_point(k)
    before = shared.labels()
    shared.gesture("l", "lasso-pos", [(x - 20, y - 15, k), (x + 20, y - 15, k), (x + 20, y + 15, k), (x - 20, y + 15, k)])
    shared.gesture("Shift+L", "lasso-neg", [(x - 5, y - 5, k), (x + 5, y - 5, k), (x + 5, y + 5, k), (x - 5, y + 5, k)])
    assert sorted(shared.page.evaluate(SHOWN_PROMPTS)) == ["lasso-neg", "lasso-pos"]
    params, report = shared.run()
    positive, negative = params["prompts"]
    assert (positive["kind"], positive["positive"], negative["kind"], negative["positive"]) == ("lasso", True, "lasso", False)
    (k1, fill), (k2, hole) = _sent_fill(shared, positive), _sent_fill(shared, negative)
    assert k1 == k2 == k and fill[int(x), int(y)] and hole[int(x), int(y)] and (fill & ~hole).sum() > 800
    after = shared.labels()
    _inside_range(shared, after)
    # the filled lasso less the negative one is the slice's mask, and a slice with a mask alone comes back as drawn
    assert np.array_equal(after[:, :, k] == 1, fill & ~hole), "the lasso slice is not as drawn"
    assert report["kept_slices"] and [shared.z_of(s) for s in next(iter(report["kept_slices"].values()))] == [LASSO_Z]

    # ctrl-z: the page's labelmap as it was before that Run, voxel for voxel; ctrl-shift-z: as after it
    shared.page.keyboard.press("Control+z")
    assert np.array_equal(shared.labels(), before), "undo did not restore the labelmap before the Run"
    assert sorted(shared.page.evaluate(SHOWN_PROMPTS)) == ["lasso-neg", "lasso-pos"], "undoing the Run removed the prompts too"
    shared.page.keyboard.press("Control+Shift+z")
    assert np.array_equal(shared.labels(), after), "redo did not restore the labelmap after the Run"
    for _ in range(3):  # the Run, the negative lasso, the positive lasso
        shared.page.keyboard.press("Control+z")
    assert shared.page.evaluate(SHOWN_PROMPTS) == []
    assert np.array_equal(shared.labels(), before)
    shared.page.screenshot(path=ARTIFACTS / "prompts-04-undo.png")


def _ask_again_uncropped(request, folder) -> np.ndarray:
    """The panel's request sent again to the server with crop_to_change off (and no progress id): the whole
    label, (x, y, z) on the server's grid."""
    import requests
    import SimpleITK as sitk

    body = request.post_data_buffer
    head, rest = body.split(b'name="params"\r\n\r\n', 1)
    sent, tail = rest.split(b"\r\n--", 1)
    params = json.loads(sent)
    assert params["crop_to_change"] is True, params
    params = {**params, "crop_to_change": False}
    params.pop("progress_id", None)
    body = head + b'name="params"\r\n\r\n' + json.dumps(params).encode() + b"\r\n--" + tail
    answer = requests.post(request.url.replace("output=all", "output=image"), data=body,
                           headers={"Content-Type": request.headers["content-type"]}, timeout=300)
    assert answer.status_code == 200, answer.text[:300]
    path = folder / "whole.nrrd"
    path.write_bytes(answer.content)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)


def test_live_mode_runs_on_stroke_end_and_paints_slices_before_the_answer(shared, tmp_path):
    page = shared.page
    page.locator('[data-testid="sam2med-clear"]').click()
    page.locator('[data-testid="sam2med-live"]').check()
    k = shared.slice_of(LASSO_Z)
    scroll_to_z(page, shared.viewport, LASSO_Z)
    x, y, _ = shared.liver_point(k)
    started = page.evaluate("() => performance.now()")
    with page.expect_request(lambda r: "/infer/sam2_propagate" in r.url, timeout=120_000) as asked:
        with page.expect_response(lambda r: "/infer/sam2_propagate" in r.url, timeout=120_000) as answer:
            shared.gesture("l", "lasso-pos", [(x - 15, y - 10, k), (x + 15, y - 10, k), (x + 15, y + 10, k), (x - 15, y + 10, k)])
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_function("(t) => window.sam2med.responseAt > t && !window.sam2med.state.busy", arg=started, timeout=120_000)
    log = page.evaluate("(t) => window.sam2med.liveLog.filter(e => e.at > t)", started)
    first = page.evaluate("(t) => window.sam2med.responseAt", started)
    assert any(e["at"] < first for e in log), f"no slice painted before the answer: {log}"
    assert {shared.z_of(e["slice"]) for e in log} <= {shared.z_of(j) for j in range(shared.shape[2]) if START_Z <= shared.z_of(j) <= END_Z}
    report = page.evaluate("() => window.sam2med.lastResult")
    low, high = report["changed_box"]
    assert low[2] <= k <= high[2], report["changed_box"]  # the answer names the box of what changed
    (_, fill) = _sent_fill(shared, {"label": 1, "positive": True, "points": page.evaluate(
        "() => window.sam2med.prompts.at(-1).world.map(w => window.sam2med.grids.values().next().value.toIndex(w))")})
    page_labels = shared.labels()
    assert np.array_equal(page_labels[:, :, k] == 1, fill), "the live lasso slice is not as drawn"
    # the answer held only the box of what changed; the page equals, in the range, the whole answer to the same request
    assert report["cropped"], report
    whole = _ask_again_uncropped(asked.value, tmp_path)
    assert whole.shape == page_labels.shape and np.prod(np.subtract(high, low) + 1) < whole.size
    ks = [j for j in range(shared.shape[2]) if START_Z <= shared.z_of(j) <= END_Z]
    assert whole[..., ks].any() and np.array_equal(page_labels[..., ks], whole[..., ks]), "the cropped answer was painted wrong"
    page.locator('[data-testid="sam2med-live"]').uncheck()



SAGITTAL_HALF = 4  # Start/End: the drawn x slice and 4 x slices either side
FOCAL_INDEX = """(id) => window.sam2med.grids.values().next().value.toIndex(
  window.sam2med.services.cornerstoneViewportService.getCornerstoneViewport(id).getCamera().focalPoint)"""


def _click(page, locator, count: int = 1) -> None:
    """A real mouse click (or double click) at the middle of an element."""
    box = locator.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, click_count=count)


def test_lasso_on_the_mpr_sagittal_view_propagates_along_x_inside_the_typed_range(shared):
    """OHIF's MPR layout, its sagittal view: a lasso drawn there is sent on one x slice with axis sagittal, Start/End
    are x slice numbers, and the result lies inside that x range, the lasso's slice exactly as filled. Starts from an
    empty labelmap (the previous cases undone) and ends on one axial view."""
    from playwright.sync_api import expect

    page = shared.page
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    for _ in range(page.evaluate("() => window.sam2med.undoStack.length")):  # the previous cases' runs and prompts
        page.keyboard.press("Control+z")
    assert page.evaluate(SHOWN_PROMPTS) == [] and not shared.labels().any(), "undo did not empty the labelmap"

    # OHIF's Layout menu -> MPR, then the sagittal view alone (double click), zoomed in (right drag: OHIF's zoom);
    # a volume viewport: its slice index counts along its normal, not OHIF's images
    _click(page, page.locator('[data-cy="Layout"]'))
    _click(page, page.locator('[data-cy="MPR"]'))
    element = page.locator('[data-viewport-uid="mpr-sagittal"]')
    element.wait_for()
    time.sleep(1)
    _click(page, element, count=2)
    time.sleep(1)
    box = element.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down(button="right")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2 + 250, steps=10)
    page.mouse.up(button="right")
    page.mouse.wheel(0, 100)  # one x slice on: the view snaps onto a slice of the volume
    time.sleep(0.5)
    assert page.evaluate("() => window.sam2med.activeViewport().viewportId") == "mpr-sagittal"
    focal = page.evaluate(FOCAL_INDEX, "mpr-sagittal")
    x = int(round(focal[0]))
    assert abs(focal[0] - x) < 0.01, f"the sagittal view shows no x slice of the grid: x index {focal[0]}"
    sag = copy.copy(shared)
    sag.viewport = element

    page.locator('[data-testid="sam2med-clear"]').click()
    y, z = int(round(focal[1])), 10
    corners = [(x, y - 30, z - 3), (x, y + 30, z - 3), (x, y + 30, z + 3), (x, y - 30, z + 3)]
    sag.gesture("l", "lasso-pos", corners)
    assert page.evaluate(SHOWN_PROMPTS) == ["lasso-pos"], "the lasso is not drawn on its x slice"
    assert page.locator('[data-testid="sam2med-axis"]').input_value() == "sagittal", "a sagittal prompt did not set the axis"
    for which, value in (("start", x - SAGITTAL_HALF), ("end", x + SAGITTAL_HALF)):
        page.locator(f'[data-testid="sam2med-{which}"]').fill(str(value))
    # the panel follows the sagittal view: Start/End are x slice numbers (OHIF's images do not step along x)
    expect(page.locator('[data-testid="sam2med-current"]')).to_contain_text(f"sagittal slice {x} of 0-{shared.shape[0] - 1}")
    expect(page.locator('[data-testid="sam2med-range"]')).to_have_text(
        f"range: sagittal slice {x - SAGITTAL_HALF} to sagittal slice {x + SAGITTAL_HALF}")
    params, report = sag.run()
    page.screenshot(path=ARTIFACTS / "prompts-07-sagittal.png")
    [sent] = params["prompts"]
    assert params["axis"] == "sagittal" and params["slice_range"] == [x - SAGITTAL_HALF, x + SAGITTAL_HALF], params
    assert (sent["kind"], sent["positive"]) == ("lasso", True) and {p[0] for p in sent["points"]} == {x}, sent
    points = np.asarray(sent["points"])
    assert np.allclose(points[0], corners[0], atol=sag.px) and np.allclose(points[-1], corners[-1], atol=sag.px), (points, corners)
    assert report["seed_slices"] == [x], report["seed_slices"]
    labels = sag.labels()
    xs = sorted({int(i) for i in np.nonzero(labels)[0]})
    assert xs and x - SAGITTAL_HALF <= xs[0] and xs[-1] <= x + SAGITTAL_HALF, \
        f"labelled outside x {x - SAGITTAL_HALF}..{x + SAGITTAL_HALF}: {xs}"
    assert set(xs) - {x}, "the lasso was not propagated to other x slices"
    k, fill = _sent_fill(shared, sent, axis=0)
    assert k == x and fill.sum() > 200 and fill[y, z], (k, fill.sum())
    assert np.array_equal(labels[x] == 1, fill), "the lasso's x slice is not as drawn"

    # back to one axial view: Esc (OHIF's tools again), Layout MPR (the grid again), the axial view, Layout 1x1
    page.locator('[data-testid="sam2med-clear"]').click()
    page.locator('[data-testid="sam2med-axis"]').select_option("axial")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Escape")
    assert page.evaluate("() => window.sam2med.tool") is None, "Esc did not give the mouse back to OHIF's tools"
    _click(page, page.locator('[data-cy="Layout"]'))
    _click(page, page.locator('[data-cy="MPR"]'))
    axial = page.locator('[data-viewport-uid="mpr-axial"]')
    axial.wait_for()
    _click(page, axial)
    _click(page, page.locator('[data-cy="Layout"]'))
    _click(page, page.get_by_text("Common", exact=True).locator("xpath=following-sibling::div[1]/div[1]"))
    expect(page.locator("[data-viewport-uid]")).to_have_count(1)
    assert page.evaluate("() => window.sam2med.activeViewport().viewport.getCamera().viewPlaneNormal.map(Math.abs)")[2] > 0.99
    expect(page.locator('[data-testid="sam2med-current"]')).to_contain_text("current: image")
    _type_range(page, START_Z, END_Z)  # Start/End as the fixture typed them: OHIF image numbers again
    expect(page.locator('[data-testid="sam2med-range"]')).to_contain_text("range: image")
