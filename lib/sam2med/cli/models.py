"""`main.py models`: the models sam2med can run, what each is for, and whether its checkpoint is cached."""

from __future__ import annotations

import argparse
import json

from sam2med.checkpoints import MODELS, SIDECAR_SUFFIX, cache_dir
from sam2med.windowing import PREPROCESSING

HELP = "list the models (SAM2.1, MedSAM2): what each is for, input size, licence, citation, cached or not"
DESCRIPTION = f"""\
The models of --model NAME (propagate, evaluate, bench, serve) and of --conf model NAME on the server.
'cached' means its checkpoint is in the cache folder ({cache_dir()}, set by
$SAM2MED_CHECKPOINT_DIR); 'python main.py download --model NAME' fetches it.

A fine-tuned checkpoint needs no entry here: its sidecar (the checkpoint's file name + "{SIDECAR_SUFFIX}",
with "base_model" and "image_size") names the model it was tuned from; pass it with --checkpoint PATH.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON instead of a table")


def model_rows() -> list[dict]:
    """One row per registry model: name, family, purpose, input size, preprocessing, licence, citation, file, URL, cached."""
    rows = []
    for spec in MODELS.values():
        path = cache_dir() / spec.filename
        rows.append({
            "name": spec.name, "family": spec.family, "purpose": spec.purpose, "input_size": spec.input_size,
            "preprocessing": PREPROCESSING[spec.preprocessing].description, "licence": spec.licence,
            "citation": spec.citation, "file": spec.filename, "url": spec.url,
            "cached": str(path) if path.is_file() else None,
        })
    return rows


def run(args: argparse.Namespace) -> int:
    rows = model_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':26s}{'family':9s}{'input':>6s}  {'cached':7s}purpose")
    for row in rows:
        cached = "yes" if row["cached"] else "no"
        print(f"{row['name']:26s}{row['family']:9s}{row['input_size']:>6d}  {cached:7s}{row['purpose']}")
    print()
    for family in dict.fromkeys(row["family"] for row in rows):
        first = next(row for row in rows if row["family"] == family)
        print(f"{family}: licence {first['licence']}; cite {first['citation']}; preprocessing: {first['preprocessing']}")
    print(f"cache folder: {cache_dir()} (python main.py download --model NAME)")
    return 0
