"""The PyTorch adapter: real torch.nn clients, end to end (issue 5)."""

import re
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from skrecon import GradientReconstructor  # noqa: E402
from skrecon.datasets import load_digits_batch  # noqa: E402
from skrecon.metrics import matched_cosine, relative_error  # noqa: E402
from skrecon.exceptions import UnknownActivationWarning  # noqa: E402
from skrecon.reconstructor import IdentifiabilityWarning  # noqa: E402
import skrecon.torch as sktorch  # noqa: E402
from skrecon.torch import (  # noqa: E402
    first_layer_query, full_model_gradient, gaussian_reinit_)

LABELS = [1, 1, 5, 7, 0, 3, 3, 9]

# Width of the first layer in the end-to-end tests: the 16384 of issue 5.
# benchmarks/bench_torch_width.py measures how narrow the layer can be.
N_NEURONS = 16384


@pytest.fixture(scope="module")
def digits():
    return load_digits_batch(labels=LABELS, random_state=0)


def _two_layer(m, *, bias=True, dtype=torch.float64):
    model = nn.Sequential(nn.Linear(64, m, bias=bias), nn.Tanh(), nn.Linear(m, 10))
    # never torch.set_default_dtype: build, then cast
    return model.to(dtype)


def _client_step(model, batch, labels, reduction="mean"):
    """The client: one forward/backward pass with softmax cross-entropy."""
    dtype = next(model.parameters()).dtype
    model.zero_grad()
    logits = model(torch.as_tensor(batch, dtype=dtype))
    loss = nn.CrossEntropyLoss(reduction=reduction)(logits, torch.as_tensor(labels))
    loss.backward()
    return model


def _reconstruct(q):
    # one line from a query to a fit: the query knows bias and activation
    return GradientReconstructor(**q.estimator_params, loss="cross_entropy",
                                 random_state=0).fit(q.grad, **q.fit_params)


# ----------------------------------------------------------------------------
# end to end: a real PyTorch client, exact samples and labels
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("reduction, dtype, tol", [
    ("mean", torch.float64, 1e-6),
    ("sum", torch.float64, 1e-6),
    # float32 model: the gradient carries float32 round-off (~1e-7 relative),
    # so the samples are exact to that level; 1e-4 is the stated tolerance
    # (measured: < 1e-7).
    ("mean", torch.float32, 1e-4),
], ids=["mean-float64", "sum-float64", "mean-float32"])
def test_two_layer_cross_entropy_exact(digits, reduction, dtype, tol):
    batch, labels = digits
    model = gaussian_reinit_(_two_layer(N_NEURONS, dtype=dtype), random_state=0)
    _client_step(model, batch, labels, reduction)
    q = first_layer_query(model)
    assert q.has_bias is True and q.activation == "tanh"
    assert q.grad.dtype == (np.float64 if dtype == torch.float64 else np.float32)

    rec = _reconstruct(q)

    assert rec.batch_size_ == len(batch)
    errors, perm = relative_error(batch, rec.samples_)
    assert np.all(errors <= tol), errors
    # perm[i] is the recovered row matched to true row i
    np.testing.assert_array_equal(rec.labels_[perm], labels)
    assert sorted(rec.labels_.tolist()) == sorted(LABELS)  # duplicates included
    assert rec.sign_identified_.all()


def test_sum_and_mean_reductions_differ_by_the_batch_size(digits):
    batch, labels = digits
    model = gaussian_reinit_(_two_layer(64), random_state=3)
    g_mean = first_layer_query(_client_step(model, batch, labels, "mean")).grad
    g_sum = first_layer_query(_client_step(model, batch, labels, "sum")).grad
    np.testing.assert_allclose(g_sum, len(batch) * g_mean, rtol=1e-12, atol=1e-15)


