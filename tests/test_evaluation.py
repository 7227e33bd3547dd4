"""Leakage curves: the tidy table and its figure."""

import re

import numpy as np
import pytest

from skrecon import GradientReconstructor
from skrecon.datasets import load_digits_batch
from skrecon.defenses import GaussianGradientNoise, TopKPruning
from skrecon.evaluation import leakage_curve

# the one schema of the leakage tables (skrecon.opacus.leakage_curve's too)
COLUMNS = ["defense", "parameter", "strength", "epsilon", "delta", "seed", "batch_size",
           "sample", "cosine", "relative_error", "psnr", "label_correct", "found",
           "gradient_residual", "batch_size_found", "converged", "fit_time", "status"]


@pytest.fixture(scope="module")
def batch3():
    return load_digits_batch(3, random_state=0)[0]


@pytest.fixture(scope="module")
def noise_table(batch3):
    return leakage_curve(batch3, GaussianGradientNoise(relative=True), "scale",
                         [1e-8, 1e-4, 1e-2], seeds=[0, 1], data_range=1.0,
                         query_params={"n_neurons": 2000}, n_jobs=2)


def test_table_is_tidy(noise_table):
    assert list(noise_table) == COLUMNS
    assert all(v.shape == (3 * 2 * 3,) for v in noise_table.values())
    np.testing.assert_array_equal(noise_table["strength"], np.repeat([1e-8, 1e-4, 1e-2], 6))
    np.testing.assert_array_equal(noise_table["seed"], np.tile(np.repeat([0, 1], 3), 3))
    np.testing.assert_array_equal(noise_table["sample"], np.tile([0, 1, 2], 6))
    np.testing.assert_array_equal(noise_table["batch_size"], np.full(18, 3))
    assert set(noise_table["defense"]) == {"GaussianGradientNoise"}
    assert set(noise_table["status"]) == {"ok"}
    assert np.all(noise_table["batch_size_found"] == 3)
    assert noise_table["found"].dtype == bool
    # a found row is exact to the noise; 1e-8 noise: every sample found
    assert np.all(noise_table["found"][:6])
    # no accountant for a gradient defence, no labels with the squared loss
    for key in ("epsilon", "delta", "label_correct"):
        assert noise_table[key].dtype == float and np.all(np.isnan(noise_table[key]))
    assert noise_table["converged"].dtype == bool and np.all(noise_table["fit_time"] > 0)


def test_error_grows_with_the_noise(noise_table):
    """Median relative error per strength is monotone and tracks the noise."""
    medians = [np.median(noise_table["relative_error"][noise_table["strength"] == s])
               for s in (1e-8, 1e-4, 1e-2)]
    assert medians == sorted(medians)
    assert medians[0] < 1e-7 and medians[1] < 1e-3
    psnr = noise_table["psnr"]
    assert np.all(np.isfinite(psnr)) and np.median(psnr[:6]) > np.median(psnr[-6:])
    assert np.all(np.abs(noise_table["cosine"]) <= 1 + 1e-12)


def test_same_seeds_same_table(batch3, noise_table):
    again = leakage_curve(batch3, GaussianGradientNoise(relative=True), "scale", [1e-4],
                          seeds=[1], data_range=1.0, query_params={"n_neurons": 2000})
    rows = (noise_table["strength"] == 1e-4) & (noise_table["seed"] == 1)
    # loky workers and this process may take other BLAS paths; at the noise
    # floor the joint polish stops in a flat valley, where that round-off
    # moves the error (~4e-5, itself a statistical quantity) by ~5e-7 of
    # itself (measured)
    np.testing.assert_allclose(again["relative_error"], noise_table["relative_error"][rows],
                               rtol=1e-5)


def test_a_failed_attack_is_a_row_not_an_exception(batch3):
    table = leakage_curve(batch3, TopKPruning(), "keep_fraction", [0.5], seeds=[0],
                          reconstructor=GradientReconstructor(bias=True, batch_size=5000),
                          query_params={"n_neurons": 500})
    assert table["status"][0].startswith(
        "ValueError: n_components (batch_size)=5000 cannot be identified")
    assert np.all(np.isnan(table["relative_error"]))
    assert np.all(table["batch_size_found"] == -1)


def test_bad_arguments(batch3):
    with pytest.raises(ValueError, match=re.escape(
            "TopKPruning has no parameter 'scale'; its parameters are ['keep_fraction'].")):
        leakage_curve(batch3, TopKPruning(), "scale", [0.1])
    with pytest.raises(ValueError, match="strengths and seeds must each hold at least one"):
        leakage_curve(batch3, TopKPruning(), "keep_fraction", [])
    with pytest.raises(ValueError, match=re.escape("seeds must be non-negative integers, got [0.5].")):
        leakage_curve(batch3, TopKPruning(), "keep_fraction", [0.1], seeds=[0.5])
    with pytest.raises(ValueError, match=re.escape("batch must be a 2-D array")):
        leakage_curve(batch3[0], TopKPruning(), "keep_fraction", [0.1])


def test_plot_leakage_curve(noise_table):
    pytest.importorskip("matplotlib")
    from skrecon.plotting import plot_leakage_curve

    fig = plot_leakage_curve(noise_table)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "GaussianGradientNoise scale"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    x, y = ax.lines[0].get_data()
    np.testing.assert_allclose(x, [1e-8, 1e-4, 1e-2])
    assert np.all(np.diff(y) >= 0)
    fig = plot_leakage_curve(noise_table, metric="psnr")
    assert fig.axes[0].get_ylabel() == "PSNR (dB)"
    with pytest.raises(ValueError, match="metric must be one of"):
        plot_leakage_curve(noise_table, metric="ssim")
    with pytest.raises(ValueError, match=re.escape("table lacks the column(s) ['strength']")):
        plot_leakage_curve({k: v for k, v in noise_table.items() if k != "strength"})


