"""`main.py one-prompt`: one prompted 2D image and its seed -> a mask for every image of a folder, in no order."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from sam2med.cli.common import add_model_arguments, check_model_arguments, cpu_advice, propagator_kwargs
from sam2med.engine.policies import MEMORY_POLICIES
from sam2med.errors import InputError
from sam2med.images2d import Image2D, list_images, mask_name, read_image2d, read_label2d, save_mask2d, window_image2d
from sam2med.io import check_folder, check_output_path, write_json_atomic
from sam2med.progress import StageBars
from sam2med.provenance import describe_file, file_sha256, provenance
from sam2med.windowing import Preprocessing, Window

logger = logging.getLogger(__name__)

HELP = "segment a folder of unordered 2D images from one prompted image (MedSAM-2's one-prompt)"
DESCRIPTION = """\
Segment every image of --images from one example: the --prompt image and its --seed mask condition SAM2,
then each other image is segmented as a frame of a pseudo-video with the selective memory (MedSAM-2,
Zhu et al. 2024): it attends to the prompt and to the most confident, least alike images segmented so far,
so the order of the images does not matter. Each label value of the seed is its own object; the masks keep
the values. The prompt image's own mask is its seed.

inputs: 2D PNG or JPEG (8-bit: taken as display-windowed, 0..255 mapped linearly; 16-bit: --window),
2D NIfTI (.nii/.nii.gz, or 3D with one slice) and single DICOM files (--window; 'auto' is CT soft tissue
for CT, percentiles of the image otherwise). Every file of the folder is tried (hidden files, folders and
the --seed file are skipped); a file that is unreadable, a 3D volume or not an image gets its error in the
JSON and one log line, and the others go on. Images of another size than the prompt are resampled to the
prompt's size for SAM2 and their masks back to their own size (nearest).

outputs in OUTDIR (created; never the images folder), each written atomically, on its image's grid:
  PNG image    -> NAME.png mask (same size; 8-bit, 16-bit for label values over 255)
  JPEG image   -> NAME.png mask (a JPEG mask would be lossy: its label values would not be exact)
  NIfTI image  -> NAME.nii.gz mask (same dimension, spacing, origin, direction)
  DICOM file   -> NAME.nii.gz mask on the DICOM's geometry (no DICOM-SEG: an empty mask, common here,
                  cannot be one, nor can anonymised files without UIDs be referenced)
and one_prompt.json (or --json): per image its status or error, per label SAM2's object score,
predicted IoU, area (pixels, mm2 where the spacing is known) and the images its memory held, plus the
provenance (inputs, model, weights, versions).
Exit status: 0 when at least one image besides the prompt was segmented, 1 when none was, 2 for a bad
--prompt/--seed/option (then nothing is written).

examples:
  python main.py one-prompt --images slices/ --prompt slices/case07.png --seed case07_liver.png -o masks/
  python main.py one-prompt --images dicoms/ --prompt dicoms/IM0012.dcm --seed IM0012_seed.nii.gz \\
      -o masks/ --json masks/scores.json --image-size 512