def test_first_layer_without_bias(digits):
    batch, labels = digits
    model = gaussian_reinit_(_two_layer(N_NEURONS, bias=False), random_state=0)
    _client_step(model, batch, labels)
    q = first_layer_query(model)
    assert q.has_bias is False
    assert q.grad.shape == q.weights.shape == (N_NEURONS, 64)  # no bias column

    # tanh' is even and there is no bias: (x_i, u_i) -> (-x_i, -u_i) gives the
    # same gradient, so each sample's sign is not identifiable (DESIGN F3).
    with pytest.warns(IdentifiabilityWarning, match="sign"):
        rec = _reconstruct(q)

    assert not rec.sign_identified_.any()
    assert rec.scale_identified_.all()
    cosines, perm = matched_cosine(batch, rec.samples_, sign_invariant=True)
    assert np.all(cosines >= 0.9999), cosines
    # the odd sign of softmax - onehot survives a global sign flip
    np.testing.assert_array_equal(rec.labels_[perm], labels)


# ----------------------------------------------------------------------------
# first_layer_query: layout, names, errors
# ----------------------------------------------------------------------------

def _small_step(model, n_in=64, n_out=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x = torch.rand(5, n_in, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randint(0, n_out, (5,), generator=gen)
    model.zero_grad()
    nn.CrossEntropyLoss()(model(x), y).backward()
    return model


def test_query_layout_matches_the_parameters():
    model = _small_step(gaussian_reinit_(_two_layer(32), random_state=1))
    q = first_layer_query(model)
    lin1, lin2 = model[0], model[2]
    np.testing.assert_array_equal(q.grad[:, :64], lin1.weight.grad.numpy())
    np.testing.assert_array_equal(q.grad[:, 64], lin1.bias.grad.numpy())
    np.testing.assert_array_equal(q.weights[:, :64], lin1.weight.detach().numpy())
    np.testing.assert_array_equal(q.weights[:, 64], lin1.bias.detach().numpy())
    np.testing.assert_array_equal(q.output_weights, lin2.weight.detach().numpy().T)
    assert q.output_weights.shape == (32, 10)
    assert q.layer_names == ("0", "2")
    # copies: later training steps do not change the query
    before = q.grad.copy(), q.weights.copy()
    with torch.no_grad():
        lin1.weight.add_(1.0)
        lin1.weight.grad.add_(1.0)
    np.testing.assert_array_equal(q.grad, before[0])
    np.testing.assert_array_equal(q.weights, before[1])


def test_query_is_the_query_type_of_the_reference_client():
    from skrecon.clients import GradientQuery, make_gradient_query

    model = _small_step(gaussian_reinit_(_two_layer(32), bias_std=0.0, random_state=1))
    q = first_layer_query(model)
    simulated = make_gradient_query(np.eye(3, 64), n_neurons=32, random_state=0)
    assert type(q) is type(simulated) is GradientQuery
    for query in (q, simulated):
        assert set(query.fit_params) == {"weights", "output_weights"}
    assert (q.bias, q.has_bias, q.n_neurons, q.batch_size) == ("zero", True, 32, None)
    assert q.weight_std == pytest.approx(np.std(model[0].weight.detach().numpy()))
    assert q.batch is None and q.targets is None and q.loss is None
    with pytest.raises(ValueError, match="read off a model"):
        q.loss_value()
    assert q.estimator_params == {"bias": True, "activation": "tanh"}
    assert simulated.estimator_params == {"bias": True, "activation": "tanh"}  # bias="gaussian"


def test_forgotten_bias_points_to_the_query_params(digits):
    batch, labels = digits
    model = gaussian_reinit_(_two_layer(N_NEURONS), random_state=0)
    q = first_layer_query(_client_step(model, batch, labels))
    with pytest.raises(ValueError, match=re.escape(
            "Did you mean bias=True? (With a bias, the last column of the gradient "
            "and of weights is the bias; from a GradientQuery q, "
            "GradientReconstructor(**q.estimator_params).fit(q.grad, "
            "**q.fit_params) sets it.)")):
        GradientReconstructor().fit(q.grad, **q.fit_params)


def test_query_float32_arrays():
    model = _small_step(gaussian_reinit_(_two_layer(16, dtype=torch.float32)))
    q = first_layer_query(model)
    for key in ("grad", "weights", "output_weights"):
        assert getattr(q, key).dtype == np.float32


def test_grad_none_message():
    model = gaussian_reinit_(_two_layer(16))
    message = r"\.grad is None: call loss\.backward\(\) first"
    with pytest.raises(ValueError, match=message):
        first_layer_query(model)
    with pytest.raises(ValueError, match=message):
        full_model_gradient(model)


def test_frozen_first_layer_bias_is_reported():
    model = _two_layer(16)
    model[0].bias.requires_grad_(False)
    _small_step(model)
    with pytest.raises(ValueError,
                       match=r"0\.bias\.grad is None: the parameter is frozen"):
        first_layer_query(model)


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc1 = nn.Linear(4 * 6 * 6, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        h = torch.tanh(self.conv(x.reshape(-1, 1, 8, 8)))
        return self.fc2(torch.tanh(self.fc1(h.flatten(1))))


def test_convolutional_first_layer_is_out_of_scope():
    model = _ConvNet().double()
    x = torch.rand(3, 64, dtype=torch.float64)
    nn.CrossEntropyLoss()(model(x), torch.tensor([0, 1, 2])).backward()
    with pytest.raises(ValueError, match="convolutional"):
        first_layer_query(model)
    with pytest.raises(ValueError, match="convolutional"):
        first_layer_query(model, first="conv")
    with pytest.raises(ValueError, match="convolutional"):
        gaussian_reinit_(model)
    # the fully connected layers above it can still be named explicitly
    q = first_layer_query(model, first="fc1")
    assert q.grad.shape == (32, 4 * 6 * 6 + 1) and q.layer_names[1] == "fc2"


def test_other_first_layers_and_a_single_linear_raise():
    emb = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="not nn.Linear"):
        first_layer_query(emb)
    with pytest.raises(ValueError, match="No nn.Linear follows"):
        first_layer_query(nn.Sequential(nn.Linear(64, 10), nn.Tanh()))
    with pytest.raises(ValueError, match="No nn.Linear follows"):
        first_layer_query(nn.Linear(64, 10))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        first_layer_query(np.zeros((3, 3)))


class _Net(nn.Module):
    """fc1 without bias: in a flat parameter list, position 1 is fc2.weight."""

    def __init__(self, m=32):
        super().__init__()
        self.fc1 = nn.Linear(64, m, bias=False)
        self.fc2 = nn.Linear(m, 10)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class _Nested(nn.Module):
    def __init__(self, m=32):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, m), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(m, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.encoder(x))


def test_layers_found_by_name_in_a_custom_module():
    model = _small_step(gaussian_reinit_(_Net().double(), random_state=0))
    q = first_layer_query(model)
    assert (*q.layer_names, q.has_bias) == ("fc1", "fc2", False)
    assert q.activation == "tanh"  # torch.tanh in forward, measured by the probe
    np.testing.assert_array_equal(q.grad, model.fc1.weight.grad.numpy())
    np.testing.assert_array_equal(q.output_weights,
                                  model.fc2.weight.detach().numpy().T)
    assert first_layer_query(model, first="fc1").layer_names[1] == "fc2"

    nested = _small_step(gaussian_reinit_(_Nested().double(), random_state=0))
    q = first_layer_query(nested)
    assert (*q.layer_names, q.activation) == ("encoder.1", "head.0", "tanh")
    np.testing.assert_array_equal(q.output_weights,
                                  nested.head[0].weight.detach().numpy().T)
    assert q.output_weights.shape == (32, 16)  # K = width of the next layer


class _Reversed(nn.Module):
    """fc2 registered before fc1: named_modules order is not the forward order."""

    def __init__(self, m=32):
        super().__init__()
        self.fc2 = nn.Linear(m, 10)
        self.fc1 = nn.Linear(64, m)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def test_explicit_names_when_registration_order_differs():
    model = _small_step(_Reversed().double())
    with pytest.raises(ValueError, match="in_features"):
        first_layer_query(model)
    with pytest.raises(ValueError, match="No nn.Linear follows"):
        first_layer_query(model, first="fc1")
    q = first_layer_query(model, first="fc1", second="fc2")
    np.testing.assert_array_equal(q.grad[:, :64], model.fc1.weight.grad.numpy())
    with pytest.raises(ValueError, match="names no module"):
        first_layer_query(model, first="fc3")
    with pytest.raises(ValueError, match="the same module"):
        first_layer_query(model, first="fc1", second="fc1")


def test_layers_that_break_the_gradient_model_raise():
    bn = nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Tanh(),
                       nn.Linear(16, 10))
    bn = _small_step(bn.double())
    with pytest.raises(ValueError, match="couples the samples"):
        first_layer_query(bn)
    # in eval mode too (the train-mode message suggested model.eval(), then
    # refused it as a layer with parameters: a tester)
    bn.eval()
    with pytest.raises(ValueError, match="does not support in either mode"):
        first_layer_query(bn)
    drop = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Dropout(0.5),
                         nn.Linear(16, 10))
    drop = _small_step(drop.double())
    with pytest.raises(ValueError, match="Dropout"):
        first_layer_query(drop)
    drop.eval()
    assert first_layer_query(drop).activation == "tanh"


