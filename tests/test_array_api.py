"""Array-namespace dispatch: array-api-strict on the CPU, CuPy on a GPU.

The strict arrays live on ``array_api_strict.Device("device1")``: there
``numpy.asarray`` raises, and so does combining them with arrays of another
device, so a silent conversion to NumPy anywhere in ``fit``, ``score``,
``transform`` or ``inverse_transform`` fails these tests.
"""

import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skrecon import GradientReconstructor, MomentTensorTransformer
from sklearn.exceptions import NotFittedError

from skrecon.activations import ACTIVATIONS, Activation
from skrecon.blind import BlindFitWarning
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import match_samples, relative_error

xs = pytest.importorskip("array_api_strict")
DEVICE = xs.Device("device1")


def _strict(a, dtype=None):
    return None if a is None else xs.asarray(np.asarray(a, dtype=dtype), device=DEVICE)


def _host(a):
    return np.asarray(a.to_device(xs.Device("CPU_DEVICE")))


def _query(n_samples=4, n_neurons=3000, **kwargs):
    batch, labels = load_digits_batch(n_samples, random_state=0)
    return batch, make_gradient_query(batch, n_neurons=n_neurons, random_state=0, **kwargs)


def _strict_params(q, dtype=None):
    return {"weights": _strict(q.weights, dtype),
            "output_weights": _strict(q.output_weights, dtype)}


def _fitted_arrays(estimator):
    """Every array attribute of a fitted estimator and of its moment step."""
    out = {k: v for k, v in vars(estimator).items()
           if k.endswith("_") and hasattr(v, "shape") and hasattr(v, "dtype")}
    moments = getattr(estimator, "moments_", None)
    if moments is not None:
        out.update({"moments_." + k: v for k, v in _fitted_arrays(moments).items()})
    return out


