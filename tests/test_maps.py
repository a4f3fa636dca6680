import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from distillad.errors import ConfigError
from distillad.maps import combine_maps, cosine_distance, gaussian_blur, max_score, normalized_l2_distance


@pytest.mark.parametrize("sigma", [1.0, 4.0])
@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 1, 20, 37)])
def test_gaussian_blur_equals_scipy(sigma, shape):
    x = torch.rand(shape, dtype=torch.float64)
    ours = gaussian_blur(x, sigma).numpy()
    ref = np.stack([[gaussian_filter(x[b, 0].numpy(), sigma=sigma, mode="reflect")] for b in range(shape[0])])
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_gaussian_blur_sigma_zero_is_identity():
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(gaussian_blur(x, 0), x)


def test_distances_against_direct_formulas():
    t, s = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    cos = (t * s).sum(1) / (t.norm(dim=1) * s.norm(dim=1))
    torch.testing.assert_close(cosine_distance(t, s)[:, 0], 1 - cos)
    tn, sn = t / t.norm(dim=1, keepdim=True), s / s.norm(dim=1, keepdim=True)
    torch.testing.assert_close(normalized_l2_distance(t, s)[:, 0], 0.5 * ((tn - sn) ** 2).sum(1))
    assert torch.allclose(cosine_distance(t, t), torch.zeros(2, 1, 4, 4), atol=1e-6)


def test_combine_modes_and_score():
    a, b = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 4, 4), 3.0)
    assert torch.allclose(combine_maps([a, b], (8, 8), "sum"), torch.full((1, 1, 8, 8), 5.0))
    assert torch.allclose(combine_maps([a, b], (8, 8), "product"), torch.full((1, 1, 8, 8), 6.0))
    assert torch.allclose(combine_maps([a, b], (8, 8), "mean"), torch.full((1, 1, 8, 8), 2.5))
    with pytest.raises(ConfigError, match="combine must be one of 'sum', 'product', 'mean', got 'max'"):
        combine_maps([a], (8, 8), "max")
    m = torch.zeros(2, 1, 4, 4)
    m[1, 0, 2, 3] = 7
    assert max_score(m).tolist() == [0.0, 7.0]
