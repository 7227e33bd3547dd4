"""skrecon inside scikit-learn's machinery (issue 3).

Metadata routing through GridSearchCV, cross_val_score and Pipeline; the
error without routing; random restarts under joblib (n_jobs, loky,
threading, Dask); RandomState instances and clone; array-API dispatch with
NumPy input; persistence; parameter handling.
"""

import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn
from numpy.testing import assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import GridSearchCV, KFold, ShuffleSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skrecon import GradientReconstructor, MomentTensorTransformer
from skrecon.blind import BlindFitWarning
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.defenses import GaussianGradientNoise
from skrecon.metrics import relative_error

ROUTING_PHRASE = "enable_metadata_routing=True"
ORDER4_ERROR = (
    "order=4 is not identifiable for activation 'tanh': mu_4 = E[sigma^(4)(t)] "
    "vanishes identically for a pre-activation of mean 0.0, so the order-4 "
    "moment tensor is zero. Use order=3 (or 'auto')."
)
REPO = Path(__file__).resolve().parents[1]


def _relative(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def digits8():
    """B = 8 digits, tanh, Gaussian bias, 20 000 neurons (the issue's problem)."""
    batch = load_digits_batch(8, random_state=0)[0]
    q = make_gradient_query(batch, n_neurons=20000, random_state=0)
    return batch, q.grad, q.weights, q.output_weights


@pytest.fixture(scope="module")
def digits4():
    """A smaller problem for the tests that fit many times: B = 4, 8 000 neurons."""
    batch = load_digits_batch(4, random_state=0)[0]
    q = make_gradient_query(batch, n_neurons=8000, random_state=0)
    return batch, q.grad, q.weights, q.output_weights


# n_init=2 starts per round for 4 samples: at least two rounds of parallel
# searches, each against the basis deflated by the rounds before; the
# samples found must not depend on how joblib runs a round.
RESTARTS = dict(activation="tanh", bias=True, n_init=2, random_state=3,
                moments=MomentTensorTransformer())


@pytest.fixture(scope="module")
def reference(digits4):
    """The sequential fit every parallel configuration must reproduce."""
    batch, grad, W, A = digits4
    return GradientReconstructor(**RESTARTS, n_jobs=1).fit(
        grad, weights=W, output_weights=A)


# --------------------------------------------------------------------------
# metadata routing
# --------------------------------------------------------------------------

def test_weights_are_requested_by_default():
    both = {"weights": True, "output_weights": True}
    # (and a parameter update's known round-off, which fit takes too)
    fit = {**both, "noise_std": True}
    routing = GradientReconstructor().get_metadata_routing()
    assert routing.fit.requests == fit
    assert routing.score.requests == {**both, "sample_weight": True}
    assert MomentTensorTransformer().get_metadata_routing().fit.requests == fit
    # a defence requests nothing
    assert GaussianGradientNoise().get_metadata_routing().fit.requests == {}


def test_grid_search_routes_weights_and_records_order4_failure(digits8):
    batch, grad, W, A = digits8
    search = GridSearchCV(
        GradientReconstructor(activation="tanh", bias=True,
                              moments=MomentTensorTransformer(), random_state=0),
        {"n_init": [1, 8], "moments__order": [3, 4]},
        cv=KFold(3, shuffle=True, random_state=0),
        error_score=np.nan,
    )
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.warns(FitFailedWarning) as record:
            search.fit(grad, weights=W, output_weights=A)
    fit_failed = [str(w.message) for w in record if w.category is FitFailedWarning]
    assert len(fit_failed) == 1
    assert "6 fits failed out of a total of 12" in fit_failed[0]
    assert f"ValueError: {ORDER4_ERROR}" in fit_failed[0]

    res = search.cv_results_
    orders = np.array([p["moments__order"] for p in res["params"]])
    splits = np.column_stack([res[f"split{k}_test_score"] for k in range(3)])
    # order 4 is recorded as error_score, order 3 scores held-out neurons
    assert np.isnan(splits[orders == 4]).all()
    assert np.isfinite(splits[orders == 3]).all()
    assert (splits[orders == 3] > 0.999).all()  # a single restart may stop short
    assert search.best_params_["moments__order"] == 3
    assert search.best_score_ > 1 - 1e-9

    best = search.best_estimator_
    assert best.order_ == 3 and best.batch_size_ == 8
    assert best.n_features_in_ == grad.shape[1]
    err, perm = relative_error(batch, best.samples_)
    assert (perm >= 0).all()
    assert err.max() <= 1e-6


def test_order4_error_for_tanh_with_zero_mean_gaussian_bias(digits4):
    batch, grad, W, A = digits4
    rec = GradientReconstructor(activation="tanh", bias=True,
                                moments=MomentTensorTransformer(order=4))
    with pytest.raises(ValueError, match=re.escape(ORDER4_ERROR)):
        rec.fit(grad, weights=W, output_weights=A)


def test_cross_val_score_routes_weights(digits4):
    batch, grad, W, A = digits4
    with sklearn.config_context(enable_metadata_routing=True):
        scores = cross_val_score(
            GradientReconstructor(activation="tanh", bias=True, n_init=2,
                                  random_state=0),
            grad, params={"weights": W, "output_weights": A},
            cv=KFold(3, shuffle=True, random_state=0), error_score="raise")
    assert scores.shape == (3,)
    assert np.isfinite(scores).all()
    assert (scores > 1 - 1e-9).all() and (scores <= 1).all()


def _search(error_score, grid=None):
    return GridSearchCV(
        GradientReconstructor(activation="tanh", bias=True,
                              moments=MomentTensorTransformer(), random_state=0),
        grid or {"n_init": [1, 8], "moments__order": [3, 4]},
        cv=KFold(3, shuffle=True, random_state=0), error_score=error_score)


def test_without_routing_the_search_fit_raises_the_routing_hint(digits4):
    """Routing off: scikit-learn passes weights to fit (legacy) but not to
    score; with error_score="raise" the search's fit raises the ValueError
    of score, which tells how to enable routing."""
    batch, grad, W, A = digits4
    assert not sklearn.get_config()["enable_metadata_routing"]
    with pytest.raises(ValueError, match=re.escape(ROUTING_PHRASE)) as excinfo:
        _search("raise").fit(grad, weights=W, output_weights=A)
    assert excinfo.type is ValueError  # not a TypeError about an argument
    assert str(excinfo.value).startswith(
        "GradientReconstructor.score needs the held-out neurons' weights: "
        "call score(X, weights=W). Inside a Pipeline, GridSearchCV or "
        "cross_val_score, enable metadata routing with "
        "sklearn.set_config(enable_metadata_routing=True)")


def test_without_routing_scores_are_nan_with_the_hint(digits4):
    """The default error_score=nan: every score is NaN and each warning says
    how to enable routing."""
    batch, grad, W, A = digits4
    search = _search(np.nan, {"n_init": [1]})
    search.set_params(cv=ShuffleSplit(1, test_size=1 / 3, random_state=0), refit=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        search.fit(grad, weights=W, output_weights=A)
    scoring = [str(w.message) for w in record
               if str(w.message).startswith("Scoring failed")]
    assert len(scoring) == 1
    assert all(ROUTING_PHRASE in msg for msg in scoring)
    assert np.isnan(search.cv_results_["mean_test_score"]).all()


def test_fit_without_weights_warns_naming_them_and_routing(digits4):
    """Without weights the reconstructor runs its blind estimate and the
    moment step its span; both warn, the reconstructor with the routing hint
    (a search without routing would otherwise run blind unnoticed)."""
    batch, grad, W, A = digits4
    with pytest.warns(BlindFitWarning, match=re.escape(ROUTING_PHRASE)):
        rec = GradientReconstructor(bias=True, random_state=0).fit(grad)
    assert rec.solver_ == "cocktail_party"
    with pytest.warns(BlindFitWarning, match="needs the first-layer weights"):
        mt = MomentTensorTransformer(bias=True).fit(grad)
    assert mt.n_components_ == 4 and not hasattr(mt, "moment_tensor_")


# --------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------

def test_pipeline_routes_weights_to_the_reconstructor_only(digits4):
    batch, grad, W, A = digits4
    pipe = make_pipeline(GaussianGradientNoise(scale=0.0),
                         GradientReconstructor(bias=True, random_state=0))
    params = {"weights": W, "output_weights": A}
    with sklearn.config_context(enable_metadata_routing=True):
        routed = pipe.get_metadata_routing().route_params(caller="fit", params=params)
        assert all(not p for p in routed["gaussiangradientnoise"].values())
        assert set(routed["gradientreconstructor"]["fit"]) == set(params)
        # GaussianGradientNoise.fit takes no weights: routing them would raise
        pipe.fit(grad, **params)
    err, perm = relative_error(batch, pipe[-1].samples_)
    assert (perm >= 0).all() and err.max() <= 1e-6
    assert pipe[0].n_features_in_ == grad.shape[1]
    assert pipe[-1].score(pipe[:-1].transform(grad), **params) > 1 - 1e-9
    # scikit-learn 1.9: Pipeline.score under routing hands sample_weight=None
    # to process_routing, which rejected it while our score had no
    # sample_weight (a TypeError, and NaN scores in every search over a defence)
    with sklearn.config_context(enable_metadata_routing=True):
        assert pipe.score(grad, **params) > 1 - 1e-9


def test_a_search_over_a_defence_scores_every_candidate(digits4):
    batch, grad, W, A = digits4
    pipe = make_pipeline(GaussianGradientNoise(relative=True, random_state=0),
                         GradientReconstructor(bias=True, random_state=0))
    search = GridSearchCV(pipe, {"gaussiangradientnoise__scale": [0.0, 1e-3]},
                          cv=KFold(3, shuffle=True, random_state=0), error_score="raise")
    with sklearn.config_context(enable_metadata_routing=True):
        search.fit(grad, weights=W, output_weights=A)
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] > 1 - 1e-9  # no noise: exact
    assert 0.99 < scores[1] < 1 - 1e-9  # noise costs held-out R^2
    assert search.best_params_ == {"gaussiangradientnoise__scale": 0.0}


def test_score_sample_weight_is_r2_scores_weighting(digits4):
    from sklearn.metrics import r2_score

    batch, grad, W, A = digits4
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        grad, weights=W, output_weights=A)
    rng = np.random.default_rng(0)
    noisy = grad + 0.1 * grad.std() * rng.standard_normal(grad.shape)
    w = rng.uniform(0, 2, len(grad))
    expected = r2_score(noisy, rec._model_gradient(W, A), sample_weight=w,
                        multioutput="variance_weighted")
    got = rec.score(noisy, weights=W, output_weights=A, sample_weight=w)
    assert got == pytest.approx(expected, rel=1e-12)
    # a number weighs every neuron alike (a TypeError before)
    assert rec.score(noisy, weights=W, output_weights=A, sample_weight=2.0) == \
        pytest.approx(rec.score(noisy, weights=W, output_weights=A), rel=1e-12)
    with pytest.raises(ValueError, match=re.escape(
            "Negative values in data passed to `sample_weight`.")):
        rec.score(grad, weights=W, output_weights=A, sample_weight=-w)