def test_activation_hint():
    def hint(act):
        model = nn.Sequential(nn.Linear(64, 8), act, nn.Linear(8, 10)).double()
        return first_layer_query(_small_step(model)).activation

    assert hint(nn.ReLU()) == "relu"
    assert hint(nn.Sigmoid()) == "sigmoid"
    assert hint(nn.GELU()) == "gelu"
    leaky = hint(nn.LeakyReLU(0.2))
    assert (leaky.name, leaky.params) == ("leaky_relu", {"negative_slope": 0.2})
    elu = hint(nn.ELU(alpha=0.5))
    assert (elu.name, elu.params) == ("elu", {"alpha": 0.5})
    with pytest.warns(UnknownActivationWarning) as caught:
        assert hint(nn.GELU(approximate="tanh")) is None
    assert len(caught) == 1 and "the nearest, 'gelu', is off by 0.00047" in str(
        caught[0].message)


class _Functional(nn.Module):
    """The activation applied in forward (functional), no module between."""

    def __init__(self, act, m=32, bias=True):
        super().__init__()
        self.fc1 = nn.Linear(64, m, bias=bias)
        self.fc2 = nn.Linear(m, 10)
        self.act = act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


_UNKNOWN = (
    "The activation between the layers 'fc1' and 'fc2' could not be identified: {}. "
    "The query's activation is None and q.estimator_params has no 'activation', so "
    "GradientReconstructor(**q.estimator_params) would use its default, 'tanh'. Pass "
    "GradientReconstructor(activation=...) with the model's activation: one of "
    "['elu', 'erf', 'gelu', 'identity', 'leaky_relu', 'relu', 'sigmoid', 'silu', "
    "'softplus', 'tanh'] or an skrecon.activations.Activation.")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_functional_activation_is_measured(dtype):
    F = nn.functional
    cases = [(torch.relu, "relu"), (F.relu, "relu"), (F.gelu, "gelu"),
             (torch.tanh, "tanh"), (torch.sigmoid, "sigmoid"), (F.silu, "silu"),
             (F.softplus, "softplus"), (F.elu, "elu"), (F.leaky_relu, "leaky_relu"),
             (torch.erf, "erf"), (lambda t: t.tanh(), "tanh"), (lambda t: t, "identity")]
    for act, name in cases:
        model = _small_step(_Functional(act).to(dtype))
        rng_before = torch.get_rng_state()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            q = first_layer_query(model)
        assert q.activation == name
        assert q.estimator_params == {"bias": True, "activation": name}
        assert torch.equal(torch.get_rng_state(), rng_before)