CASES = {
    "tanh+gaussian bias": dict(estimator=dict(bias=True), query=dict()),
    "tanh+gaussian bias, tensor starts": dict(estimator=dict(bias=True, init="tensor"),
                                              query=dict()),
    "tanh, no bias": dict(estimator=dict(bias=False), query=dict(bias="none")),
    "sigmoid+bias, 3 outputs, cross-entropy": dict(
        estimator=dict(bias=True, activation="sigmoid", loss="cross_entropy"),
        query=dict(activation="sigmoid", n_outputs=3, loss="cross_entropy")),
    "relu+bias (host search)": dict(
        estimator=dict(bias=True, activation="relu"), query=dict(activation="relu")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_strict_fit_matches_numpy(case):
    """fit -> samples_ -> score on array-api-strict gives NumPy's samples (1e-10),
    and every fitted array is a strict array on the input's device."""
    spec = CASES[case]
    batch, q = _query(**spec["query"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identifiability warnings of the no-bias case
        ref = GradientReconstructor(random_state=0, **spec["estimator"]).fit(
            q.grad, **q.fit_params)
        rec = GradientReconstructor(random_state=0, **spec["estimator"]).fit(
            _strict(q.grad), weights=_strict(q.weights),
            output_weights=_strict(q.output_weights))
    arrays = _fitted_arrays(rec)
    assert {"samples_", "sample_coefficients_", "sign_identified_", "scale_identified_",
            "found_", "sample_misfits_", "moment_weights_", "moments_.components_",
            "moments_.singular_values_"} <= set(arrays)
    # the tensor is computed for init="tensor" (on an exact gradient "auto"
    # finds the batch from random starts without it)
    assert ("moments_.moment_tensor_" in arrays) == (spec["estimator"].get("init") == "tensor")
    for name, value in arrays.items():
        assert isinstance(value, xs._array_object.Array), name
        assert value.device == DEVICE, name
    assert rec.samples_.shape == ref.samples_.shape == batch.shape
    assert_allclose(_host(rec.samples_), ref.samples_, rtol=0, atol=1e-10)
    if spec["estimator"]["bias"]:  # identifiable: the true batch, matched
        samples = _host(rec.samples_)
        matched = samples[match_samples(batch, samples)]
        assert_allclose(matched, batch, rtol=0, atol=1e-8 * np.abs(batch).max())
    assert_allclose(_host(rec.sample_coefficients_), ref.sample_coefficients_,
                    rtol=1e-10, atol=1e-10)
    assert rec.gradient_residual_ < 1e-10
    if ref.labels_ is not None:
        assert_array_equal(_host(rec.labels_), ref.labels_)
    score = rec.score(_strict(q.grad), weights=_strict(q.weights),
                      output_weights=_strict(q.output_weights))
    assert isinstance(score, float)
    assert score == pytest.approx(ref.score(q.grad, **q.fit_params), abs=1e-12)
    assert score > 1 - 1e-12


def test_strict_transform_inverse_transform():
    _, q = _query()
    ref = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        _strict(q.grad), **_strict_params(q))
    coef = rec.transform(_strict(q.grad))
    assert coef.device == DEVICE and coef.shape == (3000, 4)
    assert_allclose(_host(coef), ref.transform(q.grad), rtol=1e-8, atol=1e-12)
    back = rec.inverse_transform(coef)
    assert back.device == DEVICE
    assert_allclose(_host(back), q.grad, rtol=0, atol=1e-10 * np.abs(q.grad).max())


def test_strict_float32_gives_float32():
    """float32 input: float32 attributes, accurate to float32 round-off."""
    batch, q = _query()
    grad32 = q.grad.astype(np.float32)
    params32 = {k: v.astype(np.float32) for k, v in q.fit_params.items()}
    ref = GradientReconstructor(bias=True, random_state=0).fit(grad32, **params32)
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        _strict(grad32), **_strict_params(q, np.float32))
    assert rec.samples_.dtype == xs.float32
    assert rec.sample_coefficients_.dtype == xs.float32
    samples = _host(rec.samples_)
    assert_allclose(samples, ref.samples_, rtol=0, atol=1e-6)
    matched = samples[match_samples(batch, samples)]
    rel = np.linalg.norm(matched - batch, axis=1) / np.linalg.norm(batch, axis=1)
    assert rel.max() < 1e-4
    for name, value in _fitted_arrays(rec).items():
        if xs.isdtype(value.dtype, "real floating"):
            assert value.dtype == xs.float32, name
    coef = rec.transform(_strict(grad32))
    assert coef.dtype == xs.float32
    assert rec.inverse_transform(coef).dtype == xs.float32
    assert rec.moments_.transform(_strict(grad32)).dtype == xs.float32
    assert rec.transform(_strict(q.grad)).dtype == xs.float64  # follows X


def test_moment_transformer_strict_matches_numpy():
    _, q = _query()
    ref = MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params)
    mt = MomentTensorTransformer(bias=True).fit(_strict(q.grad), **_strict_params(q))
    assert mt.n_components_ == ref.n_components_ == 4
    for name, value in _fitted_arrays(mt).items():
        assert isinstance(value, xs._array_object.Array) and value.device == DEVICE, name
        assert_allclose(_host(value), getattr(ref, name), rtol=1e-9, atol=1e-12)
    coords = mt.transform(_strict(q.grad))
    assert coords.device == DEVICE
    assert_allclose(_host(mt.inverse_transform(coords)), q.grad, atol=1e-12)


def test_strict_repeated_and_zero_columns_left_out_of_the_spectrum():
    """The column de-duplication (no ``unique`` over columns in the Array
    API) agrees with NumPy's."""
    _, q = _query(n_samples=3)
    grad = np.hstack([q.grad, q.grad[:, :5], np.zeros((3000, 2))])
    # the extra inputs' weights drawn as the server's (a last column spread
    # otherwise would be refused as a forgotten bias)
    extra = np.random.default_rng(1).standard_normal((3000, 7)) * q.weight_std
    weights = np.hstack([q.weights, extra])
    ref = MomentTensorTransformer().fit(grad, weights=weights)
    mt = MomentTensorTransformer().fit(_strict(grad), weights=_strict(weights))
    distinct = np.unique(grad, axis=1)
    n_live = int(np.sum(np.any(distinct != 0, axis=0)))
    assert n_live == np.sum(np.any(q.grad != 0, axis=0))  # the copies add nothing
    assert mt.singular_values_.shape == ref.singular_values_.shape == (n_live,)
    assert_allclose(_host(mt.singular_values_), ref.singular_values_, rtol=1e-12)


def test_mixed_namespaces_raise():
    _, q = _query(n_samples=2, n_neurons=1500)
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        _strict(q.grad), **_strict_params(q))
    msg = ("GradientReconstructor was fitted on array_api_strict arrays but X comes "
           "from numpy: pass X in the array namespace of the fit (array_api_strict), "
           "or refit on numpy arrays.")
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        rec.score(q.grad, **q.fit_params)
    with pytest.raises(ValueError, match="fitted on array_api_strict arrays"):
        rec.transform(q.grad)
    with pytest.raises(ValueError, match="fitted on array_api_strict arrays"):
        rec.inverse_transform(np.eye(2))
    ref = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    with pytest.raises(ValueError, match="fitted on numpy arrays but X comes from "
                                         "array_api_strict"):
        ref.score(_strict(q.grad), **_strict_params(q))
    with pytest.raises(ValueError, match=r"different array libraries \(array_api_strict, "
                                         r"numpy\)"):
        GradientReconstructor(bias=True).fit(_strict(q.grad), **q.fit_params)
    with pytest.raises(ValueError, match=r"different array libraries"):
        GradientReconstructor(bias=True).fit(q.grad, **_strict_params(q))
    cpu = xs.asarray(q.weights, device=xs.Device("CPU_DEVICE"))
    with pytest.raises(ValueError, match="live on different devices"):
        GradientReconstructor(bias=True).fit(_strict(q.grad), weights=cpu)


