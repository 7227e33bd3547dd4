"""The exact-column route of ReLU and leaky ReLU (skrecon/_relu_patterns.py,
DESIGN F9): any weights -- trained, PyTorch's default init, Gaussian."""

import functools
import warnings

import numpy as np
import pytest

from skrecon import GradientReconstructor
from skrecon._relu_patterns import find_columns, samples_from_columns, two_slopes
from skrecon.activations import get_activation
from skrecon.metrics import relative_error


def test_two_slopes_of_the_piecewise_linear_activations():
    assert two_slopes(get_activation("relu")) == (0.0, 1.0, 0.0)
    assert two_slopes(get_activation("leaky_relu", negative_slope=0.2)) == (0.0, 1.0, 0.2)
    assert two_slopes(get_activation("tanh")) is None
    assert two_slopes(get_activation("elu")) is None


def _span_problem(activation, B, m, seed):
    """An exact cross-entropy query in an orthonormal span basis: ``P``,
    ``Omega``, ``A`` and the true samples ``V`` (span coordinates) of a
    ReLU-family layer with a constant bias."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((B, B))
    Omega = rng.standard_normal((m, B)) / np.sqrt(B)
    A = rng.standard_normal((m, 10))
    U = rng.standard_normal((B, 10))
    U -= U.mean(axis=1, keepdims=True)  # softmax cross-entropy: sums to 0
    s1 = np.asarray(get_activation(activation).derivative(Omega @ V.T + 0.1, 1))
    P = ((A @ U.T) * s1) @ V
    return P, Omega, A, V


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_find_columns_gives_the_dual_of_the_batch(activation):
    B = 8
    P, Omega, A, V = _span_problem(activation, B, 600, seed=3)
    rng = np.random.default_rng(0)
    guesses = V + 0.3 * rng.standard_normal(V.shape)  # rough samples choose the rows
    C, W, active, n_trials = find_columns(
        P, Omega, A, get_activation(activation), 0.1, n_samples=B, guesses=guesses,
        time_limit=60.0, random_state=rng)
    assert C.shape == (B, B) and W.shape == (B, 10) and active.shape == (B, 600)
    # each found c is, up to scale, a column of V^{-1}: V c = its sample's e_k
    D = V @ C
    D /= np.abs(D).max(axis=0)
    assert np.allclose(np.sort(np.abs(D), axis=0)[:-1], 0.0, atol=1e-9)
    assert sorted(np.argmax(np.abs(D), axis=0)) == list(range(B))
    # and the samples follow from them
    Vhat, source = samples_from_columns(C, active, None, Omega, 0.1, 0.0, None)
    assert list(source) == list(range(B))  # row k of V = C^{-1}: column k
    ratio = Vhat / V[np.argmax(np.abs(D), axis=0)]
    assert np.allclose(ratio, ratio[:, :1], rtol=1e-8)
    assert np.all(ratio[:, 0] > 0)  # the sign follows from the pattern


def test_find_columns_stops_at_its_budget():
    P, Omega, A, _ = _span_problem("relu", 8, 600, seed=3)
    C, W, active, n_trials = find_columns(
        P, Omega, A, get_activation("relu"), 0.1, n_samples=8, max_trials=512,
        random_state=np.random.default_rng(0))
    assert n_trials == 512
    assert C.shape[1] == W.shape[0] == active.shape[0] <= 8


torch = pytest.importorskip("torch")
nn = torch.nn


@functools.lru_cache(maxsize=None)
def _model(activation, weights, width, epochs=5, seed=0):
    """A torch MLP 64 -> width -> 10 (float64) on digits: trained with Adam
    (``"trained"``: lr 3e-3, minibatches of 128, 98 % held-out accuracy at
    width 512), at PyTorch's default init (``"default"``) or Gaussian
    (``"gaussian"``); and the 300 held-out digits and their labels."""
    from sklearn.datasets import load_digits

    from skrecon.torch import gaussian_reinit_

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    perm = np.random.default_rng(seed).permutation(len(X))
    test, train = perm[:300], perm[300:]
    torch.manual_seed(seed)
    act = nn.ReLU() if activation == "relu" else nn.LeakyReLU(0.01)
    model = nn.Sequential(nn.Linear(64, width), act, nn.Linear(width, 10)).double()
    if weights == "trained":
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        Xt, yt = torch.as_tensor(X[train]), torch.as_tensor(y[train])
        gen = torch.Generator().manual_seed(seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small products: threads only contend
        try:
            for _ in range(epochs):
                order = torch.randperm(len(train), generator=gen)
                for s in range(0, len(train), 128):
                    idx = order[s:s + 128]
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(Xt[idx]), yt[idx]).backward()
                    opt.step()
        finally:
            torch.set_num_threads(threads)
    elif weights == "gaussian":
        gaussian_reinit_(model, random_state=seed)
    return model, X[test], y[test]


def _digits_query(activation, weights, width, batch_size):
    """The first-layer query of one client step on the first ``batch_size``
    held-out digits."""
    from skrecon.torch import first_layer_query

    model, X, y = _model(activation, weights, width)
    batch, labels = X[:batch_size], y[:batch_size]
    model.zero_grad()
    nn.functional.cross_entropy(model(torch.as_tensor(batch)),
                                torch.as_tensor(labels)).backward()
    return first_layer_query(model), batch, labels


@pytest.mark.parametrize("activation, weights, width, batch_size", [
    ("relu", "trained", 256, 8),
    ("leaky_relu", "trained", 512, 16),
    ("relu", "default", 512, 8),
])
def test_relu_batch_is_exact_at_any_weights(activation, weights, width, batch_size):
    q, batch, labels = _digits_query(activation, weights, width, batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = GradientReconstructor(activation=activation, bias=True,
                                    loss="cross_entropy", random_state=0)
        rec.fit(q.grad, weights=q.weights, output_weights=q.output_weights)
    errors, perm = relative_error(batch, rec.samples_)
    assert np.all(perm >= 0)
    assert np.max(errors) < 1e-6
    assert rec.n_found_ == batch_size
    assert np.array_equal(np.asarray(rec.labels_)[perm], labels)


def _float32_span_problem(activation, B=8, m=400, d=20, seed=0, weakest=1e-3):
    """A float32 ReLU-family gradient (signals of sizes 1 to ``weakest``, as
    a trained net's) in span coordinates: ``P``, ``Omega``, ``A``, the true
    samples ``V`` ``(B, B)``, their patterns ``(m, B)`` and the bias
    constraint."""
    from skrecon.activations import get_activation
    rng = np.random.default_rng(seed)
    x_aug = np.hstack([rng.uniform(0, 1, (B, d)), np.ones((B, 1))]).astype(np.float32)
    W = (rng.standard_normal((m, d + 1)) / np.sqrt(d)).astype(np.float32)
    A = rng.standard_normal((m, 10)).astype(np.float32)
    U = rng.standard_normal((B, 10))
    U -= U.mean(axis=1, keepdims=True)
    U = (U * np.logspace(0, np.log10(weakest), B)[:, None]).astype(np.float32)
    Z = W.astype(np.float64) @ x_aug.T.astype(np.float64)
    S = np.asarray(get_activation(activation).derivative(Z, 1)).astype(np.float32)
    X = (((A @ U.T) * S) @ x_aug).astype(np.float64)  # float32 throughout
    basis = np.linalg.qr(x_aug.T.astype(np.float64))[0]  # (d + 1, B)
    V = x_aug.astype(np.float64) @ basis
    fixed = (basis[-1], 1.0)
    return X @ basis, W.astype(np.float64) @ basis, A.astype(np.float64), V, Z > 0, fixed


def test_float32_rows_of_some_found_columns_do_not_take_the_guesses_errors():
    # five of eight exact duals and three wrong guesses: inv(C) with the
    # guesses in place of the missing duals makes every row orthogonal to
    # them, the found ones included; regressed on the found columns, a
    # found row is off by the unfound samples' share of P only
    from skrecon._relu_patterns import _rows_by_regression
    P, _, _, V, _, fixed = _float32_span_problem("leaky_relu")
    C = np.linalg.inv(V)
    C /= np.linalg.norm(C, axis=0)
    rng = np.random.default_rng(0)
    found = np.arange(5)
    guesses = V + 0.3 * rng.standard_normal(V.shape) * np.linalg.norm(V, axis=1)[:, None]
    chat = np.linalg.inv(guesses)
    chat[:, found] = C[:, found]
    source = np.array([0, 1, 2, 3, 4, -1, -1, -1])
    V_inv = np.linalg.inv(chat)
    V_inv *= (fixed[1] / (V_inv @ fixed[0]))[:, None]
    V_reg = _rows_by_regression(P, C[:, found], V_inv, source, fixed)

    def errors(W):
        return np.linalg.norm(W[found] - V[found], axis=1) / np.linalg.norm(V[found], axis=1)

    assert errors(V_inv).min() > 1e-2  # the guesses' errors, in every row
    # the three unfound samples carry 7e-3 to 1e-3 of the gradient, the
    # found ones 1 to 2e-2: off by about the ratio (a start for the fit)
    assert np.all(errors(V_reg)[:2] < 1e-2)
    assert np.all(errors(V_reg) < errors(V_inv) / 3)
    # the unfound rows lie in the complement of the found duals (V C = I)
    assert np.allclose(V_reg[5:] @ C[:, found], 0.0, atol=1e-10)
    assert np.allclose(V_reg @ fixed[0], 1.0)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_a_float32_column_with_wrong_slopes_is_refined_to_its_pattern(activation):
    # a strong sample's column accepted at the noise-level misfit with
    # twelve wrong slopes: the slopes its polished column fits best, polished
    # again, give its pattern back
    from skrecon._pattern_columns import ColumnSet
    from skrecon._relu_patterns import two_slopes
    from skrecon.activations import get_activation
    P, _, A, V, on, _ = _float32_span_problem(activation)
    _, hi, lo = two_slopes(get_activation(activation))
    cols = ColumnSet(P, A, lo / hi, True, row_tol=1e-2)
    wrong = on[:, 0].copy()
    flip = np.random.default_rng(1).choice(len(wrong), 12, replace=False)
    wrong[flip] = ~wrong[flip]
    z, misfit = cols.polish(wrong)
    z, active, refined = cols.refine(z, wrong, misfit)
    assert np.array_equal(active, on[:, 0])
    assert refined < 1e-5 < misfit


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_a_weak_float32_column_is_found_at_its_own_round_off(activation):
    # the weakest sample's signal is 1e-6 of the strongest's: its polished
    # column misfits by its own share of the round-off (a few 1e-2), above
    # _NOISE_TOL times the gradient's noise (whether such columns of a
    # trained float32 ReLU net were found was luck, and each one missing
    # pulled every other row off); it is accepted within _NOISE_RATIO times
    # the misfit its share of the round-off explains, and it is right
    from skrecon._pattern_columns import ColumnSet
    from skrecon._relu_patterns import _NOISE_TOL
    B, noise = 8, 1e-7  # the float32 gradient's in-span noise: 8e-8 to 1e-7
    P, Omega, A, V, on, fixed = _float32_span_problem(activation, B=B, weakest=1e-6)
    _, hi, lo = two_slopes(get_activation(activation))
    cols = ColumnSet(P, A, lo / hi, True, row_tol=_NOISE_TOL * noise)
    assert cols.polish(on[:, -1])[1] > _NOISE_TOL * noise  # the old acceptance
    C, W, active, n_trials = find_columns(
        P, Omega, A, get_activation(activation), 0.0, n_samples=B, guesses=V,
        fixed=fixed, max_trials=512, random_state=np.random.default_rng(0), noise=noise)
    assert C.shape == (B, B)
    D = np.abs(V @ C)
    D /= D.max(axis=0)
    sample = np.argmax(D, axis=0)
    assert sorted(sample) == list(range(B))  # every sample once
    assert np.all(np.sort(D, axis=0)[:-1] < 2e-2)  # measured up to 5e-3
    wrong = np.sum(active != on[:, sample].T, axis=1)
    assert wrong[sample == B - 1][0] <= 8  # of 400 neurons; measured 0 to 4


def test_a_pattern_active_on_no_neuron_is_no_column():
    # ReLU: with every neuron inactive the pattern's equations are P c = 0,
    # solved by (0, w) for any signal w at a zero misfit; such a "column"
    # was kept (a trained H = 256 net, B = 32: a guess active on no neuron,
    # then a division by its zero dual vector and 0 of 32 rows found; now
    # 32 of 32 exact). It has no dual vector: its misfit is inf, and a
    # trial's candidate without one fits no neuron
    from skrecon._pattern_columns import ColumnSet
    P, _, A, _, on, _ = _float32_span_problem("relu")
    cols = ColumnSet(P, A, 0.0, True, row_tol=1e-4)  # the float32 data's
    z, misfit = cols.polish(np.zeros(len(P), dtype=bool))
    assert misfit == np.inf
    assert np.linalg.norm(z[:cols.n_dims]) <= 1e-8
    share, _ = cols.test(np.vstack([z, cols.polish(on[:, 0])[0]]))
    assert share[0] == 0.0 and share[1] >= 0.98
