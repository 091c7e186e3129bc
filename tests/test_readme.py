"""The README's repository-layout table: one table, each path once, every path there, every package module named."""

from __future__ import annotations

import re

from conftest import REPO


def layout_rows() -> list[str]:
    section = (REPO / "README.md").read_text().split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    lines = section.strip().splitlines()
    assert lines[:2] == ["| path | what |", "| --- | --- |"], lines[:2]
    return lines[2:]


def test_the_layout_table_is_one_table_with_each_path_once():
    rows = layout_rows()
    assert all(row.startswith("| `") and row.endswith(" |") for row in rows), "a blank line or text splits the table"
    paths = [re.match(r"\| `([^`]+)` \|", row).group(1) for row in rows]
    assert len(paths) == len(set(paths)), f"a path listed twice: {paths}"
    assert all((REPO / p).exists() or p == "sample-datasets/" for p in paths), paths


def test_the_package_row_names_every_module():
    row = next(r for r in layout_rows() if r.startswith("| `lib/sam2med/` |"))
    package = REPO / "lib" / "sam2med"
    modules = sorted(p.stem if p.is_file() else p.name for p in package.iterdir()
                     if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists()))
    missing = [m for m in modules if f"`{m}`" not in row and f"`{m}/`" not in row]
    assert not missing, f"not in the README's layout table: {missing}"
