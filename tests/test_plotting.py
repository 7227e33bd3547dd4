"""Tests for skrecon.plotting (figures of reconstructions)."""

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from skrecon.metrics import match_samples  # noqa: E402
from skrecon.plotting import plot_leakage_curve, plot_reconstruction  # noqa: E402


@pytest.fixture
def batch():
    return np.random.default_rng(0).uniform(0.0, 1.0, size=(4, 64))


def _shown(axis):
    return np.asarray(axis.images[0].get_array())


@pytest.mark.parametrize("n", [1, 4])
def test_figure_has_two_rows_of_axes(n):
    batch = np.random.default_rng(n).uniform(size=(n, 64))
    fig = plot_reconstruction(batch, batch)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * n
    for axis in fig.axes:
        assert len(axis.images) == 1


def test_default_matching_puts_each_reconstruction_under_its_original(batch):
    order = np.array([2, 0, 3, 1])
    reconstruction = batch[order] * 1.001
    fig = plot_reconstruction(batch, reconstruction)
    top, bottom = fig.axes[:4], fig.axes[4:]
    np.testing.assert_array_equal(
        match_samples(batch, reconstruction), np.argsort(order)
    )
    for i in range(4):
        np.testing.assert_allclose(_shown(top[i]), batch[i].reshape(8, 8))
        np.testing.assert_allclose(_shown(bottom[i]), 1.001 * batch[i].reshape(8, 8))
        assert "rel. err 0.001" in bottom[i].get_title()


def test_explicit_permutation_is_used(batch):
    permutation = np.array([3, 2, 1, 0])
    # deliberately not the cosine matching: the figure must follow the argument
    fig = plot_reconstruction(batch, batch, permutation=permutation)
    bottom = fig.axes[4:]
    for i, j in enumerate(permutation):
        np.testing.assert_allclose(_shown(bottom[i]), batch[j].reshape(8, 8))
        assert bottom[i].get_title().startswith(f"rec. {j}")


def test_unmatched_sample_is_marked(batch):
    fig = plot_reconstruction(batch, batch[:3], permutation=[0, 1, 2, -1])
    assert len(fig.axes) == 8
    assert "not" in fig.axes[7].get_title()
    assert not fig.axes[7].images


def test_labels_in_titles(batch):
    fig = plot_reconstruction(
        batch, batch[::-1], labels=[5, 6, 7, 8], recovered_labels=[18, 17, 16, 15]
    )
    assert "label 5" in fig.axes[0].get_title()
    # true sample 0 is reconstructed row 3, whose recovered label is 15
    assert "rec. 3, label 15" in fig.axes[4].get_title()


def test_draws_into_given_axes_and_figure(batch):
    fig = Figure()
    ax = fig.subplots(2, 4)
    assert plot_reconstruction(batch, batch, ax=ax) is fig
    assert len(fig.axes) == 8
    other = Figure()
    assert plot_reconstruction(batch, batch, fig=other) is other
    assert len(other.axes) == 8


def test_colour_images(batch):
    images = np.random.default_rng(1).uniform(size=(2, 48))
    fig = plot_reconstruction(images, images, image_shape=(4, 4, 3))
    assert _shown(fig.axes[2]).shape == (4, 4, 3)


def test_savefig_writes_png(batch, tmp_path):
    path = tmp_path / "rec.png"
    plot_reconstruction(batch, batch).savefig(path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_shape": (7, 8)}, "image_shape"),
        ({"permutation": [0, 1]}, "permutation"),
        ({"permutation": [0, 0, 1, 2]}, "twice"),
        ({"permutation": [0, 1, 2, 4]}, "permutation"),
        ({"labels": [1, 2]}, "labels"),
        ({"ax": np.empty((2, 3), dtype=object)}, r"shape \(2, 4\)"),
    ],
)
def test_invalid_arguments(batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_reconstruction(batch, batch, **kwargs)


def test_ax_and_fig_are_exclusive(batch):
    fig = Figure()
    with pytest.raises(ValueError, match="at most one"):
        plot_reconstruction(batch, batch, ax=fig.subplots(2, 4), fig=Figure())


def test_feature_mismatch(batch):
    with pytest.raises(ValueError, match="features"):
        plot_reconstruction(batch, batch[:, :32])


def test_missing_matplotlib_gives_install_hint(batch, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "skrecon\[plot\]"'):
        plot_reconstruction(batch, batch)


def test_leakage_curve_refuses_a_grid_of_several_defences():
    table = {"defense": np.array(["GaussianGradientNoise", "GlobalNormClipping"]),
             "parameter": np.array(["scale", "max_norm"]),
             "strength": np.array([1e-3, 1.0]), "relative_error": np.array([0.1, 0.2])}
    with pytest.raises(ValueError, match=r"^table holds 2 values of defense \(Gaussian"
                                         r"GradientNoise, GlobalNormClipping\): a leakage "
                                         r"curve is one defence"):
        plot_leakage_curve(table)
    table["defense"] = np.repeat("GaussianGradientNoise", 2)
    table["parameter"] = np.repeat("scale", 2)
    table["psnr"] = np.full(2, np.nan)
    with pytest.raises(ValueError, match=r"^table's psnr column is NaN in every row"):
        plot_leakage_curve(table, metric="psnr")
