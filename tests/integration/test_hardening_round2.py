"""Issue 22 against the live server and the CLI: the server never writes where it should not.

Every case asserts the answer's status and one-line detail, and the files left in the server's temp dir,
studies and sessions folders (and where the issue measured them, the server's RSS and thread count).
The server runs with its temp dir and studies folder on small tmpfs mounts (we run as root here) so that
a full disk and a read-only studies folder are real; without the right to mount, those cases are skipped.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import http.client
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from conftest import REPO, TEST_IMAGE_SIZE
from live_server import running_server

pytestmark = pytest.mark.integration

MAX_UPLOAD_MB = 5
CT_SLICE = 16


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True, capture_output=True)


def _seed(shared: Path, out: Path, slice_index: int = CT_SLICE, value: int = 5) -> Path:
    label = sitk.ReadImage(str(shared / "totalsegmentator" / "example_seg.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    seed = np.zeros(array.shape, np.uint8)
    seed[slice_index][array[slice_index] == value] = value
    image = sitk.GetImageFromArray(seed)
    image.CopyInformation(label)
    sitk.WriteImage(image, str(out))
    return out


def _files(*folders: Path) -> set[Path]:
    return {p for folder in folders for p in folder.rglob("*")}


def _detail(response: requests.Response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, detail
    return detail


def _proc_status(pid: int) -> tuple[int, int]:
    """(RSS in bytes, threads) of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


