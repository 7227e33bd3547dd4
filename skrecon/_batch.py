"""The functional core: from a projected query to the fitted batch.

:func:`reconstruct_batch` takes arrays and hyper-parameters and never sees an
estimator (as scikit-learn's ``non_negative_factorization`` beside ``NMF``):

    the search in span coordinates (:func:`skrecon._core.reconstruct_in_span`)
      -> samples in input coordinates, identifiability and found flags
         (:mod:`skrecon._identifiability`)
      -> labels (:mod:`skrecon._labels`), the gradient residual, the moment weights
      -> :class:`ReconstructionResult`, with the warnings to issue, in order

:class:`~skrecon.GradientReconstructor` validates the query, fits the span and
the projection (:class:`~skrecon.MomentTensorTransformer`), calls it, copies
the result's fields to its attributes and issues its warnings.
"""

from dataclasses import dataclass

import numpy as np

from ._array_api import frobenius_norm, from_host, get_namespace, to_host
from ._core import min_neurons, reconstruct_in_span
from ._identifiability import (explains_gradient, identify, label_messages,
                              moment_weights, verdict_warnings)
from ._labels import found_signals, infer_labels
from ._pattern_polish import input_fit
from ._threads import blas_threads
from .exceptions import IdentifiabilityWarning
from .refine import RefinementResult

__all__ = ["ReconstructionResult", "reconstruct_batch", "model_gradient",
           "gradient_residual", "augmented", "r2_of_residual"]

# a two-slope row of a gradient exact to its round-off (float32) counts as
# found when this many times its standard error (the least-squares fit's in
# input coordinates, :mod:`skrecon._pattern_polish`) is within the stated
# precision: measured at trained weights (64 -> 1024 -> 10 ReLU, float32,
# B = 16, patterns from samples 1e-2 off), the error over the standard
# error ranged 0.6 to 2.4 (up to 8 where slopes were left wrong)
_STANDARD_ERRORS = 5.0
# entries per block of rows of the gradient residual
# (2048 rows of 1024 columns; a 2048-row block of 12 289 columns took 0.35 GiB)
_RESIDUAL_ENTRIES = 2048 * 1024


@dataclass(frozen=True)
class ReconstructionResult:
    """What :func:`reconstruct_batch` returns.

    The arrays are in the gradient's namespace, on its device, in the
    input's float dtype (the flags bool, the labels int64); the samples in a
    canonical order. :class:`~skrecon.GradientReconstructor` stores each
    field as the attribute of the same meaning.

    Attributes
    ----------
    samples : array of shape (batch_size, n_inputs)
        The batch (``samples_``).
    signals : array of shape (batch_size, n_outputs)
        Per-sample signals (``sample_coefficients_``).
    batch_size : int
    sign_identified, scale_identified, found : array of bool, shape (batch_size,)
    n_found : int
    misfits : array of shape (batch_size,)
        Column-space misfits (``sample_misfits_``).
    n_starts : int
        Searches started.
    refinement : RefinementResult
        The joint polish's outcome (span coordinates, the search's order).
    n_iter : int
    converged : bool
        Every sample found and the polish met a stopping tolerance.
    labels : array of int64, shape (batch_size,), or None
    loss : {"cross_entropy", "squared"} or None
        The loss whose signals were read (``loss_``).
    gradient_residual : float
        ``||X - X_hat||_F / ||X||_F``.
    moment_weights : array of shape (batch_size,)
    warnings : tuple of (type, str)
        The warnings of the fit, ``(category, message)``, in the order to
        issue them.
    """

    samples: object
    signals: object
    batch_size: int
    sign_identified: object
    scale_identified: object
    found: object
    n_found: int
    misfits: object
    n_starts: int
    refinement: RefinementResult
    n_iter: int
    converged: bool
    labels: object
    loss: object
    gradient_residual: float
    moment_weights: object
    warnings: tuple


def augmented(samples, bias):
    """``[samples, 1]`` with a bias, else ``samples`` (their namespace)."""
    if not bias:
        return samples
    xp, device = get_namespace(samples)
    ones = xp.ones((samples.shape[0], 1), dtype=samples.dtype, device=device)
    return xp.concat([samples, ones], axis=1)


