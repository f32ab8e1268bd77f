"""k-nearest-neighbour imputation (the inpainting baseline) against a brute-force reference."""

import numpy as np
import pytest

from jaxebm import tasks


def _brute_force(train, x, mask, k):
    out = x.copy()
    for i in range(len(x)):
        known = ~mask[i]
        distance = (((train - x[i]) ** 2) * known).reshape(len(train), -1).sum(-1)
        nearest = np.argsort(distance, kind="stable")[:k]
        out[i] = np.where(mask[i], train[nearest].mean(0), x[i])
    return out


@pytest.mark.parametrize("k", [1, 3, 7])
def test_knn_inpaint_equals_brute_force(k):
    rng = np.random.default_rng(k)
    train = rng.normal(size=(60, 4, 4, 1)).astype(np.float32)
    x = rng.normal(size=(9, 4, 4, 1)).astype(np.float32)
    mask = rng.random(size=x.shape) < 0.5  # one mask per example
    filled = tasks.knn_inpaint(train, x, mask, k, chunk_size=4)
    np.testing.assert_allclose(filled, _brute_force(train, x, mask, k), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(filled[~mask], x[~mask])  # known entries untouched


def test_choose_k_picks_by_held_out_training_error():
    # Ten tight clusters of 20: one neighbour is enough and many average over other clusters.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 6))
    train = np.repeat(centres, 20, axis=0) + 0.01 * rng.normal(size=(200, 6))
    mask = np.array([False, False, False, True, True, True])
    assert tasks.choose_k(train, mask, (1, 5, 50)) in (1, 5)
    assert tasks.choose_k(train, mask, (50, 100)) == 50
    # Pure noise: more neighbours only average towards the mean, which is the best guess.
    noise = rng.normal(size=(400, 6))
    assert tasks.choose_k(noise, mask, (1, 50)) == 50
    with pytest.raises(ValueError, match="k must be"):
        tasks.knn_inpaint(train, train[:2], mask, 0)