def test_the_probe_leaves_the_model_as_it_was():
    # a BatchNorm without parameters before the first layer, in train mode:
    # the probing pass must not move its running statistics
    model = nn.Sequential(nn.BatchNorm1d(64, affine=False), nn.Linear(64, 16),
                          nn.Dropout(0.3), nn.Linear(16, 10)).double()
    model[2].p = 0.0  # (a dropout between the layers must be off)
    model.eval()
    _small_step(model)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = first_layer_query(model)
    assert q.activation == "identity"
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert model.training


def test_an_activation_that_cannot_be_identified_warns_at_query_time():
    clamp = _small_step(_Functional(lambda t: t.clamp(-1, 1)).double())
    with pytest.warns(UnknownActivationWarning, match=re.escape(_UNKNOWN.format(
            "the forward pass between them applies none of skrecon's activations "
            "(measured on 288 pre-activations in [-16, 16]: the nearest, 'erf', is off "
            "by 0.076)"))):
        q = first_layer_query(clamp)
    assert q.activation is None and q.estimator_params == {"bias": True}

    class Pair(nn.Module):  # a forward that needs two inputs
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 8), nn.Linear(8, 10)

        def forward(self, x, scale):
            return self.fc2(torch.relu(self.fc1(x))) * scale

    pair = Pair().double()
    pair(torch.ones(2, 64, dtype=torch.float64), 2.0).sum().backward()
    with pytest.warns(UnknownActivationWarning) as caught:
        q = first_layer_query(pair)
    assert q.activation is None
    head, tail = _UNKNOWN.split("{}")
    message = str(caught[0].message)
    assert message.startswith(head + "no activation module lies between them, and the "
                              "forward pass on rows of 64 inputs raised TypeError: ")
    assert message.endswith("missing 1 required positional argument: 'scale'" + tail)


