"""Figures: image grids, 2-D density and sample panels, training curves (PNG files).

Figures are built on ``matplotlib.figure.Figure`` directly, which renders with Agg and needs
neither pyplot nor a backend choice, so nothing global changes (and matplotlib and Pillow are
imported only when a function is called). Each plotting function writes a PNG if given a path and
returns the figure (displayable in a notebook).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from jaxebm.types import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "image_grid",
    "save_image_grid",
    "plot_image_panels",
    "plot_histograms",
    "plot_reliability",
    "plot_density_2d",
    "plot_samples_2d",
    "plot_metrics",
    "plot_feature_maps",
]

PathLike = str | os.PathLike

_PANEL_INCHES = 4.0
_DPI = 100


def image_grid(x: ArrayLike, nrow: int = 8, *, padding: int = 2) -> np.ndarray:
    """Tiles a batch of images into one uint8 image (as torchvision's ``make_grid``).

    Args:
      x: Images in ``[-1, 1]`` (jaxebm's image range; values outside are clipped), shape
        ``[B, H, W, C]`` with ``C`` 1 or 3.
      nrow: Images per row of the grid.
      padding: Black pixels between images and around the border.

    Returns:
      uint8 array, shape ``[rows * (H + padding) + padding, ncol * (W + padding) + padding, C]``
      with ``ncol = min(nrow, B)`` and ``rows = ceil(B / ncol)``; empty cells are black.

    Raises:
      ValueError: If ``x`` is not ``[B, H, W, C]`` with ``B >= 1`` and ``C`` in (1, 3), or
        ``nrow < 1`` or ``padding < 0``.

    Example:
      >>> image_grid(np.zeros((5, 8, 8, 3)), nrow=4).shape
      (22, 42, 3)
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[0] < 1 or x.shape[-1] not in (1, 3):
        raise ValueError(f"x must be [B, H, W, C] with B >= 1 and C in (1, 3), got {x.shape}")
    if nrow < 1 or padding < 0:
        raise ValueError(f"nrow must be >= 1 and padding >= 0, got {nrow} and {padding}")
    num, height, width, channels = x.shape
    ncol = min(nrow, num)
    rows = math.ceil(num / ncol)
    pixels = np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    grid = np.zeros(
        (rows * (height + padding) + padding, ncol * (width + padding) + padding, channels),
        np.uint8,
    )
    for index in range(num):
        row, col = divmod(index, ncol)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index]
    return grid


def save_image_grid(path: PathLike, x: ArrayLike, nrow: int = 8, *, padding: int = 2) -> None:
    """Writes :func:`image_grid` of ``x[B, H, W, C]`` (in ``[-1, 1]``) as a PNG with Pillow.

    Example:
      >>> import tempfile
      >>> save_image_grid(os.path.join(tempfile.mkdtemp(), "grid.png"), np.zeros((4, 8, 8, 1)))
    """
    from PIL import Image

    grid = image_grid(x, nrow, padding=padding)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path, format="PNG")


def _new_figure(num_panels: int, *, num_cols: int | None = None) -> tuple[Figure, list]:
    from matplotlib.figure import Figure

    num_cols = num_panels if num_cols is None else min(num_cols, num_panels)
    num_rows = math.ceil(num_panels / num_cols)
    figure = Figure(
        figsize=(_PANEL_INCHES * num_cols, _PANEL_INCHES * num_rows), dpi=_DPI, layout="constrained"
    )
    axes = figure.subplots(num_rows, num_cols, squeeze=False).ravel().tolist()
    for unused in axes[num_panels:]:
        unused.set_axis_off()
    return figure, axes[:num_panels]


def _finish(figure: Figure, path: PathLike | None) -> Figure:
    if path is not None:
        figure.savefig(path, format="png", bbox_inches="tight", pad_inches=0.1)
    return figure


def _check_panels(panels: Mapping, what: str) -> None:
    if not panels:
        raise ValueError(f"{what} must hold at least one panel, got none")


