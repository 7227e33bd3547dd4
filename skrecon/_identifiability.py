"""What the gradient identifies of each recovered sample, and the warnings.

Plain functions of host arrays, called by the reconstructor once the
samples are in input coordinates: the sign and norm conventions where the
gradient cannot tell them (:ref:`theory-f3`), the samples that an affine
stretch of the activation leaves unresolved, and each sample's weight in the
moment tensor.
"""

import warnings

import numpy as np

from .exceptions import IdentifiabilityWarning

__all__ = ["has_even_derivative", "sign_and_scale", "unresolved_samples",
           "moment_weights"]


def has_even_derivative(activation):
    """Whether ``sigma'`` is even (its declared flag, or checked on a grid)."""
    if activation.even_derivative is not None:
        return bool(activation.even_derivative)
    t = np.linspace(0.05, 4.0, 40)
    d = activation.derivative(t, 1)
    return bool(np.allclose(d, activation.derivative(-t, 1), rtol=1e-9, atol=1e-12))


def sign_and_scale(samples, U, activation, bias):
    """The conventions where the gradient cannot tell sign or norm.

    Without a bias, an even ``sigma'`` gives ``(x_i, u_i)`` and
    ``(-x_i, -u_i)`` the same gradient (each sample is returned with a
    non-negative coordinate sum), and a scale-free ``sigma'`` gives
    ``(x_i, u_i)`` and ``(c x_i, u_i / c)`` the same gradient (unit norm);
    each with an :class:`~skrecon.exceptions.IdentifiabilityWarning`.

    Returns ``(samples, U, sign_identified, scale_identified)``, the flags
    bool ``(B,)``.
    """
    n = samples.shape[0]
    even = has_even_derivative(activation)
    sign_ok = np.full(n, bool(bias) or not even)
    scale_ok = np.full(n, bool(bias) or not activation.scale_free)
    if not bias and even:
        flip = np.where(samples.sum(axis=1) < 0, -1.0, 1.0)
        samples, U = samples * flip[:, None], U * flip[:, None]
        warnings.warn(
            f"The sign of each sample is not identifiable: activation "
            f"{activation.name!r} has an even derivative and the first layer "
            "has no bias, so (x_i, u_i) and (-x_i, -u_i) give the same "
            "gradient. Samples are returned with non-negative coordinate sums; "
            "sign_identified_ is False.", IdentifiabilityWarning)
    if not bias and activation.scale_free:
        norms = np.linalg.norm(samples, axis=1)
        samples, U = samples / norms[:, None], U * norms[:, None]
        warnings.warn(
            f"The norm of each sample is not identifiable: activation "
            f"{activation.name!r} has a scale-free derivative and the first "
            "layer has no bias, so (x_i, u_i) and (c x_i, u_i / c) give the "
            "same gradient. Samples are returned with unit norm; "
            "scale_identified_ is False.", IdentifiabilityWarning)
    return samples, U, sign_ok, scale_ok


def unresolved_samples(activation, samples, W, precision):
    """Samples the gradient resolves no better than ``precision`` (without a
    bias), warned about: ``(norm, sample)``, bool ``(B,)``.

    Without a bias a sample shows only through the shape of ``sigma'(t)``,
    ``t = W x_i`` over the neurons. Where ``sigma'`` is affine in ``t`` on
    the sample to within ``precision`` (the reconstructor passes 1000 x the
    gradient's eps, or 10 x its noise level) its term is a quadratic form
    that any rotation of the samples reproduces: neither its direction nor
    its norm is resolved (softplus at 0.03 of unit scale in float32 came
    back at cosines down to 0.75, every row flagged found). Its norm alone
    is unresolved where scaling it, ``t sigma''(t)`` against ``sigma'(t)``,
    changes the gradient by less (a float32 tanh sample at 1e-3 of the
    others' scale came back 4.8 times too long).
    """
    t = W @ samples.T  # (m, B) pre-activations
    slope = activation.derivative(t, 1)
    centred_t = t - t.mean(axis=0)
    centred_s = slope - slope.mean(axis=0)
    with np.errstate(all="ignore"):
        beta = np.sum(centred_t * centred_s, axis=0) / np.sum(centred_t**2, axis=0)
        size = np.linalg.norm(slope, axis=0)
        affine = np.linalg.norm(centred_s - np.nan_to_num(beta) * centred_t,
                                axis=0) / size
        curvature = np.linalg.norm(t * activation.derivative(t, 2), axis=0) / size
    # (sigma' = 0 on every neuron: no verdict)
    affine, curvature = (np.nan_to_num(r, nan=np.inf) for r in (affine, curvature))
    sample = affine < precision
    norm = sample | (curvature < precision)
    if np.any(sample):
        warnings.warn(
            f"Sample(s) {np.flatnonzero(sample).tolist()} are not resolved: "
            f"activation {activation.name!r} is affine on their pre-activations "
            f"to within the gradient's precision (relative departure "
            f"{affine[sample].min():.2g} < {precision:.2g}), and without a bias "
            "an affine slope leaves their direction and norm undetermined "
            "(found_ and scale_identified_ are False for them).",
            IdentifiabilityWarning)
    if np.any(norm & ~sample):
        weak = norm & ~sample
        warnings.warn(
            f"The norm of sample(s) {np.flatnonzero(weak).tolist()} is not "
            f"resolved: their pre-activations are so small that activation "
            f"{activation.name!r} is linear on them to within the gradient's "
            f"precision (curvature ratio {curvature[weak].min():.2g} < "
            f"{precision:.2g}), and without a bias only the curvature fixes "
            "a norm. Their directions stand; their norms may be far off "
            "(scale_identified_ is False for them).", IdentifiabilityWarning)
    return norm, sample


def moment_weights(activation, samples, proj, *, order, bias, bias_std, bias_mean):
    """Each recovered sample's weight in the moment tensor,
    ``mu_order(tau_i) tau_i^(order - 1)`` (host ``(B,)``), with a warning
    for those where it nearly vanishes (the tensor step cannot see them)."""
    x_aug = np.hstack([samples, np.ones((len(samples), 1))]) if bias else samples
    scaled = x_aug * proj.column_scale
    n_in = proj.hermite_basis.shape[0]
    tau = np.linalg.norm(scaled[:, :n_in], axis=1)
    if bias_std > 0:
        tau = np.sqrt(tau**2 + bias_std**2)
    tau = np.maximum(tau, 1e-12)
    weights = activation.mu(order, tau, bias_mean) * tau ** (order - 1)
    scale = np.max(np.abs(activation.mu(1, tau, bias_mean)))
    small = np.flatnonzero(np.abs(weights) < 1e-3 * scale)
    if small.size:
        warnings.warn(
            f"mu_{order} nearly vanishes at the recovered norm of sample(s) "
            f"{small.tolist()} (activation {activation.name!r}): their weight "
            "in the moment tensor is ~0, so the tensor step cannot see them; "
            "check them against gradient_residual_.", IdentifiabilityWarning)
    return weights
