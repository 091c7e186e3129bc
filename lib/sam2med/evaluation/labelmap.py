"""Label names: read `--labels-map` files and resolve `--label` values or names.

Accepted files: a flat {"liver": 5} or {"5": "liver"} object, or an object of such maps with the one
to use chosen by key: `labels.json:total` (the shared TotalSegmentator file has keys total, total_mr).
"""

from __future__ import annotations

import json

from sam2med.errors import InputError
from sam2med.labelnames import map_file_and_key


def _normalise(mapping: dict, source: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for key, value in mapping.items():
        if isinstance(value, str) and str(key).strip().isdigit():
            names[int(key)] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            names[value] = str(key)
        else:
            raise InputError(f"{source}: entry {key!r}: {value!r} is neither \"value\": \"name\" nor \"name\": value")
    return names


def read_labels_map(spec: str) -> dict[int, str]:
    """{value: name} from `PATH` or `PATH:KEY`."""
    path, key = map_file_and_key(spec, "labels map")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable JSON file ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a labels map must be a JSON object")
    nested = {k: v for k, v in data.items() if isinstance(v, dict)}
    if key is not None:
        if key not in nested:
            raise InputError(f"{path}: no map named {key!r} (it holds {', '.join(nested) or 'a flat map'})")
        return _normalise(nested[key], f"{path}:{key}")
    if nested:
        if len(nested) == 1 and len(data) == 1:
            return _normalise(next(iter(nested.values())), str(path))
        raise InputError(f"{path}: holds several maps ({', '.join(nested)}); choose one with {path}:KEY")
    return _normalise(data, str(path))


def resolve_labels(requested: list[str] | None, names: dict[int, str], option: str = "--label") -> list[int] | None:
    """Label values for `option` items (values or names of the map); None means every label present."""
    if not requested:
        return None
    by_name = {name.lower(): value for value, name in names.items()}
    values: list[int] = []
    for item in requested:
        text = str(item).strip()
        if text.isdigit() and int(text) > 0:
            value = int(text)
        elif text.lower() in by_name:
            value = by_name[text.lower()]
        else:
            hint = " (give --labels-map to use names)" if not names else ""
            raise InputError(f"{option} {text!r}: not a positive label value or a name in the labels map{hint}")
        if value not in values:
            values.append(value)
    return values