def test_a_functional_relu_model_is_recovered_in_one_line(digits):
    batch, labels = digits
    batch, labels = batch[:4], labels[:4]
    model = gaussian_reinit_(_Functional(torch.relu, m=1024).double(), random_state=0)
    q = first_layer_query(_client_step(model, batch, labels))
    assert q.estimator_params == {"bias": True, "activation": "relu"}
    rec = GradientReconstructor(**q.estimator_params, random_state=0).fit(
        q.grad, **q.fit_params)
    errors, _ = relative_error(batch, rec.samples_)
    assert rec.found_.all() and np.max(errors) <= 1e-8


# ----------------------------------------------------------------------------
# full_model_gradient
# ----------------------------------------------------------------------------

def test_full_model_gradient_by_name():
    model = _small_step(gaussian_reinit_(_Nested().double()))
    model.head[2].bias.requires_grad_(False)
    model.head[2].bias.grad = None
    grads = full_model_gradient(model)
    params = dict(model.named_parameters())
    assert [name for name, _ in grads] == [
        "encoder.1.weight", "encoder.1.bias", "head.0.weight", "head.0.bias",
        "head.2.weight"]
    for name, g in grads:
        assert isinstance(g, np.ndarray) and g.dtype == np.float64
        np.testing.assert_array_equal(g, params[name].grad.numpy())


# ----------------------------------------------------------------------------
# gaussian_reinit_
# ----------------------------------------------------------------------------

def test_gaussian_reinit_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(1234)
    # building a module draws its default init from the global RNG: build first
    a, b, c, d, e = (_two_layer(256) for _ in range(5))
    state = torch.random.get_rng_state()
    gaussian_reinit_(a, random_state=7)
    gaussian_reinit_(b, random_state=7)
    gaussian_reinit_(c, random_state=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)
    # numpy random_state objects give reproducible seeds too
    gaussian_reinit_(d, random_state=np.random.RandomState(0))
    gaussian_reinit_(e, random_state=np.random.RandomState(0))
    assert torch.equal(d[0].weight, e[0].weight)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_gaussian_reinit_distribution():
    m = 4096
    model = _two_layer(m)
    assert gaussian_reinit_(model, random_state=0) is model
    w1, b1 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    w2, b2 = model[2].weight.detach().numpy(), model[2].bias.detach().numpy()
    # std 1/sqrt(64), 0.5, 1/sqrt(m) (relative sampling error ~ 1/sqrt(2 n))
    assert abs(w1.std() / (1 / 8) - 1) < 0.01 and abs(w1.mean()) < 1e-3
    assert abs(b1.std() / 0.5 - 1) < 0.05
    assert abs(w2.std() * np.sqrt(m) - 1) < 0.02
    assert np.all(b2 == 0)

    gaussian_reinit_(model, weight_std=0.3, bias_std=0.0, output_std=2.0,
                     random_state=0)
    assert abs(model[0].weight.std().item() / 0.3 - 1) < 0.01
    assert torch.all(model[0].bias == 0)
    assert abs(model[2].weight.std().item() / 2.0 - 1) < 0.02


