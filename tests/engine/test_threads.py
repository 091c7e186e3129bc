"""The run's thread count: set for torch and ITK, restored after the block, refused when not a whole number >= 1."""

from __future__ import annotations

import pytest
import SimpleITK as sitk
import torch

from sam2med.engine.threads import check_threads, compute_threads


def test_compute_threads_sets_torch_and_itk_and_restores_both():
    torch_before, itk_before = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    wanted = torch_before + 1
    with compute_threads(wanted):
        assert torch.get_num_threads() == wanted
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == wanted
    assert torch.get_num_threads() == torch_before
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == itk_before


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_a_thread_count_that_is_not_a_whole_number_of_at_least_one_is_refused(bad):
    with pytest.raises(ValueError, match="thread count must be a whole number of at least 1"):
        check_threads(bad)
