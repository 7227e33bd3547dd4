"""Tests of skrecon.clients: the reference client's gradients are exact."""

import numpy as np
import pytest

from skrecon.activations import get_activation
from skrecon.clients import GradientQuery, make_gradient_query

B, D, M = 3, 5, 7
DEEP = [(6, "tanh"), (5, "relu")]


def _batch(n=B, d=D, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, d))


def _copy_layers(layers):
    return [
        {
            "weight": layer["weight"].copy(),
            "bias": None if layer["bias"] is None else layer["bias"].copy(),
            "activation": layer["activation"],
        }
        for layer in layers
    ]


def _central_differences(query, step=1e-5):
    """dL/dparam for every parameter of every layer, by central differences."""
    layers = _copy_layers(query.layers)
    result = []
    for layer in layers:
        entry = {}
        for key in ("weight", "bias"):
            param = layer[key]
            if param is None:
                entry[key] = None
                continue
            fd = np.zeros_like(param)
            for idx in np.ndindex(param.shape):
                old = param[idx]
                param[idx] = old + step
                plus = query.loss_value(layers=layers)
                param[idx] = old - step
                minus = query.loss_value(layers=layers)
                param[idx] = old
                fd[idx] = (plus - minus) / (2.0 * step)
            entry[key] = fd
        result.append(entry)
    return result


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# --------------------------------------------------------------------------
# finite differences: every parameter of every layer
# --------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [(), DEEP], ids=["2layer", "deep"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "softplus"])
@pytest.mark.parametrize("bias", ["none", "zero", "gaussian"])
@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_gradient_matches_central_differences(loss, bias, activation, reduction,
                                              hidden):
    n_outputs = 4 if loss == "cross_entropy" else (2 if hidden else 1)
    q = make_gradient_query(
        _batch(), n_neurons=M, activation=activation, bias=bias, loss=loss,
        reduction=reduction, n_outputs=n_outputs, hidden_layers=hidden,
        random_state=3,
    )
    fd = _central_differences(q)
    assert len(fd) == len(q.gradients) == len(hidden) + 2
    for layer_fd, layer_grad, layer in zip(fd, q.gradients, q.layers):
        assert _rel(layer_fd["weight"], layer_grad["weight"]) <= 1e-6
        if layer["bias"] is None:
            assert layer_grad["bias"] is None
        else:
            assert _rel(layer_fd["bias"], layer_grad["bias"]) <= 1e-6
    # the first layer's gradient in the reconstructor's layout
    first = fd[0]["weight"] if bias == "none" else np.hstack(
        [fd[0]["weight"], fd[0]["bias"][:, None]])
    assert _rel(first, q.grad) <= 1e-6


# --------------------------------------------------------------------------
# the identity the reconstruction rests on (DESIGN §1)
# --------------------------------------------------------------------------

