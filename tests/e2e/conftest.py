"""Shared by the browser tests: Orthanc with the example CT series, the sam2med server over it, Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from e2e.ohif_browser import ARTIFACTS, REPO, _free_port, _get_json, _wait_for


@pytest.fixture(scope="session")
def installed() -> None:
    """The repo's install script: Debian's orthanc, orthanc-dicomweb, chromium and playwright, when missing."""
    run = subprocess.run(["bash", str(REPO / "scripts/orthanc/install.sh")], cwd=REPO, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, env={**os.environ, "PYTHON": sys.executable}, timeout=1200)
    if run.returncode != 0:
        if shutil.which("apt-get") is None:
            pytest.skip(f"Orthanc/Chromium cannot be installed here (no apt-get): {run.stderr.strip()[-300:]}")
        pytest.fail(f"scripts/orthanc/install.sh failed ({run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")


@pytest.fixture(scope="session")
def orthanc(installed, shared_data, tmp_path_factory):
    """A private Orthanc on free loopback ports with the example CT series uploaded; stopped at teardown."""
    data = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = _free_port(), _free_port()
    start = subprocess.run(["bash", str(REPO / "scripts/orthanc/start.sh"), "--data", str(data), "--http-port", str(http_port),
                            "--dicom-port", str(dicom_port)], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert start.returncode == 0, f"start.sh failed:\n{start.stdout}\n{start.stderr}"
    url = f"http://127.0.0.1:{http_port}/dicom-web"
    try:
        config = json.loads((data / "orthanc.json").read_text())
        assert config["RemoteAccessAllowed"] is False
        upload = subprocess.run(
            ["bash", str(REPO / "scripts/orthanc/upload_example.sh"), str(shared_data / "totalsegmentator/example_ct_dicom"), "--url", url],
            cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHON": sys.executable})
        assert upload.returncode == 0, f"upload failed:\n{upload.stdout}\n{upload.stderr}"
        series = _get_json(f"{url}/series?Modality=CT")
        assert len(series) == 1, series
        yield {"url": url, "study": series[0]["0020000D"]["Value"][0], "series": series[0]["0020000E"]["Value"][0]}
    finally:
        subprocess.run(["bash", str(REPO / "scripts/orthanc/stop.sh"), "--data", str(data)], cwd=REPO, capture_output=True)


@pytest.fixture(scope="session")
def server(orthanc, random_checkpoint, tmp_path_factory):
    """`main.py serve --dicomweb` on a free port (random-weight tiny model, 256 px, CPU)."""
    work = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = work / "server.log"
    env = {**os.environ, "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), "serve", "--dicomweb", orthanc["url"], "--port", str(port),
             "--checkpoint", str(random_checkpoint), "--image-size", "256", "--device", "cpu"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/info/", 240, process, log)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, ARTIFACTS / "server.log")