def test_strict_invalid_inputs_same_messages():
    _, q = _query(n_samples=2, n_neurons=1500)
    grad = q.grad.copy()
    grad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"The gradient X contains NaN or inf \(1 NaN, "
                                         r"0 inf; first at index \(3, 4\)\)"):
        GradientReconstructor(bias=True).fit(_strict(grad), **_strict_params(q))
    with pytest.raises(ValueError, match="boolean dtype"):
        GradientReconstructor().fit(_strict(q.grad > 0), **_strict_params(q))
    with pytest.raises(ValueError, match="must be 2-D"):
        GradientReconstructor().fit(_strict(q.grad[0]), weights=_strict(q.weights[0]))
    with pytest.raises(ValueError, match="weights has shape"):
        GradientReconstructor().fit(_strict(q.grad), weights=_strict(q.weights[:10]))
    # without weights: the blind estimate, its samples in the input's namespace
    with pytest.warns(BlindFitWarning, match="got no weights"):
        blind = GradientReconstructor(bias=True, random_state=0).fit(_strict(q.grad))
    assert isinstance(blind.samples_, xs._array_object.Array)
    assert blind.solver_ == "cocktail_party"
    with pytest.raises(ValueError, match="output_weights are all zero"):
        GradientReconstructor(bias=True).fit(
            _strict(q.grad), weights=_strict(q.weights),
            output_weights=_strict(np.zeros(1500)))
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        _strict(q.grad), **_strict_params(q))
    with pytest.raises(ValueError, match="X has 10 features, but GradientReconstructor "
                                         "is expecting 65 features as input."):
        rec.transform(_strict(q.grad[:, :10]))


def test_pickle_of_a_strict_fit_holds_numpy_arrays():
    """Pickles hold NumPy arrays, wherever the fit ran (DESIGN §3): an
    estimator fitted on CuPy loads without a GPU."""
    _, q = _query()
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        _strict(q.grad), **_strict_params(q))
    loaded = pickle.loads(pickle.dumps(rec))
    for name, value in _fitted_arrays(loaded).items():
        assert isinstance(value, np.ndarray), name
    assert_array_equal(loaded.samples_, _host(rec.samples_))
    assert loaded.score(q.grad, **q.fit_params) > 1 - 1e-12
    # the original keeps its namespace
    assert isinstance(rec.samples_, xs._array_object.Array)


# callables that need erf, which the Array API does not have
_NEEDS_ERF = {("erf", "function"), ("gelu", "function"), ("gelu", "d1")}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_builtin_activations_evaluate_in_the_namespace(name):
    activation = ACTIVATIONS[name]
    t = np.linspace(-6, 6, 101)
    callables = {"function": activation.function, "d1": activation.derivatives[0],
                 "d2": activation.derivatives[1]}
    for which, f in callables.items():
        if (name, which) in _NEEDS_ERF:
            with pytest.raises(TypeError, match="needs the special function 'erf', which "
                                                "the array namespace 'array_api_strict'"):
                f(_strict(t))
            continue
        value = f(_strict(t))
        assert value.device == DEVICE, which
        assert_allclose(_host(value), f(t), rtol=1e-14, atol=1e-15, err_msg=which)