def test_grid_mistakes_raise_before_any_trial(batch3):
    from skrecon.defenses import GaussianGradientNoise as Noise
    with pytest.raises(ValueError, match="The 'scale' parameter of GaussianGradientNoise"):
        leakage_curve(batch3, Noise(), "scale", [1e-3, -0.1])
    with pytest.raises(ValueError, match="defense must be an estimator instance"):
        leakage_curve(batch3, Noise, "scale", [0.1])
    with pytest.raises(ValueError, match="strengths and seeds must be sequences of numbers"):
        leakage_curve(batch3, Noise(), "scale", ["big"])
    with pytest.raises(ValueError, match=re.escape("query_params must not set ['random_state']")):
        leakage_curve(batch3, Noise(), "scale", [0.1], query_params={"random_state": 1})
    # a misspelt key failed inside a trial with a TypeError
    with pytest.raises(ValueError, match=re.escape(
            "query_params has unknown key(s) ['n_neuron']: they are passed to "
            "skrecon.clients.make_gradient_query, which takes")):
        leakage_curve(batch3, Noise(), "scale", [0.1], query_params={"n_neuron": 300})


def test_default_attack_matches_the_query_activation(batch3):
    table = leakage_curve(batch3[:2], GaussianGradientNoise(relative=True), "scale", [1e-8],
                          seeds=[0], query_params={"n_neurons": 3000, "activation": "relu"})
    assert table["status"][0] == "ok" and table["converged"].dtype == bool
    assert np.max(table["relative_error"]) < 1e-6


def test_plot_leakage_curve_refuses_what_it_cannot_draw(noise_table):
    pytest.importorskip("matplotlib")
    from skrecon.plotting import plot_leakage_curve

    failed = dict(noise_table, relative_error=np.full(18, np.nan))
    with pytest.raises(ValueError, match="No finite positive relative_error to draw"):
        plot_leakage_curve(failed)
    zero = dict(noise_table, strength=np.zeros(18))
    with pytest.raises(ValueError, match="pass log_strength=False"):
        plot_leakage_curve(zero)
    assert plot_leakage_curve(zero, log_strength=False).axes[0].get_xscale() == "linear"
    with pytest.raises(ValueError, match="strength column contains NaN"):
        plot_leakage_curve(dict(noise_table, strength=np.full(18, np.nan)))


def test_labels_are_scored_under_the_cross_entropy_loss(batch3):
    table = leakage_curve(batch3, GaussianGradientNoise(relative=True), "scale", [1e-10],
                          seeds=[0], query_params={"n_neurons": 2000, "n_outputs": 10,
                                                   "loss": "cross_entropy"})
    assert list(table["status"]) == ["ok"] * 3
    assert np.max(table["relative_error"]) < 1e-6
    assert table["label_correct"].tolist() == [1.0, 1.0, 1.0]


def test_label_correct_follows_the_matching(batch3):
    from types import SimpleNamespace

    from skrecon._harness import empty_row, score

    # the attack returns the samples in another order, one label wrong and
    # one sample missing
    fitted = SimpleNamespace(samples_=batch3[[2, 0]], labels_=np.array([5, 1]),
                             sign_identified_=np.ones(2, bool), gradient_residual_=0.0,
                             batch_size_=2, converged_=True,
                             found_=np.array([True, False]))
    row = score(empty_row(3), batch3, fitted, labels=np.array([1, 4, 5]))
    np.testing.assert_array_equal(row["label_correct"], [1.0, np.nan, 1.0])
    row = score(empty_row(3), batch3, fitted, labels=np.array([2, 4, 5]))
    np.testing.assert_array_equal(row["label_correct"], [0.0, np.nan, 1.0])
    assert row["relative_error"][1] != row["relative_error"][1]  # NaN: unmatched
    assert row["batch_size_found"] == 2 and row["converged"] is True
    # found_ of the matched reconstruction: sample 2 is row 0, sample 0 row 1
    np.testing.assert_array_equal(row["found"], [False, False, True])


def test_a_pipeline_of_defences_is_seeded(batch3):
    # only the top-level random_state was seeded: a pipeline's noise differed
    # between two identical calls (a tester: 4.4e-4 and 3.2e-4 on sample 0)
    from sklearn.pipeline import make_pipeline
    defense = make_pipeline(GaussianGradientNoise(relative=True),
                            TopKPruning(keep_fraction=1.0))
    a, b = (leakage_curve(batch3, defense, "gaussiangradientnoise__scale", [1e-3],
                          seeds=[0], query_params={"n_neurons": 2000})["relative_error"]
            for _ in range(2))
    assert np.all(np.isfinite(a)) and np.array_equal(a, b)


def test_an_integer_strength_is_swept(batch3):
    # every strength was cast to float: UniformQuantization(n_bits=4.0) is
    # refused by its integer constraint
    from skrecon.defenses import UniformQuantization
    table = leakage_curve(batch3, UniformQuantization(), "n_bits", [4, 16], seeds=[0],
                          query_params={"n_neurons": 2000})
    np.testing.assert_array_equal(table["strength"], [4, 4, 4, 16, 16, 16])
    assert not any(str(s).startswith("InvalidParameterError") for s in table["status"])
    assert np.all(table["relative_error"][3:] < table["relative_error"][:3])