def test_pipeline_with_the_moment_transformer(digits4):
    batch, grad, W, A = digits4
    pipe = make_pipeline(GaussianGradientNoise(scale=0.0),
                         MomentTensorTransformer(bias=True))
    with sklearn.config_context(enable_metadata_routing=True):
        coords = pipe.fit_transform(grad, weights=W, output_weights=A)
    assert coords.shape == (grad.shape[0], 4)
    assert pipe[-1].order_ == 3


# --------------------------------------------------------------------------
# restarts under joblib
# --------------------------------------------------------------------------

def _check_same_restart(est, reference):
    # the same restart in the same sample order: no permutation allowed
    assert est.batch_size_ == reference.batch_size_
    assert _relative(est.samples_, reference.samples_) <= 1e-12
    assert _relative(est.sample_coefficients_, reference.sample_coefficients_) <= 1e-12
    assert est.n_starts_ == reference.n_starts_
    np.testing.assert_allclose(est.sample_misfits_, reference.sample_misfits_,
                               rtol=1e-6, atol=1e-28)


def test_reference_searches_are_nontrivial(digits4, reference):
    """The joblib tests below are only meaningful if the searches take more
    than one round of parallel starts (then a backend that ran them in
    another order or grouping would show); if a change of the numerics makes
    one round enough, pick another RESTARTS["random_state"]."""
    batch, *_ = digits4
    assert reference.n_starts_ > RESTARTS["n_init"], reference.n_starts_
    assert reference.n_found_ == 4
    assert relative_error(batch, reference.samples_)[0].max() <= 1e-6