def test_gaussian_reinit_same_network_in_float32():
    a = gaussian_reinit_(_two_layer(64), random_state=5)
    b = gaussian_reinit_(_two_layer(64, dtype=torch.float32), random_state=5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa.to(torch.float32), pb)


def test_gaussian_reinit_bias_free_and_named_layers():
    model = gaussian_reinit_(_Net(m=64).double(), random_state=0)
    assert model.fc1.bias is None
    assert torch.all(model.fc2.bias == 0)


@pytest.mark.parametrize("kwargs, match", [
    ({"weight_std": 0.0}, "weight_std"),
    ({"weight_std": -1.0}, "weight_std"),
    ({"output_std": float("nan")}, "output_std"),
    ({"bias_std": -0.1}, "bias_std"),
    ({"random_state": -1}, "random_state"),
    ({"random_state": "seed"}, "random_state"),
])
def test_gaussian_reinit_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gaussian_reinit_(_two_layer(8), **kwargs)


# ----------------------------------------------------------------------------
# the module itself
# ----------------------------------------------------------------------------

def test_module_imports_the_real_pytorch():
    real = sktorch._import_torch()
    assert real is torch
    assert hasattr(real, "nn") and real.__name__ == "torch"
    assert sktorch.__name__ == "skrecon.torch"


def test_missing_torch_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match=r'pip install "skrecon\[torch\]"'):
        first_layer_query(object())


# ----------------------------------------------------------------------------
# deeper nets: labels through the output layer's gradient
# ----------------------------------------------------------------------------

