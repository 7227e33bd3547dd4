"""leakage_grid: defence x strength x seed x batch size, on any joblib backend."""

import re

import joblib
import numpy as np
import pytest

from skrecon.datasets import load_digits_batch
from skrecon.defenses import GaussianGradientNoise, GlobalNormClipping, TopKPruning
from skrecon.evaluation import leakage_curve, leakage_grid

QUERY = {"n_neurons": 2000}
SEEDS = [0, 1]
SIZES = [2, 3]


def _defenses():
    return [(GaussianGradientNoise(relative=True), "scale", [1e-4]),
            (GlobalNormClipping(), "max_norm", [1e-3])]


@pytest.fixture(scope="module")
def data():
    return load_digits_batch(12, random_state=0)[0]


@pytest.fixture(scope="module")
def local_table(data):
    return leakage_grid(data, SIZES, _defenses(), seeds=SEEDS, query_params=QUERY,
                        data_range=1.0)


def _assert_same_numbers(a, b):
    """The same table to round-off: the grid's columns and the discrete
    outcomes exactly, the errors to 1e-12 (BLAS thread counts, which the
    backends set per worker, change the last bits of every product), PSNR
    where it is not itself round-off; the wall time differs."""
    assert list(a) == list(b)
    for key in ("defense", "parameter", "strength", "seed", "batch_size", "sample",
                "batch_size_found", "converged", "status"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for key in ("relative_error", "cosine", "gradient_residual"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-12, err_msg=key)
    resolved = a["relative_error"] > 1e-8
    np.testing.assert_allclose(a["psnr"][resolved], b["psnr"][resolved], rtol=1e-6)


def test_grid_layout_and_batches(data, local_table):
    n_rows = 2 * 2 * (2 + 3)  # defences x seeds x (samples of B = 2 and B = 3)
    assert all(v.shape == (n_rows,) for v in local_table.values())
    assert local_table["defense"].tolist() == (["GaussianGradientNoise"] * 10
                                               + ["GlobalNormClipping"] * 10)
    assert local_table["seed"].tolist() == [0] * 5 + [1] * 5 + [0] * 5 + [1] * 5
    assert local_table["batch_size"].tolist() == ([2, 2, 3, 3, 3] * 4)
    assert local_table["sample"].tolist() == ([0, 1, 0, 1, 2] * 4)
    # each trial is leakage_curve's on the batch its seed draws
    batch = data[np.random.default_rng(1).choice(len(data), 3, replace=False)]
    curve = leakage_curve(batch, GaussianGradientNoise(relative=True), "scale", [1e-4],
                          seeds=[1], query_params=QUERY, data_range=1.0)
    rows = slice(7, 10)  # the noise defence, seed 1, B = 3
    for key in ("relative_error", "cosine", "psnr", "gradient_residual"):
        np.testing.assert_array_equal(local_table[key][rows], curve[key], err_msg=key)
    # a gradient with 1e-4 relative noise gives every sample back to 1e-2
    noise = local_table["defense"] == "GaussianGradientNoise"
    assert np.all(local_table["relative_error"][noise] < 1e-2)


def test_grid_is_the_same_on_threads(data, local_table):
    with joblib.parallel_config(backend="threading", n_jobs=2):
        threaded = leakage_grid(data, SIZES, _defenses(), seeds=SEEDS,
                                query_params=QUERY, data_range=1.0)
    _assert_same_numbers(threaded, local_table)


def test_grid_is_the_same_on_a_dask_cluster(data, local_table):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client, \
            distributed.get_task_stream(client) as stream, \
            joblib.parallel_config(backend="dask"):
        on_dask = leakage_grid(data, SIZES, _defenses(), seeds=SEEDS,
                               query_params=QUERY, data_range=1.0, n_jobs=-1)
    assert len(stream.data) > 0  # the trials ran on the cluster
    _assert_same_numbers(on_dask, local_table)


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_sizes=[2, 13]), "batch_sizes must be a non-empty sequence of integers "
                                "in [1, 12] (the samples in data), got [2, 13]."),
    (dict(batch_sizes=[]), "batch_sizes must be a non-empty sequence of integers "
                           "in [1, 12] (the samples in data), got []."),
    (dict(defenses=[(TopKPruning(), "keep_fraction")]),
     "defenses must be a non-empty sequence of (defense, parameter, strengths) triples"),
    (dict(defenses=[(TopKPruning(), "scale", [0.5])]),
     "TopKPruning has no parameter 'scale'"),
    (dict(seeds=[0, -1]), "seeds must be a non-empty sequence of non-negative "
                          "integers, got [0, -1]."),
    (dict(query_params={"random_state": 3}), "query_params must not set ['random_state']"),
])
def test_grid_errors(data, kwargs, message):
    args = dict(batch_sizes=[2], defenses=_defenses(), seeds=[0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        leakage_grid(data, args.pop("batch_sizes"), args.pop("defenses"), **args)
