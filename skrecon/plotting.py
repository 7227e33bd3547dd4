"""Figures of reconstructions (optional: needs matplotlib).

Install the plotting extra with ``pip install "skrecon[plot]"``. matplotlib is
imported only when a function here is called, so ``import skrecon.plotting``
works without it.

The functions build a :class:`matplotlib.figure.Figure` directly (no
``pyplot`` state, no ``plt.show()``), so they are safe under the Agg backend,
in scripts, tests and web servers, and creating many figures leaks nothing.
Save a figure with ``fig.savefig(path)``. In a notebook the returned figure
displays as the cell's value; to draw into a ``pyplot`` window pass
``fig=plt.figure()`` (or axes from ``plt.subplots``).
"""

import numbers

import numpy as np

__all__ = ["plot_reconstruction", "plot_leakage_curve"]

_INSTALL_HINT = (
    'skrecon.plotting needs matplotlib, which is not installed. Install it with '
    'pip install "skrecon[plot]" (or pip install matplotlib).'
)


def _import_matplotlib_figure():
    """Return :class:`matplotlib.figure.Figure`, or raise a helpful ImportError."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return Figure


def _as_2d_float(array, name):
    try:
        arr = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of floats: {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D, one flattened image per row, got shape {arr.shape}."
        )
    if arr.shape[0] < 1:
        raise ValueError(f"{name} must contain at least one row.")
    return arr


def _check_image_shape(image_shape, n_features):
    shape = tuple(image_shape)
    if len(shape) not in (2, 3) or not all(
        isinstance(s, numbers.Integral) and s >= 1 for s in shape
    ):
        raise ValueError(
            "image_shape must be (height, width) or (height, width, channels) of "
            f"positive integers, got {image_shape!r}."
        )
    if len(shape) == 3 and shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image_shape must have 1, 3 or 4 channels (last axis), got {shape[2]}."
        )
    if int(np.prod(shape)) != n_features:
        raise ValueError(
            f"image_shape {shape} holds {int(np.prod(shape))} values but the "
            f"samples have {n_features} features."
        )
    return tuple(int(s) for s in shape)


def _check_labels(labels, n, name):
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} must be a 1-D sequence of length {n}, got shape {arr.shape}."
        )
    return arr


def _check_permutation(permutation, n_true, n_rec):
    arr = np.asarray(permutation)
    if arr.ndim != 1 or arr.shape[0] != n_true:
        raise ValueError(
            f"permutation must have shape ({n_true},), one entry per true sample, "
            f"got shape {arr.shape}."
        )
    if arr.dtype.kind not in "iu":
        raise ValueError(f"permutation must hold integers, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if np.any((arr < -1) | (arr >= n_rec)):
        raise ValueError(
            f"permutation entries must be in [-1, {n_rec}) (-1: unmatched), got "
            f"values in [{arr.min()}, {arr.max()}]."
        )
    matched = arr[arr >= 0]
    if np.unique(matched).size != matched.size:
        raise ValueError("permutation matches a reconstructed row twice.")
    return arr


def _check_axes(ax, n_cols):
    axes = np.asarray(ax, dtype=object)
    if axes.shape != (2, n_cols):
        raise ValueError(
            f"ax must be an array of Axes of shape (2, {n_cols}) (originals on top, "
            f"reconstructions below), got shape {axes.shape}."
        )
    return axes


def _show(axis, image, *, cmap, vmin, vmax):
    """Draw one image without ticks, on the fixed range ``[vmin, vmax]``."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        shown = axis.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax,
                            interpolation="nearest")
    else:
        span = vmax - vmin if vmax > vmin else 1.0
        shown = axis.imshow(np.clip((image - vmin) / span, 0.0, 1.0),
                            interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    return shown


def _value_range(images):
    """``(vmin, vmax)`` of the images, widened when they are constant."""
    vmin, vmax = float(np.min(images)), float(np.max(images))
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    return vmin, vmax


#: The figure's caption when it owns the figure: what the panel titles mean.
CAPTION = ("rec. j: row j of the reconstruction (e.g. samples_[j]), shown under "
           "the true sample it is matched to (Hungarian matching on cosine); "
           "rel. err: ||x_hat - x|| / ||x||")


def plot_reconstruction(batch, reconstruction, *, image_shape=(8, 8),
                        permutation=None, labels=None, recovered_labels=None,
                        ax=None, fig=None, cmap="gray", title=None, colorbar=False):
    """Show each true sample above its matched reconstruction.

    The top row holds the true images, the bottom row the reconstructed
    image matched to each of them (Hungarian matching on cosine similarity,
    see :func:`skrecon.metrics.match_samples`, unless ``permutation`` is
    given). Each bottom panel is titled ``rec. j``, ``j`` the row of
    ``reconstruction`` shown there, and with the relative error
    ``||x_i - x_hat|| / ||x_i||`` of the pair; a figure made here says so in
    its caption (``skrecon.plotting.CAPTION``). Both images of a pair are drawn on the
    same intensity range, that of the true image (with ``colorbar=True``,
    that of the whole true batch), so a reconstruction with a wrong scale
    looks wrong.

    Parameters
    ----------
    batch : array-like of shape (n_samples, n_features) or None
        The true batch, one flattened image (C order) per row. ``None``
        (the truth is unknown, as to a real attacker): one row of the
        reconstructed images, titled ``rec. j``.
    reconstruction : array-like of shape (n_reconstructed, n_features)
        The reconstructed samples in any order, e.g. ``rec.samples_`` of a
        fitted :class:`~skrecon.GradientReconstructor`. Rows not matched to a
        true sample are not shown.
    image_shape : tuple of int, default=(8, 8)
        ``(height, width)`` or ``(height, width, channels)`` (channels last,
        1, 3 or 4 of them) whose product is ``n_features``.
    permutation : array-like of int of shape (n_samples,), default=None
        ``permutation[i]`` is the row of ``reconstruction`` shown under true
        sample ``i``, ``-1`` for none (the panel then says "not recovered"),
        as returned by :func:`skrecon.metrics.match_samples` or in
        ``reconstruction_report(...).permutation``. ``None``: computed by
        :func:`~skrecon.metrics.match_samples`.
    labels : array-like of shape (n_samples,), default=None
        True label of each sample, shown in the top titles.
    recovered_labels : array-like of shape (n_reconstructed,), default=None
        Label of each reconstructed row in the order of ``reconstruction``
        (e.g. ``rec.labels_``), shown in the bottom titles.
    ax : array-like of matplotlib Axes of shape (2, n_samples), default=None
        Axes to draw into: ``ax[0, i]`` gets true sample ``i``, ``ax[1, i]``
        its reconstruction (with ``batch=None``: ``n_reconstructed`` Axes,
        one per reconstructed sample). Their figure is returned.
        Incompatible with ``fig``.
    fig : matplotlib.figure.Figure, default=None
        An (empty) figure in which the ``2 x n_samples`` grid of axes is
        created, e.g. ``plt.figure()`` to get a pyplot-managed window.
        ``None`` (and ``ax=None``): a new :class:`~matplotlib.figure.Figure`,
        not registered with pyplot, sized to the batch.
    cmap : str or Colormap, default="gray"
        Colormap of single-channel images.
    title : str, default=None
        The figure's title (e.g. the setup: width, activation, bias, batch
        size).
    colorbar : bool, default=False
        Draw every panel on one intensity range, that of the true batch (of
        the reconstruction when ``batch`` is None), and add a colour bar
        (single-channel images only).

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure; save it with ``fig.savefig("reconstruction.png")``.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install "skrecon[plot]"``).
    ValueError
        If an array has the wrong shape, ``image_shape`` does not fit the
        features, ``permutation`` is invalid, or both ``ax`` and ``fig`` are
        given.

    See Also
    --------
    skrecon.metrics.reconstruction_report : The same matching, with metrics.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.plotting import plot_reconstruction
    >>> batch = np.random.default_rng(0).uniform(size=(3, 64))
    >>> fig = plot_reconstruction(batch, batch[::-1] + 0.01, labels=[4, 0, 7])
    >>> len(fig.axes)
    6
    >>> fig.axes[3].get_title()
    'rec. 2\\nrel. err 0.0...'
    >>> fig = plot_reconstruction(batch, batch + 0.01, title="B = 3", colorbar=True)
    >>> fig.get_suptitle(), len(fig.axes)  # the colour bar is one more axes
    ('B = 3', 7)
    >>> fig.savefig("reconstruction.png")  # doctest: +SKIP
    """
    if batch is None:
        return _plot_samples(reconstruction, image_shape, recovered_labels, ax, fig,
                             cmap, title, colorbar)
    batch = _as_2d_float(batch, "batch")
    reconstruction = _as_2d_float(reconstruction, "reconstruction")
    n, d = batch.shape
    if reconstruction.shape[1] != d:
        raise ValueError(
            f"reconstruction has {reconstruction.shape[1]} features but batch has "
            f"{d}."
        )
    shape = _check_image_shape(image_shape, d)
    labels = _check_labels(labels, n, "labels")
    recovered_labels = _check_labels(
        recovered_labels, reconstruction.shape[0], "recovered_labels"
    )
    if permutation is None:
        from .metrics import match_samples

        permutation = match_samples(batch, reconstruction)
    permutation = _check_permutation(permutation, n, reconstruction.shape[0])
    if ax is not None and fig is not None:
        raise ValueError("Pass at most one of ax and fig.")

    Figure = _import_matplotlib_figure()
    owned = ax is None
    if ax is not None:
        axes = _check_axes(ax, n)
        fig = axes[0, 0].get_figure()
    else:
        if fig is None:
            fig = Figure(figsize=(max(1.3 * n, 3.9), 3.6), layout="constrained")
        axes = np.asarray(fig.subplots(2, n, squeeze=False), dtype=object)

    norms = np.linalg.norm(batch, axis=1)
    for i in range(n):
        x = batch[i]
        vmin, vmax = _value_range(batch if colorbar else x)
        top = f"sample {i}"
        if labels is not None:
            top += f"\nlabel {labels[i]}"
        shown = _show(axes[0, i], x.reshape(shape), cmap=cmap, vmin=vmin, vmax=vmax)
        axes[0, i].set_title(top, fontsize="small")

        j = int(permutation[i])
        bottom = axes[1, i]
        if j < 0:
            bottom.set_xticks([])
            bottom.set_yticks([])
            bottom.set_title("not\nrecovered", fontsize="small")
            continue
        x_hat = reconstruction[j]
        _show(bottom, x_hat.reshape(shape), cmap=cmap, vmin=vmin, vmax=vmax)
        caption = f"rec. {j}"
        if recovered_labels is not None:
            caption += f", label {recovered_labels[j]}"
        if norms[i] > 0:
            caption += f"\nrel. err {np.linalg.norm(x - x_hat) / norms[i]:.2g}"
        bottom.set_title(caption, fontsize="small")
    axes[0, 0].set_ylabel("true", fontsize="small")
    axes[1, 0].set_ylabel("reconstructed", fontsize="small")
    _decorate(fig, axes, shown, shape, owned, title, colorbar)
    return fig


def _decorate(fig, axes, shown, shape, owned, title, colorbar):
    """Title, colour bar (single channel) and, on a figure made here, the caption."""
    if title is not None:
        fig.suptitle(title, fontsize="medium")
    if colorbar and (len(shape) == 2 or shape[2] == 1):
        fig.colorbar(shown, ax=list(axes.ravel()), shrink=0.8, label="pixel value")
    if owned:
        fig.supxlabel(CAPTION, fontsize="x-small", wrap=True)


def _plot_samples(reconstruction, image_shape, recovered_labels, ax, fig, cmap,
                  title, colorbar):
    """One row of reconstructed images, titled ``rec. j`` (no truth known)."""
    reconstruction = _as_2d_float(reconstruction, "reconstruction")
    n, d = reconstruction.shape
    shape = _check_image_shape(image_shape, d)
    recovered_labels = _check_labels(recovered_labels, n, "recovered_labels")
    if ax is not None and fig is not None:
        raise ValueError("Pass at most one of ax and fig.")
    Figure = _import_matplotlib_figure()
    owned = ax is None
    if ax is not None:
        axes = np.asarray(ax, dtype=object).reshape(1, -1)
        if axes.shape[1] != n:
            raise ValueError(
                f"ax must hold {n} Axes (one per reconstructed sample) when batch "
                f"is None, got {axes.size}.")
        fig = axes[0, 0].get_figure()
    else:
        if fig is None:
            fig = Figure(figsize=(max(1.3 * n, 3.9), 2.2), layout="constrained")
        axes = np.asarray(fig.subplots(1, n, squeeze=False), dtype=object)
    for j in range(n):
        vmin, vmax = _value_range(reconstruction if colorbar else reconstruction[j])
        shown = _show(axes[0, j], reconstruction[j].reshape(shape), cmap=cmap,
                      vmin=vmin, vmax=vmax)
        label = "" if recovered_labels is None else f"\nlabel {recovered_labels[j]}"
        axes[0, j].set_title(f"rec. {j}{label}", fontsize="small")
    axes[0, 0].set_ylabel("reconstructed", fontsize="small")
    if title is not None:
        fig.suptitle(title, fontsize="medium")
    if colorbar and (len(shape) == 2 or shape[2] == 1):
        fig.colorbar(shown, ax=list(axes.ravel()), shrink=0.8, label="pixel value")
    if owned:
        fig.supxlabel("rec. j: row j of the reconstruction (e.g. samples_[j])",
                      fontsize="x-small")
    return fig


_LEAKAGE_METRICS = {
    "relative_error": ("relative error ||x_hat - x|| / ||x||", True),
    "cosine": ("matched cosine", False),
    "psnr": ("PSNR (dB)", False),
}


def plot_leakage_curve(table, *, metric="relative_error", x="strength", ax=None,
                       label=None, log_strength=True):
    """Draw a leakage curve: a reconstruction metric against defence strength.

    The line is the median of ``metric`` over every seed and true sample at
    each strength, the band the interquartile range. A sample the attack did
    not recover (NaN metric) counts as the worst possible value (relative
    error ``inf``, cosine ``-1``, PSNR ``-inf``), so failures pull the median
    the right way instead of vanishing. It draws the tables of
    :func:`skrecon.evaluation.leakage_curve`,
    :func:`skrecon.evaluation.leakage_grid` (one defence and batch size at a
    time) and :func:`skrecon.opacus.leakage_curve`: they share one schema.

    Parameters
    ----------
    table : dict of str to array-like
        A leakage table (or a ``pandas.DataFrame`` with its columns
        ``strength``, ``parameter``, ``defense``, ``metric``, and
        ``epsilon`` and ``delta`` with ``x="epsilon"``).
    metric : {"relative_error", "cosine", "psnr"}, default="relative_error"
        The column on the y axis (log scale for the relative error).
    x : {"strength", "epsilon"}, default="strength"
        The column on the x axis: the defence's strength (for DP-SGD, the
        noise multiplier), or the DP guarantee ``epsilon`` of an Opacus
        table (every value finite: leave out the rows without noise, whose
        ``epsilon`` is ``inf``).
    ax : matplotlib Axes, default=None
        Axes to draw into; ``None`` makes a new
        :class:`~matplotlib.figure.Figure` (not registered with pyplot).
    label : str, default=None
        Legend label of the curve; ``None`` uses the defence's name.
    log_strength : bool, default=True
        Log scale on the x axis (needs positive values of ``x``).

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure holding ``ax``.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    ValueError
        If ``metric`` or ``x`` is unknown, ``table`` lacks a needed column,
        holds more than one defence, parameter or batch size (a
        :func:`~skrecon.evaluation.leakage_grid` table: select one), has a
        psnr column that is NaN throughout (no ``data_range``),
        its columns differ in length or are empty, a value of ``x`` is not
        finite (or not positive with ``log_strength``), or no value can be
        drawn on the log axis of the relative error.

    Examples
    --------
    >>> import numpy as np
    >>> from skrecon.plotting import plot_leakage_curve
    >>> table = {"defense": np.repeat("TopKPruning", 4),
    ...          "parameter": np.repeat("keep_fraction", 4),
    ...          "strength": np.array([0.1, 0.1, 0.9, 0.9]),
    ...          "relative_error": np.array([0.5, 0.7, 1e-3, np.nan])}
    >>> fig = plot_leakage_curve(table)
    >>> fig.axes[0].get_xlabel()
    'TopKPruning keep_fraction'
    """
    if metric not in _LEAKAGE_METRICS:
        raise ValueError(
            f"metric must be one of {sorted(_LEAKAGE_METRICS)}, got {metric!r}."
        )
    if x not in ("strength", "epsilon"):
        raise ValueError(f"x must be 'strength' or 'epsilon', got {x!r}.")
    needed = ("strength", "defense", "parameter", metric) + (
        ("epsilon", "delta") if x == "epsilon" else ())
    missing = [c for c in needed if c not in table]
    if missing:
        raise ValueError(
            f"table lacks the column(s) {missing}: pass the table returned by "
            "skrecon.evaluation.leakage_curve or skrecon.opacus.leakage_curve."
        )
    strength = np.asarray(table[x], dtype=np.float64)
    values = np.asarray(table[metric], dtype=np.float64)
    if strength.ndim != 1 or strength.size == 0 or values.shape != strength.shape:
        raise ValueError(
            f"table's columns must be 1-D and of one length, with at least one row; "
            f"got {x} {strength.shape} and {metric} {values.shape}.")
    if x == "epsilon" and np.any(np.isnan(strength)):
        raise ValueError(
            "table's epsilon column contains NaN: the defence has no privacy "
            "accountant (only skrecon.opacus.leakage_curve fills epsilon); draw "
            "against x='strength'.")
    if x == "epsilon" and np.any(np.isinf(strength)):
        raise ValueError(
            "table's epsilon column contains inf (a DP-SGD step without noise: "
            "clipping alone guarantees nothing); draw the rows with strength > 0, "
            "or against x='strength'.")
    if not np.all(np.isfinite(strength)):
        raise ValueError(f"table's {x} column contains NaN or inf.")
    if log_strength and np.any(strength <= 0):
        raise ValueError(
            f"A log {x} axis needs positive values; pass log_strength=False "
            f"to draw zero or negative values of {x}.")
    for column in ("defense", "parameter", "batch_size"):
        kinds = np.unique(np.asarray(table[column])) if column in table else ()
        if len(kinds) > 1:
            raise ValueError(
                f"table holds {len(kinds)} values of {column} "
                f"({', '.join(map(str, kinds[:4]))}{', ...' if len(kinds) > 4 else ''}): "
                "a leakage curve is one defence, one parameter and one batch size. "
                f"Select the rows of one {column} (e.g. table[...] where "
                f"table[{column!r}] == value) and draw each on the same ax.")
    if metric == "psnr" and np.all(np.isnan(values)):
        raise ValueError(
            "table's psnr column is NaN in every row: the table was made "
            "without data_range (pass data_range to leakage_curve or "
            "leakage_grid, e.g. 16.0 for digits), or draw metric='relative_error'.")
    ylabel, log_y = _LEAKAGE_METRICS[metric]
    if log_y and not np.any(np.isfinite(values) & (values > 0)):
        raise ValueError(
            f"No finite positive {metric} to draw on a log axis: every trial failed "
            "or recovered nothing (see the table's status column).")
    worst = {"relative_error": np.inf, "cosine": -1.0, "psnr": -np.inf}[metric]
    values = np.where(np.isnan(values), worst, values)
    levels = np.unique(strength)
    quartiles = np.array([np.percentile(values[strength == s], [25, 50, 75],
                                        method="nearest")
                          for s in levels])
    Figure = _import_matplotlib_figure()
    if ax is None:
        fig = Figure(figsize=(5.0, 3.5), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.get_figure()
    name = str(np.asarray(table["defense"])[0])
    parameter = str(np.asarray(table["parameter"])[0])
    line, = ax.plot(levels, quartiles[:, 1], marker="o",
                    label=name if label is None else label)
    ax.fill_between(levels, quartiles[:, 0], quartiles[:, 2], alpha=0.25,
                    color=line.get_color(), linewidth=0)
    if log_strength:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    if x == "epsilon":
        deltas = np.unique(np.asarray(table["delta"], dtype=np.float64))
        ax.set_xlabel(f"epsilon (delta = {', '.join(f'{d:g}' for d in deltas)})")
    else:
        ax.set_xlabel(f"{name} {parameter}")
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize="small")
    return fig
