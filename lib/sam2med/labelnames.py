"""How a label value is named wherever it is reported (its given name, else "label N"), and how a
client's named label values are matched to the server's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from sam2med.errors import InputError, PromptError
from sam2med.io import MAX_LABEL_VALUE


def label_name(value: int, names: Mapping[int, str]) -> str:
    """The name of `value` in `names` ({value: name}), else "label N"."""
    return names.get(int(value)) or f"label {int(value)}"


def name_key(name: str) -> str:
    """How label names are matched: case and spaces do not count ("Label 1" is "label1")."""
    return str(name).lower().replace(" ", "")


@dataclass(frozen=True)
class LabelMapping:
    """A client's label values matched by name to the server's ({name: value} on both sides).

    3D Slicer's MONAI Label plugin exports segment k as value k and names each value in `label_info`;
    the server knows its labels by other values (`--labels {"liver": 5}`). A client name the server
    does not know gets a server value of its own: the client's, unless a server label has it, else
    the next value above all others.
    """

    client: Mapping[str, int]  # {name: the client's value}, in the client's order
    server: Mapping[str, int]  # {name: the server's value}, the same names

    @classmethod
    def match(cls, client: Mapping[str, int], server_labels: Mapping[str, int]) -> "LabelMapping":
        known = {name_key(n): int(v) for n, v in server_labels.items()}
        taken = set(known.values())
        matched: dict[str, int] = {}
        for name in client:
            if name_key(name) in known:
                matched[name] = known[name_key(name)]
        for name, value in sorted(client.items(), key=lambda item: item[1]):
            if name not in matched:
                free = value if value not in taken else max(taken | set(client.values())) + 1
                matched[name] = free
                taken.add(free)
        return cls(dict(client), {name: matched[name] for name in client})

    def to_server(self) -> dict[int, int]:
        return {self.client[n]: self.server[n] for n in self.client}

    def to_client(self) -> dict[int, int]:
        return {self.server[n]: self.client[n] for n in self.client}

    def is_identity(self) -> bool:
        return all(self.client[n] == self.server[n] for n in self.client)

    def to_json(self) -> list[dict]:
        return [{"name": n, "value": v, "server_value": self.server[n]} for n, v in self.client.items()]


def require_named(values: Iterable[int], mapping: Mapping[int, int], lead: str) -> None:
    """A `PromptError` ("{lead} label value(s) ... that label_info does not name ...") for values the mapping lacks."""
    unnamed = sorted({int(v) for v in values} - set(mapping))
    if unnamed:
        named = ", ".join(str(v) for v in sorted(mapping)) or "none"
        raise PromptError(f"{lead} label value(s) {', '.join(map(str, unnamed))} that label_info does not name "
                          f"(it names {named})")


def relabel(array: np.ndarray, mapping: Mapping[int, int], what: str) -> np.ndarray:
    """`array` with every value v > 0 replaced by mapping[v]; a value the mapping lacks is a `PromptError` naming `what`."""
    values = [int(v) for v in np.unique(array) if v != 0]
    require_named(values, mapping, f"{what} holds")
    if all(mapping[v] == v for v in values):
        return array
    top = max([*mapping.values(), *values, 0])
    out = np.zeros(array.shape, dtype=np.min_scalar_type(top))
    for value in values:
        out[array == value] = mapping[value]
    return out


def parse_label_info(value: Any) -> dict[str, int] | None:
    """A client's {name: value} from `label_info`: 3D Slicer's list of {"name", "idx"} (or "id", "value"),
    or a JSON object {name: value}; None when absent. Names and values must be unique, values positive."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise PromptError("label_info must be a list of {\"name\", \"idx\"} or a JSON object {name: value}") from None
    if isinstance(value, Mapping):
        entries = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(e, Mapping) for e in value):
        entries = []
        for entry in value:
            number = next((entry[k] for k in ("idx", "id", "value") if k in entry), None)
            entries.append((entry.get("name"), number))
    else:
        raise PromptError("label_info must be a list of {\"name\", \"idx\"} or a JSON object {name: value}")
    labels: dict[str, int] = {}
    for name, number in entries:
        if not isinstance(name, str) or not name.strip():
            raise PromptError(f"label_info entry {_short((name, number))} has no name")
        whole = isinstance(number, (int, np.integer)) and not isinstance(number, bool) or \
            isinstance(number, str) and number.strip().isascii() and number.strip().isdigit()
        if not whole or not 0 < int(number) <= MAX_LABEL_VALUE:
            raise PromptError(f"label_info value of {name!r} must be a label value 1..{MAX_LABEL_VALUE}, got {_short(number)}")
        if name in labels or any(name_key(name) == name_key(n) for n in labels):
            raise PromptError(f"label_info names {name!r} twice")
        if int(number) in labels.values():
            raise PromptError(f"label_info gives value {int(number)} to two names")
        labels[name] = int(number)
    return labels


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def keyed_by_name(per_value: Mapping, names: Mapping[int, str]) -> dict:
    """{name or value: item} of {value: item}: each value's entry under its given name, where it has one."""
    return {names.get(int(value)) or str(int(value)): item for value, item in per_value.items()}


def map_file_and_key(spec: str, what: str) -> tuple[Path, str | None]:
    """The file and optional KEY of a label map given as `PATH` or `PATH:KEY` (a path holding ':' is taken whole
    when that file exists); a missing file is an `InputError` naming `what`."""
    path, key = Path(spec), None
    if not path.is_file() and ":" in spec:
        head, _, key = spec.rpartition(":")
        path = Path(head)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    return path, key
