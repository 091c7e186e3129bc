"""Issue 16 against the live server: bad requests on every endpoint, uploads that are not this request's, and
8 concurrent requests on 2 volumes.

Each bad request must get its 4xx status class with a one-line `detail` that holds no server path, leave
the server answering, and leave no new file in the server's temp dir, studies folder or sessions folder
(the server runs with a private TMPDIR and session folder so that they can be listed).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from conftest import TEST_IMAGE_SIZE
from live_server import running_server

pytestmark = pytest.mark.integration

CT_SLICE, CT_RANGE = 16, (14, 18)
MR_SLICE = 12
MAX_UPLOAD_MB = 5
# an absolute path of two or more parts, as it would appear in a message
SERVER_PATH = re.compile(r"(^|[\s'\"(=:])/[\w.-]+/[\w./-]*")


def _seed(label_path: Path, values: list[int], slice_index: int, out: Path, value_map: dict[int, int] | None = None) -> Path:
    """A seed on the label's own grid: `values` kept on one axial slice (renumbered by `value_map`), zero elsewhere."""
    label = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(label)  # (z, y, x)
    seed = np.zeros(array.shape, dtype=np.uint32)
    for value in values:
        seed[slice_index][array[slice_index] == value] = (value_map or {}).get(value, value)
    image = sitk.GetImageFromArray(seed if seed.max() > 255 else seed.astype(np.uint8))
    image.CopyInformation(label)
    sitk.WriteImage(image, str(out))
    return out


