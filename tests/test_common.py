"""scikit-learn's common estimator checks over every public estimator.

scikit-learn's checks call ``fit(X, y)`` without the query's weights. The
reconstructor then runs its blind estimate (the Cocktail Party Attack,
``solver_ == "cocktail_party"``) and the moment transformer computes the span
only, so the checks run the estimators for real. The failures left have
their own reasons, listed below. The defences act on the whole gradient
matrix, so the checks that compare a transform of a subset or a permutation
of the rows with the same rows of the whole transform do not apply to those
that are global.
"""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skrecon import GradientReconstructor, MomentTensorTransformer
from skrecon.defenses import (
    GaussianGradientNoise,
    GlobalNormClipping,
    RowNormClipping,
    TopKPruning,
    UniformQuantization,
)

# One neuron's gradient row is a mixture of any number of samples: the batch
# size cannot be read off it, and the error says so in neurons, not in the
# "n_samples = 1" words that the check looks for.
_ONE_NEURON = (
    "one row is one neuron, whose gradient cannot show the batch size: the "
    "ValueError says so in neurons, not with the check's 'n_samples = 1'")
# The first words of that ValueError, per estimator.
_ONE_NEURON_MESSAGES = {
    "GradientReconstructor": "The gradient has as many independent rows as neurons (1",
    "MomentTensorTransformer": "n_components (batch_size)=1 cannot be identified",
}

_RECONSTRUCTOR_FAILS = {
    "check_fit2d_1sample": _ONE_NEURON,
    "check_transformer_n_iter": (
        "the check's gradient has rank one: one sample, which the blind "
        "estimate reads off the top singular vector without iterating "
        "(n_iter_ == 0)"),
}
_MOMENTS_FAILS = {
    # the check sets n_components=1
    "check_fit2d_1sample": _ONE_NEURON,
}

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
    if isinstance(estimator, GradientReconstructor):
        return _RECONSTRUCTOR_FAILS
    if isinstance(estimator, MomentTensorTransformer):
        return _MOMENTS_FAILS
    return _GLOBAL.get(type(estimator).__name__, {})


# xfail_strict: a check listed as failing that passes fails the suite.
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks,
                          xfail_strict=True)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "estimator", [GradientReconstructor(random_state=0), MomentTensorTransformer()],
    ids=lambda est: type(est).__name__)
def test_expected_failures_have_their_stated_reason(estimator):
    """Each expected failure fails, and for the stated reason."""
    from sklearn.utils.estimator_checks import check_estimator

    expected = _expected_failed_checks(estimator)
    results = check_estimator(estimator, on_fail=None, on_skip=None,
                              expected_failed_checks={})
    failed = {r["check_name"]: r["exception"]
              for r in results if r["status"] == "failed"}
    assert set(failed) == set(expected)
    message = str(failed["check_fit2d_1sample"])
    assert _ONE_NEURON_MESSAGES[type(estimator).__name__] in message
    if "check_transformer_n_iter" in failed:
        from sklearn.datasets import make_blobs

        # the check's data: two tight blobs, a rank-one gradient in effect
        X, _ = make_blobs(n_samples=30, centers=[[0, 0, 0], [1, 1, 1]],
                          random_state=0, n_features=2, cluster_std=0.1)
        rec = GradientReconstructor(random_state=0).fit(X - X.min() + 0.1)
        assert (rec.batch_size_, rec.n_iter_) == (1, 0)


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
