"""The models `sam2_finetune` publishes: the pointer, the previous model (rollback), train stats and history.

Files in `<state_dir>/models/`:
- `current.json`: {"checkpoint": file name here, or null for the server's own checkpoint, "version", "stats",
  "previous": {"checkpoint", "version"} or null}. The server loads what it names on the next request.
- `sam2_finetune-<time>.pt`: the published model and the previous one; nothing else is kept.
- `train_stats.json`: the last (or running) training: "status" submitted / running / published / refused / failed /
  stopped,
  "reason" when not published.
- `train_history.json`: every finished training, newest last (kept across restarts).
Every file is written through a temporary file renamed into place (`io.write_json_atomic`); a temporary
file left by a killed writer (`.*.partial*`) is removed when a training starts and ends, and at server start.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from sam2med.errors import InputError
from sam2med.io import write_json_atomic
from sam2med.monailabel.rescoring import without_non_finite

logger = logging.getLogger(__name__)

CURRENT = "current.json"
STATS = "train_stats.json"
HISTORY = "train_history.json"
HISTORY_LIMIT = 100
CHECKPOINT_GLOB = "sam2_finetune-*.pt"
FINISHED = ("published", "refused", "failed", "stopped")


class NothingToRollBack(InputError):
    """There is no previous model to go back to."""


def models_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "models"


def read_json(path: Path) -> Any:
    """A JSON file's content, None when missing or unreadable; NaN / Infinity read as missing (None)."""
    try:
        return json.loads(path.read_text(), parse_constant=lambda _: None)
    except (OSError, ValueError):
        return None


def read_pointer(state_dir: str | Path | None) -> dict | None:
    if not state_dir:
        return None
    data = read_json(models_dir(state_dir) / CURRENT)
    return data if isinstance(data, dict) else None


def published_checkpoint(state_dir: str | Path | None) -> tuple[Path, dict] | None:
    """(checkpoint, pointer) of the published fine-tuned model; None when the server's own checkpoint is current."""
    pointer = read_pointer(state_dir)
    if not pointer or not pointer.get("checkpoint"):
        return None
    folder = models_dir(state_dir)  # type: ignore[arg-type]
    path = folder / str(pointer["checkpoint"])
    return (path, pointer) if path.is_file() and path.parent == folder else None


def publish(state_dir: str | Path, checkpoint_name: str, version: str, base_version: str, stats: dict) -> dict:
    """Point the server at `checkpoint_name` (one atomic rename); the model current until now becomes `previous`."""
    old = read_pointer(state_dir)
    previous = ({"checkpoint": old.get("checkpoint"), "version": old.get("version")} if old
                else {"checkpoint": None, "version": base_version})
    pointer = {"checkpoint": checkpoint_name, "version": version, "published_ts": int(time.time()),
               "stats": without_non_finite(stats), "previous": previous}
    write_json_atomic(pointer, models_dir(state_dir) / CURRENT)
    remove_leftovers(state_dir)
    return pointer


def rollback(state_dir: str | Path) -> dict:
    """Point the server back at the previous model; the undone model's file is removed. Returns the new pointer."""
    pointer = read_pointer(state_dir)
    previous = (pointer or {}).get("previous")
    if not previous:
        raise NothingToRollBack("no previous model to roll back to (nothing was published, or it was already rolled back)")
    folder = models_dir(state_dir)
    if previous.get("checkpoint") and not (folder / str(previous["checkpoint"])).is_file():
        raise NothingToRollBack(f"the previous model's file {previous['checkpoint']} is missing: cannot roll back")
    restored = {"checkpoint": previous.get("checkpoint"), "version": previous.get("version"), "published_ts": int(time.time()),
                "rolled_back_from": pointer.get("version"), "previous": None}  # type: ignore[union-attr]
    write_json_atomic(restored, folder / CURRENT)
    remove_leftovers(state_dir)
    logger.info("rolled back from %s to %s", pointer.get("version"), restored["version"])  # type: ignore[union-attr]
    return restored


def remove_leftovers(state_dir: str | Path, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove temporary files of killed writers and checkpoints neither current nor previous (nor in `keep`)."""
    folder = models_dir(state_dir)
    if not folder.is_dir():
        return []
    pointer = read_pointer(state_dir) or {}
    kept = {pointer.get("checkpoint"), ((pointer.get("previous") or {}).get("checkpoint")), *keep}
    removed = []
    for path in folder.iterdir():
        leftover = path.name.startswith(".") and ".partial" in path.name
        unused = path.match(CHECKPOINT_GLOB) and path.name not in kept
        sidecar_unused = path.name.endswith(".pt.json") and path.name[: -len(".json")] not in kept
        if leftover or unused or sidecar_unused:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    if removed:
        logger.info("removed from %s: %s", folder, ", ".join(sorted(removed)))
    return removed


def read_stats(state_dir: str | Path | None) -> dict:
    data = read_json(models_dir(state_dir) / STATS) if state_dir else None
    return data if isinstance(data, dict) else {}


def write_stats(state_dir: str | Path, stats: dict) -> None:
    folder = models_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(without_non_finite(stats), folder / STATS)


def read_history(state_dir: str | Path | None) -> list[dict]:
    data = read_json(models_dir(state_dir) / HISTORY) if state_dir else None
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def append_history(state_dir: str | Path, record: dict) -> None:
    """Add a finished training to the history (once per id)."""
    history = [r for r in read_history(state_dir) if r.get("id") != record.get("id")]
    history.append(without_non_finite(record))
    write_json_atomic(history[-HISTORY_LIMIT:], models_dir(state_dir) / HISTORY)
