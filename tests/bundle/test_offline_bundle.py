"""scripts/bundle.sh and the bundle's install.sh, proven offline: each install runs inside a network namespace with
no network (`unshare -n`; a mount namespace also hides /opt, where this machine keeps its local wheels and
package index, and pip's cache). The server profile installs into a fresh venv and runs `samples`, `propagate`
on the sample and `serve` answering /info/; the engine profile (built --use-system-torch) installs into a venv
that holds only torch and runs `bench`. Bad bundles fail with one `error:` line.

Slow by nature (the server bundle is ~850 MiB of wheels, its install ~1.5 min on 2 cores): marked `bundle`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.bundle]

PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
OTHER_PYTHON = next((p for p in (Path("/root/.pyenv/versions/3.12.1/bin/python3.12"), Path("/usr/bin/python3.12"),
                                 Path("/root/.pyenv/versions/3.10.13/bin/python3.10")) if p.is_file()), None)
# Inside the namespace: loopback up (for the server), then the network is proved absent before anything runs.
OFFLINE_PRELUDE = """set -euo pipefail
mount -t tmpfs none /opt
mkdir -p /root/.cache && mount -t tmpfs none /root/.cache
ip link set lo up
if python3 -c "import socket; socket.create_connection(('151.101.0.223', 443), timeout=3)" 2>/dev/null; then
  echo "NETWORK REACHABLE" >&2; exit 99
fi
"""


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def offline():
    if not _unshare_works():
        pytest.skip("`unshare -n -m` is not permitted here (needs root or user namespaces)")

    def run(script: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["unshare", "-n", "-m", "bash", "-c", OFFLINE_PRELUDE + script], cwd=cwd, text=True,
                              capture_output=True, timeout=timeout)

    return run


def _bundle(out: Path, *options: str) -> Path:
    result = subprocess.run(["bash", str(REPO / "scripts" / "bundle.sh"), str(out), *options], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "total" in result.stdout  # the size by part
    return out


@pytest.fixture(scope="session")
def engine_bundle(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory.mktemp("bundles") / "engine", "--profile", "engine", "--use-system-torch")


@pytest.fixture(scope="session")
def server_bundle(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory.mktemp("bundles") / "server", "--profile", "server")


@pytest.fixture(scope="session")
def torch_only_venv(tmp_path_factory) -> Path:
    """A venv that holds only torch (what a PyTorch image has), installed before going offline; tests copy it."""
    venv = tmp_path_factory.mktemp("torch-only") / "venv"
    subprocess.run([str(PYTHON), "-m", "venv", str(venv)], check=True, timeout=120)
    torch_pin = next(l for l in (REPO / "requirements.txt").read_text().splitlines() if l.startswith("torch=="))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", torch_pin], check=True, timeout=600,
                   capture_output=True)
    return venv


def _venv_copy(venv: Path, dest: Path) -> Path:
    shutil.copytree(venv, dest, symlinks=True, copy_function=os.link)  # hard links; pip replaces files, never edits them
    return dest


def _wheels(bundle: Path) -> set[str]:
    return {p.name.split("-")[0].lower().replace("_", "-") for p in (bundle / "wheels").glob("*.whl")}


def test_engine_bundle_has_no_server_parts_and_its_size_is_the_documented_one(engine_bundle):
    names = _wheels(engine_bundle)
    assert {"sam2", "sam2med", "numpy", "nibabel", "hydra-core", "iopath", "monai"} <= names
    assert not names & {"torch", "torchvision", "monailabel", "simpleitk", "ray", "scipy", "pytest", "playwright",
                        "nvidia-cublas-cu12"}
    size = sum(p.stat().st_size for p in engine_bundle.rglob("*") if p.is_file())
    # README: 49 MiB (propagate, bench and evaluate; evaluate's surface distances need no scipy)
    assert size < 60 * 2**20, f"engine bundle without torch is {size / 2**20:.1f} MiB"
    manifest = json.loads((engine_bundle / "bundle.json").read_text())
    assert manifest["profile"] == "engine" and manifest["use_system_torch"] is True
    assert manifest["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"


def _copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest, copy_function=os.link)  # hard links: a copy of ~30 MiB costs nothing
    return dest


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_bundle_with_a_missing_wheel_fails_with_one_line_and_installs_nothing(engine_bundle, tmp_path):
    bundle = _copy(engine_bundle, tmp_path / "bundle")
    (next((bundle / "wheels").glob("nibabel-*.whl"))).unlink()
    result = subprocess.run(["bash", str(bundle / "install.sh"), str(tmp_path / "venv")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHON": str(PYTHON)})
    line = _one_error_line(result)
    assert "incomplete" in line and "nibabel-" in line
    assert not (tmp_path / "venv").exists()


@pytest.mark.skipif(OTHER_PYTHON is None, reason="no second Python version on this machine")
def test_a_bundle_for_another_python_fails_with_one_line(engine_bundle, tmp_path):
    result = subprocess.run(["bash", str(engine_bundle / "install.sh"), str(tmp_path / "venv")], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHON": str(OTHER_PYTHON)})
    line = _one_error_line(result)
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"for Python {want}" in line and f"PYTHON=python{want}" in line
    assert not (tmp_path / "venv").exists()


@pytest.mark.heavy
def test_server_profile_installs_offline_then_propagates_the_sample_and_serves(server_bundle, offline, tmp_path):
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    script = f"""
PYTHON={PYTHON} bash {server_bundle}/install.sh {venv}
S={venv}/bin/sam2med
$S samples
$S download --model tiny --random-weights ck/sam2.1_hiera_tiny.pt
read -r SEED SLICE < <({venv}/bin/python -c "import json; s = json.load(open('sample-datasets/samples.json'))['seed']; print(s['file'], s['slice'])")
echo "SLICE $SLICE"
mkdir out
$S propagate sample-datasets/mni152_t1_2mm.nii.gz --seed "sample-datasets/$SEED" --range $((SLICE - 2)) $((SLICE + 2)) \\
  --checkpoint ck/sam2.1_hiera_tiny.pt --device cpu --image-size 256 -o out/wm.nii.gz --scores out/scores.json