"""

DEFAULT_JSON = "one_prompt.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of 2D images (PNG, JPEG, NIfTI, DICOM files)")
    parser.add_argument("--prompt", required=True, metavar="IMAGE", help="the prompted image (in DIR or elsewhere)")
    parser.add_argument("--seed", required=True, metavar="MASK",
                        help="label mask of the prompt image (PNG or NIfTI, same size; each value one object)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder for the masks (created)")
    parser.add_argument("--json", metavar="FILE.json", default=None, help=f"per-image scores and provenance (default: OUTDIR/{DEFAULT_JSON})")
    parser.add_argument("--window", default="auto",
                        help="intensity window of NIfTI, DICOM and 16-bit PNG images: auto (CT soft tissue, else "
                             "percentiles of each image), a CT preset, LEVEL,WIDTH or percentile[:LOW,HIGH]; 8-bit "
                             "PNG/JPEG always map 0..255 linearly")
    parser.add_argument("--memory", default="selective", choices=list(MEMORY_POLICIES),
                        help="memory of each image: selective (MedSAM-2: the most confident, least alike images, in any "
                             "order) or recent (SAM2's: the last images segmented; an ablation)")
    add_model_arguments(parser)


@dataclass
class ImageEntry:
    """One file of the folder: its image once read, its mask name, or the error that stopped it."""

    path: Path
    image: Image2D | None = None
    output: str | None = None
    pixels: np.ndarray | None = None  # windowed for SAM2
    window: str | None = None
    error: str | None = None
    report: dict = field(default_factory=dict)

    def fail(self, error: str) -> None:
        self.error = error
        logger.error("%s: %s", self.path.name, error.removeprefix(f"{self.path}: "))


def _check_inputs(args: argparse.Namespace) -> tuple[Path, Path, Image2D, Image2D]:
    """The folders, the prompt image and the seed; any problem is an error before anything is written."""
    images_dir, out = Path(args.images), Path(args.output)
    check_folder(images_dir, "images")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; give an output folder")
    if out.resolve() == images_dir.resolve():
        raise InputError(f"{out}: is the images folder; the masks would overwrite the images: give another folder")
    if not out.parent.resolve().is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist; create it first")
    check_model_arguments(args)
    Window.parse(args.window, "CT")
    prompt = read_image2d(args.prompt)
    seed = read_label2d(args.seed)
    from sam2med.engine.oneprompt import check_seed

    check_seed(prompt.array, seed.array)
    return images_dir, out, prompt, seed


def _read_entries(paths: list[Path], prompt: Image2D, window: str, preprocessing: Preprocessing) -> list[ImageEntry]:
    """Each file read (the prompt's already is) and windowed, or its error; a mask name that two images would share
    fails the later one."""
    entries, taken = [], {}
    for path in paths:
        entry = ImageEntry(path)
        entries.append(entry)
        try:
            entry.image = prompt if path.resolve() == prompt.path.resolve() else read_image2d(path)
            entry.output = mask_name(entry.image)
            if entry.output in taken:
                entry.image = None
                entry.fail(f"its mask {entry.output} would overwrite {taken[entry.output]}'s; rename one of them")
                continue
            taken[entry.output] = path.name
            entry.pixels, entry.window = window_image2d(entry.image, window, preprocessing)
        except InputError as err:
            entry.image = None
            entry.fail(str(err))
        except Exception as err:  # a broken file must not end the batch
            entry.image = None
            entry.fail(f"cannot read it ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})")
    return entries


def run(args: argparse.Namespace) -> int:
    from sam2med.engine import Propagator
    from sam2med.engine.oneprompt import Frame, segment_unordered

    start = time.perf_counter()
    images_dir, out, prompt, seed = _check_inputs(args)
    json_path = Path(args.json) if args.json else out / DEFAULT_JSON
    if args.json:
        check_output_path(json_path, suffixes=None)
    paths = list_images(images_dir, exclude={Path(args.seed), out})
    prompt_in_folder = any(p.resolve() == Path(args.prompt).resolve() for p in paths)
    if not [p for p in paths if p.resolve() != Path(args.prompt).resolve()]:
        raise InputError(f"{images_dir}: holds no file besides the prompt and the seed")
    propagator = Propagator(**propagator_kwargs(args))
    entries = _read_entries(paths, prompt, args.window, propagator.preprocessing)
    prompt_entry = next((e for e in entries if e.image is prompt), None)
    prompt_pixels = (prompt_entry.pixels if prompt_entry is not None
                     else window_image2d(prompt, args.window, propagator.preprocessing)[0])
    readable = [e for e in entries if e.image is not None and e is not prompt_entry]
    frames = [Frame(e.path.name, e.pixels) for e in readable]
    out.mkdir(exist_ok=True)

    bars = StageBars("image")
    with logging_redirect_tqdm():
        result = segment_unordered(propagator, Frame(prompt.name, prompt_pixels), seed.array, frames, args.memory, bars)
    bars.close()
    _write_masks(result, prompt_entry, readable, out)
    segmented = sum(1 for e in readable if not e.error)
    report = _report(args, result, entries, prompt, prompt_in_folder, propagator, time.perf_counter() - start)
    write_json_atomic(report, json_path)
    failed = [e for e in entries if e.error]
    print(f"{out}: {segmented} image(s) segmented of {len(entries)} file(s) in {images_dir} from prompt {prompt.name} "
          f"(labels {', '.join(map(str, result.labels))}, memory {args.memory}) in {time.perf_counter() - start:.1f}s; "
          f"{len(failed)} failed; scores in {json_path}")
    for entry in failed:
        print(f"  failed {entry.path.name}: {entry.error.removeprefix(f'{entry.path}: ')}")
    if report["provenance"]["random_weights"]:
        print("note: RANDOM weights (a placeholder checkpoint): the masks show the plumbing, not segmentation quality")
    advice = cpu_advice(propagator.device.type, propagator.image_size)
    if advice:
        print(advice)
    return 0 if segmented else 1


def _write_masks(result, prompt_entry: ImageEntry | None, readable: list[ImageEntry], out: Path) -> None:
    """Each image's mask into `out` (the prompt's: its seed); a write that fails fails that image only."""
    by_name = {frame.name: frame for frame in result.frames}
    for entry in ([prompt_entry] if prompt_entry is not None else []) + readable:
        frame = result.frames[0] if entry is prompt_entry else by_name[entry.path.name]
        try:
            save_mask2d(frame.mask, entry.image, out / entry.output)
        except (InputError, OSError, RuntimeError) as err:
            entry.fail(f"cannot write its mask ({str(err).splitlines()[0][:160]})")
            continue
        row_mm, col_mm = entry.image.spacing
        known = entry.image.geometry is not None
        entry.report = {
            "output": entry.output, "prompt": frame.prompt,
            "tracked_size": None if frame.tracked_size is None else list(frame.tracked_size),
            "labels": {str(label): score.to_json(row_mm * col_mm if known else None) for label, score in frame.scores.items()},
        }


def _report(args, result, entries: list[ImageEntry], prompt: Image2D, prompt_in_folder: bool, propagator, seconds: float) -> dict:
    """The JSON: the prompt, the memory rule, every file's row, timings and provenance."""
    rows = []
    for entry in entries:
        row = {"image": entry.path.name, "status": "failed" if entry.error else "ok"}
        if entry.error:
            row["error"] = entry.error.removeprefix(f"{entry.path}: ")
        else:
            image = entry.image
            row.update({"format": image.kind, "shape": list(image.shape), "pixel_spacing": [round(s, 6) for s in image.spacing],
                        "window": entry.window, "sha256": file_sha256(entry.path), **entry.report})
        rows.append(row)
    return {
        "prompt": {"image": prompt.name, "in_images": prompt_in_folder, "labels": result.labels},
        "memory": result.memory or {"policy": "recent"},
        "images": rows,
        "counts": {"files": len(entries), "written": sum(1 for e in entries if not e.error),
                   "failed": sum(1 for e in entries if e.error)},
        "seconds": round(seconds, 3), "encode_seconds": round(result.encode_seconds, 3),
        "track_seconds": round(result.track_seconds, 3),
        "provenance": provenance(propagator, {"prompt": describe_file(args.prompt), "seed": describe_file(args.seed)},
                                 "per image (images[].window)"),
    }
