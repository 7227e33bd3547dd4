"""A parameter update's known round-off in the fit (issue 23, float32)."""

import re
import warnings

import numpy as np
import pytest

from skrecon import GradientReconstructor, MomentTensorTransformer
from skrecon._roundoff import (batch_size_above_floor, check_noise_std,
                               is_known_roundoff, noise_floor, rounding_std)
from skrecon.datasets import load_digits_batch
from skrecon.clients import make_gradient_query
from skrecon.exceptions import BatchSizeWarning, IdentifiabilityWarning
from skrecon.metrics import relative_error
from skrecon.moments import estimate_batch_size


def test_rounding_std_is_half_an_ulp_uniform():
    v = np.array([1.0, -3.0, 0.5], dtype=np.float32)
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(rounding_std(v), np.array([1, 2, 0.5]) * eps / np.sqrt(12),
                               rtol=0, atol=0)
    # float64 values rounded to float32 carry float32's
    np.testing.assert_array_equal(rounding_std(v.astype(np.float64), np.float32),
                                  rounding_std(v))


def test_noise_floor_of_constant_std_and_of_a_heavy_column():
    std = np.full((400, 25), 2.0)
    assert noise_floor(std) == pytest.approx(2.0 * (20 + 5))
    std[:, -1] = 10.0  # one heavy column (a bias): its norm sets the column term
    assert noise_floor(std) == pytest.approx(10.0 * 20 + np.sqrt(24 * 4 + 100))


def test_white_noise_stays_below_twice_its_floor():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 1.5, (1000, 65))
    std[:, -1] = 6.0
    sv = np.linalg.svd(rng.standard_normal(std.shape) * std, compute_uv=False)
    # measured 0.94 (the heavy column's value)
    assert sv[0] <= noise_floor(std)
    assert batch_size_above_floor(np.r_[1e3, 5e2, sv], 40, "noise threshold",
                                  noise_floor(std))[:1] == (2,)


def test_batch_size_above_floor_replaces_a_round_off_reading_only():
    s = np.array([1.0, 0.5, 0.1, 3e-3, 1e-3, 1e-3])
    assert batch_size_above_floor(s, 5, "round-off", 2e-3) == (3, pytest.approx(0.1 / 3e-3),
                                                               "round-off")
    # a noisy reading below the count stands (other noise above the round-off)
    assert batch_size_above_floor(s, 2, "noise threshold", 1e-4) == (2, 5.0,
                                                                     "noise threshold")
    assert batch_size_above_floor(s, 5, "noise threshold", 1e-4)[:1] == (5,)


def test_is_known_roundoff():
    std = np.full((100, 10), 1e-6)
    s = np.array([1.0, 0.5])
    known = np.sqrt(1e-12 * 100 * 10 * 2 / 10 / 1.25)
    assert is_known_roundoff(std, s, 2, known)
    assert is_known_roundoff(std, s, 2, 2.9 * known)
    assert not is_known_roundoff(std, s, 2, 3.1 * known)  # other noise (DP's)
    assert not is_known_roundoff(None, s, 2, 0.0)


def test_noise_std_is_checked():
    assert check_noise_std(None, (3, 2)) is None
    assert check_noise_std(0.5, (3, 2)).shape == (3, 2)
    with pytest.raises(ValueError, match=re.escape(
            "noise_std must be a scalar or an array of the gradient's shape (3, 2), "
            "got shape (2, 3).")):
        check_noise_std(np.ones((2, 3)), (3, 2))
    with pytest.raises(ValueError, match="noise_std must hold finite, non-negative"):
        check_noise_std(-1.0, (3, 2))


def test_fit_refuses_noise_std_without_weights():
    with pytest.raises(ValueError, match=re.escape(
            "noise_std was given without weights: the blind fit does not use it.")):
        GradientReconstructor().fit(np.ones((10, 3)), noise_std=1e-6)


torch = pytest.importorskip("torch")


def _float32_update(learning_rate, n_samples=16):
    """An Opacus-like float32 step: 16 digits through a Gaussian
    ``64 -> 1024 -> 10`` tanh net, one SGD step, the update's query."""
    from torch import nn
    from skrecon.flower import update_query
    from skrecon.torch import gaussian_reinit_
    model = gaussian_reinit_(nn.Sequential(nn.Linear(64, 1024), nn.Tanh(),
                                           nn.Linear(1024, 10)), random_state=0).float()
    batch, labels = load_digits_batch(n_samples, random_state=0)
    sent = [v.detach().numpy().copy() for v in model.state_dict().values()]
    client = nn.Sequential(nn.Linear(64, 1024), nn.Tanh(), nn.Linear(1024, 10)).float()
    client.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(client.parameters(), lr=learning_rate)
    nn.functional.cross_entropy(client(torch.as_tensor(batch, dtype=torch.float32)),
                                torch.as_tensor(labels)).backward()
    opt.step()
    returned = [v.detach().numpy().copy() for v in client.state_dict().values()]
    return update_query(model, sent, returned, learning_rate=learning_rate), batch


def test_a_float32_update_reports_its_round_off():
    q, _ = _float32_update(0.1)
    assert q.grad.dtype == np.float32 and q.noise_std.shape == q.grad.shape
    assert sorted(q.fit_params) == ["noise_std", "output_weights", "weights"]
    # the bias column's parameters are larger: its round-off too
    assert np.median(q.noise_std[:, -1]) > 2 * np.median(q.noise_std[:, :-1])
    sv = np.linalg.svd(q.grad.astype(np.float64), compute_uv=False)
    floor = noise_floor(q.noise_std)
    # the round-off's heavy (bias) column lifts s_17 above the bulk: the
    # spectrum alone reads 17; its values after the 16th stay below the floor
    assert estimate_batch_size(sv, np.float32, n_rows=1024)[0] == 17
    assert sv[16] < floor < sv[15] / 10
    assert MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params).n_components_ == 16


