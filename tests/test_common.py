"""scikit-learn's common estimator checks over every public estimator.

The reconstructor and the moment transformer need the query's first-layer
weights as ``fit`` metadata (DESIGN §3); scikit-learn's checks call
``fit(X, y)`` without them, so every check that fits one of them fails with
the ``ValueError`` that names ``weights`` and says to enable metadata routing
(``tests/test_sklearn_integration.py`` asserts that message). The checks that
do not fit (parameters, cloning, tags, unfitted errors, input validation that
happens before the weights are looked at) pass. The defences act on the whole
gradient matrix, so the checks that compare a transform of a subset or a
permutation of the rows with the same rows of the whole transform do not apply
to those that are global.
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

# The ValueError every fit without weights raises (skrecon/_validation.py).
_NO_WEIGHTS = (
    "fit(X, y) without the required `weights` metadata raises a ValueError "
    "naming `weights` and telling to enable metadata routing"
)

# Checks that fit the estimator, by what else they would test.
_FITTING_CHECKS = {
    "check_fit_score_takes_y": "fits and scores with y but no `weights`",
    "check_estimators_overwrite_params": "fits to compare params, without `weights`",
    "check_dont_overwrite_parameters": "fits to compare __dict__, without `weights`",
    "check_estimators_fit_returns_self": "fits without `weights`",
    "check_readonly_memmap_input": "fits read-only memmaps without `weights`",
    "check_n_features_in_after_fitting": "fits without `weights`",
    "check_positive_only_tag_during_fit": "fits negative X without `weights`",
    "check_estimators_dtypes": "fits float32/int X without `weights`",
    "check_dtype_object": "fits object-dtype X without `weights`",
    "check_pipeline_consistency": "fits a Pipeline without `weights`",
    "check_estimators_nan_inf": (
        "fits finite X without `weights` before testing transform on NaN/inf "
        "(NaN/inf in fit's X is rejected first, naming X)"
    ),
    "check_estimators_pickle": "pickles an estimator fitted without `weights`",
    "check_f_contiguous_array_estimator": "fits F-ordered X without `weights`",
    "check_transformer_data_not_an_array": "fits list/array-like X without `weights`",
    "check_transformer_general": "fits and fit_transforms without `weights`",
    "check_transformer_preserve_dtypes": "fits float32/float64 X without `weights`",
    "check_methods_sample_order_invariance": "fits without `weights`",
    "check_methods_subset_invariance": "fits without `weights`",
    "check_fit2d_1sample": (
        "fits one row without `weights`: the error names `weights`, not the "
        "one-sample message the check looks for"
    ),
    "check_fit2d_1feature": (
        "fits one column without `weights`: the error names `weights`, not the "
        "one-feature message the check looks for"
    ),
    "check_dict_unchanged": "fits without `weights`",
    "check_fit_idempotent": "fits twice without `weights`",
    "check_fit_check_is_fitted": "fits without `weights`",
    "check_n_features_in": "fits without `weights`",
    "check_fit2d_predict1d": "fits without `weights` before passing 1-D X",
    # skipped unless SCIPY_ARRAY_API=1 is set before scipy is imported
    "check_array_api_input": (
        "fits NumPy arrays under array-API dispatch without `weights`"),
    "check_array_api_same_namespace": (
        "fits array-API arrays under dispatch without `weights`"),
    "check_array_api_mixed_inputs": (
        "fits mixed-namespace arrays under dispatch without `weights`"),
}
# skrecon's own array-API tests pass the weights: tests/test_array_api.py
_ARRAY_API_CHECKS = {"check_array_api_input", "check_array_api_same_namespace",
                     "check_array_api_mixed_inputs"}


def _needs_weights(checks):
    return {name: f"{what}: {_NO_WEIGHTS}" for name, what in checks.items()}


_RECONSTRUCTOR_FAILS = _needs_weights(
    {**_FITTING_CHECKS,
     "check_transformer_n_iter": "fits to read n_iter_, without `weights`"})
_MOMENTS_FAILS = _needs_weights(_FITTING_CHECKS)

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
    "estimator", [GradientReconstructor(), MomentTensorTransformer()],
    ids=lambda est: type(est).__name__)
def test_expected_failures_are_the_missing_weights(estimator):
    """Each expected failure of the two estimators is the weights ValueError."""
    from sklearn.utils.estimator_checks import check_estimator

    expected = _expected_failed_checks(estimator)
    results = check_estimator(estimator, on_fail=None, on_skip=None,
                              expected_failed_checks={})
    failed = {r["check_name"]: r["exception"]
              for r in results if r["status"] == "failed"}
    # array-API checks are skipped without SCIPY_ARRAY_API=1
    assert set(failed) <= set(expected)
    assert set(expected) - set(failed) <= _ARRAY_API_CHECKS
    for name, exc in failed.items():
        chain, seen = [], exc
        while seen is not None:
            chain.append(str(seen))
            seen = seen.__cause__ or seen.__context__
        expected_msg = (f"{type(estimator).__name__}.fit needs the query's "
                        "first-layer weights")
        assert any(expected_msg in msg and "enable_metadata_routing=True" in msg
                   for msg in chain), (name, chain)


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
