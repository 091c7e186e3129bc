"""How a label value is named wherever it is reported: its given name, else "label N"."""

from __future__ import annotations

from typing import Mapping


def label_name(value: int, names: Mapping[int, str]) -> str:
    """The name of `value` in `names` ({value: name}), else "label N"."""
    return names.get(int(value)) or f"label {int(value)}"


def keyed_by_name(per_value: Mapping, names: Mapping[int, str]) -> dict:
    """{name or value: item} of {value: item}: each value's entry under its given name, where it has one."""
    return {names.get(int(value)) or str(int(value)): item for value, item in per_value.items()}