def model_gradient(samples, signals, W, A, activation, bias):
    """Gradient predicted by ``samples`` and ``signals`` (input coordinates,
    any float dtype) at weights ``W`` and output weights ``A`` (float64)."""
    xp, _ = get_namespace(samples)
    x_aug = augmented(xp.astype(samples, xp.float64), bias)
    s1 = activation.derivative(W @ x_aug.T, 1)  # (m, B)
    U = xp.astype(signals, xp.float64)
    return ((A @ U.T) * s1) @ x_aug


def gradient_residual(X, W, A, samples, signals, activation, bias):
    """``||X - model|| / ||X||``, block of rows by block of rows: no
    ``(m, n)`` temporary (the blocks stay in cache)."""
    xp, _ = get_namespace(X)
    norm, m = 0.0, X.shape[0]
    step = max(1, _RESIDUAL_ENTRIES // X.shape[1])
    for start in range(0, m, step):
        rows = slice(start, min(start + step, m))
        block = frobenius_norm(X[rows, :] - model_gradient(
            samples, signals, W[rows, :], A[rows, :], activation, bias), xp)
        norm = float(np.hypot(norm, block))
    return norm / frobenius_norm(X, xp)


def r2_of_residual(residual, X, xp, row_weights=None):
    """``1 - ||residual||^2 / ||X - mean(X)||^2`` (norms that neither
    underflow nor overflow), rows weighted by ``row_weights`` (a column, or
    ``None``); with no variance to explain (one neuron) 1.0 for a fit exact
    to round-off (residual below 1e-12 of ``||X||``) and 0.0 otherwise, as
    scikit-learn's ``r2_score(force_finite=True)`` does for exact
    predictions."""
    if row_weights is None:
        mean = xp.mean(X, axis=0)
    else:
        mean = xp.sum(row_weights * X, axis=0) / xp.sum(row_weights)
        root = xp.sqrt(row_weights)
        residual, X = residual * root, X * root
        mean = mean * root
    residual_norm = frobenius_norm(residual, xp)
    total = frobenius_norm(X - mean, xp)
    if total == 0:
        return 1.0 if residual_norm <= 1e-12 * frobenius_norm(X, xp) else 0.0
    ratio = residual_norm / total
    return 1.0 - ratio * ratio if ratio < 1e150 else -np.inf


def reconstruct_batch(X, W, A, proj, span, activation, *, bias, order, bias_std,
                      input_dtype, loss="auto", auto_batch_size=True, init="auto",
                      moment_tensor=None, n_init=1, max_starts=None, max_iter=200,
                      tol=1e-13, random_state=None, n_jobs=None, verbose=0,
                      progress=None, known_roundoff=False):
    """The batch from a projected gradient query.

    Parameters
    ----------
    X, W, A : arrays of shape (m, n_cols), (m, n_cols) and (m, K)
        The validated query (float64, one namespace and device).
    proj : _Projection
        The query in span coordinates (``MomentTensorTransformer._fit_checked``).
    span : Span
        The batch's span (:func:`skrecon._span.fit_span`).
    activation : Activation
    bias : bool
        Whether the last column is the first layer's bias.
    order : int
        The moment tensor's order (for the moment weights).
    bias_std : float
        The bias's std (0 for a constant bias or none).
    input_dtype : numpy dtype
        The dtype of the fitted arrays (the input's: float32 or float64).
    loss : {"auto", "squared", "cross_entropy"} or None, default="auto"
        What the signals mean (:func:`skrecon._labels.infer_labels`).
    auto_batch_size : bool, default=True
        Whether the batch size was read off the spectrum (for the remedy a
        warning gives).
    init, moment_tensor, n_init, max_starts, max_iter, tol, n_jobs, progress
        As :func:`skrecon._core.reconstruct_in_span`.
    known_roundoff : bool, default=False
        As :func:`skrecon._core.reconstruct_in_span`.
    verbose : int, default=0
        As :func:`skrecon._core.reconstruct_in_span`; also one line on the
        loss ``"auto"`` inferred, when positive.
    random_state : numpy.random.Generator
        Source of every random draw.

    Returns
    -------
    result : ReconstructionResult
    """
    n = span.batch_size
    # the search is B-sized (products of m x B matrices, B x B solves): one
    # BLAS thread, also for wide gradients, whose span took the machine's
    # threads (two threads on 64 x 64 SVDs: 50 times slower on a loaded
    # two-core machine)
    with blas_threads(1):
        search = reconstruct_in_span(
            proj, activation, batch_size=n, init=init, moment_tensor=moment_tensor,
            n_init=n_init, max_starts=max_starts, max_iter=max_iter, tol=tol,
            precision=span.precision, noise_level=span.noise_level,
            n_resolved=span.shown_batch_size, random_state=random_state, n_jobs=n_jobs,
            verbose=verbose, progress=progress, known_roundoff=known_roundoff)
    # B-sized work on the host; the arrays returned in the input's
    # namespace, on its device
    samples_in_inputs, U_fit, found_in = None, search.U, search.found
    if search.get("slopes") is not None:
        # the two-slope route of a gradient exact to its round-off: the
        # fit carried to input coordinates certifies each row by its
        # standard error
        x_aug = (search.V @ to_host(proj.scaled_basis).T) / proj.column_scale
        start = x_aug[:, :-1] / x_aug[:, -1:] if bias else x_aug
        fit = input_fit(to_host(X), to_host(A), search.slopes, start, search.U,
                        activation, bias=bias, rows=search.slope_rows)
        samples_in_inputs, U_fit = fit.samples, fit.U
        found_in = search.found & (_STANDARD_ERRORS * fit.errors
                                   <= search.stated_precision)
    ident = identify(search.V, U_fit, found_in, search.misfits, proj, span,
                     activation, W, bias=bias, samples=samples_in_inputs)
    messages = [(IdentifiabilityWarning, text) for text in ident.messages]
    xp, device = get_namespace(X)
    dtype = getattr(xp, np.dtype(input_dtype).name)
    samples = from_host(ident.samples, xp, device, dtype=dtype)
    signals = from_host(ident.U, xp, device, dtype=dtype)
    found = ident.found
    n_found = int(np.sum(found))
    labels, loss_, n_unlike, n_ambiguous = infer_labels(
        found_signals(ident.U, found, ident.V, proj, activation), loss,
        ident.sign_identified, found)
    K = proj.A.shape[1]
    if verbose and loss == "auto":
        print("[GradientReconstructor] loss='auto': inferred "
              + ("softmax cross-entropy, labels read off the signals"
                 if loss_ == "cross_entropy" else
                 f"no cross-entropy ({n_unlike} of {n} signals "
                 f"unlike it{', fewer than 3 outputs' if K < 3 else ''}); "
                 "labels_ is None"))
    messages += [(IdentifiabilityWarning, text) for text in label_messages(
        loss, loss_, labels, n_unlike, n_ambiguous, len(ident.U), ident.U.shape[1])]
    residual = gradient_residual(X, W, A, samples, signals, activation, bias)
    weights, texts = moment_weights(activation, ident.samples, proj, order=order,
                                    bias=bias, bias_std=bias_std,
                                    bias_mean=proj.bias_mean)
    messages += [(IdentifiabilityWarning, text) for text in texts]
    messages += verdict_warnings(search, ident, span, activation, n_outputs=K,
                                 gradient_residual=residual,
                                 auto_batch_size=auto_batch_size, max_iter=max_iter,
                                 needed_neurons=min_neurons(n, K))
    refinement = search.refinement
    if n_found == n and not explains_gradient(residual, span.noise_level):
        # every row passed its own check, yet together they leave a residual
        # far above the noise (verdict_warnings says so): none is certified
        found, n_found = np.zeros(n, dtype=bool), 0
    return ReconstructionResult(
        samples=samples, signals=signals, batch_size=n,
        sign_identified=from_host(ident.sign_identified, xp, device, dtype=xp.bool),
        scale_identified=from_host(ident.scale_identified, xp, device, dtype=xp.bool),
        found=from_host(found, xp, device, dtype=xp.bool), n_found=n_found,
        misfits=from_host(ident.misfits, xp, device, dtype=dtype),
        n_starts=int(search.n_starts), refinement=refinement, n_iter=refinement.n_iter,
        converged=bool(refinement.converged) and n_found == n,
        labels=(None if labels is None
                else from_host(labels, xp, device, dtype=xp.int64)),
        loss=loss_, gradient_residual=residual,
        moment_weights=from_host(weights, xp, device, dtype=dtype),
        warnings=tuple(messages))
