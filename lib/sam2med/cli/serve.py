"""`main.py serve`: the MONAI Label server with the sam2med app (OHIF at /ohif/, 3D Slicer, REST API)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from sam2med.checkpoints import choose_model, resolve_checkpoint
from sam2med.cli.common import add_model_arguments, check_model_arguments
from sam2med.errors import InputError
from sam2med.provenance import RANDOM_WEIGHTS_NOTE, has_random_weights
from sam2med.cli.samples import SAMPLES_FOLDER

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
# A checkout's apps/, else the copy that an install from the sam2med wheel (scripts/bundle.sh) puts in sys.prefix.
DEFAULT_APP = next((p for p in (REPO / "apps" / "sam2med", Path(sys.prefix) / "share" / "sam2med" / "apps" / "sam2med")
                    if (p / "main.py").is_file()), REPO / "apps" / "sam2med")
DEFAULT_STUDIES = Path(SAMPLES_FOLDER)  # of the current folder, where `samples` writes it

HELP = "start the MONAI Label server (OHIF at /ohif/, 3D Slicer plugin, REST API)"
DESCRIPTION = """\
Start MONAI Label (uvicorn, through MONAI Label's own server start) with the sam2med app over STUDIES:
a local folder of images (labels under labels/final/), or a DICOMweb studies URL. Infer tasks:
  sam2_propagate  seed label (uploaded with the request, else the image's saved label) + slice range
  sam2_points     foreground/background clicks and an roi box, propagated through a slice range
The model loads once, at start (or on the first request with --lazy), and serves every request.

The server binds to 127.0.0.1 unless --host says otherwise; MONAI Label has no authentication by
default, so bind elsewhere only on a trusted network. See docs/server.md for OHIF and 3D Slicer steps.

examples:
  python main.py samples && python main.py serve                     # http://127.0.0.1:8000/ohif/
  python main.py serve --studies /data/ct --checkpoint sam2.1_hiera_small.pt --device cuda
  python main.py serve --model medsam2                               # MedSAM2 (python main.py models)
  python main.py serve --studies http://127.0.0.1:8042/dicom-web     # Orthanc's DICOMweb
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--studies", default=None, metavar="DIR_OR_URL",
                        help=f"studies folder or DICOMweb URL (default: {DEFAULT_STUDIES}/ of the current folder, built by 'samples')")
    parser.add_argument("--dicomweb", default=None, metavar="URL",
                        help="DICOMweb root to serve (e.g. http://127.0.0.1:8042/dicom-web); same as --studies URL")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; other than loopback only on purpose")
    parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    add_model_arguments(parser)
    parser.add_argument("--lazy", action="store_true", help="load the model on the first request instead of at start")
    parser.add_argument("--warmup", choices=["auto", "true", "false"], default="auto",
                        help="encode a series' slices in the background when a client opens it (POST /sam2med/warmup) or asks for the next "
                             "sample, one slice at a time, pausing while a request runs (auto: on, CPU included)")
    parser.add_argument("--labels", default=None, metavar="JSON_OR_FILE",
                        help="label names and values shown to clients, e.g. '{\"liver\": 5}' (default: the studies' samples.json)")
    parser.add_argument("--max-upload-mb", type=float, default=512.0, help="largest accepted request body / upload")
    parser.add_argument("--cache-gb", type=float, default=None,
                        help="feature cache budget shared by all requests (default: half the free GPU memory; "
                             "on CPU a quarter of RAM, at most 8 GB); least recently used volumes are evicted")
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="further app settings, as for monailabel start_server (see docs/server.md)")
    parser.add_argument("--app", default=str(DEFAULT_APP), help=argparse.SUPPRESS)


def _studies(value: str | None) -> str:
    if value and value.startswith(("http://", "https://")):
        return value.rstrip("/")
    path = Path(value) if value else DEFAULT_STUDIES
    if not path.is_dir():
        hint = "run 'python main.py samples' first, or " if value is None else ""
        raise InputError(f"{path}: studies folder not found; {hint}pass --studies DIR (a folder of images) or a DICOMweb URL")
    return str(path.resolve())


def _warn_if_exposed(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        logger.warning("binding to %s: the server (no authentication by default) is reachable from other machines", host)


def build_conf(args: argparse.Namespace, checkpoint: Path | None, model: str) -> list[tuple[str, str]]:
    conf = [("model", model), ("device", args.device), ("preload", "false" if args.lazy else "true"),
            ("warmup", args.warmup), ("max_upload_mb", f"{args.max_upload_mb:g}")]
    if checkpoint is not None:
        conf.append(("checkpoint", str(checkpoint)))
    if args.image_size:
        conf.append(("image_size", str(args.image_size)))
    if args.cache_gb:
        conf.append(("cache_gb", f"{args.cache_gb:g}"))
    if args.labels:
        conf.append(("labels", args.labels))
    return conf + [(k, v) for k, v in args.conf]


def run(args: argparse.Namespace) -> int:
    from sam2med.monailabel.launch import start_server

    if args.dicomweb is not None:
        if args.studies is not None:
            raise InputError("give --studies or --dicomweb, not both")
        if not args.dicomweb.startswith(("http://", "https://")):
            raise InputError(f"--dicomweb {args.dicomweb!r}: give the DICOMweb root URL, e.g. http://127.0.0.1:8042/dicom-web")
    check_model_arguments(args)
    studies = _studies(args.dicomweb or args.studies)
    conf = dict(args.conf)  # --conf model / checkpoint name the model as --model / --checkpoint do
    if args.model and conf.get("model") not in (None, "", args.model):
        raise InputError(f"--model {args.model} and --conf model {conf['model']} disagree: give one")
    checkpoint = args.checkpoint or conf.get("checkpoint") or None
    model = choose_model(args.model or conf.get("model") or None, checkpoint).model
    checkpoint = resolve_checkpoint(model, checkpoint, download=True)  # fail before the server starts
    if has_random_weights(checkpoint):
        print(RANDOM_WEIGHTS_NOTE, flush=True)
    _warn_if_exposed(args.host)
    logger.info("MONAI Label on http://%s:%d (OHIF at /ohif/), studies %s, model %s from %s",
                args.host, args.port, studies, model, checkpoint)
    start_server(Path(args.app), studies, args.host, args.port, build_conf(args, checkpoint, model), args.max_upload_mb)
    return 0