@pytest.fixture(scope="module")
def server(shared_data, random_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("round2")
    studies, tmp, sessions, files = (root / name for name in ("studies", "tmp", "sessions", "files"))
    mounted = _mount_tmpfs(tmp, "48m") and _mount_tmpfs(studies, "48m")
    for folder in (studies, tmp, sessions, files):
        folder.mkdir(exist_ok=True)
    ts = shared_data / "totalsegmentator"
    for name in ("ct", "swap", "gone"):
        shutil.copy(ts / "example_ct_sm.nii.gz", studies / f"{name}.nii.gz")
    args = ["--studies", str(studies), "--checkpoint", str(random_checkpoint), "--device", "cpu",
            "--image-size", str(TEST_IMAGE_SIZE), "--max-upload-mb", str(MAX_UPLOAD_MB), "--cache-gb", "1",
            "--labels", '{"spleen": 1, "liver": 5}']
    env = {"TMPDIR": str(tmp), "MONAI_LABEL_SESSION_PATH": str(sessions)}
    process: dict = {}
    try:
        with running_server(args, root / "server.log", env, process=process) as url:
            yield {"url": url, "root": root, "studies": studies, "tmp": tmp, "sessions": sessions, "files": files,
                   "ts": ts, "pid": process["pid"], "mounted": mounted, "seed": _seed(shared_data, files / "seed.nii.gz")}
    finally:
        if mounted:
            _umount(tmp)
            _umount(studies)


def _session_put(server, payload: bytes, name: str) -> requests.Response:
    return requests.put(server["url"] + "/session/", params={"uncompress": "true"},
                        files={"files": (name, payload, "application/octet-stream")}, timeout=120)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def _zip(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _archives(escape: Path) -> dict[str, tuple[str, bytes, int, str]]:
    """name: (upload file name, bytes, expected status, expected detail)."""
    up = "../" * 12 + str(escape).lstrip("/")
    return {
        "tar-dotdot": ("s.tar.gz", _tar([_member("ok.txt"), _member(up)]), 400, "points outside the archive"),
        "tar-absolute": ("s.tar.gz", _tar([_member(str(escape))]), 400, "has an absolute path"),
        "tar-symlink": ("s.tar.gz", _tar([_member("etc_link", kind=tarfile.SYMTYPE, link="/etc")]), 400, "is a link"),
        "tar-hardlink": ("s.tar.gz", _tar([_member("a.txt"), _member("hard", kind=tarfile.LNKTYPE, link="/etc/passwd")]),
                         400, "is a link"),
        "tar-device": ("s.tar.gz", _tar([_member("zero", kind=tarfile.CHRTYPE)]), 400, "a device or pipe"),
        "tar-fifo": ("s.tar.gz", _tar([_member("pipe", kind=tarfile.FIFOTYPE)]), 400, "a device or pipe"),
        "zip-dotdot": ("s.zip", _zip([(up, b"x", None)]), 400, "points outside the archive"),
        "zip-symlink": ("s.zip", _zip([("etc_link", b"/etc", stat.S_IFLNK | 0o777)]), 400, "is a link"),
        "zip-bomb": ("s.zip", _zip([("zeros.bin", bytes((MAX_UPLOAD_MB + 1) * 1_000_000), None)]), 413,
                     f"unpacks to over {MAX_UPLOAD_MB} MB"),
        "zip-many-members": ("s.zip", _zip([(f"f{i}", b"", None) for i in range(20_001)]), 413, "over 20000 members"),
        "tar-many-members": ("s.tar.gz", _tar([_member(f"f{i}", b"") for i in range(20_001)]), 413, "over 20000 members"),
    }


ARCHIVE_CASES = ["tar-dotdot", "tar-absolute", "tar-symlink", "tar-hardlink", "tar-device", "tar-fifo", "zip-dotdot",
                 "zip-symlink", "zip-bomb", "zip-many-members", "tar-many-members"]


@pytest.mark.parametrize("case", ARCHIVE_CASES)
def test_session_archives_never_write_outside_and_are_capped(server, case):
    """Issue 22.1: a `../` member was written anywhere the server could write, links were stored, a 306 KB zip
    unpacked to 315 MB."""
    escape = server["root"] / f"escaped-{case}.txt"
    name, payload, status, text = _archives(escape)[case]
    before = _files(server["tmp"], server["sessions"], server["studies"])
    response = _session_put(server, payload, name)
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert text in _detail(response)
    assert not escape.exists(), "an archive member was written outside the session store"
    assert _files(server["tmp"], server["sessions"], server["studies"]) == before


def test_a_plain_archive_still_makes_a_session(server):
    ct = (server["ts"] / "example_ct_sm.nii.gz").read_bytes()
    response = _session_put(server, _zip([("series/", b"", stat.S_IFDIR | 0o755), ("series/ct.nii.gz", ct, None)]), "s.zip")
    assert response.status_code == 200, response.text
    image = Path(response.json()["session_info"]["image"])
    assert image.is_relative_to(server["sessions"]) and (image / "series" / "ct.nii.gz").read_bytes() == ct
    assert requests.delete(f"{server['url']}/session/{response.json()['session_id']}", timeout=30).status_code == 200


def test_reload_is_refused_and_costs_nothing(server):
    """Issue 22.2: each POST /reload re-initialised the app: 10 calls took +400 MB RSS and +8 threads."""
    rss, threads = _proc_status(server["pid"])
    for _ in range(10):
        response = requests.post(server["url"] + "/reload", timeout=120)
        assert response.status_code == 403 and "not served" in _detail(response)
    rss_after, threads_after = _proc_status(server["pid"])
    assert threads_after - threads <= 2, (threads, threads_after)
    assert rss_after - rss < 100e6, (rss, rss_after)
    assert requests.get(server["url"] + "/info/", timeout=30).status_code == 200


def _raw_get(url: str, path: str) -> tuple[int, dict]:
    """GET a path exactly as given (no client-side '..' normalisation)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", path)
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    return answer.status, json.loads(body) if body.startswith(b"{") else {}


@pytest.mark.parametrize("path", ["/ohif/sam2med/" + "a" * 5000 + ".js", "/ohif/..", "/ohif/%2e%2e", "/ohif/../..",
                                  "/ohif/assets/..", "/ohif/" + "b" * 5000])
def test_long_and_parent_ohif_paths_are_a_json_404(server, path):
    """Issue 22.11: these answered 500."""
    status, body = _raw_get(server["url"], path)
    if path == "/ohif/" + "b" * 5000:  # an OHIF app route: index.html, as for any unknown name
        assert status in (200, 404), status
        return
    assert status == 404 and isinstance(body.get("detail"), str), (status, body)


def test_progress_ids_are_issued_by_the_server_and_bound_to_one_request(server):
    """Issue 22.10: any client could read or overwrite another's progress id (client-chosen, guessable)."""
    url = server["url"]

    def infer(progress_id: str) -> requests.Response:
        with open(server["seed"], "rb") as seed:
            return requests.post(f"{url}/infer/sam2_propagate", params={"image": "ct", "output": "json"},
                                 data={"params": json.dumps({"slice_range": [CT_SLICE - 1, CT_SLICE + 1],
                                                             "progress_id": progress_id})},
                                 files={"label": ("seed.nii.gz", seed)}, timeout=600)

    chosen = infer("ohif-1733330000000-123456")
    assert chosen.status_code == 404 and "not issued by this server" in _detail(chosen)
    issued = requests.post(f"{url}/sam2med/progress", timeout=30).json()["progress_id"]
    assert len(issued) >= 32 and issued != requests.post(f"{url}/sam2med/progress", timeout=30).json()["progress_id"]
    assert infer(issued).status_code == 200
    assert requests.get(f"{url}/sam2med/progress/{issued}", timeout=30).json()["stage"] == "done"
    reused = infer(issued)
    assert reused.status_code == 409 and "already used" in _detail(reused)


def _wait_for_stage(url: str, progress_id: str, results: dict, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert "response" not in results, results["response"].text[:300]
        entry = requests.get(f"{url}/sam2med/progress/{progress_id}", timeout=30).json()
        if entry.get("stage") in ("encode", "track"):
            return
        time.sleep(0.05)
    raise AssertionError(f"the propagation never started: {entry}")


def _progress_id(url: str) -> str:
    """A server-issued progress id (a server before issue 22 took any id: one is made up, to see the old behaviour)."""
    answer = requests.post(f"{url}/sam2med/progress", timeout=30)
    return answer.json()["progress_id"] if answer.status_code == 200 else f"pytest-{os.urandom(8).hex()}"


def _start_infer(server, image_id: str, results: dict) -> tuple[threading.Thread, str]:
    url = server["url"]
    progress_id = _progress_id(url)

    def run():
        with open(server["seed"], "rb") as seed:
            results["response"] = requests.post(
                f"{url}/infer/sam2_propagate", params={"image": image_id, "output": "json"},
                data={"params": json.dumps({"slice_range": [0, 29], "progress_id": progress_id})},
                files={"label": ("seed.nii.gz", seed)}, timeout=900)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, progress_id


def _left_behind(server, before: set[Path]) -> set[str]:
    """Files in the server's temp dir that were not there `before` (after its clean-up tasks have run)."""
    deadline = time.time() + 5
    while _files(server["tmp"]) - before and time.time() < deadline:
        time.sleep(0.1)
    return {str(p) for p in _files(server["tmp"]) - before}


def test_image_replaced_mid_infer_is_a_409_never_a_label_of_the_other_version(server):
    """Issue 22.6: a replaced image gave 400s (half-written file read), 200s carrying the other version's sha256,
    and once a label matching neither version."""
    url, studies = server["url"], server["studies"]
    replacement = server["files"] / "swap_v2.nii.gz"
    image = sitk.ReadImage(str(server["ts"] / "example_ct_sm.nii.gz"))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32) * -1.0 + 200.0, str(replacement))
    results: dict = {}
    before = _files(server["tmp"])
    thread, progress_id = _start_infer(server, "swap", results)
    _wait_for_stage(url, progress_id, results)
    with open(replacement, "rb") as upload:
        put = requests.put(f"{url}/datastore/image", params={"image": "swap"},
                           files={"file": ("swap.nii.gz", upload)}, timeout=120)
    assert put.status_code == 200, put.text
    thread.join()
    response = results["response"]
    assert response.status_code == 409 and "'swap' was replaced while it was being segmented" in _detail(response)
    assert not _left_behind(server, before)
    again = requests.post(f"{url}/infer/sam2_propagate", params={"image": "swap", "output": "json"},
                          data={"params": json.dumps({"slice_range": [CT_SLICE - 1, CT_SLICE + 1]})},
                          files={"label": ("seed.nii.gz", server["seed"].read_bytes())}, timeout=600)
    assert again.status_code == 200, again.text
    sha = again.json()["provenance"]["inputs"]["image"]["sha256"]
    assert sha == hashlib.sha256((studies / "swap.nii.gz").read_bytes()).hexdigest()
    assert sha == hashlib.sha256(replacement.read_bytes()).hexdigest()


def test_image_deleted_mid_infer_is_a_409_and_its_state_goes(server):
    """Issue 22.6: deleting an image during its infer answered 500 (with a server path) after the whole
    propagation, and left its correction state behind."""
    url = server["url"]
    state = server["studies"] / ".sam2med" / "corrections" / f"{hashlib.sha256(b'gone').hexdigest()[:24]}.json"
    results: dict = {}
    before = _files(server["tmp"])
    thread, progress_id = _start_infer(server, "gone", results)
    _wait_for_stage(url, progress_id, results)
    assert requests.delete(f"{url}/datastore/image", params={"id": "gone"}, timeout=60).status_code == 200
    thread.join()
    response = results["response"]
    assert response.status_code == 409 and "'gone' was removed while it was being segmented" in _detail(response)
    assert str(server["root"]) not in response.text
    assert not state.exists(), "the removed image's correction state was left behind"
    assert not _left_behind(server, before)
    missing = requests.post(f"{url}/infer/sam2_propagate", params={"image": "gone"}, timeout=60)
    assert missing.status_code == 404


def _needs_mounts(server) -> None:
    if not server["mounted"]:
        pytest.skip("cannot mount tmpfs here (not root, or no CAP_SYS_ADMIN): the full-disk and read-only cases need it")


def test_full_temp_dir_is_a_507_and_leaves_nothing(server):
    """Issue 22.9: a full TMPDIR made PUT /session/ a 500 that left the upload behind."""
    _needs_mounts(server)
    filler = server["tmp"] / "filler"
    free = shutil.disk_usage(server["tmp"]).free
    with open(filler, "wb") as out:
        out.write(bytes(free - 64 * 1024))
    try:
        before = _files(server["tmp"], server["sessions"])
        ct = server["ts"] / "example_ct_sm.nii.gz"
        response = requests.put(server["url"] + "/session/", files={"files": ("ct.nii.gz", ct.read_bytes())}, timeout=120)
        assert response.status_code == 507 and "storage is full" in _detail(response), response.text[:300]
        archive = _zip([("ct.nii.gz", ct.read_bytes(), None)])
        zipped = _session_put(server, archive, "ct.zip")
        assert zipped.status_code == 507 and "storage is full" in _detail(zipped), zipped.text[:300]
        assert _files(server["tmp"], server["sessions"]) == before
    finally:
        filler.unlink()


def test_read_only_studies_are_a_507_and_change_nothing(server):
    """Issue 22.9: a read-only studies folder gave 500s with tracebacks on label/image PUT and DELETE."""
    _needs_mounts(server)
    url, studies = server["url"], server["studies"]
    ct = server["ts"] / "example_ct_sm.nii.gz"
    before = {p: p.stat().st_mtime_ns for p in studies.rglob("*") if p.is_file()}
    tmp_before = _files(server["tmp"])
    _remount(studies, "ro")
    try:
        answers = {
            "add image": requests.put(f"{url}/datastore/image", params={"image": "new"},
                                      files={"file": ("new.nii.gz", ct.read_bytes())}, timeout=120),
            "save label": requests.put(f"{url}/datastore/label", params={"image": "ct", "tag": "final"},
                                       files={"label": ("seed.nii.gz", server["seed"].read_bytes())}, timeout=120),
            "delete image": requests.delete(f"{url}/datastore/image", params={"id": "ct"}, timeout=120),
        }
    finally:
        _remount(studies, "rw")
    for what, response in answers.items():
        assert response.status_code == 507, (what, response.status_code, response.text[:300])
        assert "read-only" in _detail(response), what
    assert {p: p.stat().st_mtime_ns for p in studies.rglob("*") if p.is_file()} == before
    assert _files(server["tmp"]) == tmp_before


# -- auth ------------------------------------------------------------------------------------------------------------


class _Realm(BaseHTTPRequestHandler):
    """A Keycloak-like realm endpoint: GET answers {"public_key": base64 DER}."""

    public_key = ""

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps({"realm": "test", "public_key": self.public_key}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def auth_server(shared_data, random_checkpoint, tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    _Realm.public_key = base64.b64encode(public_der).decode()
    realm = ThreadingHTTPServer(("127.0.0.1", 0), _Realm)
    threading.Thread(target=realm.serve_forever, daemon=True).start()
    root = tmp_path_factory.mktemp("auth")
    studies = root / "studies"
    studies.mkdir()
    shutil.copy(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz", studies / "ct.nii.gz")
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": f"http://127.0.0.1:{realm.server_port}/realms/test",
           "TMPDIR": str(root)}
    args = ["--studies", str(studies), "--checkpoint", str(random_checkpoint), "--device", "cpu",
            "--image-size", str(TEST_IMAGE_SIZE), "--cache-gb", "1", "--lazy"]
    try:
        with running_server(args, root / "server.log", env, ready_path="/auth/") as url:
            yield {"url": url, "key": key, "public_pem": key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)}
    finally:
        realm.shutdown()


def _token(key, roles: list[str], expires_in: float = 300, algorithm: str = "RS256") -> str:
    import jwt

    payload = {"preferred_username": "annotator", "email": "a@example.org", "name": "A",
               "realm_access": {"roles": roles}, "exp": int(time.time() + expires_in)}
    return jwt.encode(payload, key, algorithm=algorithm)


USER_ROLES = ["monailabel-user", "monailabel-annotator"]


def test_a_token_signed_by_the_realm_logs_in(auth_server):
    """Issue 22.4: MONAI Label 0.8.5 decoded without `algorithms`, which PyJWT 2 refuses: every token was a 401."""
    url, token = auth_server["url"], _token(auth_server["key"], USER_ROLES)
    info = requests.get(f"{url}/info/", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert info.status_code == 200, info.text[:300]
    valid = requests.get(f"{url}/auth/token/valid", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert valid.status_code == 200 and valid.json()["username"] == "annotator" and valid.json()["roles"] == USER_ROLES
    grid = requests.get(f"{url}/sam2med/grid", params={"image": "ct"}, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert grid.status_code == 200 and len(grid.json()["shape"]) == 3


def test_bad_tokens_are_refused(auth_server):
    url, key = auth_server["url"], auth_server["key"]
    import jwt

    forged = jwt.encode({"preferred_username": "x", "realm_access": {"roles": USER_ROLES}, "exp": int(time.time() + 300)},
                        "not the realm's key", algorithm="HS256")
    for token, status in ((_token(key, USER_ROLES, expires_in=-60), 401), (forged, 401), ("garbage", 401),
                          (_token(key, ["someone-else"]), 403)):
        response = requests.get(f"{url}/info/", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert response.status_code == status, (token[:20], response.status_code, response.text[:200])


@pytest.mark.parametrize("method,path", [("GET", "/info/"), ("GET", "/sam2med/grid?image=ct"),
                                         ("GET", "/sam2med/grid?image=nope"),
                                         ("GET", "/sam2med/progress/abcdefghijklmnop"), ("POST", "/sam2med/progress"),
                                         ("POST", "/reload"), ("POST", "/infer/sam2_propagate?image=ct"),
                                         ("PUT", "/session/")])
def test_no_route_naming_patient_data_answers_without_a_token(auth_server, method, path):
    """Issue 22.4: /sam2med/grid (shape, origin, whether an id exists), /sam2med/progress/* and POST /reload
    answered without a token while auth was on."""
    response = requests.request(method, auth_server["url"] + path, timeout=60)
    assert response.status_code == 401, (response.status_code, response.text[:200])
    assert "shape" not in response.text and "origin" not in response.text


# -- readers and the CLI ------------------------------------------------------------------------------------------------


def _png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A 100-byte PNG that declares width x height 8-bit grey pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) +
                     chunk(b"IEND", b""))
    return path


def _dicom_bomb(path: Path, rows: int = 12000, columns: int = 12000) -> Path:
    """A small single-frame DICOM declaring rows x columns 16-bit pixels and holding 64 bytes of them."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = bytes(64)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(path), write_like_original=False)
    return path


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("which,side,message", [
    ("prompt", 10000, "= 100000000 pixels, over the 67108864 this program reads"),
    ("seed", 10000, "= 100000000 pixels, over the 67108864 this program reads"),
    ("prompt", 30000, "Image size (900000000 pixels) exceeds limit"),  # Pillow's own bomb check, as one line
    ("dicom", 12000, "= 144000000 pixels, over the 67108864 this program reads"),
    ("dicom", 1000, "is truncated: its pixels need 2000000 bytes"),  # under the cap, missing pixels are not zeros
])
def test_pixel_bombs_are_one_error_line_exit_2(tmp_path, random_checkpoint, which, side, message):
    """Issue 22.3: a PNG bomb as --prompt or --seed was a traceback (exit 1); a 640-byte DICOM declaring
    30000 x 30000 pixels was read (its missing pixels as zeros) at 5.8-12.6 GB."""
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(good)
    seed = tmp_path / "seed.png"
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 1
    Image.fromarray(mask).save(seed)
    bomb = _png_bomb(tmp_path / "bomb.png", side, side) if which != "dicom" else _dicom_bomb(tmp_path / "bomb.dcm", side, side)
    prompt, seed_arg = (good, bomb) if which == "seed" else (bomb, seed)
    out = tmp_path / "out"
    result = _cli("one-prompt", "--images", str(tmp_path), "--prompt", str(prompt), "--seed", str(seed_arg), "-o", str(out),
                  "--checkpoint", str(random_checkpoint), "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE))
    lines = _error_lines(result)
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (result.returncode, result.stderr[-2000:])
    assert message in lines[0], lines[0]
    assert not out.exists()


def test_3d_reader_refuses_a_voxel_bomb_before_decoding(tmp_path):
    """Issue 22.3 (3D readers): a header declaring more voxels than any volume is refused from the header."""
    from sam2med.errors import InputError
    from sam2med.io import load_volume

    header = sitk.Image([8, 8, 8], sitk.sitkUInt8)
    path = tmp_path / "bomb.mha"
    sitk.WriteImage(header, str(path))
    text = path.read_bytes().replace(b"DimSize = 8 8 8", b"DimSize = 2048 2048 2048")
    path.write_bytes(text)
    with pytest.raises(InputError, match="over the 1073741824 this program reads"):
        load_volume(path)


# -- propagate-batch --------------------------------------------------------------------------------------------------


@pytest.fixture
def cohort(shared_data, tmp_path):
    d = shared_data / "totalsegmentator"
    image = tmp_path / "ct.nii.gz"
    shutil.copy(d / "example_ct_sm.nii.gz", image)
    seed = _seed(shared_data, tmp_path / "ct_seed.nii.gz")
    return {"folder": tmp_path, "image": image, "seed": seed, "sha": {p: hashlib.sha256(p.read_bytes()).hexdigest()
                                                                       for p in (image, seed)}}


def _batch(manifest: Path, out: Path, checkpoint: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return _cli("propagate-batch", "--manifest", str(manifest), "-o", str(out), "--checkpoint", str(checkpoint),
                "--device", "cpu", "--image-size", str(TEST_IMAGE_SIZE), timeout=timeout)


@pytest.mark.parametrize("rows,message", [
    ("ct.nii.gz,ct_seed.nii.gz,15-17,ct.nii.gz\n", "row 1: output ct.nii.gz is its own image file"),
    ("ct.nii.gz,ct_seed.nii.gz,15-17,a.nii.gz\nct.nii.gz,ct_seed.nii.gz,15-17,ct_seed.nii.gz\n",
     "row 2: output ct_seed.nii.gz is row 1's seed file"),
    ("ct.nii.gz,ct_seed.nii.gz,15-17,b.nii.gz\nct.nii.gz,ct_seed.nii.gz,15-17,LINK\n", "is row 1's image file"),
])
def test_batch_outputs_never_overwrite_an_input(cohort, random_checkpoint, rows, message):
    """Issue 22.5: with -o the manifest's folder, a row whose output was its own image replaced the image by
    its label (later rows then ran on the label); an output that was another row's seed was silently skipped."""
    folder = cohort["folder"]
    os.link(cohort["image"], folder / "hard_link.nii.gz")
    manifest = folder / "rows.csv"
    manifest.write_text("image,seed,range,output\n" + rows.replace("LINK", "hard_link.nii.gz"))
    result = _batch(manifest, folder, random_checkpoint)
    lines = _error_lines(result)
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (result.returncode, result.stderr[-2000:])
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in cohort["sha"]} == cohort["sha"]
    assert not (folder / "results.jsonl").exists()


def test_batch_rows_on_a_fifo_or_dev_zero_fail_at_once(cohort, random_checkpoint):
    """Issue 22.7: propagate-batch hung forever on a FIFO or a `.nii` link to /dev/zero."""
    folder = cohort["folder"]
    os.mkfifo(folder / "pipe.nii.gz")
    os.symlink("/dev/zero", folder / "zero.nii")
    (folder / "rows.csv").write_text("image,seed,range,output\n"
                                     "pipe.nii.gz,ct_seed.nii.gz,15-17,pipe_label.nii.gz\n"
                                     "zero.nii,ct_seed.nii.gz,15-17,zero_label.nii.gz\n"
                                     "ct.nii.gz,pipe.nii.gz,15-17,seed_pipe.nii.gz\n")
    out = folder / "out"
    result = _batch(folder / "rows.csv", out, random_checkpoint, timeout=240)
    records = {r["row"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert [records[n]["status"] for n in (1, 2, 3)] == ["failed"] * 3, result.stderr[-2000:]
    assert "is a pipe" in records[1]["error"] and "is a device" in records[2]["error"] and "is a pipe" in records[3]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl"]


@pytest.mark.parametrize("kind", ["fifo", "huge", "dev-zero"])
def test_manifest_is_checked_before_it_is_parsed(tmp_path, random_checkpoint, kind):
    """Issue 22.7: a 200 MB manifest took 128 s and 6.3 GB before being refused over its last row; a FIFO hangs."""
    manifest = tmp_path / "rows.csv"
    if kind == "fifo":
        os.mkfifo(manifest)
    elif kind == "dev-zero":
        os.symlink("/dev/zero", manifest)
    else:
        with open(manifest, "wb") as out:
            out.write(b"image,seed\n")
            out.truncate(200 * 2**20)  # sparse: 200 MiB without writing them
    start = time.perf_counter()
    result = _batch(manifest, tmp_path / "out", random_checkpoint, timeout=120)
    lines = _error_lines(result)
    expected = {"fifo": "is a pipe", "dev-zero": "is a device", "huge": "over the 16 MiB limit"}[kind]
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], (result.returncode, result.stderr[-2000:])
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "out").exists()


def test_formula_looking_cells_are_escaped_in_results_csv(tmp_path):
    """Issue 22.8: results.csv cells starting with =, +, -, @ were written as given (CSV injection)."""
    from sam2med.evaluation.report import write_results_csv
    from sam2med.evaluation.runner import TargetResult

    rows = [TargetResult(case='=HYPERLINK("http://x.example","open")', label=5, name="@SUM(A1:A9)", propagator="+tiny",
                         error="-2+3 failed"),
            TargetResult(case="\tcase", label=1, name="liver", propagator="tiny", seconds=-0.0)]
    path = write_results_csv(rows, tmp_path / "results.csv")
    with open(path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert read[0]["case"] == "'" + rows[0].case and read[0]["name"] == "'@SUM(A1:A9)"
    assert read[0]["propagator"] == "'+tiny" and read[0]["error"] == "'-2+3 failed"
    assert read[1]["case"] == "'\tcase" and read[1]["name"] == "liver" and read[1]["label"] == "1"
    assert read[1]["seconds"] == "-0.0"  # a number stays a number
