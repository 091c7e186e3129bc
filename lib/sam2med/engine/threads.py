"""The number of CPU threads a run computes with: one choice per run, applied in every process of that run.

On a CPU, torch's matrix products and convolutions (oneDNN, fp32 and bf16 alike) divide their work by the
thread count, and the order of the sums follows the division. The SAM2 encoder's features therefore differ
in their last bits between 1 and 2 threads (measured here: up to 2e-6 in fp32, one bf16 step in bf16), and
such differences flip a few voxels whose logits lie at the mask threshold. With the same thread count the
same kernels split the same work the same way, so the output is the same to the bit, whatever the load.
A batch or evaluation run therefore picks its thread count once (`--threads`, default this process's own),
and this process and each Ray worker compute with exactly that many (docs/batch.md, "Same results").
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

try:
    import SimpleITK as sitk
except ImportError:  # the engine profile (scripts/bundle.sh) has no SimpleITK, so no ITK threads to set
    sitk = None


def default_threads() -> int:
    """The threads this process computes with now: torch's default is one per physical core (or OMP_NUM_THREADS)."""
    return torch.get_num_threads()


def check_threads(threads: int) -> int:
    """`threads` when it is a whole number of at least 1, else a `ValueError` naming it."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"the thread count must be a whole number of at least 1, got {threads!r}")
    return threads


def set_compute_threads(threads: int) -> None:
    """Compute with `threads` threads in this process: torch (the model, SAM2's kernels) and ITK (the registration
    reference, resampling)."""
    torch.set_num_threads(check_threads(threads))
    if sitk is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


@contextmanager
def compute_threads(threads: int) -> Iterator[int]:
    """`set_compute_threads(threads)` for the block, then the counts this process had before."""
    torch_before = torch.get_num_threads()
    itk_before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() if sitk is not None else None
    set_compute_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(torch_before)
        if sitk is not None:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_before)
