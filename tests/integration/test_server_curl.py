"""docs/server.md's curl recipe, run as written against the real server over `samples`' studies folder.

`samples` is run in a fresh folder, as a new user would: it writes sample-datasets/ there (not into the
installed package's checkout), and the recipe's relative seed path is read from there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from live_server import running_server

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOC_PORT = "http://127.0.0.1:8000"


def curl_recipe() -> str:
    """The bash block under "### An infer with curl" in docs/server.md."""
    text = (REPO / "docs" / "server.md").read_text()
    section = text.split("### An infer with curl", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def served_samples(random_checkpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("new_user")
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "samples"], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (work / "sample-datasets" / "samples.json").is_file(), "samples writes sample-datasets/ of the current folder"
    assert str(work / "sample-datasets") in done.stdout
    log = work / "server.log"
    args = ["--studies", str(work / "sample-datasets"), "--checkpoint", str(random_checkpoint), "--device", "cpu",
            "--image-size", "256", "--cache-gb", "1"]
    with running_server(args, log, {}) as url:
        yield work, url, log


def test_the_documented_curl_infer_runs_as_written(served_samples):
    work, url, log = served_samples
    recipe = curl_recipe()
    assert recipe.count(DOC_PORT) == 2
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe.replace(DOC_PORT, url)], cwd=work, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads((work / "wm.json").read_text())
    assert answer["slice_range"] == [49, 53] and list(answer["labels"]) == ["2"]
    assert answer["labels"]["2"]["name"] == "white_matter" and answer["labels"]["2"]["seed_slices"] == [51]
    assert answer["provenance"]["random_weights"] is True
    image = sitk.ReadImage(str(work / "sample-datasets" / "mni152_t1_2mm.nii.gz"))
    label = sitk.ReadImage(str(work / "wm.nii.gz"))
    assert label.GetSize() == image.GetSize()
    np.testing.assert_allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(label.GetDirection(), image.GetDirection(), atol=1e-6)
    voxels = sitk.GetArrayFromImage(label)  # (z, y, x)
    assert set(np.unique(voxels)) == {0, 2}
    assert set(np.flatnonzero(voxels.any(axis=(1, 2)))) <= set(range(49, 54)) and voxels[51].any()
    assert "note: RANDOM weights" in log.read_text(), "serve says on the console that the weights are random"
