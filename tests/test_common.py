"""scikit-learn's common estimator checks over every public estimator.

scikit-learn's checks call ``fit(X, y)`` without the query's weights. The
reconstructor then runs its blind estimate (the Cocktail Party Attack,
``solver_ == "cocktail_party"``) and the moment transformer computes the span
only, so the checks run the estimators for real: both pass every check.
The defences act on the whole gradient matrix, so the checks that compare a transform of a subset or a permutation
of the rows with the same rows of the whole transform do not apply to those
that are global.
"""

import re

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skrecon import GradientReconstructor, MomentTensorTransformer
from skrecon.exceptions import BlindFitWarning
from skrecon.defenses import (
    GaussianGradientNoise,
    GlobalNormClipping,
    RowNormClipping,
    TopKPruning,
    UniformQuantization,
)

# One neuron's gradient row is a mixture of any number of samples: the batch
# size cannot be read off it, and the error says so, in scikit-learn's words
# too (check_fit2d_1sample looks for "n_samples = 1").
_ONE_ROW = "X has one row (n_samples = 1: a single neuron"

# Defences act on the whole gradient matrix as the server sees it.
_GLOBAL = {
    "GaussianGradientNoise": {
        "check_methods_subset_invariance": (
            "the seeded noise is drawn for the shape of the whole X: a subset of "
            "rows gets other draws than those rows of the whole matrix"
        ),
        "check_methods_sample_order_invariance": (
            "the seeded noise is drawn for the whole X by position: permuting the "
            "rows does not permute the noise"
        ),
    },
    "GlobalNormClipping": {
        "check_methods_subset_invariance": (
            "the clipping factor min(1, max_norm / ||X||_F) is global: a subset "
            "of rows has another Frobenius norm"
        ),
    },
    "TopKPruning": {
        "check_methods_subset_invariance": (
            "the magnitude threshold keeps the top entries of the whole matrix: a "
            "subset of rows keeps another set of entries"
        ),
    },
    "UniformQuantization": {
        "check_methods_subset_invariance": (
            "the quantisation range max|X| is global: a subset of rows has "
            "another range, hence other levels"
        ),
    },
}

ESTIMATORS = [
    GradientReconstructor(random_state=0),
    MomentTensorTransformer(),
    GaussianGradientNoise(scale=0.1, random_state=0),
    RowNormClipping(),
    GlobalNormClipping(),
    TopKPruning(),
    UniformQuantization(),
]


def _expected_failed_checks(estimator):
    # the reconstructor and the moment transformer pass every check
    return _GLOBAL.get(type(estimator).__name__, {})


# xfail_strict: a check listed as failing that passes fails the suite.
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks,
                          xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "estimator", [GradientReconstructor(random_state=0), MomentTensorTransformer()],
    ids=lambda est: type(est).__name__)
def test_check_estimator_has_no_failure(estimator):
    """scikit-learn's whole check_estimator, with no expected failure."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(estimator, on_fail=None, on_skip=None,
                              expected_failed_checks={})
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert failed == []


@pytest.mark.parametrize(
    "estimator", [GradientReconstructor(random_state=0),
                  MomentTensorTransformer(n_components=1)],
    ids=lambda est: type(est).__name__)
def test_one_row_says_n_samples_and_neuron(estimator):
    X = 3 * np.random.default_rng(0).uniform(size=(1, 10))
    with pytest.raises(ValueError, match=re.escape(_ONE_ROW)):
        estimator.fit(X)


def test_one_sample_blind_fit_iterates():
    """check_transformer_n_iter's data: two tight blobs read as one sample;
    FastICA of that one whitened signal runs (n_iter_ >= 1)."""
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=30, centers=[[0, 0, 0], [1, 1, 1]],
                      random_state=0, n_features=2, cluster_std=0.1)
    with pytest.warns(BlindFitWarning):
        rec = GradientReconstructor(random_state=0).fit(X - X.min() + 0.1)
    assert rec.batch_size_ == 1 and rec.n_iter_ >= 1 and rec.converged_


def test_tags_tell_the_truth():
    for est in (GradientReconstructor(), MomentTensorTransformer()):
        tags = est.__sklearn_tags__()
        assert tags.requires_fit
        assert tags.transformer_tags is not None
        # float32 in, float32 out (fitted arrays and transforms)
        assert tags.transformer_tags.preserves_dtype == ["float64", "float32"]
        # the namespace of the inputs is kept (tests/test_array_api.py)
        assert tags.array_api_support
        assert not tags.input_tags.allow_nan
        assert not tags.input_tags.sparse
        assert tags.input_tags.two_d_array
        assert not tags.target_tags.required
    noise = GaussianGradientNoise()
    assert noise.__sklearn_tags__().transformer_tags.preserves_dtype == [
        "float64", "float32"]
    assert noise.fit_transform(np.ones((3, 2), np.float32)).dtype == np.float32
