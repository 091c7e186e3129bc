"""Voxel grids and slicing: the one place that knows how a 3D array maps to 2D slices and back.

Arrays are held in voxel order (x, y, z), the order of NIfTI/ITK index space. A slice along an axis is
a 2D image (H, W) whose rows follow the later remaining voxel axis and whose columns the earlier one:
axial (axis 2) slices are (y, x), coronal (axis 1) are (z, x), sagittal (axis 0) are (z, y).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from sam2med.errors import PromptError


class Axis(enum.IntEnum):
    """Slicing axis, named after the usual view and valued by the voxel axis it steps along."""

    SAGITTAL = 0
    CORONAL = 1
    AXIAL = 2

    @classmethod
    def parse(cls, name: "str | int | Axis") -> "Axis":
        """Accept 'axial' / 'coronal' / 'sagittal' (any case) or a voxel axis 0..2."""
        if isinstance(name, Axis):
            return name
        if isinstance(name, (int, np.integer)) and 0 <= int(name) <= 2:
            return cls(int(name))
        text = str(name).strip().lower()
        if text in ("0", "1", "2"):
            return cls(int(text))
        try:
            return cls[text.upper()]
        except KeyError:
            raise PromptError(f"unknown axis {name!r}: use axial, coronal or sagittal") from None


@dataclass(frozen=True)
class Grid:
    """Where the voxels of a volume lie in patient space (ITK conventions: LPS, row-major direction)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major 3x3, columns are the voxel axes' directions

    def matches(self, other: "Grid", atol: float = 1e-3) -> bool:
        """Same shape and, within `atol` (mm or cosine), the same spacing, origin and direction."""
        return (
            tuple(self.shape) == tuple(other.shape)
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def describe_difference(self, other: "Grid") -> str:
        """A short phrase naming the first property in which two grids differ."""
        for name in ("shape", "spacing", "origin", "direction"):
            a, b = getattr(self, name), getattr(other, name)
            same = tuple(a) == tuple(b) if name == "shape" else np.allclose(a, b, atol=1e-3)
            if not same:
                fmt = lambda v: "x".join(str(int(x)) for x in v) if name == "shape" else tuple(round(float(x), 3) for x in v)
                return f"{name} {fmt(a)} vs {fmt(b)}"
        return "no difference"

    def affine_ras(self) -> np.ndarray:
        """The 4x4 voxel-to-RAS matrix, as nibabel reports it for the same grid."""
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, :3] = direction * np.asarray(self.spacing, dtype=float)[None, :]
        affine[:3, 3] = self.origin
        lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
        return lps_to_ras @ affine

    def num_slices(self, axis: Axis) -> int:
        return int(self.shape[int(axis)])

    def slice_spacing(self, axis: Axis) -> tuple[float, float]:
        """In-plane (row, column) spacing in mm of slices along `axis`."""
        rows, cols = _in_plane_axes(axis)
        return float(self.spacing[rows]), float(self.spacing[cols])


def _in_plane_axes(axis: Axis) -> tuple[int, int]:
    """(row axis, column axis) of a slice along `axis`, as voxel axes."""
    first, second = [a for a in (0, 1, 2) if a != int(axis)]
    return second, first


def to_slices(volume_xyz: np.ndarray, axis: Axis) -> np.ndarray:
    """View a (x, y, z) array as a stack of 2D slices (N, H, W) along `axis` (no copy)."""
    stacked = np.moveaxis(volume_xyz, int(axis), 0)  # (N, first, second)
    return stacked.transpose(0, 2, 1)  # (N, second, first) = (N, H, W)


def from_slices(slices_nhw: np.ndarray, axis: Axis) -> np.ndarray:
    """Inverse of `to_slices`: a (N, H, W) stack back to a (x, y, z) array (no copy)."""
    return np.moveaxis(slices_nhw.transpose(0, 2, 1), 0, int(axis))


def voxel_to_slice_point(voxel_xyz: "tuple[float, float, float]", axis: Axis) -> tuple[int, float, float]:
    """Map a voxel coordinate (x, y, z) to (slice index, row, column) of a slice along `axis`."""
    rows, cols = _in_plane_axes(axis)
    return int(round(voxel_xyz[int(axis)])), float(voxel_xyz[rows]), float(voxel_xyz[cols])


def reorient_to(array_xyz: np.ndarray, source: Grid, target: Grid, atol: float = 1e-3) -> np.ndarray | None:
    """`array_xyz` on `source` re-indexed onto `target` when both grids are the same voxel lattice in
    space, differing only by axis order or flips (e.g. an LAS label of an LPS series); else None.

    Exact: voxels are moved, never interpolated.
    """
    if source.matches(target, atol):
        return array_xyz
    src_axes = np.asarray(source.direction, float).reshape(3, 3) * np.asarray(source.spacing, float)[None, :]
    dst_axes = np.asarray(target.direction, float).reshape(3, 3) * np.asarray(target.spacing, float)[None, :]
    try:
        mapping = np.linalg.solve(src_axes, dst_axes)  # source index step per target index step
        offset = np.linalg.solve(src_axes, np.asarray(target.origin, float) - np.asarray(source.origin, float))
    except np.linalg.LinAlgError:
        return None
    rounded = np.rint(mapping)
    if not np.allclose(mapping, rounded, atol=atol) or not np.allclose(np.abs(rounded).sum(axis=0), 1):
        return None
    perm = [int(np.flatnonzero(rounded[:, k])[0]) for k in range(3)]
    if sorted(perm) != [0, 1, 2]:
        return None
    out = np.transpose(array_xyz, perm)
    for k, j in enumerate(perm):
        if out.shape[k] != target.shape[k]:
            return None
        sign = rounded[j, k]
        expected = 0.0 if sign > 0 else source.shape[j] - 1.0
        if abs(offset[j] - expected) > atol * max(1.0, source.shape[j]):
            return None
        if sign < 0:
            out = np.flip(out, axis=k)
    return np.ascontiguousarray(out)


def sub_grid(grid: Grid, low: "tuple[int, int, int]", shape: "tuple[int, int, int]") -> Grid:
    """The grid of the box of `shape` voxels starting at voxel `low` of `grid`: same spacing and direction, its origin
    the patient position of voxel `low`, so each of its voxels lies where the same voxel of `grid` lies."""
    direction = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    origin = np.asarray(grid.origin, dtype=float) + direction @ (np.asarray(grid.spacing, dtype=float) * np.asarray(low, dtype=float))
    return Grid(tuple(int(v) for v in shape), tuple(grid.spacing), tuple(float(v) for v in origin), tuple(grid.direction))  # type: ignore[arg-type]


def changed_box(result: np.ndarray, reference: np.ndarray) -> "tuple[tuple[int, int, int], tuple[int, int, int]] | None":
    """Inclusive voxel corners ((x0, y0, z0), (x1, y1, z1)) of every voxel where `result` differs from `reference`;
    None when none does."""
    changed = result != reference
    if not changed.any():
        return None
    corners = []
    for axis in range(3):
        used = np.flatnonzero(changed.any(axis=tuple(a for a in range(3) if a != axis)))
        corners.append((int(used[0]), int(used[-1])))
    return (corners[0][0], corners[1][0], corners[2][0]), (corners[0][1], corners[1][1], corners[2][1])
