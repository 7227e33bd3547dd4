"""The Opacus adapter: DP-SGD updates and leakage against epsilon (issue 16)."""

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")
nn = torch.nn

from skrecon import GradientReconstructor  # noqa: E402
from skrecon.datasets import load_digits_batch  # noqa: E402
from skrecon.metrics import relative_error  # noqa: E402
from skrecon.opacus import leakage_curve, private_step  # noqa: E402
from skrecon.torch import first_layer_query, gaussian_reinit_  # noqa: E402

N_NEURONS = 1024
LABELS = [1, 5, 7, 3]


@pytest.fixture(scope="module")
def digits():
    return load_digits_batch(labels=LABELS, random_state=0)


def _make_model(m=N_NEURONS):
    return nn.Sequential(nn.Linear(64, m), nn.Tanh(), nn.Linear(m, 10)).double()


@pytest.fixture(scope="module")
def server():
    return gaussian_reinit_(_make_model(), random_state=0)


def _attack(q, n):
    rec = GradientReconstructor(activation="tanh", bias=True, loss="cross_entropy",
                                batch_size=n, random_state=0)
    return rec.fit(q.grad, **q.fit_params)


def _per_sample_norms(model, batch, labels):
    norms = []
    for x, y in zip(batch, labels):
        model.zero_grad()
        nn.CrossEntropyLoss()(model(torch.as_tensor(x[None])),
                              torch.as_tensor([y])).backward()
        norms.append(np.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters())))
    model.zero_grad()
    return np.array(norms)


def test_clipping_alone_is_exact(digits, server):
    batch, labels = digits
    clip = 0.05
    norms = _per_sample_norms(gaussian_reinit_(_make_model(), random_state=0),
                              batch, labels)
    assert np.all(norms > 2 * clip)  # every per-sample gradient is clipped

    step = private_step(server, batch, labels, noise_multiplier=0.0,
                        max_grad_norm=clip, learning_rate=0.1)
    assert step.epsilon == np.inf
    q = step.query

    # the clipped update is not the plain gradient (the rescaling is real) ...
    plain = gaussian_reinit_(_make_model(), random_state=0)
    nn.CrossEntropyLoss()(plain(torch.as_tensor(batch)), torch.as_tensor(labels)).backward()
    g = first_layer_query(plain).grad
    cos = np.sum(g * q.grad) / np.linalg.norm(g) / np.linalg.norm(q.grad)
    assert cos < 0.999
    # ... it is the sum of the clipped per-sample gradients over B
    expected = 0
    for x, y, n in zip(batch, labels, norms):
        plain.zero_grad()
        nn.CrossEntropyLoss()(plain(torch.as_tensor(x[None])),
                              torch.as_tensor([y])).backward()
        # Opacus's clipping factor: min(1, C / (||g_i|| + 1e-6))
        expected = expected + min(1.0, clip / (n + 1e-6)) * first_layer_query(plain).grad
    expected /= len(batch)
    assert np.linalg.norm(q.grad - expected) <= 1e-10 * np.linalg.norm(expected)

    # ... and clipping rescales each sample's signal, so the batch and labels
    # come back exactly
    rec = _attack(q, len(batch))
    errors, perm = relative_error(batch, rec.samples_)
    assert np.max(errors) <= 1e-6, errors
    np.testing.assert_array_equal(rec.labels_[perm], labels)


def test_noise_is_seeded_and_epsilon_is_opacus_rdp(digits, server):
    batch, labels = digits
    a = private_step(server, batch, labels, noise_multiplier=1.0, random_state=3)
    b = private_step(server, batch, labels, noise_multiplier=1.0, random_state=3)
    c = private_step(server, batch, labels, noise_multiplier=1.0, random_state=4)
    np.testing.assert_array_equal(a.query.grad, b.query.grad)
    assert not np.allclose(a.query.grad, c.query.grad)
    # Opacus's RDP accountant, one step at sampling rate 1, delta = 1e-5
    assert a.epsilon == pytest.approx(4.7285, abs=1e-3)
    eps = [private_step(server, batch, labels, noise_multiplier=s).epsilon
           for s in (0.01, 0.1)]
    assert eps == pytest.approx([5611.78, 96.116], rel=1e-4)
    # the sent weights are the server's; the server's model is untouched
    np.testing.assert_array_equal(a.query.weights[:, :64],
                                  server[0].weight.detach().numpy())
    assert server[0].weight.grad is None


def test_the_noise_has_the_dp_sgd_scale(digits, server):
    batch, labels = digits
    clip, sigma = 0.05, 1.0
    noisy = private_step(server, batch, labels, noise_multiplier=sigma, max_grad_norm=clip)
    clean = private_step(server, batch, labels, noise_multiplier=0.0, max_grad_norm=clip)
    noise = noisy.query.grad - clean.query.grad
    # Opacus: N(0, (sigma C)^2) on the sum, divided by the batch size
    assert np.std(noise) == pytest.approx(sigma * clip / len(batch), rel=0.02)


# the one schema of the leakage tables (skrecon.evaluation.leakage_curve's too)
COLUMNS = ["defense", "parameter", "strength", "epsilon", "delta", "seed", "batch_size",
           "sample", "cosine", "relative_error", "psnr", "label_correct", "found",
           "gradient_residual", "batch_size_found", "converged", "fit_time", "status"]


