"""MONAI Label's own SAM2 task (`Sam2InferTask`), timed in a child process for `main.py bench`.

It lives in the MONAI Label adapter because it drives MONAI Label itself; the child process keeps its
imports (and their failure on a CPU-only torch, where torchvision's compiled ops are missing) out of ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from sam2med.checkpoints import model_spec
from sam2med.geometry import Axis
from sam2med.prompts import SeedMasks

_MONAILABEL_CHILD = r"""
import json, os, shutil, sys, time
args = json.loads(sys.argv[1])
try:
    import torch
    from monailabel.config import settings
    settings.MONAI_SAM_MODEL_PT = "file://" + args["checkpoint"]
    settings.MONAI_SAM_MODEL_CFG = "file://" + args["config"]
    from monailabel.sam2.infer import Sam2InferTask
    from sam2.build_sam import build_sam2_video_predictor
except Exception as err:
    print(json.dumps({"error": f"import failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}))
    sys.exit(0)
model_dir = args["model_dir"]
shutil.copy(args["checkpoint"], os.path.join(model_dir, os.path.basename(args["checkpoint"])))
shutil.copy(args["config"], os.path.join(model_dir, os.path.basename(args["config"])))
task = Sam2InferTask(model_dir, dimension=3)
device = args["device"]
# the predictor built ahead, outside the timing (a running server has it)
task.predictors[device] = build_sam2_video_predictor(task.config_path, task.path, device=device)
request = {"image": args["image"], "device": device, "foreground": args["foreground"], "background": [],
           "roi": [], "result_write_to_file": False}
if torch.cuda.is_available() and device.startswith("cuda"):
    torch.cuda.synchronize()
start = time.perf_counter()
task(request)
if torch.cuda.is_available() and device.startswith("cuda"):
    torch.cuda.synchronize()
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def run_monailabel(image_path: Path, seeds: SeedMasks, model: str, checkpoint: Path, device: torch.device,
                   timeout_s: float = 3600) -> dict:
    """MONAI Label's `Sam2InferTask` (3D) in a child process, one foreground click per label at its seed's centre.

    It propagates forward from the clicked slice through the whole volume, at the model's default input size.
    Returns {"seconds": ...} or {"error": ...}.
    """
    import sam2  # late: only the benchmark runs the stock task

    if seeds.axis != Axis.AXIAL:
        return {"error": "MONAI Label's SAM2 task propagates along the third voxel axis only (use --axis axial)"}
    foreground = []
    for label in seeds.labels:
        s, mask = sorted(seeds.masks[label].items())[0]
        rows, cols = np.nonzero(mask)
        # slice pixel (row, col) = voxel (y, x) on an axial slice; MONAI Label takes [x, y, z]
        foreground.append([int(np.median(cols)), int(np.median(rows)), int(s)])
    config = Path(sam2.__file__).parent / model_spec(model).config
    with tempfile.TemporaryDirectory(prefix="sam2med-bench-monailabel-") as model_dir:
        args = {"checkpoint": str(Path(checkpoint).resolve()), "config": str(config), "model_dir": model_dir,
                "image": str(Path(image_path).resolve()), "foreground": foreground, "device": str(device)}
        env = dict(os.environ, MONAI_LABEL_DATASTORE_CACHE_PATH=model_dir)
        try:
            done = subprocess.run([sys.executable, "-c", _MONAILABEL_CHILD, json.dumps(args)], capture_output=True,
                                  text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f}s"}
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"child exited {done.returncode}: {tail[:200]}"}