def _three_layer(m, hidden, *, dtype=torch.float64):
    return nn.Sequential(nn.Linear(64, m), nn.Tanh(), nn.Linear(m, hidden), nn.Tanh(),
                         nn.Linear(hidden, 10)).to(dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_labels_from_output_layer_of_a_three_layer_net(digits, reduction):
    """With the samples known (here: the true ones, shuffled), the output
    layer's gradient gives each sample's signal and label exactly,
    duplicates included."""
    batch, labels = digits
    model = gaussian_reinit_(_three_layer(512, 256), random_state=0)
    _client_step(model, batch, labels, reduction)
    order = np.random.default_rng(0).permutation(len(batch))
    result = sktorch.labels_from_output_layer(model, batch[order])
    np.testing.assert_array_equal(result.labels, np.asarray(labels)[order])
    assert result.relative_residual < 1e-12
    # the signals are softmax - onehot, over B for the mean
    with torch.no_grad():
        probs = torch.softmax(model(torch.as_tensor(batch[order])), dim=1).numpy()
    expected = probs - np.eye(10)[np.asarray(labels)[order]]
    if reduction == "mean":
        expected /= len(batch)
    np.testing.assert_allclose(result.signals, expected, rtol=1e-9, atol=1e-14)


def test_labels_from_output_layer_flags_wrong_samples(digits):
    batch, labels = digits
    model = gaussian_reinit_(_three_layer(512, 256), random_state=0)
    _client_step(model, batch, labels)
    wrong = batch + np.random.default_rng(1).normal(scale=0.1, size=batch.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the labels may be flagged too
        assert sktorch.labels_from_output_layer(model, wrong).relative_residual > 1e-3


def test_labels_from_output_layer_errors(digits):
    batch, labels = digits
    model = gaussian_reinit_(_three_layer(64, 4), random_state=0)
    _client_step(model, batch, labels)
    with pytest.raises(ValueError, match=r"rank 5 < 8: the output signals are not identifiable"):
        sktorch.labels_from_output_layer(model, batch)
    with pytest.raises(ValueError, match=r"last='9' names no nn.Linear"):
        sktorch.labels_from_output_layer(model, batch, last="9")
    with pytest.raises(ValueError, match="finite 2-D array"):
        sktorch.labels_from_output_layer(model, batch[0])
    model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match=r"4.weight.grad is None"):
        sktorch.labels_from_output_layer(model, batch)


def test_three_layer_net_samples_and_labels_through_the_output_layer(digits):
    """Issue 5: 64 -> 16384 -> 256 -> 10 (tanh) from torch. The first layer
    feeds 256 units, so its signals u_i are 256-dimensional: the restarts
    refine with the signals projected out (skrecon._varpro). Samples to
    <= 1e-6 (measured 2e-12) and the labels, duplicates included, from the
    output layer's gradient at the recovered samples."""
    batch, labels = digits
    model = gaussian_reinit_(_three_layer(16384, 256), random_state=0)
    _client_step(model, batch, labels)
    q = first_layer_query(model)
    assert q.output_weights.shape == (16384, 256)
    rec = _reconstruct(q)
    errors, perm = relative_error(batch, rec.samples_)
    assert np.all(perm >= 0) and np.max(errors) <= 1e-6
    result = sktorch.labels_from_output_layer(model, rec.samples_)
    np.testing.assert_array_equal(result.labels[perm], labels)
    assert result.relative_residual < 1e-9


def test_labels_from_output_layer_refuses_meaningless_inputs(digits):
    batch, labels = digits
    model = gaussian_reinit_(_three_layer(64, 32), random_state=0)
    _client_step(model, batch, labels)
    with pytest.raises(ValueError, match=r"The forward pass of samples of shape \(8, 63\) failed"):
        sktorch.labels_from_output_layer(model, batch[:, :63])
    with pytest.warns(UserWarning, match="output signals do not look like softmax cross-entropy"):
        sktorch.labels_from_output_layer(model, np.random.default_rng(0).uniform(size=batch.shape))
    for p in model.parameters():
        p.grad.zero_()
    with pytest.raises(ValueError, match="The gradient of the output layer '4' is zero"):
        sktorch.labels_from_output_layer(model, batch)


def test_a_bias_spread_like_the_weights_is_named_after_the_fit(digits):
    """PyTorch's default init draws the bias like the weights: the check
    before the fit cannot tell it from an input, but the samples come back
    with a constant last coordinate, and the fit says what it is."""
    batch, labels = digits
    torch.manual_seed(0)
    model = _two_layer(1024)
    q = first_layer_query(_client_step(model, batch, labels))
    with pytest.warns(IdentifiabilityWarning, match=re.escape(
            "it looks like the constant input of the first layer's bias, which "
            "bias=False reads as a feature. Did you mean bias=True?")):
        rec = GradientReconstructor(random_state=0).fit(q.grad, **q.fit_params)
    assert rec.samples_.shape == (len(batch), 65)
    rec = GradientReconstructor(**q.estimator_params, random_state=0).fit(
        q.grad, **q.fit_params)
    errors, _ = relative_error(batch, rec.samples_)
    assert errors.max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_activations_that_agree_with_relu_near_zero_are_not_taken_for_it(dtype):
    # ReLU6, clamp(0, 5) and hardtanh(-5, 5) agree with ReLU or the identity
    # on [-4, 4], and were named 'relu' / 'identity' silently
    F = nn.functional
    for act in (F.relu6, lambda t: t.clamp(0, 5), lambda t: F.hardtanh(t, -5, 5)):
        model = _small_step(_Functional(act).to(dtype))
        with pytest.warns(UnknownActivationWarning, match="applies none of skrecon's"):
            q = first_layer_query(model)
        assert q.activation is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_functional_leaky_relu_of_another_slope_is_measured(dtype):
    model = _small_step(_Functional(lambda t: nn.functional.leaky_relu(t, 0.2)).to(dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = first_layer_query(model)
    assert q.activation.name == "leaky_relu"
    # the slope as the model's dtype holds it
    assert q.activation.params["negative_slope"] == float(torch.tensor(0.2, dtype=dtype))


def test_a_dropout_before_the_first_layer_warns_of_masked_inputs():
    # train mode: every row came back found, 4.5e-14 from the masked inputs
    # and 0.60 from the client's data, with no word (a tester)
    model = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 16), nn.Tanh(),
                          nn.Linear(16, 10)).double()
    model.train()
    _small_step(model)
    with pytest.warns(IdentifiabilityWarning, match=re.escape(
            "'0' is a Dropout (p=0.2) in train mode before the first layer: the "
            "gradient shows the inputs after its random mask")):
        first_layer_query(model)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first_layer_query(model)
