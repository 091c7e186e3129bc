"""The `main.py` command line: one module per subcommand, each with `add_parser` and `run`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sam2med.errors import Sam2MedError

SUBCOMMANDS = ("propagate", "propagate-batch", "one-prompt", "export", "serve", "rollback", "evaluate", "finetune", "bench",
               "download", "models", "samples")

DESCRIPTION = """\
sam2med: SAM2.1 propagation of seed masks through 3D medical images.

Draw a structure on one slice (or a few), give the slices where it starts and ends, and sam2med
tracks it through the volume with SAM2.1, both ways from the seed, and writes the full 3D label
on the image's own grid.

typical session:
  python main.py samples                                 # build sample-datasets/ (MNI152 from nilearn)
  python main.py download --model tiny                   # official SAM2.1 weights (needs the network)
  python main.py models                                  # the models: SAM2.1 sizes, MedSAM2, cached or not
  python main.py propagate IMAGE --seed SEED -o OUT.nii.gz --range 40 80
  python main.py propagate-batch --manifest rows.csv -o LABELS/   # many, resumable; --ray local|auto
  python main.py one-prompt --images DIR --prompt IMG.png --seed MASK.png -o MASKS/   # unordered 2D images
  python main.py export OUT.nii.gz --reference DICOM_DIR --format rtstruct -o OUT_RT.dcm   # or --format seg; --dicomweb URL
  python main.py serve                                   # MONAI Label server, OHIF at /ohif/
  python main.py rollback --studies DIR                  # the server serves its previous fine-tuned model again
  python main.py evaluate --images DIR --labels DIR --out RESULTS   # add --ray local --workers 2 for Ray
  python main.py evaluate --protocol one-prompt --images DIR2D --labels DIR2D --out RESULTS
  python main.py bench IMAGE --seed SEED --json bench.json
  python main.py finetune --images DIR --labels DIR --checkpoint BASE.pt -o FT.pt --json stats.json

run 'python main.py COMMAND --help' for each command's options.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where the help text does not already speak of the default and there is one to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"sam2med.cli.{name.replace('-', '_')}")
        except ModuleNotFoundError as err:
            # An install of the engine profile (scripts/bundle.sh) has no SimpleITK, MONAI Label or Ray: the
            # commands that need them are listed, and say what to install when run.
            _add_unavailable(subparsers, name, err.name or str(err))
            continue
        sub = subparsers.add_parser(name, help=module.HELP, description=module.DESCRIPTION, formatter_class=_Formatter)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def _add_unavailable(subparsers, name: str, missing: str) -> None:
    why = (f"'{name}' needs the Python package {missing}, which this install (sam2med's engine profile) leaves out: "
           f"install the server profile (scripts/bundle.sh --profile server) or {missing} itself")

    def run(args: argparse.Namespace) -> int:
        raise Sam2MedError(why)

    # no option prefix: whatever follows the command is taken as is, and running it says what is missing
    sub = subparsers.add_parser(name, help=f"(unavailable here: needs {missing})", description=why, add_help=False,
                                prefix_chars="\0")
    sub.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    sub.set_defaults(_run=run)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except Sam2MedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if not err.name or err.name.split(".")[0] == "sam2med":
            raise
        # a package that the engine profile (scripts/bundle.sh) leaves out, needed by this command or input
        print(f"error: '{args.command}' needs the Python package {err.name.split('.')[0]}, which this install leaves out "
              f"(sam2med's engine profile?): install the server profile (scripts/bundle.sh --profile server) or that package",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