def test_numpy_with_sklearn_array_api_dispatch_on():
    """scikit-learn's switch does not change skrecon: NumPy input gives the
    same fit with ``array_api_dispatch`` on or off, and strict input works
    either way (the namespace always comes from the inputs)."""
    script = textwrap.dedent("""
        import numpy as np, sklearn, array_api_strict as xs
        from skrecon import GradientReconstructor
        from skrecon.clients import make_gradient_query
        from skrecon.datasets import load_digits_batch
        batch, _ = load_digits_batch(3, random_state=0)
        q = make_gradient_query(batch, n_neurons=1500, random_state=0)
        strict_params = {k: xs.asarray(v) for k, v in q.fit_params.items()}
        off = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
        with sklearn.config_context(array_api_dispatch=True):
            on = GradientReconstructor(bias=True, random_state=0).fit(
                q.grad, **q.fit_params)
            strict = GradientReconstructor(bias=True, random_state=0).fit(
                xs.asarray(q.grad), **strict_params)
            score = strict.score(xs.asarray(q.grad), **strict_params)
        assert type(on.samples_) is np.ndarray
        print(np.abs(on.samples_ - off.samples_).max(),
              np.abs(np.asarray(strict.samples_) - off.samples_).max(), score)
    """)
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    numpy_diff, strict_diff, score = map(float, out.stdout.split())
    assert numpy_diff < 1e-12 and strict_diff < 1e-10
    assert score > 1 - 1e-12


def _gpu_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device
        return False


needs_gpu = pytest.mark.skipif(not _gpu_available(),
                               reason="CuPy with a CUDA device is not available")


@needs_gpu
@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-8), (np.float32, 1e-4)])
def test_cupy_fit_matches_numpy(dtype, atol):
    import cupy
    batch, q = _query()
    grad = q.grad.astype(dtype)
    params = {k: v.astype(dtype) for k, v in q.fit_params.items()}
    gpu_params = {k: cupy.asarray(v) for k, v in params.items()}
    ref = GradientReconstructor(bias=True, random_state=0).fit(grad, **params)
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        cupy.asarray(grad), **gpu_params)
    for name, value in _fitted_arrays(rec).items():
        assert isinstance(value, cupy.ndarray), name
    assert rec.samples_.dtype == dtype
    assert_allclose(rec.samples_.get(), ref.samples_, rtol=0, atol=atol)
    assert rec.score(cupy.asarray(grad), **gpu_params) > 1 - 10 * atol


@needs_gpu
def test_cupy_pickle_loads_as_numpy():
    import cupy
    _, q = _query()
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        cupy.asarray(q.grad), **{k: cupy.asarray(v) for k, v in q.fit_params.items()})
    loaded = pickle.loads(pickle.dumps(rec))
    assert isinstance(loaded.samples_, np.ndarray)
    assert_array_equal(loaded.samples_, rec.samples_.get())


def test_older_array_api_revision():
    """The 2023.12 revision has no Python scalars in ``minimum`` and no
    ``__dlpack__`` export of that version: ELU (host transfers included)
    still fits."""
    batch, q = _query(n_samples=3, n_neurons=2000, activation="elu")
    ref = GradientReconstructor(bias=True, activation="elu", random_state=0).fit(
        q.grad, **q.fit_params)
    try:
        xs.set_array_api_strict_flags(api_version="2023.12")
        rec = GradientReconstructor(bias=True, activation="elu", random_state=0).fit(
            _strict(q.grad), **_strict_params(q))
    finally:
        xs.reset_array_api_strict_flags()
    assert_allclose(_host(rec.samples_), ref.samples_, rtol=0, atol=1e-10)


