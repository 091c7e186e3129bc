"""`main.py rollback`: serve the model published before the current one again (undo the last fine-tune's publish)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sam2med.errors import InputError

HELP = "undo the last publish of the server's sam2_finetune: the previous model becomes current again"
DESCRIPTION = """\
The server's `sam2_finetune` publishes each accepted model by moving the pointer STATE/models/current.json
and keeps the model it replaced. This command moves the pointer back to that previous model (one atomic
rename); a running server uses it from its next request, and its /info/ shows its version at once. The
same is `POST /sam2med/rollback` on the server. Refused while a training runs, or when there is nothing
to go back to (one step back is kept).

examples:
  python main.py rollback --studies /data/ct                 # state folder /data/ct/.sam2med
  python main.py rollback --state-dir ~/.cache/sam2med/server-state/0123abcd
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--studies", default=None, metavar="DIR", help="the server's studies folder (state in DIR/.sam2med)")
    parser.add_argument("--state-dir", default=None, metavar="DIR", help="the server's state folder (--conf state_dir)")


def run(args: argparse.Namespace) -> int:
    from sam2med.monailabel.lifetime import is_training_job
    from sam2med.monailabel.publishing import read_stats, rollback

    if bool(args.studies) == bool(args.state_dir):
        raise InputError("give --studies DIR or --state-dir DIR (one of them)")
    state_dir = Path(args.state_dir).expanduser() if args.state_dir else Path(args.studies) / ".sam2med"
    if not state_dir.is_dir():
        raise InputError(f"{state_dir}: no server state folder there")
    stats = read_stats(state_dir)
    if stats.get("status") == "running" and isinstance(stats.get("pid"), int) and is_training_job(stats["pid"]):
        raise InputError("a training is running: stop it (DELETE /train/) before a rollback")
    pointer = rollback(state_dir)
    print(json.dumps({"model_version": pointer["version"], "rolled_back_from": pointer["rolled_back_from"],
                      "checkpoint": pointer["checkpoint"]}))
    return 0