def _independent_signals(q, batch, targets, loss, reduction):
    """u_i = dl_i/df / B from an independent forward pass of a 2-layer net."""
    bias = q.weights[:, -1] if q.has_bias else 0.0
    w = q.weights[:, :-1] if q.has_bias else q.weights
    act = get_activation(q.activation)
    pre = batch @ w.T + bias
    f = act(pre) @ q.output_weights
    if loss == "squared":
        u = f - np.asarray(targets, dtype=float).reshape(f.shape)
    else:
        p = np.exp(f - f.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        u = p - np.eye(f.shape[1])[targets]
    if reduction == "mean":
        u = u / batch.shape[0]
    return u, pre


@pytest.mark.parametrize("loss,n_outputs", [("squared", 1), ("squared", 3),
                                            ("cross_entropy", 10)])
@pytest.mark.parametrize("bias", ["none", "zero", "gaussian"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "silu"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_first_layer_identity(loss, n_outputs, bias, activation, reduction):
    batch = _batch(6, 9, seed=1)
    if loss == "squared":
        targets = np.random.default_rng(2).standard_normal(
            (6,) if n_outputs == 1 else (6, n_outputs))
    else:
        targets = np.array([0, 3, 3, 9, 1, 5])
    q = make_gradient_query(batch, targets, n_neurons=50, activation=activation,
                            bias=bias, loss=loss, reduction=reduction,
                            n_outputs=n_outputs, random_state=0)
    u, pre = _independent_signals(q, batch, targets, loss, reduction)
    np.testing.assert_allclose(q.signals, u, rtol=1e-12, atol=1e-15)
    act = get_activation(activation)
    x_tilde = batch if bias == "none" else np.hstack([batch, np.ones((6, 1))])
    delta = (q.output_weights @ u.T) * act.derivative(pre.T, 1)   # (m, B)
    expected = delta @ x_tilde
    np.testing.assert_allclose(q.grad, expected, rtol=1e-12, atol=1e-15)
    if loss == "cross_entropy":
        # the label is the unique negative coordinate of u_i
        assert np.all((u < 0).sum(axis=1) == 1)
        np.testing.assert_array_equal(np.argmin(q.signals, axis=1), targets)


@pytest.mark.parametrize("bias", ["none", "gaussian"])
def test_identity_holds_for_deep_nets(bias):
    batch = _batch(4, 6, seed=5)
    q = make_gradient_query(batch, n_neurons=30, hidden_layers=[(8, "gelu"),
                                                                (7, "tanh")],
                            bias=bias, n_outputs=3, random_state=1)
    assert q.output_weights.shape == (30, 8)
    assert q.signals.shape == (4, 8)
    np.testing.assert_array_equal(q.output_weights, q.layers[1]["weight"].T)
    w = q.weights[:, :-1] if q.has_bias else q.weights
    b = q.weights[:, -1] if q.has_bias else 0.0
    pre = batch @ w.T + b
    x_tilde = batch if bias == "none" else np.hstack([batch, np.ones((4, 1))])
    tanh = get_activation("tanh")
    expected = ((q.output_weights @ q.signals.T) * tanh.derivative(pre.T, 1)) @ x_tilde
    np.testing.assert_allclose(q.grad, expected, rtol=1e-12, atol=1e-15)


def test_gradient_spans_the_batch():
    batch = _batch(5, 12, seed=7)
    q = make_gradient_query(batch, n_neurons=200, bias="none", random_state=0)
    s = np.linalg.svd(q.grad, compute_uv=False)
    assert s[4] / s[0] > 1e-6
    assert s[5] / s[0] < 1e-12


# --------------------------------------------------------------------------
# reduction, determinism, dtype, shapes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("loss,n_outputs", [("squared", 2), ("cross_entropy", 3)])
def test_sum_is_batch_size_times_mean(loss, n_outputs):
    batch = _batch(4, 6)
    kw = dict(n_neurons=20, loss=loss, n_outputs=n_outputs, hidden_layers=[(5, "silu")],
              random_state=11)
    q_mean = make_gradient_query(batch, reduction="mean", **kw)
    q_sum = make_gradient_query(batch, reduction="sum", **kw)
    np.testing.assert_array_equal(q_mean.targets, q_sum.targets)
    np.testing.assert_allclose(q_sum.grad, 4 * q_mean.grad, rtol=1e-12, atol=1e-15)
    for gs, gm in zip(q_sum.gradients, q_mean.gradients):
        np.testing.assert_allclose(gs["weight"], 4 * gm["weight"], rtol=1e-12,
                                   atol=1e-15)
        np.testing.assert_allclose(gs["bias"], 4 * gm["bias"], rtol=1e-12, atol=1e-15)
    assert q_sum.loss_value() == pytest.approx(4 * q_mean.loss_value(), rel=1e-12)


@pytest.mark.parametrize("random_state", [0, 42])
def test_same_seed_gives_bitwise_identical_queries(random_state):
    batch = _batch(4, 6)
    kw = dict(n_neurons=40, loss="cross_entropy", n_outputs=5,
              hidden_layers=[(6, "relu")], dp_clip_norm=0.1, dp_noise_multiplier=1.0,
              random_state=random_state)
    q1 = make_gradient_query(batch, **kw)
    q2 = make_gradient_query(batch, **kw)
    for name in ("grad", "weights", "output_weights", "targets", "batch", "signals"):
        np.testing.assert_array_equal(getattr(q1, name), getattr(q2, name))
    for l1, l2, g1, g2 in zip(q1.layers, q2.layers, q1.gradients, q2.gradients):
        np.testing.assert_array_equal(l1["weight"], l2["weight"])
        np.testing.assert_array_equal(l1["bias"], l2["bias"])
        np.testing.assert_array_equal(g1["weight"], g2["weight"])
        np.testing.assert_array_equal(g1["bias"], g2["bias"])
    q3 = make_gradient_query(batch, **{**kw, "random_state": random_state + 1})
    assert not np.array_equal(q1.weights, q3.weights)


def test_random_state_never_touches_global_numpy_random():
    np.random.seed(0)
    expected = np.random.random_sample()
    np.random.seed(0)
    make_gradient_query(_batch(), n_neurons=10, random_state=3)
    assert np.random.random_sample() == expected


def test_generator_and_randomstate_are_accepted():
    batch = _batch()
    q1 = make_gradient_query(batch, n_neurons=10,
                             random_state=np.random.default_rng(0))
    q2 = make_gradient_query(batch, n_neurons=10,
                             random_state=np.random.RandomState(0))
    q3 = make_gradient_query(batch, n_neurons=10, random_state=0)
    assert q1.grad.shape == q2.grad.shape == (10, D + 1)
    np.testing.assert_array_equal(q2.grad, q3.grad)


def test_float32():
    batch = _batch(4, 6)
    kw = dict(n_neurons=30, hidden_layers=[(5, "gelu")], n_outputs=2, random_state=0)
    q32 = make_gradient_query(batch, dtype=np.float32, **kw)
    q64 = make_gradient_query(batch, dtype=np.float64, **kw)
    for name in ("grad", "weights", "output_weights", "targets", "batch", "signals"):
        assert getattr(q32, name).dtype == np.float32, name
    for layer, g in zip(q32.layers, q32.gradients):
        assert layer["weight"].dtype == np.float32
        assert layer["bias"].dtype == np.float32
        assert g["weight"].dtype == np.float32
        assert g["bias"].dtype == np.float32
    np.testing.assert_array_equal(q32.weights, q64.weights.astype(np.float32))
    assert _rel(q32.grad.astype(np.float64), q64.grad) < 1e-5


@pytest.mark.parametrize("bias", ["none", "zero", "gaussian"])
@pytest.mark.parametrize("hidden", [(), [(6, "tanh"), (5, "relu")]])
def test_shapes_of_every_field(bias, hidden):
    n, d, m, k = 4, 6, 11, 3
    q = make_gradient_query(_batch(n, d), n_neurons=m, bias=bias, n_outputs=k,
                            hidden_layers=hidden, random_state=0)
    assert isinstance(q, GradientQuery)
    cols = d if bias == "none" else d + 1
    n_next = hidden[0][0] if hidden else k
    assert q.grad.shape == q.weights.shape == (m, cols)
    assert q.output_weights.shape == (m, n_next)
    assert q.signals.shape == (n, n_next)
    assert q.targets.shape == (n, k)
    assert q.batch.shape == (n, d)
    assert (q.batch_size, q.n_neurons, q.has_bias) == (n, m, bias != "none")
    assert q.bias == bias and q.loss == "squared" and q.reduction == "mean"
    assert q.activation == "tanh"
    widths = [m] + [w for w, _ in hidden] + [k]
    fan_ins = [d, m] + [w for w, _ in hidden]
    assert len(q.layers) == len(q.gradients) == len(widths)
    for layer, g, out, fan_in in zip(q.layers, q.gradients, widths, fan_ins):
        assert layer["weight"].shape == g["weight"].shape == (out, fan_in)
        if layer is q.layers[0] and bias == "none":
            assert layer["bias"] is None and g["bias"] is None
        else:
            assert layer["bias"].shape == g["bias"].shape == (out,)
    assert q.layers[-1]["activation"] is None
    np.testing.assert_array_equal(q.weights[:, :d], q.layers[0]["weight"])
    if bias == "zero":
        np.testing.assert_array_equal(q.weights[:, -1], 0.0)
    assert set(q.fit_params) == {"weights", "output_weights"}
    assert "GradientQuery(batch_size=4" in repr(q)


def test_batch_is_copied():
    batch = _batch()
    q = make_gradient_query(batch, n_neurons=5, random_state=0)
    batch[0, 0] = 100.0
    assert q.batch[0, 0] != 100.0


def test_parameter_scales():
    batch = _batch(2, 16)
    q = make_gradient_query(batch, n_neurons=20000, bias="gaussian", bias_std=0.3,
                            random_state=0)
    assert q.weight_std == pytest.approx(0.25)
    assert q.weights[:, :-1].std() == pytest.approx(0.25, rel=0.01)
    assert q.weights[:, -1].std() == pytest.approx(0.3, rel=0.03)
    assert q.output_weights.std() == pytest.approx(1 / np.sqrt(20000), rel=0.03)
    q = make_gradient_query(batch, n_neurons=20000, weight_std=2.0, bias="none",
                            output_weight_std=0.5, random_state=0)
    assert q.weights.std() == pytest.approx(2.0, rel=0.01)
    assert q.output_weights.std() == pytest.approx(0.5, rel=0.03)


def test_drawn_and_given_targets():
    batch = _batch(5, 4)
    q = make_gradient_query(batch, n_neurons=5, random_state=0)
    assert q.targets.shape == (5,) and q.targets.dtype == np.float64
    q = make_gradient_query(batch, n_neurons=5, loss="cross_entropy", n_outputs=3,
                            random_state=0)
    assert q.targets.dtype == np.int64
    assert q.targets.min() >= 0 and q.targets.max() < 3
    t = np.arange(5.0)
    g1 = make_gradient_query(batch, t, n_neurons=5, random_state=0).grad
    g2 = make_gradient_query(batch, t[:, None], n_neurons=5, random_state=0).grad
    np.testing.assert_array_equal(g1, g2)
    q = make_gradient_query(batch, [0.0, 1.0, 2.0, 1.0, 0.0], n_neurons=5,
                            loss="cross_entropy", n_outputs=3, random_state=0)
    np.testing.assert_array_equal(q.targets, [0, 1, 2, 1, 0])


def test_loss_value():
    batch = _batch(3, 4)
    q = make_gradient_query(batch, n_neurons=6, bias="none", random_state=0)
    f = np.tanh(batch @ q.weights.T) @ q.output_weights
    expected = 0.5 * np.mean((f[:, 0] - q.targets) ** 2)
    assert q.loss_value() == pytest.approx(expected, rel=1e-13)
    assert q.loss_value(batch=batch * 2) != pytest.approx(expected)
    with pytest.raises(ValueError, match=r"batch must have shape \(3, n_inputs\)"):
        q.loss_value(batch=batch[:2])


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs,match", [
    ((np.array([[0.0, np.nan]]),), {}, "batch contains NaN"),
    ((np.array([[0.0, np.inf]]),), {}, "batch contains NaN"),
    ((np.ones(3),), {}, "batch must be a 2-D array"),
    ((np.ones((2, 2, 2)),), {}, "batch must be a 2-D array"),
    ((np.ones((0, 3)),), {}, "batch must be non-empty"),
    ((np.ones((2, 3)),), {"n_neurons": 0}, "n_neurons must be >= 1"),
    ((np.ones((2, 3)),), {"n_neurons": 2.5}, "n_neurons must be a positive integer"),
    ((np.ones((2, 3)),), {"n_outputs": 0}, "n_outputs must be >= 1"),
    ((np.ones((2, 3)),), {"bias": "const"}, "bias must be one of"),
    ((np.ones((2, 3)),), {"bias": True}, "bias must be one of"),
    ((np.ones((2, 3)),), {"loss": "hinge"}, "loss must be one of"),
    ((np.ones((2, 3)),), {"reduction": "max"}, "reduction must be one of"),
    ((np.ones((2, 3)),), {"activation": "swish2"}, "activation: Unknown activation"),
    ((np.ones((2, 3)),), {"hidden_layers": [(4, "nope")]},
     r"hidden_layers\[0\] activation"),
    ((np.ones((2, 3)),), {"hidden_layers": [(0, "tanh")]},
     r"hidden_layers\[0\] width must be >= 1"),
    ((np.ones((2, 3)),), {"hidden_layers": [4]}, r"hidden_layers\[0\] must be a"),
    ((np.ones((2, 3)), np.ones(3)), {}, r"targets must have shape \(2, 1\) or \(2,\)"),
    ((np.ones((2, 3)), np.ones((2, 2))), {"n_outputs": 3},
     r"targets must have shape \(2, 3\)"),
    ((np.ones((2, 3)), [0.0, np.nan]), {}, "targets contains NaN"),
    ((np.ones((2, 3)),), {"loss": "cross_entropy"},
     "loss='cross_entropy' needs n_outputs >= 2"),
    ((np.ones((2, 3)), [0, 3]), {"loss": "cross_entropy", "n_outputs": 3},
     r"targets must be labels in \[0, 3\)"),
    ((np.ones((2, 3)), [0, 1, 1]), {"loss": "cross_entropy", "n_outputs": 3},
     r"targets must be integer labels of shape \(2,\)"),
    ((np.ones((2, 3)), [0.5, 1]), {"loss": "cross_entropy", "n_outputs": 3},
     "targets must be integer labels"),
    ((np.ones((2, 3)),), {"dtype": np.int32}, "dtype must be numpy.float32"),
    ((np.ones((2, 3)),), {"dtype": np.float16}, "dtype must be numpy.float32"),
    ((np.ones((2, 3)),), {"weight_std": -1.0}, "weight_std must be finite and > 0"),
    ((np.ones((2, 3)),), {"weight_std": "big"}, "weight_std must be a positive float"),
    ((np.ones((2, 3)),), {"bias_std": 0.0}, "bias_std must be finite and > 0"),
    ((np.ones((2, 3)),), {"output_weight_std": np.nan},
     "output_weight_std must be finite"),
    ((np.ones((2, 3)),), {"dp_clip_norm": 0.0}, "dp_clip_norm must be finite and > 0"),
    ((np.ones((2, 3)),), {"dp_noise_multiplier": 1.0},
     "dp_noise_multiplier > 0 needs dp_clip_norm"),
    ((np.ones((2, 3)),), {"dp_clip_norm": 1.0, "dp_noise_multiplier": -1.0},
     "dp_noise_multiplier must be finite and >= 0"),
])
def test_validation_errors(args, kwargs, match):
    kwargs = {"n_neurons": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_gradient_query(*args, **kwargs)


def test_bias_std_is_ignored_without_gaussian_bias():
    q = make_gradient_query(_batch(), n_neurons=4, bias="zero", bias_std=-1.0,
                            random_state=0)
    assert q.bias_std == 0.0


# --------------------------------------------------------------------------
# DP-SGD
# --------------------------------------------------------------------------

def _full_norm(q):
    sq = 0.0
    for g in q.gradients:
        sq += np.sum(g["weight"] ** 2)
        if g["bias"] is not None:
            sq += np.sum(g["bias"] ** 2)
    return np.sqrt(sq)


DP_KW = dict(n_neurons=25, hidden_layers=[(6, "tanh")], n_outputs=3,
             loss="cross_entropy", random_state=4)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dp_with_large_clip_and_no_noise_is_the_plain_gradient(reduction):
    batch = _batch(4, 6)
    plain = make_gradient_query(batch, reduction=reduction, **DP_KW)
    dp = make_gradient_query(batch, reduction=reduction, dp_clip_norm=1e6, **DP_KW)
    np.testing.assert_array_equal(dp.grad, plain.grad)
    for g1, g2 in zip(dp.gradients, plain.gradients):
        np.testing.assert_array_equal(g1["weight"], g2["weight"])
        np.testing.assert_array_equal(g1["bias"], g2["bias"])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dp_clips_each_example(reduction):
    batch = _batch(4, 6)
    targets = np.array([0, 2, 1, 2])
    clip = 1e-3
    batched = make_gradient_query(batch, targets, reduction=reduction,
                                  dp_clip_norm=clip, **DP_KW)
    total = None
    for i in range(4):
        raw = make_gradient_query(batch[i:i + 1], targets[i:i + 1], reduction="sum",
                                  **DP_KW)
        assert _full_norm(raw) > clip           # clipping is active
        one = make_gradient_query(batch[i:i + 1], targets[i:i + 1], reduction="sum",
                                  dp_clip_norm=clip, **DP_KW)
        assert _full_norm(one) <= clip * (1 + 1e-12)
        assert _full_norm(one) == pytest.approx(clip, rel=1e-12)
        # the clipped gradient is the raw one, rescaled
        np.testing.assert_allclose(one.grad, raw.grad * clip / _full_norm(raw),
                                   rtol=1e-10, atol=1e-18)
        total = one.grad if total is None else total + one.grad
    expected = total / 4 if reduction == "mean" else total
    np.testing.assert_allclose(batched.grad, expected, rtol=1e-12, atol=1e-18)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dp_noise_has_the_dp_sgd_scale(reduction):
    batch = _batch(4, 10)
    kw = dict(n_neurons=3000, bias="gaussian", reduction=reduction, dp_clip_norm=0.5,
              random_state=0)
    targets = np.ones(4)
    clean = make_gradient_query(batch, targets, **kw)
    noisy = make_gradient_query(batch, targets, dp_noise_multiplier=2.0, **kw)
    np.testing.assert_array_equal(clean.weights, noisy.weights)
    noise = noisy.grad - clean.grad
    expected_std = 2.0 * 0.5 / (4 if reduction == "mean" else 1)
    assert noise.std() == pytest.approx(expected_std, rel=0.03)
    assert abs(noise.mean()) < 0.05 * expected_std
    for gn, gc in zip(noisy.gradients[1:], clean.gradients[1:]):
        assert not np.array_equal(gn["weight"], gc["weight"])
    assert noisy.dp_clip_norm == 0.5 and noisy.dp_noise_multiplier == 2.0