@pytest.mark.parametrize("n_jobs, backend", [
    (2, None), (-1, None), (2, "loky"), (2, "threading"),
])
def test_restarts_do_not_depend_on_n_jobs_or_backend(digits4, reference, n_jobs,
                                                     backend):
    batch, grad, W, A = digits4
    est = GradientReconstructor(**RESTARTS, n_jobs=n_jobs)
    if backend is None:
        est.fit(grad, weights=W, output_weights=A)
    else:
        with joblib.parallel_config(backend=backend):
            est.fit(grad, weights=W, output_weights=A)
    _check_same_restart(est, reference)


def test_restarts_scale_out_with_dask(digits4, reference):
    distributed = pytest.importorskip("distributed")
    batch, grad, W, A = digits4
    est = GradientReconstructor(**RESTARTS, n_jobs=-1)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream, \
                joblib.parallel_config(backend="dask"):
            est.fit(grad, weights=W, output_weights=A)
    assert len(stream.data) >= 2  # the restarts ran as Dask tasks
    _check_same_restart(est, reference)


def test_random_state_instance_distinct_restarts_reproducible_clones(digits4,
                                                                     reference):
    batch, grad, W, A = digits4
    rs = np.random.RandomState(RESTARTS["random_state"])
    est = GradientReconstructor(**{**RESTARTS, "random_state": rs, "n_jobs": 1})
    first = clone(est).fit(grad, weights=W, output_weights=A)
    second = clone(est).fit(grad, weights=W, output_weights=A)
    # clone deep-copies the RandomState: both clones start from its state
    assert_array_equal(first.samples_, second.samples_)
    assert_array_equal(first.sample_misfits_, second.sample_misfits_)
    assert first.n_starts_ == second.n_starts_
    # fitting the clones did not advance the original instance
    assert est.random_state is rs
    assert rs.randint(2**31 - 1) == np.random.RandomState(3).randint(2**31 - 1)
    # RandomState(3) and the integer 3 are the same stream
    assert_array_equal(first.samples_, reference.samples_)
    assert relative_error(batch, first.samples_)[0].max() <= 1e-6