@pytest.fixture(scope="module")
def dp_table(digits):
    batch, labels = digits
    # a bounded search: with sigma = 1 the attack finds nothing and would
    # try its default number of starts (32) before saying so; the exact
    # gradient of sigma = 0 needs one start per sample
    attack = GradientReconstructor(activation="tanh", bias=True, loss="cross_entropy",
                                   batch_size=4, n_init=1, max_starts=4, max_iter=20)
    return leakage_curve(_make_model(), batch, labels, [0.0, 0.1, 1.0], seeds=[0],
                         max_grad_norm=0.05, data_range=1.0, reconstructor=attack)


def test_leakage_curve_against_epsilon(dp_table):
    table = dp_table
    assert list(table) == COLUMNS
    assert all(v.shape == (12,) for v in table.values())
    assert set(table["defense"]) == {"PrivacyEngine"}
    assert set(table["parameter"]) == {"noise_multiplier"}
    assert table["strength"].tolist() == [0.0] * 4 + [0.1] * 4 + [1.0] * 4
    assert table["sample"].tolist() == [0, 1, 2, 3] * 3
    assert np.all(table["batch_size"] == 4) and np.all(table["seed"] == 0)
    assert np.all(table["epsilon"][:4] == np.inf)
    assert table["epsilon"][8] == pytest.approx(4.7285, abs=1e-3)
    assert np.all(table["delta"] == 1e-5)
    assert list(table["status"]) == ["ok"] * 12
    exact = slice(0, 4)
    assert np.max(table["relative_error"][exact]) <= 1e-6
    assert np.all(table["label_correct"][exact] == 1.0)
    assert np.all(table["psnr"][exact] > 100)
    assert table["found"][exact].all() and not table["found"][8:].any()
    assert np.all(table["batch_size_found"] == 4) and table["converged"].dtype == bool
    # sigma = 1 (epsilon 4.7): nothing of the batch is left (measured:
    # median matched cosine 0.1)
    assert np.median(table["cosine"][8:]) < 0.5


def test_plot_draws_the_opacus_curve(dp_table):
    pytest.importorskip("matplotlib")
    from skrecon.plotting import plot_leakage_curve

    table = dp_table
    ax = plot_leakage_curve(table, metric="cosine", log_strength=False).axes[0]
    assert ax.get_xlabel() == "PrivacyEngine noise_multiplier"
    x, y = ax.lines[0].get_data()
    assert x.tolist() == [0.0, 0.1, 1.0]
    for level, median in zip(x, y):  # the median of the 4 samples (the upper one)
        cos = np.sort(table["cosine"][table["strength"] == level])
        assert median == cos[2]
    assert y[0] == pytest.approx(1.0, abs=1e-12)

    noisy = {k: v[table["strength"] > 0] for k, v in table.items()}
    ax = plot_leakage_curve(noisy, metric="cosine", x="epsilon").axes[0]
    assert ax.get_xlabel() == "epsilon (delta = 1e-05)" and ax.get_xscale() == "log"
    x, _ = ax.lines[0].get_data()
    np.testing.assert_array_equal(x, np.unique(noisy["epsilon"]))
    assert x[0] == pytest.approx(4.7285, abs=1e-3) and x[1] > x[0]
    with pytest.raises(ValueError, match=re.escape(
            "table's epsilon column contains inf (a DP-SGD step without noise: "
            "clipping alone guarantees nothing); draw the rows with strength > 0, "
            "or against x='strength'.")):
        plot_leakage_curve(table, x="epsilon")
    with pytest.raises(ValueError, match=re.escape(
            "A log strength axis needs positive values; pass log_strength=False")):
        plot_leakage_curve(table)


def test_errors(digits, server):
    batch, labels = digits
    with pytest.raises(ValueError, match=r"noise_multiplier must be a non-negative "
                                         r"finite number, got -1\.0"):
        private_step(server, batch, labels, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match=r"max_grad_norm must be a positive finite "
                                         r"number, got 0"):
        private_step(server, batch, labels, noise_multiplier=1.0, max_grad_norm=0)
    with pytest.raises(ValueError, match=r"targets must be integer class labels of "
                                         r"shape \(4,\)"):
        private_step(server, batch, labels[:3], noise_multiplier=1.0)
    # out-of-range labels and a batch of the wrong width raised torch's own errors
    with pytest.raises(ValueError, match=r"^targets must be class labels in \[0, 10\) \(the "
                                         r"model's 10 outputs\), got values in \[2\d, "):
        private_step(server, batch, labels + 20, noise_multiplier=1.0)
    with pytest.raises(ValueError, match=r"^batch has 63 columns but the model's first "
                                         r"linear layer takes 64 inputs\.$"):
        private_step(server, batch[:, :63], labels, noise_multiplier=1.0)
    with pytest.raises(ValueError, match=r"accountant must be 'rdp', 'prv' or 'gdp'"):
        private_step(server, batch, labels, noise_multiplier=1.0, accountant="moments")
    # Opacus's own default accountant fails for one step with little noise
    with pytest.raises(ValueError, match=r"Opacus's 'prv' accountant cannot compute "
                                         r"epsilon for noise_multiplier=0\.01"):
        private_step(server, batch, labels, noise_multiplier=0.01, accountant="prv")
    with pytest.raises(ValueError, match="noise_multipliers and seeds must each hold"):
        leakage_curve(server, batch, labels, [])
    with pytest.raises(ValueError, match=r"each seed must be a non-negative integer"):
        leakage_curve(server, batch, labels, [0.0], seeds=[-1])
