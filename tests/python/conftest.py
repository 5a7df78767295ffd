import pytest
import torch

import derrumbe


@pytest.fixture
def gmm():
    """An exact float64 Gaussian-mixture denoiser on a small [C, F, H, W] item."""
    return derrumbe.GaussianMixture.random([3, 2, 4, 5], components=3, seed=7)


def max_rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()