def test_activation_that_cannot_run_in_the_namespace_fails_first():
    _, q = _query(n_samples=2, n_neurons=1500)
    with pytest.raises(TypeError, match=r"Activation 'gelu' cannot be evaluated on "
                                        r"array_api_strict arrays: .*special function 'erf'"):
        GradientReconstructor(bias=True, activation="gelu").fit(
            _strict(q.grad), **_strict_params(q))
    numpy_only = Activation("np_tanh", np.tanh, (lambda t: 1 - np.tanh(t) ** 2,
                                                 lambda t: -2 * np.tanh(t) / np.cosh(t) ** 2))
    with pytest.raises(TypeError, match="Activation 'np_tanh' cannot be evaluated on "
                                        "array_api_strict arrays: .* A custom activation "
                                        "must evaluate in its argument's namespace"):
        GradientReconstructor(bias=True, activation=numpy_only).fit(
            _strict(q.grad), **_strict_params(q))
    # on the CPU device NumPy converts silently: the result's type gives it away
    cpu = xs.Device("CPU_DEVICE")
    with pytest.raises(TypeError, match="Activation 'np_tanh' returned a ndarray for "
                                        "array_api_strict input"):
        GradientReconstructor(bias=True, activation=numpy_only).fit(
            xs.asarray(q.grad, device=cpu),
            **{k: xs.asarray(v, device=cpu) for k, v in q.fit_params.items()})


@pytest.mark.parametrize("on_strict", [False, True])
def test_inverse_transform_refuses_complex_and_bool(on_strict):
    _, q = _query(n_samples=2, n_neurons=1500)
    conv = _strict if on_strict else np.asarray
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        conv(q.grad), **({k: conv(v) for k, v in q.fit_params.items()}))
    for bad in (np.eye(2, dtype=complex), np.eye(2, dtype=bool)):
        with pytest.raises(ValueError, match="X must be a real numeric array for "
                                             "inverse_transform, got dtype"):
            rec.inverse_transform(conv(bad))
        with pytest.raises(ValueError, match="X must be a real numeric array"):
            rec.moments_.inverse_transform(conv(bad))


def test_metrics_take_device_samples():
    batch, q = _query()
    rec = GradientReconstructor(bias=True, random_state=0).fit(
        _strict(q.grad), **_strict_params(q))
    errors, permutation = relative_error(batch, rec.samples_)
    assert errors.max() < 1e-8
    assert sorted(permutation) == [0, 1, 2, 3]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_noisy_gradient_same_sample_order_as_numpy():
    """On a noisy gradient round-off may let another restart win; the
    canonical order of ``samples_`` keeps NumPy and strict alike."""
    batch, q = _query(n_samples=2, n_neurons=1500)
    for seed in range(3):
        noise = np.random.default_rng(seed).standard_normal(q.grad.shape)
        grad = q.grad + 1e-6 * np.abs(q.grad).max() * noise
        ref = GradientReconstructor(bias=True, random_state=seed).fit(grad, **q.fit_params)
        rec = GradientReconstructor(bias=True, random_state=seed).fit(
            _strict(grad), **_strict_params(q))
        assert_allclose(_host(rec.samples_), ref.samples_, rtol=0, atol=1e-9)
        key = ref.samples_ @ np.random.default_rng(0).standard_normal(64)
        assert np.all(np.diff(key) <= 0)


def test_not_fitted_after_a_failed_fit():
    _, q = _query(n_samples=2, n_neurons=1500)
    rec = GradientReconstructor(bias=True)
    with pytest.raises(ValueError, match="weights has shape"):
        rec.fit(_strict(q.grad), weights=_strict(q.weights[:10]))
    with pytest.raises(NotFittedError):
        rec.transform(_strict(q.grad))


def test_torch_tensors_requiring_grad():
    """PyTorch through array-api-compat: tensors that require grad are
    detached, the fitted arrays are tensors, the samples NumPy's."""
    torch = pytest.importorskip("torch")
    batch, q = _query(n_samples=3, n_neurons=2000)
    ref = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tensors = {k: torch.tensor(v, requires_grad=True) for k, v in q.fit_params.items()}
        rec = GradientReconstructor(bias=True, random_state=0).fit(
            torch.tensor(q.grad, requires_grad=True), **tensors)
    finally:
        torch.set_num_threads(threads)
    assert isinstance(rec.samples_, torch.Tensor) and not rec.samples_.requires_grad
    assert_allclose(rec.samples_.numpy(), ref.samples_, rtol=0, atol=1e-10)
