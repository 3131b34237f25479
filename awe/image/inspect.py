"""Small plotting helpers for QA figures of image steps.

Matplotlib is imported inside the functions, in whatever backend the session
chose (the prompt, the ``awe`` command and ``from awe import *`` pick ``Agg``
only where there is no display; nothing here changes it), and every drawing
function takes an ``ax`` (``None`` makes a new figure), in the ``inspect=1``
style of the tasks::

    fig, ax = new_figure()
    show_image(ax, reduced, "ccd50", masks={"cosmics": cr, "satellites": sat.mask})
    save_figure(fig, "ccd50-qa.png")
"""

from __future__ import annotations

import logging
from os import PathLike
from typing import Any, Mapping

import numpy as np

__all__ = ["new_figure", "show_image", "show_histogram", "save_figure", "MASK_COLOURS"]

log = logging.getLogger(__name__)

#: Overlay colours, used in turn for the masks of :func:`show_image`.
MASK_COLOURS = ("red", "cyan", "yellow", "magenta", "lime", "orange")


def _pyplot() -> Any:
    import matplotlib.pyplot as plt

    return plt


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.0, 6.0)) -> tuple[Any, Any]:
    """A new figure and its axes (``plt.subplots``), in the session's backend."""
    plt = _pyplot()
    return plt.subplots(nrows, ncols, figsize=size, squeeze=True)


def _axes(ax: Any) -> Any:
    if ax is None:
        _, ax = new_figure()
    return ax


def show_image(ax: Any, image: np.ndarray, title: str = "",
               masks: Mapping[str, np.ndarray] | None = None, alpha: float = 0.5) -> Any:
    """Draw an image with a ZScale stretch and masks as coloured overlays.

    Parameters
    ----------
    ax : matplotlib.axes.Axes or None
        Where to draw; ``None`` makes a new figure.
    image : numpy.ndarray
        2-D image; drawn with ``origin='lower'`` (row 0 at the bottom).
    title : str
        Axes title.
    masks : mapping of str to numpy.ndarray, optional
        Boolean masks by name, each drawn in its own colour
        (:data:`MASK_COLOURS`) and listed in the legend.
    alpha : float
        Opacity of the overlays.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from astropy.visualization import ZScaleInterval
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ax = _axes(ax)
    data = np.asarray(image, dtype=float)
    finite = np.isfinite(data)
    vmin, vmax = ZScaleInterval().get_limits(data[finite]) if finite.any() else (0.0, 1.0)
    ax.imshow(data, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    handles = []
    for i, (name, mask) in enumerate((masks or {}).items()):
        m = np.asarray(mask, dtype=bool)
        if m.shape != data.shape:
            raise ValueError(f"mask {name!r} has shape {m.shape}, expected {data.shape}")
        colour = MASK_COLOURS[i % len(MASK_COLOURS)]
        ax.imshow(np.ma.masked_where(~m, m.astype(float)), origin="lower",
                  cmap=ListedColormap([colour]), vmin=0, vmax=1, alpha=alpha, interpolation="nearest")
        handles.append(Patch(color=colour, alpha=alpha, label=f"{name} ({int(m.sum())} px)"))
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small")
    ax.set_title(title)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    return ax


def show_histogram(ax: Any, image: np.ndarray, bins: int = 100, title: str = "",
                   clip: float = 5.0) -> Any:
    """Histogram of the pixel values within ``clip`` robust sigma of the median.

    Parameters
    ----------
    ax : matplotlib.axes.Axes or None
        Where to draw; ``None`` makes a new figure.
    image : numpy.ndarray
        Image (any shape); non-finite values are ignored.
    bins : int
        Number of bins.
    title : str
        Axes title.
    clip : float
        Range shown, in robust sigma (MAD) around the median.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _axes(ax)
    values = np.asarray(image, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size:
        med = float(np.median(values))
        sigma = 1.4826 * float(np.median(np.abs(values - med))) or 1.0
        ax.hist(values, bins=bins, range=(med - clip * sigma, med + clip * sigma), histtype="step",
                color="k")
        ax.axvline(med, color="r", lw=1, label=f"median {med:.4g}, sigma {sigma:.3g}")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_yscale("log")
    ax.set_xlabel("pixel value")
    ax.set_ylabel("pixels")
    ax.set_title(title)
    return ax


def save_figure(fig: Any, path: str | PathLike[str], dpi: int = 100) -> None:
    """Save ``fig`` (PNG by the file suffix) and close it."""
    plt = _pyplot()
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    log.debug("saved figure %s", path)