$S serve --studies sample-datasets --checkpoint ck/sam2.1_hiera_tiny.pt --device cpu --image-size 256 --cache-gb 1 \\
  --port 8765 > serve.log 2>&1 &
{venv}/bin/python - <<'EOF'
import json, time, urllib.request
for _ in range(240):
    try:
        with urllib.request.urlopen("http://127.0.0.1:8765/info/", timeout=5) as r:
            open("info.json", "wb").write(r.read())
            break
    except OSError:
        time.sleep(1)
else:
    raise SystemExit("serve did not answer /info/ in 240 s")
EOF
kill %1
"""
    result = offline(script, work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + (
        (work / "serve.log").read_text()[-2000:] if (work / "serve.log").exists() else "")
    # the install used nothing but the bundle: the venv's sam2med is the bundle's wheel, not this checkout
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert (site / "sam2med" / "engine").is_dir() and not (site / "__editable__.sam2med-0.1.0.pth").exists()
    slice_ = int(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("SLICE ")))
    image = nib.load(work / "sample-datasets" / "mni152_t1_2mm.nii.gz")
    label = nib.load(work / "out" / "wm.nii.gz")
    assert label.shape == image.shape and np.allclose(label.affine, image.affine, atol=1e-4)
    data = np.asarray(label.dataobj)
    seed = np.asarray(nib.load(work / "sample-datasets" / json.loads((work / "sample-datasets" / "samples.json").read_text())
                                ["seed"]["file"]).dataobj)
    written = np.flatnonzero(data.any(axis=(0, 1)))
    assert set(np.unique(data)) <= {0, 2} and written.min() >= slice_ - 2 and written.max() <= slice_ + 2
    assert np.array_equal(data[:, :, slice_], seed[:, :, slice_])  # the drawn slice, as drawn
    scores = json.loads((work / "out" / "scores.json").read_text())
    assert scores["provenance"]["random_weights"] is True
    info = json.loads((work / "info.json").read_text())
    assert "sam2_propagate" in info["models"], info.keys()


def test_engine_profile_installs_offline_into_a_torch_only_venv_and_runs_bench(engine_bundle, offline, shared_data,
                                                                             torch_only_venv, tmp_path):
    venv, work = _venv_copy(torch_only_venv, tmp_path / "torch-only"), tmp_path / "work"
    work.mkdir()
    ct = shared_data / "totalsegmentator" / "example_ct_sm.nii.gz"
    seg = nib.load(shared_data / "totalsegmentator" / "example_seg.nii.gz")
    labels = np.asarray(seg.dataobj)
    seed = np.zeros(labels.shape, dtype=np.uint8)
    seed[:, :, 12] = np.where(labels[:, :, 12] == 5, 5, 0)  # the liver on one axial slice
    nib.save(nib.Nifti1Image(seed, seg.affine), work / "seed.nii.gz")
    script = f"""
bash {engine_bundle}/install.sh {venv}
for m in SimpleITK monailabel ray torchvision; do
  if {venv}/bin/python -c "import $m" 2>/dev/null; then echo "$m is installed" >&2; exit 98; fi
done
S={venv}/bin/sam2med
$S download --model tiny --random-weights ck/sam2.1_hiera_tiny.pt
$S bench {ct} --seed seed.nii.gz --range 10 14 --checkpoint ck/sam2.1_hiera_tiny.pt --device cpu --image-size 256 \\
  --json bench.json
"""
    result = offline(script, work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((work / "bench.json").read_text())
    assert report["slices"] == 5, report
    assert report["first_s"] > 0 and report["cached_s"] > 0 and report["stock_s"] > 0


@pytest.mark.heavy
def test_gpu_check_runs_end_to_end_offline_on_the_cpu_at_a_reduced_size(engine_bundle, offline, shared_data, torch_only_venv,
                                                                        tmp_path):
    venv, out = _venv_copy(torch_only_venv, tmp_path / "torch-only"), tmp_path / "gpu-check"
    script = f"""
bash {REPO}/scripts/gpu_check.sh {out} --bundle {engine_bundle} --venv {venv} --device cpu --reduced \
  --data {shared_data / "totalsegmentator"}
"""
    result = offline(script, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["ok"] is True and summary["timed_out"] is False and summary["total_s"] < 480
    steps = summary["steps"]
    assert set(steps) == {"bench_30", "bench_60", "peak_90", "oom", "concurrency"}
    for name in ("bench_30", "bench_60", "peak_90"):
        report = json.loads((out / steps[name]["file"]).read_text())
        assert report["slices"] == 5 and report["first_s"] > 0 and report["cached_s"] > 0 and report["peak_mem_mb"] > 0
    assert json.loads((out / "bench_30.json").read_text())["stock_s"] > 0
    assert json.loads((out / "peak_90.json").read_text())["stock_s"] is None  # peak memory: no stock run
    assert steps["oom"]["skipped"].startswith("needs CUDA")
    concurrency = steps["concurrency"]
    assert concurrency["requests"] == 8 and concurrency["wrong_labels"] == 0 and concurrency["p95_s"] >= concurrency["p50_s"] > 0
    assert [r["values"] for r in concurrency["results"]] == [[5], [7]] * 4 and all(r["identical"] for r in concurrency["results"])