@pytest.fixture(scope="module")
def server(shared_data, random_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    studies, tmp, sessions, files = (root / name for name in ("studies", "tmp", "sessions", "files"))
    for folder in (studies, tmp, sessions, files):
        folder.mkdir()
    ts = shared_data / "totalsegmentator"
    shutil.copy(ts / "example_ct_sm.nii.gz", studies / "ct.nii.gz")
    shutil.copy(ts / "example_mr_sm.nii.gz", studies / "mr.nii.gz")
    victim = tmp / "tmpvictim01.nii.gz"  # a file of someone else that looks like an upload
    shutil.copy(ts / "example_ct_sm.nii.gz", victim)
    args = ["--studies", str(studies), "--checkpoint", str(random_checkpoint), "--device", "cpu",
            "--image-size", str(TEST_IMAGE_SIZE), "--max-upload-mb", str(MAX_UPLOAD_MB), "--cache-gb", "1",
            "--labels", '{"spleen": 1, "liver": 5}']
    env = {"TMPDIR": str(tmp), "MONAI_LABEL_SESSION_PATH": str(sessions)}
    with running_server(args, root / "server.log", env) as url:
        yield {"url": url, "root": root, "studies": studies, "tmp": tmp, "sessions": sessions, "files": files,
               "victim": victim, "ts": ts, "log": root / "server.log"}


@pytest.fixture(scope="module")
def files(server) -> dict[str, Path]:
    """Upload files, good and bad, made once."""
    folder, ts = server["files"], server["ts"]
    ct_seed = _seed(ts / "example_seg.nii.gz", [5], CT_SLICE, folder / "ct_seed.nii.gz")
    raw = gzip.decompress(ct_seed.read_bytes())
    made = {"ct_seed": ct_seed}
    for name, content in {
        "truncated.nii.gz": ct_seed.read_bytes()[:-200],
        "short.nii.gz": gzip.compress(raw[: len(raw) // 2]),
        "corrupt.nii.gz": ct_seed.read_bytes()[:30] + bytes(range(256)) * 8,
        "wrong_size.bin": bytes(1000),
        "junk.my-ext": b"not an image at all",
        "big.nii.gz": bytes((MAX_UPLOAD_MB + 1) * 1_000_000),
        "not_archive.zip": b"PK but not a zip",
        "image_truncated.nii.gz": (ts / "example_ct_sm.nii.gz").read_bytes()[:100_000],
    }.items():
        (folder / name).write_bytes(content)
        made[name] = folder / name
    nan_image = np.ones((30, 101, 122), np.float32)
    nan_image[3, 4, 5] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan_image), str(folder / "nan.mha"))
    made["nan.mha"] = folder / "nan.mha"
    return made


def _snapshot(server, app_state: bool = True) -> set[Path]:
    """Every file and folder in the temp dir, studies and sessions; `app_state=False` leaves out the app's own
    per-image state (studies/.sam2med/: the correction loop's record of a successful run, kept on purpose)."""
    found = {p for key in ("tmp", "studies", "sessions") for p in server[key].rglob("*")}
    return found if app_state else {p for p in found if ".sam2med" not in p.relative_to(server["studies"].parent).parts}


def _upload(path: Path, name: str | None = None) -> tuple[str, bytes, str]:
    return (name or path.name, path.read_bytes(), "application/octet-stream")


@dataclass
class Bad:
    """One bad request: what to send (given the server and files) and the answer's status class and text."""

    method: str
    path: str
    status: int
    text: str
    params: dict[str, Any] = field(default_factory=dict)
    infer_params: Any = None
    uploads: Callable[[dict[str, Path]], dict[str, Any]] | None = None
    raw_params: str | None = None


def _victim(server) -> str:
    return str(server["victim"])


def SEED(f: dict[str, Path]) -> dict[str, Any]:
    return {"label": _upload(f["ct_seed"])}


PROPAGATE, POINTS = "/infer/sam2_propagate", "/infer/sam2_points"
BAD: dict[str, Bad] = {
    # issue 16.1: a temp-named file of the server is no upload, and a session id must exist
    "victim-with-bogus-session": Bad("POST", PROPAGATE, 404, "session 'bogus' does not exist",
                                     {"image": "VICTIM", "session_id": "bogus"}, {}, SEED),
    "victim-as-image": Bad("POST", PROPAGATE, 403, "server paths are not accepted", {"image": "VICTIM"}, {}, SEED),
    "victim-in-params": Bad("POST", PROPAGATE, 422, "no seed", {"image": "ct"}, {"image": "VICTIM", "label": "VICTIM"}),
    "session-id-path": Bad("POST", PROPAGATE, 404, "does not exist", {"image": "ct", "session_id": "../../etc"}, {},
                           SEED),
    "no-image": Bad("POST", PROPAGATE, 403, "not a datastore image id", {"image": ""}, {}),
    "unknown-image": Bad("POST", PROPAGATE, 404, "not in the datastore", {"image": "nope"}, {}),
    "image-id-path": Bad("POST", PROPAGATE, 403, "not a datastore image id", {"image": "../studies/ct"}, {}),
    "unknown-task": Bad("POST", "/infer/no_such_task", 404, "no_such_task", {"image": "ct"}, {}),
    # issue 16.5: values that answered 500
    "slice-range-bool": Bad("POST", PROPAGATE, 422, "two slice indices", {"image": "ct"}, {"slice_range": True}, SEED),
    "slice-range-object": Bad("POST", PROPAGATE, 422, "per-label range for 'a'", {"image": "ct"}, {"slice_range": {"a": 1}},
                              SEED),
    "window-nan-text": Bad("POST", PROPAGATE, 422, "unknown window", {"image": "ct"}, {"window": "nan,400"}, SEED),
    "window-nan-json": Bad("POST", PROPAGATE, 400, "non-finite number NaN", {"image": "ct"}, raw_params='{"window": NaN}'),
    "params-not-json": Bad("POST", PROPAGATE, 400, "not valid JSON", {"image": "ct"}, raw_params="{"),
    "params-not-object": Bad("POST", PROPAGATE, 400, "JSON object", {"image": "ct"}, raw_params="[1, 2]"),
    "params-too-long": Bad("POST", PROPAGATE, 413, "characters", {"image": "ct"}, raw_params='{"x": "' + "a" * 1_000_001 + '"}'),
    "label-over-uint32": Bad("POST", PROPAGATE, 422, "largest supported label value", {"image": "ct"}, {"labels": [2**40]},
                             SEED),
    "axis-odd-digit": Bad("POST", PROPAGATE, 422, "unknown axis", {"image": "ct"}, {"axis": "\u00b2"}, SEED),
    "other-model": Bad("POST", PROPAGATE, 422, "runs SAM2.1 'tiny'", {"image": "ct"}, {"sam2_model": "large"}, SEED),
    "result-extension": Bad("POST", PROPAGATE, 422, "result_extension", {"image": "ct"}, {"result_extension": ".exe"},
                            SEED),
    "dicom-seg-output": Bad("POST", PROPAGATE, 400, "DICOMweb", {"image": "ct", "output": "dicom_seg"}, {}, SEED),
    # issue 16.4: the result is written, then saving it under a bad tag fails: the result must not stay
    "save-result-bad-tag": Bad("POST", PROPAGATE, 422, "not a label tag name", {"image": "ct"},
                               {"slice_range": list(CT_RANGE), "save_label": True, "label_tag": "../x"}, SEED),
    "bin-seed-wrong-size": Bad("POST", PROPAGATE, 422, "raw seed holds 1000 voxels", {"image": "ct"}, {},
                               lambda f: {"label": _upload(f["wrong_size.bin"])}),
    # issue 16.8: truncated and corrupt uploads
    "seed-truncated": Bad("POST", PROPAGATE, 422, "truncated", {"image": "ct"}, {}, lambda f: {"label": _upload(f["truncated.nii.gz"])}),
    "seed-short": Bad("POST", PROPAGATE, 422, "its NIfTI header announces", {"image": "ct"}, {},
                      lambda f: {"label": _upload(f["short.nii.gz"])}),
    "seed-corrupt": Bad("POST", PROPAGATE, 422, "truncated or corrupt", {"image": "ct"}, {},
                        lambda f: {"label": _upload(f["corrupt.nii.gz"])}),
    "seed-junk-extension": Bad("POST", PROPAGATE, 422, "the uploaded seed", {"image": "ct"}, {},
                               lambda f: {"label": _upload(f["junk.my-ext"])}),
    "image-upload-truncated": Bad("POST", PROPAGATE, 400, "the uploaded image", {}, {},
                                  lambda f: {"file": _upload(f["image_truncated.nii.gz"]), **SEED(f)}),
    # issue 16.9
    "image-upload-nan": Bad("POST", PROPAGATE, 400, "NaN or infinite", {}, {}, lambda f: {"file": _upload(f["nan.mha"]), **SEED(f)}),
    "upload-too-big": Bad("POST", PROPAGATE, 413, "upload limit", {"image": "ct"}, {}, lambda f: {"label": _upload(f["big.nii.gz"])}),
    # sam2_points, issue 16.5 and 16.6
    "roi-huge-z": Bad("POST", POINTS, 422, "outside the image", {"image": "ct"}, {"roi": [10, 10, 50, 50, 0, 1e6]}),
    "roi-infinity-json": Bad("POST", POINTS, 400, "non-finite number Infinity", {"image": "ct"},
                             raw_params='{"roi": [10, 10, 50, 50, 0, Infinity]}'),
    "roi-infinity-text": Bad("POST", POINTS, 422, "non-finite", {"image": "ct"}, {"roi": [10, 10, 50, 50, 0, "Infinity"]}),
    "roi-nan-text": Bad("POST", POINTS, 422, "non-finite", {"image": "ct"}, {"roi": ["nan", 10, 50, 50, 0, 3]}),
    "point-2d": Bad("POST", POINTS, 422, "not an [x, y, z] voxel point", {"image": "ct"}, {"foreground": [[1, 1]]}),
    "too-many-points": Bad("POST", POINTS, 422, "at most 1000", {"image": "ct"}, {"foreground": [[1, 1, 1]] * 1001}),
    "point-outside": Bad("POST", POINTS, 422, "outside the image", {"image": "ct"}, {"foreground": [[500, 1, 1]]}),
    "label-value-huge": Bad("POST", POINTS, 422, "largest supported", {"image": "ct"}, {"foreground": [[40, 50, 16]],
                                                                                       "label_value": 2**40}),
    # datastore, issue 16.4 and 16.5
    "save-label-bad-tag": Bad("PUT", "/datastore/label", 422, "not a label tag name", {"image": "ct", "tag": "../x"},
                              uploads=SEED),
    "save-label-unknown-image": Bad("PUT", "/datastore/label", 404, "not in the datastore", {"image": "nope", "tag": "final"},
                                    uploads=SEED),
    "save-label-bin-wrong-size": Bad("PUT", "/datastore/label", 422, "raw seed holds 1000 voxels", {"image": "ct"},
                                     uploads=lambda f: {"label": _upload(f["wrong_size.bin"])}),
    "save-label-bad-params": Bad("PUT", "/datastore/label", 400, "not valid JSON", {"image": "ct"}, uploads=SEED,
                                 raw_params="{"),
    "add-image-path-id": Bad("PUT", "/datastore/image", 403, "not a datastore image id", {"image": "../x"},
                             uploads=lambda f: {"file": _upload(f["ct_seed"])}),
    "delete-unknown-image-old-route": Bad("DELETE", "/datastore/", 404, "not in the datastore", {"id": "nope"}),
    "delete-unknown-image": Bad("DELETE", "/datastore/image", 404, "not in the datastore", {"id": "nope"}),
    "delete-unknown-label": Bad("DELETE", "/datastore/label", 404, "no label tagged", {"id": "ct", "tag": "nope"}),
    "download-unknown-image": Bad("GET", "/datastore/image", 404, "Image NOT Found", {"image": "nope"}),
    "download-unknown-label": Bad("GET", "/datastore/label", 404, "Label NOT Found", {"label": "mr", "tag": "final"}),
    # sessions
    "get-unknown-session": Bad("GET", "/session/bogus", 404, "Not Found"),
    "delete-unknown-session": Bad("DELETE", "/session/bogus", 404, "Not Found"),
    "session-not-an-archive": Bad("PUT", "/session/", 400, "archive", {"uncompress": "true"},
                                  uploads=lambda f: {"files": _upload(f["not_archive.zip"])}),
    "session-no-files": Bad("PUT", "/session/", 422, "files"),
    # active learning
    "unknown-strategy": Bad("POST", "/activelearning/nope", 404, "no active-learning strategy 'nope'"),
    "strategy-in-params": Bad("POST", "/activelearning/first", 404, "no active-learning strategy", infer_params={"strategy": 5}),
    # issue 16.2: the log names server paths and other clients' uploads
    "logs": Bad("GET", "/logs/", 403, "not served over HTTP"),
    "logs-text": Bad("GET", "/logs/", 403, "not served over HTTP", {"lines": 10, "text": "true"}),
    "logs-gpu": Bad("GET", "/logs/gpu", 403, "not served over HTTP"),
}


def _send(server, bad: Bad, files: dict[str, Path]) -> requests.Response:
    query = {k: (_victim(server) if v == "VICTIM" else v) for k, v in bad.params.items()}
    body = bad.infer_params if not isinstance(bad.infer_params, dict) else {
        k: (_victim(server) if v == "VICTIM" else v) for k, v in bad.infer_params.items()}
    uploads = bad.uploads(files) if bad.uploads else None
    if bad.path.startswith("/activelearning"):
        return requests.post(server["url"] + bad.path, json=body, timeout=120)
    data = {"params": bad.raw_params if bad.raw_params is not None else json.dumps(body)} if (body is not None or bad.raw_params) else None
    return requests.request(bad.method, server["url"] + bad.path, params=query, data=data, files=uploads, timeout=120)


def _assert_one_line_without_paths(response: requests.Response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail
    assert not SERVER_PATH.search(detail), f"server path in {detail!r}"
    assert "Traceback" not in detail
    return detail


@pytest.mark.parametrize("name", list(BAD))
def test_bad_request_is_a_clean_4xx(server, files, name):
    bad = BAD[name]
    before = _snapshot(server)
    response = _send(server, bad, files)
    assert response.status_code == bad.status, (response.status_code, response.text[:300])
    detail = _assert_one_line_without_paths(response)
    assert bad.text in detail, detail
    assert requests.get(server["url"] + "/info/", timeout=30).status_code == 200, "the server stopped answering"
    deadline = time.time() + 3
    while _snapshot(server) != before and time.time() < deadline:
        time.sleep(0.1)
    assert _snapshot(server) == before, f"left behind: {sorted(map(str, _snapshot(server) ^ before))}"
    assert server["victim"].is_file(), "a file the request did not upload was deleted"


def test_huge_roi_is_refused_at_once(server):
    start = time.perf_counter()
    response = requests.post(server["url"] + POINTS, params={"image": "ct"},
                             data={"params": json.dumps({"roi": [10, 10, 50, 50, 0, 1e8]})}, timeout=120)
    assert response.status_code == 422 and time.perf_counter() - start < 5


def _result(response: requests.Response, folder: Path, name: str) -> np.ndarray:
    """The label of a multipart infer answer, as an (x, y, z) array."""
    assert response.status_code == 200, response.text[:300]
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    for part in MultipartDecoder.from_response(response).parts:
        if b'name="image"' in part.headers.get(b"Content-Disposition", b""):
            path = folder / name
            path.write_bytes(part.content)
            return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)
    raise AssertionError("no image part in the answer")


def _assert_seed_slice(result: np.ndarray, seed: np.ndarray, what: str = "") -> None:
    """The seed slice of a result is its seed: each value's mask there matches (Dice >= 0.95; the model's
    256 px mask moves a few edge voxels) and no other value appears on it."""
    values = [int(v) for v in np.unique(seed) if v]
    assert values and set(np.unique(result)) <= {0, *values}, (what, np.unique(result))
    for value in values:
        a, b = result == value, seed == value
        dice = 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
        assert dice >= 0.95, f"{what}: seed slice of value {value} has Dice {dice:.3f} with its seed"


def _seed_xyz(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)


def test_uploads_keep_any_file_name_and_are_removed(server, files, tmp_path):
    """Issue 16.3: dotted names and long or '-' extensions were refused as server paths (403) and never deleted."""
    seed = _seed_xyz(files["ct_seed"])
    raw = tmp_path / "seed.bin"  # OHIF's raw labels: uint8 voxels of the image, x fastest
    raw.write_bytes(seed.astype(np.uint8).tobytes(order="F"))
    for path, name in ((files["ct_seed"], "CT_2024.01.05.nii.gz"), (files["ct_seed"], "seed.label-v2.annotation.nii.gz"),
                       (raw, "ohif.seed.bin")):
        before = _snapshot(server, app_state=False)
        response = requests.post(server["url"] + PROPAGATE, params={"image": "ct"},
                                 data={"params": json.dumps({"slice_range": list(CT_RANGE)})},
                                 files={"label": _upload(path, name)}, timeout=300)
        label = _result(response, tmp_path, f"{name}.result.nii.gz")
        _assert_seed_slice(label[..., CT_SLICE], seed[..., CT_SLICE], name)
        time.sleep(0.5)
        assert _snapshot(server, app_state=False) == before, "the upload or the result was left behind"


def test_session_infer_needs_an_existing_session(server, files, tmp_path):
    ct = server["studies"] / "ct.nii.gz"
    created = requests.put(server["url"] + "/session/", files={"files": _upload(ct, "ct.nii.gz")}, timeout=60)
    assert created.status_code == 200, created.text
    session_id = created.json()["session_id"]
    response = requests.post(server["url"] + PROPAGATE, params={"session_id": session_id},
                             data={"params": json.dumps({"slice_range": list(CT_RANGE)})},
                             files={"label": _upload(files["ct_seed"])}, timeout=300)
    label = _result(response, tmp_path, "session_result.nii.gz")
    _assert_seed_slice(label[..., CT_SLICE], _seed_xyz(files["ct_seed"])[..., CT_SLICE], "session")
    assert requests.delete(f"{server['url']}/session/{session_id}", timeout=30).status_code == 200
    gone = requests.post(server["url"] + PROPAGATE, params={"session_id": session_id},
                         files={"label": _upload(files["ct_seed"])}, timeout=60)
    assert gone.status_code == 404 and "does not exist" in gone.json()["detail"]


def test_label_values_over_65535_come_back_unchanged(server, files, tmp_path):
    """Issue 16.7: 70000 came back as 4464 (uint16 wrap)."""
    seed = _seed(server["ts"] / "example_seg.nii.gz", [5, 1], CT_SLICE, tmp_path / "big_values.nii.gz", {5: 70000})
    response = requests.post(server["url"] + PROPAGATE, params={"image": "ct"},
                             data={"params": json.dumps({"slice_range": list(CT_RANGE)})},
                             files={"label": _upload(seed)}, timeout=300)
    label = _result(response, tmp_path, "big_result.nii.gz")
    assert label.dtype == np.uint32 and set(np.unique(label)) <= {0, 1, 70000}
    _assert_seed_slice(label[..., CT_SLICE], _seed_xyz(seed)[..., CT_SLICE], "70000")
    narrow = requests.post(server["url"] + PROPAGATE, params={"image": "ct"},
                           data={"params": json.dumps({"slice_range": list(CT_RANGE), "result_dtype": "uint16"})},
                           files={"label": _upload(seed)}, timeout=300)
    assert narrow.status_code == 422 and "cannot hold label value 70000" in narrow.json()["detail"]


def _organs_on(label_path: Path, slice_index: int, count: int) -> list[int]:
    """The `count` label values with the largest area on an axial slice."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))[slice_index]
    values, areas = np.unique(array[array > 0], return_counts=True)
    return [int(v) for v in values[np.argsort(-areas)][:count]]


def test_eight_concurrent_requests_on_two_volumes_each_get_their_own_label(server, tmp_path):
    """4 organs of the CT and 4 of the MR at once, each with its own range: its seed slice is its own seed,
    only its own value is written and nothing outside its range."""
    ts = server["ts"]
    jobs = []
    for image_id, label_path, slice_index in (("ct", ts / "example_seg.nii.gz", CT_SLICE),
                                              ("mr", ts / "example_seg_mr.nii.gz", MR_SLICE)):
        for k, organ in enumerate(_organs_on(label_path, slice_index, 4)):
            rng = (slice_index - 2 + k % 2, slice_index + 2 - k // 2)
            seed = _seed(label_path, [organ], slice_index, tmp_path / f"{image_id}_{organ}.nii.gz")
            jobs.append((image_id, organ, seed, rng, slice_index))
    assert len({(j[0], j[1]) for j in jobs}) == 8

    def run(job):
        image_id, organ, seed, rng, _ = job
        return requests.post(server["url"] + PROPAGATE, params={"image": image_id},
                             data={"params": json.dumps({"slice_range": list(rng)})},
                             files={"label": _upload(seed)}, timeout=600)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(run, jobs))
    for (image_id, organ, seed, rng, slice_index), response in zip(jobs, responses):
        label = _result(response, tmp_path, f"{image_id}_{organ}_result.nii.gz")
        expected = _seed_xyz(seed)
        _assert_seed_slice(label[..., slice_index], expected[..., slice_index], f"{image_id} organ {organ}")
        assert set(np.unique(label)) <= {0, organ}, (image_id, organ)
        outside = np.ones(label.shape[2], bool)
        outside[rng[0] : rng[1] + 1] = False
        assert not label[..., outside].any(), f"{image_id} {organ}: label outside {rng}"
        assert response.headers and json.loads(_params(response))["slice_range"] == list(rng)


def _params(response: requests.Response) -> str:
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    for part in MultipartDecoder.from_response(response).parts:
        if b'name="params"' in part.headers.get(b"Content-Disposition", b""):
            return part.content.decode()
    raise AssertionError("no params part in the answer")