# --------------------------------------------------------------------------
# array-API dispatch with NumPy input (CASES 25)
# --------------------------------------------------------------------------

_DISPATCH_SCRIPT = """
import sys
import numpy as np
import sklearn
from skrecon import GradientReconstructor, MomentTensorTransformer
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch

batch = load_digits_batch(4, random_state=0)[0]
q = make_gradient_query(batch, n_neurons=8000, random_state=0)
with sklearn.config_context(array_api_dispatch=True):
    rec = GradientReconstructor(activation="tanh", bias=True, n_init=4, random_state=3)
    rec.fit(q.grad, weights=q.weights, output_weights=q.output_weights)
    score = rec.score(q.grad, weights=q.weights, output_weights=q.output_weights)
    coef = rec.transform(q.grad)
    mt = MomentTensorTransformer(bias=True).fit(
        q.grad, weights=q.weights, output_weights=q.output_weights)
    span = mt.transform(q.grad)
assert all(type(a) is np.ndarray for a in (rec.samples_, coef, span, mt.moment_tensor_))
np.savez(sys.argv[1], samples=rec.samples_, score=score, coef=coef,
         tensor=mt.moment_tensor_)
"""


def test_numpy_input_under_array_api_dispatch(digits4, reference, tmp_path):
    """scikit-learn needs SCIPY_ARRAY_API=1 before scipy is imported to
    enable dispatch, hence a fresh interpreter."""
    batch, grad, W, A = digits4
    out = tmp_path / "dispatch.npz"
    env = dict(os.environ, SCIPY_ARRAY_API="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", _DISPATCH_SCRIPT, str(out)],
                          env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    assert _relative(got["samples"], reference.samples_) <= 1e-12
    assert float(got["score"]) > 1 - 1e-9
    np.testing.assert_allclose(got["coef"], reference.transform(grad), rtol=1e-9,
                               atol=1e-12 * np.abs(got["coef"]).max())
    mt = MomentTensorTransformer(bias=True).fit(grad, weights=W, output_weights=A)
    np.testing.assert_allclose(got["tensor"], mt.moment_tensor_, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------
# persistence, clone, parameters (CASES 27)
# --------------------------------------------------------------------------

def _assert_same_state(a, b, path="est"):
    assert type(a) is type(b), path
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{path}[{k}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same_state(a[k], b[k], f"{path}[{k!r}]")
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        _assert_same_state(vars(a), vars(b), path)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, path


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_fitted_estimator_round_trips(digits4, reference, tmp_path, how):
    batch, grad, W, A = digits4
    if how == "pickle":
        loaded = pickle.loads(pickle.dumps(reference))
    else:
        joblib.dump(reference, tmp_path / "rec.joblib")
        loaded = joblib.load(tmp_path / "rec.joblib")
    assert loaded is not reference
    for name in ("samples_", "sample_coefficients_", "batch_size_", "order_",
                 "gradient_residual_", "sample_misfits_", "n_features_in_"):
        _assert_same_state(getattr(loaded, name), getattr(reference, name), name)
    assert_array_equal(loaded.moments_.moment_tensor_,
                       reference.moments_.moment_tensor_)
    assert_array_equal(loaded.moments_.components_, reference.moments_.components_)
    _assert_same_state(loaded, reference)  # every attribute, nested ones too
    assert loaded.score(grad, weights=W, output_weights=A) == reference.score(
        grad, weights=W, output_weights=A)
    assert_array_equal(loaded.transform(grad), reference.transform(grad))


def test_clone_and_nested_params_round_trip():
    est = GradientReconstructor(moments=MomentTensorTransformer(order=3), n_init=2)
    params = est.get_params()
    assert params["moments__order"] == 3 and params["n_init"] == 2
    assert est.set_params(moments__order=4, n_init=5) is est
    assert est.moments.order == 4 and est.get_params()["moments__order"] == 4
    twin = clone(est)
    assert twin.moments is not est.moments
    assert twin.get_params()["moments__order"] == 4
    assert {k: v for k, v in twin.get_params().items() if k != "moments"} == \
        {k: v for k, v in est.get_params().items() if k != "moments"}
    twin.set_params(**{k: v for k, v in params.items() if k != "moments"})
    assert twin.get_params()["moments__order"] == 3
    assert est.get_params()["moments__order"] == 4  # the clone is independent


def test_clone_of_fitted_estimator_is_unfitted(reference):
    twin = clone(reference)
    assert not hasattr(twin, "samples_") and not hasattr(twin, "moments_")
    assert twin.get_params()["random_state"] == reference.random_state


def test_init_only_stores_parameters(digits4, reference):
    batch, grad, W, A = digits4
    rs = np.random.RandomState(0)
    moments = MomentTensorTransformer(order=5)  # invalid, not checked here
    odd = GradientReconstructor(batch_size=0, tol="x", loss="hinge", moments=moments)
    assert (odd.batch_size, odd.tol, odd.loss) == (0, "x", "hinge")
    est = GradientReconstructor(n_init=-1, random_state=rs, moments=moments)
    assert vars(est) == est.get_params(deep=False)
    assert est.random_state is rs and est.moments is moments  # neither copied
    assert est.n_init == -1

    with pytest.raises(InvalidParameterError,
                       match=re.escape(
                           "The 'n_init' parameter of GradientReconstructor "
                           "must be an int in the range [1, inf). Got -1")):
        est.fit(grad, weights=W, output_weights=A)
    # the nested step's parameters are validated at fit too
    est = GradientReconstructor(bias=True, moments=moments)
    with pytest.raises(InvalidParameterError,
                       match="The 'order' parameter of MomentTensorTransformer"):
        est.fit(grad, weights=W, output_weights=A)
    with pytest.raises(InvalidParameterError, match="The 'scale' parameter"):
        GaussianGradientNoise(scale=-1.0).fit(grad)
    # joblib's n_jobs=0 "has no meaning": refused before any work
    with pytest.raises(InvalidParameterError, match=re.escape(
            "The 'n_jobs' parameter of GradientReconstructor must be an int in the "
            "range [1, inf), an int in the range (-inf, -1] or None. Got 0")):
        GradientReconstructor(bias=True, n_jobs=0).fit(grad, weights=W, output_weights=A)
    # fit clones the moment step: the instance passed in is left untouched
    assert reference.moments is RESTARTS["moments"]
    assert not hasattr(reference.moments, "moment_tensor_")
    assert reference.moments.get_params() == MomentTensorTransformer().get_params()
    assert reference.moments_ is not reference.moments
