"""Figures: image grids pixel by pixel, and every plot writes a readable, non-empty PNG."""

import numpy as np
import pytest
from PIL import Image

from jaxebm import metrics, viz


def test_image_grid_layout_and_values():
    x = np.full((5, 3, 4, 3), -1.0, np.float32)
    x[1] = 1.0  # white
    x[2] = 0.0  # mid grey: round(127.5) = 128
    grid = viz.image_grid(x, nrow=2, padding=1)
    # 3 rows of 3 + 1 padding (+1), 2 columns of 4 + 1 (+1).
    assert grid.shape == (3 * 4 + 1, 2 * 5 + 1, 3) and grid.dtype == np.uint8
    assert np.all(grid[1:4, 6:10] == 255)  # image 1: row 0, column 1
    assert np.all(grid[5:8, 1:5] == 128)  # image 2: row 1, column 0
    assert np.all(grid[0] == 0) and np.all(grid[:, 5] == 0)  # padding is black
    assert np.all(grid[9:12, 6:10] == 0)  # the empty sixth cell


def test_image_grid_clips_and_errors():
    grid = viz.image_grid(np.full((1, 2, 2, 1), 3.0), nrow=4, padding=0)
    assert grid.shape == (2, 2, 1) and np.all(grid == 255)
    with pytest.raises(ValueError, match=r"x must be \[B, H, W, C\]"):
        viz.image_grid(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="nrow must be >= 1"):
        viz.image_grid(np.zeros((2, 4, 4, 3)), nrow=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_save_image_grid_writes_a_png(tmp_path, channels):
    path = tmp_path / "grid.png"
    x = np.random.default_rng(0).uniform(-1, 1, size=(6, 8, 8, channels))
    viz.save_image_grid(path, x, nrow=3)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (3 * 10 + 2, 2 * 10 + 2)
        assert image.mode == ("L" if channels == 1 else "RGB")
        np.testing.assert_array_equal(
            np.asarray(image).reshape(22, 32, channels), viz.image_grid(x, 3)
        )


def assert_png(path):
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


def test_plot_density_2d(tmp_path):
    bounds = (-3.0, 3.0)
    learnt = metrics.grid_log_density(lambda x: (x**2).sum(-1), bounds=bounds, resolution=32)
    true = np.full((32, 32), -np.inf)  # zero density everywhere but one cell
    true[10, 20] = 0.0
    for log in (False, True):
        path = tmp_path / f"density_{log}.png"
        figure = viz.plot_density_2d(path, {"learnt": learnt, "true": true}, bounds, log=log)
        assert len(figure.axes) >= 2
        assert_png(path)
    with pytest.raises(ValueError, match=r"grid 'bad' must be \[R, R\]"):
        viz.plot_density_2d(None, {"bad": np.zeros((4, 5))}, bounds)
    with pytest.raises(ValueError, match="at least one panel"):
        viz.plot_density_2d(None, {}, bounds)


def test_plot_samples_2d(tmp_path):
    rng = np.random.default_rng(0)
    samples = {"data": rng.normal(size=(500, 2)), "model": rng.normal(size=(300, 2)) + 1}
    path = tmp_path / "samples.png"
    viz.plot_samples_2d(path, samples, (-4, 4))
    assert_png(path)
    with pytest.raises(ValueError, match=r"samples 'bad' must be \[N, 2\]"):
        viz.plot_samples_2d(None, {"bad": np.zeros((5, 3))}, (-4, 4))


def test_plot_metrics(tmp_path):
    rows = [
        {"step": step, "loss": 1.0 / (step + 1), "energy_gap": 0.1 * step} for step in range(20)
    ]
    rows[5]["loss"] = float("nan")
    path = tmp_path / "metrics.png"
    figure = viz.plot_metrics(path, rows, ["loss", "energy_gap", "acceptance"])  # no acceptance
    assert [axis.get_title() for axis in figure.axes[:2]] == ["loss", "energy_gap"]
    assert_png(path)
    with pytest.raises(ValueError, match=r"none of \['acceptance'\] is in the rows"):
        viz.plot_metrics(None, rows, ["acceptance"])