def plot_density_2d(
    path: PathLike | None,
    log_density_grids: Mapping[str, ArrayLike],
    bounds: Sequence[float],
    *,
    log: bool = False,
) -> Figure:
    """Side-by-side heat maps of 2-D densities (e.g. ``{"learnt": ..., "true": ...}``).

    Args:
      path: PNG file to write, or ``None``.
      log_density_grids: Title -> log-density on a grid, shape ``[R, R]``, row ``i`` at
        ``x_1 = c_i`` (the layout of ``jaxebm.metrics.grid_log_density``). ``-inf`` is fine.
      bounds: ``(lo, hi)`` of the grid's square box.
      log: Draw the log-density (clipped 12 nats below its maximum) instead of the density.

    Returns:
      The figure, one panel per entry, each with its own colour scale.

    Raises:
      ValueError: If there are no grids or one is not square 2-D.

    Example:
      >>> from jaxebm import metrics
      >>> grid = metrics.grid_log_density(lambda x: (x**2).sum(-1), bounds=(-3, 3), resolution=32)
      >>> figure = plot_density_2d(None, {"gaussian": grid}, (-3, 3))
    """
    _check_panels(log_density_grids, "log_density_grids")
    lo, hi = (float(b) for b in bounds)
    figure, axes = _new_figure(len(log_density_grids))
    for axis, (title, grid) in zip(axes, log_density_grids.items(), strict=True):
        grid = np.asarray(grid, np.float64)
        if grid.ndim != 2 or grid.shape[0] != grid.shape[1]:
            raise ValueError(f"grid {title!r} must be [R, R], got {grid.shape}")
        if log:
            finite_max = np.max(grid, initial=-np.inf, where=np.isfinite(grid))
            image = np.clip(grid, finite_max - 12.0, None)
        else:
            image = np.exp(grid)
        axis.imshow(
            np.ma.masked_invalid(image),
            origin="lower",
            extent=(lo, hi, lo, hi),
            cmap="viridis",
            interpolation="nearest",
        )
        axis.set_title(title)
        axis.set_aspect("equal")
    return _finish(figure, path)


def plot_samples_2d(
    path: PathLike | None,
    samples: Mapping[str, ArrayLike],
    bounds: Sequence[float],
    *,
    point_size: float = 1.0,
) -> Figure:
    """Side-by-side scatter plots of 2-D point sets (e.g. data, replay buffer, fresh chains).

    Args:
      path: PNG file to write, or ``None``.
      samples: Title -> points, shape ``[N, 2]``.
      bounds: ``(lo, hi)`` of the square box drawn (points outside are not shown).
      point_size: Marker area in points^2.

    Returns:
      The figure, one panel per entry.

    Raises:
      ValueError: If there are no sets or one is not ``[N, 2]``.

    Example:
      >>> points = np.random.default_rng(0).normal(size=(100, 2))
      >>> figure = plot_samples_2d(None, {"noise": points}, (-4, 4))
    """
    _check_panels(samples, "samples")
    lo, hi = (float(b) for b in bounds)
    figure, axes = _new_figure(len(samples))
    for axis, (title, points) in zip(axes, samples.items(), strict=True):
        points = np.asarray(points, np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"samples {title!r} must be [N, 2], got {points.shape}")
        axis.scatter(points[:, 0], points[:, 1], s=point_size, alpha=0.5, linewidths=0)
        axis.set_xlim(lo, hi)
        axis.set_ylim(lo, hi)
        axis.set_aspect("equal")
        axis.set_title(f"{title} ({len(points)})")
    return _finish(figure, path)