@pytest.mark.parametrize("lr, tol", [(0.1, 5e-3), (10.0, 2e-4)])
def test_a_float32_update_reads_its_batch_size_and_flags_no_imprecise_row(lr, tol):
    q, batch = _float32_update(lr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = GradientReconstructor(activation="tanh", bias=True,
                                    random_state=0).fit(q.grad, **q.fit_params)
    errors, perm = relative_error(batch, rec.samples_)
    assert rec.batch_size_ == 16
    assert np.all(perm >= 0)
    # measured 1.3e-3 (lr 0.1) and 1.8e-5 (lr 10): the round-off of the
    # update, eps |θ| / lr
    assert np.max(errors) <= tol
    # a row is found only where its first-order error bound is within 1e-4
    # (skrecon._certificate)
    found = np.asarray(rec.found_)
    assert np.all(errors[found[perm]] <= 1e-4)
    if lr == 0.1:
        # measured: 7 of 16 found (worst 4.9e-5; the misfit bound found
        # none), the others named
        texts = [str(w.message) for w in caught
                 if issubclass(w.category, IdentifiabilityWarning)
                 and "fit the float32 gradient to its round-off" in str(w.message)]
        assert len(texts) == 1
        named = [int(i) for i in re.search(r"Rows \[([0-9, ]+)\]", texts[0])[1].split(",")]
        assert sorted(named) == np.flatnonzero(~found).tolist()


def test_an_aggregate_adds_its_clients_roundings():
    from torch import nn
    from skrecon.flower import update_query
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 3)).float()
    sent = [v.detach().numpy().copy() for v in model.state_dict().values()]
    rng = np.random.default_rng(0)
    returned = []
    for c in range(2):
        client = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 3)).float()
        client.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(client.parameters(), lr=0.5)
        x = torch.as_tensor(rng.uniform(size=(2, 8)), dtype=torch.float32)
        nn.functional.cross_entropy(client(x), torch.tensor([0, c + 1])).backward()
        opt.step()
        returned.append([v.detach().numpy().copy() for v in client.state_dict().values()])
    q = update_query(model, sent, returned, learning_rate=0.5, client_weights=[0.25, 0.75])
    w0 = returned[0][0], returned[1][0]
    agg = (sent[0].astype(np.float64) - 0.25 * (sent[0] - w0[0].astype(np.float64))
           - 0.75 * (sent[0] - w0[1].astype(np.float64))).astype(np.float32)
    expected = np.sqrt((0.25 * rounding_std(w0[0])) ** 2 + (0.75 * rounding_std(w0[1])) ** 2
                       + rounding_std(agg) ** 2) / 0.5
    np.testing.assert_allclose(q.noise_std[:, :8], expected, rtol=1e-6)


@pytest.mark.parametrize("noise_std", [0.0, 1e-30, 1e3, 1e-3])
def test_a_noise_std_the_spectrum_contradicts_is_set_aside(noise_std):
    # an exact float64 query: zero noise_std read 46 samples for 4, a
    # thousandfold one 1 across a 1e13 gap, both silently; a floor below the
    # round-off tells nothing (no warning), one far above the values it
    # leaves out is set aside with a warning
    batch, _ = load_digits_batch(4, random_state=0)
    q = make_gradient_query(batch, n_neurons=1000, bias="gaussian", random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mt = MomentTensorTransformer(bias=True).fit(q.grad, **q.fit_params,
                                                    noise_std=noise_std)
    assert mt.n_components_ == 4
    said = [str(w.message) for w in caught if "noise_std" in str(w.message)]
    if noise_std >= 1e-3:
        assert len(said) == 1 and "lies far above the singular values below it" in said[0]
    else:
        assert said == []


def test_a_floor_that_cuts_a_flat_bulk_is_set_aside():
    s = np.r_[1.0, 0.5, np.full(10, 1e-3)]
    with pytest.warns(BatchSizeWarning, match=r"^The floor of noise_std \(0\.0001\) cuts "
                                              r"through a flat bulk of singular values "
                                              r"\(12 above it"):
        assert batch_size_above_floor(s, 2, "round-off", 1e-4)[:1] == (2,)


def test_an_understated_float32_round_off_keeps_the_batch_size():
    # a tenth of a float32 update's round-off cut through its bulk: 50 read for 8
    q, batch = _float32_update(0.1, n_samples=8)
    params = dict(q.fit_params, noise_std=q.noise_std * 0.1)
    mt = MomentTensorTransformer(bias=True).fit(q.grad, **params)
    assert mt.n_components_ == 8


def test_a_float16_gradient_is_refused():
    batch, _ = load_digits_batch(4, random_state=0)
    q = make_gradient_query(batch, n_neurons=300, bias="gaussian", random_state=0)
    with pytest.raises(ValueError, match=r"^The gradient X is float16: its round-off"):
        GradientReconstructor(bias=True).fit(q.grad.astype(np.float16), **q.fit_params)


def test_a_noise_std_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError, match=r"^noise_std must be a real number or an array "
                                         r"of real numbers .*, got str: could not convert"):
        check_noise_std("abc", (2, 3))