def plot_metrics(
    path: PathLike | None, rows: Sequence[Mapping[str, float]], keys: Sequence[str]
) -> Figure:
    """Training curves: one panel per key, value against ``step``.

    Args:
      path: PNG file to write, or ``None``.
      rows: ``metrics.jsonl`` rows, ``{"step": t, key: value, ...}``; a row may lack a key.
      keys: Metrics to draw; keys found in no row are skipped.

    Returns:
      The figure.

    Raises:
      ValueError: If a row has no ``step`` or none of ``keys`` appears in ``rows``.

    Example:
      >>> rows = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
      >>> figure = plot_metrics(None, rows, ["loss"])
    """
    if any("step" not in row for row in rows):
        raise ValueError("every row needs a 'step'")
    present = [key for key in keys if any(key in row for row in rows)]
    if not present:
        available = sorted({key for row in rows for key in row} - {"step"})
        raise ValueError(f"none of {list(keys)} is in the rows; they hold {available}")
    figure, axes = _new_figure(len(present), num_cols=3)
    steps = np.asarray([row["step"] for row in rows], np.float64)
    for axis, key in zip(axes, present, strict=True):
        values = np.asarray(
            [np.nan if row.get(key) is None else row[key] for row in rows], np.float64
        )
        axis.plot(steps, values, linewidth=1.0)
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    return _finish(figure, path)


def plot_image_panels(
    path: PathLike | None, panels: Mapping[str, ArrayLike], nrow: int = 8, *, num_cols: int = 4
) -> Figure:
    """Titled image grids side by side (e.g. original / masked / inpainted).

    Args:
      path: PNG file to write, or ``None``.
      panels: ``{title: images [B, H, W, C] in [-1, 1]}``, one :func:`image_grid` each.
      nrow: Images per row of each grid.
      num_cols: Panels per row of the figure.

    Returns:
      The figure.

    Raises:
      ValueError: If ``panels`` is empty (or an entry is not a batch of images).

    Example:
      >>> images = np.zeros((4, 8, 8, 1))
      >>> figure = plot_image_panels(None, {"a": images, "b": -images})
    """
    _check_panels(panels, "panels")
    figure, axes = _new_figure(len(panels), num_cols=num_cols)
    for axis, (title, images) in zip(axes, panels.items(), strict=True):
        grid = image_grid(images, nrow)
        axis.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        axis.set_title(title)
        axis.set_axis_off()
    return _finish(figure, path)


def plot_histograms(
    path: PathLike | None,
    values: Mapping[str, ArrayLike],
    *,
    title: str = "",
    xlabel: str = "",
    bins: int = 50,
) -> Figure:
    """Overlaid normalised histograms, one per entry (e.g. OOD scores of several datasets).

    Args:
      path: PNG file to write, or ``None``.
      values: ``{label: values [N]}``; non-finite values are dropped.
      title: Figure title.
      xlabel: Label of the value axis.
      bins: Number of bins shared by every histogram.

    Returns:
      The figure.

    Raises:
      ValueError: If ``values`` is empty or holds no finite value.

    Example:
      >>> figure = plot_histograms(None, {"in": np.zeros(10), "out": np.ones(10)})
    """
    _check_panels(values, "values")
    arrays = {label: np.asarray(v, np.float64).ravel() for label, v in values.items()}
    arrays = {label: v[np.isfinite(v)] for label, v in arrays.items()}
    finite = np.concatenate(list(arrays.values()))
    if finite.size == 0:
        raise ValueError("values hold no finite number")
    edges = np.histogram_bin_edges(finite, bins=bins)
    figure, (axis,) = _new_figure(1)
    for label, v in arrays.items():
        axis.hist(v, bins=edges, density=True, alpha=0.5, label=f"{label} ({v.size})")
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.legend()
    return _finish(figure, path)


def plot_reliability(
    path: PathLike | None,
    panels: Mapping[str, tuple[ArrayLike, ArrayLike]],
    *,
    num_bins: int = 15,
) -> Figure:
    """Reliability diagrams: accuracy against confidence per bin, one panel per model.

    The top-label confidence ``max_c probs[i, c]`` is binned into ``num_bins`` equal-width bins
    (as :func:`jaxebm.metrics.ece`, Guo et al. 2017); bars give each bin's accuracy, the diagonal
    is perfect calibration, and the title gives the ECE of the binning.

    Args:
      path: PNG file to write, or ``None``.
      panels: ``{title: (probs [N, C], labels [N])}``.
      num_bins: Number of confidence bins.

    Returns:
      The figure.

    Raises:
      ValueError: If ``panels`` is empty, shapes do not match, or ``num_bins < 1``.

    Example:
      >>> probs = np.array([[0.9, 0.1], [0.2, 0.8]])
      >>> figure = plot_reliability(None, {"model": (probs, np.array([0, 0]))})
    """
    _check_panels(panels, "panels")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    figure, axes = _new_figure(len(panels), num_cols=3)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    for axis, (title, (probs, labels)) in zip(axes, panels.items(), strict=True):
        probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
        if probs.ndim != 2 or labels.shape != probs.shape[:1] or probs.shape[0] == 0:
            raise ValueError(
                f"panel {title!r} needs probs [N, C] and labels [N], got {probs.shape} and "
                f"{labels.shape}"
            )
        confidence = probs.max(axis=-1)
        correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
        # Bin b holds (edges[b], edges[b + 1]]; a confidence of exactly 0 joins the first bin.
        index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
        counts = np.bincount(index, minlength=num_bins)
        accuracy = np.bincount(index, correct, minlength=num_bins) / np.maximum(counts, 1)
        mean_confidence = np.bincount(index, confidence, minlength=num_bins)
        ece = np.abs(np.bincount(index, correct, minlength=num_bins) - mean_confidence).sum()
        ece /= len(labels)
        filled = counts > 0
        axis.bar(
            centres[filled],
            accuracy[filled],
            width=1.0 / num_bins,
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        axis.plot([0, 1], [0, 1], "k--", linewidth=1.0, label="calibrated")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_title(f"{title} (ECE {ece:.3f}, N={len(labels)})")
        axis.legend(loc="upper left")
    return _finish(figure, path)


def plot_feature_maps(
    path: PathLike | None,
    panels: Mapping[str, ArrayLike],
    *,
    titles: Sequence[str] | None = None,
    xlabel: str = "frame (time)",
) -> Figure:
    """Rows of feature maps (log-mel spectrograms): one row per panel, time on the x axis.

    Args:
      path: PNG file to write, or ``None``.
      panels: ``{row title: maps [K, T, F] or [K, T, F, 1]}``, the same ``K`` in every row.
      titles: A title per column (e.g. the digit), or ``None``.
      xlabel: The x label of the bottom row (each row's y label is its title; the y axis of a
        map is the feature index, e.g. the mel band, low at the bottom).

    Returns:
      The figure.

    Example:
      >>> figure = plot_feature_maps(None, {"real": np.zeros((2, 61, 40))}, titles=["0", "1"])
    """
    _check_panels(panels, "panels")
    from matplotlib.figure import Figure

    rows = {name: np.asarray(maps) for name, maps in panels.items()}
    rows = {name: maps[..., 0] if maps.ndim == 4 else maps for name, maps in rows.items()}
    num_cols = max(len(maps) for maps in rows.values())
    figure = Figure(figsize=(1.3 * num_cols, 1.6 * len(rows)), dpi=_DPI, layout="constrained")
    axes = figure.subplots(len(rows), num_cols, squeeze=False)
    low = min(float(np.percentile(maps, 1)) for maps in rows.values())
    high = max(float(np.percentile(maps, 99)) for maps in rows.values())
    for row, (name, maps) in enumerate(rows.items()):
        for col in range(num_cols):
            axis = axes[row, col]
            if col < len(maps):
                axis.imshow(maps[col].T, origin="lower", aspect="auto", vmin=low, vmax=high)
            axis.set_xticks([])
            axis.set_yticks([])
            if titles is not None and row == 0 and col < len(titles):
                axis.set_title(titles[col])
        axes[row, 0].set_ylabel(name)
    axes[-1, 0].set_xlabel(xlabel)
    return _finish(figure, path)
